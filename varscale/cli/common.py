"""What every command checks before it works, and how it says no.

A command's ``main`` is wrapped in :func:`command`: a :class:`UsageError` raised anywhere in
it (a study folder that is not one, an unknown cell id, a class outside the study, a damaged
file) ends the command with that one sentence on stderr, prefixed by the command's name, and
exit code 2 -- never a traceback; so does a ``varscale.schema.DamagedFile`` that a reader
deeper down raises (a damaged weights.pt, tokenizer or token cache), and a full disk
(``DiskFull``) is one sentence and exit 1. Every parser is an :class:`ArgumentParser`, whose
errors (``--n-boot abc``, a missing argument) are one line too. The checks here run before
any work, so a bad argument costs nothing and changes nothing. Torch-free (``varscale
validate`` and ``status`` stay instant); writes nothing.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from varscale.config import nearest
from varscale.schema import CellLayout, StudyLayout, json_problem, yaml_problem  # noqa: F401  (json_problem: C.json_problem)

STUDY_METAVAR = "STUDY"  # the study folder's name in every command's usage line
STUDY_HELP = "study folder (runs/<study>, holding study.yaml)"


class UsageError(Exception):
    """A bad argument or a damaged input file: one sentence, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default after its help line; a description of several lines (a module
    docstring) as written, a one-line one wrapped.

    A default of None means "from the study" or "off": its help says which, so it is not
    printed; a flag (store_true) is off unless given.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        if "%(default)" in h or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return h
        return h + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with an error as one line (the message and where the options are listed)
    instead of the usage block and the message: ``varscale fit: argument --n-boot: invalid int
    value: 'abc' ('varscale fit -h' lists the options)``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} ('{self.prog} -h' lists the options)\n")


def parser(prog: str, description: Optional[str] = None) -> argparse.ArgumentParser:
    return ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def add_study_arg(ap: argparse.ArgumentParser, help: str = STUDY_HELP) -> None:
    ap.add_argument("study_dir", metavar=STUDY_METAVAR, help=help)


def command(prog: str) -> Callable:
    """Decorate a command's ``main(argv) -> int``: a UsageError becomes one line and exit 2."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[Sequence[str]] = None) -> int:
            from varscale.schema import DamagedFile, DiskFull

            try:
                return main(argv)
            except (UsageError, DamagedFile) as e:
                print(f"{prog}: {e}", file=sys.stderr)
                return 2
            except DiskFull as e:
                print(f"{prog}: {e}", file=sys.stderr)
                return 1

        return run

    return wrap


# --------------------------------------------------------------------------- arguments


def require(ok: bool, sentence: str) -> None:
    if not ok:
        raise UsageError(sentence)


def positive(name: str, value: Optional[float], allow_zero: bool = False) -> None:
    """``--name`` must be > 0 (>= 0 with ``allow_zero``) when given."""
    if value is None:
        return
    # written as "not good" so that nan fails too; inf is no budget either
    bad = not (value >= 0 if allow_zero else value > 0) or value == float("inf")
    require(not bad, f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")


def existing_file(name: str, path: Optional[str]) -> None:
    if path is not None:
        require(Path(path).is_file(), f"{name} {path}: no such file")


def study_dir(path: str, need_yaml: bool = True) -> StudyLayout:
    """The study folder ``path``: it exists (and holds ``study.yaml`` when ``need_yaml``)."""
    lay = StudyLayout.of(path)
    if not lay.root.is_dir():
        hint = _near(lay.root)
        raise UsageError(f"no study folder at {path}{hint}")
    if need_yaml and not lay.study_yaml.is_file():
        raise UsageError(f"{path} is not a study folder: it has no study.yaml (copy one from runs/default/)")
    return lay


def refuse_imported(path: str) -> None:
    """A UsageError when ``path`` (a study folder or its study.yaml) holds runs imported from
    elsewhere (``varscale import``: its ``imported.json``): there is nothing to train there."""
    p = Path(path)
    lay = StudyLayout.of(p.parent if p.suffix in (".yaml", ".yml") else p)
    if lay.imported_json.exists():
        raise UsageError(f"{path} holds imported runs: there is nothing to train; use varscale fit/predict/figures")


def _near(root: Path) -> str:
    """' (did you mean X?)' for a mistyped study folder next to existing ones."""
    parent = root.parent if str(root.parent) else Path(".")
    try:
        names = [p.name for p in parent.iterdir() if StudyLayout(p).study_yaml.is_file()]
    except OSError:
        return ""
    m = nearest(root.name, names)
    return f" (did you mean {parent / m}?)" if m else ""


def load_study(path: str):
    """The study's config, strictly; a bad or damaged file is a UsageError (one line per problem)."""
    from varscale.config import ConfigError, load_study as _load, study_file

    f = study_file(path)
    if f == StudyLayout(f.parent).study_yaml:
        study_dir(str(f.parent))
    elif not f.is_file():
        raise UsageError(f"no study file at {path}")
    try:
        return _load(path)
    except ConfigError as e:
        raise UsageError(config_error_text(e)) from None


