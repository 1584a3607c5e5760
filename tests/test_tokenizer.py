"""Tokenizer training on the tiny preset: runs, lowers the loss, checkpoints, reloads, skips."""
import json

import pytest
import torch

from varscale.config import from_dict
from varscale.cli.tokenizer import main
from varscale.tokenizer.checkpoint import existing_complete, load_tokenizer, tokenizer_hash
from varscale.tokenizer.train import train_tokenizer

torch.set_num_threads(1)


def _cfg(**tok):
    t = {"steps": 40, "batch_size": 16, "lr": 2e-3, "revive_every": 10, "threads": 1,
         "fail_on_collapse": False}  # 40 steps stay at the mean image (see the collapse test)
    t.update(tok)
    return from_dict({"model": {"preset": "tiny"}, "tokenizer": t,
                      "data": {"resolution": 16, "num_classes": 4, "train_images": 200, "val_images": 32}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    cfg = _cfg()
    logs = []
    path = train_tokenizer(d, cfg, log=logs.append)
    return d, cfg, path, logs


def test_training_lowers_loss_and_writes_checkpoint(trained):
    d, cfg, path, logs = trained
    assert path == d / "tokenizer" / "vqvae.pt" and path.exists()
    m = json.loads((d / "tokenizer" / "metrics.json").read_text())
    curve = m["curve"]
    assert len(curve) >= 2 and curve[-1]["loss"] < curve[0]["loss"]
    assert len(m["usage_by_scale"]) == 2 and 0 < m["usage_overall"] <= 1
    assert m["val_psnr"] > 0 and "val PSNR" in logs[-1]
    obj = torch.load(path, weights_only=True)
    assert obj["preset"] == "tiny" and obj["complete"] and "state_dict" in obj


def test_load_tokenizer_is_frozen_and_hash_is_stable(trained):
    d, cfg, path, _ = trained
    vae = load_tokenizer(d, cfg)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    m = json.loads((d / "tokenizer" / "metrics.json").read_text())
    assert tokenizer_hash(vae) == m["tokenizer_hash"] == tokenizer_hash(load_tokenizer(d, cfg))


def test_skip_when_complete_and_retrain_on_config_change(trained):
    d, cfg, path, _ = trained
    logs = []
    train_tokenizer(d, cfg, log=logs.append)
    assert "skipping" in logs[0]
    assert existing_complete(d, _cfg(steps=41)) is None


def test_named_checkpoint_plain_state_dict(trained, tmp_path):
    d, cfg, path, _ = trained
    sd = torch.load(path, weights_only=True)["state_dict"]
    plain = tmp_path / "vae_plain.pth"
    torch.save(sd, plain)  # the official release is a plain state dict
    cfg2 = _cfg(checkpoint=str(plain))
    other = tmp_path / "study2"
    assert train_tokenizer(other, cfg2, log=lambda s: None) == plain
    assert tokenizer_hash(load_tokenizer(other, cfg2)) == tokenizer_hash(load_tokenizer(d, cfg))
    assert not (other / "tokenizer" / "vqvae.pt").exists()


def test_pretrained_loss_switches_fail_clearly(tmp_path):
    # removed options: only their old value 0 loads
    with pytest.raises(ValueError, match="tokenizer.perceptual_weight: option removed"):
        _cfg(perceptual_weight=0.5)
    with pytest.raises(ValueError, match="tokenizer.adversarial_weight: option removed"):
        _cfg(adversarial_weight=0.1)
    assert _cfg(perceptual_weight=0.0, adversarial_weight=0.0) == _cfg()


def test_missing_tokenizer_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="varscale tokenizer train"):
        load_tokenizer(tmp_path, _cfg())


def test_cli_needs_train_verb(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])


def test_collapsed_tokenizer_stops_with_a_clear_error(trained, tmp_path):
    """40 steps of the tiny preset sit at the mean image: by default that is an error, and the
    checkpoint is kept but never reused as complete."""
    from varscale.tokenizer.train import TokenizerCollapsed, collapse_message

    d, cfg, path, logs = trained
    m = json.loads((d / "tokenizer" / "metrics.json").read_text())
    assert m["collapsed"] and m["val_psnr"] < m["mean_image_psnr"] + 1.0
    assert any("WARNING: the tokenizer collapsed" in line for line in logs)
    strict = _cfg(fail_on_collapse=True)
    assert strict.hash() != cfg.hash()  # not hash-neutral when set off its default...
    from varscale.tokenizer.checkpoint import config_hash
    assert config_hash(strict) == config_hash(cfg)  # ...but the tokenizer itself is the same
    with pytest.raises(TokenizerCollapsed, match=r"val PSNR .* dB is within 1 dB of predicting"):
        train_tokenizer(tmp_path, strict, log=lambda s: None)
    assert torch.load(tmp_path / "tokenizer" / "vqvae.pt", weights_only=True)["complete"] is False
    assert existing_complete(tmp_path, strict) is None
    assert collapse_message({"val_psnr": 21.9, "mean_image_psnr": 12.2}) is None


def test_mean_image_psnr_is_the_psnr_of_the_mean_image(trained):
    import numpy as np

    from varscale.data import make_dataset
    from varscale.tokenizer.train import evaluate, psnr_from_mse

    d, cfg, _, _ = trained
    ds = make_dataset(cfg.data, "val")
    x01 = (ds.batch(np.arange(len(ds)))[0].astype(np.float64) + 1) / 2
    want = psnr_from_mse(float(((x01 - x01.mean(0)) ** 2).mean()))
    got = evaluate(load_tokenizer(d, cfg), ds, batch_size=10)["mean_image_psnr"]
    assert abs(got - want) < 1e-6


