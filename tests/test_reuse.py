"""--reuse-from: a study links the tuning runs and study runs another study finished with the same config
(Study B's AT-BSL and TAET from Study A), by hard links, and nothing else; tune and sweep then keep them."""
import dataclasses
import json
import os
from pathlib import Path

import pytest

from taetlib import cli, plan, runs, sweep, tuning
from taetlib.arms import Arm
from taetlib.config import RunConfig
from taetlib.plan import SWEEP_FILE, Sweep
from taetlib.run_files import REUSED_FILE
from taetlib.train import fit
from taetlib.tuning_choices import tuning_record

SPEC = {"factors": {"lr": [0.5, 1.0]}, "attack": "pgd20", "val_fraction": 0.2}
EVALUATION = {"attacks": ["clean", "pgd20"], "protocols": ["balanced"], "eps_sweep": []}
B_ONLY = Arm("taet", overrides={"harl_beta": 0.01}, label="taet_beta001")
REAL_TUNE_POINT = tuning.tune_point


def study(root: Path, arms, seeds) -> Sweep:
    return Sweep(root=root, dataset="synthetic", irs=[10], arms=arms, seeds=seeds, evaluation=dict(EVALUATION),
                 config={"n_max": 60, "test_per_class": 10, "epochs": 2, "stabilization_epochs": 1}, tuning=SPEC)


