"""When a sweep (or a tuning) ran: one small file per invocation under FOLDER/sessions/.

A long study runs over many sessions, each ended by a kill. Each invocation writes its start at once and
refreshes its last sign of life every HEARTBEAT_S seconds (and at its end), so a killed one's record ends
within that much of its death. The wall time is the union of those spans: pauses between sessions are
not counted, and two invocations at once are counted once. Each record names its machine (CPU model and
usable cores): a study's sessions may run on different machines, and their times compare only on the same one.
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .numerics import cpu_name

__all__ = ["HEARTBEAT_S", "SESSIONS_DIR", "machine_label", "read_sessions", "session", "sessions_table", "wall_seconds"]

SESSIONS_DIR = "sessions"
HEARTBEAT_S = 60.0


def machine_label() -> str:
    """This process's CPU model and the cores it may use (its affinity, which a cluster's cgroup narrows)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()} with {cores} cores"


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)   # a reader never sees half a record


@contextmanager
def session(folder: Path, what: str, heartbeat: float = HEARTBEAT_S, **info):
    """Record this invocation in folder/sessions/: its start now, its last sign of life every `heartbeat`
    seconds while the block runs, its end when the block exits (normally or by an exception)."""
    start = time.time()
    path = Path(folder) / SESSIONS_DIR / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(start))}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"what": what, "start": start, "last_seen": start, "ended": False, "pid": os.getpid(),
              "machine": machine_label(), **info}
    _write(path, record)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            _write(path, {**record, "last_seen": time.time()})
    thread = threading.Thread(target=beat, daemon=True)   # daemon: it never holds the process open
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        _write(path, {**record, "last_seen": time.time(), "ended": True})


def read_sessions(folder: Path) -> list[dict]:
    """The recorded sessions under folder/sessions/, oldest first."""
    out = []
    for p in sorted((Path(folder) / SESSIONS_DIR).glob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):   # removed or being replaced while read: the next read has it
            continue
    return sorted(out, key=lambda r: r["start"])


def wall_seconds(sessions: list[dict]) -> float:
    """The union of the sessions' spans (start to last sign of life), in seconds."""
    total, end = 0.0, float("-inf")
    for r in sorted(sessions, key=lambda r: r["start"]):
        a, b = r["start"], max(r["start"], r["last_seen"])
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _rebuilt_from(record: dict) -> str:
    """What a reconstructed session was rebuilt from ('' where it was recorded live, or did not say)."""
    return record["reconstructed"] if isinstance(record.get("reconstructed"), str) else ""


def sessions_table(records: list[dict]) -> pd.DataFrame:
    """The sessions as a table to publish: what ran, from when to its last sign of life (UTC), how long, on
    which machine ('' where a session older than that field did not record it), and for a session rebuilt
    afterwards, its note says from what (its `reconstructed` text)."""
    def utc(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
    return pd.DataFrame([{"what": r["what"], "start_utc": utc(r["start"]), "last_seen_utc": utc(r["last_seen"]),
                          "hours": round((r["last_seen"] - r["start"]) / 3600, 3), "ended": r["ended"],
                          "reconstructed": bool(r.get("reconstructed")), "machine": r.get("machine", ""),
                          "note": r.get("note") or _rebuilt_from(r)} for r in records],
                        columns=["what", "start_utc", "last_seen_utc", "hours", "ended", "reconstructed", "machine",
                                 "note"])
