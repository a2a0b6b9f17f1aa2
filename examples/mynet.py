"""A model as you would write it: a plain ``nn.Module`` with BatchNorm, no fastmix base class.

The other examples import it (``from mynet import MyNet``), and the command line builds it
by import string: ``fastmix train --model mynet:build --model-opt width=16`` (run from this
directory, or with it on PYTHONPATH). fastmix feeds images in [0, 1]; the model
normalises them itself (``mean``/``std``), so an attack's eps is in pixel units.

Run it to print the module names that ``features=`` and ``mix_layers=`` accept.
"""
import torch
from torch import nn


class MyNet(nn.Module):
    """conv-BN-ReLU, ``block1`` and ``block2`` (conv-BN-ReLU-maxpool), ``embed`` (the feature
    vector: flatten, linear, ReLU) and ``head`` (the classifier)."""

    def __init__(self, num_classes=10, in_channels=1, image_size=8, width=16, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean or [0.0] * in_channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * in_channels).view(1, -1, 1, 1))
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
                                    nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w),
                                    nn.ReLU(), nn.MaxPool2d(2))
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * (image_size // 4) ** 2, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        h = self.stem((x - self.mean) / self.std)
        return self.head(self.embed(self.block2(self.block1(h))))


def build(num_classes, in_channels, image_size, mean=None, std=None, width=16):
    """What ``--model mynet:build`` calls: fastmix passes the dataset's facts this function
    declares (classes, channels, image size, per-channel mean and std) and ``--model-opt``s."""
    return MyNet(num_classes, in_channels, image_size, width, mean, std)


def digits(device="cpu"):
    """scikit-learn's 8x8 digits as float tensors in [0, 1]: ``(x_train, y_train, x_test, y_test)``."""
    import fastmix.data
    s = fastmix.data.load("digits")
    f = lambda t: t.images.to(device, torch.float32).div_(255.0)  # noqa: E731
    return f(s.train), s.train.labels.to(device), f(s.test), s.test.labels.to(device)


if __name__ == "__main__":
    net = MyNet()
    print("logits", tuple(net(torch.rand(2, 1, 8, 8)).shape))
    print("module names:", ", ".join(n for n, _ in net.named_modules() if n))
