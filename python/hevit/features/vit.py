"""timm Vision Transformers as [CLS] feature models, with explicit weight provenance.

Weights come from exactly one of: timm's pretrained weights (needs the model hub), a local
checkpoint file (safetensors or torch), or a random initialisation with a fixed seed. Which one
was used is recorded in :class:`WeightsInfo` and printed by every job; nothing substitutes one
for another silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ModelError

__all__ = ["ViTSpec", "WeightsInfo", "build_model", "ClsTokenModel", "PAPER_VIT", "DEFAULT_VIT"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViTSpec:
    """A timm model name plus constructor overrides (e.g. ``img_size=200, patch_size=25``)."""

    name: str = "vit_base_patch16_224"
    kwargs: tuple[tuple[str, object], ...] = ()

    @classmethod
    def make(cls, name: str, **kwargs) -> ViTSpec:
        return cls(name, tuple(sorted(kwargs.items())))

    def to_dict(self) -> dict:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.name}({extra})" if extra else self.name


#: ViT-B/16 at 224 px: 768-dim [CLS], the offline default.
DEFAULT_VIT = ViTSpec.make("vit_base_patch16_224")
#: The paper's variant: 200 x 200 input, 25 x 25 patches (64 patches + [CLS]).
PAPER_VIT = ViTSpec.make("vit_base_patch16_224", img_size=200, patch_size=25)


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from; part of every report and of the ONNX cache key."""

    source: str  # "pretrained", "file" or "random"
    description: str
    digest: str  # sha256 of the loaded state dict (name, shape, bytes of every tensor)
    seed: int | None = None
    path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _state_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _load_checkpoint(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict checkpoint")
    return state


def build_model(spec: ViTSpec = DEFAULT_VIT, *, weights: str | Path = "random", seed: int = 0):
    """Builds ``spec`` in eval mode and returns ``(model, WeightsInfo)``.

    Parameters
    ----------
    weights : "random", "pretrained" or a path
        ``random``: timm's initialisation under ``torch.manual_seed(seed)``.
        ``pretrained``: timm's pretrained weights through the model hub (fails loudly offline).
        A path: a ``.safetensors`` or torch checkpoint; classifier-head keys that do not fit a
        headless model are dropped (and reported), every other mismatch is an error.
    """
    import timm
    import torch

    kwargs = dict(spec.kwargs)
    kwargs.setdefault("num_classes", 0)
    if weights == "pretrained":
        try:
            model = timm.create_model(spec.name, pretrained=True, **kwargs)
        except Exception as exc:  # the hub client raises many types; re-raise as one clear error
            raise ModelError(
                f"could not load pretrained weights for {spec.describe()} from the model hub ({exc}); "
                "pass a local checkpoint with --weights PATH or use --weights random"
            ) from exc
        info = WeightsInfo("pretrained", f"timm pretrained weights for {spec.describe()}", _state_digest(model))
    elif weights == "random":
        torch.manual_seed(seed)
        model = timm.create_model(spec.name, pretrained=False, **kwargs)
        info = WeightsInfo(
            "random",
            f"RANDOM initialisation of {spec.describe()} (seed {seed}); no pretrained weights",
            _state_digest(model),
            seed=seed,
        )
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"weights file {path} does not exist")
        torch.manual_seed(seed)
        model = timm.create_model(spec.name, pretrained=False, **kwargs)
        state = _load_checkpoint(path)
        own = model.state_dict()
        dropped = [k for k in state if k.startswith("head.") and k not in own]
        for k in dropped:
            state.pop(k)
        bad_shapes = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if not (missing or unexpected or bad_shapes):
            model.load_state_dict(state, strict=True)
        else:
            raise ModelError(
                f"{path} does not fit {spec.describe()}: missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}, wrong shapes {bad_shapes[:5]}"
            )
        if dropped:
            log.info("%s: dropped classifier-head keys %s (features only)", path, dropped)
        info = WeightsInfo(
            "file", f"weights from {path}", _state_digest(model), path=str(path), extra={"dropped_keys": dropped}
        )
    model.eval()
    log.info("model %s: %s", spec.describe(), info.description)
    return model, info


def cls_dim(model) -> int:
    return int(model.num_features)


def _wrapper():
    import torch

    class ClsTokenModel(torch.nn.Module):
        """Images (B, 3, H, W) -> the model's pre-logits feature: for a ViT with a class token,
        the [CLS] token after the final norm."""

        def __init__(self, model) -> None:
            super().__init__()
            if getattr(model, "global_pool", "token") != "token":
                raise ModelError(
                    f"model pools with {model.global_pool!r}, not the [CLS] token; create it with global_pool='token'"
                )
            self.model = model

        def forward(self, images):
            tokens = self.model.forward_features(images)
            return self.model.forward_head(tokens, pre_logits=True)

    return ClsTokenModel


def ClsTokenModel(model):  # noqa: N802 - a factory that keeps torch out of module import
    return _wrapper()(model)
