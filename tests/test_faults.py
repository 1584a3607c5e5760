"""Fault injection: every kind of file a tiny study reads back, damaged in each way, in a finished
and in an interrupted study; every command that reads it ends in a fallback or one sentence
(exit 2), never a traceback, and no metric row is lost or duplicated.

Damage kinds: ``truncate`` (the first half), ``zero`` (no bytes), ``random`` (as many random
bytes), ``dir`` (a folder where the file was), ``delete``, ``list`` (a JSON list where an object
belongs). A full disk is ``OSError(ENOSPC)`` from the atomic write or from DeepSpeed's save.

One tiny study (``test_trainer_kit.make_study``: fabricated tokens, 12 steps, checkpoints at 4,
8, 12, evaluations at 2, 5, 12) is trained once per session: ``finished`` to the end and
``interrupted`` killed (``os._exit``) right after its checkpoint at step 8. Each case works on a
copy. The resumes run in one subprocess (``train_cell`` per case, DeepSpeed imported once); the
commands run in-process through ``varscale.cli.main`` or as ``python -m varscale.cli``.
The slow marker holds the rest of the damage-kind x file combinations.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_trainer_kit import PY, ROOT, assert_same_rows, env, make_study, metrics

KINDS = ("truncate", "zero", "random", "dir")
CK4, CK8, CK12 = "checkpoints/step00000004", "checkpoints/step00000008", "checkpoints/step00000012"
STATES = "mp_rank_00_model_states.pt"


def damage(path: Path, kind: str) -> None:
    path = Path(path)
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(max(path.stat().st_size, 64)))
    elif kind == "dir":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("a folder where a file belongs")
    elif kind == "delete":
        path.unlink()
    elif kind == "list":
        path.write_text("[1, 2]")
    else:
        raise ValueError(kind)


PREPARE = """
import os, sys
from varscale.train import checkpoint as K
from varscale.train.trainer import train_cell
finished, interrupted = sys.argv[1:]
assert train_cell(finished) == 0
save = K.Checkpoints.save
def killed_after_8(self, step, *a, **k):
    save(self, step, *a, **k)
    if step == 8:
        os._exit(137)  # as a SIGKILL right after the checkpoint: no DONE, parts 0 and 1 written
K.Checkpoints.save = killed_after_8
train_cell(interrupted)
"""


class Tiny:
    def __init__(self, root: Path):
        self.root = root
        _, (self.cell,) = make_study(root / "finished")
        self.rid = self.cell.run_id
        shutil.copytree(root / "finished", root / "interrupted")
        r = subprocess.run([PY, "-c", PREPARE, str(self.cell_dir("finished")), str(self.cell_dir("interrupted"))],
                           env=env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 137, r.stdout[-2000:] + r.stderr[-3000:]
        self.ref = metrics(self.cell_dir("finished"))
        assert list(self.ref["step"]) == self.cell.eval_steps == [2, 5, 12]

    def cell_dir(self, which: str) -> Path:
        return self.root / which / "cells" / self.rid

    def copy(self, which: str, dest: Path) -> Path:
        """A copy of the finished or interrupted study at ``dest``; its cell folder (whose
        config.json names the copy as its study, as 'varscale run' there would write it)."""
        shutil.copytree(self.root / which, dest)
        cfg = dest / "cells" / self.rid / "config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "study_dir": str(dest)}, indent=2))
        return dest / "cells" / self.rid


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("faults"))


def same_metrics(tiny: Tiny, cell_dir: Path) -> None:
    """Every evaluation once (none lost, none duplicated), with the undisturbed run's numbers."""
    parts = sorted(p.name for p in (cell_dir / "metrics").iterdir())
    assert parts == [f"part-{i:06d}.parquet" for i in range(len(tiny.cell.eval_steps))], parts
    a, b = tiny.ref, metrics(cell_dir)
    assert list(b["step"]) == list(a["step"])
    assert_same_rows(a, b)


def full_checkpoints(cell_dir: Path) -> list[str]:
    return sorted(d.name for d in (cell_dir / "checkpoints").iterdir()
                  if d.is_dir() and any(f.name != "weights.pt" for f in d.iterdir()))


