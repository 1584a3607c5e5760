"""The token cache: every image of a study encoded once into its K scales of code indices.

Layout of ``runs/<study>/tokens/`` (see docs/data.md)::

    train_idx.npy     (N_train, L) int16 when V <= 32768 else int32; the K index maps of an
    val_idx.npy       image flattened row-major and concatenated in scale order (L = sum pn^2)
    train_labels.npy  (N_train,) int32
    val_labels.npy    (N_val,) int32
    meta.json         written last: its presence marks a complete cache

``meta.json`` holds ``tokenizer_hash`` (of the frozen VQVAE's weights), ``data_hash`` (of the
study's data section), ``patch_nums``, ``vocab_size``, ``dtype``, ``counts`` {train, val},
``checksums`` (file name -> ``"sha256:<hex>"`` of each ``.npy`` file's bytes, what ``sha256sum``
prints) and
the empirical entropy (nats) of the ground-truth token distribution over the train split per
scale (``entropy_by_scale``), token-weighted over all scales (``entropy_avg``) and of the last
scale (``entropy_last``): the irreducible part of a unigram model's loss, which the paper
subtracts from the test loss. The ``.npy`` files are plain ``np.save`` files, so training
reads them with ``np.load(mmap_mode="r")`` without loading them into memory.

A cache whose tokenizer hash or data hash differs from the study's is stale: it is rebuilt,
never reused. So is a damaged one (``cache_damage``: meta.json not a JSON object with the
keys above, an array that is not a readable ``.npy`` of the shape and dtype meta.json says):
``TokenCache`` refuses it with a ``varscale.schema.DamagedFile`` naming the file, and
``build_token_cache`` (``varscale tokenize``, ``varscale run``) encodes it again. Only the
``.npy`` headers and sizes are checked there, not every value (a read of the whole cache);
``varscale doctor`` reads every value against ``checksums`` (``checksum_problems``). A cache
written before checksums existed has none: it is used as it is, and doctor says its values
are unverified, not that they are damaged. The checksums enter no hash.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from varscale.schema import DamagedFile, StudyLayout, TokensLayout, atomic_write_json, json_problem, read_json

SPLITS = ("train", "val")
META = TokensLayout(Path()).meta.name


def token_dtype(vocab_size: int) -> np.dtype:
    """int16 holds every code index when V <= 32768; 2 bytes per token."""
    return np.dtype(np.int16) if vocab_size <= 32768 else np.dtype(np.int32)


def entropy_by_scale(counts_KV: np.ndarray) -> list[float]:
    """Entropy (nats) of each row of a (K, V) table of code counts."""
    out = []
    for c in np.asarray(counts_KV, dtype=np.float64):
        n = c.sum()
        p = c[c > 0] / max(n, 1.0)
        out.append(float(-(p * np.log(p)).sum()) if n > 0 else 0.0)
    return out


def count_codes(idx_NL: np.ndarray, patch_nums: Sequence[int], vocab_size: int) -> np.ndarray:
    """(K, V) int64 counts of each code at each scale."""
    out = np.zeros((len(patch_nums), vocab_size), dtype=np.int64)
    start = 0
    for k, pn in enumerate(patch_nums):
        block = np.asarray(idx_NL[:, start:start + pn * pn]).ravel()
        out[k] += np.bincount(block.astype(np.int64), minlength=vocab_size)[:vocab_size]
        start += pn * pn
    return out


def entropy_summary(counts_KV: np.ndarray, patch_nums: Sequence[int]) -> dict[str, Any]:
    h = entropy_by_scale(counts_KV)
    w = np.array([pn * pn for pn in patch_nums], dtype=np.float64)
    return {
        "entropy_by_scale": h,
        "entropy_avg": float((np.array(h) * w).sum() / w.sum()),
        "entropy_last": h[-1],
    }


def _idx_path(tokens_dir: Path, split: str) -> Path:
    return TokensLayout(Path(tokens_dir)).idx(split)


def _labels_path(tokens_dir: Path, split: str) -> Path:
    return TokensLayout(Path(tokens_dir)).labels(split)


def file_checksum(path: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in 4 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 22), b""):
            h.update(piece)
    return "sha256:" + h.hexdigest()


def _checksums(tokens_dir: Path) -> dict[str, str]:
    lay = TokensLayout(Path(tokens_dir))
    return {p.name: file_checksum(p) for split in SPLITS for p in (lay.idx(split), lay.labels(split))}


def checksum_problems(tokens_dir: str | os.PathLike) -> Optional[list[tuple[Path, str]]]:
    """(file, why) for each array whose bytes differ from meta.json's checksum (reads the whole
    cache); None when meta.json is unreadable or has no ``checksums`` (a cache written before
    them: unverified, not damaged). A missing or unreadable array is ``cache_damage``'s to say."""
    lay = TokensLayout(Path(tokens_dir))
    meta = read_json(lay.meta) if json_problem(lay.meta) is None else None
    sums = meta.get("checksums") if isinstance(meta, dict) else None
    if not isinstance(sums, dict):
        return None
    out = []
    for split in SPLITS:
        for p in (lay.idx(split), lay.labels(split)):
            want = sums.get(p.name)
            if not p.is_file():
                continue
            if not isinstance(want, str):
                out.append((p, "no checksum for it in meta.json"))
                continue
            have = file_checksum(p)
            if have != want:
                out.append((p, f"its bytes changed since the cache was written ({have[:19]}..., meta.json "
                               f"says {want[:19]}...)"))
    return out


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_token_cache(
    tokens_dir: str | os.PathLike,
    *,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    patch_nums: Sequence[int],
    vocab_size: int,
    tokenizer_hash: str,
    **extra_meta: Any,
) -> dict[str, Any]:
    """Write a complete cache from in-memory arrays; returns the meta.

    ``train`` / ``val`` are ``(idx_NL, labels_N)``. Low level: the tokenizer is not involved,
    so other modules' tests use this to fabricate caches. Extra keyword arguments go into
    meta.json (e.g. ``data_hash``).
    """
    tokens_dir = Path(tokens_dir)
    L = sum(p * p for p in patch_nums)
    dt = token_dtype(vocab_size)
    (tokens_dir / META).unlink(missing_ok=True)  # incomplete until the meta is back
    counts: dict[str, int] = {}
    for split, (idx, labels) in (("train", train), ("val", val)):
        idx = np.asarray(idx)
        labels = np.asarray(labels)
        if idx.ndim != 2 or idx.shape[1] != L:
            raise ValueError(f"{split} indices must be (N, {L}) for patch_nums {list(patch_nums)}, got {idx.shape}")
        if labels.shape != (idx.shape[0],):
            raise ValueError(f"{split} labels must be ({idx.shape[0]},), got {labels.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= vocab_size):
            raise ValueError(f"{split} indices outside [0, {vocab_size})")
        _save_npy_atomic(_idx_path(tokens_dir, split), idx.astype(dt))
        _save_npy_atomic(_labels_path(tokens_dir, split), labels.astype(np.int32))
        counts[split] = int(idx.shape[0])
    meta = {
        "tokenizer_hash": tokenizer_hash,
        "patch_nums": [int(p) for p in patch_nums],
        "vocab_size": int(vocab_size),
        "seq_len": L,
        "dtype": dt.name,
        "counts": counts,
        "checksums": _checksums(tokens_dir),
        **entropy_summary(count_codes(np.asarray(train[0]), patch_nums, vocab_size), patch_nums),
        "created": _now(),
        **extra_meta,
    }
    atomic_write_json(tokens_dir / META, meta)
    return meta


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _npy_problem(path: Path, shape: tuple, dtype: Optional[str]) -> Optional[str]:
    """Why ``path`` is not a whole ``.npy`` of ``shape`` (and ``dtype``), from its header and size."""
    if not path.is_file():
        return "missing, though meta.json says the cache is complete" if not path.exists() else "not a file"
    try:
        arr = np.load(path, mmap_mode="r")  # reads the header; a short file cannot be mapped
    except Exception as e:  # noqa: BLE001 - a torn or foreign file fails in many ways
        return f"not a readable .npy file ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})"
    if tuple(arr.shape) != tuple(shape):
        return f"shape {tuple(arr.shape)}, meta.json says {tuple(shape)}"
    if dtype is not None and arr.dtype.name != dtype:
        return f"dtype {arr.dtype.name}, meta.json says {dtype}"
    return None


def cache_damage(tokens_dir: str | os.PathLike) -> Optional[tuple[Path, str]]:
    """(file, why) for the first damaged file of the cache in ``tokens_dir``; None when it is
    whole or has no meta.json (an incomplete cache, which is simply encoded)."""
    lay = TokensLayout(Path(tokens_dir))
    why = json_problem(lay.meta)
    if why:
        return lay.meta, why
    meta = read_json(lay.meta)
    if meta is None:
        return None
    counts, L = meta.get("counts"), meta.get("seq_len")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(s), int) for s in SPLITS) \
            or not isinstance(L, int) or not isinstance(meta.get("patch_nums"), list) \
            or not isinstance(meta.get("vocab_size"), int):
        return lay.meta, "not a token cache's meta (counts, seq_len, patch_nums, vocab_size)"
    for split in SPLITS:
        for path, shape, dtype in ((lay.idx(split), (counts[split], L), meta.get("dtype")),
                                   (lay.labels(split), (counts[split],), "int32")):
            why = _npy_problem(path, shape, dtype)
            if why:
                return path, why
    return None


