"""The typed report of a study's fits, and fits.json: its one serialization.

A :class:`Report` is made of typed entries: the study-wide floor per loss
(:class:`FloorEntry`), every fit (:class:`~analysis.bootstrap.Fit`: form, metric, quantity
raw or reducible, the floor it subtracted as a reference to ``Report.floor``, slice, params
with intervals, r, n, notes), the headline rows (:class:`HeadlineRow`, each pointing at its
fits by index), the best law per loss (:class:`BestLaw`), the allocation exponents
(:class:`Allocation`), the leave-largest-out checks (:class:`Extrapolation`) and the
IsoFLOP parabolas. Figures, notebooks and ``varscale check`` read these fields; nothing
parses a string.

``Report.to_json()`` writes fits.json (``schema_version`` = :data:`SCHEMA_VERSION`); every key
that fits.json had before the version existed keeps its value and meaning (a reducible fit's
``metric`` is still written as ``"<metric> - <E>"`` for older readers). ``Report.from_json``
reads every fits.json varscale has written: version 1 (no ``schema_version`` key; the floor
was then only named in the metric label, which is read back here, in this one place) and
the current one. ``write_report`` / ``read_report`` put it on disk by an atomic rename.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json, read_json

from .bootstrap import Fit, _clean

SCHEMA_VERSION = 2  # 1: fits.json before this key existed
SHORT = {"test_loss_last": "L_last", "test_loss_avg": "L_avg", "test_err_last": "Err_last",
         "test_err_avg": "Err_avg"}
LOSSES = ("test_loss_last", "test_loss_avg")
# fits.json's floor_source, as it was written before per-metric floors existed
_SOURCE_TEXT = {"token entropy": "tokens/meta.json", "chinchilla": "Chinchilla E over the finished runs",
                "hand": "hand"}


class ReportError(ValueError):
    """A fits.json that cannot be read as a report (one sentence naming the file)."""


# --------------------------------------------------------------------------- entries


@dataclass
class FloorEntry:
    """The one floor E of a loss for the whole study."""

    metric: str
    E: float
    source: str  # "token entropy" | "chinchilla" | "hand"
    detail: str = ""
    ci: Optional[list[float]] = None
    resolved: Optional[bool] = None  # None: no bootstrap to judge by
    share_at_zero: Optional[float] = None  # Approach 3: the share of resamples with E at 0
    has_share: bool = False  # whether fits.json carries share_at_zero (an Approach-3 floor)

    def to_json(self) -> dict:
        d = {"E": self.E, "ci": self.ci, "source": self.source, "detail": self.detail, "resolved": self.resolved}
        if self.has_share:
            d["share_at_zero"] = self.share_at_zero
        return d

    @classmethod
    def from_json(cls, metric: str, d: dict) -> "FloorEntry":
        return cls(metric=metric, E=float(d["E"]), source=d.get("source", ""), detail=d.get("detail", ""),
                   ci=d.get("ci"), resolved=d.get("resolved"), share_at_zero=d.get("share_at_zero"),
                   has_share="share_at_zero" in d)


@dataclass
class Lolo:
    """A leave-largest-out prediction: the law fitted without the largest model (or frontier
    point) predicts it; ``err`` = (predicted - observed) / observed."""

    err: float
    held_out: str
    observed: float
    predicted: float
    E: Optional[float] = None

    def to_json(self) -> dict:
        return {"err": self.err, "held_out": self.held_out, "observed": self.observed,
                "predicted": self.predicted, "E": self.E}


@dataclass
class HeadlineRow:
    """One (metric, slice) of the headline: the law of the headline quantity (L - E for a loss
    with a floor, else raw) with intervals that carry E's, the raw law's r, the lolo error."""

    metric: str
    slice: str  # "budget_tokens=6e+05" or "frontier (all evaluations)"
    kind: str  # "N": a budget's final evaluations vs N; "C": a compute frontier
    quantity: str  # "reducible" | "raw"
    fit: int  # index into Report.fits: the headline law
    fit_raw: int  # index into Report.fits: the same law on the raw metric
    alpha: float
    alpha_ci: Optional[list[float]] = None
    r: Optional[float] = None
    r_ci: Optional[list[float]] = None
    r_raw: Optional[float] = None
    n: int = 0
    n_boot: int = 0
    lolo: Optional[Lolo] = None

    @property
    def short(self) -> str:
        return SHORT.get(self.metric, self.metric)

    def to_json(self) -> dict:
        return {"metric": self.metric, "short": self.short, "slice": self.slice, "kind": self.kind,
                "quantity": self.quantity, "fit": self.fit, "fit_raw": self.fit_raw, "alpha": self.alpha,
                "alpha_ci": self.alpha_ci, "r": self.r, "r_ci": self.r_ci, "r_raw": self.r_raw, "n": self.n,
                "n_boot": self.n_boot, "lolo": None if self.lolo is None else self.lolo.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "HeadlineRow":
        lo = d.get("lolo")
        return cls(metric=d["metric"], slice=d["slice"], kind=d["kind"], quantity=d["quantity"], fit=int(d["fit"]),
                   fit_raw=int(d["fit_raw"]), alpha=d["alpha"], alpha_ci=d.get("alpha_ci"), r=d.get("r"),
                   r_ci=d.get("r_ci"), r_raw=d.get("r_raw"), n=int(d.get("n", 0)), n_boot=int(d.get("n_boot", 0)),
                   lolo=None if not lo else Lolo(err=lo["err"], held_out=lo.get("held_out", ""),
                                                 observed=lo.get("observed"), predicted=lo.get("predicted"),
                                                 E=lo.get("E")))


@dataclass
class LawError:
    err: float  # the worst held-out prediction (signed)
    worst: str = ""  # where it was
    each: dict[str, float] = field(default_factory=dict)


@dataclass
class BestLaw:
    """The law that predicts the held-out largest model of a loss best (worst error smallest)."""

    metric: str
    law: str
    err: float
    within_3pct: bool
    laws: dict[str, LawError] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"law": self.law, "err": self.err, "within_3pct": self.within_3pct,
                "laws": {k: {"err": v.err, "worst": v.worst, "each": v.each} for k, v in self.laws.items()}}

    @classmethod
    def from_json(cls, metric: str, d: dict) -> "BestLaw":
        return cls(metric=metric, law=d["law"], err=d["err"], within_3pct=bool(d["within_3pct"]),
                   laws={k: LawError(err=v["err"], worst=v.get("worst", ""), each=v.get("each", {}))
                         for k, v in d.get("laws", {}).items()})


@dataclass
class Exponents:
    """N_opt ~ C^a and D_opt ~ C^b with 95% intervals."""

    a: Optional[float]
    b: Optional[float]
    a_ci: Optional[list[float]] = None
    b_ci: Optional[list[float]] = None

    def to_json(self) -> dict:
        return {"a": self.a, "a_ci": self.a_ci, "b": self.b, "b_ci": self.b_ci}

    @classmethod
    def from_json(cls, d: dict | None) -> "Exponents | None":
        return None if not d else cls(a=d.get("a"), b=d.get("b"), a_ci=d.get("a_ci"), b_ci=d.get("b_ci"))


@dataclass
class Allocation:
    """A loss's compute-optimal allocation exponents: Approach 3 and, where the study has
    IsoFLOP slices, Approach 2."""

    metric: str
    approach3: Optional[Exponents] = None
    approach2: Optional[Exponents] = None

    def to_json(self) -> dict:
        d = {}
        if self.approach3 is not None:
            d["approach3"] = self.approach3.to_json()
        if self.approach2 is not None:
            d["approach2"] = self.approach2.to_json()
        return d


@dataclass
class Extrapolation:
    """One leave-largest-out check of a fit form (Approach 3: one per held-out run)."""

    form: str
    metric: str  # the metric itself; ``quantity`` and ``floor`` say whether E was subtracted
    quantity: str = "raw"
    floor: Optional[str] = None  # the key of Report.floor whose E was subtracted
    x: str = ""
    group: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # x_held_out, predicted, observed, rel_error, fit, ...

    @property
    def rel_error(self) -> Optional[float]:
        return self.values.get("rel_error")

    @property
    def run_id(self) -> Optional[str]:
        return self.values.get("run_id")


@dataclass
class Isoflop:
    """Approach 2's parabolas for one loss."""

    metric: str
    parabolas: list[dict] = field(default_factory=list)
    warning: Optional[str] = None


