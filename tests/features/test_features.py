import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hevit.data import ImageFolder
from hevit.errors import ModelError
from hevit.features import (
    ClsExtractor,
    FeatureSet,
    PreprocessConfig,
    preprocess_images,
    select_providers,
)
from hevit.features.export import PARITY_LIMIT, export_onnx, quantize_int8
from hevit.features.vit import ClsTokenModel, ViTSpec, build_model
from tests.helpers import require_lc25000

MODELS = ["vit_b16_224", "paper_200_p25"]


def real_images(count, start=0):
    folder = ImageFolder(require_lc25000())
    picks = np.linspace(0, len(folder) - 1, count + start).astype(int)[start:]
    return [folder.load(int(i)) for i in picks]


def test_preprocessing_matches_timm_transform():
    import timm

    model, _ = build_model(ViTSpec.make("vit_base_patch16_224", img_size=200, patch_size=25))
    config = timm.data.resolve_data_config({}, model=model)
    config["input_size"] = (3, 200, 200)
    transform = timm.data.create_transform(**config)
    from hevit.features.preprocess import PreprocessConfig

    ours = preprocess_images(real_images(3), PreprocessConfig.from_timm(config))
    ref = np.stack([transform(img).numpy() for img in real_images(3)])
    assert ours.shape == ref.shape == (3, 3, 200, 200)
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_pytorch_on_random_and_real_images_at_dynamic_batch_sizes(vit_models, name):
    model, _info, exported = vit_models[name]
    assert exported.cls_dim == 768 and exported.parity_max_abs <= PARITY_LIMIT
    extractor = ClsExtractor(exported, providers="cpu")
    wrapper = ClsTokenModel(model)
    _, h, w = exported.preprocess_config.input_size
    rng = np.random.default_rng(11)
    images = real_images(32)
    for batch in (1, 3, 32):
        real = preprocess_images(images[:batch], exported.preprocess_config)
        noise = rng.standard_normal((batch, 3, h, w)).astype(np.float32)
        for x in (real, noise):
            got = extractor.run(x)
            with torch.no_grad():
                ref = wrapper(torch.from_numpy(x)).numpy()
            assert got.shape == (batch, 768) and got.dtype == np.float32
            assert np.abs(got - ref).max() <= PARITY_LIMIT


def test_export_is_cached_by_content(vit_models, onnx_cache):
    model, info, exported = vit_models["paper_200_p25"]
    spec = ViTSpec(
        **{"name": exported.spec["name"], "kwargs": tuple(sorted(exported.spec["kwargs"].items()))}
    )
    again = export_onnx(model, spec, info, cache_dir=onnx_cache)
    assert again.onnx_path == exported.onnx_path
    other_model, other_info = build_model(spec, weights="random", seed=1)
    assert other_info.digest != info.digest
    assert (
        export_onnx(other_model, spec, other_info, cache_dir=onnx_cache).onnx_path
        != exported.onnx_path
    )


def test_weights_from_a_local_checkpoint(tmp_path, vit_models):
    from safetensors.torch import save_file

    model, info, _ = vit_models["paper_200_p25"]
    spec = ViTSpec.make("vit_base_patch16_224", img_size=200, patch_size=25)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"model": state}, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        _loaded, loaded_info = build_model(spec, weights=path, seed=123)
        assert loaded_info.source == "file" and loaded_info.digest == info.digest
    with pytest.raises(ModelError, match="does not fit"):
        build_model(
            ViTSpec.make("vit_small_patch16_224", img_size=200, patch_size=25),
            weights=tmp_path / "w.pth",
        )
    with pytest.raises(ModelError, match="does not exist"):
        build_model(spec, weights=tmp_path / "missing.pth")


def test_pretrained_weights_fail_loudly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not load pretrained weights"):
        build_model(
            ViTSpec.make("vit_base_patch16_224", img_size=200, patch_size=25), weights="pretrained"
        )