def _fix(tokens_dir: Path) -> str:
    study = tokens_dir.parent
    return f"run 'varscale tokenize {study}' (or 'varscale run {study}'), which encodes the cache again"


class TokenCache:
    """One split of a complete cache: ``idx_NL`` (memory-mapped), ``labels_N``, ``meta``."""

    def __init__(self, tokens_dir: str | os.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.tokens_dir = Path(tokens_dir)
        self.split = split
        bad = cache_damage(self.tokens_dir)
        if bad:
            raise DamagedFile(bad[0], bad[1], _fix(self.tokens_dir))
        meta = read_json(self.tokens_dir / META)
        if meta is None:
            raise FileNotFoundError(
                f"no complete token cache in {self.tokens_dir} (meta.json missing); "
                f"run 'varscale tokenize <study-dir>'")
        self.meta: dict[str, Any] = meta
        self.idx_NL: np.ndarray = np.load(_idx_path(self.tokens_dir, split), mmap_mode="r")
        self.labels_N: np.ndarray = np.load(_labels_path(self.tokens_dir, split))

    @property
    def patch_nums(self) -> list[int]:
        return list(self.meta["patch_nums"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def seq_len(self) -> int:
        return int(self.idx_NL.shape[1])

    def scale_slices(self) -> list[slice]:
        """Column range of each scale inside a row of ``idx_NL``."""
        out, s = [], 0
        for pn in self.patch_nums:
            out.append(slice(s, s + pn * pn))
            s += pn * pn
        return out

    def __len__(self) -> int:
        return int(self.idx_NL.shape[0])

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(idx_BL int64, label_B int64) for the given rows (sorted reads are fastest)."""
        indices = np.asarray(indices)
        return self.idx_NL[indices].astype(np.int64), self.labels_N[indices].astype(np.int64)


def cache_state(tokens_dir: str | os.PathLike, tokenizer_hash: str, data_hash: Optional[str] = None) -> str:
    """'complete', 'missing', 'stale: <why>' or 'damaged: <file>: <why>' for the cache in ``tokens_dir``."""
    bad = cache_damage(tokens_dir)
    if bad:
        return f"damaged: {bad[0].name}: {bad[1]}"
    meta = read_json(Path(tokens_dir) / META)
    if meta is None:
        return "missing"
    if meta.get("tokenizer_hash") != tokenizer_hash:
        return f"stale: made by tokenizer {meta.get('tokenizer_hash')}, the study's is {tokenizer_hash}"
    if data_hash is not None and meta.get("data_hash") != data_hash:
        return f"stale: made from data {meta.get('data_hash')}, the study's is {data_hash}"
    for split in SPLITS:
        if not _idx_path(Path(tokens_dir), split).exists() or not _labels_path(Path(tokens_dir), split).exists():
            return f"stale: {split} arrays missing"
    return "complete"


# --------------------------------------------------------------------------- building


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty(), leave=False)


def build_token_cache(study_dir: str | os.PathLike, cfg, vae=None, force: bool = False,
                      batch_size: int = 500, log=print) -> dict[str, Any]:
    """Encode every train/val image of the study once with its frozen tokenizer.

    Skips the work when a complete cache made by the same tokenizer from the same data
    exists (unless ``force``); a cache from another tokenizer or other data is rebuilt.
    Returns the meta.
    """
    import torch

    from varscale.data import make_dataset
    from varscale.tokenizer.checkpoint import device_for, load_tokenizer, preset_of, tokenizer_hash

    layout = StudyLayout.of(study_dir)
    tokens_dir = layout.tokens_dir
    if cfg.tokenizer.threads:
        torch.set_num_threads(cfg.tokenizer.threads)
    device = device_for(cfg)
    if vae is None:
        vae = load_tokenizer(study_dir, cfg)
    vae = vae.to(device).eval()
    thash = tokenizer_hash(vae)
    dhash = cfg.hash("data")
    state = cache_state(tokens_dir, thash, dhash)
    if state == "complete" and not force:
        log(f"tokens: cache in {tokens_dir} is complete for tokenizer {thash}; skipping")
        return read_json(tokens_dir / META)
    if state.startswith(("stale", "damaged")):
        log(f"tokens: rebuilding {tokens_dir} ({state})")
    meta_p = tokens_dir / META
    if meta_p.is_dir():  # damaged into a folder: replaced like any damaged file
        import shutil

        shutil.rmtree(meta_p)
    meta_p.unlink(missing_ok=True)
    for split in SPLITS:  # a folder where an array belongs cannot be renamed over
        for p in (_idx_path(tokens_dir, split), _labels_path(tokens_dir, split)):
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
    tokens_dir.mkdir(parents=True, exist_ok=True)

    patch_nums = list(vae.patch_nums) if hasattr(vae, "patch_nums") else list(preset_of(cfg).patch_nums)
    V = int(vae.vocab_size) if hasattr(vae, "vocab_size") else preset_of(cfg).vocab_size
    L = sum(p * p for p in patch_nums)
    dt = token_dtype(V)
    counts: dict[str, int] = {}
    code_counts = np.zeros((len(patch_nums), V), dtype=np.int64)
    # a unit_gain tokenizer (trained in channels_last) encodes in channels_last too: 1.45x the
    # images per second of NCHW, but not bit-identical (22 of the 2.46M tokens of the default
    # study's images differ, near-ties; docs/data.md, "Encoding speed"), so every other
    # tokenizer keeps NCHW and the tokens its caches were made with. Undone below
    unit_gain = cfg.tokenizer.recipe == "unit_gain" and not cfg.tokenizer.checkpoint
    fmt = torch.channels_last if unit_gain else torch.contiguous_format
    vae.to(memory_format=fmt)
    t0 = time.time()
    for split in SPLITS:
        ds = make_dataset(cfg.data, split)
        N = len(ds)
        # filled in place through a memory map, renamed into place when complete
        final = _idx_path(tokens_dir, split)
        tmp = final.with_name("." + final.name + f".{os.getpid()}.tmp")
        idx_NL = np.lib.format.open_memmap(tmp, mode="w+", dtype=dt, shape=(N, L))
        labels_N = np.empty((N,), dtype=np.int32)
        bar = _progress(N, f"tokenize {split}")
        with torch.no_grad():
            for start, img_B3HW, label_B in _iter_batches(ds, batch_size):
                idx_list = vae.img_to_idx(img_B3HW.to(device, non_blocking=True, memory_format=fmt))
                idx_BL = torch.cat([i.reshape(i.shape[0], -1) for i in idx_list], dim=1)
                idx_BL = idx_BL.cpu().numpy().astype(dt)
                B = idx_BL.shape[0]
                idx_NL[start:start + B] = idx_BL
                labels_N[start:start + B] = np.asarray(label_B, dtype=np.int32)
                if split == "train":
                    code_counts += count_codes(idx_BL, patch_nums, V)
                bar.update(B)
        bar.close()
        idx_NL.flush()
        del idx_NL
        os.replace(tmp, final)
        _save_npy_atomic(_labels_path(tokens_dir, split), labels_N)
        counts[split] = N
    wall = time.time() - t0
    vae.to(memory_format=torch.contiguous_format)
    meta = {
        "tokenizer_hash": thash,
        "data_hash": dhash,
        "patch_nums": patch_nums,
        "vocab_size": V,
        "seq_len": L,
        "dtype": dt.name,
        "counts": counts,
        "checksums": _checksums(tokens_dir),
        **entropy_summary(code_counts, patch_nums),
        "wall_s": round(wall, 2),
        "created": _now(),
    }
    atomic_write_json(tokens_dir / META, meta)  # last: marks the cache complete
    n = sum(counts.values())
    log(f"tokens: encoded {n} images in {wall:.1f} s ({n / max(wall, 1e-9):.0f} img/s) into {tokens_dir}; "
        f"entropy avg {meta['entropy_avg']:.3f} nats, last {meta['entropy_last']:.3f}")
    return meta


def _iter_batches(ds, batch_size: int):
    """(start, img_B3HW tensor, label_B) over a dataset in order."""
    import torch

    N = len(ds)
    if hasattr(ds, "batch") and getattr(ds, "fast_batch", False):
        for s in range(0, N, batch_size):
            img, lab = ds.batch(np.arange(s, min(s + batch_size, N)))
            yield s, torch.as_tensor(img), lab
        return
    # image files: decode in worker processes
    workers = min(8, max((os.cpu_count() or 1) - 1, 0))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    s = 0
    for img, lab in dl:
        yield s, img, lab.numpy()
        s += img.shape[0]
