"""The ``varscale`` command: a thin dispatcher.

Each subcommand lives with the module that does the work and owns its own argparse
(``main(argv) -> exit code``); this file only maps names to those entry points, importing
lazily so that ``varscale validate`` does not pay for torch and deepspeed.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("varscale.validate", "validate a study file and print the resolved config"),
    "plan": ("varscale.grid.plan", "expand a study into cells: sizes, budgets, steps, time"),
    "run": ("varscale.grid.launch", "run a whole study (tokenizer, tokens, cells, fits, figures)"),
    "status": ("varscale.grid.status", "one line per cell: state, progress, loss, speed"),
    "tokenizer": ("varscale.train.tokenizer", "'tokenizer train <study>': train the VQVAE"),
    "tokenize": ("varscale.data.tokens", "encode every image of a study once into its token cache"),
    "train": ("varscale.train.trainer", "train one cell (a cells/<run_id> folder)"),
    "fit": ("analysis.report", "fit the scaling laws of a study; writes report/fits.*"),
    "figures": ("analysis.figures", "draw the paper's figures for a study into report/"),
    "sample": ("varscale.sample", "generate class-conditional samples from a cell"),
    "edit": ("varscale.sample", "zero-shot in-/out-painting and class editing"),
    "quality": ("varscale.quality", "classifier accuracy and Frechet distance of samples"),
}


def _usage() -> str:
    w = max(map(len, COMMANDS))
    lines = ["usage: varscale <command> [args]", "", "commands:"]
    lines += [f"  {k:<{w}}  {v[1]}" for k, v in COMMANDS.items()]
    lines += ["", "'varscale <command> -h' for a command's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        import difflib

        m = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f" (did you mean '{m[0]}'?)" if m else ""
        print(f"varscale: unknown command '{cmd}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    entry = getattr(module, "main_" + cmd, None) or module.main
    try:
        return int(entry(rest) or 0)
    except BrokenPipeError:  # `varscale validate dir | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
