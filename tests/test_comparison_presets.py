"""TAET's comparison methods in the presets, the sweep, `train --preset` and the notebooks."""
import argparse

import pytest

from taetlib import cli, plan, presets, sweep
from taetlib.arms import Arm
from taetlib.config import RunConfig
from taetlib.method_spec import METHODS
from taetlib.methods.base import attack_start
from taetlib.presets.papers import COMPARISON_METHODS, COMPARISON_OVERRIDES

OTHERS = ["reat", "robal", "he", "gairat"]


def test_the_comparison_methods_are_registered_and_in_the_ir10_preset():
    assert set(OTHERS) <= set(COMPARISON_METHODS) <= set(METHODS)
    p = presets.get("cifar10_lt_ir10")
    assert {(m, r) for m in OTHERS for r in (False, True)} <= {(a.method, a.robustlt) for a in p.sweep["arms"]}
    for m in OTHERS:
        assert m in p.sources
        cfg = RunConfig.from_dict(p.run_config(Arm(m), 10, 0))   # valid as the preset gives it
        assert all(cfg.to_dict() == cfg.replace(**{k: v}).to_dict() for k, v in COMPARISON_OVERRIDES.get(m, {}).items())
    assert RunConfig.from_dict(p.run_config(Arm("robal", True), 10, 0)).attack_steps == 5


def test_sweep_accepts_them():
    p = argparse.ArgumentParser()
    sweep.add_cli(p.add_subparsers(dest="command"))
    args = p.parse_args(["sweep", "--preset", "cifar10_lt_ir10", "--methods", *OTHERS, "--robustlt"])
    runs = plan.sweep_from_args(args).plan()
    assert len(runs) == 2 * len(OTHERS) and not [r.error for r in runs if r.error]
    robal = [RunConfig.from_dict(r.config) for r in runs if r.config["method"] == "robal"]
    assert {attack_start(cfg) for cfg in robal} == {("uniform_pos", False)}   # the official start, unclamped


@pytest.mark.parametrize("method", OTHERS)
def test_train_with_a_preset_applies_the_methods_settings(method):
    cfg = cli.train_config("cifar10_lt_ir10", {"method": method, "epochs": 3})
    assert cfg.method == method and cfg.epochs == 3
    assert all(getattr(cfg, k) == v for k, v in COMPARISON_OVERRIDES.get(method, {}).items())
    assert cli.train_config("cifar10_lt_ir10", {"method": "robal", "attack_steps": 7}).attack_steps == 7   # --set wins
    assert cli.train_config("cifar10_lt_ir10", {"method": "pgd_at"}).attack_steps == 10


