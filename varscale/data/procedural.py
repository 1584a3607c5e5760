"""The embedded default dataset: class-conditional procedural images, nothing to download.

Each image is a continuous 2-D scene rendered at any resolution (docs/data.md has the full
generative process):

* background: a linear gradient between two random colours in a random direction
  (the 1x1 and 2x2 scales: mean colour and its slope, continuous, so coarse tokens vary);
* objects: the class fixes the shape (disk, square, triangle, ring, cross) and the layout
  (one large object, or a pair); position, size, rotation and colour are random (the
  2x2..4x4 scales);
* texture: a sinusoidal grating inside each object whose orientation and frequency the class
  fixes and whose phase and contrast are random (the finest scales), with anti-aliased
  edges one pixel wide.

Determinism: the random factors of image ``i`` of split ``s`` are a counter-based hash
(splitmix64) of ``(seed, s, i, factor)``, so an image depends on nothing else: any subset
can be generated independently and in any order, and the same seed gives byte-identical
images on every machine (float32 numpy arithmetic, no threads).

Study-file keys (``data:``, with ``kind: procedural``): ``train_images``, ``val_images``
(:class:`ProceduralData`); ``resolution``, ``num_classes`` and ``seed`` are the section's own.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from varscale.configkit import Retired, opt

SHAPES = ("disk", "square", "triangle", "ring", "cross")
N_FACTORS = 32  # random columns drawn per image (fixed so that adding one never shifts others)

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_id(split: str) -> int:
    return _SPLIT_IDS.get(split, zlib.crc32(split.encode()) & 0xFFFFFFFF)


def uniforms(seed: int, split: str, idx_N: np.ndarray, n: int = N_FACTORS) -> np.ndarray:
    """(N, n) float64 uniforms in [0, 1), a pure function of (seed, split, index, column)."""
    key = _mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    key = _mix64(key ^ np.uint64(split_id(split)))
    h_N = _mix64(key ^ np.asarray(idx_N, dtype=np.uint64))
    cols = np.arange(n, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    with np.errstate(over="ignore"):
        z = _mix64(h_N[:, None] + cols[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def class_attributes(label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a class fixes: shape id, layout (0 one object, 1 pair), texture angle, frequency.

    Classes 0..9 are the 5 shapes x 2 layouts; every class also has its own texture
    orientation (golden-angle steps) and frequency, so classes beyond 10 stay distinct.
    """
    label = np.asarray(label)
    shape = label % len(SHAPES)
    layout = (label // len(SHAPES)) % 2
    angle = (label * 2.39996323) % np.pi
    freq = 1.3 + 0.35 * (label % 4)  # cycles per half image width
    return shape, layout, angle, freq


def _sdf(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a unit-size shape in its local frame."""
    if shape == 0:  # disk
        return np.sqrt(x * x + y * y) - 1.0
    if shape == 1:  # square (slightly smaller so its area matches the disk's)
        return np.maximum(np.abs(x), np.abs(y)) - 0.85
    if shape == 2:  # equilateral triangle, circumradius ~1.15
        k = np.float32(np.sqrt(3.0))
        ax = np.abs(x)
        return np.maximum(ax * k * 0.5 + y * 0.5, -y) - 0.55
    if shape == 3:  # ring
        return np.abs(np.sqrt(x * x + y * y) - 0.72) - 0.3
    if shape == 4:  # cross: two bars
        ax, ay = np.abs(x), np.abs(y)
        bar1 = np.maximum(ax - 1.0, ay - 0.32)
        bar2 = np.maximum(ax - 0.32, ay - 1.0)
        return np.minimum(bar1, bar2)
    raise ValueError(shape)


def render(u: np.ndarray, label: np.ndarray, resolution: int) -> np.ndarray:
    """Render images from their random factors ``u`` (N, N_FACTORS) and labels -> (N,3,H,W) in [-1,1]."""
    f32 = np.float32
    N = u.shape[0]
    H = W = int(resolution)
    u = u.astype(f32)
    shape, layout, angle, freq = class_attributes(label)
    # pixel centres in [-1, 1]
    c = (np.arange(W, dtype=f32) + f32(0.5)) / f32(W) * f32(2) - f32(1)
    gx = c[None, None, :]  # (1,1,W)
    gy = c[None, :, None]  # (1,H,1)
    px = f32(W / 2.0)  # pixels per unit length

    def col(j):  # (N,1,1) view of factor j
        return u[:, j][:, None, None]

    # --- background: gradient between two colours along a random direction
    bg1 = u[:, 0:3][:, :, None, None]  # (N,3,1,1)
    bg2 = u[:, 3:6][:, :, None, None]
    th = col(6) * f32(2 * np.pi)
    t = np.clip((gx * np.cos(th) + gy * np.sin(th)) * f32(0.5) + f32(0.5), 0, 1)  # (N,H,W)
    img = bg1 + (bg2 - bg1) * t[:, None]  # (N,3,H,W)

    # --- objects: one large, or a pair of smaller ones
    n_obj = np.where(layout == 1, 2, 1)
    fg = u[:, 7:10]
    # keep the object's colour away from the background's mean so that it is visible
    bg_mean = 0.5 * (u[:, 0:3] + u[:, 3:6])
    fg = np.where(np.abs(fg - bg_mean) < 0.25, (fg + 0.5) % 1.0, fg).astype(f32)
    for o in range(2):
        active = n_obj > o
        if not active.any():
            continue
        b = 10 + 6 * o  # factor columns of object o: 10..15 and 16..21
        single = layout == 0
        size = np.where(single, 0.38 + 0.22 * u[:, b], 0.22 + 0.12 * u[:, b]).astype(f32)
        # a single object near the centre; a pair on either side of it along a random axis
        pair_axis = u[:, 22] * np.pi
        side = 1.0 if o == 0 else -1.0
        cx = np.where(single, 0.5 * (u[:, b + 1] - 0.5),
                      side * 0.45 * np.cos(pair_axis) + 0.2 * (u[:, b + 1] - 0.5)).astype(f32)
        cy = np.where(single, 0.5 * (u[:, b + 2] - 0.5),
                      side * 0.45 * np.sin(pair_axis) + 0.2 * (u[:, b + 2] - 0.5)).astype(f32)
        rot = (u[:, b + 3] * 2 * np.pi).astype(f32)
        cr, sr = np.cos(rot)[:, None, None], np.sin(rot)[:, None, None]
        dx = gx - cx[:, None, None]
        dy = gy - cy[:, None, None]
        s = size[:, None, None]
        lx = (dx * cr + dy * sr) / s  # local frame, unit size
        ly = (-dx * sr + dy * cr) / s
        sdf = np.empty((N, H, W), dtype=f32)
        for k in range(len(SHAPES)):
            m = shape == k
            if m.any():
                sdf[m] = _sdf(k, lx[m], ly[m]).astype(f32)
        # anti-aliased coverage: a one-pixel ramp across the edge
        alpha = np.clip(f32(0.5) - sdf * s * px, 0, 1).astype(f32)
        alpha[~active] = 0
        # grating in the object's frame (it rotates with the object)
        ta = angle[:, None, None].astype(f32)
        along = lx * np.cos(ta) + ly * np.sin(ta)  # in object units
        phase = (u[:, b + 4] * 2 * np.pi).astype(f32)[:, None, None]
        cyc = (freq[:, None, None] * s).astype(f32)  # cycles per object unit
        amp = (0.12 + 0.16 * u[:, b + 5]).astype(f32)[:, None, None]
        tex = f32(1) + amp * np.sin(f32(2 * np.pi) * cyc * along + phase)  # (N,H,W)
        obj = np.clip(fg[:, :, None, None] * tex[:, None], 0, 1)
        img = img + (obj - img) * alpha[:, None]
    return (img * f32(2) - f32(1)).astype(f32)


@dataclass
class ProceduralData:
    """The procedural kind's keys under ``data:``: how many images each split has."""

    train_images: int = opt(60000, hash="always")
    val_images: int = opt(5000, hash="always")

    RETIRED: ClassVar[dict[str, Retired]] = {
        # snapping every factor to n levels lowered the losses by ~0.5 nats but left the laws'
        # bend as it was (docs/default_study_v1.md, "Discrete factors"); 0 was continuous factors
        "factor_levels": Retired(0, "discrete factors lowered the losses but not the bend of the laws, "
                                    "docs/default_study_v1.md", hash="when_set"),
    }

    def check(self, path: str) -> list[str]:
        if self.train_images < 1 or self.val_images < 1:
            return [f"{path}.train_images / {path}.val_images: must be >= 1"]
        return []


class ProceduralImages:
    """``num_images`` procedural images of one split; see the module docstring.

    ``batch(indices)`` renders a whole batch vectorised; ``__getitem__`` renders one.
    """

    Config = ProceduralData
    fast_batch = True  # batch() is the fast path (the token cache uses it)

    @classmethod
    def from_config(cls, data, split: str) -> "ProceduralImages":
        """One split of the study's ``data`` section (a ``varscale.config.DataConfig``)."""
        o = data.options
        n = o.train_images if split == "train" else o.val_images
        return cls(n, data.resolution, data.num_classes, data.seed, split)

    def __init__(self, num_images: int, resolution: int = 32, num_classes: int = 10,
                 seed: int = 0, split: str = "train"):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_images = int(num_images)
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.split = split

    def __len__(self) -> int:
        return self.num_images

    def labels(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        u = uniforms(self.seed, self.split, idx, N_FACTORS)
        return np.minimum((u[:, N_FACTORS - 1] * self.num_classes).astype(np.int64), self.num_classes - 1)

    def batch(self, indices: Sequence[int] | np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """(img_B3HW float32 in [-1, 1], label_B int64)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_images):
            raise IndexError(f"index out of range for {self.num_images} images")
        u = uniforms(self.seed, self.split, idx, N_FACTORS)
        label = np.minimum((u[:, N_FACTORS - 1] * self.num_classes).astype(np.int64), self.num_classes - 1)
        out = np.empty((idx.size, 3, self.resolution, self.resolution), dtype=np.float32)
        for s in range(0, idx.size, chunk):  # chunks keep the temporaries small
            out[s:s + chunk] = render(u[s:s + chunk], label[s:s + chunk], self.resolution)
        return out, label

    def __getitem__(self, i: int):
        if i < 0:
            i += self.num_images
        img, lab = self.batch([i])
        return img[0], int(lab[0])
