"""Sample quality without downloads: a study's own classifier, and Frechet distances.

Two numbers per cell (and checkpoint), written as rows that ``analysis`` can plot against N
and C:

* ``class_accuracy``: the fraction of class-conditional samples that a small CNN, trained on
  the study's own dataset labels, assigns to the class they were prompted with.
* ``frechet_distance``: the Frechet distance between Gaussians fitted to that CNN's
  penultimate features of the samples and of real held-out images. **This is not
  Inception-FID**: the feature space is a tiny network trained on the study's data, so the
  number is only comparable within one study (same classifier, same sample count). It is
  useful because it moves with sample quality and needs nothing but the study itself.
* ``fid``: the standard FID, only where the user supplies the standard Inception network
  as a TorchScript file (``--inception path``; the ``inception-2015-12-05.pt`` TorchScript
  that clean-fid and StyleGAN3's metrics use: ``model(uint8_NCHW, return_features=True)``
  gives 2048-d pool features). Nothing is downloaded; without the file the column is null.
  FID is biased by sample count; the paper's numbers use 50k samples and the OpenAI
  evaluator, so a few hundred samples here give a larger value and are for trends only.

Layout::

    runs/<study>/quality/classifier.pt              weights + meta (loaded weights_only=True)
    runs/<study>/quality/reference.json             classifier accuracy on real / tokenizer
                                                    reconstructions, the Frechet floor
    runs/<study>/quality/real_stats.npz             mu, sigma of real held-out features
    runs/<study>/quality/part-<run_id>-<step>.parquet   one row per (cell, checkpoint)
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn as nn
import torch.nn.functional as F

from varscale.schema import QUALITY_SCHEMA, StudyLayout


# --------------------------------------------------------------------------- Frechet math


def gaussian_stats(feats_ND: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features, in float64."""
    if isinstance(feats_ND, torch.Tensor):
        feats_ND = feats_ND.detach().cpu().numpy()
    x = np.asarray(feats_ND, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows of shape (N, D), got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the distance between two Gaussians.

    The matrix square root of a product of two covariances can come out singular or with a
    tiny imaginary part from round-off (few samples, D > N); as the standard FID code does,
    an eps is added to the diagonals when the root is not finite, and the imaginary part is
    dropped when it is negligible.
    """
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"shape mismatch: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular: handled below
        covmean = scipy.linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"matrix square root has a large imaginary component {m}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def frechet_distance_feats(a_ND, b_ND) -> float:
    return frechet_distance(*gaussian_stats(a_ND), *gaussian_stats(b_ND))


# --------------------------------------------------------------------------- classifier


@dataclass
class ClassifierConfig:
    width: int = 32  # channels of the first stage; doubled at each of the 3 stages
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # light augmentation so that slightly blurry tokenizer outputs are still recognised
    noise_std: float = 0.05
    blur_prob: float = 0.5
    max_train_images: Optional[int] = 20000


class Classifier(nn.Module):
    """Three conv stages (stride-2 downsampling), global average pool, linear head.

    Resolution-independent (the pool), so one definition serves every preset. The pooled
    vector (4 * width) is the feature space of the Frechet distance.
    """

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(3):
            c = width * 2 ** min(i, 2)
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            ]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feat_dim = c_in
        self.head = nn.Linear(c_in, num_classes)
        self.num_classes = num_classes
        self.width = width

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1]."""
        return self.body(img_B3HW).mean(dim=(2, 3))

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(img_B3HW))