def study_yaml_damage(lay: StudyLayout) -> None:
    """A UsageError when ``study.yaml`` exists but is no YAML mapping (unreadable, not text,
    empty, a list); for the commands that read the cells alone and not the config."""
    from varscale.config import ConfigError, read_study_yaml

    if lay.study_yaml.exists():
        try:
            read_study_yaml(lay.study_yaml)
        except ConfigError as e:
            raise UsageError(config_error_text(e)) from None


def config_error_text(e: Exception) -> str:
    """A ConfigError as one line when it has one problem (the file, then the problem), else its list."""
    errors = getattr(e, "errors", None)
    if errors and len(errors) == 1:
        head = str(e).split(":\n", 1)[0]
        return f"{head}: {errors[0]}"
    return str(e)


def listing(names: Sequence[str], first: int = 8) -> str:
    """'a, b, c' or 'a, b, ... (and 12 more)'."""
    if len(names) <= first:
        return ", ".join(names)
    return ", ".join(names[:first]) + f", ... (and {len(names) - first} more)"


def cell_ids(lay: StudyLayout) -> list[str]:
    return [p.name for p in lay.cell_dirs() if CellLayout(p).config_json.exists()]


def cell(lay: StudyLayout, run_id: str) -> CellLayout:
    """The cell ``run_id`` of the study; an unknown id lists the valid ones."""
    c = lay.cell(run_id)
    if c.config_json.exists():
        return c
    ids = cell_ids(lay)
    if not ids:
        raise UsageError(f"no cell {run_id}: {lay.root} has no cells yet ('varscale run {lay.root}' writes them)")
    m = nearest(run_id, ids, cutoff=0.5)
    hint = f" (did you mean {m}?)" if m else ""
    raise UsageError(f"no cell {run_id} in {lay.cells_dir}{hint}; the cells are: {listing(ids)}")


def study_cell(a):
    """The parsed ``study_dir`` and ``--cell`` of a per-cell command: (layout, cell, CellConfig)."""
    lay = study_dir(a.study_dir)
    c = cell(lay, a.cell)
    return lay, c, cell_config(c)


def cell_config(c: CellLayout):
    """The cell's CellConfig; a damaged config.json is a UsageError naming it."""
    from varscale.cell import CellConfig
    from varscale.config import ConfigError

    try:
        return CellConfig.load(c.root)
    except ConfigError as e:
        raise UsageError(config_error_text(e)) from None


def checkpoint_step(c: CellLayout, step: Optional[int]) -> None:
    """``--step`` names a kept checkpoint of the cell (None: the latest, checked by the work)."""
    if step is None:
        return
    from varscale.sample import cell_steps

    steps = cell_steps(c.root)
    if step not in steps:
        kept = listing([str(s) for s in steps]) if steps else "none yet"
        raise UsageError(f"--step {step}: cell {c.run_id} has no checkpoint at that step (kept: {kept})")


