"""``varscale import <source> <new-study-dir>``: runs trained elsewhere as an analysis-only study.

The source is a table (CSV or parquet; one row per evaluation, or one per finished run) whose
columns are named by the options below or by a YAML / JSON file (``--columns FILE``, keys
run, n, depth, tokens, steps, batch, tokens_per_image, flops, step, loss, loss_avg, loss_last,
err_avg, err_last, budget, budget_unit; the options win), or the official VAR trainer's output
(``--format var-log``: its log.txt files; ``--format tensorboard``: its event files; a folder
of runs too; ``auto`` tells them apart). It writes the new study folder in varscale's own
format (``analysis.importstudy``): metrics parts, run records, finished runs marked done, a
study.yaml, and imported.json, so that ``varscale fit / predict / allocate / figures / check``
and the notebooks read it like a trained study, and ``varscale run`` refuses it.

Derived quantities: N from the depth on ``--preset`` (the parameter count of varscale's model
at that depth) when only a depth is given; D from ``--steps`` x ``--batch`` x
``--tokens-per-image``, or C / (6 N) when only FLOPs are given; C = 6 N D when no FLOPs are
given; a lone ``--loss`` is L_avg (test_loss_avg). The official logs: vL_mean / vL_tail ->
test_loss_avg / test_loss_last, error = 1 - accuracy / 100, D = epochs x ``--images-per-epoch``
x tokens per image (the run's patch_nums). A bad table is one sentence naming the row and the
column; the folder must be new (or empty).
"""
from __future__ import annotations

import sys
from pathlib import Path

from varscale.cli import common as C

PROG = "varscale import"
FORMATS = ("auto", "table", "var-log", "tensorboard")
TABLE_ONLY = ("run", "n", "depth", "tokens", "steps", "batch", "flops", "step", "loss", "loss_avg", "loss_last",
              "err_avg", "err_last", "budget", "budget_unit", "columns")
DEFAULT_PRESET = "imagenet256"


def build_parser():
    from analysis.varlogs import IMAGENET_TRAIN_IMAGES

    ap = C.parser(PROG, description=__doc__)
    ap.add_argument("source", metavar="SOURCE",
                    help="a table (.csv, .parquet), an official log.txt or event file, or a folder of runs")
    ap.add_argument("study_dir", metavar="STUDY", help="the new study folder (absent or empty)")
    ap.add_argument("--format", choices=FORMATS, default="auto",
                    help="what SOURCE is; auto: event files -> tensorboard, log.txt -> var-log, else a table")
    ap.add_argument("--name", help="the study's name (default: the folder's name)")
    t = ap.add_argument_group("table columns (a table source; see --columns)")
    t.add_argument("--columns", metavar="FILE",
                   help="a YAML or JSON mapping of the keys below to column names (default: none, the options only)")
    t.add_argument("--run", metavar="COL", help="the run id (default: every row is its own run)")
    t.add_argument("--n", metavar="COL", help="the parameter count N (default: from --depth)")
    t.add_argument("--depth", metavar="COL",
                   help="the VAR depth; without --n, N is the --preset model's at that depth (default: none)")
    t.add_argument("--tokens", metavar="COL",
                   help="training tokens D seen at the evaluation (default: from --steps, or from --flops)")
    t.add_argument("--steps", metavar="COL",
                   help="training steps done: D = steps x --batch x --tokens-per-image (default: none)")
    t.add_argument("--batch", type=int, metavar="N", help="images per step, with --steps (default: none)")
    t.add_argument("--flops", metavar="COL",
                   help="training FLOPs C (default: C = 6 N D; alone, without --tokens/--steps: D = C / 6N)")
    t.add_argument("--step", metavar="COL", help="the evaluation's step: a table with one row per evaluation "
                                                 "(default: one row per finished run)")
    t.add_argument("--loss", metavar="COL", help="a loss, stored as test_loss_avg (L_avg) (default: none)")
    t.add_argument("--loss-avg", metavar="COL", help="the all-scale loss, test_loss_avg (default: none)")
    t.add_argument("--loss-last", metavar="COL", help="the last-scale loss, test_loss_last (default: none)")
    t.add_argument("--err-avg", metavar="COL",
                   help="the all-scale error rate in [0, 1], test_err_avg (default: none)")
    t.add_argument("--err-last", metavar="COL",
                   help="the last-scale error rate in [0, 1], test_err_last (default: none)")
    t.add_argument("--budget", metavar="COL", help="each run's budget (default: its final tokens, or FLOPs)")
    t.add_argument("--budget-unit", choices=["tokens", "flops"],
                   help="the unit of the budgets (default: tokens, or the --columns file's)")
    o = ap.add_argument_group("sizes and the official trainer's logs")
    o.add_argument("--preset",
                   help=f"the model preset whose depth gives N (and that predict / allocate size depths with) "
                        f"(default: {DEFAULT_PRESET}; for the official logs, the preset with the runs' patch_nums)")
    o.add_argument("--tokens-per-image", type=int, metavar="N",
                   help="tokens per image: with --steps for a table; for the official logs (default: the "
                        "run's patch_nums, 680 for 256 px)")
    o.add_argument("--images-per-epoch", type=int, metavar="N",
                   help=f"images in one epoch of the official trainer (default: ImageNet-1k's "
                        f"{IMAGENET_TRAIN_IMAGES:,})")
    return ap


