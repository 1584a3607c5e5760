"""Which runs would make a study more decisive: candidate cells ranked by how much each
narrows a chosen interval per FLOP, greedily.

Ranking every candidate by simulation (``analysis.precision``) would cost a simulation per
candidate per step; the ranking instead uses the linearised precision of Approach 3
(Fisher information of the log-space least-squares fit at the prior's law): the covariance
of theta = (log A, log B, log E, alpha, beta) is (J' S^-1 J + P0)^-1, J the Jacobian of
log L at every planned final evaluation, S the noise covariance (the prior's run variance on
the diagonal, its trunk variance between runs of one trunk), P0 a weak prior (sd 3 on the
log parameters, 1 on the exponents) that only matters while a design is too small to fit.
A width is 2 x 1.96 x the delta-method sd. The widths a chosen design really gives are then
simulated (``varscale plan --suggest`` does both and prints both).

Goals (a width at or below its goal counts as met): E's 95% interval no wider than E itself
(so its lower end stays above E/2: the report's "resolved"); alpha, beta: 20% of the value;
a_opt: 0.2; a target: a new-run interval of +-3%. ``--for`` names one or several; the
criterion is the largest width / goal over them and over both losses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .precision import Prior

Z95 = 1.959963984540054
GOALS = {"E": 1.0, "alpha": 0.2, "beta": 0.2, "a_opt": 0.2, "target": 0.06}
FOR = tuple(GOALS)
_P0 = np.diag([1 / 9, 1 / 9, 1 / 9, 1.0, 1.0])


def _jac(prior: Prior, m: str, N, D) -> np.ndarray:
    """d log L / d (log A, log B, log E, alpha, beta) at (N, D), (n, 5)."""
    p = prior.laws[m]
    N, D = np.asarray(N, float), np.asarray(D, float)
    tA, tB = p["A"] / N ** p["alpha"], p["B"] / D ** p["beta"]
    L = p["E"] + tA + tB
    return np.stack([tA / L, tB / L, p["E"] / L + 0 * N, -tA * np.log(N) / L, -tB * np.log(D) / L], 1)


def covariance(prior: Prior, m: str, N, D, trunk) -> np.ndarray:
    """Linearised covariance of Approach 3's theta for final evaluations at (N, D) grouped
    by ``trunk`` (see module doc)."""
    N = np.asarray(N, float)
    if not N.size:
        return np.linalg.inv(_P0)
    J = _jac(prior, m, N, D)
    vt, vr = float(np.var(prior.trunk[m])), float(np.var(prior.run[m]))
    vr = max(vr, 1e-3 * (vt + vr), 1e-12)  # a prior with no per-run part would make S singular
    t = np.asarray(trunk).astype(str)
    Sig = np.diag(np.full(len(N), vr)) + vt * (t[:, None] == t[None, :])
    info = J.T @ np.linalg.solve(Sig, J) + _P0
    return np.linalg.inv(info)


def linear_widths(prior: Prior, final: pd.DataFrame, targets: Iterable[dict] = ()) -> dict[tuple[str, str], float]:
    """(quantity, loss) -> linearised 95% width: E relative to E, alpha and beta relative to
    their values, a_opt absolute, a target's new-run interval relative to its value."""
    out = {}
    targets = list(targets)
    for m in prior.laws:
        p = prior.laws[m]
        cols = [final[c] if len(final) else [] for c in ("n_params", "tokens", "trunk")]
        cov = covariance(prior, m, *cols)
        sd = np.sqrt(np.maximum(np.diag(cov), 0))
        out[("E", m)] = 2 * Z95 * sd[2]  # d E / E = d log E
        out[("alpha", m)] = 2 * Z95 * sd[3] / p["alpha"]
        out[("beta", m)] = 2 * Z95 * sd[4] / p["beta"]
        s = p["alpha"] + p["beta"]
        g = np.array([0, 0, 0, -p["beta"] / s ** 2, p["alpha"] / s ** 2])
        out[("a_opt", m)] = 2 * Z95 * float(np.sqrt(max(g @ cov @ g, 0)))
        noise = float(np.var(prior.trunk[m]) + np.var(prior.run[m]))
        for t in targets:
            j = _jac(prior, m, [t["n_params"]], [t["tokens"]])[0]
            out[(t.get("label") or "target", m)] = 2 * Z95 * float(np.sqrt(max(j @ cov @ j, 0) + noise))
    return out


