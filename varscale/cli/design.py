"""``varscale plan --precision`` and ``--suggest``: a study file's design as the table of
planned runs ``analysis.precision`` simulates and ``analysis.design`` ranks.

The design comes from the planner itself (``varscale.grid.cells.plan_cells``): the runs,
their token counts and FLOPs from the model's shapes, WSD stable runs and branches, and each
cell's own cost (a WSD branch pays only for its decay). A candidate design is the study file
with its cells replaced (depths, budgets and ``budgets.depths_per_budget`` rewritten), planned
the same way. Nothing is written.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from varscale.cli import common as C

Cell = tuple[int, float]  # (depth, budget in the study's unit)


def design_frame(cells: list[Any]) -> pd.DataFrame:
    """The planned runs as ``analysis.precision`` reads them: run_id, trunk, depth, n_params,
    tokens and FLOPs at the final evaluation, is_final (not a WSD stable run), cost (FLOPs
    this cell spends), budget (in the study's unit)."""
    from varscale.grid.plan import _var_config, cell_cost
    from varscale.models.spec import param_counts

    counts: dict[int, float] = {}
    rows = []
    for c in cells:
        if c.depth not in counts:
            counts[c.depth] = float(param_counts(_var_config(c))["n_params"])
        stable = c.schedule == "wsd" and c.branch_from is None
        rows.append({"run_id": c.run_id, "trunk": c.branch_from or c.run_id, "depth": int(c.depth),
                     "seed": int(c.seed), "n_params": counts[c.depth],
                     "tokens": float(c.total_steps * c.batch_size * c.seq_len),
                     "flops": float(c.total_steps * c.flops_per_step), "is_final": not stable,
                     "cost": cell_cost(c), "budget": float(c.budget_value)})
    return pd.DataFrame(rows)


class Designs:
    """Plans of a study file with its cells replaced by a given set of (depth, budget)."""

    def __init__(self, cfg, root: Path):
        self.cfg, self.root = cfg, root

    def cells_of(self) -> list[Cell]:
        """The study's own (depth, budget) cells."""
        d = design_frame(self._plan(None))
        d = d[d["is_final"]]
        return sorted({(int(a), float(b)) for a, b in zip(d["depth"], d["budget"])})

    def _plan(self, cells: tuple[Cell, ...] | None) -> list[Any]:
        from varscale.grid.cells import PlanError, plan_cells

        cfg = self.cfg
        if cells is not None:
            budgets = sorted({b for _, b in cells})
            dpb = {repr(b): sorted({d for d, bb in cells if bb == b}) for b in budgets}
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, depths=sorted({d for d, _ in cells})),
                budgets=dataclasses.replace(cfg.budgets, values=budgets, depths_per_budget=dpb))
        try:
            return plan_cells(cfg, self.root)
        except PlanError as e:
            raise C.UsageError(" ".join(str(e).split())) from None

    @lru_cache(maxsize=None)
    def frame(self, cells: tuple[Cell, ...]) -> pd.DataFrame:
        return design_frame(self._plan(cells))

    def rows(self, cells) -> pd.DataFrame:
        if not cells:
            return pd.DataFrame({"n_params": [], "tokens": [], "trunk": []})
        d = self.frame(tuple(sorted(cells)))
        return d[d["is_final"]]

    def cost(self, cells) -> float:
        return float(self.frame(tuple(sorted(cells)))["cost"].sum()) if cells else 0.0