def test_autoencoder_warmup_bypasses_the_quantizer_then_quantizes(tmp_path):
    cfg = _cfg(ae_warmup_steps=20)
    logs = []
    train_tokenizer(tmp_path, cfg, log=logs.append)
    curve = json.loads((tmp_path / "tokenizer" / "metrics.json").read_text())["curve"]
    warm = [r for r in curve if r["step"] <= 20]
    assert warm and all(r["window_usage"] == 0 for r in warm)  # no code was looked up
    assert all(r["window_usage"] > 0 for r in curve if r["step"] > 20)
    assert any("autoencoder warm-up" in line for line in logs)
    with pytest.raises(Exception, match="tokenizer.ae_warmup_steps: must be >= 0 and below"):
        _cfg(ae_warmup_steps=40)


def test_default_study_tokenizer_hash_survives_new_options():
    """The trained default tokenizer is reused after an upgrade: options added since it was
    trained (ae_warmup_steps, fail_on_collapse, the preset's vae_arch) stay out of its hash."""
    from pathlib import Path

    from varscale.config import load_study
    from varscale.tokenizer.checkpoint import config_hash

    cfg = load_study(Path(__file__).resolve().parents[1] / "runs" / "v1" / "default")
    assert config_hash(cfg) == "21aa9356d949"  # the hash of the committed default study's trained tokenizer


def _cpu32_cfg(recipe, steps=100):
    """The default study's tokenizer shape (cpu32, 32x32 procedural images), a short run."""
    return from_dict({"model": {"preset": "cpu32"},
                      "tokenizer": {"steps": steps, "batch_size": 8, "lr": 1e-3, "threads": 1,
                                    "fail_on_collapse": False, "recipe": recipe},
                      "data": {"resolution": 32, "num_classes": 10, "train_images": 400, "val_images": 64}})


def test_recipe_names_its_valid_values_and_leaves_old_hashes():
    from varscale.config import ConfigError, tokenizer_config_hash

    with pytest.raises(ConfigError, match=r"tokenizer.recipe: 'unit' .*one of 'original', 'unit_gain'"):
        _cfg(recipe="unit")
    plain, original, unit = _cfg(), _cfg(recipe="original"), _cfg(recipe="unit_gain")
    # "original" is the recipe every study file without the key was trained with: same hashes
    assert tokenizer_config_hash(original) == tokenizer_config_hash(plain)
    assert original.hash() == plain.hash() and original.hash("data") == plain.hash("data")
    # another recipe is another tokenizer (and so other tokens and cells), not a reuse of the old one
    assert tokenizer_config_hash(unit) != tokenizer_config_hash(plain) and unit.hash() != plain.hash()
    assert unit.hash("data") == plain.hash("data")


def test_unit_gain_init_makes_the_reconstruction_depend_on_the_image():
    from varscale.models.presets import get_preset
    from varscale.models.vqvae import VQVAE
    from varscale.tokenizer.train import init_unit_gain

    def spread(vae):  # std of the difference between two random images' reconstructions
        x1, x2 = torch.rand(8, 3, 32, 32) * 2 - 1, torch.rand(8, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            rec = [vae.decoder(vae.post_quant_conv(vae.encode(x))) for x in (x1, x2)]
        return float((rec[0] - rec[1]).std())

    torch.manual_seed(0)
    vae = VQVAE.from_preset(get_preset("cpu32"))
    before = spread(vae)
    init_unit_gain(vae)
    assert before < 1e-3 < 1e-2 < spread(vae)  # 1.4e-5 against 0.115 when measured


def test_mean_image_plateau_finds_the_longest_run_near_the_mean_image():
    from varscale.tokenizer.train import mean_image_plateau

    psnrs = [12.0, 12.1, 12.9, 15.0, 12.5, 12.4, 12.3, 12.2, 12.1, 18.0]
    fine = [[25 * (i + 1), 0.3, p] for i, p in enumerate(psnrs)]
    assert mean_image_plateau(fine, 12.2) == [101, 225]  # 5 points: 125 steps; the first 3 are 75
    assert mean_image_plateau(fine[:4], 12.2) is None  # 75 steps: not a plateau
    assert mean_image_plateau(fine, float("nan")) is None


def test_unit_gain_recipe_leaves_the_mean_image_where_the_original_sits(tmp_path):
    """The default study's tokenizer shape, 100 steps: the original recipe is still at the
    mean image (its plateau lasts 600-800 steps on the default study), unit_gain is not."""
    runs = {}
    for recipe in ("original", "unit_gain"):
        train_tokenizer(tmp_path / recipe, _cpu32_cfg(recipe), log=lambda s: None)
        runs[recipe] = json.loads((tmp_path / recipe / "tokenizer" / "metrics.json").read_text())
    base = runs["original"]["mean_image_psnr"]
    assert runs["original"]["mean_image_plateau"] == [1, 100]
    assert runs["unit_gain"]["mean_image_plateau"] is None
    assert runs["unit_gain"]["fine_curve"][-1][2] > base + 2
    assert runs["unit_gain"]["val_psnr"] > runs["original"]["val_psnr"] + 2


def test_unit_gain_tokenizer_encodes_its_cache_and_leaves_the_vae_as_it_came(tmp_path):
    from varscale.tokenizer.cache import TokenCache, build_token_cache

    cfg = _cfg(recipe="unit_gain", steps=10)
    train_tokenizer(tmp_path, cfg, log=lambda s: None)
    vae = load_tokenizer(tmp_path, cfg)
    meta = build_token_cache(tmp_path, cfg, vae=vae, log=lambda s: None)  # channels_last inside
    assert meta["tokenizer_hash"] == tokenizer_hash(vae) and len(TokenCache(tmp_path / "tokens", "val")) == 32
    assert all(p.is_contiguous() for p in vae.parameters())
