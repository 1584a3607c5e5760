"""Image folders in the ImageNet layout: ``root/{train,val}/<class>/<image>``.

Classes are the sorted subfolder names of ``root/train`` (the same list labels ``val``).
The transform is the paper's (official utils/data.py): resize the shorter side to
``resolution * resize_ratio`` with Lanczos, then RandomCrop (train) or CenterCrop (val) to
``resolution``, map to [-1, 1]; no flip. The random crop is drawn from a hash of
(seed, index, epoch), so a given epoch's crops are reproducible.

Study-file keys (``data:``, with ``kind: folder``): ``root``, ``resize_ratio``
(:class:`FolderData`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from varscale.configkit import opt
from varscale.data.procedural import uniforms

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff", ".JPEG")


def list_classes(root: str | os.PathLike) -> list[str]:
    d = Path(root) / "train"
    if not d.is_dir():
        raise FileNotFoundError(f"image folder {root}: no train/ subfolder (expected root/train/<class>/*)")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"image folder {d}: no class subfolders")
    return classes


@dataclass
class FolderData:
    """The folder kind's keys under ``data:``."""

    root: Optional[str] = opt(None, hash="always")  # ImageNet layout root/{train,val}/<class>/*.jpg
    # paper's resize-then-crop: shorter side to resolution * resize_ratio (Lanczos)
    resize_ratio: float = opt(1.125, hash="always")

    def check(self, path: str) -> list[str]:
        return [] if self.root else [f"{path}.root: required when {path}.kind is 'folder'"]


class ImageFolder:
    """``(img_3HW float32 in [-1, 1], label)`` for every image of one split."""

    Config = FolderData
    fast_batch = False  # decoding files: the token cache uses a DataLoader with workers

    @classmethod
    def from_config(cls, data, split: str) -> "ImageFolder":
        """One split of the study's ``data`` section (a ``varscale.config.DataConfig``)."""
        o = data.options
        if not o.root:
            raise ValueError("data.root is required for a folder dataset")
        return cls(o.root, split, data.resolution, o.resize_ratio, seed=data.seed)

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int = 32,
                 resize_ratio: float = 1.125, random_crop: bool | None = None, seed: int = 0):
        self.root = Path(root)
        self.split = split
        self.resolution = int(resolution)
        self.resize_ratio = float(resize_ratio)
        self.random_crop = (split == "train") if random_crop is None else random_crop
        self.seed = int(seed)
        self.epoch = 0
        self.classes = list_classes(self.root)
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.root}: no {split}/ subfolder")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            d = split_dir / name
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.suffix.lower() in {e.lower() for e in EXTENSIONS}:
                    self.samples.append((p, label))
        if not self.samples:
            raise FileNotFoundError(f"image folder {split_dir}: no images")

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        # kept though the token cache tokenizes one epoch (0): it is how the same image gets
        # another of the paper's random crops, reproducibly (the crop hash takes the epoch)
        self.epoch = int(epoch)

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        path, _ = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            short = round(self.resolution * self.resize_ratio)
            scale = short / min(w, h)
            nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
            im = im.resize((nw, nh), Image.LANCZOS)
            r = self.resolution
            if self.random_crop:
                u = uniforms(self.seed, f"crop{self.epoch}", np.array([i]), 2)[0]
                left = int(math.floor(u[0] * (nw - r + 1)))
                top = int(math.floor(u[1] * (nh - r + 1)))
            else:
                left, top = (nw - r) // 2, (nh - r) // 2
            im = im.crop((left, top, left + r, top + r))
            arr = np.asarray(im, dtype=np.float32)
        return (arr.transpose(2, 0, 1) / np.float32(127.5) - np.float32(1)).copy()

    def __getitem__(self, i: int):
        return self._load(i), self.samples[i][1]

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        imgs = np.stack([self._load(int(i)) for i in idx]) if idx.size else \
            np.empty((0, 3, self.resolution, self.resolution), np.float32)
        return imgs, np.array([self.samples[int(i)][1] for i in idx], dtype=np.int64)
