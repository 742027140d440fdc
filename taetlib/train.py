"""fit(): the training loop, readable top to bottom, with stages, history, checkpoints and exact resume.

run_dir receives config.json, history.jsonl (one line per epoch), last.pt (every epoch, loads with
weights_only=True; it also holds the objective's state, e.g. LAS-AT's strategy network) and model.pt
(final weights), each written to a .tmp file and renamed into place, so a process killed at any
moment (kill -9 included) never leaves a half-written file under those names; history.jsonl is
replaced after last.pt, so it never lists an epoch last.pt does not hold.
Each epoch's randomness is seeded from (cfg.seed, epoch) and the data order is a pure function of
the same pair, so running the same command again resumes from last.pt bit-identically on CPU.
Everything that can refuse a run (config, data, model, checkpoints, run_dir writable and with room)
is checked before the first file is written: a refused run leaves nothing behind.
Inside the step nothing reads a value back to the host: losses and per-class hit counts accumulate
on the device and are read once per epoch. Under torchrun the same loop trains with DDP
(distributed.py says what is split across ranks and what is not). Checkpoints are read back by
checkpoints.py (load_checkpoint, load_model), which evaluation uses too.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import distributed
from .attacks import bn_eval, pgd
from .batches import Batches
from .checkpoints import CheckpointError, load_checkpoint
from .config import RunConfig
from .data import LTData
from .distributed import Dist, resolve_device
from .errors import bad
from .methods import build_objective, model_head
from .models import create_model, set_class_prior
from .schedule import epoch_seed, lr_at, stage_epochs
from .selection import balanced, best_epoch, validation_split

__all__ = ["FitResult", "RESUME_IGNORES", "RUN_FILES", "TrainingDiverged", "check_run_dir", "count_hits",
           "evaluate_per_class", "fit", "history_text", "peak_memory_mb", "per_class_acc", "progress_line",
           "train_epoch"]

RESUME_IGNORES = ("device", "compile")   # may differ between a run and its resume
RUN_FILES = ("config.json", "history.jsonl", "last.pt", "model.pt", "best.pt")   # what fit() writes into run_dir


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict]
    run_dir: Path


# ---------------------------------------------------------------- small pure helpers
def per_class_acc(tally: Tensor) -> list[float | None] | None:
    """[2, C] (hits, seen) -> recall per class; None where a class was not seen, None if nothing was."""
    hits, seen = tally.tolist()
    if not any(seen):
        return None
    return [h / n if n else None for h, n in zip(hits, seen)]


def count_hits(tally: Tensor, logits: Tensor | None, y: Tensor) -> None:
    """Adds per-class (hits, seen) in place; index_add, not bincount (CUDA bincount syncs)."""
    if logits is not None:
        tally[0].index_add_(0, y, (logits.argmax(1) == y).long())
        tally[1].index_add_(0, y, torch.ones_like(y))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS (Linux: KiB)


# ---------------------------------------------------------------- writing the run's files
def _save_atomic(obj, path: Path) -> None:
    """torch.save (or text) to path.tmp, then rename: a crash mid-write never leaves a half file at path."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(obj, str):
            tmp.write_text(obj)
        else:
            torch.save(obj, tmp)
    except OSError as e:   # e.g. the disk filled up during the run
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path} ({e.strerror}); the previous {path.name} is intact. "
                               "Fix: free space there, then run the same command again to resume.") from e
    os.replace(tmp, path)


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in nested dicts / lists (an objective's state)."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    return sum(_tensor_bytes(v) for v in obj) if isinstance(obj, (list, tuple)) else 0


def check_run_dir(run_dir: Path, model: nn.Module, objective_state: dict | None = None) -> None:
    """Refuse, before training, a run_dir that cannot take the run's files: not writable (a probe file
    is created and removed), or too little free space for last.pt (weights + momentum + the objective's
    state, e.g. LAS-AT's strategy network) written beside the previous one, plus model.pt."""
    where = next(p for p in (run_dir, *run_dir.parents) if p.exists())   # run_dir itself may not exist yet
    if not where.is_dir():
        raise bad("run_dir", str(run_dir), f"{where} is a file, not a directory. Fix: choose another run directory.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=where)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise bad("run_dir", str(run_dir), f"{where} is not writable ({e.strerror}). Fix: choose a writable run "
                                           f"directory, or give yourself write permission (chmod u+w {where}).") from e
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    need = 5 * weights + 2 * _tensor_bytes(objective_state or {}) + 2**20   # last.pt twice, model.pt, history
    free = shutil.disk_usage(where).free
    if free < need:
        raise bad("run_dir", str(run_dir), f"only {free / 2**20:.1f} MiB free on the filesystem of {where}; this run "
                  f"writes about {need / 2**20:.1f} MiB (last.pt beside the previous one, model.pt). Fix: free "
                  "space there, or choose a run directory on another disk.")


def _check_resume(ck: dict, cfg: RunConfig, path: Path, dist: Dist) -> None:
    # a field newer than the checkpoint counts as its default value
    old, new, default = ck.get("cfg", {}), cfg.to_dict(), RunConfig().to_dict()
    diff = {k: (old.get(k, default[k]), v) for k, v in new.items()
            if k not in RESUME_IGNORES and old.get(k, default[k]) != v}
    if diff:
        raise CheckpointError(f"{path} belongs to a run with other settings {diff} (checkpoint, now). "
                              "Fix: use a new run_dir, or resume=False to start this run over.")
    if ck.get("world_size", 1) != dist.world_size and dist.is_main:   # allowed, but say what it costs
        print(f"note: {path} was written by {ck.get('world_size', 1)} process(es), this run has {dist.world_size}: "
              "per-rank batches differ, so the rest is not bit-identical to an uninterrupted run.")


# ---------------------------------------------------------------- in-training evaluation
def evaluate_per_class(model: nn.Module, batches: Batches, num_classes: int, *, eps: float, steps: int,
                       random_start: str, device: torch.device, bf16: bool = False,
                       dist: Dist = Dist()) -> tuple[list, list]:
    """Clean and PGD (step eps/4) recall per class on `batches`, BatchNorm in eval mode. Under DDP each
    rank passes its shard and the per-class counts are summed over ranks."""
    tally = torch.zeros(2, 2, num_classes, dtype=torch.long, device=device)
    with bn_eval(model), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for x, y in batches.epoch(0):
            with torch.no_grad():
                count_hits(tally[0], model(x), y)
            x_adv = pgd(model, x, y, eps=eps, step=eps / 4, steps=steps, random_start=random_start)
            with torch.no_grad():
                count_hits(tally[1], model(x_adv), y)
    distributed.all_sum(dist, tally)
    return per_class_acc(tally[0]), per_class_acc(tally[1])


# ---------------------------------------------------------------- one epoch
def train_epoch(net: nn.Module, objective, optimizer: torch.optim.Optimizer, batches: Batches, epoch: int,
                cfg: RunConfig, num_classes: int, device: torch.device
                ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
    """One epoch of training steps. Returns device tensors: the loss sum, the loss parts' sums, the
    [clean|adv, hits|seen, class] tally and, for a class-mean loss (HARL), the [weight sum|batches, class]
    tally of its class weights (None otherwise); nothing is read back to the host in here."""
    net.train()
    loss_sum = torch.zeros((), device=device)
    parts_sum: dict[str, Tensor] = {}
    tally = torch.zeros(2, 2, num_classes, dtype=torch.long, device=device)
    weights = None
    for x, y in batches.epoch(epoch):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16):
            out = objective.step(net, x, y, epoch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        objective.after_step(net)
        loss_sum += out.loss.detach()
        for k, v in out.parts.items():
            parts_sum[k] = parts_sum.get(k, 0) + v.float()
        if out.class_weights is not None:   # mean over the batches holding the class (NaN: absent)
            w = out.class_weights.detach().float()
            weights = (0 if weights is None else weights) + torch.stack([w.nan_to_num(), (~w.isnan()).float()])
        count_hits(tally[0], out.clean_logits, y)
        count_hits(tally[1], out.adv_logits, y)
    return loss_sum, parts_sum, tally, weights


# ---------------------------------------------------------------- fit
def fit(cfg: RunConfig, data: LTData, run_dir: str | Path, *, model: nn.Module | None = None,
        init_checkpoint: str | Path | None = None, stage: str = "all", resume: bool = True,
        callback: Callable[[dict], None] | None = None) -> FitResult:
    """Train cfg.method on data.train into run_dir.

    stage: 'all' (the whole method), or for TAET 'stabilization' (epochs 1..S) / 'adversarial'
      (S+1..T, from init_checkpoint = the stage-1 run's last.pt, or from `model`).
    init_checkpoint: weights to start from; when it ends right before this stage's first epoch, its
      optimizer state and history carry over too, so stage 1 then stage 2 equals one 'all' run.
    resume: continue from run_dir/last.pt when it exists (it takes precedence over init_checkpoint).
    callback(record): called after each epoch (live plots); raising from it stops the run, and that
      epoch's checkpoint is already on disk.
    Test clean and PGD accuracy per class is measured every cfg.eval_every epochs and at the stage's last.
    Under torchrun (WORLD_SIZE > 1) this trains with DistributedDataParallel; cfg.batch_size stays the
    global batch, and only rank 0 writes files.
    """
    # ---- check everything that can refuse the run before writing anything
    cfg.validate()
    if data.spec.name != cfg.dataset:
        raise bad("dataset", cfg.dataset, f"but the data passed in is {data.spec.name!r}; load it with load_lt(cfg).")
    C = data.num_classes
    empty = [c for c, n in enumerate(data.train.counts(C)) if n == 0]
    if empty:
        raise bad("dataset", cfg.dataset, f"the training set has no sample of class(es) {empty}; every class needs "
                  "one. Fix: lower imbalance_ratio or raise n_max (load_lt(cfg) builds such a set).")
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "last.pt"
    dist, device = distributed.setup(resolve_device(cfg.device))   # (rank 0 of 1 without torchrun)
    distributed.check(cfg, dist, device)
    epochs = stage_epochs(cfg, stage)

    # ---- model and optimiser
    given_model = model is not None
    if model is None:
        torch.manual_seed(cfg.seed)   # same initial weights on every rank
        model = create_model(cfg.model, C, data.spec.in_channels, data.spec.mean, data.spec.std, head=model_head(cfg))
    set_class_prior(model, data.train_counts)   # heads that keep it (RoBal-N's evaluation); others: no-op
    if cfg.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # same state_dict keys as BatchNorm
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)

    # ---- where to start: resume > init_checkpoint > the given or a new model
    history, start, objective_state = [], epochs.start, {}
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, model)
        _check_resume(ck, cfg, ckpt_path, dist)
        optimizer.load_state_dict(ck["optimizer"])
        history, start, objective_state = ck["history"], ck["epoch"] + 1, ck.get("objective", {})
        if start < epochs.start:
            raise CheckpointError(f"{ckpt_path} ends at epoch {ck['epoch']} but stage {stage!r} starts at epoch "
                                  f"{epochs.start}. Fix: finish the earlier stage first (stage='stabilization').")
    elif init_checkpoint is not None:
        ck = load_checkpoint(init_checkpoint, model)
        if ck.get("epoch") == epochs.start - 1 and "optimizer" in ck:   # a true continuation
            optimizer.load_state_dict(ck["optimizer"])
            history, objective_state = ck.get("history", []), ck.get("objective", {})
    elif stage == "adversarial" and cfg.stabilization_epochs > 0 and not given_model:
        raise bad("stage", stage, "stage 2 continues from stage 1: pass init_checkpoint=<stage-1 run>/last.pt "
                                  "(or model=), or train with stage='all'.")
    train_split, val_split = validation_split(data.train, cfg, C)   # val_split: None unless select needs it
    counts = data.train_counts if val_split is None else train_split.counts(C)   # the priors of what trains
    objective = build_objective(cfg, counts, data.spec.default_eps)
    try:   # stateful objectives (LAS-AT's strategy network) continue where they were
        objective.load_state_dict(objective_state)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"the objective state in the checkpoint does not fit method {cfg.method!r} "
                              f"({' '.join(str(e).split())[:300]}). Fix: resume=False, or a new run_dir.") from e
    objective.bind(optimizer)
    distributed.check_same(dist, "the epoch to start from", start,
                           f"put run_dir ({run_dir}) on a filesystem every node shares.")
    check_run_dir(run_dir, model, objective.state_dict())

    # ---- the run directory: only now is anything written (rank 0 writes, the others only train)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:   # a .tmp left by a kill mid-write is never read; removed here
            (run_dir / f"{name}.tmp").unlink(missing_ok=True)
        _save_atomic(json.dumps(cfg.to_dict(), indent=2) + "\n", run_dir / "config.json")
        _save_atomic(history_text(history), run_dir / "history.jsonl")   # from the checkpoint: no half epochs

    # ---- what the loop uses
    train_batches = Batches(train_split, cfg.batch_size // dist.world_size, device, shuffle=True, augment=cfg.augment,
                            seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    val_batches = val_split and Batches(distributed.shard(val_split, dist), cfg.batch_size, device, shuffle=False)
    eval_batches = None   # eval_every=0 reads nothing of the test set (tuning.py trains without one)
    if cfg.eval_every:
        eval_split = data.test["balanced"].subset_per_class(cfg.eval_per_class, seed=cfg.seed)
        eval_batches = Batches(distributed.shard(eval_split, dist), cfg.batch_size, device, shuffle=False)
    eval_eps = cfg.train_eps(data.spec.default_eps)
    net = torch.compile(model) if cfg.compile else model
    net = distributed.wrap(net, dist, device)   # DDP when distributed; the attack bypasses it (see DDP)
    n_images, session_seconds = len(train_split), []

    if start >= epochs.stop and dist.is_main:   # run again on a finished run: say so, and where it is
        print(f"{run_dir}: already complete (epoch {start - 1} of {epochs.stop - 1}); nothing to train. Its files: "
              f"{', '.join(n for n in RUN_FILES if (run_dir / n).exists())}. Use a new run_dir to train again.",
              flush=True)
    for epoch in range(start, epochs.stop):
        # attack starts etc.: resume replays them; each rank its own stream (= the old one on one process)
        torch.manual_seed(epoch_seed(cfg.seed, epoch) * dist.world_size + dist.rank)
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()

        # ---- one epoch: no host sync in here
        loss_sum, parts_sum, tally, weights = train_epoch(net, objective, optimizer, train_batches, epoch, cfg, C,
                                                          device)

        # ---- once per epoch: sum over ranks, read back, check, evaluate, record, save
        distributed.all_sum(dist, loss_sum, tally, *parts_sum.values(), *([] if weights is None else [weights]))
        distributed.sync_buffers(model, dist)   # every rank now holds the model rank 0 saves
        n_batches = len(train_batches) * dist.world_size
        loss = loss_sum.item() / n_batches
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss):   # the same summed loss on every rank: all ranks stop together
            kept = (f"{ckpt_path} still holds the last good epoch ({history[-1]['epoch']})"
                    if ckpt_path.exists() and history else "no checkpoint was written")
            raise TrainingDiverged(f"epoch {epoch}: mean training loss is {loss} (method {objective.name}, lr {lr:g}). "
                                   f"Training stopped; {kept}. Fix: lower lr, check eps/step_size, or bf16=False.")
        record = {"epoch": epoch, "stage": objective.stage(epoch), "lr": lr, "loss": loss,
                  **{f"loss_{k}": v.item() / n_batches for k, v in parts_sum.items()},
                  "class_weight": None if weights is None else per_class_acc(weights),   # sum / batches
                  "train_clean_acc": per_class_acc(tally[0]), "train_adv_acc": per_class_acc(tally[1]),
                  "test_clean_acc": None, "test_pgd_acc": None}
        t1 = time.perf_counter()
        if cfg.eval_every and (epoch % cfg.eval_every == 0 or epoch == epochs.stop - 1):
            record["test_clean_acc"], record["test_pgd_acc"] = evaluate_per_class(   # monitoring only
                net, eval_batches, C, eps=eval_eps, steps=cfg.eval_pgd_steps, random_start=cfg.random_start,
                device=device, bf16=cfg.bf16, dist=dist)
            if val_batches and record["stage"] != "stabilization":   # selection reads the validation split only
                record["val_clean_acc"], record["val_pgd_acc"] = evaluate_per_class(
                    net, val_batches, C, eps=eval_eps, steps=cfg.eval_pgd_steps, random_start=cfg.random_start,
                    device=device, bf16=cfg.bf16, dist=dist)
        record.update(seconds=seconds, eval_seconds=time.perf_counter() - t1, images_per_s=n_images / seconds,
                      peak_mem_mb=peak_memory_mb(device))
        history.append(record)
        if dist.is_main and best_epoch(history) == epoch:   # before last.pt: a resume never lacks its best.pt
            _save_atomic(model.state_dict(), run_dir / "best.pt")
        if dist.is_main:   # checkpoint first, then the history that describes it
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": {"milestones": cfg.lr_milestones, "gamma": cfg.lr_gamma, "last_epoch": epoch},
                          "epoch": epoch, "cfg": cfg.to_dict(), "history": history, "world_size": dist.world_size,
                          "objective": objective.state_dict()}, ckpt_path)
            _save_atomic(history_text(history), run_dir / "history.jsonl")
        session_seconds.append(time.perf_counter() - t0)
        eta = (epochs.stop - 1 - epoch) * sum(session_seconds) / len(session_seconds)
        if dist.is_main:
            print(progress_line(record, cfg.total_epochs(), eta), flush=True)
        if callback is not None:
            callback(record)

    if cfg.select == "best_val_pgd":   # model.pt (what evaluation reads) is the selected epoch's weights
        best = best_epoch(history)
        if best is None:
            raise bad("select", cfg.select, f"no adversarial epoch of {run_dir} was validated; set eval_every > 0.")
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", model)["model"])
        if dist.is_main:
            print(f"selected epoch {best} (best balanced PGD accuracy on the validation split)", flush=True)
    if dist.is_main:
        _save_atomic(model.state_dict(), run_dir / "model.pt")
    distributed.barrier(dist)   # every rank returns once model.pt is on disk
    return FitResult(model=model, history=history, run_dir=run_dir)


def history_text(history: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in history)


def progress_line(r: dict, epochs: int, eta: float) -> str:
    def acc(name):
        v = balanced(r[name])
        return "-" if v is None else f"{v:.3f}"
    line = (f"epoch {r['epoch']}/{epochs} [{r['stage']}] loss {r['loss']:.4f} | "
            f"train clean {acc('train_clean_acc')} adv {acc('train_adv_acc')}")
    if r["test_clean_acc"] is not None:
        line += f" | test clean {acc('test_clean_acc')} pgd {acc('test_pgd_acc')}"
    return line + f" | {r['seconds']:.1f} s/epoch, {r['images_per_s']:.0f} img/s | ETA {eta:.0f} s"
