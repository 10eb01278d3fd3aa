"""hevit on Flower: the experiment of ``hevit experiment`` as a ``ServerApp``/``ClientApp`` pair.

Requires ``pip install 'hevit[flower]'``. :func:`app_dir` is the bundled Flower App project to
pass to ``flwr run`` (its ``pyproject.toml`` names the apps and the run_config defaults).
Modules: ``apps`` (the two apps), ``experiment`` (the ServerApp's run and its report),
``strategy`` (``HevitStrategy``, the Flower ``Strategy`` of every aggregation), ``node`` (a
hospital's state between messages), ``mods`` (the ClientApp's transport check and memory
report), ``settings`` (run_config), ``security`` (certificates, keys, transport observation).
"""

from __future__ import annotations

from pathlib import Path

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("hevit.federated.flower needs Flower: pip install 'hevit[flower]'") from exc

from .strategy import RECORD_KEY, HevitStrategy

__all__ = ["RECORD_KEY", "HevitStrategy", "app_dir"]


def app_dir() -> Path:
    """The Flower App project (``flwr run $(python -c ...) <superlink>``)."""
    return Path(__file__).resolve().parent / "app"
