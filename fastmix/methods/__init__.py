"""Training methods (layer 3 of DESIGN.md): each paper's recipe as a small :class:`Method`.

Baselines: ``standard``, ``at`` (Madry PGD-AT), ``trades``, ``gairat``, ``fastat``.
``build(name, **options)`` instantiates one; :data:`METHODS` maps names to classes. A new
method registers itself with :func:`register` and is imported here.
"""
from .base import BN_MODES, METHODS, Method, MethodContext, StepOutput, build, register
from . import standard, at, trades, gairat, fastat  # noqa: E402,F401  (registration)
from .at import MadryAT
from .fastat import FastAT
from .gairat import GAIRAT, gairat_weights
from .standard import Standard
from .trades import TRADES, kl_rows
# The mixup family (issue 5): AT-mixup, IAT, AVmixup, AIT, GIF.
from . import gif, at_mixup, iat, avmixup, ait  # noqa: E402,F401  (registration)
from .ait import AIT
from .at_mixup import ATMixup
from .avmixup import AVmixup
from .gif import GIF
from .iat import IAT, IATManifold

__all__ = ["Method", "MethodContext", "StepOutput", "METHODS", "BN_MODES", "build", "register", "Standard",
           "MadryAT", "TRADES", "GAIRAT", "FastAT", "gairat_weights", "kl_rows",
           "ATMixup", "IAT", "IATManifold", "AVmixup", "AIT", "GIF"]