def fake_point(config, run_dir, spec):
    """A finished tuning run as tune_point records it (point.json); its reading depends on the lr alone."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = {"status": "done", "error": "", "val_balanced_accuracy": 0.6, "sgd_steps": 4, "seconds": 1.0,
              "val_balanced_robustness": RunConfig.from_dict(config).lr}
    (run_dir / "point.json").write_text(json.dumps({"config": config, "result": result}))
    return result


def finish_runs(s: Sweep) -> None:
    """Every run of s finished, as execute_run leaves it (config.json, DONE.json with its config's hash)."""
    (s.root / SWEEP_FILE).write_text(json.dumps(s.to_dict()))
    for run in s.plan():
        run.dir.mkdir(parents=True)
        (run.dir / "config.json").write_text(json.dumps(run.config))
        (run.dir / "model.pt").write_bytes(b"weights")
        (run.dir / runs.DONE).write_text(json.dumps({**run.row(), "status": "done", "seconds": 1.0,
                                                      "config_hash": plan.config_hash(run.config)}))


@pytest.fixture
def studies(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "tune_point", fake_point)
    a = study(tmp_path / "a", [Arm("pgd_at"), Arm("at_bsl"), Arm("taet")], [0, 1, 2])
    tuning.tune(a, log=lambda m: None)
    finish_runs(a)
    b = study(tmp_path / "b", [Arm("at_bsl"), Arm("taet"), B_ONLY], [0, 1])
    return a, b


def inode(p: Path) -> int:
    return os.stat(p).st_ino


def test_the_shared_tuning_and_runs_are_linked_and_nothing_else(studies, monkeypatch):
    a, b = studies
    linked = tuning.reuse_points(b, a.root, log=lambda m: None)
    assert sorted(d.parent.name for _, d in linked) == ["at_bsl", "at_bsl", "taet", "taet"]   # 2 values each
    for src, dst in linked:
        assert inode(src / "point.json") == inode(dst / "point.json")   # a hard link: no copy, the source as it was

    trained = []   # tune's own tune_point: it trains what has no record of its config
    monkeypatch.setattr(tuning, "tune_point", REAL_TUNE_POINT)
    monkeypatch.setattr(tuning, "fit", lambda cfg, *a, **k: trained.append(cfg.method_args) or fit(cfg, *a, **k))
    tuning.tune(b, log=lambda m: None)
    assert len(trained) == 2 and all(m["beta"] == 0.01 for m in trained)   # only B's own arm trains

    before = {p: p.read_bytes() for p in a.root.rglob("*") if p.is_file()}
    runs = sweep.reuse_runs(b, a.root, log=lambda m: None)
    assert sorted((d.parent.name, d.name) for _, d in runs) == [(arm, f"seed{s}") for arm in ("at_bsl", "taet")
                                                                for s in (0, 1)]
    for run in b.plan():   # the sweep finds the linked runs finished with its settings, and only those
        rec = plan.recorded(run)
        assert (rec is not None and rec["status"] == "done") == (run.arm != "taet_beta001"), run.dir
        if rec is not None:
            assert json.loads((run.dir / "arm.json").read_text())["method"] == run.config["method"]
    assert {p: p.read_bytes() for p in a.root.rglob("*") if p.is_file()} == before   # A is untouched
    record = json.loads((b.root / REUSED_FILE).read_text())
    assert [(r["kind"], len(r["linked"])) for r in record] == [("tuning", 4), ("runs", 4)]
    assert sweep.reuse_runs(b, a.root, log=lambda m: None) == []   # again: every folder exists, nothing linked


def test_a_record_without_its_run_folders_gives_its_readings_and_only_those(studies, monkeypatch):
    """Study A's tuning folders were lost with a replaced machine, its tuning.json kept: B adopts each reading
    the record holds for B's own configs, and trains the one whose reading the record lacks, and B's own arm."""
    import shutil
    a, b = studies
    record = json.loads((a.root / "tuning" / "tuning.json").read_text())
    missing = next(r for r in record["runs"] if r["arm"] == "taet" and r["factor"] == 0.5)
    missing["val_balanced_robustness"] = None   # finished, its reading never published
    (a.root / "tuning" / "tuning.json").write_text(json.dumps(record))
    for d in [d for d in (a.root / "tuning").iterdir() if d.is_dir()]:
        shutil.rmtree(d)

    adopted = tuning.reuse_points(b, a.root, log=lambda m: None)
    assert sorted((d.parent.name, d.name) for _, d in adopted) == [("at_bsl", "lrx0.5"), ("at_bsl", "lrx1"),
                                                                   ("taet", "lrx1")]
    trained = []
    monkeypatch.setattr(tuning, "tune_point", REAL_TUNE_POINT)
    monkeypatch.setattr(tuning, "fit", lambda cfg, *a, **k: trained.append((cfg.method_args.get("beta"), cfg.lr))
                        or fit(cfg, *a, **k))
    got = tuning.tune(b, log=lambda m: None)
    assert sorted(trained, key=str) == sorted([(0.01, 0.05), (0.01, 0.1), (0.1, 0.05)], key=str)
    rows = {(r["arm"], r["factor"]): r for r in got["runs"]}
    for arm in ("at_bsl", "taet"):
        for f in (0.5, 1.0):
            theirs = next(r for r in record["runs"] if (r["arm"], r["factor"]) == (arm, f))
            reused = rows[(arm, f)].get("reused_from")
            assert bool(reused) == (theirs["val_balanced_robustness"] is not None), (arm, f)
            if reused:
                assert rows[(arm, f)]["val_balanced_robustness"] == theirs["val_balanced_robustness"]
                assert rows[(arm, f)]["train_seconds"] == theirs["train_seconds"]
    assert got["choices"]["10"]["at_bsl"] == record["choices"]["10"]["at_bsl"]
    entries = json.loads((b.root / REUSED_FILE).read_text())
    assert [(e["kind"], len(e["linked"])) for e in entries] == [("tuning", 3)]
    said = tuning_record(b.root)[1]   # the study README's tuning section says so, and names the source
    assert "3 tuning runs were reused from a " in said and "reused.json" in said


def test_other_validation_or_evaluation_is_other_work(studies):
    a, b = studies
    other = dataclasses.replace(b, tuning={**SPEC, "val_fraction": 0.3})
    notes = []
    assert tuning.reuse_points(other, a.root, log=notes.append) == [] and "no tuning run linked" in notes[0]
    tuning.reuse_points(b, a.root, log=lambda m: None)
    tuning.tune(b, log=lambda m: None)
    more = dataclasses.replace(b, evaluation={**EVALUATION, "attacks": ["clean", "pgd20", "fgsm"]})
    assert sweep.reuse_runs(more, a.root, log=notes.append) == [] and "no study run linked" in notes[-1]
    assert not (b.root / "synthetic-ir10").exists()


def test_reuse_from_its_own_folder_is_one_line_and_exit_2(tmp_path, capsys):
    code = cli.main(["sweep", "--preset", "fmnist_lt_study_b", "--out", str(tmp_path), "--reuse-from", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--reuse-from" in err[0]
    assert not any(tmp_path.iterdir())
