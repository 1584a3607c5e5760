"""The built-in prior of ``varscale plan --precision``: the default study's laws and noise."""
from __future__ import annotations

from .precision import Prior

DEFAULT: dict = {}


def builtin_prior() -> Prior:
    if not DEFAULT:
        raise ValueError("no built-in prior in this version: name one with --prior <trained study or fits.json>")
    return Prior.from_dict({**DEFAULT, "builtin": True})
