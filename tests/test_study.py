"""Publishing a study from its sweep folder, finished or partial: a tiny sweep whose run folders are
written by the real writers (execute_run's DONE.json / FAILED.json and arm.json, RunConfig.save, fit's
history text, EvalResult.save of evaluate's tables, tune's tuning.json) with one arm that did not train,
one run failed and one still running. The README names the untrained arm and never ranks it, words every
verdict through verdicts.sentence with Holm over every primary comparison, and says what is missing."""
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taetlib import cli, data, health, plan, presets, study, study_sections, sweep, tuning, verdicts
from taetlib.arms import Arm
from taetlib.config import RunConfig
from taetlib.eval_result import EvalResult, per_class_table, summary_table
from taetlib.history import history_text
from taetlib.plan import Sweep
from taetlib.runs import NB_EVAL, NB_TRAIN
from taetlib.study_b_readme import variants_of

NAMES = tuple(f"k{i}" for i in range(10))
PERM = {"class_order": "permutation:1"}
ARMS = [Arm("at_bsl"), Arm("taet"), Arm("pgd_at"), Arm("at_bsl", overrides=PERM, label="at_bsl-perm"),
        Arm("taet", overrides=PERM, label="taet-perm")]
PRIMARY = [{"a": "taet", "b": "at_bsl", "metric": "balanced_robustness", "imbalance_ratio": 10.0,
            "protocol": "balanced", "claimed": 0.086},
           {"a": "taet-perm", "b": "at_bsl-perm", "metric": "tail_robustness", "imbalance_ratio": 10.0,
            "protocol": "balanced", "claimed": None}]
SPEC = {"factors": {"lr": [0.5, 1.0]}, "attack": "pgd20", "val_fraction": 0.2}
RUNNING, FAILING = ("taet", 2), ("at_bsl-perm", 2)


def tiny_study(root: Path) -> Sweep:
    return Sweep(root=root, dataset="synthetic", irs=[10], arms=ARMS, seeds=[0, 1, 2],
                 config={"n_max": 100, "test_per_class": 20, "epochs": 6, "stabilization_epochs": 4, "eval_every": 2},
                 evaluation={"attacks": ["clean", "pgd20"], "protocols": ["balanced", "long_tailed"],
                             "eps_sweep": [0.05, 0.1, 0.15]},
                 preset="fmnist_lt_study_b", primary=PRIMARY, tuning=SPEC)


def train_counts(cfg: RunConfig) -> list[int]:
    ranking = data.class_ranking(cfg.class_order, NAMES, cfg.dataset, cfg.split_seed)
    return data.by_rank(data.longtail_counts(cfg.n_max, 10, cfg.imbalance_ratio), ranking)


def predictions(rng, y, p_class) -> np.ndarray:
    """Each image right with its class's probability, else the next class."""
    right = rng.random(len(y)) < p_class[y]
    return np.where(right, y, (y + 1) % 10)


