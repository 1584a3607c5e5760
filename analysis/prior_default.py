"""The built-in prior of ``varscale plan --precision``: the default study's Approach-3 laws and
log residuals (``analysis.precision.prior_from_study``), written by

    python -m analysis.precision runs/default > analysis/prior_default.py
"""
from __future__ import annotations

from .precision import Prior

DEFAULT: dict = {'builtin': False,
 'k_flops': 4.462161160890887,
 'laws': {'test_loss_avg': {'A': 21.2983,
                            'B': 11991800.0,
                            'E': 3.33104,
                            'alpha': 0.284893,
                            'beta': 1.19041},
          'test_loss_last': {'A': 30.9956,
                             'B': 20953100.0,
                             'E': 2.69925,
                             'alpha': 0.276285,
                             'beta': 1.1989}},
 'note': '16 finished runs in 6 trunk(s)',
 'range_D': [1200000.0, 4800000.0],
 'range_N': [15089.0, 2480832.0],
 'run': {'test_loss_avg': [-0.060041,
                           0.0155738,
                           0.0444672,
                           -0.0266534,
                           0.0158347,
                           0.0108187,
                           -0.0047948,
                           0.011374,
                           -0.00657923,
                           0.00691584,
                           0.00809408,
                           -0.0150099,
                           0.00239641,
                           -0.00239641,
                           0.00807123,
                           -0.00807123],
         'test_loss_last': [-0.0872851,
                            0.0226814,
                            0.0646037,
                            -0.0393172,
                            0.0255654,
                            0.0137518,
                            -0.0086311,
                            0.0189686,
                            -0.0103375,
                            0.0101805,
                            0.0122942,
                            -0.0224748,
                            0.00294903,
                            -0.00294903,
                            0.0105356,
                            -0.0105356]},
 'source': 'the default study (runs/default), 16 finished runs in 6 trunk(s)',
 'trunk': {'test_loss_avg': [-0.0162673,
                             0.00575327,
                             0.00564526,
                             -0.00830878,
                             -0.000319811,
                             0.00785691],
           'test_loss_last': [-0.0235159,
                              0.00834907,
                              0.00954544,
                              -0.0125377,
                              -0.00196023,
                              0.0105025]}}


def builtin_prior() -> Prior:
    return Prior.from_dict({**DEFAULT, "builtin": True})
