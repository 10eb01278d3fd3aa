"""[CLS] extraction throughput: ONNX Runtime (fp32, int8) vs PyTorch eager, same images, same run.

16 real LC25000 images per batch, for ViT-B/16 at 224 px and the paper's 200 px / patch-25 ViT.
The int8 model's [CLS] drift (cosine similarity to fp32) goes to extra_info.
"""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import Row

BATCH = 16


@pytest.fixture(scope="module")
def feature_models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tests.helpers import require_lc25000

    from hevit.data import ImageFolder
    from hevit.features import ClsExtractor, preprocess_images
    from hevit.features.export import export_onnx, quantize_int8
    from hevit.features.vit import DEFAULT_VIT, PAPER_VIT, ClsTokenModel, build_model

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    folder = ImageFolder(require_lc25000())
    picks = np.linspace(0, len(folder) - 1, BATCH).astype(int)
    images = [folder.load(int(i)) for i in picks]
    cache = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, spec in (("vit_b16_224", DEFAULT_VIT), ("paper_200_p25", PAPER_VIT)):
        model, info = build_model(spec, weights="random", seed=0)
        exported = export_onnx(model, spec, info, cache_dir=cache)
        x = preprocess_images(images, exported.preprocess_config)
        out[name] = dict(
            torch=ClsTokenModel(model).eval(),
            fp32=ClsExtractor(exported, providers="cpu"),
            int8=ClsExtractor(quantize_int8(exported), providers="cpu"),
            x=x,
        )
    return out


@pytest.mark.parametrize("engine", ["torch", "fp32", "int8"])
@pytest.mark.parametrize("name", ["vit_b16_224", "paper_200_p25"])
def test_extraction_throughput(benchmark, feature_models, registry, name, engine):
    import torch

    m = feature_models[name]
    x = m["x"]
    if engine == "torch":
        tx = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return m["torch"](tx).numpy()
    else:
        run = lambda: m[engine].run(x)  # noqa: E731
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out.shape == (BATCH, 768)
    if engine == "int8":
        ref = m["fp32"].run(x)
        cos = np.sum(out * ref, axis=1) / (
            np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
        )
        benchmark.extra_info["cls_cosine_to_fp32_min"] = float(cos.min())
        benchmark.extra_info["cls_cosine_to_fp32_mean"] = float(cos.mean())
    benchmark.extra_info.update(model=name, engine=engine, batch=BATCH)
    registry.add(
        Row(f"{name} {engine}", "features", BATCH, benchmark, extra=dict(benchmark.extra_info))
    )


#: Token options of the pretrained ViT-Ti, per image: final [CLS]; [CLS] of blocks 7, 9, 11, 12;
#: the same with 8-view test-time augmentation (8x the forward passes).
TOKEN_OPTIONS = [("cls", 1), ("cls:7,9,11,12", 1), ("cls:7,9,11,12", 8)]


@pytest.fixture(scope="module")
def vit_tiny_extractors(tmp_path_factory):
    from tests.features.test_features import SHARED_VIT_TI
    from tests.helpers import require_lc25000

    from hevit.data import ImageFolder
    from hevit.features import ClsExtractor, preprocess_images
    from hevit.features.export import export_onnx
    from hevit.features.vit import TokenSpec, ViTSpec, build_model

    if not SHARED_VIT_TI.is_file():
        pytest.skip(f"shared pretrained ViT-Ti missing at {SHARED_VIT_TI}")
    spec = ViTSpec.make("vit_tiny_patch16_224")
    model, info = build_model(spec, weights=SHARED_VIT_TI)
    cache = tmp_path_factory.mktemp("onnx-ti")
    folder = ImageFolder(require_lc25000())
    images = [folder.load(int(i)) for i in np.linspace(0, len(folder) - 1, BATCH).astype(int)]
    out = {}
    for tokens, tta in TOKEN_OPTIONS:
        exported = export_onnx(model, spec, info, tokens=TokenSpec.parse(tokens), cache_dir=cache)
        out[(tokens, tta)] = (
            ClsExtractor(exported, providers="cpu", tta=tta),
            preprocess_images(images, exported.preprocess_config),
        )
    return out


@pytest.mark.parametrize("tokens, tta", TOKEN_OPTIONS)
def test_token_option_cost(benchmark, vit_tiny_extractors, registry, tokens, tta):
    extractor, x = vit_tiny_extractors[(tokens, tta)]
    out = benchmark.pedantic(lambda: extractor.run(x), rounds=3, iterations=1)
    assert out.shape == (BATCH, extractor.exported.cls_dim)
    benchmark.extra_info.update(
        model="vit_tiny_patch16_224 (pretrained)",
        tokens=tokens,
        tta=tta,
        batch=BATCH,
        dim=extractor.exported.cls_dim,
    )
    registry.add(
        Row(
            f"vit_tiny {tokens} tta{tta}",
            "features",
            BATCH,
            benchmark,
            extra=dict(benchmark.extra_info),
        )
    )
