"""ONNX export of a [CLS] model: cached by content, checked against PyTorch on export."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import ModelError
from .preprocess import PreprocessConfig
from .vit import ClsTokenModel, TokenSpec, ViTSpec, WeightsInfo

__all__ = ["OPSET", "PARITY_LIMIT", "ExportedModel", "default_cache_dir", "export_onnx"]

log = logging.getLogger(__name__)

#: ONNX opset of exported graphs.
OPSET = 18
#: Largest acceptable max-abs difference between ONNX Runtime and PyTorch [CLS] outputs.
PARITY_LIMIT = 1e-4


def default_cache_dir() -> Path:
    env = os.environ.get("HEVIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hevit" / "onnx"


@dataclass(frozen=True)
class ExportedModel:
    """An exported graph and what is known about it (stored next to it as JSON)."""

    onnx_path: str
    spec: dict
    weights: dict
    preprocess: dict
    cls_dim: int
    parity_max_abs: float
    opset: int
    key: str
    #: which token the graph outputs (``TokenSpec.describe()``)
    tokens: str = "cls"

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, onnx_path) -> ExportedModel:
        meta = Path(onnx_path).with_suffix(".json")
        return cls(**json.loads(meta.read_text()))


def _cache_key(spec: ViTSpec, weights: WeightsInfo, tokens: TokenSpec) -> str:
    torch = require("torch", "vit")

    payload = json.dumps(
        {
            "spec": spec.to_dict(),
            "weights": weights.digest,
            "file_sha256": weights.extra.get("file_sha256"),
            "tokens": tokens.describe(),
            "opset": OPSET,
            "torch": torch.__version__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def parity_check(
    model, onnx_path: str, images: np.ndarray, tokens: TokenSpec | None = None
) -> float:
    """Max abs difference of the token outputs of PyTorch and ONNX Runtime (CPU) on ``images``."""
    ort = require("onnxruntime", "vit")
    torch = require("torch", "vit")

    with torch.no_grad():
        ref = ClsTokenModel(model, tokens)(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images})[0]
    return float(np.abs(got - ref).max())


def export_onnx(
    model,
    spec: ViTSpec,
    weights: WeightsInfo,
    *,
    tokens: TokenSpec | None = None,
    cache_dir=None,
    parity_images=None,
    mean=None,
    std=None,
    crop_pct=None,
) -> ExportedModel:
    """Exports (or reuses from the cache) the token graph of ``model``.

    The graph has input ``images`` (batch, 3, H, W) float32 with a dynamic batch axis and output
    ``cls`` (batch, D) float32: exactly the token ``tokens`` names (default: the final [CLS]).
    On export, the ONNX Runtime output is compared with PyTorch on a seeded random batch (plus
    ``parity_images`` if given); above :data:`PARITY_LIMIT` the export is deleted and
    :class:`hevit.errors.ModelError` raised. ``mean``/``std`` override the model's timm data
    config in the recorded preprocessing, and so does ``crop_pct`` (none is part of the graph).
    """
    torch = require("torch", "vit")

    tokens = tokens or TokenSpec()
    tokens.check(model)
    preprocess = PreprocessConfig.for_model(model, mean=mean, std=std, crop_pct=crop_pct)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(spec, weights, tokens)
    onnx_path = cache / f"{key}.onnx"
    meta_path = onnx_path.with_suffix(".json")
    if onnx_path.is_file() and meta_path.is_file():
        log.info("reusing cached ONNX export %s", onnx_path)
        cached = ExportedModel.load(onnx_path)
        return ExportedModel(**{**cached.to_dict(), "preprocess": preprocess.to_dict()})

    _, h, w = preprocess.input_size
    wrapper = ClsTokenModel(model, tokens).eval()
    dummy = torch.zeros(2, 3, h, w)
    tmp = onnx_path.with_suffix(".onnx.tmp")
    # timm's shape asserts trace to constants (the input size is fixed by design): silence the
    # tracer's warnings about them; the parity check below is what guards the export. The
    # TorchScript exporter is chosen on purpose (dynamo=False: the torch.export-based one needs
    # onnxscript, which is not a dependency); its deprecation notice says nothing new each call.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=["cls"],
            dynamic_axes={"images": {0: "batch"}, "cls": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    rng = np.random.default_rng(0)
    check = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    if parity_images is not None:
        check = np.concatenate([check, np.asarray(parity_images, dtype=np.float32)])
    diff = parity_check(model, str(tmp), check, tokens)
    if not diff <= PARITY_LIMIT:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"ONNX export of {spec.describe()} differs from PyTorch by {diff:.3g} (limit {PARITY_LIMIT})"
        )
    os.replace(tmp, onnx_path)
    exported = ExportedModel(
        onnx_path=str(onnx_path),
        spec=spec.to_dict(),
        weights=weights.to_dict(),
        preprocess=preprocess.to_dict(),
        cls_dim=tokens.dim(model),
        parity_max_abs=diff,
        opset=OPSET,
        key=key,
        tokens=tokens.describe(),
    )
    meta_path.write_text(json.dumps(exported.to_dict(), indent=2))
    log.info("exported %s to %s (parity max abs diff %.2e)", spec.describe(), onnx_path, diff)
    return exported


def quantize_int8(exported: ExportedModel) -> ExportedModel:
    """Dynamic int8 quantisation of the weights (ONNX Runtime), cached beside the fp32 graph."""
    quantization = require("onnxruntime.quantization", "vit")
    QuantType, quantize_dynamic = quantization.QuantType, quantization.quantize_dynamic

    src = Path(exported.onnx_path)
    dst = src.with_name(src.stem + ".int8.onnx")
    meta = dst.with_suffix(".json")
    if dst.is_file() and meta.is_file():
        return ExportedModel.load(dst)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    result = ExportedModel(
        **{
            **exported.to_dict(),
            "onnx_path": str(dst),
            "key": exported.key + ".int8",
            "parity_max_abs": float("nan"),
        }
    )
    meta.write_text(json.dumps(result.to_dict(), indent=2))
    return result
