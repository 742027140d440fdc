"""AWP, ADT and LAS-AT wired into the workbench: the objective hooks fit() calls (H3 after_step, H5 state),
the presets' arms, and the benchmark's rows."""
import importlib.util
from pathlib import Path

import pytest
import torch

from taetlib import presets
from taetlib.config import RunConfig
from taetlib.methods import Objective, build_objective

ROOT = Path(__file__).resolve().parents[1]


def test_base_objective_keeps_no_state_and_refuses_someone_elses():
    obj = build_objective(RunConfig(method="pgd_at"), [10] * 10, 0.1)
    assert obj.state_dict() == {}
    obj.load_state_dict({})
    with pytest.raises(ValueError, match=r"objective 'pgd_at' keeps no state, but the checkpoint holds \['policy'\]"):
        obj.load_state_dict({"policy": {}})
    model = torch.nn.Linear(2, 2)
    before = model.weight.clone()
    Objective.after_step(obj, model)   # the base hook does nothing
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize("ir", (10, 20, 50, 100))
def test_cifar10_presets_hold_the_zoo_and_every_arm_is_a_valid_run(ir):
    p = presets.get(f"cifar10_lt_ir{ir}")
    arms = set(map(tuple, p.sweep["arms"]))
    assert {("adt", False), ("adt", True), ("las_at", False)} <= arms and ("las_at", True) not in arms
    assert (("awp", False) in arms) == (ir == 50)   # AWP: RobustLT's table (IR 50), not TAET's
    for method, robust in arms:
        cfg = RunConfig.from_dict(p.run_config(method, ir, 0, robust))
        assert cfg.method == method and cfg.robustlt == robust
    if ir == 50:   # RobustLT's own AWP settings there
        cfg = RunConfig.from_dict(p.run_config("awp", ir, 0, False))
        assert (cfg.awp_gamma, cfg.awp_ascent) == (0.005, "robustlt")


def test_step_cost_benchmark_states_each_zoo_rows_own_floor():
    spec = importlib.util.spec_from_file_location("step_cost", ROOT / "benchmarks" / "step_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for row in ("awp", "adt", "las_at (step)", "las_at (update)"):
        assert row in bench.ROWS and bench.OWN_FLOOR[row][0].startswith("floor")
    assert bench.LASAT_K == 14 and "7x5" in bench.OWN_FLOOR["adt"][1]
