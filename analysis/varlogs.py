"""The official VAR trainer's output (github.com/FoundationVision/VAR) as evaluation rows.

What that trainer writes per run, in its ``local_output`` folder (utils/arg_util.py, train.py,
utils/misc.py of the official repository):

- ``log.txt``: a JSON header (``json.dump(..., indent=0)``, so one key per line) with ``cmd``,
  the command line (``--depth=16 --bs=768 --ep=200 ...``; ``--depth`` defaults to 16, ``--ep``
  to 250, ``--bs`` to 768, ``--pn`` to 256, i.e. patch_nums 1..16), then one Python dict per
  epoch: ``ep`` "k/K", ``L_mean`` / ``L_tail`` / ``acc_mean`` / ``acc_tail`` (training) and
  ``vL_mean``, ``vL_tail``, ``vacc_mean``, ``vacc_tail`` (validation; accuracies in %). The
  trainer validates at every 10th epoch and the last (``(ep + 1) % 10 == 0 or ep + 1 == K``)
  and each line repeats the latest validation, so a line's validation belongs to the latest
  validation epoch at or before it (None before the first). The header is rewritten, and the
  file truncated, whenever "1/" occurs in "k/K" (epochs 1, 11, 21, ...), so a finished run's
  log.txt holds only its last epochs: the last two validations at best.
- TensorBoard event files in ``tb-VARd<depth>__pn<pn>__b<bs>ep<K><opt>lr<tblr>wd<twd>/``: the
  same values as ``AR_ep_loss/vL_mean``, ``AR_ep_loss/vL_tail``, ``AR_ep_loss/vacc_mean``,
  ``AR_ep_loss/vacc_tail`` at step k (the epoch, 1-based), written only at validation epochs:
  the whole curve. Read by ``analysis.tfevents``.

Conversion (``evaluations``): vL_mean -> test_loss_avg, vL_tail -> test_loss_last, accuracy
a (%) -> error rate 1 - a/100 (test_err_avg, test_err_last), L_mean -> train_loss; epoch k of
K: images_seen = k x images per epoch (default ImageNet-1k's 1,281,167), tokens_seen =
images_seen x tokens per image (default: the run's patch_nums, 680 at 256 px), step = k x
ceil(images per epoch / batch) (the trainer's iterations per epoch), total_steps from K; N
from the depth (``sizes``; the command passes the parameter count of the preset's model at
that depth, else N = 73728 d^3, the transformer blocks); C = 6 N D; the budget is K epochs of
tokens. A run whose last validation is not at epoch K is not finished (state failed, with the
epoch it stopped at as its message).
"""
from __future__ import annotations

import ast
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import pandas as pd

from .importing import ImportProblem, run_ids
from .tfevents import EventFileError, event_files, scalars

__all__ = ["IMAGENET_TRAIN_IMAGES", "OFFICIAL_DEFAULTS", "PN_ALIASES", "OfficialRun", "read_log_txt", "parse_cmd",
           "log_runs", "tensorboard_runs", "evaluations", "tokens_per_image", "VAL_TAGS", "blocks_count",
           "depths_of", "batch_of", "patch_nums_of"]

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training split: the official trainer's epoch
# the official Args defaults (utils/arg_util.py) for what the cmd may leave out
OFFICIAL_DEFAULTS = {"depth": 16, "ep": 250, "bs": 768, "pn": "1_2_3_4_5_6_8_10_13_16"}
PN_ALIASES = {"256": "1_2_3_4_5_6_8_10_13_16", "512": "1_2_3_4_6_9_13_18_24_32",
              "1024": "1_2_3_4_5_7_9_12_16_21_27_36_48_64"}
VAL_KEYS = ("vL_mean", "vL_tail", "vacc_mean", "vacc_tail")
VAL_TAGS = {f"AR_ep_loss/{k}": k for k in VAL_KEYS + ("L_mean",)}
_TB_NAME = re.compile(r"^tb-VARd(?P<depth>\d+)__pn(?P<pn>[\d_]+)__b(?P<bs>\d+)ep(?P<ep>\d+)")


@dataclass
class OfficialRun:
    """One run of the official trainer: what its files say."""

    name: str  # the run's name before it becomes a run id (its folder, relative to the import root)
    source: Path  # the log.txt or the event folder
    depth: int
    epochs: int  # K
    batch: int  # the global batch
    pn: str  # patch_nums as "1_2_..."
    seed: Optional[int] = None
    evals: dict[int, dict] = field(default_factory=dict)  # validation epoch k -> {vL_mean, ..., L_mean}
    origin: str = ""  # where depth / K / batch came from


