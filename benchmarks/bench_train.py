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
sys.path.insert(0, HERE)

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
METHODS = ("standard", "at", "trades", "gairat", "fastat", "avmixup", "iat", "ait", "at-mixup")


def synthetic_splits(c: int, s: int, n: int, crop: int = 0) -> Splits:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    ds = ImageSet(imgs, labels)
    return Splits("synthetic", ds, ds.subset(torch.arange(min(256, n))), 10, crop, crop > 0, [0.5] * c, [0.25] * c)


def make_trainer(workload: str, method: str, tmp: str, **opts) -> Trainer:
    """A trainer for one workload; ``opts`` override TrainConfig fields (amp, channels_last, ...)."""
    w = WORKLOADS[workload]
    c, s = w["shape"]
    kw = dict(method=method, model=w["model"], model_opts=dict(w["model_opts"]), batch_size=w["batch"],
              eps=w["eps"], steps=10, epochs=1, eval_samples=64, progress=False, out=tmp, device=DEVICE,
              amp=w.get("amp", "none"), channels_last=w.get("channels_last", False),
              compile=w.get("compile", "none"), seed=0)
    kw.update(opts)
    cfg = TrainConfig(**kw)
    return Trainer(cfg, synthetic_splits(c, s, w["n"], crop=4 if s == 32 else 0))


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# Fast paths: name -> TrainConfig overrides. Each runs beside fp32 eager and the naive loop.
VARIANTS = {
    "fastmix": {},  # the defaults: fp32 eager, BatchNorm folded in eval-mode attacks (fold_bn=None)
    "fastmix-nofold": {"fold_bn": False},
    "fastmix-plainsgd": {"fused_sgd": False},  # torch's default SGD loop instead of the fused kernel
    "fastmix-bf16": {"amp": "bf16"},
    "fastmix-cl": {"channels_last": True},
    "fastmix-bf16-cl": {"amp": "bf16", "channels_last": True},  # (folded too, by default)
    "fastmix-bf16-cl-nofold": {"amp": "bf16", "channels_last": True, "fold_bn": False},
    "fastmix-compile": {"compile": "model"},
}


def step_fn(workload: str, method: str, provider: str, tmp: str):
    """A zero-argument callable running one training step, and its batch size.

    ``provider``: ``naive`` (the hand-written loop of ``naive_steps.py``; fp32 eager, torch's
    default SGD), ``naive-fusedsgd`` (the same loop stepping the trainer's fused SGD) or a
    key of :data:`VARIANTS` (fastmix's ``Trainer.train_step`` with those options)."""
    from naive_steps import NAIVE
    if provider in ("naive", "naive-fusedsgd"):
        if method not in NAIVE:
            raise ValueError(f"no naive loop for method {method!r}")
        t = make_trainer(workload, method, tmp)
        t.naive_uses_trainer_optimizer = provider == "naive-fusedsgd"
    elif provider in VARIANTS:
        opts = {k: v for k, v in VARIANTS[provider].items() if not k.startswith("_")}
        t = make_trainer(workload, method, tmp, **opts)
        if VARIANTS[provider].get("_attack_graphs") and DEVICE == "cuda":
            # the attacks' K-step loops as CUDA graphs without compiling the training forward
            # (what compile="graphs" adds), whose compile time would not fit a short GPU run
            t.method.ctx.attack_options["cuda_graph"] = True
    else:
        raise ValueError(f"provider must be 'naive' or one of {', '.join(VARIANTS)}, got {provider!r}")
    x, y, idx = next(iter(t.loader))
    t.method.start_epoch(1)
    t.module.train()
    if provider.startswith("naive"):
        return (lambda: NAIVE[method](t, x, y, idx)), x.shape[0]
    return (lambda: t.train_step(x, y, idx)), x.shape[0]


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
    CASES = [(w, m, p) for w in WORKLOADS for m in METHODS for p in ("fastmix", "naive")]

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
def interleaved(fns: dict, batch: int, rounds: int, steps: int, warmup: int = 2) -> dict:
    """Time ``steps`` calls of every provider per round, the providers in a rotated order
    each round (so drift in a loaded machine's speed hits all alike). Returns per provider
    the per-round seconds per step: wall clock, and the process's CPU time (with one thread
    the CPU time is the work done, whatever else the machine runs; wall clock is what a
    user waits)."""
    names = list(fns)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    _sync()
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                fns[n]()
            _sync()
            times[n].append((time.perf_counter() - t0) / steps)
            cpu[n].append((time.process_time() - c0) / steps)
    return times, cpu


