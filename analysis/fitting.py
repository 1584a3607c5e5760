"""Every scaling law of a study, as one typed :class:`~analysis.results.Report`.

``fit_study(study)`` opens with the headline (analysis/headline.py): one floor E per loss for
the whole study (token entropy where it lies below every loss, else the E of one Approach-3
fit, with its interval), then per metric and slice (each budget; the compute frontier of all
evaluations and, for a WSD study, of the annealed runs) alpha [95% CI], r of the headline
quantity (reducible loss L - E; error rates and losses without a floor raw), r of the raw
metric, and the leave-largest-out error; then which law predicts the largest model best.
Then every fit (each with 95% bootstrap intervals over whole runs, n, and warnings), from
the fit forms registered in ``analysis.forms``:
- per budget (or token count), each finished run's final evaluation vs N: VAR's power law
  for L_last, L_avg, Err_last, Err_avg, raw and on loss minus the floor; the saturating form
  for the losses when there are at least 4 sizes;
- on the compute frontier of all evaluations of all cells: the same metrics vs C_min
  (a warmup-stable-decay study also gets the frontier of its annealed runs' final evaluations);
- Chinchilla's Approach 3 on the final evaluations when N and D both vary;
- Approach 2 (IsoFLOP parabolas) for FLOP budgets with at least 3 depths;
- the loss-curve law (analysis/curve.py) over every evaluation of every run whose learning-rate
  schedule the study knows, with leave-one-branch-out errors;
- extrapolation checks: fit without the largest model, predict it (Approach 3 and the curve
  law: each held-out run on its own).
A metric the study has no values of (an imported table with a single loss) is not fitted,
and one note says so; budget slices that allow no law share one note per reason. Warnings
raised while fitting become one-line notes (``warning_notes``). Nothing here reads or writes
a file: ``varscale fit`` (varscale/cli/fit.py) loads the study, calls this, and writes the
report (``analysis.results.write_report``) and its markdown (``analysis.render``).
"""
from __future__ import annotations

import math
import warnings

import pandas as pd

from . import forms
from . import headline as H
from .bootstrap import DEFAULT_BOOT, Fit, StudyResample
from .curve import curve_points
from .load import LOSSES, METRICS, DamagedPart, NotAFloor
from .results import (SHORT, Allocation, Exponents, FloorRule, HeadlineRow, Lolo, Report, report_name)
from .study import Study, as_study

FLOOR_RULES = ("auto", "entropy", "chinchilla")


def _approach3(fr, x_col: str, n_boot: int, seed: int, boot: StudyResample | None = None,
               metrics: tuple[str, ...] = METRICS) -> dict:
    """Chinchilla Approach 3 per loss metric on the finished runs ({} when the form's
    eligibility says no). Fitted once: its E is the floor where the token entropy is none,
    and with ``boot`` its resamples are the study's, so E moves with the laws on L - E."""
    form = forms.FORMS["chinchilla"]
    s = forms.Slice(fr, group="final evaluations", x_col=x_col, n_boot=n_boot, seed=seed, boot=boot)
    if form.eligible(s) is not None:
        return {}
    return {m: form.fit(s, m)[0] for m in form.metrics if m in metrics}


def present_metrics(df: pd.DataFrame) -> tuple[str, ...]:
    """The metrics the study has values of (an imported table may hold a single loss)."""
    return tuple(m for m in METRICS if m in df and df[m].notna().any())


def _skipped_notes(skipped: dict[str, list[str]]) -> list[str]:
    """One note per reason budget slices got no law, the slices named (first to last when many)."""
    out = []
    for why, groups in skipped.items():
        where = ", ".join(groups) if len(groups) <= 3 else f"{len(groups)} slices, {groups[0]} to {groups[-1]}"
        out.append(f"{where}: {why}")
    return out


def warning_notes(caught) -> list[str]:
    """One sentence per distinct warning raised while fitting (its message, no source tag); a
    token-entropy floor that is no floor is left to the floor's description."""
    out: list[str] = []
    for w in caught:
        msg = " ".join(str(w.message).split())
        if issubclass(w.category, (DamagedPart, NotAFloor)):
            continue
        line = msg if len(msg) <= 240 else msg[:237] + "..."
        if line not in out:
            out.append(line)
    return out


