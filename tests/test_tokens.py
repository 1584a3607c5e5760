"""Token cache: format, round trip, stale-cache detection."""
import hashlib
import json

import numpy as np
import pytest
import torch

from varscale.config import from_dict
from varscale.data import make_dataset
from varscale.tokenizer.cache import (TokenCache, build_token_cache, cache_state, entropy_by_scale,
                                      token_dtype, write_token_cache)

torch.set_num_threads(1)


def _rand_cache(tmp_path, V=512, pn=(1, 2, 3, 4), n=(50, 10)):
    rng = np.random.default_rng(0)
    L = sum(p * p for p in pn)
    tr = (rng.integers(0, V, (n[0], L)), rng.integers(0, 10, n[0]))
    va = (rng.integers(0, V, (n[1], L)), rng.integers(0, 10, n[1]))
    meta = write_token_cache(tmp_path, train=tr, val=va, patch_nums=pn, vocab_size=V, tokenizer_hash="h0")
    return tr, va, meta


def test_round_trip(tmp_path):
    tr, va, meta = _rand_cache(tmp_path)
    for split, (idx, lab) in (("train", tr), ("val", va)):
        c = TokenCache(tmp_path, split)
        assert isinstance(c.idx_NL, np.memmap) and c.idx_NL.dtype == np.int16
        assert np.array_equal(c.idx_NL, idx) and np.array_equal(c.labels_N, lab)
        assert len(c) == len(lab) and c.seq_len == 30 and c.vocab_size == 512
    assert meta["counts"] == {"train": 50, "val": 10} and meta["dtype"] == "int16"
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk["tokenizer_hash"] == "h0" and len(on_disk["entropy_by_scale"]) == 4
    # 2 bytes per token plus the .npy header
    assert (tmp_path / "train_idx.npy").stat().st_size <= 50 * 30 * 2 + 128
    b, lb = TokenCache(tmp_path, "train").batch([3, 1])
    assert b.dtype == np.int64 and np.array_equal(b, tr[0][[3, 1]])


def test_dtype_and_entropy():
    assert token_dtype(32768) == np.int16 and token_dtype(32769) == np.int32
    h = entropy_by_scale(np.array([[5, 5, 0, 0], [1, 1, 1, 1], [7, 0, 0, 0]]))
    assert h == pytest.approx([np.log(2), np.log(4), 0.0])


def test_incomplete_cache_is_not_read(tmp_path):
    _rand_cache(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(FileNotFoundError):
        TokenCache(tmp_path, "train")
    assert cache_state(tmp_path, "h0") == "missing"


def test_bad_shapes_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_token_cache(tmp_path, train=(np.zeros((4, 29)), np.zeros(4)), val=(np.zeros((1, 30)), np.zeros(1)),
                          patch_nums=(1, 2, 3, 4), vocab_size=512, tokenizer_hash="x")
    with pytest.raises(ValueError):
        write_token_cache(tmp_path, train=(np.full((4, 30), 600), np.zeros(4)), val=(np.zeros((1, 30)), np.zeros(1)),
                          patch_nums=(1, 2, 3, 4), vocab_size=512, tokenizer_hash="x")


def _tiny_study():
    return from_dict({"model": {"preset": "tiny"},
                      "data": {"resolution": 16, "num_classes": 4, "train_images": 40, "val_images": 12}})


def _vae(seed):
    from varscale.models import build_vqvae

    torch.manual_seed(seed)
    vae = build_vqvae("tiny")
    torch.nn.init.normal_(vae.quantize.embedding.weight)  # spread codes so indices vary
    return vae.eval()


def test_build_reuse_and_rebuild_on_other_tokenizer(tmp_path):
    from varscale.tokenizer.checkpoint import tokenizer_hash

    cfg = _tiny_study()
    logs = []
    v1, v2 = _vae(1), _vae(2)
    m1 = build_token_cache(tmp_path, cfg, vae=v1, batch_size=16, log=logs.append)
    assert m1["tokenizer_hash"] == tokenizer_hash(v1) and m1["counts"] == {"train": 40, "val": 12}
    c = TokenCache(tmp_path / "tokens", "val")
    img, lab = make_dataset(cfg.data, "val").batch(np.arange(12))
    want = torch.cat(v1.img_to_idx(torch.as_tensor(img)), dim=1).numpy()
    assert np.array_equal(c.idx_NL, want) and np.array_equal(c.labels_N, lab)
    assert c.idx_NL.shape == (12, 5)
    # each array's sha256, as `sha256sum` gives it; what `varscale doctor` verifies
    from varscale.tokenizer.cache import checksum_problems

    assert m1["checksums"] == {p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted((tmp_path / "tokens").glob("*.npy"))}
    assert checksum_problems(tmp_path / "tokens") == []

    build_token_cache(tmp_path, cfg, vae=v1, batch_size=16, log=logs.append)
    assert "skipping" in logs[-1]

    m2 = build_token_cache(tmp_path, cfg, vae=v2, batch_size=16, log=logs.append)
    assert any("rebuilding" in s and "stale" in s for s in logs)
    assert m2["tokenizer_hash"] == tokenizer_hash(v2) != m1["tokenizer_hash"]
    want2 = torch.cat(v2.img_to_idx(torch.as_tensor(img)), dim=1).numpy()
    assert np.array_equal(TokenCache(tmp_path / "tokens", "val").idx_NL, want2)


def test_rebuild_when_data_changes(tmp_path):
    cfg = _tiny_study()
    v = _vae(1)
    build_token_cache(tmp_path, cfg, vae=v, batch_size=16, log=lambda s: None)
    cfg.data.seed = 5
    logs = []
    m = build_token_cache(tmp_path, cfg, vae=v, batch_size=16, log=logs.append)
    assert any("rebuilding" in s for s in logs) and m["data_hash"] == cfg.hash("data")
