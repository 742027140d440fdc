"""Training objectives (the outer minimisation), one module per family, and the RobustLT wrapper.

base.py holds the interface (Objective, StepOut, Attack), the registry and build_objective; each
family module registers its objectives on import, so importing this package fills OBJECTIVES.
"""
# registration order is the order the notebooks list the methods in: the paper's five, then the rest of
# TAET's comparison (docs/methods.md)
# isort: off
from . import classic, longtail, reat, robal, he, gairat, awp, adt, lasat  # noqa: F401  (register their objectives)
# isort: on
from .adt import ADT
from .awp import AWP
from .base import (
                   ATTACK_LOSS,
                   METHOD_HEAD,
                   OBJECTIVES,
                   Attack,
                   Objective,
                   StepOut,
                   build_objective,
                   class_means,
                   cpb_scale,
                   kl,
                   model_head,
                   prepare_for_eval,
                   register,
                   robustlt,
)
from .classic import MART, PGDAT, TRADES
from .gairat import GAIRAT
from .he import HE
from .lasat import LASAT
from .longtail import ATBSL, TAET, harl
from .reat import REAT
from .robal import RoBal

__all__ = ["ATTACK_LOSS", "METHOD_HEAD", "OBJECTIVES", "Attack", "Objective", "StepOut",
           "build_objective", "class_means", "cpb_scale", "kl", "model_head", "prepare_for_eval",
           "register", "robustlt", "MART", "PGDAT", "TRADES", "ATBSL", "TAET", "harl", "GAIRAT", "HE", "REAT", "RoBal",
           "ADT", "AWP", "LASAT"]
