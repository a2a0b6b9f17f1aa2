"""Datasets as uint8 tensors, read from their standard files.

Every loader returns a :class:`Splits`: ``train`` and ``test`` :class:`ImageSet` s of
``uint8 (N, C, H, W)`` images and ``int64 (N,)`` labels, plus what a model and a
loader need to know (classes, channels, size, normalisation, augmentation).

=========  ====================================================  ==========================
name       files under ``data_dir``                              source
=========  ====================================================  ==========================
digits     none (ships with scikit-learn)                        1,797 8x8 images, 80/20 split
mnist      ``[train|t10k]-[images-idx3|labels-idx1]-ubyte[.gz]``  60k/10k; t10k alone: 8k/2k split
cifar10    ``cifar-10-batches-py/{data_batch_1..5,test_batch}``  python pickles
cifar100   ``cifar-100-python/{train,test}``                     python pickles, fine labels
svhn       ``{train,test}_32x32.mat``                            read with scipy.io
=========  ====================================================  ==========================

Splits use a fixed seed (``split_seed``), so every run sees the same partition.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .safe_pickle import load_cifar_pickle

NAMES = ("digits", "mnist", "cifar10", "cifar100", "svhn")

_HOW = {
    "mnist": "download the four files from https://yann.lecun.com/exdb/mnist/ (or pass "
             "--download with torchvision installed); the t10k pair alone is enough "
             "(8,000 train / 2,000 held-out split)",
    "cifar10": "download and extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
               "into the data directory (or pass --download with torchvision installed)",
    "cifar100": "download and extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz "
                "into the data directory (or pass --download with torchvision installed)",
    "svhn": "download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and test_32x32.mat "
            "into the data directory (or pass --download with torchvision installed)",
}


@dataclass
class ImageSet:
    """``images``: uint8 ``(N, C, H, W)`` (contiguous); ``labels``: int64 ``(N,)`` in ``[0, K)``."""
    images: Tensor
    labels: Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor) -> "ImageSet":
        return ImageSet(self.images[index].contiguous(), self.labels[index].contiguous())


@dataclass
class Splits:
    """A dataset's train and held-out (test) sets and the facts models and loaders need.

    ``crop`` is the random-crop padding in pixels (0: none) and ``flip`` says whether a
    horizontal flip is a valid augmentation; ``mean``/``std`` are per-channel statistics of
    the training images in ``[0, 1]`` units; ``meta`` records where the data came from.
    """
    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    crop: int = 0
    flip: bool = False
    mean: list = field(default_factory=list)
    std: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {self.num_classes!r}")
        check_labels(self.train.labels, self.num_classes, f"{self.name} training labels")
        check_labels(self.test.labels, self.num_classes, f"{self.name} held-out labels")

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[2]

    def describe(self) -> dict:
        return dict(name=self.name, train=len(self.train), test=len(self.test), num_classes=self.num_classes,
                    in_channels=self.in_channels, image_size=self.image_size, crop=self.crop, flip=self.flip,
                    **self.meta)


def check_labels(labels: Tensor, num_classes: int, where: str) -> None:
    """Raise ValueError naming ``where`` (a file, a split) unless every label is in
    ``[0, num_classes)``. One min/max over the labels: datasets call it once at load,
    so nothing out of range reaches the kernels (which index by label)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(f"{where}: labels must be in [0, {num_classes}) ({num_classes} classes), found "
                         f"{bad.numel()} out of range (e.g. {int(bad[0])}; min {lo}, max {hi}); the file is "
                         f"corrupt or belongs to another dataset")


def _stats(images: Tensor) -> tuple[list, list]:
    x = images.double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _split(images: Tensor, labels: Tensor, n_train: int, seed: int) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(images.shape[0], generator=g)
    full = ImageSet(images, labels)
    return full.subset(perm[:n_train]), full.subset(perm[n_train:])


def _finish(name, train, test, num_classes, crop, flip, meta) -> Splits:
    mean, std = _stats(train.images)
    return Splits(name, train, test, num_classes, crop, flip, mean, std, meta)


def _missing(name: str, path: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name}: {path} not found; {_HOW[name]}. Pass the directory with --data-dir "
                             f"(data_dir=).")