# --------------------------------------------------------------------------- resumes (one subprocess)

RESUME = """
import contextlib, errno, json, os, sys
from pathlib import Path
import deepspeed.runtime.engine as DE
from varscale import schema
from varscale.train.trainer import train_cell

full = {"name": None}  # the file (or checkpoint tag) whose write finds the disk full
write, save = schema._atomic_write, DE.DeepSpeedEngine.save_checkpoint
def atomic_write(path, data):
    if full["name"] == Path(path).name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(path, data)
def ds_save(self, save_dir, tag=None, **kw):
    if full["name"] == tag:  # half a checkpoint on disk, then the disk is full
        (Path(save_dir) / tag).mkdir(parents=True, exist_ok=True)
        (Path(save_dir) / tag / "mp_rank_00_model_states.pt").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save(self, save_dir, tag=tag, **kw)
schema._atomic_write, DE.DeepSpeedEngine.save_checkpoint = atomic_write, ds_save
out = {}
for case in json.loads(Path(sys.argv[1]).read_text()):
    rcs = []
    for i, name in enumerate([case.get("full")] + ([None] if case.get("full") else [])):
        full["name"] = name
        with open(Path(case["cell"]) / f"run{i}.log", "w") as f, contextlib.redirect_stdout(f), \\
                contextlib.redirect_stderr(f):
            rcs.append(train_cell(case["cell"]))
        status = json.loads((Path(case["cell"]) / "status.json").read_text())
        rcs.append(status)
    out[case["name"]] = rcs
print("RESULT " + json.dumps(out))
"""

# name -> (study, [(file in the cell folder, damage)], the checkpoint it resumes from (None: step 0),
#          a phrase of the fallback note)
RESUMES = {
    **{f"newest-states-{k}": ("interrupted", [(f"{CK8}/{STATES}", k)], "step00000004", "step00000008: ")
       for k in (*KINDS, "delete")},
    **{f"newest-weights-{k}": ("interrupted", [(f"{CK8}/weights.pt", k)], "step00000004", "weights.pt")
       for k in ("truncate",)},
    **{f"latest-json-{k}": ("interrupted", [("checkpoints/LATEST.json", k)], "step00000008", "LATEST.json is damaged")
       for k in (*KINDS, "list")},
    "manifest-list": ("interrupted", [(f"{CK8}/manifest.json", "list")], "step00000004", "manifest.json"),
    "both-checkpoints": ("interrupted", [(f"{CK8}/{STATES}", "truncate"), (f"{CK4}/{STATES}", "random")], None,
                         "training again from step 0"),
    "newest-and-latest": ("interrupted", [(f"{CK8}/{STATES}", "zero"), ("checkpoints/LATEST.json", "random")],
                          "step00000004", "step00000008: "),
    **{f"part0-{k}": ("interrupted", [("metrics/part-000000.parquet", k)], "step00000008", None)
       for k in (*KINDS, "delete")},
    "part1-and-newest": ("interrupted", [("metrics/part-000001.parquet", "random"), (f"{CK8}/{STATES}", "truncate")],
                         "step00000004", "step00000008: "),
    **{f"finished-part2-{k}": ("finished", [("metrics/part-000002.parquet", k)], None, None) for k in ("truncate", "dir")},
    "finished-part0-delete": ("finished", [("metrics/part-000000.parquet", "delete")], None, None),
}
SLOW_RESUMES = {"newest-states-dir", "latest-json-truncate", "latest-json-dir",
                "part0-zero", "part0-dir", "finished-part2-dir"}
# name -> (study, file whose write finds the disk full)
DISK_FULL = {"disk-full-part": ("interrupted", "part-000002.parquet"),
             "disk-full-checkpoint": ("interrupted", "step00000012"),
             "disk-full-weights": ("interrupted", "weights.pt")}
