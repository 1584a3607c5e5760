"""The fit forms by name, as one dict that ``analysis.forms`` fills with its registry.

It sits in a module of its own, importing nothing, so that a :class:`~analysis.bootstrap.Fit`
can find its form's law (``Fit.predict``, ``Fit.equation``) without importing the forms,
which import it. Add a form in ``analysis/forms/__init__.py``, not here.
"""
from __future__ import annotations

from typing import Any

FORMS: dict[str, Any] = {}
