"""Cell locks: atomic creation, owner pid + host, stale takeover, no double ownership."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from varscale.grid.lock import HOST, FileLock, pid_alive


def test_acquire_release_and_owner(tmp_path):
    p = tmp_path / "LOCK"
    a = FileLock(p, purpose="cell x", heartbeat_s=0)
    assert a.acquire()
    info = json.loads(p.read_text())
    assert info["pid"] == os.getpid() and info["host"] == HOST and info["purpose"] == "cell x"
    b = FileLock(p, heartbeat_s=0)
    assert not b.acquire(), "a live owner's lock must not be taken"
    assert b.held_by_other()["pid"] == os.getpid()
    a.release()
    assert not p.exists()
    assert b.acquire()
    b.release()


def test_release_leaves_someone_elses_lock(tmp_path):
    p = tmp_path / "LOCK"
    a = FileLock(p, heartbeat_s=0)
    assert a.acquire()
    # simulate: our lock was judged stale and taken over by someone else
    p.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "other"}))
    a.release()
    assert p.exists(), "release must only remove our own lock"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_of_dead_pid_is_taken_over(tmp_path):
    p = tmp_path / "LOCK"
    pid = _dead_pid()
    assert not pid_alive(pid)
    p.write_text(json.dumps({"pid": pid, "host": HOST, "token": "old"}))
    lock = FileLock(p, heartbeat_s=0)
    assert lock.acquire()
    assert lock.took_over["pid"] == pid
    assert json.loads(p.read_text())["pid"] == os.getpid()
    lock.release()


def test_zombie_and_reused_pid_count_as_dead(tmp_path):
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not yet reaped: a zombie
    assert not pid_alive(z.pid)
    z.wait()
    # our own pid with a wrong start time: a reused pid
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), start_ticks=1)


def test_other_host_lock_is_stale_only_without_heartbeat(tmp_path):
    p = tmp_path / "LOCK"
    p.write_text(json.dumps({"pid": 123, "host": "node-17", "token": "t"}))
    assert not FileLock(p, stale_after_s=60, heartbeat_s=0).acquire()
    old = time.time() - 120
    os.utime(p, (old, old))
    lock = FileLock(p, stale_after_s=60, heartbeat_s=0)
    assert lock.acquire()
    assert lock.took_over["host"] == "node-17"
    lock.release()


def test_heartbeat_refreshes_mtime(tmp_path):
    p = tmp_path / "LOCK"
    lock = FileLock(p, heartbeat_s=0.05)
    assert lock.acquire()
    old = time.time() - 100
    os.utime(p, (old, old))
    time.sleep(0.3)
    assert time.time() - p.stat().st_mtime < 5
    lock.release()


def _contend(path: str, barrier, out) -> None:
    barrier.wait()
    lock = FileLock(path, heartbeat_s=0)
    got = lock.acquire()
    out.put((os.getpid(), got))
    if got:
        time.sleep(0.5)  # hold it while the others try
        lock.release()


def test_one_winner_among_racers_on_a_stale_lock(tmp_path):
    p = tmp_path / "LOCK"
    p.write_text(json.dumps({"pid": _dead_pid(), "host": HOST, "token": "old"}))
    ctx = mp.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(p), barrier, out)) for _ in range(n)]
    for q in procs:
        q.start()
    for q in procs:
        q.join(30)
    wins = [got for _, got in (out.get(timeout=5) for _ in range(n))]
    assert sum(wins) == 1


def test_lock_without_token_from_live_pid_is_held(tmp_path):
    p = tmp_path / "LOCK"
    p.write_text(json.dumps({"pid": os.getpid(), "host": HOST}))  # hand-made or older format
    lock = FileLock(p, heartbeat_s=0)
    assert lock.held_by_other() is not None
    assert not lock.acquire()


def _stage(root: str, barrier) -> None:
    from pathlib import Path

    from varscale.grid.stages import locked_stage
    from varscale.schema import StudyLayout

    marker = Path(root) / "made"

    def work() -> None:  # a one-off stage: check, then do (slowly) what is missing
        if marker.exists():
            return
        time.sleep(0.5)
        with open(Path(root) / "work.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        marker.write_text("x")

    barrier.wait()
    locked_stage(StudyLayout.of(root), "tokenizer", work)


def test_stage_lock_makes_a_second_launcher_wait_then_skip(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_stage, args=(str(tmp_path), barrier)) for _ in range(3)]
    for q in procs:
        q.start()
    for q in procs:
        q.join(60)
    assert all(q.exitcode == 0 for q in procs)
    assert len((tmp_path / "work.log").read_text().split()) == 1
    assert not (tmp_path / ".lock-tokenizer").exists()
