"""Datasets (uint8 tensors from their standard files) and the device-resident loader.

>>> from fastmix.data import load, DeviceLoader
>>> d = load("digits")                       # no download: ships with scikit-learn
>>> loader = DeviceLoader(d.train, 128, crop=d.crop, flip=d.flip)
>>> for x, y, idx in loader: ...             # x float32 (128, 1, 8, 8) in [0, 1]
"""
from .datasets import (NAMES, ImageSet, Splits, check_labels, load, load_cifar10, load_cifar100, load_digits,
                       load_mnist, load_svhn, read_idx)
from .defaults import DATASET_DEFAULTS, attack_eps
from .loader import DeviceLoader, crop_flip

__all__ = ["NAMES", "ImageSet", "Splits", "load", "load_digits", "load_mnist", "load_cifar10", "load_cifar100",
           "load_svhn", "read_idx", "check_labels", "DeviceLoader", "crop_flip",
           "DATASET_DEFAULTS", "attack_eps"]
