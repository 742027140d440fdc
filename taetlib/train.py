"""fit(): the training loop, readable top to bottom, with stages, history, checkpoints and exact resume.

run_dir receives config.json, history.jsonl (one line per epoch), last.pt (every epoch, loads with
weights_only=True; it also holds the objective's state, e.g. LAS-AT's strategy network) and model.pt
(final weights), each written to a .tmp file and renamed into place, so a process killed at any
moment (kill -9 included) never leaves a half-written file under those names; history.jsonl is
replaced after last.pt, so it never lists an epoch last.pt does not hold.
Each epoch's randomness is seeded from (cfg.seed, epoch) and the data order is a pure function of
the same pair, so running the same command again resumes from last.pt bit-identically on CPU; so
does a run trained in steps (stop_after) and one extended to more epochs (resume.py says when the
plan allows it): each ends where one uninterrupted run of the final length ends.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from . import distributed, numerics
from .batches import Batches
from .checkpoints import CheckpointError, load_checkpoint
from .config import RunConfig
from .data import LTData
from .distributed import resolve_device
from .epoch_eval import count_hits, evaluate_per_class, per_class_acc
from .epoch_line import epoch_count, peak_memory_mb, progress_line
from .errors import bad
from .fawa import FAWA, worst_class
from .fit_state import FitResult, Training, TrainingDiverged
from .history import history_text
from .methods import attack_start, build_objective, model_head
from .models import create_model, set_class_prior
from .resume import Refused, check_numerics, check_resume
from .run_files import RUN_FILES, check_run_dir, save_atomic
from .runlock import holds_run_lock
from .schedule import epoch_seed, lr_at, stage_epochs
from .selection import best_epoch, validation_split

__all__ = ["average_epoch", "build", "check_inputs", "epochs_to_train", "evaluate_epoch", "finish", "fit",
           "keep_fawa", "open_run_dir", "prepare", "record_epoch", "report_epoch", "restore", "restore_fawa",
           "save_epoch", "set_lr", "train_epoch"]


# ---------------------------------------------------------------- one epoch
def train_epoch(net: nn.Module, objective, optimizer: torch.optim.Optimizer, batches: Batches, epoch: int,
                cfg: RunConfig, num_classes: int, device: torch.device
                ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
    """One epoch of training steps. Returns device tensors: the loss sum, the loss parts' sums, the
    [clean|adv, hits|seen, class] tally and, for a class-mean loss (HARL), the [weight sum|batches|negative batches,
    class] tally of its class weights (None otherwise); nothing is read back to the host in here."""
    net.train()
    loss_sum = torch.zeros((), device=device)
    parts_sum: dict[str, Tensor] = {}
    tally = torch.zeros(2, 2, num_classes, dtype=torch.long, device=device)
    weights = None
    num = numerics.resolve(cfg, device)
    for x, y in batches.epoch(epoch):
        with numerics.autocast(device, num.bf16):   # the forward, the training attack; backward follows it
            out = objective.step(net, numerics.in_format(x, num.channels_last), y, epoch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        objective.after_step(net)
        loss_sum += out.loss.detach()
        for k, v in out.parts.items():
            parts_sum[k] = parts_sum.get(k, 0) + v.float()
        if out.class_weights is not None:   # per class: weight sum, batches holding it, batches it was negative in
            w = out.class_weights.detach().float()   # NaN where absent (NaN < 0 is False)
            weights = (0 if weights is None else weights) + torch.stack([w.nan_to_num(), (~w.isnan()).float(),
                                                                         (w < 0).float()])
        count_hits(tally[0], out.clean_logits, y)
        count_hits(tally[1], out.adv_logits, y)
    return loss_sum, parts_sum, tally, weights


# ---------------------------------------------------------------- fit
@holds_run_lock("run_dir")   # one writer per run folder; a second one is refused naming the holder's PID
def fit(cfg: RunConfig, data: LTData, run_dir: str | Path, *, model: nn.Module | None = None,
        init_checkpoint: str | Path | None = None, stage: str = "all", resume: bool = True,
        callback: Callable[[dict], None] | None = None, stop_after: int | None = None,
        new_plan: bool = False) -> FitResult:
    """Train cfg.method on data.train into run_dir.

    stage: 'all' (the whole method), or for TAET 'stabilization' (epochs 1..S) / 'adversarial'
      (S+1..T, from init_checkpoint = the stage-1 run's last.pt, or from `model`).
    init_checkpoint: weights to start from; when it ends right before this stage's first epoch, its
      optimizer state and history carry over too, so stage 1 then stage 2 equals one 'all' run.
    resume: continue from run_dir/last.pt when it exists (it takes precedence over init_checkpoint).
      A config whose epochs (or lr_milestones, lr_gamma) differ from the checkpoint's extends the run,
      where the plan of the epochs already trained stays (resume.py); new_plan=True accepts a new one.
    stop_after: train at most this many epochs in this call and return (the next call continues);
      model.pt is written only once the stage is complete.
    callback(record): called after each epoch (live plots); raising from it stops the run, and that
      epoch's checkpoint is already on disk.
    Test clean and PGD accuracy per class is measured every cfg.eval_every epochs and at the stage's last.
    model.pt holds the last epoch's weights, or those cfg.select picks (best_val_pgd, fawa: selection.py, fawa.py).
    Under torchrun (WORLD_SIZE > 1) this trains with DistributedDataParallel; cfg.batch_size stays the
    global batch, and only rank 0 writes files.
    """
    run = build(cfg, data, Path(run_dir), model, stage)
    objective_state = restore(run, resume, init_checkpoint, new_plan, given_model=model is not None)
    epochs = epochs_to_train(run, stop_after)
    prepare(run, data, objective_state)
    open_run_dir(run)
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = set_lr(run, epoch)
        sums = train_epoch(run.net, run.objective, run.optimizer, run.train_batches, epoch, cfg, run.num_classes,
                           run.device)
        record = record_epoch(run, epoch, lr, sums, t0)
        evaluate_epoch(run, record)
        average_epoch(run, record)
        save_epoch(run, record)
        report_epoch(run, record, time.perf_counter() - t0)
        if callback is not None:
            callback(record)
    return finish(run)


# ---------------------------------------------------------------- fit's steps, in order
def check_inputs(cfg: RunConfig, data: LTData) -> None:
    cfg.validate()
    if data.spec.name != cfg.dataset:
        raise bad("dataset", cfg.dataset, f"but the data passed in is {data.spec.name!r}; load it with load_lt(cfg).")
    empty = [c for c, n in enumerate(data.train.counts(data.num_classes)) if n == 0]
    if empty:
        raise bad("dataset", cfg.dataset, f"the training set has no sample of class(es) {empty}; every class needs "
                  "one. Fix: lower imbalance_ratio or raise n_max (load_lt(cfg) builds such a set).")


def build(cfg: RunConfig, data: LTData, run_dir: Path, model: nn.Module | None, stage: str) -> Training:
    """Checks, the process group, the model (new, seeded alike on every rank, or the one given) and SGD."""
    check_inputs(cfg, data)
    dist, device = distributed.setup(resolve_device(cfg.device))   # (rank 0 of 1 without torchrun)
    distributed.check(cfg, dist, device)
    epochs = stage_epochs(cfg, stage)
    if model is None:
        torch.manual_seed(cfg.seed)   # same initial weights on every rank
        model = create_model(cfg.model, data.num_classes, data.spec.in_channels, data.spec.mean, data.spec.std,
                             head=model_head(cfg))
    set_class_prior(model, data.train_counts)   # heads that keep it (RoBal-N's evaluation); others: no-op
    if cfg.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # same state_dict keys as BatchNorm
    num = numerics.resolve(cfg, device)
    numerics.in_format(model.to(device), num.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    fawa = FAWA(cfg.fawa_decay, cfg.fawa_threshold) if cfg.select == "fawa" else None
    return Training(cfg, run_dir, stage, epochs, dist, device, model, optimizer, tuple(data.class_names),
                    num, start=epochs.start, fawa=fawa)


def restore(run: Training, resume: bool, init_checkpoint, new_plan: bool, given_model: bool) -> dict:
    """Where to start: run_dir/last.pt (resume or extend) > init_checkpoint > the given or a new model.
    Loads weights, optimiser and history into `run`; returns the objective's saved state."""
    if resume and run.ckpt_path.exists():
        ck = load_checkpoint(run.ckpt_path, run.model)
        try:
            run.extension = check_resume(ck, run.cfg, run.ckpt_path, new_plan)
            check_numerics(ck, run.num, run.cfg, run.ckpt_path)
        except Refused as e:
            raise CheckpointError(str(e)) from None
        if ck.get("world_size", 1) != run.dist.world_size and run.dist.is_main:   # allowed; say what it costs
            print(f"note: {run.ckpt_path} was written by {ck.get('world_size', 1)} process(es), this run has "
                  f"{run.dist.world_size}: per-rank batches differ, so the rest is not bit-identical to an "
                  "uninterrupted run.")
        run.optimizer.load_state_dict(ck["optimizer"])
        run.history, run.start = ck["history"], ck["epoch"] + 1
        restore_fawa(run, ck)
        if run.start < run.epochs.start:
            raise CheckpointError(f"{run.ckpt_path} ends at epoch {ck['epoch']} but stage {run.stage!r} starts at "
                                  f"epoch {run.epochs.start}. Fix: finish the earlier stage first "
                                  "(stage='stabilization').")
        return ck.get("objective", {})
    if init_checkpoint is not None:
        ck = load_checkpoint(init_checkpoint, run.model)
        if ck.get("epoch") == run.epochs.start - 1 and "optimizer" in ck:   # a true continuation
            run.optimizer.load_state_dict(ck["optimizer"])
            run.history = ck.get("history", [])
            restore_fawa(run, ck)
            return ck.get("objective", {})
        return {}
    if run.stage == "adversarial" and run.cfg.clean_stage_epochs() > 0 and not given_model:
        raise bad("stage", run.stage, "stage 2 continues from stage 1: pass init_checkpoint=<stage-1 run>/last.pt "
                                      "(or model=), or train with stage='all'.")
    return {}


def restore_fawa(run: Training, ck: dict) -> None:
    """The weight average the checkpoint holds, on the run's device (select='fawa' only)."""
    if run.fawa is not None:
        run.fawa.load_state_dict(ck.get("fawa"))
        if run.fawa.weights is not None:
            run.fawa.weights = {k: v.to(run.device) for k, v in run.fawa.weights.items()}


def prepare(run: Training, data: LTData, objective_state: dict) -> None:
    """The objective (in its saved state), the batches, the wrapped net; then the run_dir checks."""
    cfg, dist, C = run.cfg, run.dist, run.num_classes
    train_split, val_split = validation_split(data.train, cfg, C)   # val_split: None unless select needs it
    counts = data.train_counts if val_split is None else train_split.counts(C)   # the priors of what trains
    run.objective = build_objective(cfg, counts, data.spec.default_eps)
    try:   # stateful objectives (LAS-AT's strategy network) continue where they were
        run.objective.load_state_dict(objective_state)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"the objective state in the checkpoint does not fit method {cfg.method!r} "
                              f"({' '.join(str(e).split())[:300]}). Fix: resume=False, or a new run_dir.") from e
    run.objective.bind(run.optimizer)
    distributed.check_same(dist, "the epoch to start from", run.start,
                           f"put run_dir ({run.run_dir}) on a filesystem every node shares.")
    held = {"objective": run.objective.state_dict(), "fawa": run.model.state_dict() if run.fawa else {}}
    check_run_dir(run.run_dir, run.model, held)
    run.train_batches = Batches(train_split, cfg.batch_size // dist.world_size, run.device, shuffle=True,
                                augment=cfg.augment, seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    run.eval_eps = cfg.train_eps(data.spec.default_eps)
    if cfg.eval_every:   # eval_every=0 reads nothing of the test set (tuning.py trains without one)
        eval_split = data.test["balanced"].subset_per_class(cfg.eval_per_class, seed=cfg.seed)
        run.eval_batches = Batches(distributed.shard(eval_split, dist), cfg.batch_size, run.device, shuffle=False)
        run.counts["test"] = eval_split.counts(C)
    run.n_images = len(train_split)
    if val_split is not None:
        run.val_batches = Batches(distributed.shard(val_split, dist), cfg.batch_size, run.device, shuffle=False)
        run.counts["val"] = val_split.counts(C)
    net = cast(nn.Module, torch.compile(run.model)) if cfg.compile else run.model   # a Module, typed as a callable
    run.net = distributed.wrap(net, dist, run.device)   # DDP when distributed; the attack bypasses it (see DDP)


def open_run_dir(run: Training) -> None:
    """Only now is anything written (rank 0 writes, the others only train): config.json and the history
    the checkpoint holds. An extension drops model.pt, which no longer holds the run's final weights."""
    if not run.dist.is_main:
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:   # a .tmp left by a kill mid-write is never read; removed here
        (run.run_dir / f"{name}.tmp").unlink(missing_ok=True)
    if run.extension is not None:
        (run.run_dir / "model.pt").unlink(missing_ok=True)
    save_atomic(json.dumps({**run.cfg.to_dict(), numerics.RESOLVED_KEY: run.num.to_dict()}, indent=2) + "\n",
                 run.run_dir / "config.json")
    save_atomic(history_text(run.history), run.run_dir / "history.jsonl")   # from the checkpoint: no half epochs
    if run.start >= run.epochs.stop:   # run again on a finished run: say so, and where it is
        print(f"{run.run_dir}: already complete (epoch {run.start - 1} of {run.epochs.stop - 1}); nothing to train. "
              f"Its files: {', '.join(n for n in RUN_FILES if (run.run_dir / n).exists())}. Use a new run_dir to "
              "train again, or more epochs to extend it.", flush=True)


def epochs_to_train(run: Training, stop_after: int | None) -> range:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise bad("stop_after", stop_after, "must be an integer >= 1 (epochs to train in this call), or None.")
    stop = run.epochs.stop if stop_after is None else min(run.epochs.stop, run.start + stop_after)
    return range(run.start, stop)


def set_lr(run: Training, epoch: int) -> float:
    """Seed the epoch (attack starts etc.: resume replays them; each rank its own stream, = the old one on
    one process), set its lr and reset the peak-memory counter."""
    torch.manual_seed(epoch_seed(run.cfg.seed, epoch) * run.dist.world_size + run.dist.rank)
    lr = lr_at(run.cfg, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    return lr


def record_epoch(run: Training, epoch: int, lr: float, sums: tuple, t0: float) -> dict:
    """Sum the epoch's device tallies over ranks, read them back once, stop on a diverged loss, and
    turn them into the epoch's history record."""
    loss_sum, parts_sum, tally, weights = sums
    distributed.all_sum(run.dist, loss_sum, tally, *parts_sum.values(), *([] if weights is None else [weights]))
    distributed.sync_buffers(run.model, run.dist)   # every rank now holds the model rank 0 saves
    n_batches = len(run.train_batches) * run.dist.world_size
    loss = loss_sum.item() / n_batches
    seconds = time.perf_counter() - t0   # after the read-back: the device's work included
    if not math.isfinite(loss):   # the same summed loss on every rank: all ranks stop together
        kept = (f"{run.ckpt_path} still holds the last good epoch ({run.history[-1]['epoch']})"
                if run.ckpt_path.exists() and run.history else "no checkpoint was written")
        raise TrainingDiverged(f"epoch {epoch}: mean training loss is {loss} (method {run.objective.name}, lr {lr:g}). "
                               f"Training stopped; {kept}. Fix: lower lr, check eps/step_size, or "
                               "precision='fp32'.")
    record = {"epoch": epoch, "stage": run.objective.stage(epoch), "lr": lr, "loss": loss,
              **{f"loss_{k}": v.item() / n_batches for k, v in parts_sum.items()},
              "class_weight": None if weights is None else per_class_acc(weights[:2]),   # sum / batches
              # a mean can stay positive while single batches ascend the class: their share, recorded apart
              "class_weight_negative": None if weights is None else per_class_acc(weights[[2, 1]]),
              "train_clean_acc": per_class_acc(tally[0]), "train_adv_acc": per_class_acc(tally[1]),
              "train_n": tally[:, 1].amax(0).tolist(), "test_clean_acc": None, "test_pgd_acc": None,
              "seconds": seconds, "images_per_s": run.n_images / seconds}
    if run.extension is not None and epoch == run.start:   # the first epoch past the old plan's say
        record["extended"] = run.extension
    return record


def evaluate_epoch(run: Training, record: dict) -> None:
    """Every cfg.eval_every epochs and at the stage's last: clean and PGD recall per class on the test
    subset (monitoring only); for selection, on the validation split (adversarial epochs): at those epochs
    under best_val_pgd, after every one under fawa, from CFA's uniform start (fawa.py)."""
    cfg, epoch, t0 = run.cfg, record["epoch"], time.perf_counter()
    at_eval = cfg.eval_every and (epoch % cfg.eval_every == 0 or epoch == run.epochs.stop - 1)

    def measure(batches: Batches, start: str) -> tuple:
        return evaluate_per_class(run.net, batches, run.num_classes, eps=run.eval_eps, steps=cfg.eval_pgd_steps,
                                  random_start=start, device=run.device, bf16=run.num.eval_precision == "bf16",
                                  dist=run.dist)
    start = attack_start(cfg)[0]
    if at_eval and run.eval_batches is not None:   # eval_batches exist exactly when eval_every > 0
        record["test_clean_acc"], record["test_pgd_acc"] = measure(run.eval_batches, start)
        record["test_n"] = run.counts["test"]
    validate = at_eval or run.fawa is not None
    if run.val_batches and record["stage"] != "stabilization" and validate:   # selection reads this split only
        record["val_clean_acc"], record["val_pgd_acc"] = measure(run.val_batches,
                                                                 "uniform" if run.fawa is not None else start)
        record["val_n"] = run.counts["val"]
    record.update(eval_seconds=time.perf_counter() - t0, peak_mem_mb=peak_memory_mb(run.device))


def average_epoch(run: Training, record: dict) -> None:
    """select='fawa': the epoch's worst validation class (fawa_worst) decides whether the weight average
    takes this epoch's weights in (fawa_updated); fawa_updates counts the epochs it did so far."""
    if run.fawa is None:
        return
    worst, updated = None, False
    if record.get("val_pgd_acc") is not None:   # not in a clean stage (TAET's stage 1)
        n = record["val_n"]
        correct = [0 if r is None else round(r * k) for r, k in zip(record["val_pgd_acc"], n)]
        worst = worst_class(correct, n, run.cfg.fawa_class_acc)
        updated = run.fawa.step(run.model.state_dict(), worst)
    record.update(fawa_worst=worst, fawa_updated=updated, fawa_updates=run.fawa.updates)


def save_epoch(run: Training, record: dict) -> None:
    """Append the record; rank 0 writes best.pt (before last.pt: a resume never lacks its best.pt), then
    last.pt, then the history that describes it."""
    run.history.append(record)
    if not run.dist.is_main:
        return
    epoch, cfg = record["epoch"], run.cfg
    if cfg.select == "best_val_pgd" and best_epoch(run.history) == epoch:
        save_atomic(run.model.state_dict(), run.run_dir / "best.pt")
    fawa = {"fawa": run.fawa.state_dict()} if run.fawa is not None else {}
    save_atomic({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), **fawa,
                  "scheduler": {"milestones": cfg.lr_milestones, "gamma": cfg.lr_gamma, "last_epoch": epoch},
                  "epoch": epoch, "cfg": cfg.to_dict(), "history": run.history, "world_size": run.dist.world_size,
                  "objective": run.objective.state_dict(), numerics.RESOLVED_KEY: run.num.to_dict()}, run.ckpt_path)
    save_atomic(history_text(run.history), run.run_dir / "history.jsonl")


def report_epoch(run: Training, record: dict, seconds: float) -> None:
    run.session_seconds.append(seconds)
    eta = (run.epochs.stop - 1 - record["epoch"]) * sum(run.session_seconds) / len(run.session_seconds)
    if run.dist.is_main:
        print(progress_line(record, epoch_count(run.cfg, record["epoch"]), eta), flush=True)


def finish(run: Training) -> FitResult:
    """Once the stage is complete: model.pt (the selected epoch's weights under select='best_val_pgd', the
    weight average under select='fawa')."""
    last = run.history[-1]["epoch"] if run.history else run.start - 1
    complete = last >= run.epochs.stop - 1
    if complete and run.cfg.select == "best_val_pgd":   # model.pt (what evaluation reads) is the selected epoch's
        best = best_epoch(run.history)
        if best is None:
            raise bad("select", run.cfg.select,
                      f"no adversarial epoch of {run.run_dir} was validated; set eval_every > 0.")
        run.model.load_state_dict(load_checkpoint(run.run_dir / "best.pt", run.model)["model"])
        if run.dist.is_main:
            print(f"selected epoch {best} (best balanced PGD accuracy on the validation split)", flush=True)
    if complete and run.fawa is not None:
        keep_fawa(run, run.fawa)
    if complete and run.dist.is_main:
        save_atomic(run.model.state_dict(), run.run_dir / "model.pt")
    distributed.barrier(run.dist)   # every rank returns once model.pt is on disk
    return FitResult(model=run.model, history=run.history, run_dir=run.run_dir, class_names=run.class_names,
                     complete=complete)


def keep_fawa(run: Training, f: FAWA) -> None:
    """model.pt = the weight average; where no epoch reached the threshold (the official code would keep its
    average's random initial weights) the last epoch's weights stay, and the run says so."""
    cfg = run.cfg
    if f.updates and f.weights is not None:
        run.model.load_state_dict(f.weights)
        note = f"model.pt holds the fairness-aware weight average (FAWA) of {f.updates} epoch(s)"
    else:
        note = (f"FAWA never started: no epoch's worst validation class reached fawa_threshold="
                f"{cfg.fawa_threshold:g} ({cfg.fawa_class_acc}); model.pt holds the last epoch's weights "
                "(fawa_updates 0 in history.jsonl)")
    if run.dist.is_main:
        print(note, flush=True)
