"""Sweeps: planning, parameters, skip / fail bookkeeping and aggregation (fast, no kernel), then two
small real sweeps on the synthetic dataset through papermill."""
import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taetlib import cli, headline, notebook_exec, plan, report, runs, stats, sweep
from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.sessions import read_sessions

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    p = argparse.ArgumentParser()
    sweep.add_cli(p.add_subparsers(dest="command"))
    return p.parse_args(["sweep", *argv])


# ------------------------------------------------------------------------------ planning
def test_run_layout(tmp_path):
    assert runs.run_path(tmp_path, "cifar10", 10.0, "taet", True, 2) == tmp_path / "cifar10-ir10/taet+robustlt/seed2"
    assert runs.run_path(tmp_path, "cifar10", 2.5, "at_bsl", False, 0).parent.parent.name == "cifar10-ir2.5"


def test_plan_records_invalid_runs_and_refuses_axes_in_set(tmp_path):
    s = plan.Sweep(tmp_path, "synthetic", [10, 100], [("taet", False), ("nonsense", False)], [0, 1],
                    config={"epochs": 2, "stabilization_epochs": 1})
    runs = s.plan()
    assert len(runs) == 8
    bad = [r for r in runs if r.error]
    assert len(bad) == 4 and all("method='nonsense'" in r.error for r in bad)
    good = [r for r in runs if not r.error][0]
    assert good.config["imbalance_ratio"] == 10.0 and good.config["epochs"] == 2
    assert "alpha" in good.config["method_args"]
    with pytest.raises(ConfigError, match="sweep axes"):
        plan.Sweep(tmp_path, "synthetic", [10], [("taet", False)], [0], config={"seed": 3}).plan()


def test_cli_arguments_and_presets(tmp_path):
    s = plan.sweep_from_args(parse("--dataset", "synthetic", "--irs", "10", "20", "--methods", "taet", "pgd_at",
                                    "--seeds", "0", "1", "--robustlt", "--set", "epochs=3", "device=cpu",
                                    "--eval-param", "pgd20.steps=5", "--out", str(tmp_path / "x")))
    assert [(a.method, a.robustlt) for a in s.arms] == [("taet", False), ("taet", True), ("pgd_at", False),
                                                        ("pgd_at", True)]
    assert s.irs == [10.0, 20.0] and s.seeds == [0, 1] and s.config == {"epochs": 3, "device": "cpu"}
    assert s.evaluation["attack_params"] == {"pgd20": {"steps": 5}} and s.root == tmp_path / "x"
    assert len(s.plan()) == 16

    p = plan.sweep_from_args(parse("--preset", "fmnist_lt_demo"))
    from taetlib import presets
    demo = presets.get("fmnist_lt_demo")
    assert p.arms == list(demo.sweep["arms"]) and p.irs == demo.sweep["irs"]
    assert p.dataset == "fashion_mnist" and p.root.name == "fmnist_lt_demo"
    assert [r.config["robustlt_b"] for r in p.plan() if r.config["method"] == "taet"] == [0.5] * 3  # method override
    assert "attack_params" not in presets.get("fmnist_lt_demo").evaluation  # the preset is not mutated
    only = plan.sweep_from_args(parse("--preset", "fmnist_lt_demo", "--methods", "pgd_at", "--robustlt-only"))
    assert [(a.method, a.robustlt) for a in only.arms] == [("pgd_at", True)]
    arms = plan.sweep_from_args(parse("--dataset", "synthetic", "--arms", "pgd_at",
                                       "taet_unit=taet:harl_alpha=1,harl_beta=1,harl_gamma=1", "--out", str(tmp_path)))
    planned = {r.arm: r for r in arms.plan()}
    assert set(planned) == {"pgd_at", "taet_unit"} and planned["taet_unit"].dir.parent.name == "taet_unit"
    unit = planned["taet_unit"].config
    assert unit["method"] == "taet" and (unit["method_args"]["alpha"], unit["method_args"]["beta"]) == (1.0, 1.0)
    with pytest.raises(ConfigError, match="appear twice"):
        plan.sweep_from_args(parse("--dataset", "synthetic", "--arms", "taet", "taet"))


