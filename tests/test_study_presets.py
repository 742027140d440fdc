"""The study presets: declared primary endpoints, equal adversarial and tuning budgets within an IR, TAET's
stage 1 in the paper's proportion unless a preset says otherwise, and the worst-case reading."""
import dataclasses

import pytest

from taetlib import presets
from taetlib.config import RunConfig
from taetlib.plan import Sweep, from_preset, plan_problems
from taetlib.report import METRICS
from taetlib.schedule import unequal_budgets
from taetlib.tuning import preset_tuning_budgets
from taetlib.worst_case import DEFAULT

STUDIES = [n for n, p in presets.PRESETS.items() if p.tuning]
PRIMARY_KEYS = {"a", "b", "metric", "imbalance_ratio", "protocol", "claimed"}   # compare.claim_readings reads them


def test_the_studies_are_there():
    assert {"fmnist_lt_study_a", "fmnist_lt_study_b", "fmnist_lt_study_c"} <= set(STUDIES)


def untuned_plan(p):
    return Sweep(root=".", dataset=p.config["dataset"], irs=p.sweep["irs"], arms=list(p.sweep["arms"]),
                 seeds=p.sweep["seeds"], config={k: v for k, v in p.config.items() if k != "dataset"},
                 method_overrides=p.method_overrides, ir_overrides=p.ir_overrides).plan(tuned=False)


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_declares_its_primary_endpoints(name):
    p = presets.get(name)
    labels = {a.name for a in p.sweep["arms"]}
    assert p.primary or "(descriptive)" in p.description, f"{name} declares no primary endpoint"
    for e in p.primary:
        assert PRIMARY_KEYS <= set(e), (name, e)
        assert {e["a"], e["b"]} <= labels and e["a"] != e["b"]
        assert e["metric"] in METRICS and e["imbalance_ratio"] in p.sweep["irs"]
        assert e["protocol"] in p.evaluation["protocols"]
    assert len({(e["a"], e["b"], e["metric"]) for e in p.primary}) == len(p.primary)


@pytest.mark.parametrize("name", STUDIES)
def test_every_arm_within_an_ir_has_an_equal_adversarial_and_tuning_budget(name):
    p = presets.get(name)
    runs = untuned_plan(p)
    assert runs and not [r.error for r in runs if r.error]
    groups: dict = {}
    for r in runs:
        groups.setdefault((r.config["imbalance_ratio"], r.config["seed"]), {})[r.arm] = RunConfig.from_dict(r.config)
    for key, configs in groups.items():
        assert len(configs) == len(p.sweep["arms"])
        assert unequal_budgets(configs) == [], key
    budgets = preset_tuning_budgets(p)
    for ir, arms in budgets.items():
        assert set(arms) == {a.name for a in p.sweep["arms"]}
        tried = {(b["values"], b["adversarial_epochs"], b["attack"], b["val_fraction"]) for b in arms.values()}
        assert len(tried) == 1, (ir, arms)
        assert next(iter(tried))[0] >= 2


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_reads_its_claims_on_the_worst_case_and_sweeps_the_radius(name):
    p = presets.get(name)
    ev = p.evaluation
    assert p.robust_attack == "worst_case" and ev["worst_case"] == list(DEFAULT)
    assert set(DEFAULT) <= set(ev["attacks"])
    assert min(ev["eps_sweep"]) <= 0.05 and max(ev["eps_sweep"]) >= 0.2
    cfg = RunConfig.from_dict(p.config)
    assert cfg.n_max == 1000 and cfg.attack_steps == 5 and cfg.test_per_class * 10 == 2000


def test_taet_stage1_is_the_papers_proportion_unless_a_preset_says_otherwise():
    assert presets.taet_stage1(60) == 40 and presets.taet_stage1(30) == 20
    for name, p in presets.PRESETS.items():
        if p.config.get("budget_rule") != "equal_adversarial":
            continue
        for ir in p.sweep["irs"]:
            cfg = RunConfig.from_dict({**p.config, **p.ir_overrides.get(ir, {}), "method": "taet"})
            said = p.sources.get("stabilization_epochs", "")
            if cfg.clean_stage_epochs() != presets.taet_stage1(cfg.epochs):
                assert "40 : 60" in said and "shorter" in said, (name, ir, said)
            else:
                assert "shorter" not in said, (name, ir, said)
    assert "close to" not in presets.get("fmnist_lt_demo").sources["budget_rule"]


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_sweep_passes_the_checks_a_sweep_makes_before_it_starts(name, tmp_path):
    """Its evaluation reads the claims on the worst case per image: the sweep's own check accepts that (and
    refuses a robust attack that neither runs nor is declared)."""
    s = from_preset(presets.get(name), tmp_path)
    runs = s.plan(tuned=False)
    assert plan_problems(s, runs) == []
    wrong = dataclasses.replace(s, evaluation={**s.evaluation, "worst_case": None})
    assert [w for w, _ in plan_problems(wrong, runs)] == ["evaluation"]


def test_make_results_runs_every_study_resumably_a_first_and_the_others_reusing_it():
    """`make results` restores each study's record, then tunes, sweeps (both niced) and publishes it; Study A
    comes first and the others link what they share with it. Read from make itself, with the python
    replaced by echo (nothing runs)."""
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    make = ["make", "-s", "--no-print-directory", "-o", ".venv/.installed", "results", "VPY=echo"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}   # not `make test`'s
    said = subprocess.run(make, cwd=root, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    first, want = STUDIES[0], []
    for s in STUDIES:
        reuse = "" if s == first else f" --reuse-from runs/{first}"
        want += [f"== {s}", f"-m taetlib restore --preset {s}", f"-m taetlib tune --preset {s} --jobs 2{reuse}",
                 f"-m taetlib sweep --preset {s} --jobs 2{reuse}", f"-m taetlib study --preset {s}"]
    assert first == "fmnist_lt_study_a" and said == want
    recipe = subprocess.run([*make, "-n"], cwd=root, env=env, capture_output=True, text=True, check=True).stdout
    assert "nice -n 10 echo -m taetlib tune" in recipe and "nice -n 10 echo -m taetlib sweep" in recipe
