"""Named set-ups: the CPU demo, the CPU studies and the papers' GPU configurations, one file per family.

Each preset is RunConfig overrides plus the sweep it implies (IRs x arms x seeds; an arm is a method, with
or without RobustLT, with its own overrides and label: arms.Arm), the source of every setting, the budget
rule it uses and why, and the numbers the papers report for it (docs/methods.md), so a reproduction can be
held against them. Each file registers its presets on import; the import line below fixes the order in
which they are listed. A new family is one file here plus its name in that line.
"""
# registration order is listing order: the CPU set-ups, the papers' GPU set-ups, then the studies
from . import cpu, papers, studies  # noqa: F401  (each registers its presets)
from .base import EVALUATION, PRESETS, STAGE1_SHARE, Preset, arms, describe, get, register, taet_claims, taet_stage1

__all__ = ["EVALUATION", "PRESETS", "STAGE1_SHARE", "Preset", "arms", "describe", "get", "register", "taet_claims",
           "taet_stage1"]
