"""Training-engine benchmarks: images/s of one training step per method, against a plain
PyTorch PGD-AT step written the usual way, and of the device-resident loader against a
per-image ``torch.utils.data.DataLoader``.

    python benchmarks/bench_train.py                 # table + benchmarks/results/train-<device>-<date>.json
    python benchmarks/bench_train.py --quick         # fewer steps, first workload only
    pytest benchmarks/bench_train.py --benchmark-only

Workloads are the shapes the project trains: digits (cnn width 16, B=64, 1x8x8) and
MNIST (cnn width 32, B=128, 1x28x28) on any machine; CIFAR (PreActResNet-18, B=128,
3x32x32; fp32, bf16 autocast, channels-last and CUDA graphs) where a GPU is present.
Measurements only: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fastmix.data import DeviceLoader, ImageSet  # noqa: E402
from fastmix.data.datasets import Splits  # noqa: E402
from fastmix.train import TrainConfig, Trainer  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# name -> (dataset shape, model, model options, batch, extra trainer options)
WORKLOADS = {
    "digits-cnn16": dict(shape=(1, 8), n=1024, model="cnn", model_opts={"width": 16}, batch=64, eps=0.2),
    "mnist-cnn32": dict(shape=(1, 28), n=1024, model="cnn", model_opts={"width": 32}, batch=128, eps=0.3),
}
if DEVICE == "cuda":
    WORKLOADS.update({
        "cifar-preact18": dict(shape=(3, 32), n=4096, model="preact18", model_opts={}, batch=128, eps=8 / 255),
        "cifar-preact18-bf16-cl": dict(shape=(3, 32), n=4096, model="preact18", model_opts={}, batch=128,
                                       eps=8 / 255, amp="bf16", channels_last=True),
        "cifar-preact18-bf16-cl-graphs": dict(shape=(3, 32), n=4096, model="preact18", model_opts={}, batch=128,
                                              eps=8 / 255, amp="bf16", channels_last=True, compile="graphs"),
    })
METHODS = ("standard", "at", "trades", "gairat", "fastat")


def synthetic_splits(c: int, s: int, n: int, crop: int = 0) -> Splits:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    ds = ImageSet(imgs, labels)
    return Splits("synthetic", ds, ds.subset(torch.arange(256)), 10, crop, crop > 0, [0.5] * c, [0.25] * c)


def make_trainer(workload: str, method: str, tmp: str) -> Trainer:
    w = WORKLOADS[workload]
    c, s = w["shape"]
    cfg = TrainConfig(method=method, model=w["model"], model_opts=dict(w["model_opts"]), batch_size=w["batch"],
                      eps=w["eps"], steps=10, epochs=1, eval_samples=64, progress=False, out=tmp, device=DEVICE,
                      amp=w.get("amp", "none"), channels_last=w.get("channels_last", False),
                      compile=w.get("compile", "none"))
    return Trainer(cfg, synthetic_splits(c, s, w["n"], crop=4 if s == 32 else 0))


def naive_at_step(model, opt, x, y, eps, alpha, steps):
    """PGD-AT as it is usually written in PyTorch: eval-mode attack with F.cross_entropy,
    sign step and two clamps per iteration, then a training step. The baseline."""
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.train()
    loss = F.cross_entropy(model(x_adv), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def step_fn(workload: str, method: str, provider: str, tmp: str):
    """A zero-argument callable running one training step, and its batch size."""
    t = make_trainer(workload, method, tmp)
    x, y, idx = next(iter(t.loader))
    t.method.start_epoch(1)
    if provider == "fastmix":
        return (lambda: t.train_step(x, y, idx)), x.shape[0]
    if provider == "naive" and method == "at":
        return (lambda: naive_at_step(t.module, t.optimizer, x, y, t.method.eps, t.method.alpha,
                                      t.method.steps)), x.shape[0]
    raise ValueError(f"no provider {provider!r} for method {method!r}")


def images_per_s(fn, batch: int, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return steps * batch / (time.perf_counter() - t0)


class _PerImage(torch.utils.data.Dataset):
    """The DataLoader baseline: pad, crop and flip one image at a time in __getitem__."""

    def __init__(self, ds: ImageSet, pad: int):
        self.ds, self.pad = ds, pad

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img = self.ds.images[i].float().div(255)
        if self.pad:
            p = F.pad(img, (self.pad,) * 4)
            oy, ox = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            img = p[:, oy:oy + img.shape[1], ox:ox + img.shape[2]]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return img, self.ds.labels[i], i


def loader_epoch_fn(provider: str, n: int = 8192, batch: int = 128):
    ds = synthetic_splits(3, 32, n).train
    if provider == "device_loader":
        loader = DeviceLoader(ds, batch, crop=4, flip=True, device=DEVICE)
    else:
        loader = torch.utils.data.DataLoader(_PerImage(ds, 4), batch_size=batch, shuffle=True, drop_last=True)

    def run():
        for x, y, idx in loader:
            x = x.to(DEVICE, non_blocking=True)
        _sync()
    return run, n


# ------------------------------------------------------------------ pytest-benchmark view
try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    CASES = [(w, m, "fastmix") for w in WORKLOADS for m in METHODS] + [(w, "at", "naive") for w in WORKLOADS]

    @pytest.mark.parametrize("workload,method,provider", CASES, ids=["-".join(c) for c in CASES])
    def test_bench_train_step(benchmark, tmp_path, workload, method, provider):
        fn, batch = step_fn(workload, method, provider, str(tmp_path))
        benchmark.extra_info.update(workload=workload, method=method, provider=provider, batch=batch)
        benchmark.pedantic(lambda: (fn(), _sync()), rounds=10, warmup_rounds=2)

    @pytest.mark.parametrize("provider", ["device_loader", "dataloader"])
    def test_bench_loader_epoch(benchmark, provider):
        fn, n = loader_epoch_fn(provider)
        benchmark.extra_info.update(provider=provider, images=n)
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1)


# ------------------------------------------------------------------------------ runner
def main(argv=None) -> int:
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="first workload only, fewer steps")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per case")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    steps = 5 if a.quick else a.steps
    workloads = list(WORKLOADS)[:1] if a.quick else list(WORKLOADS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in workloads:
            for m in METHODS:
                for prov in ("fastmix", "naive") if m == "at" else ("fastmix",):
                    fn, batch = step_fn(w, m, prov, tmp)
                    ips = images_per_s(fn, batch, steps)
                    rows.append({"workload": w, "method": m, "provider": prov, "batch": batch, "images_per_s": ips})
                    print(f"{w:28s} {m:9s} {prov:8s} {ips:10.1f} img/s", flush=True)
            base = next(r["images_per_s"] for r in rows if r["workload"] == w and r["provider"] == "naive")
            for r in rows:
                if r["workload"] == w and r["method"] == "at":
                    r["ratio_to_naive_at"] = r["images_per_s"] / base
    loaders = []
    for prov in ("device_loader", "dataloader"):
        fn, n = loader_epoch_fn(prov, n=2048 if a.quick else 8192)
        fn()
        t0 = time.perf_counter()
        fn()
        ips = n / (time.perf_counter() - t0)
        loaders.append({"provider": prov, "images": n, "images_per_s": ips})
        print(f"loader cifar-shaped crop+flip {prov:14s} {ips:12.1f} img/s", flush=True)
    loaders[0]["ratio_to_dataloader"] = loaders[0]["images_per_s"] / loaders[1]["images_per_s"]
    payload = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else f"cpu-{os.cpu_count()}core",
               "date": _dt.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
               "threads": torch.get_num_threads(), "steps": steps, "train_steps": rows, "loaders": loaders}
    os.makedirs(a.out, exist_ok=True)
    name = "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in payload["device"])
    path = os.path.join(a.out, f"train-{name}-{payload['date']}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