def test_unknown_evaluation_setting_is_refused_before_anything_runs(tmp_path):
    s = plan.Sweep(tmp_path / "sw", "synthetic", [10], [("pgd_at", False)], [0], evaluation={"per_clas": 5})
    with pytest.raises(ConfigError, match=r"\['per_clas'\]: not parameters of notebook 04_evaluation"):
        sweep.run_sweep(s)
    assert not (tmp_path / "sw").exists()


def test_dry_run_prints_plan_and_exits_2_when_it_is_invalid(tmp_path, capsys):
    argv = ["sweep", "--dataset", "synthetic", "--irs", "10", "--methods", "pgd_at", "bogus", "--out",
            str(tmp_path / "sw"), "--dry-run"]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and "synthetic-ir10/pgd_at/seed0" in out and "INVALID" in out and "bogus" in out
    assert err.startswith("error: the sweep plan has 1 bad cell(s)") and err.count("\n") == 1, err
    assert cli.main([a for a in argv if a != "bogus"]) == 0 and "INVALID" not in capsys.readouterr().out
    assert not (tmp_path / "sw").exists()


def test_an_ir_that_leaves_a_class_without_training_images_is_refused_by_the_plan(tmp_path):
    """IR 100 with n_max 50 gives the rarest class floor(0.5) = 0 images: refused before anything is written
    (it used to fail inside notebook 01); IR 50 still gives it one."""
    s = plan.Sweep(tmp_path / "sw", "synthetic", [50, 100], [("pgd_at", False)], [0], config={"n_max": 50})
    with pytest.raises(ConfigError, match=r"1 bad cell.*ir100/pgd_at/seed0: imbalance_ratio=100 with n_max=50 "
                                          r"gives the rarest class 0 training images.*Fix: imbalance_ratio <= 50"):
        sweep.run_sweep(s)
    assert not (tmp_path / "sw").exists()


# ------------------------------------------------------------------------------ notebook side
def test_notebook_config_names_the_bad_parameter():
    ok = runs.notebook_config({"dataset": "synthetic", "epochs": 3, "stabilization_epochs": 1}, {"harl_beta": 0.2})
    assert ok.epochs == 3 and ok.method_args["beta"] == 0.2
    with pytest.raises(ConfigError, match=r"imbalance_ratio='ten': expected float"):
        runs.notebook_config({"imbalance_ratio": "ten"})
    with pytest.raises(ConfigError, match=r"epoch.*Did you mean 'epochs'"):
        runs.notebook_config({}, {"epoch": 3})
    with pytest.raises(ConfigError, match=r"extra=.*expected a dict"):
        runs.notebook_config({}, ["epochs", 3])
    with pytest.raises(ConfigError, match=r"sets \['epochs'\]"):
        runs.notebook_config({"epochs": 3}, {"epochs": 4})
    from typing import Optional
    assert runs.check_params(irs=([10, 20.5], list[float]))["irs"] == [10.0, 20.5]
    with pytest.raises(ConfigError, match=r"irs='10': expected a list"):
        runs.check_params(irs=("10", list[float]))
    with pytest.raises(ConfigError, match=r"interactive='no'"):
        runs.check_params(interactive=("no", Optional[bool]))


def test_notebook_params_split_declared_and_extra():
    cfg = RunConfig(dataset="synthetic").to_dict()
    p = notebook_exec.notebook_params(runs.NB_TRAIN, cfg, run_dir="/r", interactive=False, attacks=["clean"])
    assert p["dataset"] == "synthetic" and p["run_dir"] == "/r" and "attacks" not in p
    assert p["extra"]["method_args"]["alpha"] == 0.1 and "dataset" not in p["extra"]
    # a method setting the notebook declares by its 0.1 name comes out of method_args, so they never disagree
    assert p["stabilization_epochs"] == 40 and "stabilization_epochs" not in p["extra"]["method_args"]
    assert runs.notebook_config({k: v for k, v in p.items() if k not in ("extra", "run_dir", "interactive")},
                                 p["extra"]) == RunConfig.from_dict(cfg)
    assert set(p) - {"extra", "run_dir", "interactive"} <= notebook_exec.declared_parameters(runs.NB_TRAIN)
    with pytest.raises(ConfigError, match="takes no parameters"):
        notebook_exec.notebook_params(runs.NB_EVAL, {"harl_alpha": 0.1})