@dataclass
class FloorRule:
    rule: str = "auto"  # "auto" | "entropy" | "chinchilla" | "none"
    hand: dict[str, float] = field(default_factory=dict)
    report: str = "fits"  # the report's file name (fits, fits-floor-<source>)


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """Every law of one study; ``to_json`` is fits.json."""

    study: str
    cells: int = 0
    states: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    budget_axis: str = "budget_flops"
    x: str = "n_params"
    compute: str = "flops"
    floor_rule: FloorRule = field(default_factory=FloorRule)
    floor: dict[str, FloorEntry] = field(default_factory=dict)
    n_boot: int = 0
    headline: list[HeadlineRow] = field(default_factory=list)
    best_law: dict[str, BestLaw] = field(default_factory=dict)
    fits: list[Fit] = field(default_factory=list)
    extrapolation: list[Extrapolation] = field(default_factory=list)
    isoflop: list[Isoflop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    allocation: dict[str, Allocation] = field(default_factory=dict)
    damaged_parts: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ reading the entries
    def E(self, floor: Optional[str]) -> Optional[float]:
        """The study floor's E named by a reference (a fit's ``floor``); None for none."""
        return None if floor is None or floor not in self.floor else self.floor[floor].E

    def floors(self) -> dict[str, float]:
        return {m: f.E for m, f in self.floor.items()}

    def fit_of(self, row: HeadlineRow, raw: bool = False) -> Fit:
        return self.fits[row.fit_raw if raw else row.fit]

    def find(self, form: str, metric: str, quantity: str = "raw", group: Optional[str] = None,
             frontier: Optional[bool] = None) -> list[Fit]:
        """The fits of a form and metric (and quantity, slice, frontier or not)."""
        return [f for f in self.fits if f.form == form and f.metric == metric and f.quantity == quantity
                and (group is None or f.group == group) and (frontier is None or f.frontier == frontier)]

    def predict(self, fit: Fit, x, d=None):
        """A fit's law at x (and d): the metric itself, the floor added back to a reducible law."""
        y = fit.predict(x, d)
        E = self.E(fit.floor) if fit.quantity == "reducible" else None
        return y if E is None else y + E

    def label(self, metric: str, quantity: str, floor: Optional[str]) -> str:
        """fits.json's metric label: ``metric`` or ``"<metric> - <E:.4g>"`` for a reducible one."""
        E = self.E(floor)
        return metric if quantity != "reducible" or E is None else f"{metric} - {E:.4g}"

    @property
    def floor_source(self) -> str:
        if not self.floor:
            return "none"
        sources = {d.source for d in self.floor.values()}
        if len(sources) == 1:
            return _SOURCE_TEXT.get(next(iter(sources)), next(iter(sources)))
        return "; ".join(f"{m}: {_SOURCE_TEXT.get(d.source, d.source)}" for m, d in self.floor.items())

    # ------------------------------------------------------------------ fits.json
    def fit_json(self, f: Fit) -> dict:
        """A fits.json entry: the fit's own dict, its metric written as the label, its floor named."""
        return {**f.to_dict(), "metric": self.label(f.metric, f.quantity, f.floor),
                "of": f.metric, "quantity": f.quantity, "floor": f.floor, "frontier": f.frontier}

    def _extrapolation_json(self, e: Extrapolation) -> dict:
        label = self.label(e.metric, e.quantity, e.floor)
        v = dict(e.values)
        if isinstance(v.get("fit"), dict):
            v["fit"] = {**v["fit"], "metric": label}
        return {"form": e.form, "metric": label, "x": e.x, "group": e.group, **v,
                "of": e.metric, "quantity": e.quantity, "floor": e.floor}

    def to_json(self) -> dict:
        rule = self.floor_rule
        return _clean({
            "schema_version": self.schema_version, "study": self.study, "cells": self.cells, "states": self.states,
            "rows": self.rows, "budget_axis": self.budget_axis, "x": self.x, "compute": self.compute,
            "floors": self.floors(), "floor_source": self.floor_source,
            "floor_rule": {"rule": rule.rule, "hand": rule.hand, "report": rule.report},
            "floor": {m: d.to_json() for m, d in self.floor.items()}, "n_boot": self.n_boot,
            "headline": [h.to_json() for h in self.headline],
            "best_law": {m: b.to_json() for m, b in self.best_law.items()},
            "fits": [self.fit_json(f) for f in self.fits],
            "extrapolation": [self._extrapolation_json(e) for e in self.extrapolation],
            "isoflop": [{"metric": i.metric, "parabolas": i.parabolas, "warning": i.warning} for i in self.isoflop],
            "notes": self.notes, "allocation": {m: a.to_json() for m, a in self.allocation.items()},
            "damaged_parts": self.damaged_parts})

    @classmethod
    def from_json(cls, d: dict, source: str = "fits.json") -> "Report":
        """A report from any fits.json varscale has written (see the module doc)."""
        if not isinstance(d, dict) or "fits" not in d:
            raise ReportError(f"{source} is not a varscale report (no 'fits' list)")
        version = int(d.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ReportError(f"{source} has schema_version {version}; this varscale reads up to "
                              f"{SCHEMA_VERSION}: upgrade varscale, or run 'varscale fit' again")
        floor = {m: FloorEntry.from_json(m, v) for m, v in (d.get("floor") or {}).items()}
        if not floor and d.get("floors"):  # the oldest reports: the floors' values only
            src = {v: k for k, v in _SOURCE_TEXT.items()}.get(d.get("floor_source", ""), d.get("floor_source", ""))
            floor = {m: FloorEntry(metric=m, E=float(E), source=src or "unknown") for m, E in d["floors"].items()}
        rep = cls(study=d.get("study", ""), cells=int(d.get("cells", 0)), states=dict(d.get("states", {})),
                  rows=int(d.get("rows", 0)), budget_axis=d.get("budget_axis", "budget_flops"),
                  x=d.get("x", "n_params"), compute=d.get("compute", "flops"), floor=floor,
                  n_boot=int(d.get("n_boot", 0)), notes=list(d.get("notes", [])),
                  damaged_parts=list(d.get("damaged_parts", [])), schema_version=SCHEMA_VERSION)
        fr = d.get("floor_rule") or {}
        rep.floor_rule = FloorRule(rule=fr.get("rule", "auto"), hand=dict(fr.get("hand", {})),
                                   report=fr.get("report", "fits"))
        rep.fits = [_fit_from_json(f, floor, version) for f in d["fits"]]
        rep.extrapolation = [_extrapolation_from_json(e, floor, version) for e in d.get("extrapolation", [])]
        rep.isoflop = [Isoflop(metric=i["metric"], parabolas=list(i.get("parabolas", [])), warning=i.get("warning"))
                       for i in d.get("isoflop", [])]
        rep.headline = [HeadlineRow.from_json(h) for h in d.get("headline", [])]
        rep.best_law = {m: BestLaw.from_json(m, b) for m, b in (d.get("best_law") or {}).items()}
        rep.allocation = {m: Allocation(metric=m, approach3=Exponents.from_json(a.get("approach3")),
                                        approach2=Exponents.from_json(a.get("approach2")))
                          for m, a in (d.get("allocation") or {}).items()}
        return rep


def _split_label(label: str, floor: dict[str, FloorEntry]) -> tuple[str, str, Optional[str]]:
    """Version 1 only: (metric, quantity, floor) from a label ``"<metric> - <E>"``."""
    base, sep, _ = str(label).partition(" - ")
    if not sep:
        return base, "raw", None
    return base, "reducible", base if base in floor else None


def _fit_from_json(f: dict, floor: dict, version: int) -> Fit:
    if version >= 2:
        metric, quantity, ref = f["of"], f["quantity"], f.get("floor")
    else:
        metric, quantity, ref = _split_label(f.get("metric", ""), floor)
    x = f.get("x", "")
    frontier = f.get("frontier") if version >= 2 else x.endswith("(frontier)")
    return Fit(form=f["form"], metric=metric, x=x, group=f.get("group", ""), params=dict(f.get("params", {})),
               ci={k: tuple(v) for k, v in (f.get("ci") or {}).items() if v is not None}, n=int(f.get("n", 0)),
               n_runs=int(f.get("n_runs", 0)), r=f.get("r"), n_boot=int(f.get("n_boot", 0)),
               warnings=list(f.get("warnings", [])), extra=dict(f.get("extra", {})), quantity=quantity,
               floor=ref, frontier=bool(frontier))


_EXTRAPOLATION_CORE = ("form", "metric", "x", "group", "of", "quantity", "floor")


def _extrapolation_from_json(e: dict, floor: dict, version: int) -> Extrapolation:
    if version >= 2:
        metric, quantity, ref = e["of"], e["quantity"], e.get("floor")
    else:
        metric, quantity, ref = _split_label(e.get("metric", ""), floor)
    values = {k: v for k, v in e.items() if k not in _EXTRAPOLATION_CORE}
    return Extrapolation(form=e.get("form", ""), metric=metric, quantity=quantity, floor=ref, x=e.get("x", ""),
                         group=e.get("group", ""), values=values)


# --------------------------------------------------------------------------- files


def report_name(floor_from: Optional[str] = None, use_floor: bool = True, hand: bool = False) -> str:
    """``fits`` for the default floor rule, else ``fits-floor-<source>``."""
    if hand:
        return "fits-floor-hand"
    if not use_floor:
        return "fits-floor-none"
    if floor_from in (None, "auto"):
        return "fits"
    return f"fits-floor-{floor_from}"


def write_report(report: Report, study_dir, markdown: Optional[str] = None) -> tuple[Path, Path]:
    """``report/<name>.json`` (and ``.md`` when ``markdown`` is given), <name> from the floor
    rule (``fits`` for the default one), each written by an atomic rename."""
    rd = StudyLayout.of(study_dir).report_dir
    rd.mkdir(parents=True, exist_ok=True)
    name = report.floor_rule.report
    atomic_write_json(rd / f"{name}.json", report.to_json())
    if markdown is not None:
        atomic_write_bytes(rd / f"{name}.md", markdown.encode())
    return rd / f"{name}.json", rd / f"{name}.md"


def read_report(path_or_study) -> Report:
    """A report from a fits.json file, or a study folder's ``report/fits.json``."""
    p = Path(path_or_study)
    if p.is_dir():
        p = StudyLayout.of(p).fits_json
    try:
        d = read_json(p, default=None)
    except ValueError as e:
        raise ReportError(f"{p} is damaged ({e}); run 'varscale fit' again") from None
    if d is None:
        raise ReportError(f"no report at {p}; run 'varscale fit' first")
    return Report.from_json(d, str(p))


__all__ = ["Report", "FloorEntry", "HeadlineRow", "Lolo", "BestLaw", "LawError", "Allocation", "Exponents",
           "Extrapolation", "Isoflop", "FloorRule", "ReportError", "SCHEMA_VERSION", "report_name",
           "write_report", "read_report"]
