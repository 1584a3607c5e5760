"""varscale: a scaling-law workbench for VAR (next-scale prediction).

Kept import-light on purpose: nothing here imports torch, so the CLI dispatcher, config
validation and the schema load instantly and ``analysis`` can share ``varscale.schema``.
"""
__version__ = "0.1.0"