# ---------------------------------------------------------------------------- digits
def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Splits:
    """scikit-learn's 8x8 digits (1,797 images, 17 grey levels scaled to 0..255), split
    ``1 - test_fraction`` / ``test_fraction`` (1,437 / 360) with a fixed seed."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a test/data extra
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    d = _sk_digits()
    imgs = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1).contiguous()
    labels = torch.from_numpy(d.target.astype(np.int64))
    n_test = int(math.ceil(len(labels) * test_fraction))
    train, test = _split(imgs, labels, len(labels) - n_test, seed)
    return _finish("digits", train, test, 10, 0, False,
                   {"source": "sklearn.datasets.load_digits", "split": f"{len(train)}/{len(test)} seed {seed}"})


# ----------------------------------------------------------------------------- mnist
def _find(data_dir: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.isfile(p):
            return p
    return None


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (gzipped or not): ubyte images ``(N, H, W)`` or labels ``(N,)``."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (magic {data[:4]!r})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} bytes")
    return arr.reshape(dims)


def load_mnist(data_dir: str, seed: int = 0, n_train_10k: int = 8000) -> Splits:
    """MNIST from idx files in ``data_dir``. With the training pair present: the standard
    60,000 / 10,000 split. With only the t10k pair (e.g. ``../shared/data/mnist``): the
    10,000 test images split ``n_train_10k`` train / the rest held out, with a fixed seed."""
    ti, tl = _find(data_dir, "t10k-images-idx3-ubyte"), _find(data_dir, "t10k-labels-idx1-ubyte")
    if ti is None or tl is None:
        raise _missing("mnist", os.path.join(data_dir, "t10k-images-idx3-ubyte[.gz]"))

    def pair(ip, lp):
        x = torch.from_numpy(read_idx(ip).copy()).unsqueeze(1).contiguous()
        y = torch.from_numpy(read_idx(lp).astype(np.int64))
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{ip} has {x.shape[0]} images but {lp} has {y.shape[0]} labels")
        check_labels(y, 10, lp)
        return x, y

    test_x, test_y = pair(ti, tl)
    ri, rl = _find(data_dir, "train-images-idx3-ubyte"), _find(data_dir, "train-labels-idx1-ubyte")
    if ri is not None and rl is not None:
        tr_x, tr_y = pair(ri, rl)
        return _finish("mnist", ImageSet(tr_x, tr_y), ImageSet(test_x, test_y), 10, 0, False,
                       {"source": data_dir, "split": "standard 60000/10000"})
    if not 0 < n_train_10k < test_x.shape[0]:
        raise ValueError(f"n_train_10k must be in (0, {test_x.shape[0]}), got {n_train_10k}")
    train, test = _split(test_x, test_y, n_train_10k, seed)
    return _finish("mnist", train, test, 10, 0, False,
                   {"source": data_dir, "split": f"t10k only: {len(train)}/{len(test)} seed {seed}"})


# --------------------------------------------------------------------------- cifar
def _cifar_batch(path: str, label_key: bytes, num_classes: int) -> tuple[Tensor, Tensor]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one CIFAR python batch file, read
    with the restricted unpickler (no code runs from the file) and checked: a uint8
    ``(N, 3072)`` array, N labels in ``[0, num_classes)``."""
    b = load_cifar_pickle(path)
    raw, labels = b.get(b"data"), b.get(label_key)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3072:
        what = (f"{raw.dtype} {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__)
        raise ValueError(f"{path}: b'data' must be a uint8 (N, 3072) array, got {what}")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise ValueError(f"{path}: {label_key!r} must be a list of ints, got "
                         f"{type(labels).__name__ if not isinstance(labels, list) else 'a list with non-ints'}")
    if len(labels) != raw.shape[0]:
        raise ValueError(f"{path} has {raw.shape[0]} images but {len(labels)} labels")
    y = torch.tensor(labels, dtype=torch.int64)
    check_labels(y, num_classes, path)
    return torch.from_numpy(raw.reshape(-1, 3, 32, 32).copy()), y


def _cifar_dir(data_dir: str, sub: str, name: str, probe: str) -> str:
    for d in (os.path.join(data_dir, sub), data_dir):
        if os.path.isfile(os.path.join(d, probe)):
            return d
    raise _missing(name, os.path.join(data_dir, sub, probe))


def load_cifar10(data_dir: str) -> Splits:
    d = _cifar_dir(data_dir, "cifar-10-batches-py", "cifar10", "test_batch")
    xs, ys = [], []
    for i in range(1, 6):
        p = os.path.join(d, f"data_batch_{i}")
        if not os.path.isfile(p):
            raise _missing("cifar10", p)
        x, y = _cifar_batch(p, b"labels", 10)
        xs.append(x)
        ys.append(y)
    train = ImageSet(torch.cat(xs), torch.cat(ys))
    test = ImageSet(*_cifar_batch(os.path.join(d, "test_batch"), b"labels", 10))
    return _finish("cifar10", train, test, 10, 4, True, {"source": d, "split": "standard 50000/10000"})


def load_cifar100(data_dir: str) -> Splits:
    d = _cifar_dir(data_dir, "cifar-100-python", "cifar100", "test")
    if not os.path.isfile(os.path.join(d, "train")):
        raise _missing("cifar100", os.path.join(d, "train"))
    train = ImageSet(*_cifar_batch(os.path.join(d, "train"), b"fine_labels", 100))
    test = ImageSet(*_cifar_batch(os.path.join(d, "test"), b"fine_labels", 100))
    return _finish("cifar100", train, test, 100, 4, True, {"source": d, "split": "standard 50000/10000"})


# ---------------------------------------------------------------------------- svhn
def load_svhn(data_dir: str) -> Splits:
    def one(split):
        p = os.path.join(data_dir, f"{split}_32x32.mat")
        if not os.path.isfile(p):
            raise _missing("svhn", p)
        from scipy.io import loadmat
        m = loadmat(p)
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(m["X"], (3, 2, 0, 1)))).to(torch.uint8)
        y = torch.from_numpy(m["y"].reshape(-1).astype(np.int64))
        check_labels(y - 1, 10, p + " (SVHN labels are 1..10)")
        return ImageSet(x.contiguous(), torch.where(y == 10, 0, y))  # SVHN stores digit 0 as label 10
    # No flip for digits; the 4-pixel crop is the common SVHN augmentation.
    return _finish("svhn", one("train"), one("test"), 10, 4, False, {"source": data_dir, "split": "train/test"})


