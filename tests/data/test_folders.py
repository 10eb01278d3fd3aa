import numpy as np
import pytest
from PIL import Image

from hevit.data import SYNTHETIC_CLASSES, ImageFolder, synthetic_tile, write_synthetic_dataset
from hevit.errors import DataError
from tests.helpers import require_lc25000


def make_folder(root, classes=("a", "b"), per_class=2, mode="RGB", size=(32, 24)):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new(
                mode, size, color=0 if mode in ("L", "1", "P") else (10 * i,) * len(mode)
            ).save(root / c / f"{i}.png")
    return root


def test_reads_real_lc25000_layout():
    folder = ImageFolder(require_lc25000())
    assert folder.classes == ("lung_aca", "lung_n", "lung_scc")
    assert folder.class_counts() == {"lung_aca": 200, "lung_n": 200, "lung_scc": 200}
    img = folder.load(0)
    assert img.mode == "RGB" and img.size == (224, 224)


def test_empty_missing_and_single_class_folders_fail(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(DataError, match="is empty"):
        ImageFolder(tmp_path)
    make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="single class"):
        ImageFolder(tmp_path / "one")
    (tmp_path / "two" / "a").mkdir(parents=True)
    make_folder(tmp_path / "two", classes=("b",))
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(tmp_path / "two")


def test_corrupt_image_error_names_the_file(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    folder = ImageFolder(tmp_path)
    index = folder.paths.index(str(bad))
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read image"):
        folder.load(index)


def test_truncated_real_jpeg_is_refused(tmp_path):
    src = sorted((require_lc25000() / "lung_n").iterdir())[0]
    make_folder(tmp_path)
    (tmp_path / "a" / "cut.jpeg").write_bytes(src.read_bytes()[:2000])
    folder = ImageFolder(tmp_path)
    with pytest.raises(DataError, match=r"cut\.jpeg: cannot read image"):
        folder.load(folder.paths.index(str(tmp_path / "a" / "cut.jpeg")))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_images_are_converted_or_rejected_explicitly(tmp_path, mode):
    make_folder(tmp_path, mode=mode)
    img = ImageFolder(tmp_path).load(0)
    assert img.mode == "RGB"
    with pytest.raises(DataError, match=f"image mode {mode} is not RGB"):
        ImageFolder(tmp_path, mode_policy="reject").load(0)


def test_rgba_is_composited_on_white(tmp_path):
    make_folder(tmp_path)
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "a" / "clear.png")
    folder = ImageFolder(tmp_path)
    img = folder.load(folder.paths.index(str(tmp_path / "a" / "clear.png")))
    assert np.asarray(img).min() == 255


def test_synthetic_tiles_are_seeded_labelled_and_distinct(tmp_path):
    a = synthetic_tile(1, seed=3)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, synthetic_tile(1, seed=3))
    assert not np.array_equal(a, synthetic_tile(1, seed=4))
    means = [
        np.mean([synthetic_tile(c, seed=s)[..., 0].mean() for s in range(4)]) for c in range(3)
    ]
    assert len(set(np.round(means, 1))) == 3  # classes differ visibly
    root = write_synthetic_dataset(tmp_path / "syn", per_class=3, size=64, seed=1)
    folder = ImageFolder(root)
    assert folder.classes == SYNTHETIC_CLASSES and len(folder) == 9
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    with pytest.raises(ValueError, match=r"label must be in 0\.\.2"):
        synthetic_tile(3)


def test_high_bit_depth_images_keep_their_intensities(tmp_path):
    """A 16-bit PNG used to become all white and a float TIFF black: they are scaled now, and
    an image whose range is unknown is refused instead of clipped."""
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a" / "grey16.png")
    Image.fromarray(np.full((32, 32), 0.25, np.float32)).save(tmp_path / "a" / "float.tif")
    Image.fromarray(np.full((32, 32), 7.0, np.float32)).save(tmp_path / "b" / "float-hdr.tif")
    folder = ImageFolder(tmp_path)
    grey = np.asarray(folder.load(folder.paths.index(str(tmp_path / "a" / "grey16.png"))))
    np.testing.assert_array_equal(grey[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    flt = np.asarray(folder.load(folder.paths.index(str(tmp_path / "a" / "float.tif"))))
    assert np.all(flt == round(0.25 * 255))
    with pytest.raises(DataError, match=r"no known intensity range"):
        folder.load(folder.paths.index(str(tmp_path / "b" / "float-hdr.tif")))


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    import hevit.data.folders as folders
    from hevit.errors import ResourceError

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / c / "x.png")
    monkeypatch.setattr(folders, "MAX_IMAGE_PIXELS", 40 * 50 - 1)
    folder = ImageFolder(tmp_path)
    with pytest.raises(ResourceError, match=r"50 x 40 pixels is above the limit"):
        folder.load(0)
