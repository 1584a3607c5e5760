"""A cell's checkpoints: saving, weights-only snapshots, LATEST.json, resume, the WSD branch start.

Written under ``checkpoints/`` in the cell folder (paths from ``varscale.schema.CellLayout``):

    step<N>/               DeepSpeed checkpoint (every rank's partition, the trainer's client_state)
    step<N>/weights.pt     the full fp32 model state dict (what ``varscale.train.model`` loads)
    step<N>/metrics.parquet  a copy of every metrics row written up to step N
    step<N>/manifest.json  written last, after every rank finished: world size, ZeRO stage and
                           every file of the checkpoint with its size
    LATEST.json            {"step", "tag", "tags", "time"}: the newest complete checkpoint

Full checkpoints are saved at the cell's ``checkpoint_steps`` and ``keep_steps`` (a stable
run's WSD branch points); at ``SNAPSHOT_FRACTIONS`` of the run only ``weights.pt`` is written.
The last ``KEEP_CHECKPOINTS`` full ones, the branch points and the snapshots are kept, every
other ``step<N>`` folder is deleted after a save (and dot-files a killed write left behind).

Crash safety: a save is four steps, in this order: every rank's files, the manifest (a
checkpoint is complete once it is written, after every rank finished writing), LATEST.json
(replaced atomically), the pruning. A kill (SIGKILL) may fall between any two. Before the
manifest, the folder is no checkpoint and is deleted before being written again. After it,
a resume from that checkpoint ``settle``s: LATEST.json then names it and the kept one before
it, and the older full checkpoints the save did not prune are deleted, so no more than
``KEEP_CHECKPOINTS`` stay even when the run has no save left (a kill after the last one). ``load`` resumes from the newest
checkpoint that is whole: its manifest reads, every file it lists is there with its size,
and every torch file passes its CRC check (``varscale.schema.torch_file_problem``). A damaged
newest one (a truncated or overwritten file, a missing shard, a damaged LATEST.json) is
skipped for the previous kept one, and with none left the cell starts again from step 0;
``Loaded.skipped`` says which were skipped and why. A WSD decay branch with no checkpoint of
its own starts from the stable run's checkpoint at ``branch_step``. A checkpoint resumes at
the world size and ZeRO stage it was saved with only (DeepSpeed's partitions): another one is
an error saying so, not a fallback.

A full disk during a save (``DiskFull``) deletes the half-written folder, to give the space
back, and fails the cell; the previous checkpoint stays the one a rerun resumes from.
"""
from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from varscale.cell import CellConfig
from varscale.schema import (METRICS_SCHEMA, CellLayout, DamagedFile, DiskFull, StudyLayout, atomic_write_bytes,
                             atomic_write_json, is_disk_full, json_problem, read_json, remove_temp_files,
                             torch_file_problem, write_rows)
from varscale.train.model import read_latest
from varscale.train.records import now

KEEP_CHECKPOINTS = 2  # >= 2: a damaged newest checkpoint falls back to the one before it
# Fig. 7 (samples at 20%, 60% and 100% of training): at these fractions of a run the model
# weights alone are kept (``checkpoints/step<N>/weights.pt``, no optimizer state), so that
# ``varscale sample --fig7`` has them without keeping full DeepSpeed checkpoints
SNAPSHOT_FRACTIONS = (0.2, 0.6)
MANIFEST = "manifest.json"


def snapshot_steps(total_steps: int) -> set[int]:
    return {max(1, round(f * total_steps)) for f in SNAPSHOT_FRACTIONS} if total_steps >= 5 else set()


def _tag(step: int) -> str:
    return CellLayout.checkpoint_tag(step)


def _step_of(tag: str) -> Optional[int]:
    m = re.fullmatch(r"step(\d+)", tag)
    return int(m.group(1)) if m else None


def _torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class CheckpointMismatch(ValueError):
    """A whole checkpoint saved at another world size or ZeRO stage: not damage, not a fallback."""