def criterion(widths: dict[tuple[str, str], float], goals: Iterable[str], target_labels: Iterable[str] = ()) -> float:
    """The largest width / goal over the named quantities (module doc)."""
    labels = set(target_labels)
    worst = 0.0
    for (q, m), w in widths.items():
        key = "target" if q in labels else q
        if key in goals:
            worst = max(worst, w / GOALS[key])
    return worst


@dataclass
class Step:
    """One suggested cell, with what the design costs and gives after adding it."""

    depth: int
    tokens: float
    cost: float  # FLOPs this cell adds to the design
    total: float  # FLOPs of the design with it
    criterion: float  # largest width / goal after adding it
    widths: dict = field(default_factory=dict)  # (quantity, loss) -> linearised width after adding it


@dataclass
class Suggestion:
    start: str  # "study": added to the study's cells; "empty": a design built from nothing within the budget
    goals: tuple[str, ...]
    start_cost: float
    start_criterion: float
    start_widths: dict
    steps: list[Step] = field(default_factory=list)
    below: list[tuple[int, float]] = field(default_factory=list)  # candidates left out: below the prior's range

    def cells(self, base: Iterable[tuple[int, float]] = ()) -> list[tuple[int, float]]:
        """The design after every step: ``base`` (the study's cells when it started from them) plus the steps."""
        return sorted(set(base) | {(s.depth, s.tokens) for s in self.steps})


def within_prior(prior: Prior, rows, candidates):
    """Candidates whose final evaluation lies at or above the smallest N and D the prior's laws
    were fitted on, and those left out. Below them the law was never seen: a default study
    trained with cells at half its smallest token budget found the loss flat in N there (the
    runs had not left the early plateau, docs/design.md), where the prior's law promised
    information cheaply."""
    if not prior.range_N or not prior.range_D:
        return list(candidates), []
    keep, below = [], []
    for c in candidates:
        r = rows([c])
        ok = len(r) and (r["n_params"].min() >= prior.range_N[0] * (1 - 1e-6)
                         and r["tokens"].min() >= prior.range_D[0] * (1 - 1e-3))
        (keep if ok else below).append(c)
    return keep, below


def suggest(prior: Prior, rows: Callable[[list[tuple[int, float]]], pd.DataFrame],
            cost: Callable[[list[tuple[int, float]]], float], base: list[tuple[int, float]],
            candidates: list[tuple[int, float]], K: int, goals: Iterable[str] = ("E",),
            budget: float | None = None, targets: Iterable[dict] = ()) -> Suggestion:
    """Add up to ``K`` cells (depth, tokens) from ``candidates`` to ``base`` greedily, each the
    one that lowers :func:`criterion` most per FLOP it adds. ``rows(cells)``: the final
    evaluations of a design (``n_params``, ``tokens``, ``trunk``); ``cost(cells)``: its FLOPs.
    With ``budget``: only cells that keep the design within it; when ``base`` itself leaves
    no room, the design is built from nothing (``start="empty"``) within the budget."""
    goals = tuple(goals)
    targets = list(targets)
    labels = [t.get("label") or "target" for t in targets]
    candidates, below = within_prior(prior, rows, candidates)

    def score(cells):
        w = linear_widths(prior, rows(cells), targets)
        return criterion(w, goals, labels), w

    start = "study"
    cells = sorted(set(base))
    if budget is not None and cells and cost(cells) >= budget * (1 - 1e-9):
        start, cells = "empty", []
    crit, w = score(cells)
    c0 = cost(cells) if cells else 0.0
    out = Suggestion(start=start, goals=goals, start_cost=c0, start_criterion=crit, start_widths=w, below=below)
    for _ in range(K):
        here = cost(cells) if cells else 0.0
        best = None
        for c in candidates:
            if c in cells:
                continue
            new = sorted(cells + [c])
            cc = cost(new)
            if budget is not None and cc > budget * (1 + 1e-9):
                continue
            crit_c, w_c = score(new)
            gain = (crit - crit_c) / max(cc - here, 1.0)
            if best is None or gain > best[0]:
                best = (gain, c, cc, crit_c, w_c)
        if best is None or best[0] <= 0:
            break
        _, c, cc, crit, w = best
        cells = sorted(cells + [c])
        out.steps.append(Step(depth=int(c[0]), tokens=float(c[1]), cost=cc - here, total=cc, criterion=crit,
                              widths=w))
    return out


__all__ = ["GOALS", "FOR", "Step", "Suggestion", "covariance", "criterion", "linear_widths", "suggest"]
