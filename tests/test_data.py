"""Default procedural dataset and ImageNet-layout image folders."""
import numpy as np
import pytest

from varscale.config import DataConfig, from_dict
from varscale.data import DATASETS, ImageFolder, ProceduralImages, make_dataset
from varscale.data.folder import FolderData
from varscale.data.procedural import ProceduralData


def test_same_seed_gives_byte_identical_images():
    a, la = ProceduralImages(64, 32, 10, seed=3).batch(np.arange(64))
    b, lb = ProceduralImages(64, 32, 10, seed=3).batch(np.arange(64))
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)


def test_different_seed_or_split_gives_different_images():
    a, _ = ProceduralImages(16, 32, 10, seed=0).batch(np.arange(16))
    b, _ = ProceduralImages(16, 32, 10, seed=1).batch(np.arange(16))
    c, _ = ProceduralImages(16, 32, 10, seed=0, split="val").batch(np.arange(16))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_depends_only_on_its_index():
    ds = ProceduralImages(100, 32, 10, seed=0)
    full, lab = ds.batch(np.arange(100))
    sub, lsub = ds.batch(np.array([97, 5, 42]))
    assert np.array_equal(sub, full[[97, 5, 42]]) and np.array_equal(lsub, lab[[97, 5, 42]])
    img, label = ds[42]
    assert np.array_equal(img, full[42]) and label == lab[42]
    # the dataset size does not change an image either
    assert np.array_equal(ProceduralImages(50, 32, 10, seed=0)[42][0], full[42])


@pytest.mark.parametrize("res", [16, 32, 64])
def test_shapes_range_and_classes(res):
    ds = ProceduralImages(400, res, 12, seed=0)
    x, y = ds.batch(np.arange(400))
    assert x.shape == (400, 3, res, res) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert set(np.unique(y)) == set(range(12))
    # continuous factors: the mean colours (what a 1x1 token sees) are all different
    means = x.mean(axis=(2, 3)).round(3)
    assert len(np.unique(means, axis=0)) == 400


def test_make_dataset_procedural():
    cfg = DataConfig(resolution=32, options=ProceduralData(train_images=30, val_images=7))
    tr, va = make_dataset(cfg, "train"), make_dataset(cfg, "val")
    assert len(tr) == 30 and len(va) == 7
    with pytest.raises(ValueError):
        make_dataset(cfg, "test")


def _write_folder(root, sizes=((40, 30), (24, 50))):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog", "emu"):
            d = root / split / c
            d.mkdir(parents=True)
            for k, (w, h) in enumerate(sizes):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{k}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_image_folder(tmp_path):
    _write_folder(tmp_path)
    tr = ImageFolder(tmp_path, "train", resolution=16)
    va = ImageFolder(tmp_path, "val", resolution=16)
    assert tr.classes == ["cat", "dog", "emu"] and len(tr) == 6 and len(va) == 6
    x, y = tr[3]
    assert x.shape == (3, 16, 16) and x.dtype == np.float32 and y == 1
    assert -1 <= x.min() and x.max() <= 1
    xb, yb = va.batch([0, 5])
    assert xb.shape == (2, 3, 16, 16) and list(yb) == [0, 2]
    # val: centre crop, deterministic; train: random crop, reproducible per epoch
    assert np.array_equal(va[1][0], va[1][0])
    assert np.array_equal(tr[0][0], tr[0][0])
    crops = set()
    for e in range(6):
        tr.set_epoch(e)
        crops.add(tr[0][0].tobytes())
    assert len(crops) > 1


def test_make_dataset_folder(tmp_path):
    _write_folder(tmp_path)
    cfg = DataConfig(kind="folder", resolution=16, num_classes=3, options=FolderData(root=str(tmp_path)))
    ds = make_dataset(cfg, "val")
    assert len(ds) == 6 and ds[0][0].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "nowhere", "train")


def test_flat_data_section_loads_into_the_kinds_config(tmp_path):
    cfg = from_dict({"model": {"preset": "tiny"},
                     "data": {"kind": "folder", "root": str(tmp_path), "resize_ratio": 1.25, "resolution": 16,
                              "train_images": 60000}})  # procedural's key at its default: ignored
    assert cfg.data.options == FolderData(root=str(tmp_path), resize_ratio=1.25)
    assert cfg.to_dict()["data"] == {"kind": "folder", "resolution": 16, "num_classes": 10, "seed": 0,
                                     "root": str(tmp_path), "resize_ratio": 1.25}
    with pytest.raises(TypeError, match="FolderData"):
        DataConfig(kind="folder", options=ProceduralData())


def test_a_dataset_kind_is_one_class_and_one_registry_line(monkeypatch):
    from dataclasses import dataclass

    from varscale.config import opt

    @dataclass
    class StripesData:
        period: int = opt(4)

        def check(self, path):
            return [] if self.period > 0 else [f"{path}.period: must be > 0"]

    class Stripes:
        Config = StripesData
        fast_batch = True

        @classmethod
        def from_config(cls, data, split):
            return cls(data.options.period, data.resolution)

        def __init__(self, period, res):
            self.period, self.res = period, res

        def __len__(self):
            return 3

        def batch(self, idx):
            x = (np.arange(self.res) // self.period % 2).astype(np.float32) * 2 - 1
            return np.broadcast_to(x, (len(idx), 3, self.res, self.res)).copy(), np.zeros(len(idx), np.int64)

    monkeypatch.setitem(DATASETS, "stripes", Stripes)
    base = from_dict({})
    cfg = from_dict({"data": {"kind": "stripes", "period": 2}})
    assert make_dataset(cfg.data, "val").period == 2 and cfg.hash("data") != base.hash("data")
    assert from_dict({"data": {"period": 4}}) == base  # another kind's key at its default
    with pytest.raises(ValueError, match="data.period: used by data kind 'stripes'"):
        from_dict({"data": {"period": 2}})
    with pytest.raises(ValueError, match="data.period: must be > 0"):
        from_dict({"data": {"kind": "stripes", "period": 0}})
