"""The paper's scaling figures for a study, drawn from a :class:`~analysis.study.Study` and
its typed :class:`~analysis.results.Report` (``varscale figures``: varscale/cli/figures.py).

The fitted lines are not refitted here: each is the fit a headline row of the report points
at, drawn from its parameters (power form y = exp(b) x^alpha), so a figure and the table
cannot disagree. Nothing here opens a study file: the caller reads the study
(``Study.load``) and the report (``analysis.results.read_report``, or ``fit_study``).

- ``fig5_vs_N`` (laws.py): L and Err, last scale and all-scale average, vs N (each finished
  run's final evaluation), log-log, one dashed law per budget slice with its equation and
  Pearson r; the headline quantity: a loss with a study-wide floor E (``Report.floor``) is
  drawn reducible, L - E, its axis naming E and its source; error rates raw, their lines
  stopped at 1; a report with laws but no headline rows raises ``NoHeadline``;
- ``fig6_vs_C`` (laws.py): the same four metrics vs training compute: every cell's
  evaluation curve, the Pareto frontier C_min and its law (a warmup-stable-decay study: also
  the annealed runs);
- ``fig5_vs_N_raw``, ``fig6_vs_C_raw``: the same on raw losses (``raw=True``; only when a floor
  exists);
- ``per_scale_loss_vs_N`` (curves.py): the final test loss of every scale vs N, one panel per
  budget;
- ``training_curves`` (curves.py): test and training loss vs tokens seen, coloured by depth;
- ``isoflop`` (curves.py, ``isoflop_figure``): loss vs N per FLOP budget with parabolas (FLOP
  budgets only);
- ``quality_vs_N_C`` (curves.py, ``quality_figure``): sample quality against N and C when
  ``quality/`` exists;
- ``fig7_samples`` (samples.py): per depth, sample images at about 20/60/100% of training,
  each labelled with its real fraction (step / that run's total steps), when ``samples/``
  exists.

``figures_of`` / ``make_figures`` (make.py) draw every figure the study allows and write them
into ``report/`` by atomic renames. Figures are built on ``matplotlib.figure.Figure`` (no
pyplot state), so they work in notebooks with any backend (``show`` displays one as a PNG)
and the command line needs no display. Each model size has one colour in every figure
(``size_colors``: per depth, ``depth_colors``; per N in a study without depths, an imported
table). Fig. 5 and 6 have a panel per metric the study has values of, and a study without
losses per scale has no ``per_scale_loss_vs_N``. For notebooks, tables.py holds the report's floor, headline and
extrapolation checks as tables, and ``stale`` (whether a report is the study's as it is now).
"""
from .curves import has_isoflop, isoflop_figure, per_scale_loss_vs_N, quality_figure, training_curves
from .laws import NoHeadline, equation, fig5_vs_N, fig6_vs_C, has_reducible_headline, headline_rows, power_line
from .make import (ALT_FLOORS, FIT_OPTION, FLOOR_CHOICES, FORMATS, figures_of, floor_report, make_figures,
                   write_figures)
from .samples import fig7_picks, fig7_samples
from .style import (LABEL, MARKERS, PANELS, SOURCE_LABEL, SYMBOL, XLABEL, SizeColors, depth_colors, show,
                    size_colors, symbol, to_png)
from .tables import extrapolation_table, floor_table, headline_table, stale

__all__ = ["fig5_vs_N", "fig6_vs_C", "per_scale_loss_vs_N", "training_curves", "isoflop_figure",
           "quality_figure", "fig7_picks", "fig7_samples", "figures_of", "make_figures", "write_figures",
           "floor_report", "headline_rows", "has_reducible_headline", "has_isoflop", "NoHeadline",
           "power_line", "equation", "headline_table", "floor_table", "extrapolation_table", "stale",
           "depth_colors", "size_colors", "SizeColors", "show", "to_png", "symbol", "FLOOR_CHOICES", "ALT_FLOORS", "FIT_OPTION", "FORMATS",
           "LABEL", "SYMBOL", "PANELS", "XLABEL", "MARKERS", "SOURCE_LABEL"]