def cuda_if_asked(kind: str) -> None:
    """``--device cuda`` needs a visible CUDA device (imports torch: for the torch commands)."""
    if kind == "cuda":
        import torch

        require(torch.cuda.is_available(), "--device cuda: no CUDA device is visible here; use --device cpu or auto")


def classes(name: str, values: Optional[Iterable[int]], num_classes: int) -> None:
    """Class ids lie in [0, num_classes)."""
    bad = [v for v in (values or []) if not 0 <= v < num_classes]
    require(not bad, f"{name} {' '.join(map(str, bad))}: the study has {num_classes} classes (0 to {num_classes - 1})")


# --------------------------------------------------------------------------- damaged files


# what to do about each study file the commands read, when it is damaged
FIX_CONFIG = "delete it: 'varscale run <study>' writes it again from study.yaml (the run id fixes its content)"
FIX_STATUS = "delete it (the cell's next run writes it again; its checkpoints and metrics stay)"
FIX_PLAN = "delete it ('varscale plan' writes it again)"


def damaged_files(lay: StudyLayout) -> list[tuple[Path, str]]:
    """(path, one sentence naming it and what to do) for each damaged JSON file of the study
    that the commands read: plan.json, each cell's config.json and status.json."""
    paths = [(lay.plan_json, FIX_PLAN)]
    for d in lay.cell_dirs():
        c = CellLayout(d)
        paths += [(c.config_json, FIX_CONFIG), (c.status_json, FIX_STATUS)]
    out = []
    for p, fix in paths:
        why = json_problem(p)
        if why:
            out.append((p, f"{p} is damaged ({why}); {fix}"))
    return out


def refuse_damaged(lay: StudyLayout) -> None:
    """A UsageError naming the first damaged file (and how many more there are)."""
    bad = damaged_files(lay)
    if bad:
        more = f" ({len(bad) - 1} more damaged file(s): 'varscale doctor {lay.root}' lists them)" if len(bad) > 1 else ""
        raise UsageError(bad[0][1] + more)


def warn(prog: str, sentence: str) -> None:
    print(f"{prog}: warning: {sentence}", file=sys.stderr)


# --------------------------------------------------------------------------- analysis commands


def check_study_dir(prog: str, study_dir: str) -> None:
    """Before any work of ``fit`` / ``figures`` / ``check``: a UsageError (one line, exit 2)
    when ``study_dir`` is not a study folder or a file the analysis needs is damaged. A damaged
    cell ``config.json`` is a warning and the cell stays in (the analysis reads from it only
    whether the run is a WSD stable run and its budget unit: without it, an ordinary run)."""
    lay = StudyLayout.of(study_dir)
    if not lay.root.is_dir():
        raise UsageError(f"no study folder at {study_dir}")
    if not lay.study_yaml.is_file() and not lay.cells_dir.is_dir():
        raise UsageError(f"{study_dir} is not a study folder (it has neither study.yaml nor cells/); "
                         "give runs/<study>")
    # what the analysis reads besides the parquet: a damaged one stops it, with what to do
    needed = [(lay.study_yaml, yaml_problem, "restore it from version control or rewrite it "
               "(runs/README.md describes the format)"),
              (lay.tokens_meta, json_problem, f"rebuild the token cache with 'varscale tokenize {study_dir} --force'")]
    needed += [(lay.cell(d.name).status_json, json_problem, "delete it (the cell's next run writes it "
                "again; its checkpoints and metrics stay)") for d in lay.cell_dirs()]
    for path, problem, fix in needed:
        why = problem(path)
        if why:
            raise UsageError(f"{path} is damaged ({why}); {fix}")
    for d in lay.cell_dirs():
        c = lay.cell(d.name)
        why = json_problem(c.config_json)
        if why:
            print(f"{prog}: warning: {c.config_json} is damaged ({why}); the cell's metrics are used and "
                  f"it counts as an ordinary run (not a WSD stable run); 'varscale run {study_dir}' needs it rewritten", file=sys.stderr)
