"""DDP: shards, the DDP wrapper's attack path, settings refused per world size, a real 2-process
gloo run under torchrun whose all-reduced per-class test counts equal a 1-process evaluation, and
2-rank fit() runs of PGD-AT that train like one process, count the padded epoch, and resume on one."""
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import free_port
from torch import nn

from taetlib import distributed
from taetlib.attack_suite import run_attack
from taetlib.attacks import pgd
from taetlib.batches import Batches, Split, epoch_generator
from taetlib.checkpoints import load_checkpoint, load_model
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.distributed import Dist
from taetlib.epoch_eval import evaluate_per_class
from taetlib.errors import ConfigError
from taetlib.eval_result import per_class_table
from taetlib.methods.taet import TAET
from taetlib.models import Normalized, create_model
from taetlib.train import fit

ROOT = Path(__file__).resolve().parents[1]


def ids_split(n: int) -> Split:
    """Labels are the sample ids, so a batch says which samples it holds."""
    return Split(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n))


def shard_ids(n, rank, world, epoch, batch=8):
    b = Batches(ids_split(n), batch, "cpu", shuffle=True, seed=3, rank=rank, world_size=world)
    got = [y for _, y in b.epoch(epoch)]
    assert len(got) == len(b)
    return torch.cat(got).tolist()


def test_training_shards_cover_the_epoch_and_change_with_it():
    n = 101
    r0, r1 = shard_ids(n, 0, 2, epoch=1), shard_ids(n, 1, 2, epoch=1)
    assert len(r0) == len(r1) == 51                       # padded to a multiple of 2: as many steps
    assert set(r0) | set(r1) == set(range(n)) and len(set(r0) & set(r1)) == 1   # one image twice
    assert shard_ids(n, 0, 2, epoch=1) == r0              # a pure function of (seed, epoch, rank)
    assert shard_ids(n, 0, 2, epoch=2) != r0              # reshuffled every epoch
    # on one process the order is the undistributed one
    plain = Batches(ids_split(n), 8, "cpu", shuffle=True, seed=3)
    assert torch.cat([y for _, y in plain.epoch(1)]).tolist() == shard_ids(n, 0, 1, epoch=1)


def test_eval_shards_are_disjoint_and_complete():
    s = ids_split(11)
    parts = [distributed.shard(s, Dist(r, 3)).y.tolist() for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))


def test_settings_refused_per_world_size():
    cfg = RunConfig(dataset="synthetic", batch_size=128)
    distributed.check(cfg, Dist(0, 8), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"batch_size=128: is the global batch .* 3 processes; use a multiple"):
        distributed.check(cfg, Dist(0, 3), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"sync_bn=True: .*GPUs only.*set sync_bn=false"):
        distributed.check(cfg.replace(sync_bn=True), Dist(0, 2), torch.device("cpu"))
    distributed.check(cfg.replace(sync_bn=True), Dist(), torch.device("cpu"))   # one process: plain BatchNorm


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_attack_passes_bypass_the_ddp_wrapper(one_process_group):
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1)
    net = distributed.DDP(model)
    calls = []
    real = net._pre_forward
    net._pre_forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    net.train()
    x_adv = pgd(net, x, y, eps=0.1, step=0.05, steps=3)   # eval mode inside: the bare module
    assert calls == [] and net.training
    F.cross_entropy(net(x_adv), y).backward()             # the training pass: through DDP
    assert calls == [1] and all(p.grad is not None for p in model.parameters())


