"""Driving a whole study: plan its cells, run the chain, report where it stands.

- ``plan.py``      ``varscale plan``: cells, sizes, costs of both budget designs, estimates
- ``launch.py``    ``varscale run``: tokenizer -> tokens -> cells -> fit -> figures, resumable
- ``executors.py`` where a cell runs: local subprocesses, torchrun groups, Slurm via submitit
- ``status.py``    ``varscale status``: one line per cell from the study folder alone
- ``lock.py``      pid + host lock files with stale-lock takeover
- ``progress.py``  study and cell progress bars (quiet when not on a terminal)
"""