def checkpoint_problem(folder: Path, world_size: Optional[int] = None,
                       zero_stage: Optional[int] = None) -> Optional[str]:
    """Why the full checkpoint in ``folder`` cannot be resumed from (None: it is whole).

    With a manifest: it reads, every file it lists is there with its size, every torch file
    passes its CRC check. Without one (saved before manifests existed): it has DeepSpeed's
    model states and its torch files pass the CRC check. Raises ``CheckpointMismatch`` for a
    whole checkpoint saved at another ``world_size`` / ``zero_stage``.
    """
    if not folder.is_dir():
        return "its folder is missing" if not folder.exists() else "not a folder"
    man_p = folder / MANIFEST
    if man_p.exists():
        why = json_problem(man_p)
        if why:
            return f"{MANIFEST}: {why}"
        man = read_json(man_p)
        files = man.get("files")
        if not isinstance(files, dict) or not files:
            return f"{MANIFEST}: no list of files"
        for name, size in sorted(files.items()):
            f = folder / name
            if not f.is_file():
                return f"{name} is missing" if not f.exists() else f"{name} is not a file"
            if f.stat().st_size != size:
                return f"{name} has {f.stat().st_size} bytes, {MANIFEST} says {size}"
    else:
        files = {f.name: None for f in folder.iterdir() if f.name.endswith(".pt")}
        if not any(n.endswith("model_states.pt") for n in files):
            return "no DeepSpeed model states in it (an unfinished save)"
    for name in sorted(files):
        if name.endswith(".pt"):
            why = torch_file_problem(folder / name)
            if why:
                return f"{name}: {why}"
    if man_p.exists():
        for key, want in (("world_size", world_size), ("zero_stage", zero_stage)):
            have = man.get(key)
            if want is not None and have is not None and int(have) != int(want):
                raise CheckpointMismatch(
                    f"{folder} was saved with {key.replace('_', ' ')} {have}, this run has {want}; a checkpoint "
                    f"resumes at the world size and ZeRO stage it was saved with (run the cell as before, "
                    f"or move {folder.parent} aside to train it again from step 0)")
    return None


