"""Training objectives (the outer minimisation), one module per family, and the RobustLT wrapper.

base.py holds the interface (Objective, StepOut, Attack), the registry and build_objective; each
family module registers its objectives on import, so importing this package fills OBJECTIVES.
"""
from . import adt, awp, classic, lasat, longtail  # noqa: F401  (register their objectives)
from .adt import ADT
from .awp import AWP
from .base import (ATTACK_LOSS, OBJECTIVES, Attack, Objective, StepOut, aiw_ramp, build_objective, class_means,
                   cpb_scale, kl, register, robustlt)
from .classic import MART, PGDAT, TRADES
from .lasat import LASAT
from .longtail import ATBSL, TAET, harl

__all__ = ["ATTACK_LOSS", "OBJECTIVES", "Attack", "Objective", "StepOut", "aiw_ramp", "build_objective",
           "class_means", "cpb_scale", "kl", "register", "robustlt", "MART", "PGDAT", "TRADES", "ATBSL", "TAET",
           "harl", "ADT", "AWP", "LASAT"]
