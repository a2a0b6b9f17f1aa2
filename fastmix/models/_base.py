"""What every fastmix model shares: input normalisation inside the model, penultimate
features, and the three manifold-mixup mixing points.

A model is a stem, a list of stages and a head::

    x (B, C, H, W) float in [0, 1]
      -> [mix point 0: the input]   -> normalise -> stem -> stage[0]
      -> [mix point 1: after block 1] -> stage[1]
      -> [mix point 2: after block 2] -> stage[2:] -> pool -> features (B, F) -> head -> logits (B, K)

Normalisation lives inside the model (``mean``/``std`` buffers), so attacks, mixing and
datasets all work on ``[0, 1]`` images and an eps is always in pixel units.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

MIX_LAYERS = (0, 1, 2)


class MixableNet(nn.Module):
    """Base class: subclasses set ``self.stem``, ``self.stages`` (at least two),
    ``self.pool`` (hidden map -> ``(B, F)``) and ``self.head`` (``Linear(F, K)``).

    Args:
        in_channels: channels of the input images (1 or 3).
        mean, std: per-channel normalisation (length ``in_channels``); the model computes
            ``(x - mean) / std`` itself. ``None`` means 0 and 1 (no normalisation).
    """

    stem: nn.Module
    stages: nn.ModuleList
    pool: nn.Module
    head: nn.Linear

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        mean = [0.0] * in_channels if mean is None else list(mean)
        std = [1.0] * in_channels if std is None else list(std)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need {in_channels} values (one per channel), "
                             f"got mean={mean}, std={std}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_features(self) -> int:
        """F, the width of :meth:`features`."""
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: Tensor, mix_layer: int | None = None,
                 mix_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Penultimate features.

        Args:
            x: ``(B, C, H, W)`` float images in ``[0, 1]`` (any layout; channels-last kept).
            mix_layer: ``None`` (no mixing), 0 (the input), 1 (after block 1) or 2 (after
                block 2): where ``mix_fn`` is applied (manifold mixup).
            mix_fn: maps the hidden tensor ``(B, ...)`` at that point to a tensor of the
                same per-sample shape (e.g. ``lambda h: fastmix.ops.mix(h, h, lam, perm)``).
        Returns:
            ``(B, F)`` features in ``x``'s float dtype (or the autocast dtype).
        """
        if mix_layer is not None:
            if mix_layer not in MIX_LAYERS:
                raise ValueError(f"mix_layer must be None or one of {MIX_LAYERS}, got {mix_layer!r}")
            if mix_fn is None:
                raise ValueError(f"mix_fn is required when mix_layer={mix_layer}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if mix_layer == 0:
            x = mix_fn(x)
        h = self.stem((x - self.mean) / self.std)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if mix_layer is not None and mix_layer == i + 1:
                h = mix_fn(h)
        return self.pool(h)

    def forward(self, x: Tensor, mix_layer: int | None = None,
                mix_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Logits ``(B, K)`` for images ``x`` ``(B, C, H, W)`` in ``[0, 1]``; see :meth:`features`."""
        return self.head(self.features(x, mix_layer, mix_fn))


class GlobalPool(nn.Module):
    """Optional BN-ReLU (pre-activation nets), global average pooling, flatten: ``(B, C, H, W) -> (B, C)``."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels) if channels else None

    def forward(self, h: Tensor) -> Tensor:
        if self.bn is not None:
            h = torch.relu(self.bn(h))
        return h.mean(dim=(2, 3))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
