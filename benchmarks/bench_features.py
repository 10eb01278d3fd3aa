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
    from hevit.data import ImageFolder
    from hevit.features import ClsExtractor, preprocess_images
    from hevit.features.export import export_onnx, quantize_int8
    from hevit.features.vit import DEFAULT_VIT, PAPER_VIT, ClsTokenModel, build_model
    from tests.helpers import require_lc25000

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
        cos = np.sum(out * ref, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        benchmark.extra_info["cls_cosine_to_fp32_min"] = float(cos.min())
        benchmark.extra_info["cls_cosine_to_fp32_mean"] = float(cos.mean())
    benchmark.extra_info.update(model=name, engine=engine, batch=BATCH)
    registry.add(Row(f"{name} {engine}", "features", BATCH, benchmark, extra=dict(benchmark.extra_info)))
