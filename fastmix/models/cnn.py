"""A small CNN for 28x28 (MNIST) and 8x8 (scikit-learn digits) images; any size divisible by 4 works."""
from __future__ import annotations

from torch import nn

from ._base import MixableNet, conv3x3


def _conv_bn_relu(cin, cout, batch_norm):
    layers = [conv3x3(cin, cout)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    else:  # without BN the conv needs its bias back
        layers[0] = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
    layers.append(nn.ReLU(inplace=True))
    return layers


class SmallCNN(MixableNet):
    """stem: conv(C->w); block 1: conv(w->2w), 2x2 max-pool; block 2: conv(2w->4w), 2x2
    max-pool; then flatten, ``Linear(4w*(H/4)*(W/4) -> hidden)``, ReLU = the features; head
    ``Linear(hidden -> K)``. Every conv is 3x3 with BatchNorm and ReLU (``batch_norm=False``
    drops the BN, which makes a multi-process run match a single-process one exactly).

    Args:
        num_classes: K >= 2.  in_channels: C.  image_size: H = W, divisible by 4.
        width: w (default 32).  hidden: feature width (default 128).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28, *,
                 width: int = 32, hidden: int = 128, batch_norm: bool = True, mean=None, std=None):
        super().__init__(in_channels, mean, std)
        if image_size % 4 or image_size < 4:
            raise ValueError(f"image_size must be a positive multiple of 4 for the cnn, got {image_size}")
        w = width
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, w, batch_norm))
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv_bn_relu(w, 2 * w, batch_norm), nn.MaxPool2d(2)),
            nn.Sequential(*_conv_bn_relu(2 * w, 4 * w, batch_norm), nn.MaxPool2d(2)),
        ])
        side = image_size // 4
        self.pool = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, num_classes)
