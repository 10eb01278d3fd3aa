"""hevit: hospitals train and run image classifiers together without exposing patient data.

Clients turn images into ViT [CLS] tokens, encrypt them with CKKS (Microsoft SEAL) and send only
ciphertexts; the server aggregates and evaluates the classifier head on ciphertexts.

``import hevit`` is light: it loads neither torch nor onnxruntime (nor ``importlib.metadata``:
``__version__`` is read on first access). The HE engine is ``hevit.he``.
"""

__all__ = ["__version__", "build_info"]


def _version() -> str:
    # one source: the installed distribution's metadata (pyproject.toml's [project] version,
    # written by the build); a source tree that was never installed has no compiled core either,
    # so a missing distribution raises PackageNotFoundError rather than inventing a version
    from importlib.metadata import version

    return version("hevit")


def __getattr__(name: str):
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'hevit' has no attribute {name!r}")


def build_info() -> str:
    """One line: hevit's version, the SEAL version and how this build obtained and linked it
    (what ``hevit --version`` prints and experiment reports record)."""
    from . import _core

    return f"hevit {_version()} (Microsoft SEAL {_core.SEAL_VERSION}: {_core.SEAL_LINKAGE})"
