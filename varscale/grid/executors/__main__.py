"""``python -m varscale.grid.executors cell <dir>``: a cell's worker process (see worker.py)."""
import sys

from varscale.grid.executors.worker import worker_main

sys.exit(worker_main(sys.argv[1:]))
