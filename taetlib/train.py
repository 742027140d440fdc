"""fit(): the training loop, readable top to bottom, with stages, history, checkpoints and exact resume.

run_dir receives config.json, history.jsonl (one line per epoch), last.pt (atomic, every epoch,
loads with weights_only=True) and model.pt (final weights). Each epoch's randomness is seeded from
(cfg.seed, epoch) and the data order is a pure function of the same pair, so resuming from last.pt
continues bit-identically on CPU. Inside the step nothing reads a value back to the host: losses
and per-class hit counts accumulate on the device and are read once per epoch.
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .attacks import bn_eval, pgd
from .config import RunConfig, bad, check_choice
from .data import Batches, LTData
from .methods import build_objective
from .models import create_model

STAGES = ("all", "stabilization", "adversarial")
RESUME_IGNORES = ("device", "compile")   # may differ between a run and its resume


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model or the run; the message says why and what to do."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict]
    run_dir: Path


# ---------------------------------------------------------------- small pure helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(cfg: RunConfig, epoch: int) -> float:
    """MultiStepLR in closed form: x lr_gamma once each milestone round(f * epochs) has passed.
    A pure function of the absolute epoch, so stage-2-only runs and resumes need no scheduler state."""
    milestones = [round(f * cfg.epochs) for f in cfg.lr_milestones]
    return cfg.lr * cfg.lr_gamma ** sum(epoch > m for m in milestones)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def stage_epochs(cfg: RunConfig, stage: str) -> range:
    """The absolute epochs a stage covers (TAET: stabilisation 1..S, adversarial S+1..T)."""
    check_choice("stage", stage, STAGES)
    if stage == "all":
        return range(1, cfg.epochs + 1)
    if cfg.method != "taet":
        raise bad("stage", stage, f"only TAET has stages; method={cfg.method!r} trains with stage='all'.")
    S = cfg.stabilization_epochs
    if stage == "stabilization":
        if S == 0:
            raise bad("stage", stage, "stabilization_epochs=0: there is no stage 1; use stage='adversarial' or 'all'.")
        return range(1, S + 1)
    return range(S + 1, cfg.epochs + 1)


def per_class_acc(tally: Tensor) -> list[float | None] | None:
    """[2, C] (hits, seen) -> recall per class; None where a class was not seen, None if nothing was."""
    hits, seen = tally.tolist()
    if not any(seen):
        return None
    return [h / n if n else None for h, n in zip(hits, seen)]


def balanced(acc: list | None) -> float | None:
    vals = [a for a in (acc or []) if a is not None]
    return sum(vals) / len(vals) if vals else None


def count_hits(tally: Tensor, logits: Tensor | None, y: Tensor) -> None:
    """Adds per-class (hits, seen) in place; index_add, not bincount (CUDA bincount syncs)."""
    if logits is not None:
        tally[0].index_add_(0, y, (logits.argmax(1) == y).long())
        tally[1].index_add_(0, y, torch.ones_like(y))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS (Linux: KiB)


# ---------------------------------------------------------------- checkpoints
def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)   # a crash mid-write never leaves a half checkpoint


def _num_classes(state: dict) -> int | None:
    """Output size of the last 2-D weight in the state dict: the classifier's rows."""
    mats = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(mats[-1].shape[0]) if mats else None


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict:
    """Read last.pt (a dict with 'model', ...) or model.pt (bare weights) as {'model': weights, ...};
    with `model`, load the weights into it, or say clearly why they do not fit."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in ck:
        ck = {"model": ck}
    if model is not None:
        want, got = model.state_dict(), ck["model"]
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        shapes = [f"{k}: {tuple(got[k].shape)} vs {tuple(want[k].shape)}"
                  for k in want if k in got and got[k].shape != want[k].shape]
        if missing or extra or shapes:
            arch = ck.get("cfg", {}).get("model", "an unrecorded architecture")
            detail = "; ".join(f"{name} {items[:3]}{' ...' if len(items) > 3 else ''}"
                               for name, items in (("missing", missing), ("unexpected", extra),
                                                   ("shape checkpoint vs model", shapes)) if items)
            raise CheckpointError(
                f"checkpoint {path} does not fit the model: it holds {arch!r} with {_num_classes(got)} classes, "
                f"the model expects {_num_classes(want)} classes ({detail}). Fix: build the model the checkpoint "
                "was trained with (taetlib.train.load_model(run_dir) rebuilds it from config.json), or pass a "
                "checkpoint of this architecture and class count.")
        model.load_state_dict(got)
    return ck


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from run_dir/config.json and its weights (model.pt, else last.pt)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    path = run_dir / "model.pt" if (run_dir / "model.pt").exists() else run_dir / "last.pt"
    state = load_checkpoint(path)["model"]
    # channel count and class count are read off the weights; mean/std are buffers inside them
    model = create_model(cfg.model, _num_classes(state), in_channels=state["mean"].shape[1])
    load_checkpoint(path, model)
    return model.to(device).eval()


def _check_resume(ck: dict, cfg: RunConfig, path: Path) -> None:
    old, new = ck.get("cfg", {}), cfg.to_dict()
    diff = {k: (old.get(k), v) for k, v in new.items() if k not in RESUME_IGNORES and old.get(k) != v}
    if diff:
        raise CheckpointError(f"{path} belongs to a run with other settings {diff} (checkpoint, now). "
                              "Fix: use a new run_dir, or resume=False to start this run over.")


# ---------------------------------------------------------------- in-training evaluation
def evaluate_per_class(model: nn.Module, batches: Batches, num_classes: int, *, eps: float, steps: int,
                       random_start: str, device: torch.device, bf16: bool = False) -> tuple[list, list]:
    """Clean and PGD (step eps/4) recall per class on `batches`, BatchNorm in eval mode."""
    tally = torch.zeros(2, 2, num_classes, dtype=torch.long, device=device)
    with bn_eval(model), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for x, y in batches.epoch(0):
            with torch.no_grad():
                count_hits(tally[0], model(x), y)
            x_adv = pgd(model, x, y, eps=eps, step=eps / 4, steps=steps, random_start=random_start)
            with torch.no_grad():
                count_hits(tally[1], model(x_adv), y)
    return per_class_acc(tally[0]), per_class_acc(tally[1])


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
    """
    cfg.validate()
    if data.spec.name != cfg.dataset:
        raise bad("dataset", cfg.dataset, f"but the data passed in is {data.spec.name!r}; load it with load_lt(cfg).")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "last.pt"
    device = resolve_device(cfg.device)
    epochs = stage_epochs(cfg, stage)
    C = data.num_classes

    # ---- model and optimiser
    given_model = model is not None
    if model is None:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, C, data.spec.in_channels, data.spec.mean, data.spec.std)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    # ---- where to start: resume > init_checkpoint > the given or a new model
    history, start = [], epochs.start
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, model)
        _check_resume(ck, cfg, ckpt_path)
        optimizer.load_state_dict(ck["optimizer"])
        history, start = ck["history"], ck["epoch"] + 1
        if start < epochs.start:
            raise CheckpointError(f"{ckpt_path} ends at epoch {ck['epoch']} but stage {stage!r} starts at epoch "
                                  f"{epochs.start}. Fix: finish the earlier stage first (stage='stabilization').")
    elif init_checkpoint is not None:
        ck = load_checkpoint(init_checkpoint, model)
        if ck.get("epoch") == epochs.start - 1 and "optimizer" in ck:   # a true continuation
            optimizer.load_state_dict(ck["optimizer"])
            history = ck.get("history", [])
    elif stage == "adversarial" and cfg.stabilization_epochs > 0 and not given_model:
        raise bad("stage", stage, "stage 2 continues from stage 1: pass init_checkpoint=<stage-1 run>/last.pt "
                                  "(or model=), or train with stage='all'.")
    cfg.save(run_dir / "config.json")
    with open(run_dir / "history.jsonl", "w") as f:   # rewritten from the checkpoint: no half-epoch lines
        f.writelines(json.dumps(r) + "\n" for r in history)

    # ---- what the loop uses
    objective = build_objective(cfg, data.train_counts, data.spec.default_eps)
    train_batches = Batches(data.train, cfg.batch_size, device, shuffle=True, augment=cfg.augment, seed=cfg.seed)
    eval_batches = Batches(data.test["balanced"].subset_per_class(cfg.eval_per_class, seed=cfg.seed),
                           cfg.batch_size, device, shuffle=False)
    eval_eps = cfg.train_eps(data.spec.default_eps)
    net = torch.compile(model) if cfg.compile else model
    n_images, session_seconds = len(data.train), []

    for epoch in range(start, epochs.stop):
        torch.manual_seed(epoch_seed(cfg.seed, epoch))   # attack starts etc.: resume replays them
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()

        # ---- one epoch: no host sync in here
        model.train()
        loss_sum = torch.zeros((), device=device)
        parts_sum: dict[str, Tensor] = {}
        tally = torch.zeros(2, 2, C, dtype=torch.long, device=device)   # [clean|adv, hits|seen, class]
        for x, y in train_batches.epoch(epoch):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16):
                out = objective.step(net, x, y, epoch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            loss_sum += out.loss.detach()
            for k, v in out.parts.items():
                parts_sum[k] = parts_sum.get(k, 0) + v.float()
            count_hits(tally[0], out.clean_logits, y)
            count_hits(tally[1], out.adv_logits, y)

        # ---- once per epoch: read back, check, evaluate, record, save
        n_batches = len(train_batches)
        loss = loss_sum.item() / n_batches
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss):
            kept = (f"{ckpt_path} still holds the last good epoch ({history[-1]['epoch']})"
                    if ckpt_path.exists() and history else "no checkpoint was written")
            raise TrainingDiverged(f"epoch {epoch}: mean training loss is {loss} (method {objective.name}, lr {lr:g}). "
                                   f"Training stopped; {kept}. Fix: lower lr, check eps/step_size, or bf16=False.")
        record = {"epoch": epoch, "stage": objective.stage(epoch), "lr": lr, "loss": loss,
                  **{f"loss_{k}": v.item() / n_batches for k, v in parts_sum.items()},
                  "train_clean_acc": per_class_acc(tally[0]), "train_adv_acc": per_class_acc(tally[1]),
                  "test_clean_acc": None, "test_pgd_acc": None}
        t1 = time.perf_counter()
        if cfg.eval_every and (epoch % cfg.eval_every == 0 or epoch == epochs.stop - 1):
            record["test_clean_acc"], record["test_pgd_acc"] = evaluate_per_class(
                net, eval_batches, C, eps=eval_eps, steps=cfg.eval_pgd_steps, random_start=cfg.random_start,
                device=device, bf16=cfg.bf16)
        record.update(seconds=seconds, eval_seconds=time.perf_counter() - t1, images_per_s=n_images / seconds,
                      peak_mem_mb=peak_memory_mb(device))
        history.append(record)
        with open(run_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": {"milestones": cfg.lr_milestones, "gamma": cfg.lr_gamma, "last_epoch": epoch},
                      "epoch": epoch, "cfg": cfg.to_dict(), "history": history}, ckpt_path)
        session_seconds.append(time.perf_counter() - t0)
        eta = (epochs.stop - 1 - epoch) * sum(session_seconds) / len(session_seconds)
        print(progress_line(record, cfg.epochs, eta), flush=True)
        if callback is not None:
            callback(record)

    _save_atomic(model.state_dict(), run_dir / "model.pt")
    return FitResult(model=model, history=history, run_dir=run_dir)


def progress_line(r: dict, epochs: int, eta: float) -> str:
    def acc(name):
        v = balanced(r[name])
        return "-" if v is None else f"{v:.3f}"
    line = (f"epoch {r['epoch']}/{epochs} [{r['stage']}] loss {r['loss']:.4f} | "
            f"train clean {acc('train_clean_acc')} adv {acc('train_adv_acc')}")
    if r["test_clean_acc"] is not None:
        line += f" | test clean {acc('test_clean_acc')} pgd {acc('test_pgd_acc')}"
    return line + f" | {r['seconds']:.1f} s/epoch, {r['images_per_s']:.0f} img/s | ETA {eta:.0f} s"
