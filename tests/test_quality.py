"""The quality measures: Frechet math, the classifier, its cache, the optional Inception path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from varscale import quality as Q

torch.set_num_threads(1)


def test_frechet_distance_matches_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    d1, d2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    # diagonal covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(d1) - sqrt(d2))^2
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum())
    assert Q.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_is_zero_for_same_stats_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6))
    b = rng.normal(size=(500, 6)) * 1.5 + 0.3
    mu, s = Q.gaussian_stats(a)
    assert Q.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    assert Q.frechet_distance_feats(a, b) == pytest.approx(Q.frechet_distance_feats(b, a), rel=1e-6)
    assert Q.frechet_distance_feats(a, b) > 0.5


def test_frechet_distance_survives_rank_deficient_covariance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))  # N < D: singular covariances
    d = Q.frechet_distance_feats(a, b)
    assert np.isfinite(d) and d > 0


class _ColourSet:
    """Class c = a flat image whose colour is channel c % 3, sign by c // 3, plus noise."""

    def __init__(self, n, num_classes=4, res=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.label = torch.randint(0, num_classes, (n,), generator=g)
        base = torch.full((n, 3, res, res), -0.5)
        for i, c in enumerate(self.label.tolist()):
            base[i, c % 3] = 0.8 if c < 3 else -0.9
        self.img = (base + 0.2 * torch.randn(base.shape, generator=g)).clamp(-1, 1)

    def __len__(self):
        return len(self.label)

    def batch(self, idx):
        return self.img[idx], self.label[idx]


def test_classifier_learns_and_round_trips_weights_only(tmp_path):
    train, val = _ColourSet(512, seed=0), _ColourSet(256, seed=1)
    cfg = Q.ClassifierConfig(width=8, steps=60, batch_size=32, lr=5e-3)
    model, meta = Q.train_classifier(train, 4, cfg, val_dataset=val, log=None)
    assert meta["val_accuracy"] > 0.9
    path = tmp_path / "quality" / "classifier.pt"
    Q.save_classifier(path, model, meta)
    # the file loads with weights_only=True (no pickled classes)
    ck = torch.load(path, weights_only=True)
    assert set(ck) >= {"state_dict", "num_classes", "width", "meta"}
    model2, meta2 = Q.load_classifier(path)
    assert meta2["val_accuracy"] == meta["val_accuracy"]
    x = val.img[:16]
    torch.testing.assert_close(model2(x), model(x))
    assert Q.features(model2, x).shape == (16, model2.feat_dim)


def test_evaluate_samples_real_vs_shuffled_labels():
    train, val = _ColourSet(512, seed=0), _ColourSet(400, seed=1)
    model, _ = Q.train_classifier(train, 4, Q.ClassifierConfig(width=8, steps=60, batch_size=32, lr=5e-3),
                                  log=None)
    mu, sigma = Q.gaussian_stats(Q.features(model, val.img[:200]))
    good = Q.evaluate_samples(model, val.img[200:], val.label[200:], mu, sigma)
    wrong = Q.evaluate_samples(model, val.img[200:], (val.label[200:] + 1) % 4, mu, sigma)
    noise = torch.rand(200, 3, 8, 8) * 2 - 1
    bad = Q.evaluate_samples(model, noise, val.label[200:], mu, sigma)
    assert good["class_accuracy"] > 0.9 and wrong["class_accuracy"] < 0.1
    assert good["frechet_distance"] < bad["frechet_distance"]
    assert good["fid"] is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inception_path_uses_a_user_supplied_torchscript(tmp_path):
    class StandIn(torch.nn.Module):
        # same call signature as the standard inception-2015-12-05.pt TorchScript
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = x.float() / 255.0
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    path = tmp_path / "inception.pt"
    torch.jit.script(StandIn()).save(str(path))
    inc = Q.InceptionFeatures(path)
    imgs = torch.rand(40, 3, 8, 8) * 2 - 1
    f = inc(imgs)
    assert f.shape == (40, 6)
    with pytest.raises(FileNotFoundError):
        Q.InceptionFeatures(tmp_path / "missing.pt")


def test_quality_rows_are_written_and_read_back(tmp_path):
    import datetime as dt

    row = {"study": "s", "run_id": "d2-x", "depth": 2, "step": 40, "n_params": 1000, "flops": 1e9,
           "class_accuracy": 0.5, "frechet_distance": 3.0, "fid": None, "time": dt.datetime.now(dt.timezone.utc)}
    p = Q.write_quality_row(tmp_path, row)
    assert p.name == "part-d2-x-00000040.parquet"
    Q.write_quality_row(tmp_path, {**row, "step": 80, "class_accuracy": 0.7})
    t = Q.read_quality(tmp_path).to_pandas().sort_values("step")
    assert list(t["step"]) == [40, 80]
    assert list(t["class_accuracy"]) == [0.5, 0.7]
    assert t["fid"].isna().all()
    for col in ["run_id", "depth", "step", "n_params", "flops", "class_accuracy", "frechet_distance", "fid"]:
        assert col in t.columns
