"""Image similarity metrics with scikit-image-style signatures: ``metric(x_true, x_rec, *, ...)``.

Images are (H, W, 3) or (H, W) arrays with values in [0, data_range]; ``data_range`` is always
required (never guessed from the data).
"""

from .image import nmi, nmi_skimage, psnr, ssim
from .lpips import Lpips, lpips

__all__ = ["Lpips", "lpips", "nmi", "nmi_skimage", "psnr", "ssim"]
