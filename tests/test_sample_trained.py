"""A trained tiny model's samples are recognised as their prompted class (slow: trains a VQVAE).

Plain torch loops, no DeepSpeed: a tiny-preset VQVAE on the procedural default dataset, then
VAR-d2 on its tokens, then the quality classifier; samples of each class are classified.
Run with ``pytest -m slow tests/test_sample_trained.py -s`` to see the numbers.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow


def _train_tiny(vae_steps=300, var_steps=300, seed=0, log=print):
    from varscale import quality as Q
    from varscale.data import ProceduralImages
    from varscale.models import build
    from varscale.models.presets import get_preset

    torch.set_num_threads(2)
    P = get_preset("tiny")
    train = ProceduralImages(4000, P.resolution, P.num_classes, 0, "train")
    val = ProceduralImages(500, P.resolution, P.num_classes, 0, "val")
    # the study's own tokenizer trainer (it revives dead codes; a plain loop collapses to 1 code)
    import tempfile

    from varscale.config import from_dict
    from varscale.train.tokenizer import load_tokenizer, train_tokenizer

    cfg = from_dict({"name": "tiny-quality", "data": {"kind": "procedural", "resolution": P.resolution,
                                                      "num_classes": P.num_classes, "train_images": 4000,
                                                      "val_images": 500},
                     "tokenizer": {"steps": vae_steps, "batch_size": 32, "lr": 2e-3, "revive_every": 10,
                                   "threads": 2},
                     "model": {"preset": "tiny", "depths": [2]}, "execution": {"device": "cpu"}})
    study_dir = tempfile.mkdtemp(prefix="varscale-quality-")
    train_tokenizer(study_dir, cfg, log=log)
    vae = load_tokenizer(study_dir, cfg)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    _, var = build("tiny", 2)
    vae.eval()
    img, lab = train.batch(list(range(len(train))))
    img, lab = torch.as_tensor(img), torch.as_tensor(lab)
    with torch.no_grad():
        idx = [torch.cat(t) for t in zip(*[vae.img_to_idx(img[i:i + 500]) for i in range(0, len(img), 500)])]
        x = vae.idx_to_var_input(idx)
    tgt = torch.cat(idx, 1)
    log(f"codes used per scale: {[len(torch.unique(i)) for i in idx]}")
    opt = torch.optim.AdamW(var.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    var.train()
    for s in range(var_steps):
        b = torch.randint(0, len(img), (64,), generator=g)
        for gr in opt.param_groups:
            gr["lr"] = 3e-3 * min(1, (s + 1) / 20) * (1 - s / var_steps)
        loss = F.cross_entropy(var(lab[b], x[b]).flatten(0, 1), tgt[b].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    var.eval()
    clf, _ = Q.train_classifier(train, P.num_classes, Q.ClassifierConfig(width=16, steps=300, batch_size=64),
                                log=None)
    vimg, vlab = val.batch(list(range(200)))
    vimg, vlab = torch.as_tensor(vimg), torch.as_tensor(vlab)
    with torch.no_grad():
        rec = vae.idx_to_img(vae.img_to_idx(vimg))
    return vae, var, clf, Q.accuracy(clf, vimg, vlab), Q.accuracy(clf, rec, vlab), P.num_classes


def test_trained_tiny_samples_are_classified_as_their_class():
    from varscale import quality as Q
    from varscale.sample import generate

    vae, var, clf, real_acc, rec_acc, nc = _train_tiny()
    labels = Q.class_labels(nc, 50)
    accs = {}
    for cfg in (0.0, 1.5, 4.0):
        out, _ = generate(vae, var, labels, cfg=cfg, seed=0)
        accs[cfg] = Q.accuracy(clf, out * 2 - 1, labels)
    print(f"\nclassifier: real {real_acc:.3f}, tokenizer reconstructions {rec_acc:.3f}; "
          f"samples by cfg {accs}; chance {1 / nc:.3f}")
    assert max(accs.values()) > 2 / nc  # well above chance (0.25 with 4 classes)
