"""The equal tuning budget: the same grid size for every arm, chosen on a validation split, never on the test set."""
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from taetlib import plan, report, tuning
from taetlib.arms import Arm
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.history import history_text
from taetlib.plan import Sweep
from taetlib.train import fit
from taetlib.tuning import LOSS_SCALES, TuningSpec, grid, tuning_points
from taetlib.tuning_choices import tuning_record

SPEC = {"factors": {"lr": [0.5, 1.0], "loss_scale": [1.0, 10.0]}, "params": {"taet": "loss_scale"},
        "attack": "pgd20", "val_fraction": 0.2}


class ReadTestSet(AssertionError):
    pass


class Poisoned(dict):
    """A test-split mapping that fails the test on any read."""

    def _read(self, *a, **k):
        raise ReadTestSet("the test set was read")

    __getitem__ = get = items = values = keys = __iter__ = __contains__ = __len__ = _read


def poisoned_load_lt(cfg, **kw):
    d = load_lt(cfg, **kw)
    d.test = Poisoned()
    return d


@pytest.mark.parametrize("spec, match", [
    ({"factors": {"lr": [0.5, 1.0], "loss_scale": [1.0]}, "params": {"taet": "loss_scale"}},
     "tuning.factors=.*as many values"),
    ({"factors": {"lr": [0.5, -1.0]}}, "tuning.factors\\['lr'\\]=.*> 0"),
    ({"factors": {"lr": [1.0], "loss_scale": [2.0]}, "params": {"pgd_at": "loss_scale"}},
     "pgd_at has no loss scale registered"),
    ({"factors": {"lr": [1.0]}, "attack": "pgd21"}, "attacks='pgd21'"),
    ({"factors": {"lr": [1.0]}, "val_fraction": 1.5}, "tuning.val_fraction=1.5"),
    ({"factors": {"lr": [1.0]}, "budget": 3}, "tuning=\\['budget'\\]: unknown keys"),
    ({"factors": {"lr": [1.0]}, "held_fixed": ["class_ordr"]}, "tuning.held_fixed='class_ordr'"),
    ({"factors": {"lr": [1.0]}, "held_fixed": ["lr"]}, "tuning.held_fixed='lr'.*not the method"),
])
def test_bad_specs_are_refused_by_name(spec, match):
    with pytest.raises(ConfigError, match=match):
        TuningSpec.of(spec)


def test_the_grid_scales_lr_or_the_whole_loss_scale():
    spec = TuningSpec.of(SPEC)
    pgd = grid(spec, RunConfig(method="pgd_at", lr=0.1).to_dict())
    assert [p["overrides"] for p in pgd] == [{"lr": 0.05}, {"lr": 0.1}]
    taet = grid(spec, RunConfig(method="taet", harl_alpha=0.1, harl_beta=0.1, harl_gamma=0.1).to_dict())
    assert taet[1]["overrides"] == {"harl_alpha": 1.0, "harl_beta": 1.0, "harl_gamma": 1.0}
    assert len(pgd) == len(taet) == spec.size()


def test_tuning_trains_the_weights_the_run_keeps_without_reading_the_test_set(tmp_path):
    """A CFA arm tunes with its FAWA average (what its runs keep); best_val_pgd, which needs eval epochs,
    tunes on the last weights; no tuning run evaluates on the test set."""
    s = Sweep(root=tmp_path, dataset="synthetic", irs=[10], seeds=[0], tuning=SPEC, config={"eval_every": 2},
              arms=[Arm("cfa", overrides={"select": "fawa"}), Arm("pgd_at", overrides={"select": "best_val_pgd"})])
    points = tuning_points(s, TuningSpec.of(SPEC))
    assert {(p["arm"], p["config"]["select"]) for p in points} == {("cfa", "fawa"), ("pgd_at", "last")}
    assert all(p["config"]["eval_every"] == 0 for p in points)


def study_sweep(root, data_root) -> Sweep:
    config = {"model": "small_cnn", "n_max": 60, "test_per_class": 20, "epochs": 1, "stabilization_epochs": 1,
              "attack_steps": 1, "batch_size": 64, "eval_every": 1, "data_root": str(data_root), "augment": "none"}
    return Sweep(root=root, dataset="synthetic", irs=[10], arms=[Arm("pgd_at"), Arm("taet")], seeds=[3, 4],
                 config=config, tuning=SPEC)


def test_a_tuning_sweep_refuses_to_plan_without_its_choices(tmp_path):
    with pytest.raises(ConfigError, match="tuning=.*does not exist yet; run `python -m taetlib tune"):
        study_sweep(tmp_path / "sw", tmp_path).plan()


