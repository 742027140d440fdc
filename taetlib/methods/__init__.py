"""Training objectives (the outer minimisation), one module per method family, and the RobustLT wrapper.

base.py holds the interface (Objective, StepOut, Attack) and build_objective; each method module files its
MethodSpec with method_spec.register on import, so importing this package fills method_spec.METHODS.
A new method is one file here plus its name in the import line below (docs/adding-a-method.md).
"""
# registration order is the order listings show the methods in: the paper's five, then the rest of
# TAET's comparison
from . import adt, awp, cfa, classic, dafa, gairat, he, lasat, longtail, reat, robal, taet  # noqa: F401  (specs)
from .adt import ADT
from .awp import AWP
from .base import (
                   Attack,
                   Objective,
                   StepOut,
                   attack_start,
                   build_objective,
                   class_means,
                   cpb_scale,
                   kl,
                   model_head,
                   prepare_for_eval,
                   robustlt,
)
from .cfa import CFA
from .classic import MART, PGDAT, TRADES
from .dafa import DAFA
from .gairat import GAIRAT
from .he import HE
from .lasat import LASAT
from .longtail import ATBSL
from .reat import REAT
from .robal import RoBal
from .taet import TAET, harl

__all__ = ["Attack", "Objective", "StepOut", "attack_start", "build_objective", "class_means", "cpb_scale",
           "kl", "model_head", "prepare_for_eval", "robustlt", "MART", "PGDAT", "TRADES", "ATBSL", "TAET", "harl",
           "GAIRAT", "HE", "REAT", "RoBal", "ADT", "AWP", "LASAT", "CFA", "DAFA"]
