"""``varscale doctor <study-dir>``: check every file of a study; say what is damaged, what is
stale and what a rerun would redo. Changes nothing.

Checked: ``study.yaml`` (the strict loader), ``plan.json``; ``tokenizer/vqvae.pt`` (loaded with
``torch.load(weights_only=True)``: complete, and made for this study's tokenizer config) and
``tokenizer/metrics.json``; ``tokens/meta.json`` and each split's arrays against it (rows,
sequence length, labels, and every byte against its ``checksums``: a cache written before
them is a ``note``, unverified), its data hash against the study's; per cell ``config.json`` (the
strict loader, and whether it names the study folder it sits in), ``status.json``,
``checkpoints/LATEST.json`` (JSON, and the checkpoint folders
it names exist), each checkpoint as a resume checks it (manifest, sizes, CRCs) and each
weights-only snapshot, every ``metrics/part-*.parquet`` and ``record.parquet`` (read whole by
pyarrow); ``report/fits.json``.

Each finding is one line: ``damaged`` (a file no command can read: what to do about it),
``stale`` (readable, but not what the current study.yaml would make; a rerun replaces or
ignores it) or ``redo`` (work a ``varscale run`` would do); a ``note`` says what could not be
checked. A folder of imported runs (``varscale import``: ``imported.json``) has no tokenizer,
tokens, plan or cell configs and nothing to train: its imported.json, study.yaml and each
cell's status.json, metrics parts and record are checked. Exit 0 when nothing is damaged,
1 when something is, 2 when the argument is no study folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from varscale.cli import common as C
from varscale.schema import CellLayout, StudyLayout

PROG = "varscale doctor"


def build_parser():
    ap = C.parser(PROG, description=__doc__)
    C.add_study_arg(ap)
    return ap


class Findings:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.checked = 0

    def add(self, kind: str, text: str) -> None:
        self.lines.append((kind, text))

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.lines)

    def json_file(self, path, fix: str) -> bool:
        """A JSON file that is optional: counted when present, damaged when unreadable (False)."""
        why = C.json_problem(path)
        if path.exists():
            self.checked += 1
        if why:
            self.add("damaged", f"{path}: {why}; {fix}")
        return not why


def _study(lay: StudyLayout, f: Findings):
    """The study's config, or None (said as damaged) when study.yaml cannot be loaded."""
    from varscale.config import ConfigError, load_study

    f.checked += 1
    try:
        return load_study(lay.root)
    except ConfigError as e:
        f.add("damaged", C.config_error_text(e).replace("\n", " "))
        return None


def _plan(lay: StudyLayout, cfg, f: Findings) -> Optional[list]:
    """The cells the current study.yaml plans (None when it cannot be planned)."""
    from varscale.schema import read_json

    plan_ok = f.json_file(lay.plan_json, C.FIX_PLAN)
    cells = None
    if cfg is not None:
        from varscale.grid.cells import PlanError, plan_cells

        try:
            cells = plan_cells(cfg, lay.root)
        except PlanError as e:
            f.add("damaged", f"{lay.study_yaml}: the study cannot be planned ({e})")
    if cfg is not None and plan_ok and lay.plan_json.exists():
        old = read_json(lay.plan_json) or {}
        if old.get("config_hash") != cfg.hash():
            f.add("stale", f"{lay.plan_json}: made from another study.yaml; 'varscale plan' or 'run' rewrites it")
    return cells


