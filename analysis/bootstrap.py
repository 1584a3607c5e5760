"""Bootstrap over whole runs, and the result object every fit returns.

Resampling whole runs (not checkpoints) is what makes the intervals honest: the evaluations
of one run share its seed, data order and learning-rate schedule, so treating them as
independent would shrink every interval. A resample is a vector of integer weights, one per
point, equal to how often its run was drawn; weighted fits then run batched over resamples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .registry import FORMS

CI_LEVEL = 0.95
DEFAULT_BOOT = 1000


def run_weights(groups: Sequence | np.ndarray | None, n: int, n_boot: int,
                seed: int = 0) -> np.ndarray:
    """(n_boot, n) integer weights: each row draws len(unique(groups)) runs with replacement.

    ``groups=None`` treats every point as its own run.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        inv = np.arange(n)
        G = n
    else:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        inv = inv.reshape(-1)
        G = int(inv.max()) + 1 if n else 0
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_boot) if G else np.zeros((n_boot, 0))
    return counts[:, inv].astype(np.float64)


class StudyResample:
    """One set of resamples of the whole study's runs, shared by fits that must move
    together: the floor E (Approach 3 over the finished runs) and the laws on L - E of every
    slice see the same draw of runs, so the laws' intervals carry the floor's uncertainty.
    A slice holding fewer runs than the study gets a varying number of them per resample."""

    def __init__(self, run_ids, n_boot: int, seed: int = 0):
        self.ids = np.unique(np.asarray(run_ids).astype(str))
        self.n_boot = int(n_boot)
        G = len(self.ids)
        rng = np.random.default_rng(seed)
        self.counts = (rng.multinomial(G, np.full(G, 1.0 / G), size=self.n_boot).astype(np.float64)
                       if G and self.n_boot else np.zeros((self.n_boot, G)))

    def weights(self, run_ids) -> np.ndarray:
        """(n_boot, n) weights of points belonging to ``run_ids`` (one id per point)."""
        r = np.asarray(run_ids).astype(str).reshape(-1)
        idx = np.searchsorted(self.ids, r)
        if r.size and ((idx >= len(self.ids)) | (self.ids[np.minimum(idx, len(self.ids) - 1)] != r)).any():
            raise ValueError("StudyResample.weights: a run id that is not in the study")
        return self.counts[:, idx]


def percentile_ci(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring resamples where the fit was undefined."""
    lo = 100 * (1 - level) / 2
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(samples, [lo, 100 - lo], axis=0)
    return q[0], q[1]


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return None if not math.isfinite(v) else v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclass
class Fit:
    """One fitted law: parameters (also readable as attributes: ``fit.alpha``), intervals,
    goodness of fit and everything a reader needs to judge it. An entry of the typed report
    (``analysis.results.Report.fits``), serialized there."""

    form: str  # "power" y=(k x)^alpha | "saturating" y=E+(x0/x)^alpha | "chinchilla" | ...
    metric: str = ""  # the metric fitted, e.g. "test_loss_last" (with E subtracted when reducible)
    x: str = ""  # what the law is a function of: "n_params", "flops (frontier)", "N, D"
    group: str = ""  # the slice fitted, e.g. "budget_tokens=1e+07"
    params: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n: int = 0  # points fitted
    n_runs: int = 0  # distinct runs among them (the bootstrap's unit)
    r: float | None = None  # Pearson r of log y on log x, where meaningful
    n_boot: int = 0  # resamples whose fit succeeded
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    quantity: str = "raw"  # "raw": the metric itself; "reducible": the metric minus the study's floor
    floor: str | None = None  # which study floor was subtracted (a key of Report.floor), None when raw
    frontier: bool = False  # fitted on a compute frontier (x is C_min)
    # bootstrap values per parameter (n_boot,), nan where a resample gave no fit; not written
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        if name.endswith("_ci") and name[:-3] in self.__dict__.get("ci", {}):
            return self.__dict__["ci"][name[:-3]]
        raise AttributeError(name)

    def equation(self) -> str:
        """The fitted law as text, written by the form registered as ``self.form``."""
        form = FORMS.get(self.form)
        if form is None:
            return ", ".join(f"{k}={v:.3g}" for k, v in self.params.items())
        return form.equation(self.params)

    def predict(self, x, d=None) -> np.ndarray:
        """The fitted law at x (power, saturating, isoflop) or at (N, D) (chinchilla); a
        reducible law gives the metric minus the floor (``Report.predict`` adds it back)."""
        form = FORMS.get(self.form)
        if form is None:
            raise ValueError(f"Fit.predict: no fit form named {self.form!r} (analysis/forms)")
        return form.predict(self.params, x, d)

    def to_dict(self) -> dict[str, Any]:
        """The fit on its own (``Report.to_json`` writes fits.json's entries, with the floor)."""
        return _clean({
            "form": self.form, "metric": self.metric, "x": self.x, "group": self.group,
            "equation": self.equation(), "params": self.params,
            "ci": {k: list(v) for k, v in self.ci.items()}, "ci_level": CI_LEVEL,
            "n": self.n, "n_runs": self.n_runs, "r": self.r, "n_boot": self.n_boot,
            "warnings": self.warnings, "extra": self.extra,
        })

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        r = f", r={self.r:.4f}" if self.r is not None else ""
        w = f", warnings={self.warnings}" if self.warnings else ""
        q = " (reducible)" if self.quantity == "reducible" else ""
        return f"Fit({self.form}, {self.metric or 'y'}{q} vs {self.x or 'x'}: {ps}{r}, n={self.n}{w})"


def attach_ci(fit: Fit, names: Sequence[str], samples: np.ndarray, level: float = CI_LEVEL) -> None:
    """Store percentile intervals of bootstrap ``samples`` (n_boot, len(names)) on ``fit``."""
    fit.samples = {nm: samples[:, i].copy() for i, nm in enumerate(names)}
    ok = np.isfinite(samples).all(1)
    fit.n_boot = int(ok.sum())
    if fit.n_boot == 0:
        return
    lo, hi = percentile_ci(samples[ok], level)
    for i, nm in enumerate(names):
        fit.ci[nm] = (float(lo[i]), float(hi[i]))
    if ok.mean() < 0.9:
        fit.warnings.append(f"only {ok.sum()} of {len(ok)} bootstrap resamples gave a fit")
