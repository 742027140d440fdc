"""The epochs a run trains and the lr of each: pure functions of the RunConfig.

budget_rule='equal_adversarial' puts a method's clean stage (TAET's stage 1) before the adversarial epochs, at the
initial lr,
so every method's adversarial epochs run on the same lr sequence; 'released' counts stage 1 inside
`epochs` under one schedule, as TAET's released code does (40 + 60 of 100).
"""
from __future__ import annotations

from .attacks import aiw_ramp
from .config import RunConfig
from .errors import bad, check_choice
from .method_spec import METHODS

__all__ = ["STAGES", "budget", "epoch_seed", "has_clean_stage", "lr_at", "stage_epochs", "unequal_budgets"]

STAGES = ("all", "stabilization", "adversarial")


def lr_at(cfg: RunConfig, epoch: int) -> float:
    """MultiStepLR in closed form: x lr_gamma once each milestone round(f * epochs) has passed.
    A pure function of the absolute epoch, so stage-2-only runs and resumes need no scheduler state.
    Under budget_rule='equal_adversarial' TAET's stage 1 runs at lr before the schedule, so its
    adversarial epochs get exactly the lr sequence every other method's epochs get."""
    epoch -= cfg.clean_epochs_before()
    milestones = [round(f * cfg.epochs) for f in cfg.lr_milestones]
    return cfg.lr * cfg.lr_gamma ** sum(epoch > m for m in milestones)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def has_clean_stage(cfg: RunConfig) -> bool:
    """Whether the method trains in two stages, clean then adversarial (TAET; MethodSpec.clean_stage)."""
    return METHODS[cfg.method].clean_stage is not None


def stage_epochs(cfg: RunConfig, stage: str) -> range:
    """The absolute epochs a stage covers (TAET: stabilisation 1..S, adversarial S+1..T)."""
    check_choice("stage", stage, STAGES)
    if stage == "all":
        return range(1, cfg.total_epochs() + 1)
    if not has_clean_stage(cfg):
        raise bad("stage", stage, f"method={cfg.method!r} has no clean stage (TAET's stage 1); train with stage='all'.")
    S = cfg.clean_stage_epochs()
    if stage == "stabilization":
        if S == 0:
            raise bad("stage", stage, "the clean stage has 0 epochs (stabilization_epochs=0): use stage='adversarial' "
                                      "or 'all'.")
        return range(1, S + 1)
    return range(S + 1, cfg.total_epochs() + 1)


def budget(cfg: RunConfig) -> dict:
    """What a run's adversarial phase gets: its epochs, their lr sequence, the clean epochs before it,
    and the AIW intensity RobustLT reaches at the last epoch (1.0 = the full radius)."""
    adv = [] if cfg.method == "ce" else list(stage_epochs(cfg, "adversarial" if has_clean_stage(cfg) else "all"))
    out = {"adversarial_epochs": len(adv), "clean_epochs": cfg.clean_stage_epochs(),
           "lrs": [lr_at(cfg, e) for e in adv], "aiw_final": None}
    if cfg.robustlt and adv:   # the ramp as methods.robustlt sets it up
        out["aiw_final"] = aiw_ramp(adv[-1] - cfg.clean_epochs_before(), cfg.robustlt_b * cfg.epochs)
    return out


def unequal_budgets(configs: dict[str, RunConfig], relative_lr: bool = False) -> list[str]:
    """Problems with a comparison's budgets (label -> config): adversarial arms whose adversarial
    epochs or lr sequences differ (relative_lr: sequences divided by each arm's lr, when a tuning chose
    it), and RobustLT arms whose AIW ramp never reaches the full radius."""
    budgets = {label: budget(cfg) for label, cfg in configs.items() if cfg.method != "ce"}
    problems = []
    scale = {label: configs[label].lr if relative_lr else 1.0 for label in budgets}
    shapes = {(b["adversarial_epochs"], tuple(round(lr / scale[k], 12) for lr in b["lrs"]))
              for k, b in budgets.items()}
    if len(shapes) > 1:
        problems.append("adversarial budgets differ: " + "; ".join(
            f"{k}: {b['adversarial_epochs']} epochs at lr {[f'{lr:g}' for lr in b['lrs']]}"
            for k, b in budgets.items()))
    for label, b in budgets.items():
        if b["aiw_final"] is not None and b["aiw_final"] < 1:
            cfg = configs[label]
            problems.append(f"{label}: RobustLT's AIW ramp ends at {b['aiw_final']:.2f} of the radius; "
                            f"robustlt_b={cfg.robustlt_b} spans {cfg.robustlt_b * cfg.epochs:g} of its {cfg.epochs} "
                            f"epochs. Fix: robustlt_b <= {(cfg.epochs - 1) / cfg.epochs:.3f}.")
    return problems
