"""Models (beside the ops -> attacks -> methods stack): every model takes ``[0, 1]`` images,
normalises them itself, and exposes :meth:`~MixableNet.features` (penultimate, ``(B, F)``)
and the manifold-mixup points ``forward(x, mix_layer=0|1|2, mix_fn=...)``.

``build(name, num_classes, in_channels, image_size)`` makes one by name:

========== =============================================== =================
name       network                                         inputs
========== =============================================== =================
cnn        :class:`SmallCNN` (3 conv + 2 linear)            8x8, 28x28, 32x32
preact18   PreActResNet-18 (CIFAR stem)                    32x32 (any >= 8)
resnet18   ResNet-18 (CIFAR stem)                          32x32 (any >= 8)
wrn-D-W    WideResNet depth D, widen W (28-10, 32-10, 34-10) 32x32 (any >= 4)
========== =============================================== =================
"""
from __future__ import annotations

import re

from torch import nn

from ._base import MIX_LAYERS, MixableNet
from .cnn import SmallCNN
from .resnet import ResNet, preact_resnet18, resnet18
from .wrn import WideResNet, blocks_per_group

__all__ = ["build", "NAMES", "MixableNet", "SmallCNN", "ResNet", "WideResNet", "resnet18",
           "preact_resnet18", "MIX_LAYERS", "blocks_per_group"]

NAMES = ("cnn", "preact18", "resnet18", "wrn-28-10", "wrn-32-10", "wrn-34-10")
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")


def build(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32, *,
          mean=None, std=None, **kwargs) -> MixableNet:
    """Build a model by name.

    Args:
        name: ``cnn``, ``preact18``, ``resnet18`` or ``wrn-<depth>-<widen>`` (``wrn-28-10``,
            ``wrn-32-10``, ``wrn-34-10``, or any valid depth/widen such as ``wrn-16-2``).
        num_classes: K >= 2.
        in_channels: C of the input images (1 for MNIST/digits, 3 for CIFAR/SVHN).
        image_size: H = W of the inputs (the cnn's linear layer depends on it).
        mean, std: per-channel normalisation applied inside the model (``None``: none).
        kwargs: model options (``width``, ``hidden``, ``batch_norm`` for the cnn; ``width``
            for the ResNets; ``dropout`` for WRN).
    Returns:
        a :class:`MixableNet` in training mode, float32, on the CPU.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")
    _check_options(name, kwargs)
    common = dict(mean=mean, std=std)
    if name == "cnn":
        return SmallCNN(num_classes, in_channels, image_size, **common, **kwargs)
    if name == "resnet18":
        return resnet18(num_classes, in_channels, **common, **kwargs)
    if name == "preact18":
        return preact_resnet18(num_classes, in_channels, **common, **kwargs)
    m = _WRN.match(name)
    if m:
        return WideResNet(num_classes, in_channels, depth=int(m.group(1)), widen=int(m.group(2)),
                          **common, **kwargs)
    raise ValueError(f"model must be one of {', '.join(NAMES)} (or wrn-<depth>-<widen>), got {name!r}")


# each model's options and what a valid value is (checked before anything is built)
_POSITIVE_INT = "an int >= 1"
_OPTIONS = {
    "cnn": {"width": _POSITIVE_INT, "hidden": _POSITIVE_INT, "batch_norm": "a bool"},
    "resnet18": {"width": _POSITIVE_INT},
    "preact18": {"width": _POSITIVE_INT},
    "wrn": {"dropout": "a number in [0, 1)"},
}


def _check_options(name: str, kwargs: dict) -> None:
    """ValueError naming the option for an unknown option or a value out of range."""
    known = _OPTIONS.get("wrn" if isinstance(name, str) and _WRN.match(name) else name)
    if known is None:
        return  # unknown model name: build() says so
    for k, v in kwargs.items():
        if k not in known:
            raise ValueError(f"model {name} has no option {k!r} (its options: {', '.join(known) or 'none'})")
        want = known[k]
        ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1 if want == _POSITIVE_INT else
              isinstance(v, bool) if want == "a bool" else
              isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1)
        if not ok:
            raise ValueError(f"model option {k} must be {want}, got {v!r}")


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