# name -> (study, file, damage, a phrase of the cell's failure message)
INPUTS = {
    "tokens-idx-truncate": ("interrupted", "tokens/train_idx.npy", "truncate", "train_idx.npy is damaged"),
    "tokens-meta-list": ("interrupted", "tokens/meta.json", "list", "meta.json is damaged"),
    "tokenizer-random": ("interrupted", "tokenizer/vqvae.pt", "random", "vqvae.pt is damaged"),
}


def _case_names(session) -> list[str]:
    """The cases the selected tests look at (all of them, slow ones included, under -m slow)."""
    names = [*RESUMES, *DISK_FULL, *INPUTS, "stray-temp-files"]
    wanted = {getattr(item, "callspec", None) and item.callspec.params.get("name") for item in session.items}
    if any(item.name.startswith("test_stray_temp_files") for item in session.items):
        wanted.add("stray-temp-files")
    return [n for n in names if n in wanted]


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_RESUMES else n for n in names]


@pytest.fixture(scope="session")
def resumed(tiny, tmp_path_factory, request):
    """Every resume case prepared, then all of them run by one subprocess: {name: (cell, [rc, status, ...])}."""
    base = tmp_path_factory.mktemp("resumes")
    cases, cells = [], {}
    for name in _case_names(request.session):
        if name in RESUMES:
            which, hits = RESUMES[name][0], RESUMES[name][1]
        elif name in DISK_FULL:
            which, hits = DISK_FULL[name][0], []
        elif name in INPUTS:
            which, f, kind, _ = INPUTS[name]
            hits = [(f"../../{f}", kind)]
        else:
            which, hits = "interrupted", []
        cell = tiny.copy(which, base / name)
        for f, kind in hits:
            damage(cell / f, kind)
        if name == "stray-temp-files":  # what a kill during an atomic write leaves behind
            for d in ("checkpoints/step00000007", CK4, "checkpoints"):
                (cell / d / ".weights.pt.k1ll3d").write_bytes(b"\0" * 1000)
        cells[name] = cell
        cases.append({"name": name, "cell": str(cell), "full": DISK_FULL.get(name, (None, None))[1]})
    spec = base / "cases.json"
    spec.write_text(json.dumps(cases))
    r = subprocess.run([PY, "-c", RESUME, str(spec)], env=env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    return {n: (cells[n], out[n]) for n in out}


def _logs(cell: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(cell.glob("run*.log")))


@pytest.mark.parametrize("name", _params(list(RESUMES)))
def test_damaged_checkpoint_or_part_resumes_to_the_same_metrics(name, resumed, tiny):
    cell, (rc, status) = resumed[name]
    which, hits, frm, phrase = RESUMES[name]
    log = _logs(cell)
    assert rc == 0 and "Traceback" not in log, log[-3000:]
    assert status["state"] == "done"
    same_metrics(tiny, cell)
    assert len(full_checkpoints(cell)) <= 2
    if which == "finished":  # a finished cell is not trained again: the part comes from the copy
        assert "written again from the copy in checkpoint step00000012" in log
        return
    assert status.get("resumed_from") == frm
    if phrase:
        assert phrase in status["fallback"] and phrase in log, status
        assert "damaged" in status["fallback"]
    else:
        assert status.get("fallback") is None
    if name.startswith("part0"):
        assert "part-000000.parquet (evaluation at step 2) was" in log and "written again" in log
    if frm is None:
        assert "resumed from" not in log


@pytest.mark.parametrize("name", list(DISK_FULL))
def test_a_full_disk_fails_the_cell_with_a_reason_and_a_rerun_finishes(name, resumed, tiny):
    cell, (rc, status, rc2, status2) = resumed[name]
    what = DISK_FULL[name][1]
    assert rc == 1 and status["state"] == "failed"
    assert status["message"].startswith("the disk is full: writing ") and what in status["message"], status
    assert "free space" in status["message"]
    log = (cell / "run0.log").read_text()
    assert "Traceback" not in log and "the disk is full" in log
    if what.startswith("step"):  # the half-written checkpoint is removed, the space given back
        assert not (cell / CK12).exists() or (cell / CK12 / "manifest.json").exists()
    assert rc2 == 0 and status2["state"] == "done", (cell / "run1.log").read_text()[-2000:]
    same_metrics(tiny, cell)


@pytest.mark.parametrize("name", list(INPUTS))
def test_a_damaged_input_fails_the_cell_in_one_sentence(name, resumed):
    cell, (rc, status) = resumed[name]
    phrase = INPUTS[name][3]
    log = _logs(cell)
    assert rc == 1 and status["state"] == "failed" and "Traceback" not in log
    assert phrase in status["message"] and ("varscale tokenize" in status["message"]
                                             or "varscale tokenizer train" in status["message"]), status
    assert [ln for ln in log.splitlines() if "failed:" in ln] == [f"[{cell.name}] failed: {status['message']}"]


def test_stray_temp_files_of_a_killed_write_are_removed(resumed, tiny):
    cell, (rc, status) = resumed["stray-temp-files"]
    assert rc == 0
    assert not [p for p in (cell / "checkpoints").rglob(".*")]
    assert full_checkpoints(cell) == ["step00000008", "step00000012"]
    same_metrics(tiny, cell)


# --------------------------------------------------------------------------- commands

def _one_line(err: str, prog: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(prog + ": "), lines[0]
    return lines[0]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "varscale.cli", *argv], env=env(), capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.fixture
def finished(tiny, tmp_path) -> Path:
    return tiny.copy("finished", tmp_path / "s")


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_weights_stop_sample_edit_quality_in_one_sentence(kind, finished, capsys):
    from varscale.cli import main

    study, rid = finished.parent.parent, finished.name
    w = finished / CK12 / "weights.pt"
    damage(w, kind)
    argvs = {"sample": ["--n", "1", "--classes", "0"], "edit": [],
             "quality": ["--per-class", "1", "--classifier-steps", "1"]}
    if kind not in ("truncate", "dir"):
        argvs = {"sample": argvs["sample"]}  # slow tests run the rest
    for cmd, extra in argvs.items():
        cell_arg = ["--cell", rid]
        assert main([cmd, str(study), *cell_arg, *extra]) == 2, cmd
        line = _one_line(capsys.readouterr().err, f"varscale {cmd}")
        assert f"{w} is damaged" in line and "--step" in line, line
    # another kept step still samples
    assert main(["sample", str(study), "--cell", rid, "--n", "1", "--classes", "0", "--step", "8"]) == 0
    assert (study / "samples" / rid).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ("zero", "random"))