def test_random_weights_are_labelled_and_seeded(vit_models):
    _, info, _ = vit_models["vit_b16_224"]
    assert info.source == "random" and "RANDOM" in info.description and info.seed == 0


@pytest.mark.parametrize(
    "requested, available, gpu, expected, reason",
    [
        ("auto", ["CPUExecutionProvider"], False, ["CPUExecutionProvider"], "no CUDA provider"),
        (
            "auto",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            False,
            ["CPUExecutionProvider"],
            "no GPU is visible",
        ),
        (
            "auto",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            True,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "visible GPU",
        ),
        (
            "cpu",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            True,
            ["CPUExecutionProvider"],
            "requested",
        ),
    ],
)
def test_provider_selection(requested, available, gpu, expected, reason):
    chosen, why = select_providers(requested, available=available, gpu=gpu)
    assert chosen == expected and reason in why


def test_cuda_requests_fail_instead_of_falling_back(vit_models):
    with pytest.raises(ModelError, match="no CUDA provider"):
        select_providers("cuda", available=["CPUExecutionProvider"], gpu=False)
    with pytest.raises(ModelError, match="no GPU is visible"):
        select_providers(
            "cuda", available=["CUDAExecutionProvider", "CPUExecutionProvider"], gpu=False
        )
    with pytest.raises(ModelError, match="fp16 extraction needs the CUDA provider"):
        ClsExtractor(vit_models["paper_200_p25"][2], providers="cpu", fp16=True)


def test_extract_folder_streams_and_round_trips(tmp_path, vit_models):
    exported = vit_models["paper_200_p25"][2]
    folder = ImageFolder(require_lc25000(), limit_per_class=3)
    extractor = ClsExtractor(exported, providers="auto", threads=2)
    assert extractor.provider == "CPUExecutionProvider"
    fs = extractor.extract_folder(folder, batch_size=4, progress=False)
    assert fs.features.shape == (9, 768) and fs.features.dtype == np.float32
    np.testing.assert_array_equal(fs.labels, folder.labels)
    assert (
        fs.metadata["provider"] == "CPUExecutionProvider"
        and fs.metadata["weights"]["source"] == "random"
    )
    direct = extractor.extract_images([folder.load(i) for i in range(9)])
    np.testing.assert_allclose(fs.features, direct, atol=1e-5)
    loaded = FeatureSet.load(fs.save(tmp_path / "f.npz"))
    np.testing.assert_array_equal(loaded.features, fs.features)
    assert loaded.classes == folder.classes
    assert loaded.metadata == json.loads(json.dumps(fs.metadata))


def test_int8_model_stays_close_to_fp32(vit_models):
    exported = vit_models["paper_200_p25"][2]
    x = preprocess_images(real_images(6), exported.preprocess_config)
    fp32 = ClsExtractor(exported, providers="cpu").run(x)
    int8 = ClsExtractor(quantize_int8(exported), providers="cpu").run(x)
    cos = np.sum(fp32 * int8, axis=1) / (
        np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1)
    )
    assert cos.min() > 0.95, cos


def test_local_finetuning_lowers_the_training_loss(tmp_path):
    import timm

    from hevit.data import write_synthetic_dataset
    from hevit.features.finetune import finetune_vit
    from hevit.features.preprocess import PreprocessConfig

    folder = ImageFolder(write_synthetic_dataset(tmp_path / "syn", per_class=8, size=48, seed=3))
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=0
    ).eval()
    config = PreprocessConfig((3, 32, 32), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune_vit(
        model,
        folder,
        np.arange(len(folder)),
        config,
        epochs=4,
        lr=1e-3,
        batch_size=8,
        progress=False,
    )
    assert len(result.loss_per_epoch) == 4 and result.loss_per_epoch[-1] < result.loss_per_epoch[0]
    assert not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        finetune_vit(model, folder, np.arange(4), config, epochs=0)


SHARED_VIT_TI = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "models"
    / "vit_tiny_patch16_224.imagenet.safetensors"
)


