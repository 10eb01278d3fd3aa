"""Report figures on their own Agg canvas: no global backend switch, no pyplot state."""

from __future__ import annotations

from .._optional import require

__all__ = ["agg_figure"]


def agg_figure(figsize, rows: int = 1, cols: int = 1, *, extra: str):
    """A matplotlib Figure on a private Agg canvas and its (rows x cols) array of axes.

    ``extra`` names the hevit extra of the job that draws (``vit`` for the experiment's report,
    ``attacks`` for the attack report): both bring matplotlib, and a missing matplotlib is an
    ImportError naming it, never a report without its plots.
    """
    canvas = require("matplotlib.backends.backend_agg", extra).FigureCanvasAgg
    figure = require("matplotlib.figure", extra).Figure

    fig = figure(figsize=figsize)
    canvas(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)
