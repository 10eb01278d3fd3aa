"""Image preprocessing from a timm data config, in numpy + Pillow (no torch at extraction time).

Matches timm's eval transform (``resolve_data_config`` + ``create_transform``): resize the shorter
side to ``floor(size / crop_pct)`` with the model's interpolation, center crop, scale to [0, 1],
normalise with the model's mean and std. Tests check it against timm's own transform.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .._optional import require

__all__ = ["PreprocessConfig", "preprocess_images"]


@dataclass(frozen=True)
class PreprocessConfig:
    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float

    @classmethod
    def from_timm(cls, data_config: dict) -> PreprocessConfig:
        crop_mode = data_config.get("crop_mode", "center")
        if crop_mode != "center":
            raise ValueError(f"crop_mode {crop_mode!r} is not supported (only 'center')")
        return cls(
            input_size=tuple(int(v) for v in data_config["input_size"]),
            interpolation=str(data_config["interpolation"]),
            mean=tuple(float(v) for v in data_config["mean"]),
            std=tuple(float(v) for v in data_config["std"]),
            crop_pct=float(data_config["crop_pct"]),
        )

    @classmethod
    def for_model(cls, model, *, mean=None, std=None, crop_pct=None) -> PreprocessConfig:
        """The model's timm data config (size, crop, interpolation, mean/std from its pretrained
        config; the input size follows an ``img_size`` override), with ``mean``/``std`` and
        ``crop_pct`` overridden when given. The one place hevit reads a timm data config."""
        timm = require("timm", "vit")

        config = timm.data.resolve_data_config({}, model=model)
        patch_embed = getattr(model, "patch_embed", None)
        if patch_embed is not None and getattr(patch_embed, "img_size", None):
            # timm resolves input_size from the pretrained config, which ignores an img_size override
            config["input_size"] = (3, *patch_embed.img_size)
        for name, value in (("mean", mean), ("std", std)):
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3 or (name == "std" and min(value) <= 0):
                    raise ValueError(f"{name} must be three values (std positive), got {value}")
                config[name] = value
        if crop_pct is not None:
            if not 0.0 < float(crop_pct) <= 1.0:
                raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
            config["crop_pct"] = float(crop_pct)
        return cls.from_timm(config)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(
            input_size=tuple(d["input_size"]),
            interpolation=d["interpolation"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            crop_pct=float(d["crop_pct"]),
        )


def _resample(name: str):
    Image = require("PIL.Image", "vit")

    table = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unsupported interpolation {name!r}") from None


def preprocess_images(images, config: PreprocessConfig) -> np.ndarray:
    """PIL RGB images -> float32 array (B, 3, H, W) ready for the model."""
    _, height, width = config.input_size
    scale_h = math.floor(height / config.crop_pct)
    scale_w = math.floor(width / config.crop_pct)
    resample = _resample(config.interpolation)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(3, 1, 1)
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    for i, img in enumerate(images):
        if img.mode != "RGB":
            raise ValueError(
                f"image {i} has mode {img.mode}; convert to RGB first (ImageFolder does)"
            )
        w, h = img.size
        # torchvision Resize(int): the shorter side becomes scale, the other keeps the aspect ratio
        if scale_h == scale_w:
            short = scale_h
            if w <= h:
                size = (short, int(short * h / w))
            else:
                size = (int(short * w / h), short)
        else:
            size = (scale_w, scale_h)
        img = img.resize(size, resample=resample)
        left = round((size[0] - width) / 2.0)
        top = round((size[1] - height) / 2.0)
        img = img.crop((left, top, left + width, top + height))
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        out[i] = (arr - mean) / std
    return out