def test_stage1_checkpoint_checks_settings(tmp_path):
    cfg = RunConfig(dataset="synthetic", epochs=4, stabilization_epochs=2)
    with pytest.raises(FileNotFoundError, match="02_stabilization_stage"):
        runs.stage1_checkpoint(tmp_path, cfg)
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "last.pt").write_bytes(b"")
    cfg.replace(lr=0.05).save(tmp_path / "stage1" / "config.json")
    with pytest.raises(ConfigError, match=r"'lr': \(0.05, 0.1\)"):
        runs.stage1_checkpoint(tmp_path, cfg)
    cfg.replace(device="cpu").save(tmp_path / "stage1" / "config.json")
    assert runs.stage1_checkpoint(tmp_path, cfg) == tmp_path / "stage1" / "last.pt"


# ------------------------------------------------------------------------------ bookkeeping
def test_finished_runs_keep_their_record_and_failed_ones_are_recorded(tmp_path):
    s = plan.Sweep(tmp_path, "synthetic", [10], [("pgd_at", False), ("bogus", False)], [0])
    good, bad = s.plan()
    rec = sweep.execute_run(bad, {})
    assert rec["status"] == "failed" and "bogus" in rec["error"]
    assert json.loads((bad.dir / runs.FAILED).read_text())["error"] == rec["error"]
    good.dir.mkdir(parents=True)
    (good.dir / runs.DONE).write_text(json.dumps({"config_hash": plan.config_hash(good.config), "seconds": 42.5}))
    rec = sweep.execute_run(good, {})   # a resumed sweep keeps the earlier run's status and time
    assert (rec["status"], rec["seconds"], rec["resumed"]) == ("done", 42.5, True)
    assert report.status_counts(pd.DataFrame([rec, {**rec, "resumed": False}])) == {"done": 1, "skipped": 1,
                                                                                    "failed": 0, "not started": 0}
    good.config = {**good.config, "epochs": 7}  # same folder, other settings: never silently reused
    rec = sweep.execute_run(good, {})
    assert rec["status"] == "failed" and "other settings" in rec["error"]


def test_a_run_finished_by_taetlib_0_1_is_still_finished(tmp_path):
    """0.1 wrote config.json with flat method settings and hashed that form into DONE.json: a resumed sweep
    reads the run's config.json instead of redoing (or refusing) it."""
    old = json.loads((Path(__file__).parent / "data" / "config_v0_taet.json").read_text())
    shared = {k: v for k, v in old.items() if k not in (*plan.SWEEP_AXES, "dataset")}
    (run,) = plan.Sweep(tmp_path, old["dataset"], [old["imbalance_ratio"]], [("taet", False)], [old["seed"]],
                         config=shared).plan()
    assert not run.error and plan.config_hash(run.config) != plan.config_hash(old)
    run.dir.mkdir(parents=True)
    (run.dir / "config.json").write_text(json.dumps(old))
    (run.dir / runs.DONE).write_text(json.dumps({"config_hash": plan.config_hash(old)}))
    rec = sweep.execute_run(run, {})   # kept, not redone: runs.csv keeps its record and says it was resumed
    assert plan.recorded(run)["status"] == "done" and rec["status"] == "done" and rec["resumed"]
    run.config = {**run.config, "method_args": {**run.config["method_args"], "alpha": 0.4}}
    assert "other settings" in sweep.execute_run(run, {})["error"]


