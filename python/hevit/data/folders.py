"""Class-per-folder image datasets (the LC25000 layout: ``root/<class>/<image>``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import DataError, ResourceError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "ImageRecord"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int


#: Largest image (pixels) ImageFolder decodes: 64 megapixels, e.g. 8000 x 8000 (a 224 px model
#: needs far less; whole-slide images must be tiled first).
MAX_IMAGE_PIXELS = 64_000_000


def _to_rgb(img, path):
    """RGB from another PIL mode without clipping high-bit-depth data into white or black."""
    Image = require("PIL.Image", "vit")

    mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # composite on white (the slide background) instead of dropping alpha
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    values = np.asarray(img)
    if mode.startswith("I;16") or (mode == "I" and values.min() >= 0 and values.max() <= 65535):
        grey = np.round(values.astype(np.float64) / 257.0)
    elif mode == "F" and np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1:
        grey = np.round(values.astype(np.float64) * 255.0)
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0, 0)
        raise DataError(
            f"{path}: image mode {mode} with values in [{low:g}, {high:g}] has no known "
            "intensity range; convert it to 8-bit RGB (or 16-bit grey, or float in [0, 1])"
        )
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


class ImageFolder:
    """Images under ``root/<class name>/``; class indices follow sorted class names.

    Parameters
    ----------
    root : path
    mode_policy : {"convert", "reject"}
        What to do with images that are not RGB (grayscale, RGBA, palette, CMYK): convert them to
        RGB (each conversion is logged) or raise :class:`hevit.errors.DataError`.
    limit_per_class : int, optional
        Keep only the first N files (sorted by name) of each class.

    Raises
    ------
    hevit.errors.DataError
        Missing or empty folder, fewer than two classes, a class folder without images.
    """

    def __init__(
        self, root, *, mode_policy: str = "convert", limit_per_class: int | None = None
    ) -> None:
        if mode_policy not in ("convert", "reject"):
            raise ValueError(f"mode_policy must be 'convert' or 'reject', got {mode_policy!r}")
        self.root = Path(root)
        self.mode_policy = mode_policy
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist or is not a folder")
        class_dirs = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        records: list[ImageRecord] = []
        classes: list[str] = []
        for class_dir in class_dirs:
            files = sorted(
                p
                for p in class_dir.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if limit_per_class is not None:
                files = files[:limit_per_class]
            if not files:
                raise DataError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            classes.append(class_dir.name)
            records.extend(ImageRecord(p, len(classes) - 1) for p in files)
        if not classes:
            loose = [
                p
                for p in self.root.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if loose:
                raise DataError(
                    f"dataset folder {self.root} holds {len(loose)} images but no class "
                    f"sub-folders: move each class's images into its own sub-folder "
                    f"({self.root}/<class name>/{loose[0].name})"
                )
            raise DataError(
                f"dataset folder {self.root} is empty: expected one sub-folder of images per class"
            )
        if len(classes) < 2:
            raise DataError(
                f"dataset folder {self.root} has a single class ({classes[0]}): classification needs at least two"
            )
        self.classes: tuple[str, ...] = tuple(classes)
        self.records: tuple[ImageRecord, ...] = tuple(records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def paths(self) -> list[str]:
        return [str(r.path) for r in self.records]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def load(self, index: int):
        """Returns the image as an RGB ``PIL.Image`` (decoded fully, so corrupt files fail here).

        Images above ``MAX_IMAGE_PIXELS`` are refused from their header, before decoding
        (:class:`hevit.errors.ResourceError`). Modes other than RGB are converted (or refused
        with ``mode_policy='reject'``): alpha is composited on white, 16-bit grey is scaled to
        8 bits, float images must hold values in [0, 1]; anything whose range is unknown is
        refused rather than clipped into a white or black image.
        """
        PIL = require("PIL", "vit")
        Image, UnidentifiedImageError = PIL.Image, PIL.UnidentifiedImageError

        path = self.records[index].path
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ResourceError(
                        f"{path}: {width} x {height} pixels is above the limit of "
                        f"{MAX_IMAGE_PIXELS:,} (hevit.data.folders.MAX_IMAGE_PIXELS)"
                    )
                img.load()
                mode = img.mode
                if mode == "RGB":
                    return img.copy()
                if self.mode_policy == "reject":
                    raise DataError(f"{path}: image mode {mode} is not RGB (mode_policy='reject')")
                log.info("%s: converting image mode %s to RGB", path, mode)
                return _to_rgb(img, path)
        except Image.DecompressionBombError as exc:
            raise ResourceError(f"{path}: {exc}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}: cannot read image ({exc})") from exc

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, classes={self.classes}, images={len(self)})"
