"""varscale's analysis half: reads study folders (or any table), never imports torch.

Public API:
- ``load(study_dir)`` every evaluation row of every cell; ``final_rows(df)``, ``cells``,
  ``floors`` (token-entropy floors) from ``analysis.load``;
- ``fit_power_law(x, y, groups=None, n_boot=1000)`` VAR's y = (k x)^alpha with Pearson r;
  ``fit_saturating`` y = E + (x0/x)^alpha; ``fit_frontier(df, x, y)`` the law on C_min;
- ``fit_chinchilla(N, D, L)`` Approach 3; ``isoflop(N, C, L)`` Approach 2;
- ``extrapolation_check(x, y)`` fit without the largest model, predict it.
Every fit returns a :class:`Fit` (params as attributes, ``ci``, ``n``, ``r``, ``warnings``).
The report's laws are the fit forms registered by name in ``analysis.forms.FORMS``.
A study is read once into ``analysis.study.Study``; ``analysis.fitting.fit_study`` returns the
typed ``analysis.results.Report`` (fits.json is its serialization, ``read_report`` reads any
version back); ``analysis.render`` writes it as text. Figures (matplotlib) live in ``analysis.figures``;
import those modules with ``from analysis.load import ...`` style paths, since the name
``analysis.load`` is the function.
"""
from . import forms  # noqa: F401  (fills analysis.registry: how a Fit finds its form's law)
from .bootstrap import Fit
from .chinchilla import extrapolation_check_chinchilla, fit_chinchilla, hoffmann_grid, isoflop
from .frontier import fit_frontier, pareto_mask
from .load import cells, final_rows, floors
from .load import load  # noqa: E402  (the function shadows the submodule's attribute)
from .powerlaw import extrapolation_check, fit_power_law, fit_saturating, predict_power

__all__ = ["Fit", "load", "final_rows", "cells", "floors", "fit_power_law", "fit_saturating",
           "fit_frontier", "pareto_mask", "fit_chinchilla", "isoflop", "hoffmann_grid",
           "extrapolation_check", "extrapolation_check_chinchilla", "predict_power"]