def _tokenizer(lay: StudyLayout, cfg, f: Findings) -> None:
    ckpt = lay.tokenizer_ckpt
    if cfg is not None and cfg.tokenizer.checkpoint:
        return  # an external checkpoint: the study's own tokenizer/ folder holds only its metrics
    if not ckpt.exists():
        f.add("redo", f"tokenizer: {ckpt} is missing; a rerun trains the tokenizer (and encodes the tokens)")
    else:
        f.checked += 1
        import torch

        try:
            obj = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to load is damage, said in one line
            f.add("damaged", f"{ckpt}: torch.load fails ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                             "delete it: a rerun trains the tokenizer again")
        else:
            if not isinstance(obj, dict) or "state_dict" not in obj:
                f.add("damaged", f"{ckpt}: not a tokenizer checkpoint (no state_dict); delete it: a rerun trains it again")
            elif not obj.get("complete"):
                f.add("redo", f"tokenizer: {ckpt} is incomplete (training stopped, or it collapsed); a rerun trains it again")
            elif cfg is not None:
                from varscale.config import tokenizer_config_hash

                if obj.get("config_hash") != tokenizer_config_hash(cfg):
                    f.add("stale", f"{ckpt}: trained for another tokenizer config; a rerun trains it again")
    f.json_file(lay.tokenizer_metrics, "delete it ('varscale tokenizer eval' writes it again)")


def _tokens(lay: StudyLayout, cfg, f: Findings) -> None:
    import numpy as np

    from varscale.schema import read_json

    tl = lay.tokens
    meta_p = tl.meta
    if not meta_p.exists():
        strays = [p for p in (tl.idx("train"), tl.idx("val")) if p.exists()]
        f.add("redo", f"tokens: {lay.tokens_dir} is {'incomplete (no meta.json)' if strays else 'missing'}; "
                      "a rerun encodes every image")
        return
    f.checked += 1
    why = C.json_problem(meta_p)
    if why:
        f.add("damaged", f"{meta_p}: {why}; delete it: a rerun encodes the token cache again")
        return
    meta = read_json(meta_p)
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
    L = meta.get("seq_len")
    for split in ("train", "val"):
        for p, want in ((tl.idx(split), (counts.get(split), L)), (tl.labels(split), (counts.get(split),))):
            if not p.exists():
                f.add("damaged", f"{p}: missing, though meta.json says the cache is complete; delete {meta_p}: "
                                 "a rerun encodes the token cache again")
                continue
            f.checked += 1
            try:
                arr = np.load(p, mmap_mode="r")
            except Exception as e:  # noqa: BLE001 - a torn .npy: one line
                f.add("damaged", f"{p}: not a readable .npy ({e}); delete {meta_p}: a rerun encodes the token cache again")
                continue
            if any(w is not None and (len(arr.shape) <= i or arr.shape[i] != w) for i, w in enumerate(want)) \
                    or len(arr.shape) != len(want):
                f.add("damaged", f"{p}: shape {tuple(arr.shape)}, meta.json says {tuple(want)}; delete {meta_p}: "
                                 "a rerun encodes the token cache again")
    from varscale.tokenizer.cache import checksum_problems

    bad = checksum_problems(lay.tokens_dir)  # every value read against meta.json's checksums
    if bad is None:
        f.add("note", f"tokens: {meta_p} has no checksums (a cache written before varscale wrote them): "
                      f"its values are not verified; 'varscale tokenize {lay.root} --force' encodes it "
                      "again with them")
    for p, why in bad or []:
        f.add("damaged", f"{p}: {why}; delete {meta_p}: a rerun encodes the token cache again")
    if cfg is not None and meta.get("data_hash") not in (None, cfg.hash("data")):
        f.add("stale", f"{lay.tokens_dir}: encoded from another data section; a rerun encodes it again")


def _parquet(p: Path, f: Findings, what: str) -> None:
    import pyarrow.parquet as pq

    f.checked += 1
    try:
        pq.read_table(p)
    except Exception as e:  # noqa: BLE001 - truncated, foreign, empty: all the same to a reader
        f.add("damaged", f"{p}: unreadable by pyarrow ({str(e).splitlines()[0][:120]}); {what}")


def _checkpoints(c: CellLayout, f: Findings, resume_step: Optional[int]) -> Optional[int]:
    """Each full checkpoint with a manifest checked as a resume checks it, each weights-only
    snapshot's weights.pt; returns the step a rerun resumes from (the newest whole one)."""
    import re

    from varscale.schema import torch_file_problem
    from varscale.train.checkpoint import MANIFEST, CheckpointMismatch, checkpoint_problem

    if not c.checkpoints.is_dir():
        return resume_step
    whole, damaged_full = [], False
    for d in sorted(c.checkpoints.glob("step*")):
        m = re.fullmatch(r"step(\d+)", d.name)
        if not m or not d.is_dir():
            continue
        f.checked += 1
        if (d / MANIFEST).exists():
            try:
                why = checkpoint_problem(d)
            except CheckpointMismatch:
                why = None
            damaged_full |= bool(why)
            if why and c.done.exists():
                f.add("damaged", f"{d}: {why}; the cell is finished, so only sampling that step fails "
                                 "('varscale sample --step' another kept one)")
            elif why:
                f.add("damaged", f"{d}: {why}; a rerun resumes from the previous whole checkpoint "
                                 "(or from step 0) and writes it again")
            else:
                whole.append(int(m.group(1)))
        elif not any(p.name.endswith("model_states.pt") for p in d.iterdir()):
            why = torch_file_problem(c.weights(int(m.group(1))))
            if why:
                f.add("damaged", f"{c.weights(int(m.group(1)))}: {why}; 'varscale sample --step' cannot use "
                                 "it; delete it")
    if whole:
        return max(whole)
    return None if damaged_full else resume_step  # (a checkpoint without manifest: as LATEST.json says)


def _study_path(c: CellLayout, f: Findings) -> None:
    """A config.json written in another study folder (the study was copied or moved): stale.
    The cell reads the folder it sits in (``CellConfig.load``); ``varscale run`` rewrites the path."""
    from varscale.cell import names_other_study, read_config_json

    written = read_config_json(c.config_json).get("study_dir")
    home = c.root.parent.parent
    if isinstance(written, str) and names_other_study(written, home):
        f.add("stale", f"{c.config_json}: names study folder {written}, but the cell sits in {home} (a copied "
                       "or moved study); it reads this folder's tokenizer and tokens, and 'varscale run' "
                       "writes the path again")


def _cell(c: CellLayout, planned: Optional[set], f: Findings, imported: bool = False) -> None:
    from varscale.cell import CellConfig
    from varscale.config import ConfigError

    rid = c.run_id
    if imported:
        pass  # runs trained elsewhere: no config.json, nothing to resume
    elif not c.config_json.exists():
        f.add("stale", f"{c.root}: no config.json; " + (
            "a rerun writes it (the run id is planned)" if planned and rid in planned
            else "not a cell of the current study.yaml, no command runs it"))
    else:
        f.checked += 1
        try:
            CellConfig.load(c.root)
        except ConfigError as e:
            f.add("damaged", C.config_error_text(e).replace("\n", " "))
        else:
            if planned is not None and rid not in planned:
                f.add("stale", f"{c.root}: not a cell of the current study.yaml; a rerun leaves it alone "
                               "(and the analysis still reads it)")
            _study_path(c, f)
    bad_json, resume_step = False, None
    for p, fix in ((c.status_json, C.FIX_STATUS), (c.latest_json, "delete it: the cell then restarts from step 0")):
        if p.exists():
            f.checked += 1
        why = C.json_problem(p)
        if why:
            bad_json = True
            f.add("damaged", f"{p}: {why}; {fix}")
    if c.latest_json.exists() and C.json_problem(c.latest_json) is None:
        from varscale.schema import read_json

        latest = read_json(c.latest_json)
        resume_step = latest.get("step")
        tags = [t for t in [latest.get("tag"), *(latest.get("tags") or [])] if isinstance(t, str)]
        missing = sorted({t for t in tags if not (c.checkpoints / t).is_dir()})
        if missing:
            resume_step = None
            f.add("damaged", f"{c.latest_json}: names checkpoint(s) {', '.join(missing)} that are not in "
                             f"{c.checkpoints}; delete LATEST.json: the cell then restarts from step 0")
    resume_step = _checkpoints(c, f, resume_step)
    for p in c.metrics_parts():
        _parquet(p, f, "the analysis skips it with a warning; 'varscale run' writes it again from "
                       "the copy in the cell's checkpoint")
    if c.record.exists():
        _parquet(c.record, f, "the analysis skips it; delete it (the cell's next run writes it again)")
    if imported or bad_json or not c.config_json.exists() or (planned is not None and rid not in planned):
        return
    from varscale.grid.status import cell_state

    try:
        st = cell_state(c)
    except Exception:  # noqa: BLE001 - said above as damage; the state is then unknown
        return
    if st.state in ("pending", "failed"):
        frm = (f"resumes from its checkpoint at step {resume_step}" if resume_step is not None
               else "trains from step 0")
        f.add("redo", f"cell {rid}: {st.state}; a rerun {frm}")
    elif st.state == "running":
        f.add("redo", f"cell {rid}: running now ({st.note})")


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    lay = C.study_dir(a.study_dir)
    f = Findings()
    cfg = _study(lay, f)
    imported = lay.imported_json.exists()
    if imported:
        f.json_file(lay.imported_json, "it only records where the runs came from: 'varscale import' them "
                                       "again into a new folder to have it back")
        f.add("note", f"{a.study_dir} holds imported runs (imported.json): no tokenizer, tokens, plan or "
                      "cell configs to check, and nothing a rerun would do")
        cells = None
    else:
        cells = _plan(lay, cfg, f)
        _tokenizer(lay, cfg, f)
        _tokens(lay, cfg, f)
    planned = {c.run_id for c in cells} if cells is not None else None
    present = set()
    for d in lay.cell_dirs():
        present.add(d.name)
        _cell(lay.cell(d.name), planned, f, imported)
    if planned is not None:
        new = sorted(planned - present)
        if new:
            f.add("redo", f"{len(new)} planned cell(s) not started ({C.listing(new, 4)}); a rerun trains them")
    f.json_file(lay.fits_json, "delete it ('varscale fit' writes it again)")
    for kind in ("damaged", "stale", "redo", "note"):
        for k, text in f.lines:
            if k == kind:
                print(f"{kind:<8} {text}")
    n_bad, n_stale = f.count("damaged"), f.count("stale")
    verdict = "all files readable" if not n_bad else f"{n_bad} damaged"
    print(f"{a.study_dir}: {f.checked} file(s) checked: {verdict}, {n_stale} stale, {f.count('redo')} thing(s) "
          "a rerun would do; nothing was changed")
    return 1 if n_bad else 0
