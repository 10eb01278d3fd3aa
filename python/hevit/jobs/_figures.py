"""Report figures on their own Agg canvas: no global backend switch, no pyplot state."""

from __future__ import annotations

__all__ = ["agg_figure"]


def agg_figure(figsize, rows: int = 1, cols: int = 1):
    """A matplotlib Figure on a private Agg canvas and its (rows x cols) array of axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)
