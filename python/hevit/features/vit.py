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

from .._optional import require
from ..errors import ModelError

__all__ = [
    "DEFAULT_VIT",
    "PAPER_VIT",
    "ClsTokenModel",
    "TokenSpec",
    "ViTSpec",
    "WeightsInfo",
    "build_model",
    "check_model_name",
    "file_sha256",
]

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
class TokenSpec:
    """Which token a client keeps per image.

    ``cls`` (default, as in the paper): the [CLS] token after the final norm. ``cls:7,9,11,12``:
    the [CLS] tokens after those blocks (1-based), each passed through the model's final norm (as
    timm's ``forward_intermediates(norm=True)`` does), concatenated in the order given. ``cls:L``
    for the last block L equals ``cls``.
    """

    blocks: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> TokenSpec:
        text = str(text).strip()
        if text == "cls":
            return cls(None)
        if not text.startswith("cls:"):
            raise ValueError(
                f"tokens must be 'cls' or 'cls:B1,B2,...' (1-based block numbers), got {text!r}"
            )
        try:
            blocks = tuple(int(b) for b in text[4:].split(","))
        except ValueError:
            raise ValueError(f"tokens {text!r}: block numbers must be integers") from None
        if not blocks or min(blocks) < 1 or len(set(blocks)) != len(blocks):
            raise ValueError(f"tokens {text!r}: give distinct block numbers >= 1")
        return cls(blocks)

    def describe(self) -> str:
        return "cls" if self.blocks is None else "cls:" + ",".join(str(b) for b in self.blocks)

    def check(self, model) -> None:
        depth = len(getattr(model, "blocks", ()))
        if self.blocks is not None and max(self.blocks) > depth:
            raise ModelError(f"tokens {self.describe()}: the model has {depth} blocks")

    def dim(self, model) -> int:
        width = int(model.num_features)
        return width if self.blocks is None else width * len(self.blocks)


#: timm modules whose models are ViTs with a [CLS] token (what ClsTokenModel reads).
VIT_MODULES = ("vision_transformer", "deit")


def check_model_name(name: str) -> None:
    """Raises ModelError unless ``name`` is a timm ViT hevit can take the [CLS] token of (no
    model is built: this runs before any work)."""
    import difflib

    timm = require("timm", "vit")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models("vit_*"), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(
            f"unknown model {name!r}{hint}: give a timm ViT name such as vit_tiny_patch16_224 or "
            "vit_base_patch16_224 (python -c \"import timm; print(timm.list_models('vit_*'))\" "
            "lists them)"
        )
    if not timm.models.is_model_in_modules(name, list(VIT_MODULES)):
        raise ModelError(
            f"model {name!r} is not a ViT with a [CLS] token: give a timm ViT name such as "
            "vit_tiny_patch16_224 or vit_base_patch16_224"
        )


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (one request, no retries), or None."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=5.0)
    except Exception as exc:  # httpx raises one type per transport failure; any means unreachable
        return f"{constants.ENDPOINT}: {exc}"
    return None


def _create_pretrained(timm, spec: ViTSpec, kwargs: dict):
    """timm's pretrained weights: from the local Hugging Face cache without a network request,
    else from the hub after one reachability check, so that an offline machine fails at once
    instead of after huggingface_hub's retries (about a minute, each retry logged)."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # is_offline_mode() reads this flag at every call
    try:
        return timm.create_model(spec.name, pretrained=True, **kwargs)
    except Exception as exc:  # not cached: the hub client raises several types
        cached_error = exc
    finally:
        constants.HF_HUB_OFFLINE = offline
    reason = "HF_HUB_OFFLINE is set" if offline else _hub_unreachable()
    if reason is not None:
        raise ModelError(
            f"could not load pretrained weights for {spec.describe()}: they are not in the local "
            f"Hugging Face cache and the hub cannot be reached ({reason}); pass a local "
            "checkpoint with --weights PATH or use --weights random"
        ) from cached_error
    return timm.create_model(spec.name, pretrained=True, **kwargs)


def file_sha256(path) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _create_seeded(timm, torch, spec: ViTSpec, seed: int, kwargs: dict):
    """timm initialises from torch's global generator: seed it inside a fork so the caller's
    global RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(spec.name, pretrained=False, **kwargs)


