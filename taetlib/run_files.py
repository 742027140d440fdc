"""The files a training run writes into its folder: their names, an atomic write, and the check, before
training, that the folder can take them (writable, room for last.pt beside the previous one); and a finished
run folder linked into another sweep that asks for the same run (`--reuse-from`)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import bad
from .paths import resolve

__all__ = ["REUSED_FILE", "RUN_FILES", "check_run_dir", "link_run", "record_reuse", "reuse_source", "reused_text",
           "save_atomic", "tensor_bytes"]


RUN_FILES = ("config.json", "history.jsonl", "last.pt", "model.pt", "best.pt")   # what fit() writes into run_dir
REUSED_FILE = "reused.json"   # under a sweep's folder: what --reuse-from linked into it, from where


def save_atomic(obj, path: Path) -> None:
    """torch.save (or text) to path.tmp, then rename: a crash mid-write never leaves a half file at path."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(obj, str):
            tmp.write_text(obj)
        else:
            torch.save(obj, tmp)
    except OSError as e:   # e.g. the disk filled up during the run
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path} ({e.strerror}); the previous {path.name} is intact. "
                               "Fix: free space there, then run the same command again to resume.") from e
    os.replace(tmp, path)


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in nested dicts / lists (an objective's state)."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    return sum(tensor_bytes(v) for v in obj) if isinstance(obj, (list, tuple)) else 0


def check_run_dir(run_dir: Path, model: nn.Module, objective_state: dict | None = None) -> None:
    """Refuse, before training, a run_dir that cannot take the run's files: not writable (a probe file
    is created and removed), or too little free space for last.pt (weights + momentum + the objective's
    state, e.g. LAS-AT's strategy network) written beside the previous one, plus model.pt."""
    where = next(p for p in (run_dir, *run_dir.parents) if p.exists())   # run_dir itself may not exist yet
    if not where.is_dir():
        raise bad("run_dir", str(run_dir), f"{where} is a file, not a directory. Fix: choose another run directory.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=where)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise bad("run_dir", str(run_dir), f"{where} is not writable ({e.strerror}). Fix: choose a writable run "
                                           f"directory, or give yourself write permission (chmod u+w {where}).") from e
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = 5 * weights + 2 * tensor_bytes(objective_state or {}) + 2**20   # last.pt twice, model.pt, history
    free = shutil.disk_usage(where).free
    if free < need:
        raise bad("run_dir", str(run_dir), f"only {free / 2**20:.1f} MiB free on the filesystem of {where}; this run "
                  f"writes about {need / 2**20:.1f} MiB (last.pt beside the previous one, model.pt). Fix: free "
                  "space there, or choose a run directory on another disk.")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:   # another filesystem: a copy
        shutil.copy2(src, dst)


def link_run(src: Path, dst: Path) -> None:
    """src's files hard-linked into the new folder dst (copied across filesystems); the source is not changed.
    Its lock and any half-written .tmp stay behind. Every later write replaces a file (save_atomic), so the
    two folders never write into each other."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".lock", "*.tmp"))


def record_reuse(root: Path, kind: str, source: Path, pairs: list[tuple[Path, Path]]) -> None:
    """Append what was linked (kind: 'tuning' or 'runs') to root/REUSED_FILE, the sweep's record of it."""
    if not pairs:
        return
    path = Path(root) / REUSED_FILE
    earlier = json.loads(path.read_text()) if path.exists() else []
    entry = {"kind": kind, "source": str(Path(source).resolve()), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
             "linked": [{"from": str(s), "to": str(d)} for s, d in pairs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*earlier, entry], indent=2) + "\n")


def reused_text(root: Path, kind: str) -> str:
    """A sentence on what of `kind` ('tuning' or 'runs') came from another study through --reuse-from (linked
    folders, or tuning readings adopted from its record), and from where; empty when nothing did."""
    path = Path(root) / REUSED_FILE
    entries = [e for e in json.loads(path.read_text()) if e["kind"] == kind] if path.exists() else []
    if not entries:
        return ""
    n = sum(len(e["linked"]) for e in entries)
    sources = ", ".join(sorted({Path(e["source"]).name for e in entries}))
    what = "tuning run" if kind == "tuning" else "study run"
    return (f" {n} {what}{'' if n == 1 else 's'} {'was' if n == 1 else 'were'} reused from {sources} (the same "
            f"config, seed and {'validation' if kind == 'tuning' else 'evaluation'}; {REUSED_FILE} lists them); "
            "their time is counted here as it was there.")


def reuse_source(given: str, root: Path) -> Path:
    """--reuse-from's folder, checked: another sweep's existing folder."""
    source = resolve(given)
    if not source.is_dir():
        raise bad("--reuse-from", given, "is no folder; give the sweep folder of the study whose runs to link.")
    if source.resolve() == Path(root).resolve():
        raise bad("--reuse-from", given, "is this sweep's own folder; give the other study's folder.")
    return source