@dataclass(frozen=True)
class Loaded:
    """Where a run starts: the trainer's client_state of checkpoint ``tag`` (None: from step 0),
    whether it is this run's own (a resume) or the stable run's at the branch step (a WSD
    branch's start), and the newer checkpoints skipped as damaged, as (tag, why)."""
    client: Optional[dict[str, Any]]
    own: bool
    tag: Optional[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def step(self) -> Optional[int]:
        return _step_of(self.tag) if self.tag else None

    def fallback_note(self) -> Optional[str]:
        """One sentence on the skipped checkpoints (None when the newest one loaded)."""
        if not self.skipped:
            return None
        index = [f"{t} is damaged ({why}), the checkpoints were found by their manifests"
                 for t, why in self.skipped if _step_of(t) is None]
        bad = "; ".join(f"{t}: {why}" for t, why in self.skipped if _step_of(t) is not None)
        to = (f"resumed from {self.tag}" if self.own else f"starting again from the stable run's {self.tag}") \
            if self.tag else "no whole checkpoint is left: training again from step 0"
        return "; ".join(index + ([f"damaged checkpoint(s) skipped ({bad})"] if bad else [])) + f"; {to}"


class Checkpoints:
    """Save and load one cell's checkpoints through its DeepSpeed engine (every rank calls)."""

    def __init__(self, layout: CellLayout, cell: CellConfig, engine, *, zero_stage: int, main: bool):
        self.layout, self.cell, self.engine = layout, cell, engine
        self.zero_stage, self.main = zero_stage, main
        self.full_at = set(cell.checkpoint_steps) | set(cell.keep_steps)
        self.weights_at = snapshot_steps(cell.total_steps) - self.full_at

    def _world(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_initialized() else 1

    def save(self, step: int, client_state: dict[str, Any], rows: Optional[list[dict]] = None) -> None:
        """A full checkpoint at ``step`` (with a copy of the metrics ``rows`` so far), in four
        steps that a kill may fall between: the files (every rank), the manifest, LATEST.json,
        then pruning (rank 0). A kill before the manifest leaves a folder no resume reads; after
        it, a resume from this checkpoint ends what the save did not (``settle``). A full disk:
        ``DiskFull``, the folder removed."""
        self._write(step, client_state, rows)
        if self.main:
            self._seal(step)
            tags = self._point_latest(step)
            self._prune(set(tags))

    def _write(self, step: int, client_state: dict[str, Any], rows: Optional[list[dict]]) -> None:
        """Every file of the checkpoint at ``step`` (a collective); the folder is whole on return."""
        import torch.distributed as dist

        ckpt = self.layout.checkpoints
        tag = _tag(step)
        folder = ckpt / tag
        if self.main:
            ckpt.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)  # a half-written try from before a crash
        dist.barrier()
        try:
            self.engine.save_checkpoint(str(ckpt), tag=tag, client_state=client_state, save_latest=False)
            sd = self.full_state_dict()
            if self.main:
                atomic_write_bytes(self.layout.weights(step), _torch_bytes(sd))
                if rows is not None:
                    write_rows(self.layout.checkpoint_rows(step), rows, METRICS_SCHEMA)
        except Exception as e:
            if not is_disk_full(e, ckpt):
                raise
            if self.main:
                shutil.rmtree(folder, ignore_errors=True)  # useless half-written: give the space back
            if isinstance(e, DiskFull):
                raise
            detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else ""
            raise DiskFull(folder, detail or "no space left on device") from e
        dist.barrier()

    def _seal(self, step: int) -> None:
        """The manifest: every file of the checkpoint with its size; from now on it is whole."""
        folder = self.layout.checkpoint(step)
        files = {f.name: f.stat().st_size for f in sorted(folder.iterdir())
                 if f.is_file() and not f.name.startswith(".")}
        atomic_write_json(folder / MANIFEST, {"step": step, "tag": _tag(step), "world_size": self._world(),
                                              "zero_stage": self.zero_stage, "files": files, "time": now()})

    def _point_latest(self, step: int) -> list[str]:
        """LATEST.json at ``step`` with the kept checkpoints before it; returns the kept tags."""
        prev = _latest_or_none(self.layout) or {}
        older = [t for t in prev.get("tags", []) if isinstance(t, str) and (_step_of(t) or 0) < step]
        # older ones only: after a resume from an earlier checkpoint (a newer one was
        # damaged) the newer tags belong to a run that no longer exists
        tags = _kept(older, _tag(step))
        self._write_latest(step, tags)
        return tags

    def _write_latest(self, step: int, tags: list[str]) -> None:
        if self.layout.latest_json.is_dir():  # damaged into a folder: replaced like any damaged one
            shutil.rmtree(self.layout.latest_json)
        atomic_write_json(self.layout.latest_json, {"step": step, "tag": _tag(step), "tags": tags, "time": now()})

    def settle(self, tag: str, candidates: list[str]) -> None:
        """After a resume from this run's own checkpoint ``tag`` (rank 0): what its save would
        have left had no kill fallen between its steps. LATEST.json names ``tag`` and the kept
        ones before it (``KEEP_CHECKPOINTS`` in all, from ``candidates``), then every other
        older full checkpoint is deleted. Newer ones (damaged, skipped) stay until the run's
        save at their step writes them again."""
        step = _step_of(tag)
        tags = _kept([t for t in candidates if (_step_of(t) or 0) < step], tag)
        prev = _latest_or_none(self.layout)
        if prev is None or prev.get("tag") != tag or prev.get("tags") != tags:
            self._write_latest(step, tags)
        self._prune(set(tags) | {t for t in candidates if (_step_of(t) or 0) > step})

    def _prune(self, latest_tags: set[str]) -> None:
        """Delete every ``step<N>`` folder but ``latest_tags``, the WSD branch points and the
        weights-only snapshots (and the dot-files a killed write left in the kept ones)."""
        keep = latest_tags | {_tag(s) for s in self.cell.keep_steps} \
            | {_tag(s) for s in snapshot_steps(self.cell.total_steps)}
        remove_temp_files(self.layout.checkpoints)
        for d in self.layout.checkpoints.iterdir():
            if d.is_dir() and d.name.startswith("step"):
                if d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
                else:  # a kill during an atomic write leaves its dot-file behind
                    remove_temp_files(d)

    def save_weights(self, step: int) -> None:
        """Model weights only at ``step<N>/weights.pt`` (for samples; never resumed from)."""
        sd = self.full_state_dict()  # a collective at ZeRO-3: every rank calls it
        if self.main:
            remove_temp_files(self.layout.checkpoint(step))  # a killed earlier try's dot-file
            atomic_write_bytes(self.layout.weights(step), _torch_bytes(sd))

    def full_state_dict(self) -> Optional[dict]:
        """fp32 model weights on rank 0 (gathered from the partitions at ZeRO-3)."""
        module = self.engine.module
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None
        return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None

    # ------------------------------------------------------------------ resume
    def candidates(self) -> tuple[list[str], list[tuple[str, str]]]:
        """This run's full checkpoints, newest first: the ones LATEST.json names and every
        ``step<N>`` folder with a manifest; and (what, why) for a damaged LATEST.json."""
        notes = []
        latest = _latest_or_none(self.layout)
        if latest is None and self.layout.latest_json.exists():
            notes.append((self.layout.latest_json.name, json_problem(self.layout.latest_json) or "not a checkpoint index"))
        tags = set()
        if latest is not None:
            tags |= {t for t in [latest.get("tag"), *latest.get("tags", [])] if isinstance(t, str) and _step_of(t) is not None}
        if self.layout.checkpoints.is_dir():
            tags |= {d.name for d in self.layout.checkpoints.iterdir()
                     if _step_of(d.name) is not None and (d / MANIFEST).exists()}
        return sorted(tags, key=lambda t: -(_step_of(t) or 0)), notes

    def _on_main(self, fn):
        """``fn()`` computed on rank 0 and given to every rank (so all agree on what the files
        are); a ``CheckpointMismatch`` there is raised on every rank."""
        import torch.distributed as dist

        out: list = [None]
        if self.main:
            try:
                out = [("ok", fn())]
            except CheckpointMismatch as e:
                out = [("mismatch", str(e))]
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(out, src=0)
        kind, value = out[0]
        if kind == "mismatch":
            raise CheckpointMismatch(value)
        return value

    def load(self) -> Optional[Loaded]:
        """Load weights and Adam state into the engine from where this run starts; None if fresh
        (no checkpoint at all). A damaged checkpoint is skipped for the one before it."""
        c = self.cell
        tags, skipped = self._on_main(self.candidates)
        partly_loaded = None
        for tag in tags:
            why = self._on_main(lambda: checkpoint_problem(self.layout.checkpoints / tag, self._world(),
                                                           self.zero_stage))
            if why is None:
                client, why = self._load_agreed(self.layout.checkpoints, tag)
                if client is not None:
                    if self.main:  # every rank has loaded it (``_load_agreed`` agreed)
                        self.settle(tag, tags)
                    return Loaded(client, True, tag, skipped)
                partly_loaded = tag  # an older checkpoint overwrites what DeepSpeed loaded of it
            skipped.append((tag, why))
        if partly_loaded:  # ... but a start from step 0 would not be clean
            raise RuntimeError(f"no checkpoint of {self.layout.checkpoints} can be loaded ("
                               + "; ".join(f"{t}: {w}" for t, w in skipped) + f"); move {self.layout.checkpoints} "
                               "aside to train the cell again from step 0")
        if skipped and not c.branch_from:
            return Loaded(None, True, None, skipped)
        if c.branch_from:  # WSD decay branch: start (again) from the stable run's checkpoint
            stable = StudyLayout.of(c.study_dir).cell(c.branch_from)
            step = int(c.branch_step)
            if not stable.weights(step).exists():
                raise FileNotFoundError(f"stable run {c.branch_from} has no checkpoint at step "
                                        f"{step} yet; run it first")
            folder = stable.checkpoint(step)
            why = self._on_main(lambda: checkpoint_problem(folder, self._world(), self.zero_stage))
            if why:
                raise DamagedFile(folder, why, f"this decay branch starts from it: train the stable run "
                                               f"{c.branch_from} again (move its folder aside and rerun)")
            client, err = self._load_agreed(stable.checkpoints, _tag(step))
            if client is None:
                raise RuntimeError(f"could not load checkpoint {folder} ({err})")
            return Loaded(client, False, _tag(step), skipped)
        return None

    def _load_agreed(self, folder: Path, tag: str) -> tuple[Optional[dict], str]:
        """(client_state, "") when every rank loaded ``folder/tag``, else (None, why)."""
        import torch
        import torch.distributed as dist

        client, err = None, ""
        try:
            _, client = self.engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                                    load_lr_scheduler_states=False)
            if client is None:
                err = "DeepSpeed found no model states in it"
        except Exception as e:  # noqa: BLE001 - said in the fallback note, the next one is tried
            err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if dist.is_initialized() and dist.get_world_size() > 1:
            ok = torch.tensor([0 if client is None else 1])
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if int(ok) == 0:
                return None, err or "another rank could not load it"
        return client, err


def _kept(older: list[str], tag: str) -> list[str]:
    """``tag`` and the newest of ``older``: ``KEEP_CHECKPOINTS`` tags, oldest first."""
    return sorted(set(older) | {tag}, key=lambda t: _step_of(t) or 0)[-KEEP_CHECKPOINTS:]


def _latest_or_none(layout: CellLayout) -> Optional[dict]:
    """LATEST.json as a dict, or None when it is absent or damaged (the caller says which)."""
    latest = read_latest(layout)
    return latest if isinstance(latest, dict) and isinstance(latest.get("tags", []), list) else None
