"""fastmix.data: dataset readers (real digits and MNIST; synthetic CIFAR/SVHN files) and the
device-resident loader (augmentation, sharding, resumable order)."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from fastmix import data as D

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
HAVE_MNIST = os.path.isfile(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))


# ------------------------------------------------------------------------------ datasets
def test_digits_split_is_fixed_disjoint_and_uint8():
    a, b = D.load("digits"), D.load("digits")
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert a.train.images.dtype == torch.uint8 and a.train.images.shape[1:] == (1, 8, 8)
    assert a.num_classes == 10 and a.in_channels == 1 and a.image_size == 8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.max() == 255  # 16 grey levels scaled to the full byte range
    # disjoint: no held-out image (with its label) appears among the training rows
    tr = {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(a.train.images, a.train.labels)}
    dup = sum((bytes(x.numpy().tobytes()), int(y)) in tr for x, y in zip(a.test.images, a.test.labels))
    assert dup <= 2  # digits holds a couple of exact duplicate images; a leaky split would share ~20%
    assert set(a.train.labels.tolist()) == set(range(10))
    assert len(a.mean) == 1 and 0 < a.mean[0] < 1 and 0 < a.std[0] < 1


@pytest.mark.skipif(not HAVE_MNIST, reason="needs ../shared/data/mnist")
def test_mnist_t10k_only_gives_the_fixed_8000_2000_split():
    s = D.load("mnist", MNIST_DIR)
    assert (len(s.train), len(s.test)) == (8000, 2000)
    assert s.train.images.shape[1:] == (1, 28, 28) and s.train.images.dtype == torch.uint8
    assert "t10k only" in s.meta["split"]
    counts = torch.bincount(s.train.labels, minlength=10)
    assert counts.min() > 600  # every class well represented
    s2 = D.load("mnist", MNIST_DIR)
    assert torch.equal(s.test.labels, s2.test.labels)
    full_labels = torch.from_numpy(D.read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))
    assert torch.equal(torch.bincount(torch.cat([s.train.labels, s.test.labels])), torch.bincount(full_labels))


def _write_idx(path, arr, gz):
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def test_mnist_reads_plain_and_gzipped_idx_with_the_standard_split(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 12, False), ("t10k", 5, True)):
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (n,)), gz)
    s = D.load("mnist", str(tmp_path))
    assert (len(s.train), len(s.test)) == (12, 5)
    raw = D.read_idx(str(tmp_path / "train-images-idx3-ubyte"))
    assert torch.equal(s.train.images[:, 0], torch.from_numpy(raw.copy()))


def test_cifar10_cifar100_and_svhn_read_their_file_formats(tmp_path):
    rng = np.random.default_rng(1)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    batches = []
    for i in range(1, 6):
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 4).tolist()}
        batches.append(d)
        with open(c10 / f"data_batch_{i}", "wb") as f:
            pickle.dump(d, f)
    with open(c10 / "test_batch", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}, f)
    s = D.load("cifar10", str(tmp_path))
    assert (len(s.train), len(s.test), s.num_classes, s.crop, s.flip) == (20, 3, 10, 4, True)
    # row-major 3x32x32 planes: pixel (c=2, h=5, w=7) of image 0 is byte 2*1024 + 5*32 + 7
    assert int(s.train.images[0, 2, 5, 7]) == int(batches[0][b"data"][0, 2 * 1024 + 5 * 32 + 7])

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for split, n in (("train", 6), ("test", 2)):
        with open(c100 / split, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n}, f)
    s = D.load("cifar100", str(tmp_path))
    assert (len(s.train), len(s.test), s.num_classes) == (6, 2, 100)

    from scipy.io import savemat
    X = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": X, "y": np.array([[10], [1], [2], [10]], dtype=np.uint8)})
    savemat(tmp_path / "test_32x32.mat", {"X": X[..., :2], "y": np.array([[3], [10]], dtype=np.uint8)})
    s = D.load("svhn", str(tmp_path))
    assert s.train.labels.tolist() == [0, 1, 2, 0]  # SVHN's label 10 is the digit 0
    assert int(s.train.images[1, 2, 4, 6]) == int(X[4, 6, 2, 1])  # HWCN -> NCHW
    assert s.flip is False and s.crop == 4


@pytest.mark.parametrize("name,expect", [("mnist", "t10k-images-idx3-ubyte"), ("cifar10", "test_batch"),
                                         ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")])
def test_missing_files_raise_naming_the_path_and_the_fix(tmp_path, name, expect):
    with pytest.raises(FileNotFoundError) as e:
        D.load(name, str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert expect in msg and str(tmp_path / "nowhere") in msg and "download" in msg


def test_unknown_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="dataset must be one of"):
        D.load("imagenet")


# -------------------------------------------------------------------------------- loader
def _toy(n=50, c=3, s=6):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    return D.ImageSet(imgs, torch.arange(n) % 10)


def test_one_pass_visits_every_sample_once_and_batches_carry_indices():
    ds = _toy(50)
    loader = D.DeviceLoader(ds, 8, shuffle=True, drop_last=False, seed=3)
    seen = []
    for x, y, idx in loader:
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        torch.testing.assert_close(x, ds.images[idx].float() / 255)
        assert torch.equal(y, ds.labels[idx])
        seen.append(idx)
    seen = torch.cat(seen)
    assert sorted(seen.tolist()) == list(range(50))
    assert len(loader) == 7
    first = torch.cat([i for _, _, i in loader])
    assert not torch.equal(first, seen)  # a new permutation every pass


def test_drop_last_gives_static_shapes():
    loader = D.DeviceLoader(_toy(50), 8, shuffle=True)
    shapes = {tuple(x.shape) for x, _, _ in loader}
    assert shapes == {(8, 3, 6, 6)} and len(loader) == 6 and loader.samples_per_epoch == 48


def _crop_flip_naive(img, oy, ox, flip, pad):
    p = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    out = p[:, oy:oy + img.shape[1], ox:ox + img.shape[2]]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_a_per_image_reference():
    imgs = _toy(9, 3, 7).images
    g = torch.Generator().manual_seed(5)
    oy, ox = torch.randint(0, 9, (9,), generator=g), torch.randint(0, 9, (9,), generator=g)
    flip = torch.rand(9, generator=g) < 0.5
    out = D.crop_flip(imgs, oy, ox, flip, 4)
    assert out.shape == imgs.shape and out.is_contiguous(memory_format=torch.channels_last)
    for i in range(9):
        assert torch.equal(out[i], _crop_flip_naive(imgs[i], int(oy[i]), int(ox[i]), bool(flip[i]), 4))


def test_augmented_batches_are_crops_and_flips_of_their_samples():
    ds = _toy(16, 1, 8)
    loader = D.DeviceLoader(ds, 16, shuffle=True, crop=2, flip=True, seed=1)
    x, _, idx = next(iter(loader))
    src = ds.images[idx].float() / 255
    assert not torch.equal(x, src)  # some sample was shifted or mirrored
    for i in range(16):
        cands = [_crop_flip_naive(src[i], a, b, f, 2) for a in range(5) for b in range(5) for f in (False, True)]
        assert any(torch.equal(x[i], c) for c in cands)


def test_state_dict_resumes_the_exact_order_and_augmentation():
    ds = _toy(40)
    a = D.DeviceLoader(ds, 8, crop=2, flip=True, seed=7)
    list(a)  # one epoch
    state = a.state_dict()
    nxt = [(x.clone(), i.clone()) for x, _, i in a]
    b = D.DeviceLoader(ds, 8, crop=2, flip=True, seed=123)
    b.load_state_dict(state)
    for (xa, ia), (xb, _, ib) in zip(nxt, b):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)


def test_ranks_split_each_global_batch_like_one_process():
    ds = _toy(50)
    single = [(x, i) for x, _, i in D.DeviceLoader(ds, 10, crop=1, flip=True, seed=2)]
    parts = [[(x, i) for x, _, i in D.DeviceLoader(ds, 10, crop=1, flip=True, seed=2, rank=r, world_size=2)]
             for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(single) == 5
    for b, (x, i) in enumerate(single):
        assert torch.equal(torch.cat([parts[0][b][1], parts[1][b][1]]), i)
        assert torch.equal(torch.cat([parts[0][b][0], parts[1][b][0]]), x)


def test_evaluation_shards_cover_the_set_once():
    ds = _toy(23)
    idx = [torch.cat([i for _, _, i in D.DeviceLoader(ds, 4, shuffle=False, rank=r, world_size=2)]) for r in range(2)]
    assert sorted(torch.cat(idx).tolist()) == list(range(23))


def test_fetch_returns_unaugmented_samples():
    ds = _toy(10)
    loader = D.DeviceLoader(ds, 4, crop=2, flip=True)
    x, y = loader.fetch(torch.tensor([3, 1]))
    torch.testing.assert_close(x, ds.images[[3, 1]].float() / 255)
    assert y.tolist() == ds.labels[[3, 1]].tolist()


@pytest.mark.parametrize("kw,match", [(dict(batch_size=0), "batch_size"), (dict(batch_size=9, world_size=2), "divisible"),
                                      (dict(batch_size=4, rank=2, world_size=2), "rank"),
                                      (dict(batch_size=4, crop=-1), "crop"), (dict(batch_size=64), "exceeds")])
def test_loader_errors_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        D.DeviceLoader(_toy(20), **kw)