def model_sizes(preset: str):
    """depth -> {n_params, n_params_blocks, n_params_nonembedding, width, heads} of the preset's
    VAR at that depth (``varscale.models.spec``, no torch); None where that module is absent."""
    try:
        from varscale.models.spec import param_counts, var_config
    except ImportError:
        return None

    def sizes(depth: int) -> dict:
        cfg = var_config(preset, depth)
        return {**param_counts(cfg), "width": cfg.width, "heads": cfg.heads}

    return sizes


def nearest_depths(sizes, n_values, top: int = 128) -> list[int]:
    """The depths whose model is nearest in size (log N) to each of the runs' N."""
    import numpy as np

    ds = np.arange(1, top + 1)
    logn = np.log([float(sizes(int(d))["n_params"]) for d in ds])
    return sorted({int(ds[np.argmin(np.abs(logn - np.log(float(n))))]) for n in set(n_values)})


def _preset(name: str) -> tuple[dict, object]:
    """(the preset's name, resolution and classes for study.yaml, its sizes by depth)."""
    from varscale.models.presets import PRESETS

    p = PRESETS[name]
    return {"name": p.name, "resolution": p.resolution, "num_classes": p.num_classes}, model_sizes(name)


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from analysis import importing as I
    from analysis import importstudy as W
    from varscale.models.presets import PRESETS

    C.require(a.preset is None or a.preset in PRESETS,
              f"--preset {a.preset}: no such preset; valid: {', '.join(PRESETS)}")
    C.positive("--batch", a.batch)
    C.positive("--tokens-per-image", a.tokens_per_image)
    C.positive("--images-per-epoch", a.images_per_epoch)
    src = Path(a.source)
    C.require(src.exists(), f"{a.source}: no such file or folder")
    try:
        W.check_target(a.study_dir)
        fmt = I.detect_format(src) if a.format == "auto" else a.format
        if fmt == "table":
            C.require(a.images_per_epoch is None,
                      "--images-per-epoch applies to the official trainer's logs, not to a table")
            preset, sizes = _preset(a.preset or DEFAULT_PRESET)
            given = {k: getattr(a, k) for k in TABLE_ONLY if k != "columns"}
            given["tokens_per_image"] = a.tokens_per_image
            cols = I.column_map(a.columns, **given)
            t = I.read_table(src)
            evals, notes = I.table_evaluations(t, cols, sizes)
            depths = evals["depth"].dropna().astype(int).unique().tolist()
            if not depths and sizes is not None:
                depths = nearest_depths(sizes, evals["n_params"].unique())
            cfg = W.default_config(evals, preset, depths, cols.get("batch"))
            columns = cols
        else:
            from analysis import varlogs as V

            given = [k for k in TABLE_ONLY if getattr(a, k) is not None]
            C.require(not given, f"--{given[0].replace('_', '-')} applies to a table, not to --format {fmt}"
                      if given else "")
            runs = V.log_runs(src) if fmt == "var-log" else V.tensorboard_runs(src)
            pn = V.patch_nums_of(runs)
            name = a.preset or next((k for k, p in PRESETS.items() if tuple(p.patch_nums) == pn), DEFAULT_PRESET)
            preset, sizes = _preset(name)
            evals, notes = V.evaluations(runs, a.images_per_epoch or V.IMAGENET_TRAIN_IMAGES, a.tokens_per_image,
                                         sizes, f"varscale's {name} model")
            cfg = W.default_config(evals, preset, V.depths_of(runs), V.batch_of(runs))
            columns = {"images_per_epoch": a.images_per_epoch or V.IMAGENET_TRAIN_IMAGES,
                       "tokens_per_image": a.tokens_per_image or "the run's patch_nums", "preset": name}
        dest = W.write_study(a.study_dir, evals, source=str(src), fmt=fmt, columns=columns, notes=notes,
                             name=a.name, config=cfg)
    except I.ImportProblem as e:
        raise C.UsageError(str(e)) from None
    states = evals.attrs.get("state", {})
    done = sum(1 for s in states.values() if s == "done")
    n_runs = evals["run_id"].nunique()
    print(f"imported {n_runs} run{'s' * (n_runs != 1)} ({len(evals)} evaluation{'s' * (len(evals) != 1)}; "
          f"{done} finished) from {src} ({fmt}) into {dest}")
    for n in notes:
        print(f"  {n}")
    print(f"next: varscale fit {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