def _median(v):
    v = sorted(v)
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def bootstrap_ci(v, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of ``v`` (the per-round ratios)."""
    import random
    rng, meds = random.Random(seed), []
    for _ in range(n):
        meds.append(_median([v[rng.randrange(len(v))] for _ in v]))
    meds.sort()
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def environment() -> dict:
    return {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else f"cpu-{os.cpu_count()}core",
            "cpu": platform.processor() or platform.machine(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run_steps(workloads, methods, providers, rounds, steps, tmp, log=print, deadline=None) -> list[dict]:
    """Per workload and method, every provider interleaved; ratios per round to ``naive``
    (and to ``fastmix``, the default path), medians over the rounds. ``deadline``
    (a ``time.perf_counter()`` value): start no new method after it."""
    from naive_steps import NAIVE
    rows = []
    for w in workloads:
        for m in methods:
            if deadline is not None and time.perf_counter() > deadline:
                log(f"deadline reached: {m} and later methods not measured")
                return rows
            provs = [p for p in providers if not p.startswith("naive") or m in NAIVE]
            fns, batch = {}, None
            for p in provs:
                fns[p], batch = step_fn(w, m, p, tmp)
            times, cpu = interleaved(fns, batch, rounds, steps)
            for p in provs:
                row = {"workload": w, "method": m, "provider": p, "batch": batch, "rounds": rounds,
                       "steps_per_round": steps, "seconds_per_step": times[p], "cpu_seconds_per_step": cpu[p],
                       "images_per_s": batch / _median(times[p]), "images_per_cpu_s": batch / _median(cpu[p])}
                for base in ("naive", "fastmix"):
                    if base in times and base != p:
                        row[f"ratio_to_{base}"] = _median([b / t for b, t in zip(times[base], times[p])])
                        cr = [b / t for b, t in zip(cpu[base], cpu[p])]
                        row[f"cpu_ratio_to_{base}"] = _median(cr)
                        row[f"cpu_ratio_to_{base}_ci95"] = bootstrap_ci(cr) if len(cr) > 2 else None
                rows.append(row)
                log(f"{w:16s} {m:9s} {p:18s} {row['images_per_s']:9.1f} img/s"
                    + "".join(f"  x{row[k]:.3f} (cpu x{row['cpu_' + k]:.3f}"
                              + (" [{:.3f}, {:.3f}]".format(*row['cpu_' + k + '_ci95'])
                                 if row.get('cpu_' + k + '_ci95') else "") + f") vs {k[9:]}"
                              for k in ("ratio_to_naive", "ratio_to_fastmix") if k in row), flush=True)
    return rows


def markdown(env: dict, rows: list[dict]) -> str:
    out = [f"Training-step throughput on {env['device']} ({env['cpu']}), torch {env['torch']}, "
           f"{env['threads']} thread(s), {env['date']}, load average {env['load_average']}. Ratios: "
           f"median over interleaved rounds of the per-round time ratio (higher is faster).\n",
           "Wall-clock ratio first, then the CPU-time ratio (process time, one thread) with its 95% "
           "bootstrap interval in brackets.\n",
           "| workload | method | provider | batch | images/s | vs naive | vs fastmix fp32 |",
           "|---|---|---|---:|---:|---:|---:|"]

    def f(r, k):
        if k not in r:
            return "-"
        ci = r.get(f"cpu_{k}_ci95")
        ci = f", {ci[0]:.3f}-{ci[1]:.3f}" if ci else ""
        return f"{r[k]:.3f}x ({r['cpu_' + k]:.3f}x{ci})"
    for r in rows:
        out.append(f"| {r['workload']} | {r['method']} | {r['provider']} | {r['batch']} | {r['images_per_s']:.1f} "
                   f"| {f(r, 'ratio_to_naive')} | {f(r, 'ratio_to_fastmix')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="first workload only, 3 rounds of 2 steps")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--providers", default="naive,fastmix", help=f"naive, naive-fusedsgd and any of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per provider per round")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: stable on a loaded machine)")
    ap.add_argument("--loaders", action="store_true", help="also time the device loader against a DataLoader")
    ap.add_argument("--name", default=None, help="result file stem (default train-<device>-<date>)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    workloads = a.workloads.split(",")[:1] if a.quick else a.workloads.split(",")
    rounds, steps = (3, 2) if a.quick else (a.rounds, a.steps)
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_steps(workloads, a.methods.split(","), a.providers.split(","), rounds, steps, tmp)
    payload = {**env, "rounds": rounds, "steps_per_round": steps, "train_steps": rows}
    if a.loaders:
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
        payload["loaders"] = loaders
    payload["load_average_after"] = os.getloadavg()
    os.makedirs(a.out, exist_ok=True)
    dev = "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in env["device"])
    stem = a.name or f"train-{dev}-{env['date'][:10]}"
    path = os.path.join(a.out, stem + ".json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(a.out, stem + ".md"), "w") as f:
        f.write(markdown(env, rows))
    print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