def fit_study(study, n_boot: int = DEFAULT_BOOT, seed: int = 0, floor_last: float | None = None,
              floor_avg: float | None = None, use_floor: bool = True, x_col: str = "n_params",
              c_col: str = "flops", chinchilla_boot: int | None = None,
              floor_from: str | None = None) -> Report:
    """Fit every law the study's cells allow (``study``: a :class:`Study`, or a folder to load).

    The floor rule (one E per loss metric, never per slice): ``floor_from`` None / "auto"
    takes the token entropy where it lies below every loss, else the Approach-3 E;
    "entropy" or "chinchilla" only that source; ``use_floor=False`` none;
    ``floor_last`` / ``floor_avg`` by hand. Warnings raised while fitting become notes.
    """
    if floor_from not in (None, *FLOOR_RULES):
        raise ValueError(f"floor_from: unknown source {floor_from!r}; valid: {', '.join(FLOOR_RULES)}")
    study = as_study(study)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = _fit_study(study, n_boot, seed, floor_last, floor_avg, use_floor, x_col, c_col,
                         chinchilla_boot, floor_from or "auto")
    rep.damaged_parts = list(study.damaged)
    rep.notes += warning_notes(caught) + rep.damaged_parts
    return rep


def _fit_study(study: Study, n_boot, seed, floor_last, floor_avg, use_floor, x_col, c_col,
               chinchilla_boot, rule) -> Report:
    df = study.evaluations
    axis = study.budget_axis
    fr = study.final
    boot = StudyResample(df["run_id"], n_boot, seed) if len(df) and n_boot else None
    n_chin = n_boot if chinchilla_boot is None else chinchilla_boot
    present = present_metrics(df)
    chin = _approach3(fr, x_col, n_chin, seed, boot if n_chin == n_boot else None, present) if len(df) else {}
    hand = {m: float(v) for m, v in (("test_loss_last", floor_last), ("test_loss_avg", floor_avg))
            if v is not None}
    entropy = study.usable_entropy() if use_floor and rule in ("auto", "entropy") else {}
    entropy = {m: v for m, v in entropy.items() if m in present or m not in METRICS}
    floor, E_samples = H.choose_floors(entropy, chin, df, rule=rule if use_floor else "none", hand=hand)
    root = str(study.root) if study.root is not None else study.name
    rep = Report(study=root, cells=len(study.cells), states=study.states, rows=len(df), budget_axis=axis,
                 x=x_col, compute=c_col, floor=floor, n_boot=n_boot,
                 floor_rule=FloorRule(rule=rule if use_floor else "none", hand=hand,
                                      report=report_name(rule, use_floor, bool(hand))))
    if not len(df):
        rep.notes.append("no evaluations yet")
        return rep
    absent = [m for m in METRICS if m not in present]
    if absent:
        rep.notes.append(f"no values of {', '.join(SHORT[m] for m in absent)} in the study: not fitted")
    above = [SHORT[m] for m in LOSSES if m in study.entropy and m in floor and floor[m].source == "chinchilla"]
    if above and rule == "auto" and use_floor:  # said once; a loss without a floor says it in its reason
        rep.notes.append(f"token entropy of tokens/meta.json is not below every loss of {', '.join(above)} (a "
                         "unigram entropy, not a floor): the floor there is Approach 3's E")
    for m in LOSSES:
        if m not in present:
            continue
        if m not in floor:
            rep.notes.append(_no_floor_reason(m, rule if use_floor else "none", study, chin, fr, x_col))
        elif floor[m].resolved is False:
            z = floor[m].share_at_zero
            rep.notes.append(f"{SHORT[m]}: floor not resolved: the 95% interval of E "
                             f"[{floor[m].ci[0]:.3g}, {floor[m].ci[1]:.3g}] reaches below E/2"
                             + (f"; {100 * z:.1f}% of resamples put E at 0" if z else ""))
    if chin and n_chin != n_boot:
        rep.notes.append(f"Approach 3 bootstrapped with {n_chin} resamples, not the study's {n_boot}: "
                         "headline intervals hold E fixed")
    unfinished = df.loc[~df["is_stable"], "run_id"].nunique() - fr["run_id"].nunique()
    if unfinished:
        rep.notes.append(f"{unfinished} run(s) not finished (running, failed or diverged): "
                         "left out of the laws vs N, their evaluations still count on the frontier")
    fl = rep.floors()
    common = dict(x_col=x_col, c_col=c_col, n_boot=n_boot, seed=seed, floors=fl, axis=axis, report=rep)
    fits: list[Fit] = []
    slices: list[tuple[str, str, pd.DataFrame]] = []  # (kind, label, rows) for the headline
    # --- per budget, final evaluations vs N
    budget_forms = forms.of_scope("budget")
    skipped: dict[str, list[str]] = {}  # reason -> the slices without a law for it
    for budget, g in fr.groupby("budget"):
        s = forms.Slice(g, group=study.slice_label(budget), **common)
        why = {f.name: f.eligible(s) for f in budget_forms}
        if all(v is not None for v in why.values()):
            skipped.setdefault(why[budget_forms[0].name], []).append(s.group)
            continue
        if why.get("power") is None:
            slices.append(("N", s.group, g))
        for m in present:
            for f in budget_forms:
                if why[f.name] is None and m in f.metrics:
                    fits += f.fit(s, m)
            for f in budget_forms:
                if why[f.name] is None and m in f.metrics:
                    rep.extrapolation += f.extrapolate(s, m)
    # --- compute frontier over every evaluation of every cell (and, for WSD, of the annealed runs)
    ann = study.annealed
    fronts = [forms.Slice(df, group="all evaluations", **common)]
    slices.append(("C", "all evaluations", df))
    if ann is not None:
        fronts.append(forms.Slice(ann, group="annealed runs", **common))
        slices.append(("C", "annealed runs", ann))
    rep.notes += _skipped_notes(skipped)
    for m in present:
        for f in forms.of_scope("frontier"):
            for s in fronts:
                if m in f.metrics and f.eligible(s) is None:
                    fits += f.fit(s, m)
    # --- over every finished run: Chinchilla Approach 3 (fitted above), Approach 2
    for f in forms.of_scope("study"):
        s = forms.Slice(fr, group="final evaluations", **common)
        why = f.eligible(s)
        if why is not None:
            if why:
                rep.notes.append(why)
            continue
        for m in f.metrics:
            if m not in present:
                continue
            fits += [chin[m]] if f.name == "chinchilla" else f.fit(s, m)
            rep.extrapolation += f.extrapolate(s, m)
    # --- every evaluation of every run with its schedule: the loss-curve law (analysis/curve.py)
    fits += _curve(study, present, boot, common, rep)
    rep.fits = fits
    rep.allocation = _allocation(chin, fits)
    _headline(rep, slices, E_samples, boot, x_col, c_col, present)
    return rep


