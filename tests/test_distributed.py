"""DDP: shards, the DDP wrapper's attack path, settings refused per world size, and a real 2-process
gloo run under torchrun whose all-reduced per-class test counts equal a 1-process evaluation."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from taetlib import distributed
from taetlib.attacks import pgd
from taetlib.config import ConfigError, RunConfig
from taetlib.data import Batches, Split, load_lt
from taetlib.distributed import Dist
from taetlib.evaluate import per_class_table, run_attack
from taetlib.models import create_model
from taetlib.train import evaluate_per_class, load_checkpoint, load_model

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


# ---------------------------------------------------------------- 2 gloo processes under torchrun
SETTINGS = ["dataset=synthetic", "imbalance_ratio=5", "n_max=100", "test_per_class=20", "epochs=3",
            "stabilization_epochs=2", "attack_steps=2", "batch_size=64", "lr=0.05", "eval_every=3",
            "eval_per_class=null", "eval_pgd_steps=2", "random_start=none", "device=cpu"]


@pytest.mark.slow
def test_two_gloo_processes_train_and_count_like_one_process(tmp_path):
    """random_start=none: PGD is then deterministic, so the sharded evaluation can be compared exactly."""
    run, data_root = tmp_path / "run", tmp_path / "data"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "taetlib", "--", "train", "--run", str(run), "--set", *SETTINGS, f"data_root={data_root}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
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
