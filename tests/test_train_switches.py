"""The trainer's process-wide torch switches (issue 12 item 4): set only while ``fit`` runs,
each given back as it was found, also when the run raises; ``cudnn_benchmark`` is an
explicit option."""
import os

import pytest
import torch

from fastmix.data import load as load_data
from fastmix.train import TrainConfig, Trainer
from fastmix.train.trainer import process_switches

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture
def switches(monkeypatch):
    """Start from non-default values, so 'restored' cannot be confused with 'default'."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(False)


def state():
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def cfg(tmp_path, **kw):
    return TrainConfig.for_dataset("digits", model_opts={"width": 4, "hidden": 8}, epochs=1, eval_samples=16,
                                   eval_steps=1, steps=1, probe_size=8, progress=False, out=str(tmp_path), **kw)


def _spy(monkeypatch, seen, fail=False):
    real = Trainer.train_epoch

    def train_epoch(self):
        seen.append(state())
        if fail:
            raise RuntimeError("boom")
        return real(self)
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def test_deterministic_run_sets_the_switches_during_fit_only(tmp_path, digits, switches, monkeypatch):
    seen = []
    _spy(monkeypatch, seen)
    before = state()
    t = Trainer(cfg(tmp_path, deterministic=True), digits)
    assert state() == before  # building a trainer changes nothing process-wide
    t.fit()
    assert seen == [(True, False, ":4096:8")]
    assert state() == before == (False, True, None)


def test_cudnn_benchmark_is_an_explicit_option(tmp_path, digits, switches, monkeypatch):
    seen = []
    _spy(monkeypatch, seen)
    Trainer(cfg(tmp_path, cudnn_benchmark=False), digits).fit()
    assert seen == [(False, False, None)] and state() == (False, True, None)
    with pytest.raises(ValueError, match="cudnn_benchmark"):
        cfg(tmp_path, cudnn_benchmark="yes")


def test_switches_are_restored_when_the_run_raises(tmp_path, digits, switches, monkeypatch):
    _spy(monkeypatch, [], fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(cfg(tmp_path, deterministic=True), digits).fit()
    assert state() == (False, True, None)


def test_process_switches_keeps_an_existing_cublas_setting(switches, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with process_switches(deterministic=True):
        assert state() == (True, False, ":16:8")
    assert state() == (False, True, ":16:8")
