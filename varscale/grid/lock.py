"""Lock files that say who owns a cell (or a study stage): pid, host, start time.

A lock is a small JSON file created atomically: its content is written to a private temp
file first, then hard-linked to the lock's name, which fails if the name exists. So a lock
is never seen half-written, and two processes can never both create it (this also holds
on NFS, where O_EXCL historically did not).

A lock whose owner is gone is *stale* and is taken over:
- same host: the owner pid is not running (or is a zombie, or the pid was reused by a
  process that started later than the lock's owner);
- another host (a Slurm node): we cannot see its processes, so the owner refreshes the
  lock's mtime every ``heartbeat_s`` seconds and a lock not refreshed for ``stale_after_s``
  is stale.
Taking over is serialised by ``flock`` on a ``<lock>.guard`` file (released by the kernel
if its holder dies), so two launchers that both find the same stale lock cannot both win.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

HOST = socket.gethostname()


def _proc_start_ticks(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19])  # field 22 overall: starttime


def _proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


def pid_alive(pid: int, start_ticks: Optional[int] = None) -> bool:
    """Is ``pid`` a live (non-zombie) process on this host, and the same one as recorded?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    state = _proc_state(pid)
    if state in ("Z", "X"):  # a killed child nobody has reaped yet holds nothing
        return False
    if start_ticks is not None:
        now_ticks = _proc_start_ticks(pid)
        if now_ticks is not None and now_ticks != start_ticks:
            return False  # the pid was reused by another process
    return True


def owner_alive(info: dict, mtime: float, stale_after_s: float) -> bool:
    """Whether the owner described by a lock's content still holds it."""
    if info.get("host") == HOST:
        return pid_alive(int(info.get("pid", -1)), info.get("start_ticks"))
    return (time.time() - mtime) < stale_after_s


class FileLock:
    """Non-blocking, stale-aware lock file.

    >>> lock = FileLock(cell.lock, purpose="cell d2-...")
    >>> if lock.acquire(): ...; lock.release()
    """

    def __init__(self, path: str | os.PathLike, purpose: str = "", stale_after_s: float = 600.0,
                 heartbeat_s: float = 30.0, extra: Optional[dict] = None):
        self.path = Path(path)
        self.purpose = purpose
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.extra = dict(extra or {})
        self.token: Optional[str] = None
        self.took_over: Optional[dict] = None  # the stale owner we replaced, if any
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ inspection
    def owner(self) -> Optional[dict]:
        """The lock's content (plus ``mtime``), or None when there is no lock."""
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            info = {"pid": -1, "host": "?", "unreadable": text[:200]}
        info["mtime"] = st.st_mtime
        return info

    def held_by_other(self) -> Optional[dict]:
        """The live owner if someone else holds the lock, else None (free or stale)."""
        info = self.owner()
        if info is None or (self.token is not None and info.get("token") == self.token):
            return None
        if info.get("unreadable") is not None:
            # only a foreign writer could leave this; treat it like another host's lock
            return info if time.time() - info["mtime"] < self.stale_after_s else None
        return info if owner_alive(info, info["mtime"], self.stale_after_s) else None

    @property
    def held(self) -> bool:
        info = self.owner()
        return bool(self.token) and info is not None and info.get("token") == self.token

    # ------------------------------------------------------------------ acquire / release
    def _content(self) -> bytes:
        pid = os.getpid()
        info = {
            "pid": pid,
            "host": HOST,
            "start_ticks": _proc_start_ticks(pid),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "purpose": self.purpose,
            "token": self.token,
            **self.extra,
        }
        for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
            if k in os.environ:
                info[k.lower()] = os.environ[k]
        return (json.dumps(info, indent=1) + "\n").encode()

    def _try_link(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{HOST}.{os.getpid()}.{self.token}")
        with open(tmp, "wb") as f:
            f.write(self._content())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:  # some filesystems refuse hard links: fall back to O_EXCL
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(tmp.read_bytes())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; False if a live owner holds it."""
        if self.held:
            return True
        self.token = secrets.token_hex(8)
        if self._try_link():
            self._start_heartbeat()
            return True
        # someone holds it: take over only if stale, under the guard so one taker wins
        guard = self.path.with_name(self.path.name + ".guard")
        with open(guard, "a+") as g:
            fcntl.flock(g.fileno(), fcntl.LOCK_EX)
            try:
                info = self.owner()
                if info is not None and self.held_by_other() is not None:
                    self.token = None
                    return False
                if info is not None:
                    self.path.unlink(missing_ok=True)
                    self.took_over = info
                ok = self._try_link()
            finally:
                fcntl.flock(g.fileno(), fcntl.LOCK_UN)
        if ok:
            self._start_heartbeat()
        else:
            self.token = None
        return ok

    def wait(self, timeout: Optional[float] = None, poll_s: float = 0.5,
             on_wait: Optional[Callable[[dict], None]] = None) -> bool:
        """Block until acquired (True) or ``timeout`` seconds passed (False)."""
        t0 = time.monotonic()
        told = False
        while not self.acquire():
            if timeout is not None and time.monotonic() - t0 > timeout:
                return False
            if on_wait is not None and not told:
                info = self.owner()
                if info is not None:
                    on_wait(info)
                    told = True
            time.sleep(poll_s)
        return True

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=1.0)
        self._beat = None
        if self.token is not None:
            info = self.owner()
            if info is not None and info.get("token") == self.token:
                self.path.unlink(missing_ok=True)
        self.token = None

    def _start_heartbeat(self) -> None:
        if self.heartbeat_s <= 0:
            return
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._beat = threading.Thread(target=beat, name=f"lock-heartbeat {self.path.name}", daemon=True)
        self._beat.start()

    def __enter__(self) -> "FileLock":
        if not self.acquire():
            info = self.owner() or {}
            raise LockedError(self.path, info)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class LockedError(RuntimeError):
    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info
        super().__init__(f"{path} is held by pid {info.get('pid')} on {info.get('host')} "
                         f"({info.get('purpose', '')})")


def describe(info: Optional[dict]) -> str:
    if not info:
        return "-"
    return f"pid {info.get('pid')} on {info.get('host')}"
