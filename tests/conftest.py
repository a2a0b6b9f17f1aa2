"""Test configuration shared by every test file.

On a machine whose torch has no CUDA, the Triton kernels run in Triton's CPU
interpreter (TRITON_INTERPRET=1 must be set before triton is imported), which is how
CI checks them. Nothing here queries a GPU at collection time beyond asking torch
whether one is present.
"""
import os

import torch

if torch.version.cuda is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fastmix.ops as fops  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def device_backends():
    """(device, backend) pairs available here, every compiled backend plus the reference."""
    out = []
    for d in DEVICES:
        for b in fops.available_backends(d):
            out.append((d, b))
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
