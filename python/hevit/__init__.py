"""hevit: hospitals train and run image classifiers together without exposing patient data.

Clients turn images into ViT [CLS] tokens, encrypt them with CKKS (Microsoft SEAL) and send only
ciphertexts; the server aggregates and evaluates the classifier head on ciphertexts.

``import hevit`` is light: it loads neither torch nor onnxruntime. The HE engine is ``hevit.he``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hevit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
