"""A sweep folder's record: the text of every finished run, kept in git beside its published study.

A study takes more hours than one machine may live: runs/ is not committed, so a machine replaced between
sessions would take every finished run with it. `study` copies the record into results/<preset>/record/;
`restore` copies it back into an empty (or partial) sweep folder, and the sweep then skips each restored run
(its DONE.json holds the config's hash) and each restored tuning run (its point.json holds the config).

The record holds the sweep's own files (sweep.json, reused.json, the tuning's tuning.json and tuning.csv,
every session file of the sweep and of the tuning) and, whole, each finished study run (DONE.json with status
done) and finished tuning run (point.json), less the weights and what only a running process needs. Left out:
runs not finished (without weights they start again anyway), the dataset stages (rebuilt in seconds from the
split manifests committed in data/splits/).
"""
from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

from .plan import POINT_FILE, SWEEP_FILE, TUNING_FILE
from .runs import DONE
from .sessions import SESSIONS_DIR, read_sessions

__all__ = ["LEFT_OUT", "RECORD_DIR", "finished_folders", "keep_record", "record_files", "restore_record",
           "study_sessions"]

RECORD_DIR = "record"   # under a study's published folder
# weights (the record is text), and what only a process still running needs: locks, temporary files, an
# evaluation's kept attacks, the shared plotly.js of the HTML figures (a copy per run would be 3.5 MB each)
LEFT_OUT = ("*.pt", "*.tmp", "*.tmp.*", "*.lock", ".lock", ".write-probe-*", "eval.partial", "plotly.min.js")
SWEEP_FILES = (SWEEP_FILE, "reused.json", TUNING_FILE, str(Path(TUNING_FILE).with_name("tuning.csv")))
# the tuning's sessions and the sweep's (`tune` records its own): a study's wall time is read from both
SESSION_DIRS = (Path(TUNING_FILE).parent / SESSIONS_DIR, Path(SESSIONS_DIR))


def study_sessions(root: Path) -> list[dict]:
    """Every session of the study at root: the tuning's, then the sweep's, each oldest first."""
    return [s for d in SESSION_DIRS for s in read_sessions(Path(root) / d.parent)]


def left_out(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in LEFT_OUT)


def is_finished_run(folder: Path) -> bool:
    """A study run whose DONE.json says done (a dataset stage's DONE.json has no status: not a run)."""
    try:
        return json.loads((folder / DONE).read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False


def finished_folders(root: Path) -> list[Path]:
    """The folders under root of every finished study run and tuning run, relative to root."""
    root = Path(root)
    runs = [p.parent for p in root.rglob(DONE) if is_finished_run(p.parent)]
    points = [p.parent for p in root.rglob(POINT_FILE)]
    return sorted(f.relative_to(root) for f in runs + points)


def record_files(root: Path) -> list[Path]:
    """Every file of root's record, relative to root."""
    root = Path(root)
    files = [Path(f) for f in SWEEP_FILES if (root / f).is_file()]
    files += [p.relative_to(root) for d in SESSION_DIRS for p in sorted((root / d).glob("*.json"))]
    for folder in finished_folders(root):
        files += [p.relative_to(root) for p in sorted((root / folder).rglob("*"))
                  if p.is_file() and not left_out(p.relative_to(root / folder))]
    return files


def keep_record(root: Path, dest: Path) -> int:
    """Copy root's record into dest: each finished run replaces its copy whole (nothing stale is left in it),
    and what dest holds of runs root no longer has stays (a record is only ever added to). Returns the number
    of files copied."""
    root, dest = Path(root), Path(dest)
    for folder in finished_folders(root):
        shutil.rmtree(dest / folder, ignore_errors=True)
    files = record_files(root)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    return len(files)


def restore_record(dest: Path, root: Path) -> int:
    """Copy a record (dest) back into a sweep folder (root) before its sweep starts: each finished run root
    does not hold finished replaces root's folder whole (a half-trained copy of it included), and the sweep's
    own files are copied where root has none. Returns the number of files restored."""
    dest, root = Path(dest), Path(root)
    finished = set(finished_folders(root))
    n = 0
    for folder in finished_folders(dest):
        if folder not in finished and not any(folder.is_relative_to(f) for f in finished):
            shutil.rmtree(root / folder, ignore_errors=True)
            shutil.copytree(dest / folder, root / folder)
            n += sum(1 for p in (root / folder).rglob("*") if p.is_file())
    for rel in record_files(dest):
        if not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dest / rel, root / rel)
            n += 1
    return n