# ------------------------------------------------------------------------ download
def _download(name: str, data_dir: str) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise FileNotFoundError(f"{name}: --download needs torchvision (pip install torchvision); "
                                f"otherwise {_HOW[name]}") from e
    os.makedirs(data_dir, exist_ok=True)
    if name == "cifar10":
        tvd.CIFAR10(data_dir, train=True, download=True)
        tvd.CIFAR10(data_dir, train=False, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(data_dir, train=True, download=True)
        tvd.CIFAR100(data_dir, train=False, download=True)
    elif name == "svhn":
        tvd.SVHN(data_dir, split="train", download=True)
        tvd.SVHN(data_dir, split="test", download=True)
    elif name == "mnist":
        ds = tvd.MNIST(data_dir, train=True, download=True)
        tvd.MNIST(data_dir, train=False, download=True)
        # torchvision keeps the idx files under <root>/MNIST/raw; point the reader there.
        return ds.raw_folder


def load(name: str, data_dir: str | None = None, *, download: bool = False, seed: int = 0) -> Splits:
    """Load a dataset by name (see the module docstring).

    Args:
        name: ``digits``, ``mnist``, ``cifar10``, ``cifar100`` or ``svhn``.
        data_dir: the directory holding the files (``digits`` needs none); defaults to
            ``$FASTMIX_DATA`` or ``./data``.
        download: fetch the files through torchvision when they are missing (needs
            torchvision and a network connection).
        seed: the seed of the fixed train/held-out splits (digits, t10k-only MNIST).
    Raises:
        FileNotFoundError: naming the missing path and how to get the data.
    """
    if name not in NAMES:
        raise ValueError(f"dataset must be one of {', '.join(NAMES)}, got {name!r}")
    if name == "digits":
        return load_digits(seed)
    data_dir = data_dir or os.environ.get("FASTMIX_DATA", "data")
    loaders = {"mnist": lambda d: load_mnist(d, seed), "cifar10": load_cifar10,
               "cifar100": load_cifar100, "svhn": load_svhn}
    try:
        return loaders[name](data_dir)
    except FileNotFoundError:
        if not download:
            raise
    raw = _download(name, data_dir)
    return loaders[name](raw or data_dir)
