"""``python -m varscale.cli <command> ...``: the same as the ``varscale`` console script."""
import sys

from varscale.cli import main

sys.exit(main())
