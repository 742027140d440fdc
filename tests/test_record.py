"""A sweep folder's record (taetlib/record.py): the text of its finished runs, kept in git so that a machine
replaced between sessions loses none of them, and restored before the sweep resumes."""
import json
from pathlib import Path

from taetlib import cli, study
from taetlib.record import keep_record, record_files, restore_record, study_sessions
from taetlib.runs import DONE, FAILED


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def finished_run(d: Path, tag: str = "1") -> None:
    write(d / "config.json", "{}")
    write(d / "history.jsonl", tag)
    write(d / "model.pt", "weights")
    write(d / "last.pt", "weights")
    write(d / "stage1" / "history.jsonl", "clean")
    write(d / "stage1" / "last.pt", "weights")
    write(d / "eval" / "per_class.csv", tag)
    write(d / "figures" / "plotly.min.js", "js")
    write(d / DONE, json.dumps({"status": "done", "config_hash": tag}))


def sweep_folder(root: Path) -> None:
    """A sweep folder with one of each kind of thing it can hold."""
    write(root / "sweep.json", "{}")
    write(root / "tuning" / "tuning.json", "{}")
    write(root / "tuning" / "tuning.csv", "a,b")
    write(root / "tuning" / "ds-ir10" / "at_bsl" / "lrx1" / "point.json", "{}")
    write(root / "tuning" / "ds-ir10" / "at_bsl" / "lrx1" / "model.pt", "weights")
    write(root / "tuning" / "ds-ir10" / "at_bsl" / "lrx2" / "history.jsonl", "half")   # still training
    write(root / "sessions" / "20261204-101439-1.json", "{}")
    write(root / "tuning" / "sessions" / "20261203-080000-2.json", "{}")   # `tune` records its own sessions
    write(root / "ds-ir10" / "split_seed0" / DONE, json.dumps({"split_hash": "abc"}))   # a dataset stage
    write(root / "ds-ir10" / "split_seed0" / "samples.html", "<html>")
    finished_run(root / "ds-ir10" / "at_bsl" / "seed0")
    write(root / "ds-ir10" / "at_bsl" / "seed0" / ".lock", "pid")
    write(root / "ds-ir10" / "taet" / "seed0" / "history.jsonl", "half")   # training
    write(root / "ds-ir10" / "taet" / "seed0" / "eval.partial" / "pgd20-abc.npz", "kept")
    write(root / "ds-ir10" / "taet" / "seed1" / FAILED, "{}")


def test_the_record_holds_the_finished_runs_text_and_nothing_else(tmp_path):
    sweep_folder(tmp_path)
    run = "ds-ir10/at_bsl/seed0/"
    assert sorted(map(str, record_files(tmp_path))) == sorted([
        "sweep.json", "tuning/tuning.json", "tuning/tuning.csv", "sessions/20261204-101439-1.json",
        "tuning/sessions/20261203-080000-2.json", "tuning/ds-ir10/at_bsl/lrx1/point.json",
        *(run + f for f in ("config.json", "history.jsonl", "stage1/history.jsonl", "eval/per_class.csv", DONE))])


def test_a_record_kept_and_restored_gives_back_every_finished_file_unchanged(tmp_path):
    root, dest, fresh = tmp_path / "runs", tmp_path / "record", tmp_path / "fresh"
    sweep_folder(root)
    n = keep_record(root, dest)
    assert n == len(record_files(root)) == restore_record(dest, fresh)
    assert {p: (root / p).read_bytes() for p in record_files(root)} == \
        {p: (fresh / p).read_bytes() for p in record_files(fresh)}


def test_keeping_replaces_a_run_whole_and_never_drops_a_run_the_folder_lost(tmp_path):
    root, dest = tmp_path / "runs", tmp_path / "record"
    sweep_folder(root)
    keep_record(root, dest)
    run = Path("ds-ir10/at_bsl/seed0")
    (root / run / "eval" / "per_class.csv").unlink()   # finished again, without that file
    finished_run(root / "ds-ir10" / "pgd_at" / "seed0")
    keep_record(root, dest)
    assert not (dest / run / "eval" / "per_class.csv").exists() and (dest / "ds-ir10/pgd_at/seed0" / DONE).exists()
    import shutil
    shutil.rmtree(root / run)   # a new machine: the folder lost the run, the record keeps it
    keep_record(root, dest)
    assert (dest / run / DONE).exists()


def test_restoring_replaces_a_half_trained_copy_and_never_a_finished_one(tmp_path):
    root, dest, fresh = tmp_path / "runs", tmp_path / "record", tmp_path / "fresh"
    sweep_folder(root)
    keep_record(root, dest)
    write(fresh / "ds-ir10/at_bsl/seed0/history.jsonl", "half")   # started again before the restore
    write(fresh / "ds-ir10/at_bsl/seed0/last.pt", "weights")
    write(fresh / "sweep.json", "mine")
    restore_record(dest, fresh)
    assert (fresh / "ds-ir10/at_bsl/seed0/history.jsonl").read_text() == "1"   # the finished one
    assert not (fresh / "ds-ir10/at_bsl/seed0/last.pt").exists()
    assert (fresh / "sweep.json").read_text() == "mine"
    write(fresh / "ds-ir10/at_bsl/seed0/eval/per_class.csv", "rerun")   # finished here: kept as it is
    restore_record(dest, fresh)
    assert (fresh / "ds-ir10/at_bsl/seed0/eval/per_class.csv").read_text() == "rerun"


def test_restore_without_a_record_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    code = cli.main(["restore", "--preset", "fmnist_lt_study_a", "--root", str(root), "--out", str(tmp_path / "pub")],
                    commands=(study.add_cli,))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "record/" in err[0] and "study --preset" in err[0]
    assert not root.exists()


def test_a_studys_sessions_are_the_tunings_then_the_sweeps_each_oldest_first(tmp_path):
    def session(folder: Path, start: float) -> None:
        write(folder / "sessions" / f"{int(start)}.json", json.dumps({"what": folder.name, "start": start}))
    for start in (300.0, 100.0):
        session(tmp_path, start)
    for start in (50.0, 20.0, 400.0):   # a tuning session may outlive the sweep's first ones
        session(tmp_path / "tuning", start)
    got = [(s["what"], s["start"]) for s in study_sessions(tmp_path)]
    sweep = tmp_path.name
    assert got == [("tuning", 20.0), ("tuning", 50.0), ("tuning", 400.0), (sweep, 100.0), (sweep, 300.0)]