def parse_targets(specs: list[str], cfg, k_flops: float = 6.0) -> list[dict]:
    """``--target depth=D,tokens=T`` (or n_params=N; flops=C) as ``predict`` targets."""
    from varscale.models.spec import param_counts, var_config_for

    out = []
    for spec in specs or []:
        kv = {}
        for part in spec.split(","):
            k, sep, v = part.partition("=")
            if not sep or k.strip() not in ("depth", "tokens", "n_params", "flops", "label"):
                raise C.UsageError(f"--target {spec!r}: expected key=value pairs of depth, n_params, tokens, "
                                   "flops, label (e.g. depth=10,tokens=4.8e6)")
            kv[k.strip()] = v.strip()
        try:
            t: dict[str, Any] = {k: float(v) for k, v in kv.items() if k != "label"}
        except ValueError:
            raise C.UsageError(f"--target {spec!r}: values must be numbers") from None
        if "depth" in t:
            d = int(t["depth"])
            t["n_params"] = float(param_counts(var_config_for(cfg.model.arch(), d, cfg.data.num_classes))["n_params"])
            t["depth"] = d
        if "n_params" not in t or not ("tokens" in t or "flops" in t):
            raise C.UsageError(f"--target {spec!r}: needs depth (or n_params) and tokens (or flops)")
        if "tokens" not in t:
            t["tokens"] = t["flops"] / (k_flops * t["n_params"])  # the study's FLOPs per parameter-token
        size = f"d{t['depth']}" if "depth" in t else f"N={t['n_params']:.3g}"
        t["label"] = kv.get("label") or f"{size} @ {t['tokens']:.3g} tokens"
        out.append(t)
    return out