def tokens_per_image(pn: str) -> int:
    return sum(int(p) ** 2 for p in PN_ALIASES.get(pn, pn).replace("-", "_").split("_") if p)


def blocks_count(depth: int) -> dict:
    """The paper's N = 73728 d^3 (the transformer blocks at width 64 d), for when no model
    sizes are available."""
    n = 73728 * depth ** 3
    return {"n_params": n, "n_params_blocks": n, "width": 64 * depth, "heads": depth}


# --------------------------------------------------------------------------- log.txt


_NAMES = {"None": None, "True": True, "False": False, "nan": math.nan, "inf": math.inf}


def _literal(node):
    """A Python literal (dicts, lists, numbers, strings, None, nan, inf), as ``repr`` writes them."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float" \
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
        return float(node.args[0].value)  # float('nan')
    raise ValueError(f"{type(node).__name__} is not a literal")


def read_log_txt(path: str | Path) -> tuple[dict, list[tuple[int, dict]]]:
    """(the JSON header, [(line number, the epoch's dict)]) of one official log.txt."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ImportProblem(f"{p} is not a text file (byte {e.start} is not UTF-8)") from None
    start = len(text) - len(text.lstrip())
    try:
        header, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        header, end = None, start
    if not isinstance(header, dict) or "cmd" not in header:
        raise ImportProblem(f"{p} is not a log.txt of the official VAR trainer: it does not open with the JSON "
                            "header that holds 'cmd'")
    first_line = text.count("\n", 0, end) + 1
    rows = []
    for k, line in enumerate(text[end:].split("\n")):
        s = line.strip()
        if not s:
            continue
        lineno = first_line + k
        try:
            d = _literal(ast.parse(s, mode="eval").body)
        except (SyntaxError, ValueError) as e:
            raise ImportProblem(f"line {lineno} of {p} is not an epoch's dict of the official trainer ({e})") from None
        if not isinstance(d, dict) or "ep" not in d:
            raise ImportProblem(f"line {lineno} of {p} is not an epoch's dict of the official trainer (no 'ep')")
        rows.append((lineno, d))
    return header, rows


def parse_cmd(cmd: str) -> dict[str, str]:
    """``--key=value`` and ``--key value`` pairs of a command line ({key: value})."""
    try:
        parts = shlex.split(cmd)
    except ValueError:
        parts = cmd.split()
    out: dict[str, str] = {}
    i = 0
    while i < len(parts):
        a = parts[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(parts) and not parts[i + 1].startswith("--"):
                k, v = a[2:], parts[i + 1]
                i += 1
            else:
                k, v = a[2:], "True"
            out[k.replace("-", "_")] = v
        i += 1
    return out


def _epoch(s, where: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(s))
    if not m:
        raise ImportProblem(f"{where}: 'ep' is {s!r}, not 'k/K'")
    return int(m.group(1)), int(m.group(2))


def _int_opt(opts: Mapping[str, str], key: str, where: str) -> int:
    v = opts.get(key, str(OFFICIAL_DEFAULTS[key]))
    try:
        return int(float(v))
    except ValueError:
        raise ImportProblem(f"{where}: --{key} is '{v}', not a whole number") from None


def _val_epoch(k: int, K: int) -> int:
    """The latest validation epoch at or before epoch k (0: none yet)."""
    return k if (k % 10 == 0 or k == K) else 10 * (k // 10)


def _run_from_header(header: dict, where: str) -> dict:
    opts = parse_cmd(str(header.get("cmd", "")))
    pn = opts.get("pn", OFFICIAL_DEFAULTS["pn"])
    seed = opts.get("seed")
    return {"depth": _int_opt(opts, "depth", where), "epochs": _int_opt(opts, "ep", where),
            "batch": _int_opt(opts, "bs", where), "pn": PN_ALIASES.get(pn, pn),
            "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
            "origin": "the cmd of log.txt" + ("" if "depth" in opts else " (no --depth: the default 16)")}


def _name(folder: Path, root: Path) -> str:
    """A run's name: its folder relative to the import root (parts joined by '-'), or the
    folder's own name when it is the root or lies outside it."""
    base = root.parent if root.is_file() else root
    try:
        rel = folder.relative_to(base)
    except ValueError:
        return folder.resolve().name
    return "-".join(rel.parts) if rel.parts else folder.resolve().name


def log_runs(root: str | Path) -> list[OfficialRun]:
    """Every log.txt at or under ``root`` as a run (named by its folder)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(f for f in root.rglob("log.txt") if f.is_file())
    if not files:
        raise ImportProblem(f"{root}: no log.txt of the official VAR trainer there")
    out = []
    for f in files:
        header, rows = read_log_txt(f)
        info = _run_from_header(header, str(f))
        run = OfficialRun(name=_name(f.parent, root), source=f, **info)
        seen: dict[int, tuple[int, tuple]] = {}
        for lineno, d in rows:
            k, K = _epoch(d["ep"], f"line {lineno} of {f}")
            if K != run.epochs:
                run.epochs = K  # the line's own K wins over the cmd (a resumed run may change --ep)
            vals = {key: d.get(key) for key in VAL_KEYS}
            if any(v is None for v in vals.values()):
                continue
            v = _val_epoch(k, K)
            if v == 0:
                continue
            key = tuple(float(vals[x]) for x in VAL_KEYS)
            if v in seen and seen[v][1] != key:
                raise ImportProblem(f"line {lineno} of {f}: the validation changes between epochs {seen[v][0]} and {k} "
                                    "although the official trainer validates only every 10th epoch and the last; "
                                    "import this run's TensorBoard events instead (--format tensorboard)")
            if v not in seen:
                seen[v] = (k, key)
                run.evals[v] = {**{x: float(vals[x]) for x in VAL_KEYS},
                                "L_mean": float(d["L_mean"]) if v == k and isinstance(d.get("L_mean"), (int, float))
                                else None,
                                "lr": float(d["lr"]) if v == k and isinstance(d.get("lr"), (int, float)) else None}
        out.append(run)
    return out


# --------------------------------------------------------------------------- TensorBoard


def tensorboard_runs(root: str | Path) -> list[OfficialRun]:
    """Every folder of event files at or under ``root`` as a run. Depth, K, batch and patch_nums
    from the log.txt beside the folder (the official layout: local_output/log.txt and
    local_output/tb-VARd.../), else from the folder's official name."""
    root = Path(root)
    files = event_files(root)
    if not files:
        raise ImportProblem(f"{root}: no TensorBoard event files (events.out.tfevents.*) there")
    folders: dict[Path, list[Path]] = {}
    for f in files:
        folders.setdefault(f.parent, []).append(f)
    out = []
    for folder, fs in folders.items():
        info = None
        m = _TB_NAME.match(folder.name)
        log = folder.parent / "log.txt"
        if log.is_file():
            try:
                header, _ = read_log_txt(log)
                tb = str(header.get("tb_log_dir_path", ""))
                if not m or not tb or Path(tb).name == folder.name:
                    info = _run_from_header(header, str(log))
            except ImportProblem:
                info = None
        if info is None and m:
            info = {"depth": int(m["depth"]), "epochs": int(m["ep"]), "batch": int(m["bs"]), "pn": m["pn"],
                    "seed": None, "origin": "the folder name"}
        if info is None:
            raise ImportProblem(f"{folder}: nothing names the run's depth: neither a log.txt of the official trainer "
                                "beside it nor the official folder name tb-VARd<depth>__pn<pn>__b<bs>ep<K>...")
        try:
            sc = scalars(fs, VAL_TAGS)
        except EventFileError as e:
            raise ImportProblem(str(e)) from None
        vals = {VAL_TAGS[t]: v for t, v in sc.items()}
        missing = [k for k in VAL_KEYS if k not in vals]
        if missing:
            raise ImportProblem(f"{folder}: the event files have no AR_ep_loss/{missing[0]} (the official trainer's "
                                "validation); the tags are: " + (", ".join(sorted(sc)) or "none of AR_ep_loss/*"))
        epochs = sorted(set(vals["vL_mean"]) & set(vals["vL_tail"]) & set(vals["vacc_mean"]) & set(vals["vacc_tail"]))
        # the official layout names the run by its output folder (local_output/tb-VARd.../)
        run = OfficialRun(name=_name(folder.parent if m else folder, root), source=folder, **info)
        for k in epochs:
            run.evals[k] = {**{x: vals[x][k] for x in VAL_KEYS}, "L_mean": vals.get("L_mean", {}).get(k), "lr": None}
        out.append(run)
    return out


# --------------------------------------------------------------------------- rows


Sizes = Callable[[int], Optional[Mapping[str, int]]]


def evaluations(runs: list[OfficialRun], images_per_epoch: int = IMAGENET_TRAIN_IMAGES,
                tokens_per_img: Optional[int] = None, sizes: Optional[Sizes] = None,
                sizes_of: str = "the preset's model") -> tuple[pd.DataFrame, list[str]]:
    """The runs' validations as evaluation rows (METRICS_SCHEMA columns) and the notes that say
    how each quantity was derived; ``attrs["state"]`` / ``attrs["message"]`` per run id.
    ``sizes``: depth -> parameter counts (``sizes_of`` names them in the note); None: N = 73728 d^3."""
    notes = []
    if not runs:
        raise ImportProblem("no runs to import")
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # two runs in one output folder: the depth (and order) tells them apart
        names = [f"{n}-d{r.depth}" if names.count(n) > 1 else n for n, r in zip(names, runs)]
        names = [f"{n}-{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    ids = run_ids(names)
    sizes_fn = sizes or blocks_count
    notes.append(f"N = the parameter count of {sizes_of} at each depth" if sizes is not None else
                 "N = 73728 d^3 (transformer blocks at width 64 d; no model sizes available)")
    rows, states, messages = [], {}, {}
    for rid, r in zip(ids, runs):
        if not r.evals:
            raise ImportProblem(f"{r.source}: no validation in it (the official trainer validates every 10th epoch "
                                "and the last)")
        s = sizes_fn(r.depth)
        if not s:
            raise ImportProblem(f"{r.source}: no model size for depth {r.depth}")
        tpi = tokens_per_img or tokens_per_image(r.pn)
        iters = -(-images_per_epoch // r.batch)
        N = float(s["n_params"])
        budget_tokens = float(r.epochs) * images_per_epoch * tpi
        for k in sorted(r.evals):
            e = r.evals[k]
            images = k * images_per_epoch
            D = images * tpi
            rows.append({
                "run_id": rid, "depth": r.depth, "width": s.get("width"), "heads": s.get("heads"), "seed": r.seed,
                "n_params": N, "n_params_blocks": s.get("n_params_blocks"),
                "n_params_nonembedding": s.get("n_params_nonembedding"),
                "step": k * iters, "total_steps": r.epochs * iters, "images_seen": images, "tokens_seen": D,
                "flops": 6.0 * N * D, "flops_6nd": 6.0 * N * D, "lr": e.get("lr"),
                "budget_tokens": budget_tokens, "budget_flops": 6.0 * N * budget_tokens, "budget_unit": "tokens",
                "test_loss_avg": e["vL_mean"], "test_loss_last": e["vL_tail"],
                "test_err_avg": 1.0 - e["vacc_mean"] / 100.0, "test_err_last": 1.0 - e["vacc_tail"] / 100.0,
                "train_loss": e.get("L_mean"),
            })
        last = max(r.evals)
        states[rid] = "done" if last >= r.epochs else "failed"
        messages[rid] = (f"imported from {r.source} (depth, epochs and batch from {r.origin})" if last >= r.epochs else
                         f"imported from {r.source}: its last validation is at epoch {last} of {r.epochs}")
    tpis = sorted({tokens_per_img or tokens_per_image(r.pn) for r in runs})
    notes.append(f"D = epochs x {images_per_epoch:,} images x {', '.join(map(str, tpis))} tokens per image; "
                 f"step = epochs x ceil({images_per_epoch:,} / batch); C = 6 N D; budget = K epochs of tokens")
    notes.append("test_loss_avg = vL_mean, test_loss_last = vL_tail, test_err = 1 - vacc / 100")
    df = pd.DataFrame(rows)
    for c in ("width", "heads", "seed", "n_params_blocks", "n_params_nonembedding", "lr", "train_loss"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df.attrs["state"], df.attrs["message"] = states, messages
    unfinished = [rid for rid, s in states.items() if s != "done"]
    if unfinished:
        notes.append(f"{len(unfinished)} run(s) end before their last epoch (not finished): " + ", ".join(unfinished))
    return df, notes


def patch_nums_of(runs: list[OfficialRun]) -> Optional[tuple[int, ...]]:
    """The runs' patch_nums when they share them."""
    pns = {tuple(int(x) for x in PN_ALIASES.get(r.pn, r.pn).replace("-", "_").split("_") if x) for r in runs}
    return pns.pop() if len(pns) == 1 else None


def depths_of(runs: list[OfficialRun]) -> list[int]:
    return sorted({r.depth for r in runs})


def batch_of(runs: list[OfficialRun]) -> Optional[int]:
    """The runs' global batch when they share one."""
    b = {r.batch for r in runs}
    return b.pop() if len(b) == 1 else None
