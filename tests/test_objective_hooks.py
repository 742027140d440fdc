"""AWP, ADT and LAS-AT wired into the workbench: the objective hooks fit() calls (H3 after_step, H5 state),
the presets' arms, and the benchmark's rows."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port

from taetlib import presets
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.methods import Objective, build_objective
from taetlib.models import create_model

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


@pytest.mark.parametrize("method", ("awp", "adt"))
def test_awp_and_adt_compose_with_robustlt(method):
    """RobustLT sets their radius (CPB x AIW ramp); AWP keeps its weight step, ADT samples within eps_y."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    cfg = RunConfig(method=method, robustlt=True, epochs=10, attack_steps=1, adt_steps=1, adt_samples=1)
    obj = build_objective(cfg, [100, 60, 40, 30, 20, 15, 10, 10, 10, 10], 0.1)
    assert obj.name == f"robustlt({method})" and obj.attack.class_scale is not None
    eps, _ = obj.attack.radius(y, 10)
    assert bool((eps[y == 9] > eps[y == 0]).all())   # tail classes get the larger radius
    w0 = [p.detach().clone() for p in model.parameters()]
    out = obj.step(model, x, y, epoch=10)
    moved = any(not torch.equal(a, p) for a, p in zip(w0, model.parameters()))
    assert moved == (method == "awp") and torch.isfinite(out.loss)
    obj.after_step(model)
    assert all(torch.allclose(a, p, atol=1e-7) for a, p in zip(w0, model.parameters()))


@pytest.mark.parametrize("ir", (10, 20, 50, 100))
def test_cifar10_presets_hold_the_comparison_and_every_arm_is_a_valid_run(ir):
    p = presets.get(f"cifar10_lt_ir{ir}")
    plain = {(a.method, a.robustlt): a for a in p.sweep["arms"] if not a.label}   # controls have labels
    arms = set(plain)
    assert {("adt", False), ("adt", True), ("las_at", False)} <= arms and ("las_at", True) not in arms
    assert (("awp", False) in arms) == (ir == 50)   # AWP: RobustLT's table (IR 50), not TAET's
    for method, robust in arms:
        cfg = RunConfig.from_dict(p.run_config(plain[method, robust], ir, 0))
        assert cfg.method == method and cfg.robustlt == robust
    if ir == 50:   # RobustLT's own AWP settings there
        cfg = RunConfig.from_dict(p.run_config(plain["awp", False], ir, 0))
        assert (cfg.awp_gamma, cfg.awp_ascent) == (0.005, "robustlt")


def test_step_cost_benchmark_states_each_comparison_rows_own_floor():
    spec = importlib.util.spec_from_file_location("step_cost", ROOT / "benchmarks" / "step_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for row in ("awp", "adt", "las_at (step)", "las_at (update)"):
        assert row in bench.ROWS and bench.OWN_FLOOR[row][0].startswith("floor")
    assert bench.LASAT_K == 14 and "7x5" in bench.OWN_FLOOR["adt"][1]


# ---------------------------------------------------------------- DDP: every rank ends with the same networks
def _fit_rank(rank, world, port, method, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))   # one thread: OMP_NUM_THREADS, inherited (conftest.one_thread)
    import taetlib.train as T
    captured, build = {}, T.build_objective
    T.build_objective = lambda *a: captured.setdefault("objective", build(*a))
    extra = (dict(lasat_strategy_model="small_cnn", lasat_interval=2, lasat_iter_choices=[1, 2],
                  lasat_reward_steps=2) if method == "las_at" else dict(awp_gamma=0.05))
    cfg = RunConfig(method=method, dataset="synthetic", data_root=str(out / "data"), imbalance_ratio=5.0, n_max=60,
                    epochs=2, attack_steps=2, batch_size=32, eval_every=0, device="cpu", **extra)
    res = T.fit(cfg, load_lt(cfg), out / "run")
    torch.save({"model": res.model.state_dict(), "objective": captured["objective"].state_dict()},
               out / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("method", ("awp", "las_at"))
def test_ddp_ranks_end_with_the_same_networks(method, tmp_path):
    """Two gloo ranks on different shards: AWP's v and LAS-AT's strategy update are averaged over the ranks,
    so the target (and the strategy network) stay identical; without the all-reduce AWP's weight decay at
    w + v_rank makes the ranks drift apart."""
    mp.spawn(_fit_rank, args=(2, free_port(), method, tmp_path), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if method == "las_at":
        pa, pb = a["objective"]["policy"], b["objective"]["policy"]
        assert a["objective"]["steps"] > 2 and all(torch.equal(pa[k], pb[k]) for k in pa)
