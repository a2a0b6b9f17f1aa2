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


# CI installs every package a test imports (scripts/setup.sh test). There, a test that
# skips because an import failed is a missing install step, not an optional feature, so
# FASTMIX_CI=1 (set by .ci/run) turns such skips into failures.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("FASTMIX_CI") == "1" and rep.skipped and isinstance(rep.longrepr, tuple):
        reason = str(rep.longrepr[2])
        if "could not import" in reason or "No module named" in reason:
            rep.outcome = "failed"
            rep.longrepr = f"FASTMIX_CI=1: a test was skipped for a missing package ({reason}); " \
                           f"scripts/setup.sh must install it"
