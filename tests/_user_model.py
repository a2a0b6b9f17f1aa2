"""A model as a user writes it: a plain ``nn.Module`` (images in [0, 1] -> logits) with
BatchNorm, no fastmix base class, no ``features()`` and no mixing arguments. Shared by the
bring-your-own-model tests (the CLI test imports ``_user_model:build`` by name)."""
import torch
from torch import nn


class UserNet(nn.Module):
    """conv-BN-ReLU, ``layer1`` (conv-BN-ReLU-pool), ``layer2`` (conv-BN-ReLU-pool), ``pool``
    (flatten, linear, ReLU: the feature vector), ``fc`` (the classifier)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 8):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w),
                                    nn.ReLU(), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w),
                                    nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.pool = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * side * side, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.layer2(self.layer1(h))))


def build(num_classes: int, in_channels: int, image_size: int, width: int = 8) -> UserNet:
    """What ``--model _user_model:build --model-opt width=4`` calls (the dataset's facts are
    passed to the parameters it declares)."""
    return UserNet(num_classes, in_channels, image_size, width)
