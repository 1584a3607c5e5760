"""Datasets by kind (procedural default, ImageNet-layout folders); the token cache is varscale.tokenizer.cache.

A dataset kind is a class registered in ``DATASETS`` under the name a study file gives as
``data.kind``. It follows the :class:`Dataset` protocol: ``Config``, a dataclass of the keys
the kind owns under ``data:`` (flat beside ``kind``, ``resolution``, ``num_classes`` and
``seed``; declared with ``varscale.configkit.opt`` like every config field), and
``from_config(data_cfg, split)``. Adding a kind is one new file and one line here
(docs/extending.md, "Adding a dataset kind").

``make_dataset(data_cfg, split)`` returns an object with ``__len__``,
``__getitem__(i) -> (img_3HW float32 in [-1, 1], label int)`` and a vectorised
``batch(indices) -> (img_B3HW, label_B)``.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from varscale.data.folder import ImageFolder
from varscale.data.procedural import ProceduralImages


class Dataset(Protocol):
    Config: type  # the kind's keys under data: (a dataclass; may define check(path) -> errors)
    fast_batch: bool  # batch() is cheap (rendered): the token cache calls it directly

    @classmethod
    def from_config(cls, data_cfg: Any, split: str) -> "Dataset": ...

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]: ...

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


DATASETS: dict[str, type[Dataset]] = {
    "procedural": ProceduralImages,
    "folder": ImageFolder,
}


def make_dataset(data_cfg, split: str) -> Dataset:
    """The study's images of one split ('train' or 'val')."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if data_cfg.kind not in DATASETS:
        raise ValueError(f"unknown data.kind {data_cfg.kind!r}; registered: {', '.join(DATASETS)}")
    return DATASETS[data_cfg.kind].from_config(data_cfg, split)


__all__ = ["DATASETS", "Dataset", "make_dataset", "ProceduralImages", "ImageFolder"]