def write_evaluation(run_dir: Path, cfg: RunConfig, arm: str) -> None:
    """eval/ as evaluate() saves it, from made-up predictions: robust recall rises with log training count;
    pgd_at predicts one class for every image (a constant predictor: it did not train)."""
    rng = np.random.default_rng(zlib.crc32(str(run_dir).encode()))
    counts = np.array(train_counts(cfg))
    y = np.repeat(np.arange(10), 20)
    lt = np.concatenate([np.flatnonzero(y == c)[:max(2, 20 * n // counts.max())] for c, n in enumerate(counts)])
    level = {"at_bsl": 0.0, "taet": -0.03}.get(arm.split("-")[0], 0.0)
    p_rob = np.clip(0.05 + 0.06 * np.log(counts) + level + rng.normal(0, 0.02), 0.02, 0.98)
    preds, tables, curves = {}, [], []
    for attack, p in (("clean", np.clip(p_rob + 0.3, 0, 0.99)), ("pgd20", p_rob)):
        pred = np.zeros_like(y) if arm == "pgd_at" else predictions(rng, y, p)
        for protocol, at in (("balanced", np.arange(len(y))), ("long_tailed", lt)):
            preds[(protocol, attack)] = {"y": y[at], "pred": pred[at], "index": at}
            tables.append(per_class_table(attack, protocol, 0.1 * (attack != "clean"), y[at], pred[at], NAMES))
    for eps in (0.05, 0.1, 0.15):
        pred = np.zeros_like(y) if arm == "pgd_at" else predictions(rng, y, np.clip(p_rob * 0.1 / eps, 0, 0.98))
        curves += [per_class_table("pgd20", protocol, eps, y[at], pred[at], NAMES)
                   for protocol, at in (("balanced", np.arange(len(y))), ("long_tailed", lt))]
    table = pd.concat(tables, ignore_index=True)
    table["train_count"] = table["class"].map(dict(enumerate(counts)))
    flags = pd.DataFrame({"flag": pd.Series(dtype=str), "attack": pd.Series(dtype=str),
                          "protocol": pd.Series(dtype=str), "classes": pd.Series(dtype=str),
                          "raised": pd.Series(dtype=bool), "detail": pd.Series(dtype=str)})
    summary = summary_table(table, preds, counts, NAMES, flags, {})
    EvalResult(table, summary, flags, pd.concat(curves, ignore_index=True), preds, {}).save(run_dir / "eval")


def write_training(run_dir: Path, cfg: RunConfig) -> None:
    """config.json and history.jsonl as fit writes them: a levelled validation curve; TAET's HARL weights
    negative for its three rarest classes in the later epochs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    rare = np.argsort(train_counts(cfg))[:3]
    records = []
    for epoch in range(6):
        w = [(-0.05 if c in rare and epoch >= 3 else 0.1) for c in range(10)] if cfg.method == "taet" else None
        records.append({"epoch": epoch, "stage": "adversarial", "loss": 1.0 / (epoch + 1), "class_weight": w,
                        "val_clean_acc": [0.6] * 10 if epoch % 2 == 0 else None})
    (run_dir / "history.jsonl").write_text(history_text(records))


@pytest.fixture
def study_folder(tmp_path, monkeypatch):
    """The tiny study's sweep folder: tuned (tune's writer, its training replaced), every run executed by
    execute_run with papermill replaced, but one run that failed and one still running (evaluated, with no
    DONE.json yet)."""
    s = tiny_study(tmp_path / "runs")

    def fake_point(config, run_dir, spec):
        return {"status": "done", "error": "", "val_balanced_accuracy": 0.6, "val_balanced_robustness": config["lr"],
                "sgd_steps": 12, "seconds": 3.0}
    monkeypatch.setattr(tuning, "tune_point", fake_point)
    tuning.tune(s, jobs=1, log=lambda m: None)
    planned = {r.dir: r for r in s.plan()}

    def fake_execute(notebook, out, params, *_, **__):
        run = planned[Path(params["run_dir"])]
        if (run.arm, run.config["seed"]) == FAILING:
            raise RuntimeError("out of memory")
        cfg = RunConfig.from_dict(run.config)
        if notebook == NB_TRAIN:
            write_training(run.dir, cfg)
        elif notebook == NB_EVAL:
            write_evaluation(run.dir, cfg, run.arm)
        return out
    monkeypatch.setattr(sweep, "execute", fake_execute)
    monkeypatch.setattr(study, "export_figure", lambda fig, path, **kw: Path(path).write_bytes(b"png"))
    for run in planned.values():
        if (run.arm, run.config["seed"]) == RUNNING:   # mid-evaluation: files there, no DONE.json
            cfg = RunConfig.from_dict(run.config)
            write_training(run.dir, cfg)
            write_evaluation(run.dir, cfg, run.arm)
        else:
            sweep.execute_run(run, s.evaluation)
    return s


def files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_partial_study_says_what_finished_names_the_untrained_arm_and_words_verdicts_by_the_writer(
        study_folder, tmp_path):
    before = files(study_folder.root)
    got = study.write(study_folder, tmp_path / "out", command="python -m taetlib study ...")
    text = got["readme"]
    assert files(study_folder.root) == before   # the sweep folder is only read
    # what finished, per arm and seed; only that is read
    assert "13 of 15 runs have finished, 1 failed, 1 has not finished yet" in text
    prog = study_sections.progress_table(got["status"]).set_index("arm")
    assert prog.loc["taet", "finished"] == "2 of 3" and prog.loc["taet", "seed 2"] == "-"
    assert prog.loc["at_bsl-perm", "seed 2"] == "FAILED" and prog.loc["pgd_at", "finished"] == "3 of 3"
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")   # run folders named within the sweep folder
    assert "synthetic-ir10/taet/seed2" not in set(metrics["run"]) and metrics["run"].nunique() == 13
    assert "synthetic-ir10/taet/seed0" in set(metrics["run"])
    for name in ("progress", "health", "metrics", "negative_weights"):
        assert str(tmp_path) not in (tmp_path / "out" / f"{name}.csv").read_text(), name
    # the arm that did not train: named, marked in the table, never ranked
    assert "pgd_at IR 10 seed 0, pgd_at IR 10 seed 1, pgd_at IR 10 seed 2" in text
    assert "| pgd_at (did not train) |" in text and "at_bsl-perm (1 of 3 runs did not train)" not in text
    rankings = text.split("## Rankings")[1].split("##")[0]
    assert "highest mean" in rankings and "pgd_at" not in rankings
    # every primary verdict from verdicts.sentence, Holm over both pairs as one family
    claims = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert len(claims) == 2 and (claims["family"] == 2).all() and (claims["kind"] == "claim").all()
    assert list(claims["k"]) == [2, 2]   # common finished seeds of each pair
    for r in got["claims"]:
        assert f"- {verdicts.sentence(r)}" in text
    assert verdicts.sentence({"kind": "summary", "readings": got["claims"]}) in text
    assert "Holm-adjusted p" in text and "80 % power" in text
    per_attack = text.split("## Robustness per attack")[1].split("##")[0]
    assert "| arm | seeds | pgd20 |" in per_attack and "| taet | 2 |" in per_attack and "pgd_at" not in per_attack
    # tuning, class order, figures, study B's analyses
    assert "chosen once, on seed 0" in text and "| taet-perm |" in text and "the tuning took 10 runs" in text
    assert "permutation:1:" in text or "- permutation:1" in text
    assert "![Balanced robustness vs the PGD-20 radius" in text and (tmp_path / "out" / "radius.png").exists()
    assert "per doubling of a class's training images" in text and "negative share (%)" in text
    assert (tmp_path / "out" / "rarity_slopes.csv").exists() and (tmp_path / "out" / "negative_weights.csv").exists()


def test_a_primary_pair_with_no_common_seed_gets_no_reading_and_still_counts_in_the_family(study_folder, tmp_path):
    s = study_folder
    s.primary = [PRIMARY[0], {**PRIMARY[0], "b": "pgd_at"}]   # pgd_at did not train: no seed pairs with it
    got = study.write(s, tmp_path / "out", command="c")
    read, empty = got["claims"]
    assert empty["k"] == 0 and "no seed has finished runs of both arms yet" in verdicts.sentence(empty)
    assert read["family"] == empty["family"] == 2 and np.isnan(empty["p_holm"])
    assert read["p_holm"] == pytest.approx(min(1.0, 2 * read["p"]))   # Holm over the two declared, not one
    assert "holds" not in got["readme"].split("## Primary comparisons")[1].split("##")[0]


def test_a_study_short_of_its_declared_seeds_is_an_interim_look_without_verdicts(study_folder, tmp_path):
    """taet seed 2 is still running and at_bsl-perm seed 2 failed: 2 of the 3 declared seeds have ended for
    each primary pair, so neither gets a verdict, whatever its p-value."""
    got = study.write(study_folder, tmp_path / "out", command="c")
    assert [(r["ended"], r["declared"]) for r in got["claims"]] == [(2, 3), (2, 3)]
    primary = got["readme"].split("## Primary comparisons")[1].split("##")[0]
    assert primary.count("an interim look at 2 of the 3 declared seeds") == 2
    verdicts_read = primary.split("declared seed has ended")[1]
    assert "holds" not in verdicts_read and "contradicted" not in verdicts_read


def test_the_power_table_says_whether_it_read_every_declared_seed(study_folder, tmp_path):
    got = study.write(study_folder, tmp_path / "out", command="c")
    assert "Measured on the seeds finished so far" in got["readme"]   # 2 of the 3 declared seeds
    p = presets.get(study_folder.preset)
    every = [{**r, "k": len(study_folder.seeds)} for r in got["claims"]]
    design = "\n".join(study_sections.design_section(study_folder, p, every))
    assert "Measured on all 3 declared seeds" in design and "so far" not in design


def test_the_study_command_refuses_a_missing_folder_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["study", "--preset", "fmnist_lt_study_a", "--root", str(tmp_path / "nope"), "--out", str(out)],
                    commands=(study.add_cli,))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--root" in err[0] and "tune --preset fmnist_lt_study_a" in err[0]
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    code = cli.main(["study", "--preset", "fmnist_lt_study_a", "--root", str(tmp_path / "empty"), "--out", str(out)],
                    commands=(study.add_cli,))
    assert code == 2 and "tuning" in capsys.readouterr().err and not out.exists()
    (out / "record" / "tuning").mkdir(parents=True)   # a new machine, the study's record in git: restore it
    (out / "record" / "tuning" / "tuning.json").write_text("{}")
    code = cli.main(["study", "--preset", "fmnist_lt_study_a", "--root", str(tmp_path / "nope"), "--out", str(out)],
                    commands=(study.add_cli,))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "restore --preset fmnist_lt_study_a" in err[0] and "tune" not in err[0]
    assert sorted(p.name for p in out.rglob("*")) == ["record", "tuning", "tuning.json"]


def test_the_study_command_reads_the_sweep_the_folder_recorded(study_folder, tmp_path, capsys):
    import json
    root, out = study_folder.root, tmp_path / "published"
    (root / "sweep.json").write_text(json.dumps(study_folder.to_dict(), default=str))   # as the sweep writes it
    args = ["study", "--preset", "fmnist_lt_study_b", "--root", str(root), "--out", str(out)]
    assert cli.main(args, commands=(study.add_cli,)) == 0
    assert "13 of 15 runs have finished" in capsys.readouterr().out
    text = (out / "README.md").read_text()
    assert f"--root {root}" in text and "tune --preset fmnist_lt_study_b" in text and "| at_bsl-perm |" in text
    wrong = ["study", "--preset", "fmnist_lt_study_a", "--root", str(root), "--out", str(tmp_path / "other")]
    assert cli.main(wrong, commands=(study.add_cli,)) == 2 and not (tmp_path / "other").exists()
    assert "records preset 'fmnist_lt_study_b'" in capsys.readouterr().err


def test_the_summary_section_holds_the_verdicts_and_replaces_only_its_markers(study_folder, tmp_path):
    from taetlib import results
    got = study.write(study_folder, tmp_path / "out", command="c")
    section = study.summary_section("fmnist_lt_study_b", got, "../results/fmnist_lt_study_b/README.md")
    page = tmp_path / "page.md"
    start, end = study.markers("fmnist_lt_study_b")
    page.write_text(f"# Results\n\nbefore\n{start}\nold text\n{end}\nafter\n")
    assert results.update_section(page, section, (start, end))
    text = page.read_text()
    assert "old text" not in text and text.startswith("# Results\n\nbefore\n") and text.endswith("\nafter\n")
    assert "13 of 15 runs have finished" in text and "(../results/fmnist_lt_study_b/README.md)" in text
    for r in got["claims"]:
        assert f"- {verdicts.sentence(r)}" in text
    gate = health.left_out(got["health"])
    assert "pgd_at IR 10 seed 0" in gate and f"- {gate}" in text   # the runs that did not train, named on the page
    assert not any(verdicts.sentence(r) in text for r in got["rankings"])   # a study with claims shows its claims
    descriptive = study.summary_section("fmnist_lt_study_c", {**got, "claims": []}, "c/README.md")
    said = [verdicts.sentence(r) for r in got["rankings"]]
    assert said and all(f"- {s}" in descriptive for s in said) and f"- {gate}" in descriptive
    assert not any("pgd_at" in s for s in said)   # the arm that did not train is never ranked
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert study.update_pages("fmnist_lt_study_b", got, tmp_path / "out") == []   # outside the repository: none
    assert (Path(__file__).resolve().parents[1] / "README.md").read_text() == readme


def test_a_study_with_no_finished_run_says_so(tmp_path, monkeypatch):
    s = tiny_study(tmp_path / "runs")
    monkeypatch.setattr(tuning, "tune_point", lambda config, run_dir, spec: {
        "status": "done", "error": "", "val_balanced_accuracy": 0.5, "val_balanced_robustness": 0.3, "sgd_steps": 1,
        "seconds": 1.0})
    tuning.tune(s, jobs=1, log=lambda m: None)
    text = study.write(s, tmp_path / "out", command="c")["readme"]
    assert "0 of 15 runs have finished, 15 have not finished yet" in text and "No run has finished yet." in text
    assert "no seed has finished runs of both arms of any of the 2 primary comparisons" in text.lower()
    assert "holds" not in text and "## Aggregate" not in text and not list((tmp_path / "out").glob("*.png"))


def test_study_variants_group_the_class_orders_of_one_arm():
    assert variants_of(ARMS) == {"at_bsl": "at_bsl", "taet": "taet", "pgd_at": "pgd_at",
                                       "at_bsl-perm": "at_bsl", "taet-perm": "taet"}


def test_a_descriptive_study_publishes_rankings_and_health_and_no_verdict(study_folder, tmp_path):
    """Study C declares no primary comparison: its README ranks and names the untrained arm, and claims
    nothing."""
    s = study_folder
    s.primary = []
    got = study.write(s, tmp_path / "out", command="c")
    text = got["readme"]
    assert got["claims"] == [] and " holds" not in text and "contradicted" not in text
    assert verdicts.sentence({"kind": "summary", "readings": []}) in text
    rankings = text.split("## Rankings")[1].split("##")[0]
    assert "highest mean" in rankings and "pgd_at" not in rankings
    assert "| pgd_at (did not train) |" in text


def test_a_study_still_tuning_publishes_its_tuning_so_far_and_no_run(tmp_path):
    """Before tuning.json: the tuning runs finished (point.json) and training, and no study run."""
    s = tiny_study(tmp_path / "runs")
    base = s.root / "tuning" / "synthetic-ir10"
    for arm, value, result in (("at_bsl", "lrx0.5", {"status": "done", "val_balanced_robustness": 0.412,
                                                      "val_balanced_accuracy": 0.7, "seconds": 60.0}),
                               ("taet", "lrx1", None)):
        (base / arm / value).mkdir(parents=True)
        epochs = range(1, 7 if result else 3)   # 10 s each, every session counted
        (base / arm / value / "history.jsonl").write_text(history_text([{"epoch": e, "seconds": 10.0} for e in epochs]))
        if result:
            (base / arm / value / "point.json").write_text(json.dumps({"config": {}, "result": result}))
    adopted = base / "pgd_at" / "lrx1"   # a reading adopted from another study's record: no history here
    adopted.mkdir(parents=True)
    (adopted / "point.json").write_text(json.dumps({"config": {"epochs": 30}, "result": {
        "status": "done", "val_balanced_robustness": 0.5, "val_balanced_accuracy": 0.6, "train_seconds": 3580.0,
        "seconds": 0.0, "reused_from": str(tmp_path / "study_a" / "tuning" / "tuning.json")}}))
    diverged = base / "pgd_at" / "lrx2"   # adopted, diverged: how many epochs it ran is not known
    diverged.mkdir(parents=True)
    (diverged / "point.json").write_text(json.dumps({"config": {"epochs": 30}, "result": {
        "status": "diverged", "val_balanced_robustness": 0.1, "val_balanced_accuracy": 0.1, "train_seconds": 100.0,
        "seconds": 0.0, "reused_from": str(tmp_path / "study_a" / "tuning" / "tuning.json")}}))
    got = study.write(s, tmp_path / "out", command="c")
    text = got["readme"]
    assert "| pgd_at | lrx2 | diverged, reused from study_a | - | 10.0 | 10.0 | 100 |" in text
    assert "0 of 15 runs have finished" in text and (got["status"]["status"] == study_sections.PENDING).all()
    assert "The tuning is running: 3 of 10 tuning runs have finished and 1 is training" in text
    assert "| pgd_at | lrx1 | done, reused from study_a | 30 | 50.0 | 60.0 | 3580 |" in text   # its config's epochs
    assert "| synthetic-ir10 | at_bsl | lrx0.5 | done | 6 | 41.2 | 70.0 | 60 |" in text
    assert "| taet | lrx1 | training | 2 | - | - | 20 |" in text


def test_the_study_command_refuses_a_preset_that_is_no_study(tmp_path, capsys):
    (tmp_path / "root").mkdir()
    code = cli.main(["study", "--preset", "fmnist_lt_demo", "--root", str(tmp_path / "root"), "--out",
                     str(tmp_path / "out")], commands=(study.add_cli,))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fmnist_lt_demo: is no study" in err[0] and "fmnist_lt_study_c" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_runs_compute_counts_every_session_and_each_attack_once(tmp_path):
    """Training from the history (stage 1 included), each attack once though its protocols share it."""
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "history.jsonl").write_text(history_text([{"epoch": 1, "seconds": 4.0}]))
    (tmp_path / "history.jsonl").write_text(history_text([{"epoch": 2, "seconds": 10.0, "eval_seconds": 1.0},
                                                          {"epoch": 3, "seconds": 12.0, "eval_seconds": None}]))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval_config.json").write_text(json.dumps({"seconds": {
        "balanced/clean": 1.0, "long_tailed/clean": 1.0, "balanced/apgd_t": 100.0, "long_tailed/apgd_t": 100.0,
        "balanced/pgd20": 20.0, "long_tailed/pgd20": 20.0,
        "balanced/worst_case": 120.0, "long_tailed/worst_case": 120.0}}))   # the sum of its parts: no attack
    assert study_sections.run_seconds(tmp_path) == pytest.approx(4 + 11 + 12 + 1 + 100 + 20)


def test_a_study_restored_from_its_record_reads_as_the_original_and_its_sweep_skips_what_finished(
        study_folder, tmp_path, capsys):
    root, out, fresh = study_folder.root, tmp_path / "published", tmp_path / "new_machine"
    (root / "sweep.json").write_text(json.dumps(study_folder.to_dict(), default=str))
    for done in root.rglob("DONE.json"):
        (done.parent / "model.pt").write_bytes(b"weights")   # the weights stay out of the record
    assert cli.main(["study", "--preset", "fmnist_lt_study_b", "--root", str(root), "--out", str(out)],
                    commands=(study.add_cli,)) == 0
    assert "record:" in capsys.readouterr().out and not list((out / "record").rglob("*.pt"))
    assert cli.main(["restore", "--preset", "fmnist_lt_study_b", "--root", str(fresh), "--out", str(out)],
                    commands=(study.add_cli,)) == 0
    moved = tiny_study(fresh)
    for old, new in zip(study_folder.plan(), moved.plan()):
        was = plan.recorded(old)
        now = plan.recorded(new)
        if was and was["status"] == "done":
            assert now and now["status"] == "done"   # the sweep skips it
        else:
            assert now is None   # failed or still running: the sweep runs it again
    first = study.write(study_folder, tmp_path / "a", command="c")
    again = study.write(moved, tmp_path / "b", command="c")
    assert (tmp_path / "a" / "claims.csv").read_text() == (tmp_path / "b" / "claims.csv").read_text()
    section = "## Primary comparisons"
    assert again["readme"].split(section)[1].split("##")[0] == first["readme"].split(section)[1].split("##")[0]


def test_a_reconstructed_tuning_record_says_so_and_from_what(study_folder, tmp_path):
    path = study_folder.root / "tuning" / "tuning.json"
    plain = study.write(study_folder, tmp_path / "a", command="c")["readme"]
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "reconstructed": "rebuilt from commit abc123's README"}))
    text = study.write(study_folder, tmp_path / "b", command="c")["readme"]
    assert "reconstructed" not in plain and "This record was reconstructed: rebuilt from commit abc123's README" in text


def test_the_attack_table_says_how_many_seeds_each_arms_cells_hold():
    rows = [{"protocol": "balanced", "attack": attack, "arm": arm, "balanced": value, "balanced_low": value - 0.02,
             "balanced_high": value + 0.02, "n": 2000}
            for arm, seeds in (("full", 3), ("partial", 1)) for seed in range(seeds)
            for attack, value in (("clean", 0.8), ("pgd20", 0.6 + 0.01 * seed), ("worst_case", 0.55 + 0.01 * seed))]
    t = study_sections.attack_table({"summary": pd.DataFrame(rows)})
    assert list(t.columns) == ["arm", "seeds", "pgd20", "worst_case"] and list(t["seeds"]) == [3, 1]
    assert t.loc[1, "pgd20"] == "60.0 [58.0, 62.0]"   # one seed: its own test-image interval