@pytest.fixture(scope="module")
def vit_tiny():
    """The shared ImageNet-pretrained ViT-Ti (CI has ../shared; a missing file skips loudly)."""
    if not SHARED_VIT_TI.is_file():
        pytest.skip(
            f"shared pretrained ViT-Ti missing at {SHARED_VIT_TI}: these tests need ../shared beside the checkout"
        )
    return build_model(ViTSpec.make("vit_tiny_patch16_224"), weights=SHARED_VIT_TI)


def test_shared_vit_tiny_loads_with_its_provenance_and_preprocessing(vit_tiny):
    from hevit.features.preprocess import PreprocessConfig
    from hevit.features.vit import file_sha256

    model, info = vit_tiny
    assert info.source == "file" and info.extra["file_sha256"] == file_sha256(SHARED_VIT_TI)
    manifest = (SHARED_VIT_TI.parent / "MANIFEST.sha256").read_text()
    assert info.extra["file_sha256"] in manifest
    assert info.extra["file_source"]  # recorded from the safetensors metadata
    prep = PreprocessConfig.for_model(model)
    assert prep.mean == prep.std == (0.5, 0.5, 0.5) and prep.input_size == (3, 224, 224)
    assert PreprocessConfig.for_model(model, mean=(0.4, 0.4, 0.4)).mean == (0.4, 0.4, 0.4)


def test_checkpoint_mismatch_names_the_first_key(tmp_path, vit_tiny):
    from safetensors.torch import save_file

    model, _ = vit_tiny
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    broken = dict(state)
    broken["blocks.3.attn.qkv.weight"] = broken["blocks.3.attn.qkv.weight"][:, :5].contiguous()
    save_file(broken, tmp_path / "shape.safetensors")
    with pytest.raises(
        ModelError, match=r"first mismatch: 'blocks.3.attn.qkv.weight' has shape \(576, 5\)"
    ):
        build_model(ViTSpec.make("vit_tiny_patch16_224"), weights=tmp_path / "shape.safetensors")
    missing = {k: v for k, v in state.items() if k != "norm.bias"}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match=r"first mismatch: key 'norm\.bias' is missing"):
        build_model(ViTSpec.make("vit_tiny_patch16_224"), weights=tmp_path / "missing.safetensors")


def test_block_tokens_export_with_parity_and_cls_of_the_last_block_is_cls(vit_tiny, onnx_cache):
    import onnxruntime as ort

    from hevit.features.vit import TokenSpec

    model, info = vit_tiny
    spec = ViTSpec.make("vit_tiny_patch16_224")
    images = preprocess_images(real_images(3), PreprocessConfig.for_model(model))
    multi = export_onnx(
        model,
        spec,
        info,
        tokens=TokenSpec.parse("cls:7,9,11,12"),
        cache_dir=onnx_cache,
        parity_images=images,
    )
    final = export_onnx(model, spec, info, cache_dir=onnx_cache)
    assert multi.cls_dim == 768 and multi.tokens == "cls:7,9,11,12" and multi.parity_max_abs <= 1e-4
    assert multi.key != final.key  # the token choice is part of the cache key

    def run(e):
        return ort.InferenceSession(e.onnx_path, providers=["CPUExecutionProvider"]).run(
            None, {"images": images}
        )[0]

    out_multi, out_final = run(multi), run(final)
    assert out_multi.shape == (3, 768)
    # block 12's normed [CLS] is the final-norm [CLS]
    np.testing.assert_allclose(out_multi[:, 576:], out_final, atol=1e-5)
    with pytest.raises(ModelError, match="has 12 blocks"):
        export_onnx(model, spec, info, tokens=TokenSpec.parse("cls:13"), cache_dir=onnx_cache)
    with pytest.raises(ValueError, match="tokens must be"):
        TokenSpec.parse("mean")