def summary_table(clean, robust, tail):
    rows = []
    for protocol in ("balanced", "long_tailed"):
        rows.append({"attack": "clean", "protocol": protocol, "overall": clean + 0.05, "balanced": clean,
                     "tail": clean - 0.1})
        rows.append({"attack": "pgd20", "protocol": protocol, "overall": robust + 0.05, "balanced": robust,
                     "tail": tail, "tail_taet": tail + 0.01, "tail_robustlt": tail + 0.02, "weakest_k": tail - 0.1,
                     "worst_recall": tail - 0.15})
    return pd.DataFrame(rows)


def per_class_table(n=(50, 50, 50), train_count=(100, 40, 10)):
    """A run's per-class table: each protocol's test images and training count per class."""
    return pd.DataFrame([{"attack": a, "protocol": p, "class": c, "n": k, "train_count": t}
                         for a in ("clean", "pgd20") for p in ("balanced", "long_tailed")
                         for c, (k, t) in enumerate(zip(n, train_count))])


def test_a_local_sweep_runs_seed_major_and_records_in_plan_order(tmp_path, monkeypatch):
    """A sweep stopped part-way then holds whole seeds of every arm (paired comparisons read those)."""
    s = plan.Sweep(tmp_path, "synthetic", [10], [("pgd_at", False), ("at_bsl", False)], [0, 1, 2],
                   config={"epochs": 1})
    ran = []

    def fake_pmap(fn, items, jobs, on_result=None):
        ran.extend((r.arm, r.config["seed"]) for r, *_ in items)
        return [{"run": str(r.dir), "seed": r.config["seed"], "arm": r.arm} for r, *_ in items]
    monkeypatch.setattr(sweep, "pmap", fake_pmap)
    monkeypatch.setattr(sweep, "_prepare", lambda *a: None)
    monkeypatch.setattr(sweep, "finish", lambda sw, root, status, *a, **k: {"status": status})
    status = sweep.sweep_local(s, jobs=2, log=lambda *_: None)["status"]
    assert ran == [("pgd_at", 0), ("at_bsl", 0), ("pgd_at", 1), ("at_bsl", 1), ("pgd_at", 2), ("at_bsl", 2)]
    assert [(a, k) for a, k in zip(status.arm, status.seed)] == [(r.arm, r.config["seed"]) for r in s.plan()]


def test_the_primary_arms_run_first_every_seed_of_them():
    """With declared primary comparisons their arms' runs start first (seed-major among them), then the rest."""
    arms = [("pgd_at", False), ("at_bsl", False), ("taet", False)]
    primary = [{"a": "taet", "b": "at_bsl", "metric": "balanced_robustness", "imbalance_ratio": 10.0,
                "protocol": "balanced"}]
    s = plan.Sweep("runs/x", "synthetic", [10], arms, [0, 1], config={"epochs": 1}, primary=primary)
    runs = s.plan()
    assert [(runs[i].arm, runs[i].config["seed"]) for i in sweep.run_order(s, runs)] == [
        ("at_bsl", 0), ("taet", 0), ("at_bsl", 1), ("taet", 1), ("pgd_at", 0), ("pgd_at", 1)]


