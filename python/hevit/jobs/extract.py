"""``hevit extract``: an image folder -> (N, D) float32 [CLS] features, labels and metadata."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._optional import require
from ..data import ImageFolder
from ..features import ClsExtractor, FeatureSet
from ..features.export import default_cache_dir, export_onnx, quantize_int8
from ..features.vit import TokenSpec, ViTSpec, build_model

__all__ = ["extract_features", "make_spec", "prepare_extractor"]

log = logging.getLogger(__name__)


def make_spec(
    model: str = "vit_base_patch16_224",
    *,
    img_size: int | None = None,
    patch_size: int | None = None,
) -> ViTSpec:
    kwargs = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    return ViTSpec.make(model, **kwargs)


def prepare_extractor(
    spec: ViTSpec,
    *,
    weights="random",
    seed: int = 0,
    providers: str = "auto",
    threads: int | None = None,
    int8: bool = False,
    fp16: bool = False,
    cache_dir=None,
    finetune_on=None,
    finetune_epochs: int = 0,
    tokens: str | TokenSpec = "cls",
    tta: int = 1,
    mean=None,
    std=None,
    crop_pct=None,
) -> ClsExtractor:
    """Builds the model (recording where its weights came from), optionally fine-tunes it on
    ``finetune_on`` (an ImageFolder) for ``finetune_epochs``, exports or reuses the ONNX graph of
    the chosen ``tokens``, optionally quantises it to int8, and opens an ONNX Runtime session
    (``tta`` views per image; ``mean``/``std``/``crop_pct`` override the model's timm preprocessing)."""
    tokens = tokens if isinstance(tokens, TokenSpec) else TokenSpec.parse(tokens)
    model, info = build_model(spec, weights=weights, seed=seed)
    print(f"weights: {info.description}")
    if finetune_epochs > 0:
        import dataclasses

        from ..features.finetune import finetune_vit
        from ..features.preprocess import PreprocessConfig
        from ..features.vit import _state_digest

        result = finetune_vit(
            model,
            finetune_on,
            np.arange(len(finetune_on)),
            PreprocessConfig.for_model(model, mean=mean, std=std),
            epochs=finetune_epochs,
            seed=seed,
        )
        info = dataclasses.replace(
            info,
            description=f"{info.description}, then fine-tuned locally for {finetune_epochs} epoch(s) on "
            f"{result.images} images (loss {result.loss_per_epoch})",
            digest=_state_digest(model),
            extra={**info.extra, "finetune": dataclasses.asdict(result)},
        )
        print(f"weights: {info.description}")
    exported = export_onnx(
        model, spec, info, tokens=tokens, cache_dir=cache_dir, mean=mean, std=std, crop_pct=crop_pct
    )
    print(
        f"ONNX: {exported.onnx_path} (tokens {exported.tokens}, {exported.cls_dim} dims, opset {exported.opset}, "
        f"max abs diff vs PyTorch {exported.parity_max_abs:.2e})"
    )
    pre = exported.preprocess_config
    print(
        f"preprocessing: {pre.input_size[1]}x{pre.input_size[2]}, crop_pct {pre.crop_pct}, {pre.interpolation}, "
        f"mean {pre.mean}, std {pre.std}"
        + (f"; test-time augmentation: {tta} views" if tta > 1 else "")
    )
    if int8:
        exported = quantize_int8(exported)
        print(f"int8 dynamic quantisation: {exported.onnx_path}")
    extractor = ClsExtractor(exported, providers=providers, threads=threads, fp16=fp16, tta=tta)
    print(f"execution provider: {extractor.provider} ({extractor.provider_reason})")
    return extractor


def extract_features(
    data_dir,
    *,
    spec: ViTSpec | None = None,
    weights="random",
    seed: int = 0,
    batch_size: int = 16,
    providers: str = "auto",
    threads: int | None = None,
    int8: bool = False,
    fp16: bool = False,
    limit_per_class: int | None = None,
    cache_dir=None,
    progress: bool = True,
    finetune_epochs: int = 0,
    tokens: str = "cls",
    tta: int = 1,
    mean=None,
    std=None,
    crop_pct=None,
    resume: bool = True,
) -> FeatureSet:
    """[CLS] features of every image under ``data_dir`` (see :func:`prepare_extractor`).

    ``resume``: a partial extraction is kept under the ONNX cache (``partial/``) at Ctrl-C and
    every ``RESUME_SAVE_SECONDS``, and the same call later continues from it."""
    folder = ImageFolder(data_dir, limit_per_class=limit_per_class)
    print(f"data: {folder.root} ({len(folder)} images, classes {folder.class_counts()})")
    extractor = prepare_extractor(
        spec or make_spec(),
        weights=weights,
        seed=seed,
        providers=providers,
        threads=threads,
        int8=int8,
        fp16=fp16,
        cache_dir=cache_dir,
        finetune_on=folder,
        finetune_epochs=finetune_epochs,
        tokens=tokens,
        tta=tta,
        mean=mean,
        std=std,
        crop_pct=crop_pct,
    )
    resume_file = None
    if resume:
        key = extractor.resume_key(folder, np.arange(len(folder)), batch_size)
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        resume_file = base / "partial" / f"{key[:24]}.npz"
    features = extractor.extract_folder(
        folder, batch_size=batch_size, progress=progress, resume_file=resume_file
    )
    features.metadata["int8"] = int8
    features.metadata["seed"] = seed
    return features


def extract_tail_inputs(
    data_dir,
    *,
    spec: ViTSpec | None = None,
    weights="random",
    seed: int = 0,
    blocks: int | str = 1,
    classes: int | None = None,
    batch_size: int = 16,
    limit_per_class: int | None = None,
    progress: bool = True,
    mean=None,
    std=None,
    crop_pct=None,
):
    """For training the last ``blocks`` ViT blocks too (``"all"``: every block; the patch and
    position embeddings stay frozen): the token sequences entering block
    ``L - blocks`` of every image (PyTorch, the frozen front runs once) and the initial
    :class:`~hevit.federated.tail.ViTTail` (the model's own last blocks, zero head).

    Returns (FeatureSet with (N, tokens, dim) features, ViTTail).
    """
    import time

    tqdm = require("tqdm.auto", "vit").tqdm

    from ..features.preprocess import PreprocessConfig, preprocess_images
    from ..federated.tail import ViTTail, prefix_tokens

    folder = ImageFolder(data_dir, limit_per_class=limit_per_class)
    print(f"data: {folder.root} ({len(folder)} images, classes {folder.class_counts()})")
    spec = spec or make_spec()
    model, info = build_model(spec, weights=weights, seed=seed)
    print(f"weights: {info.description}")
    if blocks == "all":
        blocks = len(model.blocks)
    prep = PreprocessConfig.for_model(model, mean=mean, std=std, crop_pct=crop_pct)
    start = time.perf_counter()
    chunks = []
    bar = tqdm(
        total=len(folder),
        unit="img",
        desc=f"tokens before the last {blocks} block(s)",
        disable=not progress,
    )
    for lo in range(0, len(folder), batch_size):
        idx = range(lo, min(lo + batch_size, len(folder)))
        images = preprocess_images([folder.load(i) for i in idx], prep)
        chunks.append(prefix_tokens(model, images, blocks, batch_size=batch_size))
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - start
    tokens = np.concatenate(chunks)
    metadata = {
        "model": spec.to_dict(),
        "weights": info.to_dict(),
        "provider": "PyTorch (CPU)",
        "preprocess": prep.to_dict(),
        "data": str(folder.root),
        "seconds": seconds,
        "images_per_second": len(folder) / seconds,
        "trainable_blocks": blocks,
        "tokens_shape": list(tokens.shape[1:]),
    }
    tail = ViTTail.from_vit(model, blocks, classes or len(folder.classes))
    return FeatureSet(
        tokens, folder.labels.copy(), list(folder.paths), folder.classes, metadata
    ), tail
