"""ResNet-18 and PreActResNet-18 with the CIFAR stem (one 3x3 conv, no max-pool).

ResNet-18: He et al. 2016 ("Deep residual learning"), basic blocks [2, 2, 2, 2] at widths
64/128/256/512. PreActResNet-18: the same shape with pre-activation blocks (He et al.,
"Identity mappings in deep residual networks"), the model of Wong et al.'s FastAT and of IAT.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import GlobalPool, MixableNet, conv3x3


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus shortcut; a projecting shortcut reads the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3x3(cout, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + sc


def _stage(block, cin, cout, n, stride):
    layers = [block(cin, cout, stride)] + [block(cout, cout, 1) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class ResNet(MixableNet):
    """ResNet with the CIFAR stem. ``preact=True`` gives PreActResNet (the stem has no BN,
    a BN-ReLU precedes the pooling). Features are 512-wide; mixing points are after
    stage 1 (64 ch, full resolution) and stage 2 (128 ch, half resolution).

    Args:
        num_classes: K.  in_channels: C.  blocks: blocks per stage (default [2, 2, 2, 2]).
        width: channels of stage 1 (default 64; stages double it).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, *, blocks=(2, 2, 2, 2), width: int = 64,
                 preact: bool = False, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        block = PreActBlock if preact else BasicBlock
        w = width
        if preact:
            self.stem = conv3x3(in_channels, w)
        else:
            self.stem = nn.Sequential(conv3x3(in_channels, w), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        chans = [w * 2 ** i for i in range(len(blocks))]
        cin = w
        stages = []
        for i, (c, n) in enumerate(zip(chans, blocks)):
            stages.append(_stage(block, cin, c, n, 1 if i == 0 else 2))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.pool = GlobalPool(cin if preact else None)
        self.head = nn.Linear(cin, num_classes)


def resnet18(num_classes: int, in_channels: int = 3, **kw) -> ResNet:
    return ResNet(num_classes, in_channels, blocks=(2, 2, 2, 2), **kw)


def preact_resnet18(num_classes: int, in_channels: int = 3, **kw) -> ResNet:
    return ResNet(num_classes, in_channels, blocks=(2, 2, 2, 2), preact=True, **kw)
