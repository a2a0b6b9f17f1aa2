"""DDP: two torchrun processes on CPU (gloo) reproduce a single-process run with the same
global batch. GAIRAT exercises the cross-rank pieces: the sampler's per-rank slices of
each global batch, DDP's gradient averaging, and the all-reduced weight normaliser.
The CNN has no BatchNorm (per-rank batch statistics would differ by design; on GPUs the
trainer converts BN to SyncBatchNorm) and the attack no random start (each rank draws its
own noise), so the two runs agree up to float rounding."""
import json
import os
import subprocess
import sys

import pytest
import torch

from fastmix.train import Trainer, load_checkpoint

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--method", "gairat", "--opt", "burn_in=0", "--opt", "random_start=false", "--dataset", "digits",
        "--model-opt", "width=8", "--model-opt", "hidden=32", "--model-opt", "batch_norm=false",
        "--epochs", "2", "--batch-size", "64", "--steps", "3", "--eval-samples", "96", "--eval-steps", "3",
        "--no-progress"]


def _gloo_available():
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_process_gloo_run_matches_one_process(tmp_path):
    out2 = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fastmix", "train", *ARGS, "--out", str(out2)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from fastmix.cli import build_parser, config_from_args
    cfg = config_from_args(build_parser().parse_args(["train", *ARGS, "--out", str(tmp_path / "single")]))
    single = Trainer(cfg)
    single.fit()

    ddp_rows = [json.loads(line) for line in open(out2 / "metrics.jsonl")]
    assert len(ddp_rows) == len(single.history) == 2
    for a, b in zip(ddp_rows, single.history):
        assert a["lr"] == b["lr"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=2 / 1408)
        assert a["clean_acc"] == pytest.approx(b["clean_acc"], abs=2 / 96)
        assert a["pgd_acc"] == pytest.approx(b["pgd_acc"], abs=4 / 96)  # eval noise is drawn per shard
        assert a["gairat_w_var"] == pytest.approx(b["gairat_w_var"], rel=1e-2)
    ck = load_checkpoint(str(out2 / "last.pt"))
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2  # every rank's RNG state is kept
    for k, v in single.module.state_dict().items():
        torch.testing.assert_close(ck["model"][k], v, rtol=1e-3, atol=1e-4, msg=f"parameter {k}")