def test_teardown_frees_a_ddp_wrapper_held_in_a_cycle_before_it_leaves_the_group():
    """Left to interpreter finalization, such a wrapper aborted 2 rank exits in 30 (SIGABRT)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    gc.disable()   # only teardown may collect it
    try:
        net = distributed.DDP(nn.Linear(6, 4))
        net(torch.randn(2, 6)).sum().backward()
        held = [net]
        held.append(held)
        alive = weakref.ref(net)
        del net, held
        assert alive() is not None and dist.is_initialized()
        distributed.teardown()
        assert alive() is None and not dist.is_initialized()
        distributed.teardown()   # a second call (atexit after an explicit one) does nothing
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------- 2 gloo processes under torchrun
SETTINGS = ["dataset=synthetic", "imbalance_ratio=5", "n_max=100", "test_per_class=20", "epochs=3",
            "stabilization_epochs=2", "attack_steps=2", "batch_size=64", "lr=0.05", "eval_every=3",
            "eval_per_class=null", "eval_pgd_steps=2", "random_start=none", "device=cpu",
            "budget_rule=released"]   # TAET's 2 clean epochs inside the 3


@pytest.mark.slow
def test_two_gloo_processes_train_and_count_like_one_process(tmp_path):
    """random_start=none: PGD is then deterministic, so the sharded evaluation can be compared exactly."""
    run, data_root = tmp_path / "run", tmp_path / "data"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "taetlib", "--", "train", "--run", str(run), "--set", *SETTINGS, f"data_root={data_root}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("epoch 3/3") == 1   # rank 0 alone reports
    ck = load_checkpoint(run / "last.pt")
    assert ck["world_size"] == 2 and ck["epoch"] == 3 and (run / "model.pt").exists()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3] and history == ck["history"]
    last = history[-1]

    # the same checkpoint in one process: in-training evaluation on the whole eval set ...
    cfg = RunConfig.load(run / "config.json")
    data = load_lt(cfg)
    model = load_model(run)
    split = data.test["balanced"].subset_per_class(cfg.eval_per_class, seed=cfg.seed)
    clean, robust = evaluate_per_class(model, Batches(split, cfg.batch_size, "cpu", shuffle=False), 10,
                                       eps=cfg.train_eps(data.spec.default_eps), steps=cfg.eval_pgd_steps,
                                       random_start=cfg.random_start, device=torch.device("cpu"))
    assert (clean, robust) == (last["test_clean_acc"], last["test_pgd_acc"])
    assert len(set(robust)) > 2   # not a degenerate all-0 / all-1 model
    # ... and the evaluation suite's clean per-class counts (evaluate()'s own counting, without its PGD-20 sweep)
    pred = run_attack("clean", model.eval(), split.x, split.y, {})
    counts = per_class_table("clean", "balanced", 0.0, split.y.numpy(), pred, data.class_names)
    assert (counts.correct / counts.n).tolist() == last["test_clean_acc"]


# ---------------------------------------------------------------- 2 ranks of fit() against 1 process
def no_batchnorm_model(spec) -> nn.Module:
    """Per-sample computation only (no BatchNorm): a 2-rank step can then equal a 1-process step exactly."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(spec.in_channels, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    return Normalized(net, spec.mean, spec.std)


# One gloo rank, started as torchrun would start it (RANK, WORLD_SIZE, MASTER_ADDR/PORT): it runs fit() on
# each job and, on rank 0, saves each epoch's training tally [clean|adv, hits|seen, class] after fit()'s own
# all-reduce (a spy on train_epoch keeps the tensor fit() reduces in place).
RANK_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[3])
from test_distributed import no_batchnorm_model
from taetlib import distributed, train
from taetlib.config import RunConfig
from taetlib.data import load_lt

out, jobs, tallies = Path(sys.argv[1]), json.loads(sys.argv[2]), []
real = train.train_epoch
def spy(*args, **kwargs):
    result = real(*args, **kwargs)
    tallies.append(result[2])
    return result
train.train_epoch = spy

for job in jobs:
    cfg = RunConfig.from_dict(job["cfg"])
    data = load_lt(cfg)
    tallies.clear()
    def stop(record):
        if record["epoch"] == job.get("stop_after"):
            raise KeyboardInterrupt
    try:
        train.fit(cfg, data, out / job["name"], model=no_batchnorm_model(data.spec), callback=stop)
    except KeyboardInterrupt:
        pass
    if os.environ["RANK"] == "0":
        torch.save([t.clone() for t in tallies], out / (job["name"] + ".tallies.pt"))
torch.distributed.barrier()   # leave together, and with every DDP wrapper freed (distributed.teardown)
distributed.teardown()
"""


def ddp_cfg(data_root, **kw) -> RunConfig:
    """PGD-AT with a deterministic attack (random_start='none') and no augmentation: nothing is drawn at
    random, so 2 ranks of half batches see the same global batches as 1 process."""
    return RunConfig(**{**dict(dataset="synthetic", data_root=str(data_root), method="pgd_at", imbalance_ratio=2.0,
                               n_max=15, epochs=2, batch_size=32, lr=0.05, attack_steps=2, random_start="none",
                               augment="none", eval_every=0, device="cpu"), **kw})


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """Three fit() runs on 2 gloo ranks: 'even' (104 images), 'odd' (111: one image padded in), and
    'stopped' (3 epochs, stopped after epoch 2 as a kill would stop it)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfgs = {"even": ddp_cfg(tmp / "data"), "odd": ddp_cfg(tmp / "data", n_max=16),
            "stopped": ddp_cfg(tmp / "data", epochs=3)}
    for cfg in cfgs.values():
        load_lt(cfg)   # the split manifests, before the ranks read them
    jobs = [{"name": n, "cfg": c.to_dict(), **({"stop_after": 2} if n == "stopped" else {})} for n, c in cfgs.items()]
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp), json.dumps(jobs), str(Path(__file__).parent)],
                              cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    return tmp, cfgs, outs[0]


def close(a: nn.Module, b: nn.Module, tol: float = 1e-5) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], rtol=0, atol=tol) for k in sa)


