"""Fit forms by name: every law the report fits is one module here plus one line in FORMS.

A form says where it applies (``scope``), whether a slice of data allows it
(``eligible``: None, or the reason why not), how to fit it (``fit``: a list of
:class:`analysis.bootstrap.Fit`), how to predict from fitted parameters (``predict``)
and how to write its equation (``equation``). ``Fit.predict`` and ``Fit.equation``
delegate here by ``Fit.form`` (through ``analysis.registry``); ``analysis.fitting`` loops over the
forms of each scope.
Scopes, in the order the report fits them:

- ``"budget"``: each finished run's final evaluation in one budget, vs N;
- ``"frontier"``: the compute frontier of a set of evaluations (all, or a WSD study's
  annealed finals), vs C;
- ``"study"``: every finished run's final evaluation, over all budgets (vs N and D);
- ``"curve"``: every evaluation of every run whose learning-rate schedule the study knows
  (``analysis.curve.curve_points``: vs N and the schedule's areas S1, S2).

docs/extending.md ("Adding a fit form") walks through adding one.
"""
from __future__ import annotations

from ..registry import FORMS as _REGISTRY
from .base import FitForm, Slice
from .chinchilla import Chinchilla
from .curve import Curve
from .frontier import Frontier
from .isoflop import IsoFLOP
from .power import Power
from .saturating import Saturating

# the report fits the forms of a scope in this order (it is the order of fits.json); the dict
# is analysis.registry's, which is how a Fit finds its form's law
FORMS: dict[str, FitForm] = _REGISTRY
FORMS.update({
    "power": Power(),
    "saturating": Saturating(),
    "frontier": Frontier(),
    "chinchilla": Chinchilla(),
    "isoflop": IsoFLOP(),
    "curve": Curve(),
})


def get(name: str) -> FitForm | None:
    """The form registered as ``name`` (None when there is none)."""
    return FORMS.get(name)


def of_scope(scope: str) -> list[FitForm]:
    """The registered forms of one scope, in registry order."""
    return [f for f in FORMS.values() if f.scope == scope]


__all__ = ["FORMS", "FitForm", "Slice", "get", "of_scope"]
