"""Models are built and exported once per session into a temporary ONNX cache."""

from __future__ import annotations

import pytest

from hevit.features.export import export_onnx
from hevit.features.vit import DEFAULT_VIT, PAPER_VIT, build_model


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def vit_models(onnx_cache):
    """{name: (torch model, WeightsInfo, ExportedModel)} for the default and the paper's ViT."""
    out = {}
    for name, spec in (("vit_b16_224", DEFAULT_VIT), ("paper_200_p25", PAPER_VIT)):
        model, info = build_model(spec, weights="random", seed=0)
        out[name] = (model, info, export_onnx(model, spec, info, cache_dir=onnx_cache))
    return out
