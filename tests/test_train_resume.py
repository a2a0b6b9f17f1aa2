"""Kill-and-resume with a real SIGKILL: a `fastmix train` process killed mid-run (right after
its first checkpoint appears) and resumed with --resume ends with the metrics and weights
of the uninterrupted run, bit for bit. (test_train.py covers the clean stop after epoch k.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastmix.cli import build_parser, config_from_args
from fastmix.train import Trainer, load_checkpoint

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--method", "at", "--dataset", "digits", "--model-opt", "width=8", "--model-opt", "hidden=32",
        "--epochs", "4", "--steps", "5", "--eval-samples", "96", "--eval-steps", "3", "--deterministic",
        "--no-progress"]
TIMING = ("seconds", "images_per_s", "eval_seconds")


def _cfg(out, *extra):
    return config_from_args(build_parser().parse_args(["train", *ARGS, "--out", str(out), *extra]))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "fastmix", "train", *ARGS, "--out", str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not (out / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.01)  # polling for a file, not timing anything
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    stopped = load_checkpoint(str(out / "last.pt"))["epoch"]
    assert 1 <= stopped < 4  # killed mid-run, with a complete checkpoint on disk

    resumed = Trainer(_cfg(out, "--resume"))
    assert resumed.epoch == stopped
    resumed.fit()
    full = Trainer(_cfg(tmp_path / "full"))
    full.fit()

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    got, want = strip(resumed.history), strip(full.history)
    assert got == want, f"killed after epoch {stopped}; first differing epoch: " + str(
        next(((a, b) for a, b in zip(got, want) if a != b), None))
    assert strip(json.loads(line) for line in open(out / "metrics.jsonl")) == strip(full.history)
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k
