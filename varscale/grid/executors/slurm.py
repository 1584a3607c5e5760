"""``slurm``: cells as Slurm jobs through submitit (``cluster: local`` runs the same path here).

Writes ``slurm/<job id>/`` (submitit's pickled job, its stdout/stderr and, on a real
cluster, the ``<job id>_submission.sh`` handed to sbatch) in the study folder; the cells'
own files are written by their workers as with every executor. Killing the launcher does
not cancel jobs on a real cluster (they keep their locks).

Preemption and time limits: the batch script asks Slurm for ``--signal=USR2@90`` (submitit's
default) and ``--requeue``. On USR2 submitit calls :meth:`SlurmCellJob.checkpoint` and
requeues the job (``scontrol requeue``; on the local cluster, a restart of the task); the
process exits at once, mid-step, and the requeued job resumes from the cell's last
checkpoint (``checkpoints/LATEST.json``), recomputing and overwriting the evaluations after
it, so no metrics row is lost or duplicated (tests/test_preempt.py). A preemption that Slurm
does itself (PreemptMode=REQUEUE: SIGTERM, then SIGKILL) needs ``--requeue`` and resumes the
same way. ``sbatch_script`` gives the script without submitting (tests/test_slurm_snapshot.py).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from varscale.grid.executors.base import FAILED, Handle, Options, passthrough_env, thread_env
from varscale.grid.executors.worker import mark_failed, rank_main, run_cell
from varscale.schema import CellLayout, StudyLayout

if TYPE_CHECKING:
    from varscale.config import StudyConfig


class SubmititHandle(Handle):
    def _poll(self) -> Optional[int]:
        job = self.proc
        if not job.done():
            return None
        try:
            return int(job.result())
        except Exception as e:  # noqa: BLE001 - the job died outside our worker (timeout, OOM kill)
            cell = self.cell
            if not cell.done.exists() and not cell.traceback.exists():
                mark_failed(cell, f"submitit job {job.job_id} failed:\n{e}\n")
            return FAILED

    def stop(self) -> None:
        try:
            self.proc.cancel(check=False)
        except Exception:  # noqa: BLE001
            pass


_PREEMPTED = False  # set by SlurmCellJob.checkpoint: submitit is requeueing this job


class SlurmCellJob:
    """The callable a Slurm job runs: the worker, requeued by submitit on preemption/timeout.

    With ``nodes`` > 1 each task is one rank (submitit exports the torch distributed
    environment) and only global rank 0 takes the cell's lock.
    """

    def __init__(self, cell_dir: str, nproc: int, threads: Optional[int], nodes: int, env: dict[str, str]):
        self.cell_dir, self.nproc, self.threads, self.nodes, self.env = cell_dir, nproc, threads, nodes, env

    def __call__(self) -> int:
        os.environ.update(self.env)
        rc = self._run()
        if _PREEMPTED:
            # submitit's handler requeued the job and exited through the trainer (SystemExit),
            # which the worker turned into a return code, as it does for Ctrl-C. Exit again:
            # returning would record this attempt as the job's result, a finished job whose
            # cell has not finished
            raise SystemExit(rc)
        return rc

    def _run(self) -> int:
        if self.nodes > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            if os.environ.get("RANK") == "0":
                return run_cell(self.cell_dir, threads=self.threads, nproc=1)
            return rank_main(self.cell_dir)
        return run_cell(self.cell_dir, nproc=self.nproc, threads=self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any):
        # called by submitit on USR2 (preemption, time limit) before it requeues the job: the
        # trainer checkpoints on its own schedule and a requeued job resumes from the last one
        global _PREEMPTED
        import submitit

        _PREEMPTED = True
        print(f"[slurm] preempted or out of time: requeued; {Path(self.cell_dir).name} resumes from its "
              f"last checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self)


def job_parameters(slurm: Any, nproc: int, parallel: int, study: str) -> dict[str, Any]:
    """submitit's (AutoExecutor) parameters of a cell's job from the study's ``execution.slurm``.

    One node: one task that starts ``nproc`` ranks under torchrun, with every rank's CPUs.
    Several nodes: ``nproc`` tasks per node, one rank each (submitit exports RANK, WORLD_SIZE,
    MASTER_ADDR... from Slurm's variables). ``--requeue`` lets submitit (and Slurm's own
    preemption) put the job back in the queue; the study's ``additional_parameters`` win.
    """
    multinode = slurm.nodes > 1
    params: dict[str, Any] = dict(
        timeout_min=int(slurm.time_min), nodes=int(slurm.nodes),
        tasks_per_node=nproc if multinode else 1,
        cpus_per_task=int(slurm.cpus_per_task) * (1 if multinode else nproc),
        mem_gb=int(slurm.mem_gb), name=f"varscale-{study}",
    )
    if slurm.gpus_per_node:
        params["gpus_per_node"] = int(slurm.gpus_per_node)
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    params["slurm_additional_parameters"] = {"requeue": True, **dict(slurm.additional_parameters)}
    params["slurm_array_parallelism"] = parallel
    return params


def sbatch_script(cfg: "StudyConfig", layout: StudyLayout, n_cells: int, opts: Optional[Options] = None) -> str:
    """The batch script a real cluster gets for ``n_cells`` cells of this study (one job, or a
    job array for several), as submitit writes it, without submitting anything.

    submitit writes the script only when it submits, so this submits to a stand-in ``sbatch``
    (and ``srun``, whose presence submitit checks) on PATH that keeps the file and prints a job
    id: submitit's own code path from parameters to script, no Slurm needed.
    """
    import tempfile

    ex = cfg.execution
    opts = opts or Options(parallel=ex.parallel, threads=ex.threads, nproc=ex.nproc_per_node)
    with tempfile.TemporaryDirectory(prefix="varscale-sbatch-") as tmp:
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        kept = Path(tmp) / "submission.sh"
        (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{kept}"\necho "Submitted batch job 4242"\n')
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
        for f in bin_dir.iterdir():
            f.chmod(0o755)
        old_path = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
        folder = Path(tmp) / "jobs"  # submitit's pickles stay out of the study folder
        try:
            x = SlurmExecutor(layout.root, ex.slurm, parallel=opts.parallel, threads=opts.threads,
                              nproc=opts.nproc, cluster="slurm", folder=folder)
            x.submit([layout.cell(f"cell{i}") for i in range(n_cells)])
        finally:
            os.environ["PATH"] = old_path
        return kept.read_text().replace(str(folder), str(layout.slurm_dir))


class PrepareJob:
    """A Slurm job for the one-off stages (tokenizer, token cache): they need the GPU and the
    dataset, which a login node running the launcher may not have."""

    def __init__(self, study_dir: str, env: dict[str, str]):
        self.study_dir, self.env = study_dir, env

    def __call__(self) -> bool:
        os.environ.update(self.env)
        from varscale.config import load_study
        from varscale.grid.stages import prepare_here

        return prepare_here(StudyLayout.of(self.study_dir), load_study(self.study_dir))

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


class SlurmExecutor:
    """Cells as Slurm jobs through submitit (``cluster: local`` runs the same path locally).

    On a real cluster all cells go in at once as one job array (``parallel`` caps how many
    run together, Slurm's array throttle); on the local/debug cluster they are started
    ``parallel`` at a time like the local executor, since there is no queue to hold them.
    """

    name: ClassVar[str] = "slurm"

    def __init__(self, study_dir: Path, slurm: Any, parallel: int = 1, threads: Optional[int] = None,
                 nproc: int = 1, cluster: Optional[str] = None, folder: Optional[Path] = None):
        import submitit

        self.cluster = cluster or slurm.cluster
        self.slurm = slurm
        self.nproc = max(int(nproc), 1)
        self.parallel = max(int(parallel), 1)
        self.threads = threads or max(1, slurm.cpus_per_task // max(self.nproc if slurm.nodes == 1 else 1, 1))
        self.folder = Path(folder) if folder is not None else StudyLayout.of(study_dir).slurm_dir
        self.ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        self.ex.update_parameters(**job_parameters(slurm, self.nproc, self.parallel, Path(study_dir).name))
        self._multinode = slurm.nodes > 1

    @classmethod
    def from_study(cls, cfg: "StudyConfig", layout: StudyLayout, opts: Options) -> "SlurmExecutor":
        return cls(layout.root, cfg.execution.slurm, parallel=opts.parallel, threads=opts.threads,
                   nproc=opts.nproc, cluster=opts.cluster)

    @property
    def batch(self) -> bool:
        """A real cluster: every cell goes in at once as one job array."""
        return self.cluster == "slurm"

    @property
    def slots(self) -> int:
        return 10**9 if self.batch else self.parallel

    def describe(self) -> str:
        s = self.slurm
        return (f"slurm via submitit (cluster={self.cluster}): {s.nodes} node(s) x {self.nproc} process(es), "
                f"{s.gpus_per_node} GPU(s)/node, {s.time_min} min, partition {s.partition or 'default'}, "
                f"{self.parallel} job(s) at a time; logs in {self.folder}")

    def prepare(self, layout: StudyLayout, cfg: "StudyConfig", log: Callable[[str], None],
                poll_s: float = 2.0) -> bool:
        """Tokenizer + tokens as one single-node job, waited for; in this process when they
        are complete already (the stages then only say so)."""
        import submitit

        from varscale.grid.stages import inputs_ready, prepare_here

        if inputs_ready(layout, cfg):
            return prepare_here(layout, cfg)
        s = self.slurm
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = dict(timeout_min=int(s.time_min), nodes=1, tasks_per_node=1,
                                      cpus_per_task=int(s.cpus_per_task), mem_gb=int(s.mem_gb),
                                      name=f"varscale-prepare-{layout.root.name}")
        if s.gpus_per_node:
            params["gpus_per_node"] = 1
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.additional_parameters:
            params["slurm_additional_parameters"] = dict(s.additional_parameters)
        ex.update_parameters(**params)
        job = ex.submit(PrepareJob(str(layout.root.resolve()), {**thread_env(self.threads), **passthrough_env()}))
        log(f"tokenizer, tokens: running as job {job.job_id} ({self.cluster}); log {job.paths.stdout}")
        while not job.done():
            time.sleep(poll_s)
        out = job.result()  # raises with the job's traceback if it failed
        for line in (job.stdout() or "").splitlines():
            if line.startswith(("tokenizer:", "tokens:")):
                log("  " + line)
        return bool(out)

    def _job(self, cell: CellLayout) -> SlurmCellJob:
        return SlurmCellJob(str(cell.root.resolve()), self.nproc, self.threads, int(self.slurm.nodes),
                            {**thread_env(self.threads), **passthrough_env()})

    def submit(self, cells: list[CellLayout]) -> list[Handle]:
        if not cells:
            return []
        if not self.batch:
            return [SubmititHandle(c, proc=self.ex.submit(self._job(c))) for c in cells]
        with self.ex.batch():
            jobs = [self.ex.submit(self._job(c)) for c in cells]
        return [SubmititHandle(c, proc=j) for c, j in zip(cells, jobs)]

    def shutdown(self, handles: list[Handle], grace_s: float = 0.0) -> None:
        # Slurm jobs outlive the launcher on purpose; only the local cluster's are ours to stop
        if self.cluster != "slurm":
            for h in handles:
                h.stop()
