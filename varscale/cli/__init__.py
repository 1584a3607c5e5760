"""The ``varscale`` command: a registry of subcommands and a thin dispatcher.

Each subcommand is one module of this package with ``main(argv) -> exit code``: it owns the
command's argparse and output, and calls the library function that does the work (which
itself neither parses arguments nor exits). ``COMMANDS`` maps a name to that module and a
one-line help; modules are imported only when their command runs, so ``varscale validate``
does not pay for torch and deepspeed. The analysis commands (``fit``, ``figures``, ``predict``,
``allocate``, ``check``, ``import``, ``validate``, ``status``, ``plan``) call the torch-free
analysis package and ``varscale.models.family`` and import no torch either: they work with
``pip install varscale`` alone. The commands in ``NEEDS`` train or load a model: torch and
DeepSpeed come with the training extra (``pip install 'varscale[train]'``), and without it
such a command says so in one line (exit 2) before any work; so does any command whose work
reaches an ``import torch`` / ``import deepspeed`` that fails for want of the package (e.g.
``doctor`` on a study with checkpoints).

Adding a command: a module here with ``main(argv)``, and one line in ``COMMANDS`` (and one in
``NEEDS`` when it trains or loads a model).
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


# the commands that need the training extra, and what of it: torch is imported here (each of
# these commands imports it at once anyway), DeepSpeed only looked up (``run``'s launcher never
# imports it, its cells do; importing it costs seconds)
NEEDS: dict[str, tuple[str, ...]] = {
    "run": ("torch", "deepspeed"),
    "train": ("torch", "deepspeed"),
    "tokenizer": ("torch",),
    "tokenize": ("torch",),
    "sample": ("torch",),
    "edit": ("torch",),
    "quality": ("torch",),
}
TRAIN_EXTRA = "pip install 'varscale[train]'"
EXTRA_MODULES = ("torch", "deepspeed")  # what the training extra brings that varscale's own install does not


def missing_extra(cmd: str) -> str | None:
    """Why ``cmd`` cannot run here (the first module of ``NEEDS[cmd]`` that does not import,
    as its error's first line), or None when it can."""
    import importlib.util

    for name in NEEDS.get(cmd, ()):
        if name == "torch":
            try:
                importlib.import_module("torch")
            except ImportError as e:
                return (str(e).splitlines() or [type(e).__name__])[0]
        elif importlib.util.find_spec(name) is None:
            return f"No module named {name!r}"
    return None


def needs_extra(cmd: str, why: str) -> int:
    print(f"varscale {cmd} needs the training extra (torch, DeepSpeed): {TRAIN_EXTRA} ({why})", file=sys.stderr)
    return 2


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
    if not {"-h", "--help"} & set(rest):  # a command's help needs nothing of the extra
        why = missing_extra(cmd)
        if why:
            return needs_extra(cmd, why)
    try:
        entry = importlib.import_module(COMMANDS[cmd][0]).main
        return int(entry(rest) or 0)
    except ModuleNotFoundError as e:  # the work reached torch / deepspeed, and it is not installed
        if e.name not in EXTRA_MODULES:
            raise
        return needs_extra(cmd, str(e))
    except BrokenPipeError:  # `varscale validate dir | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
