"""Training objectives (the outer minimisation), one module per family, and the RobustLT wrapper.

base.py holds the interface (Objective, StepOut, Attack), the registry and build_objective; each
family module registers its objectives on import, so importing this package fills OBJECTIVES.
"""
from . import classic, he, longtail, reat, robal  # noqa: F401  (register their objectives)
from .base import (ATTACK_LOSS, METHOD_HEAD, OBJECTIVES, Attack, Objective, StepOut, aiw_ramp, build_objective,
                   check_fields, class_means, cpb_scale, kl, model_head, prepare_for_eval, register, robustlt)
from .classic import MART, PGDAT, TRADES
from .he import HE
from .longtail import ATBSL, TAET, harl
from .reat import REAT
from .robal import RoBal

__all__ = ["ATTACK_LOSS", "METHOD_HEAD", "OBJECTIVES", "Attack", "Objective", "StepOut", "aiw_ramp",
           "build_objective", "check_fields", "class_means", "cpb_scale", "kl", "model_head", "prepare_for_eval", "register",
           "robustlt", "MART", "PGDAT", "TRADES", "ATBSL", "TAET", "harl", "HE", "REAT", "RoBal"]