@pytest.mark.slow
def test_two_ranks_of_pgd_at_train_like_one_process_on_the_same_global_batch(two_rank_runs, tmp_path):
    tmp, cfgs, _ = two_rank_runs
    cfg = cfgs["even"]
    data = load_lt(cfg)
    assert len(data.train) % 2 == 0   # no padding: the 2 ranks' half batches tile the 1-process batches
    one = fit(cfg, data, tmp_path / "one", model=no_batchnorm_model(data.spec))
    two = load_checkpoint(tmp / "even" / "last.pt")
    assert two["world_size"] == 2 and two["epoch"] == 2
    model = no_batchnorm_model(data.spec)
    model.load_state_dict(two["model"])
    assert close(model, one.model)
    assert not close(model, no_batchnorm_model(data.spec))   # and training did move the weights
    for a, b in zip(two["history"], one.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["train_clean_acc"] == pytest.approx(b["train_clean_acc"], abs=1e-9)
        assert a["train_adv_acc"] == pytest.approx(b["train_adv_acc"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("run", ("even", "odd"))
def test_all_reduced_tallies_count_the_padded_training_set(two_rank_runs, run):
    """Summed over the 2 ranks, each epoch counts every training image once, plus the one image the
    shards wrap around to when the set is odd (the DistributedSampler rule)."""
    tmp, cfgs, _ = two_rank_runs
    cfg = cfgs[run]
    data = load_lt(cfg)
    n = len(data.train)
    assert n % 2 == (run == "odd")
    tallies = torch.load(tmp / f"{run}.tallies.pt", weights_only=True)
    assert len(tallies) == cfg.epochs
    for epoch, tally in enumerate(tallies, 1):
        seen = tally[:, 1]   # [clean|adv, class]
        padded = torch.tensor(data.train_counts)
        if n % 2:   # the wrap-around image: the first of this epoch's permutation
            first = torch.randperm(n, generator=epoch_generator(cfg.seed, epoch, "cpu"))[0]
            padded[data.train.y[first]] += 1
        assert seen.sum(1).tolist() == [n + n % 2] * 2
        assert torch.equal(seen[0], padded) and torch.equal(seen[1], padded)
        assert (tally[:, 0] <= seen).all() and tally[:, 0].sum() > 0


@pytest.mark.slow
def test_a_run_started_on_two_ranks_resumes_on_one(two_rank_runs, tmp_path, capsys):
    tmp, cfgs, _ = two_rank_runs
    cfg = cfgs["stopped"]
    data = load_lt(cfg)
    run = tmp_path / "run"
    (tmp / "stopped").rename(run)
    written = load_checkpoint(run / "last.pt")
    assert written["world_size"] == 2 and written["epoch"] == 2 and not (run / "model.pt").exists()
    trained = []
    resumed = fit(cfg, data, run, model=no_batchnorm_model(data.spec), callback=lambda r: trained.append(r["epoch"]))
    assert "was written by 2 process(es), this run has 1" in capsys.readouterr().out
    assert trained == [3] and resumed.history[:2] == written["history"]
    assert load_checkpoint(run / "last.pt")["world_size"] == 1 and (run / "model.pt").exists()
    one = fit(cfg, data, tmp_path / "one", model=no_batchnorm_model(data.spec))
    assert close(resumed.model, one.model)


# ---------------------------------------------------------------- TAET's HARL over the global batch
class NoAttack:
    """The training attack left out: HARL on the inputs as given (what is tested is the class means)."""
    start = "none"

    def __call__(self, model, x, y, epoch):
        return x, None, None   # as Attack: x_adv, the start's logits, GA-PGD's kappa


def harl_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 1, 3, 3])   # rank 0 lacks class 3, rank 1 class 2
    return x, y


def harl_step(model, x, y):
    out = TAET(NoAttack(), 4, 0, 1.0, 2.0, 0.5, "zero").loss(model, x, y, epoch=1)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters()]


def harl_rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x, y = harl_batch()
        torch.manual_seed(1)   # the weights the 1-process model gets
        loss, grads = harl_step(distributed.DDP(nn.Linear(6, 4)), x[rank::2], y[rank::2])   # rank 0's weights
        torch.save({"loss": loss, "grads": grads}, f"{out}/rank{rank}.pt")
    finally:
        distributed.teardown()


@pytest.mark.slow
def test_harl_on_two_gloo_ranks_is_harl_on_the_global_batch(tmp_path):
    torch.multiprocessing.spawn(harl_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(1)
    model = nn.Linear(6, 4)
    x, y = harl_batch()
    loss, grads = harl_step(model, x, y)   # one process, the whole batch
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r in ranks:
        assert torch.allclose(r["loss"], loss, atol=1e-6), (r["loss"], loss)
        for g, want in zip(r["grads"], grads):
            assert torch.allclose(g, want, atol=1e-6), (g, want)
    # not vacuous: each rank's own half gives another loss (the classes it holds differ)
    model.zero_grad()
    half, _ = harl_step(model, x[0::2], y[0::2])
    assert not torch.allclose(half, loss, atol=1e-3)
