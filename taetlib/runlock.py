"""One writer per run folder: `with run_lock(run_dir):` for the length of a training, an evaluation or a
sweep's run, and `@holds_run_lock("run_dir")` to wrap a function in it.

The lock is an OS lock (flock) on RUN_DIR/.lock, so it dies with its process: a kill -9 leaves the file
but never a held lock. The holder writes its PID into the file, so a second writer is refused with a
message naming it (RunLocked, a ConfigError: the CLI exits with 2 and writes nothing).
Nesting: a process that holds the lock may take it again (a notebook run in process), and so may its
descendants (the sweep's worker holds it while the notebook kernel it started trains into the folder).
Under torchrun only rank 0 takes it: the other ranks write nothing.
A lock file (and a folder) that this lock created is removed again on release, so a run refused later
leaves its folder as it found it. Linux's flock is local to one machine unless the filesystem maps it
onto POSIX locks (NFS does); two machines sharing a folder over NFS are then exclusive per process.
"""
from __future__ import annotations

import fcntl
import functools
import inspect
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

__all__ = ["LOCK_FILE", "RunLocked", "holds_run_lock", "run_lock"]

LOCK_FILE = ".lock"
_HELD: dict[Path, int] = {}   # folder -> how many times this process holds it (nesting)


class RunLocked(ConfigError):
    """Another live process trains or evaluates in this run folder."""


def _ancestors() -> set[int]:
    """PIDs of this process's parents, up to init (from /proc; just the parent elsewhere)."""
    out: set[int] = set()
    pid = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:   # "pid (comm) state ppid ...": comm may hold spaces
                pid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return out | {os.getppid()}
        out.add(pid)
    return out


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    except (OSError, ValueError):
        return None   # the holder has not written its PID yet


def _created_dirs(folder: Path) -> list[Path]:
    """Make `folder` and its missing parents; returns the ones made, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _acquire(folder: Path) -> tuple[int, Path]:
    """Open and flock folder/.lock; retry when the file was replaced between open and lock."""
    path = folder / LOCK_FILE
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            if pid is not None and pid in _ancestors():
                return -1, path   # held by the process that started this one: ours to use
            who = f"process {pid}" if pid else "another process"
            raise RunLocked(f"run folder {folder} is in use: {who} is training or evaluating there (it holds "
                            f"{path}). Fix: wait for it to finish, stop it (kill {pid or 'PID'}), or use another run "
                            "folder.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd, path
        os.close(fd)   # the holder removed it on release: lock the file that is there now
    raise RunLocked(f"run folder {folder}: could not lock {path} (replaced 100 times in a row).")


@contextmanager
def run_lock(run_dir: str | Path):
    """Hold the run folder's lock for the body; RunLocked when another live process holds it."""
    folder = Path(run_dir).resolve()
    if int(os.environ.get("RANK", 0)) != 0:   # torchrun: rank 0 holds it for the job; the others write nothing
        yield
        return
    if _HELD.get(folder):
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    try:
        made = _created_dirs(folder)
        fd, path = _acquire(folder)
    except RunLocked:
        raise
    except OSError:   # a folder that cannot take a lock file cannot take the run: its own check says why
        yield
        return
    _HELD[folder] = 1
    try:
        yield
    finally:
        del _HELD[folder]
        if fd >= 0:
            _release(fd, path, made)


def _release(fd: int, path: Path, made: list[Path]) -> None:
    path.unlink(missing_ok=True)   # while still locked: a waiting opener then retries on the new file
    os.close(fd)
    for d in made:   # folders this lock created and nothing else filled (a refused run)
        try:
            d.rmdir()
        except OSError:
            break


def holds_run_lock(param: str):
    """Decorator: the wrapped function runs holding run_lock(<its argument `param`>)."""
    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with run_lock(sig.bind(*args, **kwargs).arguments[param]):
                return fn(*args, **kwargs)
        return locked
    return wrap
