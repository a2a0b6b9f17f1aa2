"""Training methods (layer 3 of DESIGN.md): each paper's recipe as a small :class:`Method`.

Baselines: ``standard``, ``at`` (Madry PGD-AT), ``trades``, ``gairat``, ``fastat``.
``build(name, **options)`` instantiates one; :data:`METHODS` maps names to classes. A new
method registers itself with :func:`register` and is imported here.

From a training loop of your own (any ``nn.Module`` images -> logits):
``loss = fastmix.methods.AVmixup(eps=8/255).step(model, x, y)``; see :mod:`fastmix.methods.loop`
for the pattern and the optional cross-epoch hooks, and :mod:`fastmix.models.hooks` for
naming a user model's layers (``features=``, ``mix_layers=``).
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
# Any model, any loop (issue 16): the loop-level API and Mixup Inference at prediction time.
from . import loop  # noqa: E402
from .loop import attach, step
from .mixup_inference import MixupInference

__all__ = ["Method", "MethodContext", "StepOutput", "METHODS", "BN_MODES", "build", "register", "Standard",
           "MadryAT", "TRADES", "GAIRAT", "FastAT", "gairat_weights", "kl_rows",
           "ATMixup", "IAT", "IATManifold", "AVmixup", "AIT", "GIF", "MixupInference", "attach", "step", "loop"]