def test_eight_view_tta_is_invariant_to_rotating_and_flipping_the_input(vit_tiny, onnx_cache):
    from hevit.features.extractor import dihedral_views

    model, info = vit_tiny
    exported = export_onnx(model, ViTSpec.make("vit_tiny_patch16_224"), info, cache_dir=onnx_cache)
    extractor = ClsExtractor(exported, providers="cpu", tta=8)
    batch = preprocess_images(real_images(2), exported.preprocess_config)
    views = dihedral_views(batch, 8)
    assert views.shape == (16, *batch.shape[1:])
    assert len({v.tobytes() for v in views[::2]}) == 8  # eight distinct views of image 0
    base = extractor.run(batch)
    turned = extractor.run(np.ascontiguousarray(np.rot90(batch, 1, axes=(2, 3))[..., ::-1]))
    np.testing.assert_allclose(turned, base, atol=1e-4)
    plain = ClsExtractor(exported, providers="cpu").run(batch)
    assert np.abs(plain - base).max() > 1e-3  # the augmentation changes the token
    with pytest.raises(ValueError, match="tta must be one of"):
        ClsExtractor(exported, providers="cpu", tta=4)


def _feature_file(tmp_path, **overrides):
    values = dict(
        features=np.zeros((4, 3), np.float32),
        labels=np.array([0, 1, 0, 1]),
        paths=np.array(["a", "b", "c", "d"]),
        classes=np.array(["x", "y"]),
        metadata=np.array("{}"),
    )
    values.update(overrides)
    path = tmp_path / "f.npz"
    np.savez(path, **values)
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(labels=np.array([0, 1, 0])), "4 feature rows need as many integer labels"),
        (dict(labels=np.array([0, 0, 0, 0])), "every row has the same label"),
        (dict(features=np.zeros((4, 3), np.complex64)), "real"),
        (dict(labels=np.array([0, 1, 2, 1])), "labels must index 2 classes"),
        (dict(features=np.full((4, 3), np.nan, np.float32)), "NaN"),
    ],
)
def test_inconsistent_feature_files_are_refused(tmp_path, overrides, message):
    from hevit.errors import DataError

    with pytest.raises(DataError, match=message):
        FeatureSet.load(_feature_file(tmp_path, **overrides))


def test_a_feature_file_that_expands_far_beyond_its_size_is_refused_unread(tmp_path):
    """A small compressed .npz that would decompress to a gigabyte."""
    import zipfile

    from hevit.errors import ResourceError

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as member:
            chunk = bytes(2**24)
            for _ in range(64):  # 1 GiB of zeros, a few MB compressed
                member.write(chunk)
    assert path.stat().st_size < 8 * 2**20
    with pytest.raises(ResourceError, match="declares 1,073,741,824 bytes"):
        FeatureSet.load(path)


def test_eight_view_extraction_reports_progress_every_few_images(vit_tiny, onnx_cache):
    """With 8 views an ONNX call of batch_size images would run 8 x batch_size forward passes
    between two progress updates; extract_folder runs batch_size // 8 images per call instead,
    with the tokens of one call over all views of the whole batch."""
    model, info = vit_tiny
    exported = export_onnx(model, ViTSpec.make("vit_tiny_patch16_224"), info, cache_dir=onnx_cache)
    extractor = ClsExtractor(exported, providers="cpu", tta=8)
    folder = ImageFolder(require_lc25000(), limit_per_class=2)
    passes = []
    run = extractor._run
    extractor._run = lambda batch: passes.append(len(batch)) or run(batch)
    features = extractor.extract_folder(folder, batch_size=16, progress=False)
    assert passes == [16, 16, 16]  # 6 images: 2 per call, 8 views each
    whole = extractor.run(
        preprocess_images([folder.load(i) for i in range(6)], extractor.preprocess)
    )
    np.testing.assert_allclose(features.features, whole, atol=1e-5)