def test_a_study_on_a_new_machine_is_told_to_restore_the_tuning_git_holds(tmp_path):
    """Study A's tuning record is committed (results/fmnist_lt_study_a/record/); a study never published has
    none, so it is told to tune (a name of its own keeps this true as the real studies publish)."""
    from dataclasses import replace

    from taetlib import presets
    from taetlib.plan import from_preset
    with pytest.raises(ConfigError, match="in git: run `python -m taetlib restore --preset fmnist_lt_study_a"):
        from_preset(presets.get("fmnist_lt_study_a"), tmp_path / "a").plan()
    unpublished = replace(presets.get("fmnist_lt_study_a"), name="study_never_published")
    with pytest.raises(ConfigError, match="does not exist yet; run `python -m taetlib tune --preset study_never_pub"):
        from_preset(unpublished, tmp_path / "u").plan()


@pytest.mark.slow
def test_tuning_chooses_on_validation_never_reads_the_test_set_and_the_sweep_uses_its_choice(tmp_path, monkeypatch):
    sweep = study_sweep(tmp_path / "sw", tmp_path / "data")
    # the control: the same poisoned data fails a run that evaluates on the test set while training
    cfg = RunConfig(dataset="synthetic", **{**sweep.config, "method": "pgd_at"})
    with pytest.raises(ReadTestSet):
        fit(cfg, poisoned_load_lt(cfg), tmp_path / "control")
    monkeypatch.setattr(tuning, "load_lt", poisoned_load_lt)
    record = tuning.tune(sweep, jobs=1, log=lambda m: None)

    rows = pd.read_csv(tmp_path / "sw" / "tuning" / "tuning.csv")
    assert len(rows) == 4 and (rows["status"] == "done").all() and set(rows["seed"]) == {3}
    assert rows.groupby("arm").size().to_dict() == {"pgd_at": 2, "taet": 2}
    assert rows["val_balanced_robustness"].between(0, 1).all() and (rows["seconds"] > 0).all()
    assert (rows["sgd_steps"] > 0).all() and rows.groupby("arm")["chosen"].sum().to_dict() == {"pgd_at": 1, "taet": 1}
    for arm, group in rows.groupby("arm"):   # the best on validation; of ties, the factor nearest 1
        top = group[group["val_balanced_robustness"] == group["val_balanced_robustness"].max()]
        best = top.loc[top["factor"].map(lambda f: abs(math.log(f))).idxmin()]
        assert record["choices"]["10"][arm]["value"] == pytest.approx(best["value"])
        assert group.loc[group["chosen"], "value"].item() == pytest.approx(best["value"])
    assert record["cost"]["runs"] == 4 and record["cost"]["seconds"] > 0
    assert record["cost"]["sessions"] == 1 and record["cost"]["wall_seconds"] > 0   # its wall time, on record
    assert json.loads((tmp_path / "sw" / "tuning" / "tuning.json").read_text())["choices"] == record["choices"]
    # every run of the tuning seed trained on the training set less the validation split, with eval_every=0
    cfgs = [json.loads(p.read_text())["config"] for p in (tmp_path / "sw" / "tuning").rglob("point.json")]
    assert len(cfgs) == 4 and all(c["eval_every"] == 0 and c["seed"] == 3 for c in cfgs)

    page = report.tuning_section(tmp_path / "sw")   # the sweep report states the choices and the cost
    assert "4 tuning runs" in page and "taet" in page and "loss_scale" in page and report.tuning_section(tmp_path) == ""

    runs = sweep.plan()   # every seed gets the chosen value
    chosen = record["choices"]["10"]
    for r in runs:
        cfg = RunConfig.from_dict(r.config)
        for key, value in chosen[r.arm]["overrides"].items():   # lr, or TAET's loss scale in its method_args
            arg = LOSS_SCALES.get(cfg.method, {}).get(key)
            assert (getattr(cfg.hparams, arg) if arg else r.config[key]) == pytest.approx(value)
    assert {r.config["seed"] for r in runs} == {3, 4}

    def no_training(*a, **k):
        raise AssertionError("a recorded tuning run was trained again")
    monkeypatch.setattr(tuning, "fit", no_training)
    assert tuning.tune(sweep, jobs=1, log=lambda m: None)["choices"] == record["choices"]


