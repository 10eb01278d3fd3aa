"""Datasets (class-per-folder images, synthetic H&E-like tiles) and client partitions."""

from .folders import ImageFolder, ImageRecord
from .partition import (
    class_balance,
    client_parts,
    dirichlet_partition,
    iid_partition,
    partition_name,
    stratified_folds,
    stratified_split,
)
from .synthetic import SYNTHETIC_CLASSES, synthetic_tile, write_synthetic_dataset

__all__ = [
    "SYNTHETIC_CLASSES",
    "ImageFolder",
    "ImageRecord",
    "class_balance",
    "client_parts",
    "dirichlet_partition",
    "iid_partition",
    "partition_name",
    "stratified_folds",
    "stratified_split",
    "synthetic_tile",
    "write_synthetic_dataset",
]
