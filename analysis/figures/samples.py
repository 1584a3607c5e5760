"""The paper's Fig. 7: per depth, sample images at about 20/60/100% of training, each
labelled with its real fraction (step / that run's total steps)."""
from __future__ import annotations

from typing import Optional

import pandas as pd
from matplotlib.figure import Figure

from ..study import Study

FRACTIONS = (0.2, 0.6, 1.0)


def _snapshot_choice(steps: list[int], total: float, fractions) -> tuple[list[int], int]:
    """The distinct available steps nearest each wanted fraction, and how many of those
    fractions have a snapshot within 5% of training (a WSD branch keeps only late ones)."""
    chosen, covered = [], 0
    for f in fractions:
        st = min(steps, key=lambda v: (abs(v - f * total), -v))
        covered += abs(st - f * total) <= 0.05 * total
        if st not in chosen:
            chosen.append(st)
    return sorted(chosen), covered


def fig7_picks(study: Study, fractions=FRACTIONS) -> list[dict]:
    """Per depth, the run whose snapshots (``study.sample_images()``) best cover ``fractions``
    of its training (ties: the largest budget) and its snapshots:
    [{"depth", "run_id", "step", "total", "path"}, ...]."""
    samples = study.sample_images()
    if samples is None or not len(samples) or not len(study):
        return []
    info = study.evaluations.groupby("run_id").agg(depth=("depth", "first"), budget=("budget", "first"),
                                                   total=("total_steps", "max")).reset_index()
    s = samples.merge(info, on="run_id", how="inner")
    out = []
    for d, g in s.groupby("depth"):
        best = None
        for rid, gr in g.groupby("run_id"):
            total = gr["total"].iloc[0]
            if not (pd.notna(total) and total > 0):  # the run's length as `varscale sample` wrote it
                beside = gr["total_steps"].dropna() if "total_steps" in gr else pd.Series(dtype=float)
                total = float(beside.iloc[0]) if len(beside) else float(gr["step"].max())
            chosen, covered = _snapshot_choice(sorted(gr["step"].unique()), float(total), fractions)
            key = (covered, len(chosen), float(gr["budget"].iloc[0]))
            if best is None or key > best[0]:
                best = (key, rid, float(total), chosen, gr)
        _, rid, total, chosen, gr = best
        for st in chosen:
            out.append({"depth": int(d), "run_id": rid, "step": int(st), "total": total,
                        "path": gr.loc[gr["step"] == st, "path"].iloc[0]})
    return out


def fig7_samples(study: Study, fractions=FRACTIONS, width_in: float = 11.0) -> Optional[Figure]:
    """Depth (rows) x training progress (columns): the snapshots of ``fig7_picks``, each titled
    with its real fraction of training, step / that run's total steps; None without samples.
    Wide sample strips (one image per class) get one row each, so they span the figure's width."""
    from matplotlib.image import imread

    picks = fig7_picks(study, fractions)
    if not picks:
        return None
    imgs = [imread(p["path"]) for p in picks]
    h, w = imgs[0].shape[:2]
    aspect = w / h
    depths = sorted({p["depth"] for p in picks})
    title_in = 0.3
    strips = aspect > 2.5
    label_in = 0.15 if strips else 0.5  # a strip's title names its depth; a grid labels its rows
    if strips:  # one snapshot per row, at the full width
        layout = [(i, 0) for i in range(len(picks))]
        nrows, ncols = len(picks), 1
    else:
        col: dict[int, int] = {}
        layout = []
        for p in picks:
            j = col.get(p["depth"], 0)
            col[p["depth"]] = j + 1
            layout.append((depths.index(p["depth"]), j))
        nrows, ncols = len(depths), max(col.values())
    pw = (width_in - label_in) / ncols  # panel width; its height follows the image's aspect
    ph = pw / aspect + title_in
    fig = Figure(figsize=(width_in, nrows * ph + 0.1))
    H = nrows * ph + 0.1
    for p, img, (i, j) in zip(picks, imgs, layout):
        ax = fig.add_axes([(label_in + j * pw) / width_in, (H - (i + 1) * ph) / H,
                           (pw - 0.05) / width_in, (ph - title_in) / H])
        ax.imshow(img, interpolation="nearest" if max(img.shape[:2]) < 512 else "antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        frac = p["step"] / p["total"] if p["total"] else float("nan")
        ax.set_title(f"VAR-d{p['depth']} ({p['run_id']}): step {p['step']} of {int(p['total'])}, "
                     f"{frac:.0%} of training", fontsize=8, loc="left", pad=2)
        if j == 0 and not strips:
            ax.set_ylabel(f"d{p['depth']}", fontsize=9)
    return fig
