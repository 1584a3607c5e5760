"""Datasets (procedural default, ImageNet-layout folders) and the token cache.

``make_dataset(data_cfg, split)`` returns an object with ``__len__``,
``__getitem__(i) -> (img_3HW float32 in [-1, 1], label int)`` and a vectorised
``batch(indices) -> (img_B3HW, label_B)``.
"""
from __future__ import annotations

from varscale.data.folder import ImageFolder
from varscale.data.procedural import ProceduralImages


def make_dataset(data_cfg, split: str):
    """The study's images of one split ('train' or 'val')."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if data_cfg.kind == "procedural":
        n = data_cfg.train_images if split == "train" else data_cfg.val_images
        return ProceduralImages(n, data_cfg.resolution, data_cfg.num_classes, data_cfg.seed, split,
                                data_cfg.factor_levels)
    if data_cfg.kind == "folder":
        if not data_cfg.root:
            raise ValueError("data.root is required for a folder dataset")
        return ImageFolder(data_cfg.root, split, data_cfg.resolution, data_cfg.resize_ratio, seed=data_cfg.seed)
    raise ValueError(f"unknown data.kind {data_cfg.kind!r}")


__all__ = ["make_dataset", "ProceduralImages", "ImageFolder"]
