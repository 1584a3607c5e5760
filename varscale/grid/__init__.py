"""Driving a whole study: plan its cells, run the chain, report where it stands.

- ``plan.py``       ``varscale plan``: cells, sizes, costs of both budget designs, estimates
- ``launch.py``     ``varscale run``: tokenizer -> tokens -> cells -> fit -> figures, resumable
- ``stages.py``     the one-off stages (tokenizer, tokens, fit, figures), each under a study lock
- ``executors/``    where a cell runs: an ``Executor`` protocol and a registry by name
                    (local, torchrun, slurm); ``worker.py`` is the process that owns a cell
- ``status.py``     ``varscale status``: one line per cell from the study folder alone
- ``lock.py``       pid + host lock files with stale-lock takeover
- ``progress.py``   study and cell progress bars (quiet when not on a terminal)

Imports run one way: launch -> executors -> stages -> lock, progress -> schema; nothing imports launch.
"""