def _check_state_fits(path: Path, spec: ViTSpec, own: dict, state: dict) -> None:
    """Raises ModelError naming the first key (in the model's order) that is missing, unexpected
    or of the wrong shape."""
    for key, tensor in own.items():
        if key not in state:
            raise ModelError(
                f"{path} does not fit {spec.describe()}: first mismatch: key {key!r} is missing "
                f"({sum(k not in state for k in own)} missing in all)"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{path} does not fit {spec.describe()}: first mismatch: {key!r} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}"
            )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ModelError(
            f"{path} does not fit {spec.describe()}: first mismatch: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected in all)"
        )


def _load_checkpoint(path: Path) -> tuple[dict, str | None]:
    """The state dict of a safetensors or torch checkpoint, and the ``source`` recorded in a
    safetensors file's metadata (None when there is none)."""
    torch = require("torch", "vit")

    if path.suffix == ".safetensors":
        safe_open = require("safetensors", "vit").safe_open
        load_file = require("safetensors.torch", "vit").load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                source = (f.metadata() or {}).get("source")
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
        return state, source
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict checkpoint")
    return state, None


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
    timm = require("timm", "vit")
    torch = require("torch", "vit")

    kwargs = dict(spec.kwargs)
    kwargs.setdefault("num_classes", 0)
    if weights == "pretrained":
        try:
            model = _create_pretrained(timm, spec, kwargs)
        except ModelError:
            raise
        except Exception as exc:  # the hub client raises many types; re-raise as one clear error
            raise ModelError(
                f"could not load pretrained weights for {spec.describe()} from the model hub ({exc}); "
                "pass a local checkpoint with --weights PATH or use --weights random"
            ) from exc
        info = WeightsInfo(
            "pretrained", f"timm pretrained weights for {spec.describe()}", _state_digest(model)
        )
    elif weights == "random":
        model = _create_seeded(timm, torch, spec, seed, kwargs)
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
        model = _create_seeded(timm, torch, spec, seed, kwargs)
        state, source = _load_checkpoint(path)
        own = model.state_dict()
        dropped = [k for k in state if k.startswith("head.") and k not in own]
        for k in dropped:
            state.pop(k)
        _check_state_fits(path, spec, own, state)
        model.load_state_dict(state, strict=True)
        if dropped:
            log.info("%s: dropped classifier-head keys %s (features only)", path, dropped)
        sha = file_sha256(path)
        info = WeightsInfo(
            "file",
            f"weights from {path} (sha256 {sha[:16]}...)",
            _state_digest(model),
            path=str(path),
            extra={"dropped_keys": dropped, "file_sha256": sha, "file_source": source},
        )
    model.eval()
    log.info("model %s: %s", spec.describe(), info.description)
    return model, info


def cls_dim(model) -> int:
    return int(model.num_features)


def _wrapper():
    torch = require("torch", "vit")

    class ClsTokenModel(torch.nn.Module):
        """Images (B, 3, H, W) -> the model's pre-logits feature: for a ViT with a class token,
        the [CLS] token after the final norm."""

        def __init__(self, model, tokens: TokenSpec | None = None) -> None:
            super().__init__()
            if getattr(model, "global_pool", "token") != "token":
                raise ModelError(
                    f"model pools with {model.global_pool!r}, not the [CLS] token; create it with global_pool='token'"
                )
            self.tokens = tokens or TokenSpec()
            self.tokens.check(model)
            self.model = model

        def forward(self, images):
            m = self.model
            if self.tokens.blocks is None:
                return m.forward_head(m.forward_features(images), pre_logits=True)
            # the residual stream block by block (timm's forward_features, unrolled), keeping the
            # normed [CLS] after each chosen block
            x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(images))))
            kept = {}
            for number, block in enumerate(m.blocks, start=1):
                x = block(x)
                if number in self.tokens.blocks:
                    kept[number] = m.norm(x)[:, 0]
                if len(kept) == len(self.tokens.blocks):
                    break
            torch = require("torch", "vit")

            return torch.cat([kept[b] for b in self.tokens.blocks], dim=1)

    return ClsTokenModel


def ClsTokenModel(model, tokens: TokenSpec | None = None):
    return _wrapper()(model, tokens)