@pytest.mark.parametrize("cmd", ("edit", "quality"))
def test_damaged_weights_every_kind_every_command(cmd, kind, finished, capsys):
    from varscale.cli import main

    study, rid = finished.parent.parent, finished.name
    damage(finished / CK12 / "weights.pt", kind)
    extra = ["--per-class", "1", "--classifier-steps", "1"] if cmd == "quality" else []
    assert main([cmd, str(study), "--cell", rid, *extra]) == 2
    assert "weights.pt is damaged" in _one_line(capsys.readouterr().err, f"varscale {cmd}")


@pytest.mark.parametrize("kind", ("truncate", "list", "dir"))
def test_damaged_latest_json_samples_the_newest_kept_weights(kind, finished, capsys):
    from varscale.cli import main

    study, rid = finished.parent.parent, finished.name
    damage(finished / "checkpoints" / "LATEST.json", kind)
    assert main(["sample", str(study), "--cell", rid, "--n", "1", "--classes", "0"]) == 0
    assert (study / "samples" / rid / "samples-step00000012-seed0.png").exists()  # the newest kept
    assert "Traceback" not in capsys.readouterr().err
    assert main(["doctor", str(study)]) == 1
    assert "LATEST.json" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ("truncate", "random"))
def test_damaged_tokenizer_stops_sample_in_one_sentence(kind, finished, capsys):
    from varscale.cli import main

    study, rid = finished.parent.parent, finished.name
    vq = study / "tokenizer" / "vqvae.pt"
    damage(vq, kind)
    assert main(["sample", str(study), "--cell", rid, "--n", "1"]) == 2
    line = _one_line(capsys.readouterr().err, "varscale sample")
    assert f"{vq} is damaged" in line and "varscale tokenizer train" in line