def _curve(study: Study, present, boot, common: dict, rep: Report) -> list[Fit]:
    """The forms of scope "curve" on every evaluation with its schedule's areas; their
    leave-largest-out checks go to ``rep.extrapolation``."""
    cforms = forms.of_scope("curve")
    losses = tuple(m for m in LOSSES if m in present)
    if not cforms or not losses:
        return []
    s = forms.Slice(curve_points(study, losses), group="every evaluation", boot=boot, **common)
    fits: list[Fit] = []
    for f in cforms:
        why = f.eligible(s)
        if why is not None:
            if why:
                rep.notes.append(why)
            continue
        for m in f.metrics:
            if m in losses:
                fits += f.fit(s, m)
                rep.extrapolation += f.extrapolate(s, m)
    return fits


def _allocation(chin: dict, fits: list[Fit]) -> dict[str, Allocation]:
    """Per loss: the exponents of N_opt ~ C^a and D_opt ~ C^b with 95% intervals, from
    Approach 3 (a = beta/(alpha+beta), b = alpha/(alpha+beta)) and, where the study has
    IsoFLOP slices, from Approach 2's parabolas."""
    out: dict[str, Allocation] = {}
    for m in LOSSES:
        row = Allocation(metric=m)
        f = chin.get(m)
        if f is not None and math.isfinite(f.params.get("a_opt", float("nan"))):
            row.approach3 = Exponents(a=f.params["a_opt"], a_ci=_list(f.ci.get("a_opt")), b=f.params["b_opt"],
                                      b_ci=_list(f.ci.get("b_opt")))
        iso = {g.metric: g for g in fits if g.form == "isoflop" and g.group == m}
        fN = next((g for k, g in iso.items() if k.startswith("N_opt")), None)
        fD = next((g for k, g in iso.items() if k.startswith("D_opt")), None)
        if fN is not None and fD is not None:
            row.approach2 = Exponents(a=fN.params.get("alpha"), a_ci=_list(fN.ci.get("alpha")),
                                      b=fD.params.get("alpha"), b_ci=_list(fD.ci.get("alpha")))
        if row.approach3 is not None or row.approach2 is not None:
            out[m] = row
    return out


