"""Every preset is valid here, though the GPU ones never run here: each builds a valid RunConfig, its
objective and its model for every arm, a sweep plan without an invalid run, and an evaluation the
notebook takes. Their key settings are the ones docs/reproducing.md's table and docs/results.md's demo
paragraph state."""
import argparse
import re
from pathlib import Path

import pytest
import torch

from taetlib import attack_suite, data, plan, presets, sweep
from taetlib.config import RunConfig
from taetlib.method_spec import METHODS
from taetlib.methods import build_objective
from taetlib.models import create_model
from taetlib.notebook_exec import declared_parameters
from taetlib.runs import NB_EVAL

DOCS = Path(__file__).resolve().parents[1] / "docs"
REPRODUCING = (DOCS / "reproducing.md").read_text()
RESULTS = (DOCS / "results.md").read_text()


def plan_of(name: str) -> list:
    p = argparse.ArgumentParser()
    sweep.add_cli(p.add_subparsers(dest="command"))
    return plan.sweep_from_args(p.parse_args(["sweep", "--preset", name])).plan(tuned=False)   # before tuning


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds_every_arm(name):
    p = presets.get(name)
    spec = data.DATASETS[p.config["dataset"]]
    runs = plan_of(name)
    assert len(runs) == len(p.sweep["irs"]) * len(p.sweep["arms"]) * len(p.sweep["seeds"])
    assert [r.error for r in runs if r.error] == []
    assert {r.arm for r in runs} == {a.name for a in p.sweep["arms"]}
    for run in runs:   # the sweep's plan and the preset's own run_config agree, field for field
        c = run.config
        assert (c["method"], c["robustlt"]) == (run.arm_spec.method, run.arm_spec.robustlt)
        assert c == RunConfig.from_dict({**p.run_config(run.arm_spec, c["imbalance_ratio"], c["seed"]),
                                         "dataset": p.config["dataset"]}).to_dict()
        cfg = RunConfig.from_dict(c)
        counts = data.longtail_counts(1000, spec.num_classes, max(cfg.imbalance_ratio, 1.0))
        objective = build_objective(cfg, counts, spec.default_eps)
        assert (objective.attack is None) == (cfg.method == "ce")
        assert (objective.attack is not None and objective.attack.class_scale is not None) == cfg.robustlt
    model = create_model(p.config["model"], spec.num_classes, spec.in_channels, spec.mean, spec.std).eval()
    with torch.no_grad():   # the preset's model takes the dataset's images
        out = model(torch.rand(2, spec.in_channels, spec.image_size, spec.image_size))
    assert out.shape == (2, spec.num_classes)
    # the evaluation: parameters notebook 04 declares, attacks and protocols it knows
    ev = p.evaluation
    declared = declared_parameters(NB_EVAL)
    assert set(ev) <= declared, sorted(set(ev) - declared)
    assert set(ev["protocols"]) <= set(data.PROTOCOLS)
    resolved = attack_suite.resolve_attacks(ev["attacks"], ev.get("attack_params"), spec.default_eps, spec.num_classes)
    assert list(resolved) == ev["attacks"] and "pgd20" in resolved


# ---------------------------------------------------------------- the docs say the same
METHOD = {m.replace("_", "-").upper(): m for m in METHODS}   # PGD-AT -> pgd_at: the docs' spelling
DATASET = {"CIFAR-10-LT": "cifar10", "CIFAR-100-LT": "cifar100", "DermaMNIST": "dermamnist"}


def preset_table() -> list[tuple[list[str], str]]:
    """The rows of docs/reproducing.md's preset table: (preset names, set-up text). `cifar10_lt_ir10`, `_ir20`
    abbreviates cifar10_lt_ir20."""
    section = REPRODUCING
    rows = re.findall(r"^\| (`[^|]+) \| ([^|]+) \|$", section, re.M)
    assert rows, "no preset table in docs/reproducing.md"
    out = []
    for names, setup in rows:
        names = re.findall(r"`([^`]+)`", names)
        full = [names[0]] + [names[0].rsplit("_", 1)[0] + n if n.startswith("_") else n for n in names[1:]]
        out.append((full, setup.strip()))
    return out


