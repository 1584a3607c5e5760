"""The ``varscale`` command: a registry of subcommands and a thin dispatcher.

Each subcommand is one module of this package with ``main(argv) -> exit code``: it owns the
command's argparse and output, and calls the library function that does the work (which
itself neither parses arguments nor exits). ``COMMANDS`` maps a name to that module and a
one-line help; modules are imported only when their command runs, so ``varscale validate``
does not pay for torch and deepspeed. ``fit`` and ``figures`` call the torch-free analysis
package (``analysis.fitting``, ``analysis.figures``) and import no torch either.

Adding a command: a module here with ``main(argv)``, and one line in ``COMMANDS``.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("varscale.cli.validate", "validate a study file and print the resolved config"),
    "plan": ("varscale.cli.plan", "expand a study into cells: sizes, budgets, steps, time"),
    "run": ("varscale.cli.run", "run a whole study (tokenizer, tokens, cells, fits, figures)"),
    "status": ("varscale.cli.status", "one line per cell: state, progress, loss, speed"),
    "tokenizer": ("varscale.cli.tokenizer", "'tokenizer train <study>': train the VQVAE"),
    "tokenize": ("varscale.cli.tokenize", "encode every image of a study once into its token cache"),
    "train": ("varscale.cli.train", "train one cell (a cells/<run_id> folder)"),
    "fit": ("varscale.cli.fit", "fit the scaling laws of a study; writes report/fits.*"),
    "check": ("varscale.cli.check", "set predictions written before training against the observed runs"),
    "figures": ("varscale.cli.figures", "draw the paper's figures for a study into report/"),
    "predict": ("varscale.cli.predict", "predicted metrics of untrained runs (depth or N, tokens or FLOPs)"),
    "allocate": ("varscale.cli.allocate", "the compute-optimal size and tokens for a FLOP budget"),
    "sample": ("varscale.cli.sample", "generate class-conditional samples from a cell"),
    "edit": ("varscale.cli.edit", "zero-shot in-/out-painting and class editing"),
    "quality": ("varscale.cli.quality", "classifier accuracy and Frechet distance of samples"),
    "doctor": ("varscale.cli.doctor", "check every file of a study: damaged, stale, what a rerun redoes"),
    "import": ("varscale.cli.import_", "runs trained elsewhere (a table, the official VAR logs) as a study to fit"),
}


def version() -> str:
    """``varscale.__version__``: the version of the code that runs (a checkout on PYTHONPATH
    too; pyproject.toml carries the same number for the installed distribution)."""
    import varscale

    return varscale.__version__


def _usage() -> str:
    w = max(map(len, COMMANDS))
    lines = ["usage: varscale <command> [args]", "", "commands:"]
    lines += [f"  {k:<{w}}  {v[1]}" for k, v in COMMANDS.items()]
    lines += ["", "'varscale <command> -h' for a command's options; 'varscale --version' for the version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"varscale {version()}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        from varscale.config import nearest

        m = nearest(cmd, COMMANDS)
        hint = f" (did you mean '{m}'?)" if m else ""
        print(f"varscale: unknown command '{cmd}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    entry = importlib.import_module(COMMANDS[cmd][0]).main
    try:
        return int(entry(rest) or 0)
    except BrokenPipeError:  # `varscale validate dir | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