def _augment(x_B3HW: torch.Tensor, cfg: ClassifierConfig, gen: torch.Generator) -> torch.Tensor:
    B = x_B3HW.shape[0]
    if cfg.blur_prob > 0:
        k = torch.tensor([1.0, 2.0, 1.0]) / 4
        k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        blurred = F.conv2d(F.pad(x_B3HW, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        pick = (torch.rand(B, 1, 1, 1, generator=gen) < cfg.blur_prob).to(x_B3HW.dtype)
        x_B3HW = pick * blurred + (1 - pick) * x_B3HW
    if cfg.noise_std > 0:
        x_B3HW = x_B3HW + cfg.noise_std * torch.randn(x_B3HW.shape, generator=gen)
    return x_B3HW.clamp(-1, 1)


@torch.no_grad()
def _batched(fn, imgs_B3HW: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([fn(imgs_B3HW[i:i + batch]) for i in range(0, imgs_B3HW.shape[0], batch)])


def train_classifier(dataset, num_classes: int, cfg: ClassifierConfig = ClassifierConfig(),
                     val_dataset=None, log=print) -> tuple[Classifier, dict]:
    """Train the quality classifier on a dataset with ``batch(indices) -> (img, label)``.

    Returns the model (eval mode) and a meta dict with its held-out accuracy.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = Classifier(num_classes, cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(dataset) if cfg.max_train_images is None else min(len(dataset), cfg.max_train_images)
    t0 = time.time()
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))  # cosine to 0
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).tolist()
        img, label = dataset.batch(idx)
        img = _augment(torch.as_tensor(img, dtype=torch.float32), cfg, gen)
        loss = F.cross_entropy(model(img), torch.as_tensor(label, dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and (step % max(cfg.steps // 5, 1) == 0 or step == cfg.steps - 1):
            log(f"classifier step {step}/{cfg.steps} loss {loss.item():.4f}")
    model.eval()
    meta: dict[str, Any] = {"config": asdict(cfg), "num_classes": num_classes,
                            "train_s": time.time() - t0}
    if val_dataset is not None:
        img, label = _take(val_dataset, 2000)
        meta["val_accuracy"] = accuracy(model, img, label)
        if log:
            log(f"classifier held-out accuracy {meta['val_accuracy']:.4f}")
    return model, meta


def _take(dataset, n: int):
    idx = list(range(min(n, len(dataset))))
    img, label = dataset.batch(idx)
    return torch.as_tensor(img, dtype=torch.float32), torch.as_tensor(label, dtype=torch.long)


@torch.no_grad()
def accuracy(model: Classifier, img_B3HW: torch.Tensor, label_B: torch.Tensor) -> float:
    """Fraction of images (in [-1, 1]) classified as their label."""
    model.eval()
    pred = _batched(model, img_B3HW).argmax(-1)
    return float((pred == torch.as_tensor(label_B)).float().mean())


@torch.no_grad()
def features(model: Classifier, img_B3HW: torch.Tensor) -> np.ndarray:
    model.eval()
    return _batched(model.features, img_B3HW).double().numpy()


def save_classifier(path: str | Path, model: Classifier, meta: dict) -> None:
    """Tensors and plain Python only, so that loading works with ``weights_only=True``."""
    import io

    from varscale.schema import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "num_classes": model.num_classes,
                "width": model.width, "meta": json.loads(json.dumps(meta, default=str))}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_classifier(path: str | Path) -> tuple[Classifier, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = Classifier(int(ck["num_classes"]), int(ck["width"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, ck.get("meta", {})


def data_key(data_cfg) -> str:
    """A short hash of the dataset section: a cached classifier for other data is stale."""
    from varscale.config import digest, hash_view

    # the key predates the declared hash views: it was taken over every data field, the
    # since-retired factor_levels (always 0 now) among them; kept so cached classifiers stay valid
    return digest({**hash_view(data_cfg), "factor_levels": 0}, 8)


def get_classifier(study_dir: str | Path, study_cfg=None, cfg: ClassifierConfig = ClassifierConfig(),
                   retrain: bool = False, log=print) -> tuple[Classifier, dict]:
    """The study's classifier: loaded from ``quality/classifier.pt`` or trained once."""
    from varscale.config import load_study
    from varscale.data import make_dataset

    study_dir = Path(study_dir)
    study_cfg = study_cfg or load_study(study_dir)
    path = StudyLayout.of(study_dir).quality_classifier
    key = data_key(study_cfg.data)
    if path.exists() and not retrain:
        from varscale.schema import torch_file_problem

        why = torch_file_problem(path)
        try:
            model, meta = load_classifier(path) if why is None else (None, {})
        except Exception as e:  # noqa: BLE001 - a foreign file: trained again, like a damaged one
            why, model, meta = f"cannot be loaded: {str(e).splitlines()[0][:100] if str(e) else type(e).__name__}", None, {}
        if why:
            if log:
                log(f"{path} is damaged ({why}); training the classifier again")
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
        elif meta.get("data_key") == key:
            return model, meta
        elif log:
            log(f"{path}: trained on other data (key {meta.get('data_key')} != {key}); retraining")
    train = make_dataset(study_cfg.data, "train")
    val = make_dataset(study_cfg.data, "val")
    model, meta = train_classifier(train, study_cfg.data.num_classes, cfg, val_dataset=val, log=log)
    meta["data_key"] = key
    save_classifier(path, model, meta)
    return model, meta


# --------------------------------------------------------------------------- Inception FID (optional)


class InceptionFeatures:
    """The standard FID network from a user-supplied TorchScript file; never downloaded.

    Expects the ``inception-2015-12-05.pt`` TorchScript (the TF-FID Inception port used by
    clean-fid and StyleGAN3's metrics): called as ``model(img_uint8_NCHW, return_features=True)``
    it resizes to 299 internally and returns (N, 2048) pool3 features. Any TorchScript module
    with that call signature works (the tests use a stand-in).
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Inception weights not found at {path} (varscale never downloads them)")
        import warnings

        with warnings.catch_warnings():  # TorchScript is the format the standard file ships in
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, img_B3HW: torch.Tensor, batch: int = 64) -> np.ndarray:
        """Features of images in [-1, 1]."""
        out = []
        for i in range(0, img_B3HW.shape[0], batch):
            x = img_B3HW[i:i + batch].to(self.device)
            x_u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(self.model(x_u8, return_features=True).double().cpu())
        return torch.cat(out).numpy()


# --------------------------------------------------------------------------- per-cell evaluation


def real_stats(study_dir: Path, study_cfg, clf: Classifier, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """mu, sigma of the classifier features of real held-out images, cached per classifier."""
    from varscale.data import make_dataset

    path = StudyLayout.of(study_dir).quality_real_stats
    tag = _clf_tag(clf) + f"-{n}"
    if path.is_file():
        try:
            z = np.load(path)
            if str(z["tag"]) == tag:
                return z["mu"], z["sigma"]
        except Exception:  # noqa: BLE001 - a damaged cache of statistics: measured again
            pass
    img, _ = _take(make_dataset(study_cfg.data, "val"), n)
    mu, sigma = gaussian_stats(features(clf, img))
    import io

    from varscale.schema import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, tag=np.array(tag))
    atomic_write_bytes(path, buf.getvalue())
    return mu, sigma


def _clf_tag(clf: Classifier) -> str:
    h = hashlib.sha256()
    for v in clf.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


@torch.no_grad()
def reference(study_dir: Path, study_cfg, clf: Classifier, vae, n: int = 1000) -> dict:
    """Classifier accuracy on real images and on tokenizer reconstructions, Frechet floor.

    The reconstruction numbers bound what any VAR can reach through this tokenizer.
    """
    from varscale.data import make_dataset

    path = StudyLayout.of(study_dir).quality_reference
    tag = _clf_tag(clf) + f"-{n}-" + _module_tag(vae)
    from varscale.schema import json_problem

    if path.exists() and not json_problem(path):  # a damaged one is measured again
        ref = json.loads(path.read_text())
        if ref.get("tag") == tag:
            return ref
    img, label = _take(make_dataset(study_cfg.data, "val"), n)
    rec = torch.cat([vae.idx_to_img(vae.img_to_idx(img[i:i + 128])).clamp(-1, 1).float()
                     for i in range(0, n, 128)])
    mu, sigma = real_stats(study_dir, study_cfg, clf)
    ref = {
        "tag": tag,
        "real_accuracy": accuracy(clf, img, label),
        "recon_accuracy": accuracy(clf, rec, label),
        "recon_frechet_distance": frechet_distance(*gaussian_stats(features(clf, rec)), mu, sigma),
        "n": n,
    }
    from varscale.schema import atomic_write_json

    atomic_write_json(path, ref)
    return ref


def _module_tag(m: nn.Module) -> str:
    h = hashlib.sha256()
    for v in list(m.state_dict().values())[:8]:
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def class_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """0,0,..,1,1,.. : ``per_class`` samples of every class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


@torch.no_grad()
def evaluate_samples(clf: Classifier, img_B3HW: torch.Tensor, label_B: torch.Tensor,
                     real_mu: np.ndarray, real_sigma: np.ndarray,
                     inception: Optional[InceptionFeatures] = None,
                     inception_real: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
    """class_accuracy, frechet_distance (and fid) of generated images in [-1, 1]."""
    out = {
        "class_accuracy": accuracy(clf, img_B3HW, label_B),
        "frechet_distance": frechet_distance(*gaussian_stats(features(clf, img_B3HW)), real_mu, real_sigma),
        "fid": None,
    }
    if inception is not None and inception_real is not None:
        out["fid"] = frechet_distance(*gaussian_stats(inception(img_B3HW)), *inception_real)
    return out


def inception_real_stats(study_dir: Path, study_cfg, inception: InceptionFeatures, n: int) -> tuple:
    from varscale.data import make_dataset

    path = StudyLayout.of(study_dir).quality_inception_stats(n)
    if path.exists():
        z = np.load(path)
        return z["mu"], z["sigma"]
    img, _ = _take(make_dataset(study_cfg.data, "val"), n)
    mu, sigma = gaussian_stats(inception(img))
    np.savez(path, mu=mu, sigma=sigma)
    return mu, sigma


def write_quality_row(study_dir: Path, row: dict) -> Path:
    from varscale.schema import write_quality_row as write

    return write(StudyLayout.of(study_dir), row)


def read_quality(study_dir: str | Path) -> pa.Table:
    from varscale.schema import read_parts

    parts = StudyLayout.of(study_dir).quality_parts()
    return read_parts(parts, QUALITY_SCHEMA) if parts else QUALITY_SCHEMA.empty_table()


def _cell_flops(cell_dir: Path, step: int) -> Optional[float]:
    """Cumulative training FLOPs at ``step`` from the cell's own metrics rows."""
    from varscale.schema import CellLayout, read_parts

    parts = CellLayout(Path(cell_dir)).metrics_parts()
    if not parts:
        return None
    t = read_parts(parts).to_pandas()
    if "flops" not in t or t.empty:
        return None
    t = t.dropna(subset=["flops"]).sort_values("step")
    exact = t[t["step"] == step]
    if len(exact):
        return float(exact["flops"].iloc[-1])
    # proportional to steps from the nearest row (the per-step cost is constant)
    below = t[t["step"] <= step]
    ref = below.iloc[-1] if len(below) else t.iloc[0]
    return float(ref["flops"]) * step / max(int(ref["step"]), 1)


def evaluate_cell(study_dir: str | Path, run_id: str, step: Optional[int] = None, per_class: int = 50,
                  cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                  inception_path: Optional[str] = None, study_cfg=None, clf=None, log=print) -> dict:
    """Sample ``per_class`` images of every class from one cell checkpoint; write its row."""
    from varscale.config import load_study
    from varscale.sample import generate, load_cell

    study_dir = Path(study_dir)
    study_cfg = study_cfg or load_study(study_dir)
    if clf is None:
        clf, _ = get_classifier(study_dir, study_cfg, log=log)
    t0 = time.time()
    vae, var, cell_cfg, step = load_cell(study_dir, run_id, step)
    ref = reference(study_dir, study_cfg, clf, vae)
    mu, sigma = real_stats(study_dir, study_cfg, clf)
    labels = class_labels(study_cfg.data.num_classes, per_class)
    imgs = []
    for i in range(0, labels.numel(), 100):  # chunks bound memory; seeds differ per chunk
        img, _ = generate(vae, var, labels[i:i + 100], cfg=cfg, top_k=top_k, top_p=top_p, seed=seed + i)
        imgs.append((img * 2 - 1).cpu())
    img = torch.cat(imgs)
    inc = inc_real = None
    if inception_path:
        inc = InceptionFeatures(inception_path)
        inc_real = inception_real_stats(study_dir, study_cfg, inc, max(labels.numel(), 1000))
    res = evaluate_samples(clf, img, labels, mu, sigma, inc, inc_real)
    counts = var.param_counts() if hasattr(var, "param_counts") else {}
    row = {
        "study": study_cfg.name, "run_id": run_id, "depth": _get(cell_cfg, "depth"), "step": int(step),
        "n_params": counts.get("n_params"), "n_params_blocks": counts.get("n_params_blocks"),
        "flops": _cell_flops(StudyLayout.of(study_dir).cell(run_id).root, int(step)),
        **res, "n_samples": int(labels.numel()), "cfg": cfg, "top_k": top_k, "top_p": top_p, "seed": seed,
        "real_accuracy": ref["real_accuracy"], "recon_accuracy": ref["recon_accuracy"],
        "recon_frechet_distance": ref["recon_frechet_distance"], "wall_s": time.time() - t0,
        "time": _now(),
    }
    path = write_quality_row(study_dir, row)
    if log:
        fid = "" if row["fid"] is None else f" fid {row['fid']:.2f}"
        log(f"{run_id} step {step}: class_accuracy {row['class_accuracy']:.3f} "
            f"(chance {1 / study_cfg.data.num_classes:.3f}, recon {ref['recon_accuracy']:.3f}) "
            f"frechet {row['frechet_distance']:.3f} (recon floor {ref['recon_frechet_distance']:.3f}){fid} -> {path}")
    return row


def _get(obj, key):
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def evaluate_study(study_dir: str | Path, cells: Optional[Sequence[str]] = None, step: Optional[int] = None,
                   all_steps: bool = False, per_class: int = 50, cfg: float = 1.5, top_k: int = 0,
                   top_p: float = 0.0, seed: int = 0, inception_path: Optional[str] = None,
                   classifier: ClassifierConfig = ClassifierConfig(), retrain_classifier: bool = False,
                   log=print) -> tuple[list[dict], list[str]]:
    """:func:`evaluate_cell` for each of ``cells`` (default: every cell with a checkpoint).

    At ``step`` (default the last kept one), or at every kept checkpoint with ``all_steps``.
    Returns (rows written, run ids skipped for want of a checkpoint); raises
    ``FileNotFoundError`` when no cell of the study has a checkpoint folder.
    """
    from varscale.config import load_study
    from varscale.sample import cell_steps

    study_dir = Path(study_dir)
    study_cfg = load_study(study_dir)
    clf, _ = get_classifier(study_dir, study_cfg, classifier, retrain=retrain_classifier)
    lay = StudyLayout.of(study_dir)
    cells = list(cells or [p.name for p in lay.cell_dirs() if lay.cell(p.name).checkpoints.exists()])
    if not cells:
        raise FileNotFoundError(f"no cells with checkpoints under {lay.cells_dir}")
    rows, skipped = [], []
    for run_id in cells:
        steps = cell_steps(lay.cell(run_id).root)
        if not steps:
            print(f"{run_id}: no checkpoint, skipped", file=sys.stderr)
            skipped.append(run_id)
            continue
        todo = steps if all_steps else [step if step is not None else steps[-1]]
        for s in todo:
            rows.append(evaluate_cell(study_dir, run_id, s, per_class=per_class, cfg=cfg, top_k=top_k,
                                      top_p=top_p, seed=seed, inception_path=inception_path,
                                      study_cfg=study_cfg, clf=clf, log=log))
    return rows, skipped