def test_the_preset_table_lists_every_preset_with_its_settings():
    rows = preset_table()
    assert sorted(n for names, _ in rows for n in names) == sorted(presets.PRESETS)
    facts: dict = {}
    for names, setup in rows:
        if setup.startswith("the same on"):   # the previous row's facts, on another dataset
            facts = {**facts, "dataset": DATASET[setup.split("the same on ", 1)[1].split()[0].rstrip(",")]}
        else:
            facts = {"dataset": next((v for k, v in DATASET.items() if re.search(rf"\b{re.escape(k)}\b", setup)), None)}
            if "ResNet-18" in setup:
                facts["model"] = "resnet18"
            if m := re.search(r"(\d+) epochs", setup):
                facts["epochs"] = int(m.group(1))
            if m := re.search(r"(\d+) CE \+ (\d+) HARL", setup):
                facts["stabilization_epochs"], facts["harl_epochs"] = int(m.group(1)), int(m.group(2))
            if m := re.search(r"eps (\d+)/(\d+)", setup):
                facts["eps"] = int(m.group(1)) / int(m.group(2))
            words = re.split(r"[,:]", re.sub(r"\(.*?\)", "", setup))   # "... epochs: TAET (...), AT-BSL, ..."
            named = {METHOD[w.strip().upper()] for w in words if w.strip().upper() in METHOD}
            if named:
                facts["methods"] = named
            facts["both_robustlt"] = "with and without RobustLT" in setup
            facts["natural"] = "natural imbalance" in setup
        for name in names:
            p = presets.get(name)
            cfg = RunConfig.from_dict(p.config)
            arms = {(a.method, a.robustlt) for a in p.sweep["arms"] if not a.label}   # the plain arms
            if facts["dataset"]:
                assert cfg.dataset == facts["dataset"], name
            if facts["natural"]:
                assert data.DATASETS[cfg.dataset].natural, name
            for key in ("model", "epochs", "stabilization_epochs", "eps"):
                if key in facts:
                    got = cfg.clean_stage_epochs() if key == "stabilization_epochs" else getattr(cfg, key)
                    assert got == pytest.approx(facts[key]), (name, key)
            if "harl_epochs" in facts:
                assert cfg.epochs - cfg.clean_stage_epochs() == facts["harl_epochs"], name
            if "methods" in facts:
                assert {m for m, _ in arms} == facts["methods"], name
            if facts["both_robustlt"]:
                assert arms == {(m, r) for m, _ in arms for r in (False, True)}, name
            if m := re.search(r"_ir(\d+)$", name):   # the IR in the name is the sweep's
                assert p.sweep["irs"] == [int(m.group(1))], name


def test_the_demo_paragraph_is_the_demo_preset():
    text = " ".join(RESULTS.split("## What `make demo` does", 1)[1].split("\n## ", 1)[0].split())
    p = presets.get("fmnist_lt_demo")
    cfg = RunConfig.from_dict(p.config)
    m = re.search(r"preset `(\w+)`\): real Fashion-MNIST-LT at IR (\d+) \(n_max (\d+),", text)
    assert m and m.group(1) == p.name and cfg.dataset == "fashion_mnist", text
    assert p.sweep["irs"] == [int(m.group(2))] and cfg.n_max == int(m.group(3))
    assert f"`{cfg.model}`" in text
    assert f"eps {cfg.eps:g}, {cfg.epochs} adversarial epochs with a {cfg.attack_steps}-step" in text
    assert f"(budget rule `{cfg.budget_rule}`)" in text and cfg.budget_rule == "equal_adversarial"
    m = re.search(r"TAET \((\d+) clean-CE epochs, then (\d+) HARL epochs\)", text)
    assert m and (cfg.clean_stage_epochs(), cfg.epochs) == (int(m.group(1)), int(m.group(2)))
    assert "compares PGD-AT, AT-BSL, TAET" in text and "TAET + RobustLT and the control `taet_unit`" in text
    assert {a.name for a in p.sweep["arms"]} == {"pgd_at", "at_bsl", "taet", "taet+robustlt", "taet_unit"}
    assert "under clean inputs, FGSM and PGD-20 (eps 0.1, step eps/8)" in text
    assert p.evaluation["attacks"] == ["clean", "fgsm", "pgd20"] and cfg.eps == 0.1
    assert attack_suite.STEP_FRACTION == 1 / 8 and p.evaluation["per_class"] is None
    assert f"on {cfg.test_per_class} test images per class" in text