def _list(ci):
    return None if ci is None else list(ci)


def _no_floor_reason(m: str, rule: str, study: Study, chin: dict, fr, x_col: str) -> str:
    """Why loss ``m`` has no floor (so the output says which fallback it took)."""
    if rule == "none":
        return f"{SHORT[m]}: no floor (--no-floor): reported raw"
    why = []
    ent = study.entropy
    if rule in ("auto", "entropy"):
        why.append("no token entropy in tokens/meta.json" if m not in ent else
                   f"token entropy {ent[m]:.4g} is not below every loss (a unigram entropy, not a floor)")
    if rule in ("auto", "chinchilla"):
        if m not in chin:
            why.append(forms.FORMS["chinchilla"].eligible(forms.Slice(fr, x_col=x_col)) or "no Approach 3 fit")
        else:
            why.append(f"the Approach-3 E {chin[m].params.get('E', float('nan')):.4g} is not below every loss")
    return f"{SHORT[m]}: no floor ({'; '.join(why)}): reported raw"


def _headline(rep: Report, slices, E_samples: dict, boot, x_col: str, c_col: str,
              metrics: tuple[str, ...] = METRICS) -> None:
    """Fill ``headline`` and ``best_law`` from the fits already in ``rep`` (see analysis/headline.py)."""
    index = {(f.form, f.metric, f.quantity, f.x, f.group): i for i, f in enumerate(rep.fits)}
    # an Approach-3 floor for leave-largest-out: E refitted without the largest model
    E_wo = {e.metric: e.values["fit"]["params"]["E"] for e in rep.extrapolation
            if e.form == "chinchilla" and "fit" in e.values}
    rows, raw_lolo = [], {}
    for m in metrics:
        fl = rep.floor.get(m)
        E = fl.E if fl is not None else None
        E_lolo = E_wo.get(m) if fl is not None and fl.source == "chinchilla" else E
        if E_lolo is None or not math.isfinite(E_lolo):
            E_lolo = E
        Es = E_samples.get(m)
        if Es is not None and (boot is None or len(Es) != boot.n_boot):
            Es = None
        quantity = "raw" if E is None else "reducible"
        for kind, group, d in slices:
            if kind == "N":
                xname, sl = x_col, group
                pts = d[[x_col, m, "run_id"]].dropna()
                x, y, ids = pts[x_col].to_numpy(float), pts[m].to_numpy(float), pts["run_id"]
                ci = H.slice_intervals(x, y, ids, boot, E, Es)
                lolo = H.lolo_slice(x, y, ids, E_lolo)
                if E is not None and m in LOSSES:
                    lr = H.lolo_slice(x, y, ids, None)
                    if lr:
                        raw_lolo.setdefault(m, []).append((group, lr))
            else:
                xname, sl = f"{c_col} (frontier)", f"frontier ({group})"
                pts = d[[c_col, m, "run_id"]].dropna()
                x, y, ids = pts[c_col].to_numpy(float), pts[m].to_numpy(float), pts["run_id"]
                ci = H.frontier_intervals(x, y, ids, boot, E, Es)
                lolo = H.lolo_frontier(x, y, ids, E_lolo)
            i = index.get(("power", m, quantity, xname, group))
            i_raw = index.get(("power", m, "raw", xname, group))
            if i is None or i_raw is None:
                continue
            f, fraw = rep.fits[i], rep.fits[i_raw]
            rows.append(HeadlineRow(
                metric=m, slice=sl, kind=kind, quantity=quantity, fit=i, fit_raw=i_raw, alpha=f.params["alpha"],
                alpha_ci=ci.get("alpha_ci"), r=f.r, r_ci=ci.get("r_ci"), r_raw=fraw.r, n=f.n,
                n_boot=ci.get("n_boot", 0),
                lolo=None if lolo is None else Lolo(err=lolo["err"], held_out=lolo["held_out"],
                                                    observed=lolo["observed"], predicted=lolo["predicted"],
                                                    E=lolo["E"])))
    rep.headline = rows
    rep.best_law = H.best_laws(rows, rep.extrapolation, raw_lolo)


__all__ = ["fit_study", "warning_notes", "present_metrics", "FLOOR_RULES"]
