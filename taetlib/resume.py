"""Whether a checkpoint may continue under a config: the same run resumed, or the run extended.

A run resumes from last.pt when nothing but the device differs. It is *extended* (more epochs, or
fewer than planned but not fewer than trained) when only the schedule's fields differ and the plan
of the epochs already trained stays as it was: their lr, RobustLT's radius ramp and GAIR-AT's
weighting. Then the extended run is the run of the new length, bit for bit. When that plan moves,
the extension needs the caller's word (new_plan=True): the trained epochs keep what they had, the
rest follow the new plan, and the first new history record says so.
The numeric settings are compared on what they resolve to on this machine (check_numerics), not as written.
"""
from __future__ import annotations

from pathlib import Path

from . import numerics
from .attacks import aiw_ramp
from .config import RunConfig
from .errors import ConfigError
from .methods.gairat import begin_epoch, lambda_at
from .schedule import lr_at

__all__ = ["RESUME_IGNORES", "Refused", "SCHEDULE_FIELDS", "check_numerics", "check_resume", "epoch_plan",
           "keep_milestones"]


class Refused(RuntimeError):
    """The checkpoint cannot continue under this config (fit raises it as a CheckpointError)."""


# may differ between a run and its resume (the numerics are checked on what they resolve to: check_numerics)
RESUME_IGNORES = ("device", "compile", "precision", "memory_format", "eval_precision", "resume_other_numerics")
SCHEDULE_FIELDS = ("epochs", "lr_milestones", "lr_gamma")  # may differ when a run is extended


def epoch_plan(cfg: RunConfig, epoch: int) -> dict:
    """What the config schedules for one epoch and that depends on the run's length."""
    plan: dict[str, float | bool | None] = {"lr": lr_at(cfg, epoch)}
    if cfg.robustlt:   # as build_objective sets the ramp up
        plan["aiw"] = aiw_ramp(epoch - cfg.clean_epochs_before(), cfg.robustlt_b * cfg.epochs)
    if cfg.method == "gairat":
        args = cfg.hparams
        plan["gair_weights"] = weighted = epoch >= begin_epoch(args, cfg.epochs)
        plan["gair_lambda"] = lambda_at(args.lambda_schedule, epoch, cfg.epochs, args.lam, args.lambda_max) \
            if weighted else None
    return plan


def _checkpoint_config(ck: dict) -> RunConfig | None:
    """The config the checkpoint was written under (a field newer than it counts as its default)."""
    try:
        return RunConfig.from_dict({**RunConfig().to_dict(), **ck.get("cfg", {})})
    except ConfigError:
        return None


def _as_saved(old: dict) -> dict:
    """A checkpoint's settings as this version writes them (method_args), or as they are if they no longer load."""
    try:
        return RunConfig.from_dict(old).to_dict()
    except ConfigError:
        return old


def check_resume(ck: dict, cfg: RunConfig, path: Path, new_plan: bool = False) -> dict | None:
    """Refuse a checkpoint written under other settings; None for a plain resume, or the extension's
    record ({'epochs': [old, new], 'plan': 'unchanged' | 'new', ...}) when only the schedule changed."""
    # taetlib 0.1's flat method keys map onto method_args as on load
    old, new, default = _as_saved(ck.get("cfg", {})), cfg.to_dict(), RunConfig().to_dict()
    diff = {k: (old.get(k, default[k]), v) for k, v in new.items()
            if k not in RESUME_IGNORES and old.get(k, default[k]) != v}
    if not diff:
        return None
    other = {k: v for k, v in diff.items() if k not in SCHEDULE_FIELDS}
    if other:
        raise Refused(f"{path} belongs to a run with other settings {other} (checkpoint, now). Only "
                              f"{', '.join(SCHEDULE_FIELDS)} may change when a run is extended. "
                              "Fix: use a new run_dir, or resume=False to start this run over.")
    return _extension(ck, cfg, _checkpoint_config(ck), diff, path, new_plan)


def check_numerics(ck: dict, now: numerics.Numerics, cfg: RunConfig, path: Path) -> None:
    """A resume computes in what the run began in, unless cfg.resume_other_numerics says otherwise."""
    diff = now.differs_from(numerics.recorded(ck.get("cfg", {}), ck.get(numerics.RESOLVED_KEY)))
    if diff and not cfg.resume_other_numerics:
        raise Refused(f"{path} was trained with other numerics {diff} (checkpoint, now; {now.hardware}). "
                      "Fix: set precision / memory_format to what the run used, or resume_other_numerics=True "
                      "to continue in the new ones (the run then mixes both).")


def _extension(ck: dict, cfg: RunConfig, old: RunConfig | None, diff: dict, path: Path, new_plan: bool) -> dict:
    trained = ck["epoch"]
    if cfg.total_epochs() < trained:
        raise Refused(f"{path} has trained {trained} epochs; epochs={cfg.epochs} plans "
                              f"{cfg.total_epochs()} in all, and a run cannot be shortened below what it trained. "
                              f"Fix: epochs >= {trained - cfg.clean_epochs_before()}, or a new run_dir.")
    moved = {e: (epoch_plan(old, e), epoch_plan(cfg, e)) for e in range(1, trained + 1)} if old else {}
    moved = {e: pair for e, pair in moved.items() if pair[0] != pair[1]}
    if old is None and not new_plan:
        raise Refused(f"{path}: its settings cannot be read back, so whether the epochs it trained keep "
                              "their plan is unknown. Fix: new_plan=True (train --new-plan) to continue anyway.")
    if moved and not new_plan and old is not None:
        first = min(moved)
        raise Refused(
            f"{path}: the new schedule {diff} changes the plan of epochs it already trained (epoch {first}: "
            f"{moved[first][0]} then, {moved[first][1]} now; {len(moved)} epoch(s) in all), so the result would "
            f"be no run of that length. Fix: keep the plan so far (e.g. lr_milestones={keep_milestones(old, cfg)} "
            "keeps the lr milestones already passed), or name the new plan explicitly with new_plan=True "
            "(train --new-plan): the trained epochs keep theirs, the rest follow the new one.")
    record = {"epochs": [old.epochs if old else None, cfg.epochs], "after_epoch": trained,
              "changed": {k: list(v) for k, v in diff.items()}, "plan": "new" if moved or old is None else "unchanged"}
    if moved:
        record["plan_was"] = {str(e): pair[0] for e, pair in moved.items()}
    return record


def keep_milestones(old: RunConfig, new: RunConfig) -> list[float]:
    """lr_milestones for `new` that put the old run's milestones at the same epochs."""
    epochs = [round(f * old.epochs) for f in old.lr_milestones]
    return [m / new.epochs for m in epochs if 0 < m / new.epochs <= 1]
