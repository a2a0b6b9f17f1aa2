"""Throughput of fastmix's PGD-10 against torchattacks.PGD-10 on the same model and batch.

Providers (each a PGD-10 L-inf attack, eps 8/255, alpha 2/255, random start):
    torchattacks            torchattacks.PGD, fp32, eager (the baseline)
    fastmix                 fastmix.attacks.PGD, fp32, eager
    fastmix-cl              fp32, channels-last inputs and a channels-last copy of the model
    fastmix-bf16            bf16 autocast
    fastmix-bf16-cl         bf16 autocast + channels-last
    fastmix-graph           (CUDA) fp32, the K-step loop captured in one CUDA graph
    fastmix-bf16-cl-graph   (CUDA) all three
Models: the small CNN (MNIST shape 1x28x28) and PreActResNet-18 (CIFAR shape 3x32x32),
from fastmix.models when present, else the local definitions below.

Each round runs every provider once, the order rotated per round (so drift in the
machine's speed hits all of them alike); images/s is the batch size over the median time of the rounds (and over the
best round: on a shared machine other processes only ever add time, so the minimum is the
steadier estimate), and the ratios to torchattacks are taken within the same run; the CPU-time
ratios (process time, medians of per-round ratios) are the steadier measure with one thread.

    python benchmarks/bench_attacks.py --device cpu --out benchmarks/results/
    pytest benchmarks/bench_attacks.py --benchmark-only      # pytest-benchmark, small CNN

Writes ``<out>/attacks-<device>-<date>.json`` (device, versions, date, shapes, precision,
images/s per provider, ratio to torchattacks) and the markdown table beside it (``.md``).
Timing is never a pass/fail condition.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastmix  # noqa: E402
import fastmix.attacks as A  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


# --------------------------------------------------------------------------------- models
class _SmallCNN(nn.Module):
    """Fallback small CNN: 3 conv-BN-ReLU (w, 2w, 4w; pooling after the last two), Linear(->128), Linear(->K)."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28, width=32):
        super().__init__()
        w = width
        cbr = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]  # noqa: E731
        self.body = nn.Sequential(*cbr(in_channels, w), *cbr(w, 2 * w), nn.MaxPool2d(2), *cbr(2 * w, 4 * w),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * w * (image_size // 4) ** 2, 128),
                                  nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        sc = self.short(o) if self.short is not None else x
        o = self.conv1(o)
        return self.conv2(torch.relu(self.bn2(o))) + sc


class _PreActResNet18(nn.Module):
    """Fallback PreActResNet-18 (He et al. 2016, CIFAR stem)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.head = nn.Linear(512, num_classes)

    def features(self, x):
        h = torch.relu(self.bn(self.layers(self.stem(x))))
        return h.mean(dim=(2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def build_model(name: str) -> tuple[nn.Module, tuple[int, int, int], str]:
    """(model in eval mode, per-sample input shape, where it came from)."""
    try:
        from fastmix.models import build
        if name == "cnn":
            return build("cnn", 10, 1, 28).eval(), (1, 28, 28), "fastmix.models"
        return build("preact18", 10, 3, 32).eval(), (3, 32, 32), "fastmix.models"
    except ImportError:
        if name == "cnn":
            return _SmallCNN().eval(), (1, 28, 28), "local"
        return _PreActResNet18().eval(), (3, 32, 32), "local"


# ------------------------------------------------------------------------------ providers
def providers(model: nn.Module, device: str) -> dict:
    """name -> (callable(images, labels), precision, channels_last, cuda_graph)."""
    out = {}
    try:
        import torchattacks
        out["torchattacks"] = (torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS), "fp32", False, False)
    except ImportError:
        print("torchattacks is not installed: no baseline, ratios omitted", file=sys.stderr)
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants = [("fastmix", model, None, False, False), ("fastmix-cl", cl_model, None, True, False),
                ("fastmix-bf16", model, "bf16", False, False), ("fastmix-bf16-cl", cl_model, "bf16", True, False)]
    if device == "cuda":
        variants += [("fastmix-graph", model, None, False, True),
                     ("fastmix-bf16-cl-graph", cl_model, "bf16", True, True)]
    variants += [("fastmix-fold", model, None, False, False, True),
                 ("fastmix-bf16-cl-fold", cl_model, "bf16", True, False, True)]
    if device == "cuda":
        variants += [("fastmix-bf16-cl-graph-fold", cl_model, "bf16", True, True, True)]
    for name, m, amp, cl, graph, *f in variants:
        kw = {"fold_bn": True} if f else {}
        atk = A.PGD(m, eps=EPS, alpha=ALPHA, steps=STEPS, autocast=amp, channels_last=cl, cuda_graph=graph, **kw)
        out[name] = (atk, amp or "fp32", cl, graph)
    return out


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from a fresh BN's identity map (as a
    trained model has), so that folding them changes the arithmetic measurably."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def fold_differences(provs: dict, x, y) -> dict:
    """Per folded provider: the largest |x_adv(folded) - x_adv(unfolded)| and the share of
    pixels that differ, same seed, against the unfolded provider of the same settings."""
    out = {}
    for name, (atk, *_rest) in provs.items():
        if not name.endswith("-fold") or "graph" in name:  # a graph replays its own RNG offsets
            continue
        base = name[:-len("-fold")]
        if base not in provs:
            continue
        torch.manual_seed(123)
        a = provs[base][0](x, y)
        torch.manual_seed(123)
        b = atk(x, y)
        d = (a.float() - b.float()).abs()
        out[name] = {"max_abs_diff": float(d.max()), "share_differing": float((d > 0).float().mean()),
                     "vs": base}
    return out


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model_name: str, batch: int, device: str, rounds: int, only=None) -> list[dict]:
    torch.manual_seed(0)
    model, shape, origin = build_model(model_name)
    model = randomise_bn(model).to(device)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    provs = providers(model, device)
    if only:
        provs = {k: v for k, v in provs.items() if k in only or k == "torchattacks"}
    times = {k: [] for k in provs}
    cpu = {k: [] for k in provs}
    for name, (atk, *_rest) in provs.items():  # warm-up (and CUDA-graph capture)
        atk(x, y)
    _sync(device)
    names = list(provs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated each round
            atk = provs[name][0]
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            atk(x, y)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    base = times.get("torchattacks")
    diffs = fold_differences(provs, x, y)
    rows = []
    for name, (atk, precision, cl, graph) in provs.items():
        med, best = statistics.median(times[name]), min(times[name])
        rows.append(dict(model=model_name, model_source=origin, batch=batch, shape=[batch, *shape], steps=STEPS,
                         provider=name, precision=precision, channels_last=cl, cuda_graph=graph,
                         median_s=med, best_s=best, times_s=times[name],
                         images_per_s=batch / med, images_per_s_best=batch / best,
                         ratio_vs_torchattacks=statistics.median(base) / med if base else None,
                         ratio_best_vs_torchattacks=min(base) / best if base else None,
                         cpu_times_s=cpu[name],
                         cpu_ratio_vs_fastmix=(statistics.median(a / b for a, b in zip(cpu["fastmix"], cpu[name]))
                                               if "fastmix" in cpu else None),
                         cpu_ratio_vs_torchattacks=(statistics.median(a / b for a, b in
                                                                      zip(cpu["torchattacks"], cpu[name]))
                                                    if "torchattacks" in cpu else None),
                         fold=diffs.get(name)))
    return rows


def environment(device: str) -> dict:
    try:
        import torchattacks
        ta = torchattacks.__version__
    except ImportError:
        ta = None
    name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    return dict(device=device, device_name=name, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                python=platform.python_version(), torch=torch.__version__, torchattacks=ta,
                fastmix=fastmix.__version__, backend=fastmix.ops.pick_backend(device),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"PGD-{STEPS} throughput on {env['device']} ({env['device_name']}, {env['threads']} threads), "
             f"torch {env['torch']}, torchattacks {env['torchattacks']}, {env['date']}",
             "", "| model | batch | provider | precision | channels-last | graph | images/s (median) | "
                 "vs torchattacks | images/s (best) | vs torchattacks (best) | CPU-time ratio vs torchattacks | "
                 "vs fastmix |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731
    for r in rows:
        if r.get("fold"):
            f = r["fold"]
            r = dict(r, provider=f"{r['provider']} (max diff vs {f['vs']} {f['max_abs_diff']:.3g}, "
                                 f"{100 * f['share_differing']:.2f}% of pixels)")
        lines.append(f"| {r['model']} | {r['batch']} | {r['provider']} | {r['precision']} | "
                     f"{'yes' if r['channels_last'] else 'no'} | {'yes' if r['cuda_graph'] else 'no'} | "
                     f"{r['images_per_s']:.2f} | {fmt(r['ratio_vs_torchattacks'])} | "
                     f"{r['images_per_s_best']:.2f} | {fmt(r['ratio_best_vs_torchattacks'])} | "
                     f"{fmt(r.get('cpu_ratio_vs_torchattacks'))} | {fmt(r.get('cpu_ratio_vs_fastmix'))} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--models", default="cnn,preact18")
    ap.add_argument("--batch-cnn", type=int, default=None, help="default: 128 (cpu), 512 (cuda)")
    ap.add_argument("--batch-resnet", type=int, default=None, help="default: 32 (cpu), 256 (cuda)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default: 5 cpu, 20 cuda)")
    ap.add_argument("--providers", default=None, help="comma-separated subset (torchattacks always runs)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device == "cuda"
    rounds = args.rounds or (20 if gpu else 5)
    batches = {"cnn": args.batch_cnn or (512 if gpu else 128), "preact18": args.batch_resnet or (256 if gpu else 32)}
    only = set(args.providers.split(",")) if args.providers else None
    env = environment(args.device)
    rows = []
    for m in args.models.split(","):
        rows += measure(m, batches[m], args.device, rounds, only)
        print(markdown(env, [r for r in rows if r["model"] == m]).split("\n", 2)[-1], flush=True)
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"attacks-{args.device}-{stamp}")
    with open(path + ".json", "w") as f:
        json.dump(dict(env, eps=EPS, alpha=ALPHA, steps=STEPS, results=rows), f, indent=1)
    table = markdown(env, rows)
    with open(path + ".md", "w") as f:
        f.write(table + "\n")
    print()
    print(table)
    print(f"\nwritten: {path}.json, {path}.md")


# ------------------------------------------------------------ pytest-benchmark (cheap)
def _small_case():
    torch.manual_seed(0)
    model, shape, _ = build_model("cnn")
    return model, torch.rand(64, *shape), torch.randint(0, 10, (64,))


def test_bench_pgd10_torchattacks(benchmark):
    import pytest
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = _small_case()
    benchmark(torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS), x, y)


def test_bench_pgd10_fastmix(benchmark):
    model, x, y = _small_case()
    benchmark(A.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS), x, y)


if __name__ == "__main__":
    main()
