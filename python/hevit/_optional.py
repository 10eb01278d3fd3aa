"""Optional dependencies: import one, or fail with the extra that installs it.

``pip install hevit`` brings numpy and cryptography only (``hevit.he``, the protocol core, the
federated simulation). Everything else comes with an extra declared in pyproject.toml:

- ``vit``: torch, torchvision, timm, safetensors, onnx, onnxruntime, pillow, tqdm, matplotlib
  (extraction, the demo and the experiment's report plots); ``gpu`` is the same with
  onnxruntime-gpu in place of onnxruntime;
- ``attacks``: scikit-image (with scipy), matplotlib, pillow (metrics and the attack report);
- ``dp``: dp-accounting; ``flower``: flwr; ``nvflare``: nvflare.

Every import of one of those goes through :func:`require`, so a missing package is one line that
names the extra instead of a bare ``No module named ...`` from deep inside a job.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (a dotted name) or raise an ImportError naming the extra that provides it.

    Parameters
    ----------
    module : str
        The module to import, e.g. ``"torch"`` or ``"onnxruntime.quantization"``.
    extra : str
        The hevit extra whose installation provides it, e.g. ``"vit"``.

    Returns
    -------
    types.ModuleType
        The imported module (``importlib.import_module(module)``).

    Raises
    ------
    ModuleNotFoundError
        ``module``, or a package it imports, is not installed. The message names the missing
        package and the command that installs the extra; the original error is chained. Other
        import failures (a broken installation: ABI mismatch, missing shared library) propagate
        unchanged, since installing the extra would not fix them.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        raise ModuleNotFoundError(
            f"{module} needs the package {missing!r}, which is not installed: it comes with "
            f"hevit's '{extra}' extra (pip install 'hevit[{extra}]', or from a checkout "
            f'pip install ".[{extra}]")',
            name=missing,
        ) from exc