def test_tune_on_a_preset_without_a_spec_is_one_clear_error(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "taetlib", "tune", "--preset", "fmnist_lt_demo", "--out",
                           str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: preset='fmnist_lt_demo': has no tuning spec")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "t").exists()


def test_a_recorded_point_is_kept_across_a_new_config_field_and_redone_for_other_settings(tmp_path, monkeypatch):
    """A tuning run recorded before a RunConfig field existed (its config lacks it) is this config when the
    field is at its default; a record with another lr is not."""
    config = RunConfig(dataset="synthetic", method="pgd_at").to_dict()
    older = {k: v for k, v in config.items() if k != "fawa_decay"}
    saved = {"status": "done", "val_balanced_robustness": 0.3}
    (tmp_path / plan.POINT_FILE).write_text(json.dumps({"config": older, "result": saved}))

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(tuning, "load_lt", no_training)
    assert tuning.tune_point(config, tmp_path, {"val_fraction": 0.2, "attack": "pgd20"}) == saved
    (tmp_path / plan.POINT_FILE).write_text(json.dumps({"config": {**older, "lr": 0.5}, "result": saved}))
    with pytest.raises(AssertionError, match="trained again"):
        tuning.tune_point(config, tmp_path, {"val_fraction": 0.2, "attack": "pgd20"})


def test_the_tuning_cost_counts_every_session_of_a_resumed_run(tmp_path, monkeypatch):
    """A point resumed after a kill reports only its last call's seconds; the cost reads each point's history,
    so the epochs trained before the kill count too."""
    epochs = {"pgd_at": [30.0, 40.0], "taet": [5.0, 6.0, 7.0]}

    def resumed_point(config, run_dir, spec):   # the history holds every epoch, the call ran the last one
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        secs = epochs[config["method"]]
        records = [{"epoch": e, "seconds": s, "eval_seconds": 0.5} for e, s in enumerate(secs, 1)]
        (run_dir / "history.jsonl").write_text(history_text(records))
        return {"status": "done", "error": "", "val_balanced_accuracy": 0.5, "val_balanced_robustness": 0.3,
                "sgd_steps": 10, "seconds": secs[-1]}
    monkeypatch.setattr(tuning, "tune_point", resumed_point)
    record = tuning.tune(study_sweep(tmp_path / "sw", tmp_path / "data"), jobs=1, log=lambda m: None)
    per_point = {arm: sum(s) + 0.5 * len(s) for arm, s in epochs.items()}   # 2 values per arm
    assert record["cost"]["seconds"] == pytest.approx(2 * sum(per_point.values()))
    rows = pd.read_csv(tmp_path / "sw" / "tuning" / "tuning.csv")
    assert rows.groupby("arm")["train_seconds"].sum().to_dict() == pytest.approx(
        {arm: 2 * v for arm, v in per_point.items()})


def test_a_finished_tuning_restored_without_its_run_folders_trains_nothing_and_keeps_its_record(tmp_path,
                                                                                                  monkeypatch):
    """On a new machine a study's tuning.json and sweep.json come back from git, its run folders may not (Study
    A's were lost): tune then trains nothing and leaves the record as it was. A record that lacks a run, was
    made with another spec, or whose sweep.json gives its runs other configs, is no finished tuning of this
    sweep: its runs train."""
    trained = []

    def point(config, run_dir, spec):
        trained.append(run_dir)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return {"status": "done", "error": "", "val_balanced_accuracy": 0.5,
                "val_balanced_robustness": 0.3 + 0.01 * len(trained), "sgd_steps": 10, "seconds": 1.0}
    monkeypatch.setattr(tuning, "tune_point", point)
    sweep = study_sweep(tmp_path / "sw", tmp_path / "data")
    first = tuning.tune(sweep, jobs=1, log=lambda m: None)
    (tmp_path / "sw" / plan.SWEEP_FILE).write_text(json.dumps(sweep.to_dict(), default=str))   # as the sweep writes
    root = tmp_path / "sw" / "tuning"
    assert len(trained) == first["cost"]["runs"] == 4
    for folder in [d for d in root.iterdir() if d.is_dir() and d.name != "sessions"]:   # gone with the machine
        shutil.rmtree(folder)
    for session_file in (root / "sessions").iterdir():   # the record kept them; this one is a test's
        session_file.unlink()
    saved = (root / "tuning.json").read_bytes()
    trained.clear()
    assert tuning.tune(sweep, jobs=1, log=lambda m: None)["choices"] == first["choices"]
    assert trained == [] and (root / "tuning.json").read_bytes() == saved
    assert not list((root / "sessions").iterdir())   # no session opened: nothing ran

    lacking = {**json.loads(saved), "runs": json.loads(saved)["runs"][1:]}
    (root / "tuning.json").write_text(json.dumps(lacking))
    tuning.tune(sweep, jobs=1, log=lambda m: None)
    assert len(trained) == 4
    other = {**json.loads((root / "tuning.json").read_text()), "spec": {**sweep.tuning, "val_fraction": 0.3}}
    (root / "tuning.json").write_text(json.dumps(other))
    trained.clear()
    tuning.tune(sweep, jobs=1, log=lambda m: None)
    assert len(trained) == 4
    trained.clear()   # a complete record again, but its sweep.json says its runs trained another number of epochs
    assert tuning.tune(sweep, jobs=1, log=lambda m: None) and trained == []
    older = {**sweep.to_dict(), "config": {**sweep.config, "epochs": 2}}
    (tmp_path / "sw" / plan.SWEEP_FILE).write_text(json.dumps(older, default=str))
    for folder in [d for d in root.iterdir() if d.is_dir() and d.name != "sessions"]:
        shutil.rmtree(folder)
    tuning.tune(sweep, jobs=1, log=lambda m: None)
    assert len(trained) == 4


def test_arms_that_differ_only_in_a_held_fixed_setting_share_one_tuning_and_its_choice(tmp_path, monkeypatch):
    """Study B's class order is its factor: the hard_rarest arm is not tuned on its own, it takes the value
    its label-order arm was tuned to, from tuning runs under label order; other arms still tune their own."""
    readings = {0.5: 0.4, 1.0: 0.3, 10.0: 0.2}   # the tuned param's factor -> validation robustness
    seen = []

    def point(config, run_dir, spec):
        seen.append(config)
        cfg = RunConfig.from_dict(config)
        factor = cfg.lr / 0.1 if cfg.method == "pgd_at" else cfg.hparams.alpha / 0.1
        return {"status": "done", "error": "", "val_balanced_accuracy": 0.5,
                "val_balanced_robustness": readings[round(factor, 6)], "sgd_steps": 10, "seconds": 1.0}
    monkeypatch.setattr(tuning, "tune_point", point)
    hard = {"class_order": "hard_rarest"}
    arms = [Arm("pgd_at"), Arm("pgd_at", overrides=hard, label="pgd_at-hard"), Arm("taet", overrides=hard)]
    sweep = Sweep(root=tmp_path, dataset="fashion_mnist", irs=[10], seeds=[0, 1], arms=arms,
                  config={"lr": 0.1}, tuning={**SPEC, "held_fixed": ["class_order"]})
    record = tuning.tune(sweep, jobs=1, log=lambda m: None)
    assert len(seen) == 4 and all(c["class_order"] == "label" for c in seen)   # pgd_at's 2 values, taet's 2
    chosen = record["choices"]["10"]
    assert chosen["pgd_at-hard"] == {**chosen["pgd_at"], "tuned_as": "pgd_at"} and chosen["pgd_at"]["factor"] == 0.5
    assert chosen["taet"]["tuned_as"] == "taet" and chosen["taet"]["factor"] == 1.0
    runs = {r.arm: r.config for r in sweep.plan() if r.config["seed"] == 1}
    assert runs["pgd_at-hard"]["lr"] == runs["pgd_at"]["lr"] == pytest.approx(0.05)
    assert runs["pgd_at-hard"]["class_order"] == runs["taet"]["class_order"] == "hard_rarest"
    rows = pd.read_csv(tmp_path / "tuning" / "tuning.csv")
    assert set(rows["arms"]) == {"pgd_at pgd_at-hard", "taet"}
    _, text = tuning_record(tmp_path)
    assert "pgd_at-hard takes pgd_at's" in text and "taet takes" not in text
    # without held_fixed the same arms tune apart: 6 runs
    seen.clear()
    tuning.tune(Sweep(root=tmp_path / "apart", dataset="fashion_mnist", irs=[10], seeds=[0], arms=arms,
                      config={"lr": 0.1}, tuning=SPEC), jobs=1, log=lambda m: None)
    assert len(seen) == 6


def test_the_tuning_record_names_the_arms_chosen_at_the_edge_of_their_grid(tmp_path):
    """An arm whose chosen value is its grid's highest or lowest may be under-tuned: its best may lie beyond the
    grid. The record says which; an arm chosen inside the grid is not named."""
    choice = {"param": "lr", "value": 0.1, "overrides": {}, "val_balanced_robustness": 0.5}
    rec = {"spec": {"factors": {"lr": [0.25, 0.5, 1.0, 2.0]}}, "seed": 0, "attack": "pgd20", "validation": "v",
           "cost": {"runs": 12, "seconds": 3600.0, "sgd_steps": 1},
           "choices": {"10": {"top": {**choice, "factor": 2.0}, "inside": {**choice, "factor": 1.0},
                              "bottom": {**choice, "factor": 0.25}}}}
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "tuning.json").write_text(json.dumps(rec))
    _, text = tuning_record(tmp_path)
    assert ("Chosen at the edge of the grid, so the best value may lie beyond it: top (x2, its grid's highest), "
            "bottom (x0.25, its grid's lowest).") in text and "inside" not in text
    rec["choices"]["10"] = {"inside": {**choice, "factor": 0.5}}
    (tmp_path / "tuning" / "tuning.json").write_text(json.dumps(rec))
    assert "edge" not in tuning_record(tmp_path)[1]
