"""varscale's analysis half: reads study folders (or any table), never imports torch.

Public API: :func:`load`, :func:`final_rows`, :func:`fit_power_law`, :func:`fit_saturating`,
:func:`fit_chinchilla`, :func:`isoflop`, :func:`frontier`, :func:`extrapolation_check`.
Figures (matplotlib) and the report live in ``analysis.figures`` / ``analysis.report``.
"""
from .bootstrap import Fit
from .chinchilla import fit_chinchilla, hoffmann_grid, isoflop
from .powerlaw import extrapolation_check, fit_power_law, fit_saturating, predict_power