def test_run_metrics_and_aggregate():
    m = headline.run_metrics(summary_table(0.8, 0.4, 0.2), per_class_table())
    got = m[m.protocol == "balanced"].set_index("metric")["value"]
    assert got.to_dict() == pytest.approx({"clean_accuracy": 0.85, "balanced_accuracy": 0.8, "robust_accuracy": 0.45,
                                           "balanced_robustness": 0.4, "tail_robustness": 0.2,
                                           "taet_tail_robustness": 0.21, "robustlt_tail_robustness": 0.22,
                                           "weakest_k_robustness": 0.1, "worst_class_robustness": 0.05})
    assert set(m.robust_attack) == {"pgd20"}
    missing = headline.run_metrics(summary_table(0.8, 0.4, 0.2), per_class_table(), "fgsm")["value"].isna().sum()
    assert missing == 2 * (len(report.METRICS) - 2)

    frames = []
    for seed, (c, r) in enumerate([(0.8, 0.4), (0.7, 0.3)]):
        frames.append(headline.run_metrics(summary_table(c, r, 0.1), per_class_table()).assign(
            run=f"r{seed}", dataset="synthetic", imbalance_ratio=10.0, method="taet", robustlt=False, arm="taet",
            seed=seed))
    agg = report.aggregate(pd.concat(frames))
    assert len(agg) == 2 * len(report.METRICS) and (agg.n == 2).all()
    row = agg[(agg.protocol == "balanced") & (agg.metric == "balanced_accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(0.75) and row["std"] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    assert list(agg[agg.protocol == "balanced"].metric) == report.METRICS


def test_a_class_mean_weighs_as_the_images_of_the_classes_it_averages():
    """On the long-tailed protocol a rare class holds few test images: the worst class's value weighs as its
    own images, a balanced score as k^2 / sum 1/n_c, an accuracy as every image; one seed's interval of a
    worst class at 0 is then the Wilson bound of its own images."""
    summary = summary_table(0.8, 0.4, 0.2).assign(worst_class=2, weakest_classes="2,1")
    got = headline.run_metrics(summary, per_class_table(n=(100, 50, 10)))
    images = got[got.protocol == "long_tailed"].set_index("metric")["images"]
    assert images["robust_accuracy"] == 160 and images["worst_class_robustness"] == 10
    assert images["balanced_robustness"] == pytest.approx(9 / (1 / 100 + 1 / 50 + 1 / 10))
    assert images["weakest_k_robustness"] == pytest.approx(4 / (1 / 50 + 1 / 10))
    assert images["tail_robustness"] == 10   # the rarest third of 3 classes: class 2
    assert images["taet_tail_robustness"] == 10   # the rarer half: 3 - 3 // 2 = 2 head classes
    one = report.aggregate(got[got.metric == "worst_class_robustness"].assign(
        value=0.0, run="r", dataset="d", imbalance_ratio=10.0, method="m", robustlt=False, arm="m", seed=0))
    lt = one[one.protocol == "long_tailed"].iloc[0]
    assert (lt["low"], lt["high"]) == pytest.approx(stats.wilson(0, 10))


def test_collect_aggregate_and_report_from_saved_runs(tmp_path):
    from test_plots import fake_run  # run folders as train + evaluate_run leave them
    runs = [fake_run(tmp_path, m, ir, seed, g) for ir in (10.0, 100.0) for m, g in (("taet", 1.0), ("pgd_at", 0.8))
            for seed in (0, 1)]
    def row(d, method, status="done", error=""):
        return {"run": str(d), "dataset": "synthetic", "imbalance_ratio": json.loads(
                (d / "config.json").read_text())["imbalance_ratio"] if status == "done" else 10.0,
                "method": method, "robustlt": False, "arm": method, "seed": 0, "status": status, "seconds": 1.0,
                "error": error, "notebook": ""}

    status = pd.DataFrame([row(d, d.parts[-2]) | {"seed": int(d.name[4:])} for d in runs]
                          + [row(tmp_path / "x", "mart", "failed", "ConfigError: boom")])
    metrics = headline.collect(status, None)
    assert len(metrics) == 8 * 2 * 5 and set(metrics.robust_attack) == {"pgd20"}
    agg = report.aggregate(metrics)
    assert len(agg) == 2 * 2 * 2 * 5 and (agg.n == 2).all()
    s = plan.Sweep(tmp_path, "synthetic", [10, 100], [("taet", False), ("pgd_at", False)], [0, 1])
    page = report.write_sweep_report(tmp_path, s, status, agg, ["report notebook failed: x"]).read_text()
    assert "8 done, 0 skipped, 1 failed" in page and "ConfigError: boom" in page and "report notebook failed" in page
    assert page.count("Aggregate,") == 2 and "balanced_robustness" in page and "± " in page
    assert "plotly.min.js" in page and (tmp_path / "plotly.min.js").exists()


# ------------------------------------------------------------------------------ the numbers of a sweep
def fake_evaluation(notebook, out, params, *_, **__):
    """Stands in for papermill: notebook 04 leaves eval/summary.csv as evaluate() writes it, with numbers
    drawn from the run folder's name (so seeds differ); the other notebooks leave only their folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if notebook != runs.NB_EVAL:
        return out
    run = Path(params["run_dir"])
    g = np.random.default_rng(zlib.crc32(str(run).encode()))
    rows = [{"attack": a, "protocol": p, "eps": 0.0 if a == "clean" else 0.1, "n": 100,
             **dict(zip(("overall", "balanced", "head", "medium", "tail"), g.uniform(0.05, 0.95, 5).round(4)))}
            for p in ("balanced", "long_tailed") for a in ("clean", "fgsm", "pgd20")]
    (run / "eval").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "eval" / "summary.csv", index=False)
    return out


def metrics_from_summaries(runs_csv: Path, robust="pgd20") -> pd.DataFrame:
    """The headline metrics of every finished run read off its own eval/summary.csv, then mean and
    sample std over seeds with the statistics module: what aggregate.csv must hold."""
    from statistics import mean, stdev
    where = {"clean_accuracy": ("clean", "overall"), "balanced_accuracy": ("clean", "balanced"),
             "robust_accuracy": (robust, "overall"), "balanced_robustness": (robust, "balanced"),
             "tail_robustness": (robust, "tail"), "taet_tail_robustness": (robust, "tail_taet"),
             "robustlt_tail_robustness": (robust, "tail_robustlt"), "weakest_k_robustness": (robust, "weakest_k"),
             "worst_class_robustness": (robust, "worst_recall")}
    values: dict[tuple, list[float]] = {}
    for run in pd.read_csv(runs_csv).query("status == 'done'").itertuples():
        summary = pd.read_csv(Path(run.run) / "eval" / "summary.csv").set_index(["attack", "protocol"])
        for protocol in ("balanced", "long_tailed"):
            for metric, (attack, column) in where.items():
                if column not in summary:   # a summary without the column has no such metric
                    continue
                key = (run.imbalance_ratio, run.arm, protocol, metric)
                values.setdefault(key, []).append(float(summary.loc[(attack, protocol), column]))
    return pd.DataFrame([(*k, mean(v), stdev(v) if len(v) > 1 else np.nan, len(v)) for k, v in values.items()],
                        columns=["imbalance_ratio", "arm", "protocol", "metric", "mean", "std", "n"])


def test_aggregate_csv_holds_the_mean_and_std_of_each_runs_summary(tmp_path, monkeypatch):
    """A whole sweep (papermill replaced by a stand-in that writes each run's evaluation): aggregate.csv,
    as written to disk, against the runs' own summary.csv files, 3 seeds per arm."""
    monkeypatch.setattr(sweep, "execute", fake_evaluation)
    monkeypatch.setattr(sweep, "check_kernel", lambda *a: None)
    s = plan.Sweep(tmp_path / "sw", "synthetic", [10, 100], [("taet", False), ("pgd_at", False), ("pgd_at", True)],
                    [0, 1, 2], config={"epochs": 2, "stabilization_epochs": 1})
    assert sweep.run_sweep(s, log=lambda *_: None)["ok"]
    got = pd.read_csv(tmp_path / "sw" / "aggregate.csv")
    want = metrics_from_summaries(tmp_path / "sw" / "runs.csv")
    assert len(want) == 2 * 3 * 2 * 5 and (want.n == 3).all() and (want["std"] > 0).all()
    keys = ["imbalance_ratio", "arm", "protocol", "metric"]
    both = got.merge(want, on=keys, suffixes=("", "_want"), validate="one_to_one")
    assert len(both) == len(got) == len(want)
    assert np.allclose(both["mean"], both["mean_want"], rtol=0, atol=1e-12)
    assert np.allclose(both["std"], both["std_want"], rtol=0, atol=1e-12)
    assert (both.n == both.n_want).all() and set(got.robust_attack) == {"pgd20"}
    (record,) = read_sessions(tmp_path / "sw")   # the sweep's wall time is on record
    assert record["what"] == "sweep" and record["ended"] and record["last_seen"] >= record["start"]
    assert sweep.run_sweep(s, log=lambda *_: None)["ok"]   # again: every run had finished, so none ran
    assert read_sessions(tmp_path / "sw") == [record]   # and that call is no session of the sweep's work


def test_no_run_starts_after_the_deadline_and_the_same_command_starts_them_later(tmp_path, monkeypatch):
    """--no-start-after: a run not started by then is left untouched (no folder) and counted, the sweep is not a
    failure, and the next call starts exactly those."""
    monkeypatch.setattr(sweep, "execute", fake_evaluation)
    monkeypatch.setattr(sweep, "check_kernel", lambda *a: None)
    s = plan.Sweep(tmp_path / "sw", "synthetic", [10], [("pgd_at", False), ("at_bsl", False)], [0, 1],
                   config={"epochs": 2})
    first, *rest = s.plan()
    assert sweep.execute_run(first, s.evaluation)["status"] == "done"
    lines: list[str] = []
    got = sweep.sweep_local(s, log=lines.append, start_by=time.time() - 1)
    status = pd.read_csv(tmp_path / "sw" / "runs.csv").set_index("run")
    assert got["ok"] and status.loc[str(first.dir), "status"] == "done"
    assert all(status.loc[str(r.dir), "status"] == "not started" and not r.dir.exists() for r in rest)
    assert "1 skipped, 0 failed, 3 not started" in "\n".join(lines)
    sweep.sweep_local(s, log=lambda *_: None)
    assert (pd.read_csv(tmp_path / "sw" / "runs.csv")["status"] == "done").all()


def test_the_deadline_is_the_next_such_time_and_a_bad_one_is_refused_before_anything_is_written(tmp_path, capsys):
    from datetime import datetime
    now = datetime(2026, 12, 4, 11, 0)
    assert datetime.fromtimestamp(plan.start_time("12:10", now)) == datetime(2026, 12, 4, 12, 10)
    assert datetime.fromtimestamp(plan.start_time("9:05", now)) == datetime(2026, 12, 5, 9, 5)   # passed: tomorrow
    assert datetime.fromtimestamp(plan.start_time("2026-12-06T08:30", now)) == datetime(2026, 12, 6, 8, 30)
    for bad in ("25:00", "noon"):
        out = tmp_path / bad
        code = cli.main(["sweep", "--dataset", "synthetic", "--methods", "pgd_at", "--no-start-after", bad,
                         "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "--no-start-after" in err[0] and bad in err[0] and "HH:MM" in err[0]
        assert not out.exists()


def printed_summary(stdout: str) -> dict[tuple[str, str, str], float]:
    """The demo's closing table as printed (pandas to_string: protocol shown on its first row only)."""
    lines = stdout.split("Summary (%")[1].split("\nreport:")[0].strip().splitlines()[1:]
    metrics, out, protocol = lines[0].split()[1:], {}, None
    assert metrics == [m for m in report.METRICS if m in metrics], lines[0]   # the summary's columns, in order
    for line in lines[2:]:   # after the header and the index-names line
        words = line.split()
        if len(words) == len(metrics) + 2:
            protocol = words.pop(0)
        arm, values = words[0], words[1:]
        out.update({(protocol, arm, m): float(v) for m, v in zip(metrics, values)})
    return out


def test_demo_prints_the_aggregate_it_saved(tmp_path, monkeypatch, capsys):
    """make demo's closing table is aggregate.csv (as saved) in %, row for row, to its two decimals."""
    from taetlib import dataset_files
    monkeypatch.setattr(sweep, "execute", fake_evaluation)
    monkeypatch.setattr(sweep, "check_kernel", lambda *a: None)
    monkeypatch.setattr(dataset_files, "ensure_fashion_mnist", lambda **_: tmp_path)   # its data is not read here
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = printed_summary(capsys.readouterr().out)
    agg = pd.read_csv(tmp_path / "demo" / "aggregate.csv")
    from taetlib import presets
    arms = {a.name for a in presets.get("fmnist_lt_demo").sweep["arms"]}
    assert set(agg.arm) == arms and len(printed) == len(agg) == len(arms) * 2 * 5
    for row in agg.itertuples():
        assert printed[(row.protocol, row.arm, row.metric)] == pytest.approx(100 * row.mean, abs=0.005 + 1e-9), row


# ------------------------------------------------------------------------------ real sweeps
SMOKE = ["--dataset", "synthetic", "--seeds", "0", "--eval-per-class", "5", "--eval-param", "pgd20.steps=3",
         "--set", "n_max=60", "test_per_class=20", "epochs=2", "stabilization_epochs=1", "attack_steps=2",
         "eval_every=0", "batch_size=64", "device=cpu"]


@pytest.mark.slow
def test_sweep_2_irs_x_2_methods(tmp_path, one_thread, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", *SMOKE, f"data_root={tmp_path / 'data'}", "--irs", "5", "10", "--methods", "taet", "pgd_at",
            "--jobs", "2", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().out

    agg = pd.read_csv(out / "aggregate.csv")
    assert len(agg) == 2 * 2 * 2 * len(report.METRICS)  # IR x method x protocol x metric
    assert set(agg.metric) == set(report.METRICS) and set(agg.arm) == {"taet", "pgd_at"}
    assert (agg.n == 1).all() and agg["std"].isna().all()   # one seed: no spread to report
    want = metrics_from_summaries(out / "runs.csv")          # each run's own eval/summary.csv
    both = agg.merge(want, on=["imbalance_ratio", "arm", "protocol", "metric"], suffixes=("", "_want"),
                     validate="one_to_one")
    assert len(both) == len(agg) == len(want) and np.allclose(both["mean"], both["mean_want"], rtol=0, atol=1e-12)
    status = pd.read_csv(out / "runs.csv")
    assert list(status.status) == ["done"] * 4
    taet, pgd = out / "synthetic-ir5/taet/seed0", out / "synthetic-ir10/pgd_at/seed0"
    assert {p.name for p in taet.glob("*.ipynb")} == {"02_stabilization_stage.ipynb", "03_harl_stage.ipynb",
                                                     "04_evaluation.ipynb"}
    assert {p.name for p in pgd.glob("*.ipynb")} == {"03_harl_stage.ipynb", "04_evaluation.ipynb"}
    for run in (taet, pgd):
        for f in ("DONE.json", "config.json", "history.jsonl", "model.pt", "eval/summary.csv", "figures/loss.html"):
            assert (run / f).exists(), run / f
    assert (out / "synthetic-ir5" / "01_dataset_creation.ipynb").exists()
    assert (out / "report" / "05_per_class_plots.ipynb").exists()
    assert (out / "report" / "tradeoff_balanced_pgd20.html").exists()
    page = (out / "report.html").read_text()
    assert "balanced_robustness" in page and "4 done" in page

    capsys.readouterr()
    assert cli.main(argv[:-4] + ["--jobs", "1", "--out", str(out)]) == 0  # again: nothing left to run
    log = capsys.readouterr().out
    assert "4 skipped" in log and "0 failed" in log


@pytest.mark.slow
def test_sweep_with_a_bad_parameter_records_it_and_exits_nonzero(tmp_path, one_thread):
    # n_max above the dataset's smallest class passes RunConfig's and the plan's checks (neither reads the
    # data): that arm's dataset stage fails inside notebook 01, and the other arm still runs
    out = tmp_path / "sw"
    proc = subprocess.run([sys.executable, "-m", "taetlib", "sweep", *SMOKE, f"data_root={tmp_path / 'data'}",
                           "--irs", "2", "--arms", "pgd_at", "big=pgd_at:n_max=100000", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=os.environ.copy())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 done, 0 skipped, 1 failed" in proc.stdout
    assert "FAILED" in proc.stdout and "n_max" in proc.stdout
    status = pd.read_csv(out / "runs.csv").set_index("arm")
    assert status.loc["pgd_at", "status"] == "done" and status.loc["big", "status"] == "failed"
    assert "larger than the smallest class" in status.loc["big", "error"]
    assert (out / "synthetic-ir2/big/seed0" / runs.FAILED).exists()
    agg = pd.read_csv(out / "aggregate.csv")
    assert set(agg.arm) == {"pgd_at"}  # the other finished and was aggregated