def test_damaged_token_cache_is_encoded_again_by_tokenize(finished, capsys):
    from varscale.cli import main
    from varscale.tokenizer.cache import cache_damage

    study = finished.parent.parent
    damage(study / "tokens" / "val_idx.npy", "truncate")
    damage(study / "tokens" / "train_labels.npy", "dir")
    assert cache_damage(study / "tokens")[0].name == "train_labels.npy"
    assert main(["tokenize", str(study)]) == 0
    assert "rebuilding" in capsys.readouterr().out
    assert cache_damage(study / "tokens") is None


@pytest.mark.parametrize("kind", ["truncate", *(pytest.param(k, marks=pytest.mark.slow) for k in ("random", "dir"))])
def test_damaged_part_fit_warns_naming_it_and_run_writes_it_again(kind, finished, tiny):
    study = finished.parent.parent
    part = finished / "metrics" / "part-000001.parquet"
    damage(part, kind)
    r = _cli("fit", str(study), "--n-boot", "0", "--quiet")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and warn[0].startswith("varscale fit: warning: ") and f"{part} is damaged" in warn[0], r.stderr
    assert "varscale run" in warn[0]
    fits = json.loads((study / "report" / "fits.json").read_text())
    assert fits["rows"] == len(tiny.cell.eval_steps) - 1 and fits["damaged_parts"]
    r = _cli("run", str(study), "--only-cells", "--progress", "off")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "part-000001.parquet (evaluation at step 5) was" in r.stdout and "written again" in r.stdout
    same_metrics(tiny, finished)


@pytest.mark.slow
def test_damaged_part_and_fits_json_figures_warn_and_draw(finished):
    study = finished.parent.parent
    assert _cli("fit", str(study), "--n-boot", "0", "--quiet").returncode == 0
    (study / "report" / "fits.json").write_text("[1, 2]")
    damage(finished / "metrics" / "part-000000.parquet", "random")
    r = _cli("figures", str(study), "--formats", "png")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warn) == 2 and all(ln.startswith("varscale figures: warning: ") for ln in warn), r.stderr
    assert any("part-000000.parquet is damaged" in ln for ln in warn)
    assert any("fits.json is damaged" in ln for ln in warn)
    assert (study / "report" / "fig5_vs_N.png").exists()


@pytest.mark.parametrize("target", ("LATEST", "states", "part"))
def test_status_and_doctor_read_an_interrupted_study_with_damage(target, tiny, tmp_path, capsys):
    from varscale.cli import main

    cell = tiny.copy("interrupted", tmp_path / "s")
    study = cell.parent.parent
    f = {"LATEST": "checkpoints/LATEST.json", "states": f"{CK8}/{STATES}", "part": "metrics/part-000000.parquet"}
    damage(cell / f[target], "random")
    assert main(["status", str(study)]) == 0
    out, err = capsys.readouterr()
    assert tiny.rid in out and "Traceback" not in err
    main(["doctor", str(study)])
    out = capsys.readouterr().out
    assert "nothing was changed" in out


def test_run_resumes_an_interrupted_study_past_a_damaged_checkpoint(tiny, tmp_path):
    """The whole path: ``varscale run`` -> executor -> worker -> trainer, newest checkpoint truncated."""
    cell = tiny.copy("interrupted", tmp_path / "s")
    damage(cell / CK8 / STATES, "truncate")
    r = _cli("run", str(cell.parent.parent), "--only-cells", "--progress", "off")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    status = json.loads((cell / "status.json").read_text())
    assert status["resumed_from"] == "step00000004" and "step00000008" in status["fallback"]
    same_metrics(tiny, cell)


