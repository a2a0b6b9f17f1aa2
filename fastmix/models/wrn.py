"""WideResNet-depth-widen (Zagoruyko & Komodakis 2016), the pre-activation variant used by
TRADES, GAIRAT, AIT and AVmixup (WRN-28-10, WRN-34-10) and by Madry et al. (WRN-32-10).

Depth counting: Zagoruyko's ``depth = 6n + 4`` gives n = 4 blocks per group for 28 and
n = 5 for 34. Madry et al.'s "WRN-32-10" counts ``6n + 2`` (its 1x1 shortcuts are not
counted), so it also has n = 5; a depth that fits ``6n + 4`` uses that rule, otherwise
``6n + 2`` is tried, and anything else is refused. WRN-32-10 and WRN-34-10 therefore
build the same network here (the layer layout of the two papers' code differs only in
where the first block's activation sits).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import GlobalPool, MixableNet, conv3x3


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (a 1x1 conv of the activated input when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(a)
        out = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(a)))))
        return out + sc


def blocks_per_group(depth: int) -> int:
    """n for a WRN of the given depth (6n+4, else Madry's 6n+2); ValueError otherwise."""
    if depth >= 10 and (depth - 4) % 6 == 0:
        return (depth - 4) // 6
    if depth >= 8 and (depth - 2) % 6 == 0:
        return (depth - 2) // 6
    raise ValueError(f"depth must be 6n+4 (e.g. 28, 34) or 6n+2 (e.g. 32), got {depth}")


class WideResNet(MixableNet):
    """WRN-depth-widen: stem conv3x3(C -> 16), three groups of n blocks at 16k, 32k, 64k
    channels (strides 1, 2, 2), BN-ReLU, global average pooling -> ``(B, 64k)`` features.
    Mixing points: after group 1 and group 2.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, *, depth: int = 28, widen: int = 10,
                 dropout: float = 0.0, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        if widen < 1:
            raise ValueError(f"widen must be >= 1, got {widen}")
        n = blocks_per_group(depth)
        self.depth, self.widen = depth, widen
        chans = [16 * widen, 32 * widen, 64 * widen]
        self.stem = conv3x3(in_channels, 16)
        cin, stages = 16, []
        for i, c in enumerate(chans):
            blocks = [WideBlock(cin if j == 0 else c, c, (1 if i == 0 else 2) if j == 0 else 1, dropout)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.pool = GlobalPool(cin)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():  # the WRN papers' init: He-normal convs, zero linear bias
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
