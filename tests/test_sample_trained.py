"""A trained tiny model's samples are recognised as their prompted class (slow: trains a VQVAE).

Plain torch loops, no DeepSpeed, on an easy procedural set whose class a 2x2-token tokenizer
can carry (the colour of the image; the default dataset's shape classes do not survive the
tiny preset's 16 px / 2x2-grid tokenizer). Measured (2026-11-29): classifier on real images
1.00, on tokenizer reconstructions 0.72, on samples 0.735-0.74 at cfg 0 / 1.5 / 4, chance 0.25.
A tiny-preset VQVAE (dead codes revived with the tokenizer trainer's helpers), VAR-d2 on its
tokens, the quality classifier on real images; samples of each class are then classified.
Run with ``pytest -m slow tests/test_sample_trained.py -s`` to see the numbers.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow  # ~3 min on 2 cores: a VQVAE and a VAR trained from scratch

PALETTE = torch.tensor([[0.9, -0.6, -0.6], [-0.6, 0.8, -0.6], [-0.6, -0.6, 0.9], [0.8, 0.8, -0.7]])


class ColourSet:
    """16 px images: class colour x random brightness gradient + a random distractor square + noise."""

    def __init__(self, n: int, seed: int, res: int = 16):
        g = torch.Generator().manual_seed(seed)
        self.label = torch.randint(0, len(PALETTE), (n,), generator=g)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
        ang = torch.rand(n, generator=g) * 6.283
        grad = 0.25 * (torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy)
        img = PALETTE[self.label][:, :, None, None] * (0.8 + grad[:, None])
        for i in range(n):
            s = int(torch.randint(3, 7, (1,), generator=g))
            y, x = torch.randint(0, res - s, (2,), generator=g).tolist()
            img[i, :, y:y + s, x:x + s] = torch.rand(3, 1, 1, generator=g) * 2 - 1
        self.img = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(-1, 1)

    def __len__(self):
        return len(self.label)

    def batch(self, idx):
        return self.img[idx], self.label[idx]


def _train_tiny(vae_steps=600, var_steps=300, seed=0, log=print):
    from varscale import quality as Q
    from varscale.models import build
    from varscale.models.presets import get_preset
    from varscale.tokenizer.train import residual_samples, revive_codes

    torch.set_num_threads(2)
    train, val = ColourSet(4000, 0), ColourSet(400, 1)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # GroupNorm at the tiny preset's 16 channels is an instance norm: it strips each image's
    # colour, which is this set's class (docs/models.md, Preset.vae_norm)
    vae, var = build(dataclasses.replace(get_preset("tiny"), vae_norm="none"), 2)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3, betas=(0.5, 0.9))
    hits = torch.zeros(vae.vocab_size)
    for s in range(vae_steps):
        img, _ = train.batch(torch.randint(0, len(train), (32,), generator=g))
        if s % 10 == 0:  # a plain loop collapses onto one code per scale without this
            dead = torch.ones(vae.vocab_size, dtype=torch.bool) if s == 0 else hits == 0
            revive_codes(vae, dead, [x.cpu() for x in residual_samples(vae, vae.encode(img).detach())], g)
            hits.zero_()
        rec, vq, _ = vae(img)
        loss = F.mse_loss(rec, img) + 0.2 * F.l1_loss(rec, img) + vq
        opt.zero_grad()
        loss.backward()
        opt.step()
        hits += vae.quantize.last_hits_SV.sum(0)
    vae.eval()
    img, lab = train.img, train.label
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
    clf, _ = Q.train_classifier(train, len(PALETTE), Q.ClassifierConfig(width=16, steps=150, batch_size=64),
                                log=None)
    with torch.no_grad():
        rec = vae.idx_to_img(vae.img_to_idx(val.img))
    return vae, var, clf, Q.accuracy(clf, val.img, val.label), Q.accuracy(clf, rec, val.label), len(PALETTE)


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