def test_a_copied_study_trains_on_its_own_tokens(tiny, tmp_path, capsys):
    """A study folder copied as it is (its config.json still naming the original folder) and the
    original's tokens and tokenizer then deleted: the copy's cell resumes on the copy's own files
    to the undisturbed run's metrics; doctor names the old path in the copy, not in the original."""
    from varscale.cli import main

    orig = tiny.copy("interrupted", tmp_path / "orig").parent.parent
    shutil.copytree(orig, tmp_path / "copy")
    cell = tmp_path / "copy" / "cells" / tiny.rid
    assert json.loads((cell / "config.json").read_text())["study_dir"] == str(orig)
    main(["doctor", str(orig)])
    assert "names study folder" not in capsys.readouterr().out
    main(["doctor", str(tmp_path / "copy")])
    stale = [ln for ln in capsys.readouterr().out.splitlines() if "names study folder" in ln]
    assert stale == [f"stale    {cell / 'config.json'}: names study folder {orig}, but the cell sits in "
                     f"{tmp_path / 'copy'} (a copied or moved study); it reads this folder's tokenizer and "
                     "tokens, and 'varscale run' writes the path again"]
    shutil.rmtree(orig / "tokens")
    shutil.rmtree(orig / "tokenizer")
    r = _cli("train", str(cell))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resumed from step00000008" in r.stdout
    same_metrics(tiny, cell)


# --------------------------------------------------------------------------- the checks themselves

def test_torch_and_parquet_checks_catch_a_flipped_byte(tiny, tmp_path):
    from varscale.schema import parquet_problem, torch_file_problem

    w = tmp_path / "weights.pt"
    b = bytearray((tiny.cell_dir("finished") / CK12 / "weights.pt").read_bytes())
    w.write_bytes(b)
    assert torch_file_problem(w) is None
    b[len(b) // 2] ^= 0xFF  # torch.load would load this silently
    w.write_bytes(b)
    assert "CRC" in torch_file_problem(w)
    p = tmp_path / "part.parquet"
    b = bytearray((tiny.cell_dir("finished") / "metrics" / "part-000000.parquet").read_bytes())
    p.write_bytes(b)
    assert parquet_problem(p) is None
    b[len(b) // 3] ^= 0x10
    p.write_bytes(b)
    assert parquet_problem(p) is not None


def test_atomic_write_on_a_full_disk_is_disk_full_naming_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from varscale import schema

    p = tmp_path / "status.json"
    schema.atomic_write_json(p, {"a": 1})

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(schema.os, "write", full, raising=True)
    monkeypatch.setattr(schema.os, "fdopen", lambda fd, mode: _Full(fd))
    with pytest.raises(schema.DiskFull) as e:
        schema.atomic_write_json(p, {"a": 2})
    assert str(p) in str(e.value) and "disk is full" in str(e.value) and e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"a": 1}  # the old content is kept
    assert [q.name for q in tmp_path.iterdir()] == ["status.json"]  # no dot-file left


class _Full:
    def __init__(self, fd):
        import os

        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def write(self, data):
        import errno
        import os

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_two_ranks_agree_on_skipping_a_checkpoint_with_a_missing_shard(tmp_path):
    """ZeRO-2 on two ranks: rank 1's optimizer shard of the newest checkpoint deleted; rank 0 checks
    the files, both ranks resume from the previous checkpoint and end where they did."""
    from varscale.train.engine import free_port
    from test_trainer_kit import TRAIN

    _, (cell,) = make_study(tmp_path, model={"class_dropout": 0.0, "drop_path": False}, training={"zero_stage": 2})
    d = tmp_path / "cells" / cell.run_id

    def run():
        return subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               str(free_port()), "--no-python", *TRAIN, str(d)], env=env(), capture_output=True,
                              text=True, timeout=600)

    r = run()
    assert r.returncode == 0, r.stderr[-3000:]
    ref = metrics(d)
    (d / CK12 / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    for f in ("DONE", "record.parquet"):
        (d / f).unlink()
    r = run()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    status = json.loads((d / "status.json").read_text())
    assert status["resumed_from"] == "step00000008"
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt is missing" in status["fallback"]
    b = metrics(d)
    assert list(b["step"]) == list(ref["step"])
    np.testing.assert_allclose(b["test_loss_avg"], ref["test_loss_avg"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(b["train_loss"], ref["train_loss"], rtol=0, atol=1e-5)
