"""ViT [CLS] features: timm model -> ONNX (cached, parity-checked) -> ONNX Runtime extraction.

Importing this package does not import torch; building or exporting a model does.
"""

from .extractor import ClsExtractor, FeatureSet, select_providers
from .preprocess import PreprocessConfig, preprocess_images
from .vit import ViTSpec, WeightsInfo

__all__ = [
    "ClsExtractor",
    "FeatureSet",
    "PreprocessConfig",
    "ViTSpec",
    "WeightsInfo",
    "preprocess_images",
    "select_providers",
]
