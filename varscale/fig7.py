"""Fig. 7's samples of a study, without torch: which kept checkpoints of a cell lie nearest
20 / 60 / 100% of its training, which cell of each depth the figure shows, and whether the
samples it has are current.

The sampling itself is ``varscale.sample.sample_cell(..., fig7=True)``; the figures stage of
``varscale run`` (``varscale.grid.stages.stage_fig7``) calls it for the cells :func:`pending`
names before ``varscale figures`` draws. The choice of a depth's cell is the one
``analysis.figures.samples.fig7_picks`` makes among the sampled runs: the finished cell
whose kept checkpoints cover the most of the three fractions (within 5% of its steps), then
the one with the most distinct such checkpoints, then the largest budget (then the lowest
seed). In an independent design that is the largest budget's run; in a warmup-stable-decay
design it is the stable run, since a decay branch starts at 80% of its steps and keeps no
earlier snapshot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from varscale.schema import CellLayout, StudyLayout, read_json

FRACTIONS = (0.2, 0.6, 1.0)
# a study with more classes shows this many, evenly spaced (one sample of each per snapshot)
MAX_CLASSES = 10


def cell_steps(cell_dir: Union[str, Path]) -> list[int]:
    """Steps of the cell's complete checkpoints (``checkpoints/step<N>/weights.pt``), sorted."""
    cell = CellLayout(Path(cell_dir))
    steps = []
    for d in cell.checkpoints.glob("step*"):
        m = re.fullmatch(r"step(\d+)", d.name)
        if m and cell.weights(int(m.group(1))).exists():
            steps.append(int(m.group(1)))
    return sorted(steps)


def fig7_steps(available: Sequence[int], total_steps: int, fractions=FRACTIONS) -> dict[float, int]:
    """For each fraction of training, the available checkpoint step nearest to it."""
    out = {}
    for f in fractions:
        if available:
            out[f] = min(available, key=lambda s: (abs(s - f * total_steps), -s))
    return out


def covered(steps: dict[float, int], total_steps: int) -> int:
    """How many of the fractions have a checkpoint within 5% of training."""
    return sum(abs(s - f * total_steps) <= 0.05 * total_steps for f, s in steps.items())


def fig7_classes(num_classes: int) -> Optional[list[int]]:
    """The classes sampled: None (all of them) up to ``MAX_CLASSES``, else that many, evenly spaced."""
    if num_classes <= MAX_CLASSES:
        return None
    return sorted({round(i * (num_classes - 1) / (MAX_CLASSES - 1)) for i in range(MAX_CLASSES)})


@dataclass
class Fig7Cell:
    """The cell a depth's row of Fig. 7 shows, its checkpoints to sample and their state."""
    run_id: str
    depth: int
    total_steps: int
    steps: dict[float, int]  # fraction -> kept checkpoint step
    classes: Optional[list[int]]  # None: every class
    device: str  # the study's execution.device ("auto", "cpu", "cuda")
    threads: Optional[int]  # the study's execution.threads (torch threads of a cell); None: torch's
    stale: Optional[str]  # None: its samples are current; else why they are to be drawn


def _finished(cell: CellLayout) -> bool:
    try:
        return cell.done.read_text().strip() == "done"
    except OSError:
        return False


def sample_problem(layout: StudyLayout, run_id: str, steps: dict[float, int]) -> Optional[str]:
    """None when ``samples/<run_id>/`` holds Fig. 7's samples of exactly these checkpoints,
    written after the cell finished; else what is missing, as a phrase."""
    out = layout.samples(run_id)
    meta = read_json(out / "fig7.json", None)
    if not isinstance(meta, dict):
        return "no samples yet"
    if meta.get("fractions") != {f"{f:g}": s for f, s in steps.items()}:
        return "samples of other checkpoints"
    missing = [s for s in sorted(set(steps.values())) if not (out / f"{StudyLayout.fig7_stem(s)}.png").exists()]
    if missing:
        return f"no sample of step {missing[0]}"
    done = layout.cell(run_id).done
    if done.exists() and (out / "fig7.json").stat().st_mtime_ns < done.stat().st_mtime_ns:
        return "samples older than the cell's DONE"
    return None


def fig7_cells(layout: StudyLayout, run_ids: Sequence[str]) -> list[Fig7Cell]:
    """Per depth (ascending), the finished cell of ``run_ids`` that Fig. 7 shows (module
    docstring); cells without a kept checkpoint or a readable config.json are passed over."""
    from varscale.cell import CellConfig

    best: dict[int, tuple[tuple, Fig7Cell]] = {}
    for rid in run_ids:
        cell = layout.cell(rid)
        if not _finished(cell):
            continue
        kept = cell_steps(cell.root)
        if not kept:
            continue
        try:
            cfg = CellConfig.load(cell.root)
        except Exception:  # noqa: BLE001 - a damaged config.json: doctor and the analysis say so
            continue
        T = int(cfg.total_steps)
        steps = fig7_steps(kept, T)
        budget = float(cfg.budget_value or cfg.budget_flops or 0.0)
        key = (covered(steps, T), len(set(steps.values())), budget, -int(cfg.seed))
        c = Fig7Cell(rid, int(cfg.depth), T, steps, fig7_classes(int(cfg.num_classes)),
                     str(cfg.execution.device), cfg.execution.threads, None)
        if cfg.depth not in best or key > best[cfg.depth][0]:
            best[cfg.depth] = (key, c)
    out = [best[d][1] for d in sorted(best)]
    for c in out:
        c.stale = sample_problem(layout, c.run_id, c.steps)
    return out


def pending(layout: StudyLayout, run_ids: Sequence[str]) -> list[Fig7Cell]:
    """The cells of :func:`fig7_cells` whose samples are to be drawn (again)."""
    return [c for c in fig7_cells(layout, run_ids) if c.stale is not None]