def parse_grid(spec: str | None, cfg, here: list[Cell]) -> list[Cell]:
    """Candidate cells: ``depths=1,2,..;budgets=..`` or, by default, the study's depths and
    the next two at the step of its largest two, times its budgets and three doublings of the
    largest."""
    depths = sorted({d for d, _ in here})
    budgets = sorted({b for _, b in here})
    if spec:
        for part in spec.split(";"):
            k, sep, v = part.partition("=")
            try:
                vals = [float(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise C.UsageError(f"--grid {spec!r}: values must be numbers") from None
            if not sep or k.strip() not in ("depths", "budgets") or not vals:
                raise C.UsageError(f"--grid {spec!r}: expected depths=1,2,..;budgets=6e5,.. (either or both)")
            if any(not (x > 0) or x == float("inf") for x in vals) or (k.strip() == "depths" and
                                                                       any(x != int(x) for x in vals)):
                raise C.UsageError(f"--grid {spec!r}: depths must be whole numbers >= 1 and budgets finite "
                                   "numbers > 0")
            if k.strip() == "depths":
                depths = sorted({int(x) for x in vals})
            else:
                budgets = sorted(set(vals))
    else:
        step = max(depths[-1] - depths[-2], 1) if len(depths) > 1 else 1
        depths = depths + [depths[-1] + step, depths[-1] + 2 * step]
        budgets = budgets + [budgets[-1] * 2, budgets[-1] * 4, budgets[-1] * 8]
    return [(d, b) for d in depths for b in budgets]


def load_prior(spec: str | None):
    """The prior of ``--prior``: a trained study folder, a fits.json, or None (built in)."""
    from analysis.precision import prior_from_report, prior_from_study
    from analysis.prior_default import builtin_prior
    from analysis.study import Study

    if spec is None:
        return builtin_prior()
    p = Path(spec)
    if p.is_file() and p.suffix == ".json":
        return prior_from_report(p)
    if p.is_dir():
        st = Study.load(p)
        if not len(st.final):
            raise C.UsageError(f"--prior {spec}: the study has no finished runs to take laws from")
        return prior_from_study(st)
    raise C.UsageError(f"--prior {spec}: not a study folder or a fits.json")


def _goals(spec: str) -> tuple[str, ...]:
    from analysis.design import FOR

    goals = tuple(g.strip() for g in spec.split(",") if g.strip())
    bad = [g for g in goals if g not in FOR]
    if bad or not goals:
        raise C.UsageError(f"--for {spec!r}: unknown {', '.join(bad) or 'empty'}; valid: {', '.join(FOR)}")
    return goals


def _widths_line(w: dict, goals: tuple[str, ...], labels: list[str]) -> str:
    from analysis.results import SHORT

    parts = []
    for (q, m), v in sorted(w.items()):
        key = "target" if q in labels else q
        if key not in goals:
            continue
        parts.append(f"{q} {SHORT[m]} {v:.3g}" if q == "a_opt" else f"{q} {SHORT[m]} {100 * v:.0f}% of it")
    return ", ".join(parts)


def dpb_yaml(cells: list[Cell], unit: str) -> str:
    """The ``model.depths`` / ``budgets`` lines of a study file training ``cells``."""
    budgets = sorted({b for _, b in cells})
    lines = [f"model.depths: {sorted({d for d, _ in cells})}",
             f"budgets: unit {unit}, values {[float(f'{b:.4g}') for b in budgets]}", "budgets.depths_per_budget:"]
    lines += [f"  {b:.4g}: {sorted({d for d, bb in cells if bb == b})}" for b in budgets]
    return "\n".join(lines)


def run_design(a, cfg, layout, plan) -> int:
    """``--precision`` and ``--suggest`` (see module doc); prints, or JSON with ``--json``."""
    import json

    from analysis.design import suggest
    from analysis.precision import format_precision, simulate
    from analysis.predict import PredictError

    try:
        prior = load_prior(a.prior)
    except ValueError as e:
        raise C.UsageError(str(e)) from None
    designs = Designs(cfg, layout.root)
    here = designs.cells_of()
    d0 = designs.rows(here)
    targets = parse_targets(a.target, cfg, float((d0["flops"] / (d0["n_params"] * d0["tokens"])).median()))
    out: dict[str, Any] = {"prior": prior.source, "builtin_prior": prior.builtin}
    say = (lambda *x: None) if a.json else print
    if prior.builtin:
        say(f"no --prior: simulating from the built-in prior, {prior.source}")
    try:
        if a.precision:
            p = simulate(prior, designs.frame(tuple(here)), a.sims, a.sim_boot, a.seed, targets, a.at_flops)
            out["precision"] = p.to_dict()
            say(format_precision(p))
        if a.suggest:
            goals = _goals(a.goal)
            if "target" in goals and not targets:
                raise C.UsageError("--for target: name the run with --target depth=D,tokens=T")
            cands = parse_grid(a.grid, cfg, here)
            sug = suggest(prior, designs.rows, designs.cost, here, cands, a.suggest, goals, a.flops_budget, targets)
            labels = [t["label"] for t in targets]
            cells = sug.cells(here if sug.start == "study" else ())
            out["suggestion"] = {"start": sug.start, "goals": list(goals), "start_cost": sug.start_cost,
                                 "steps": [{"depth": s.depth, "budget": s.tokens, "cost": s.cost, "total": s.total,
                                            "criterion": s.criterion} for s in sug.steps],
                                 "cells": [list(c) for c in cells]}
            unit = cfg.budgets.unit
            say("")
            if sug.below:
                say(f"left out {len(sug.below)} candidate cell(s) below the smallest N or D the prior was fitted on "
                    f"(its law was never seen there): " + ", ".join(f"d{d} at {b:.3g}" for d, b in sug.below[:8])
                    + (" ..." if len(sug.below) > 8 else ""))
            if sug.start == "empty":
                say(f"the study's {len(here)} cells already spend {designs.cost(here):.3g} FLOPs of the "
                    f"--flops-budget {a.flops_budget:.3g}: a design built from nothing within it")
            else:
                say(f"from the study's {len(here)} cells ({sug.start_cost:.3g} FLOPs): "
                    + _widths_line(sug.start_widths, goals, labels) + " (linearised 95% widths)")
            for i, s in enumerate(sug.steps, 1):
                say(f"{i:2d}. depth {s.depth} at {s.tokens:.3g} {unit}: +{s.cost:.3g} FLOPs (total {s.total:.3g}); "
                    + _widths_line(s.widths, goals, labels) + f"; worst width / goal {s.criterion:.2f}")
            if not sug.steps:
                say("no candidate cell narrows the chosen widths within the budget")
            else:
                say("as a study file:\n" + dpb_yaml(cells, unit))
                try:
                    p2 = simulate(prior, designs.frame(tuple(cells)), a.sims, a.sim_boot, a.seed, targets, a.at_flops)
                except PredictError as e:  # too small a design to fit: the suggestion stands, unsimulated
                    say(f"the suggested design is not simulated: {e}")
                else:
                    out["suggestion"]["precision"] = p2.to_dict()
                    say("")
                    say("the suggested design, simulated:\n" + format_precision(p2))
    except PredictError as e:
        raise C.UsageError(str(e)) from None
    if a.json:
        print(json.dumps(out, indent=1, default=str))
    return 0
