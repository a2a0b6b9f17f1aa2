"""Benchmark runner: times every op x provider x shape in one process and writes
``benchmarks/results/<device>-<date>.json`` plus a markdown table (``.md``) with each
provider's ratio to eager measured in the same run.

    python benchmarks/run.py                      # every op, every shape, this machine
    python benchmarks/run.py --quick              # B=512 and C in (10, 1000) only
    python benchmarks/run.py --ops pgd_step --no-compile
    python benchmarks/run.py --quick --rounds 5    # median of 5 interleaved rounds (loaded machine)

Providers (benchmarks/ops_cases.py): ``default`` is the public call as a user writes it
(no backend named, default checks), beside each backend's public call, the raw
registered op, the eager formula (the baseline of every ratio) and torch.compile of
the reference. With ``--rounds N`` every provider of a shape is timed once per round,
the rounds interleaved, and the median of the N is kept: on a shared machine the
load then hits all providers alike.

On CUDA the timer is CUDA events (median of repeats after warm-up) and each kernel's
achieved bandwidth is given as a share of the measured device-to-device copy
bandwidth; on CPU it is torch.utils.benchmark's blocked_autorange (median).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import ops_cases as C  # noqa: E402


def device_name(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu-{os.cpu_count()}core"
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                name = f"cpu-{os.cpu_count()}core-" + m.group(1)
        except OSError:
            pass
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


_MIN_TIME = 0.3


def time_fn(fn, device: str, min_time: float | None = None) -> float:
    """Median seconds per call."""
    min_time = _MIN_TIME if min_time is None else min_time
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(10):
                fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e) / 1e3 / 10)
        return statistics.median(times)
    import torch.utils.benchmark as tb
    m = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_time)
    return m.median


def copy_bandwidth(device: str) -> float:
    """Measured bytes/s of a large device-to-device copy (read + write)."""
    n = (256 << 20) // 4 if device == "cuda" else (64 << 20) // 4
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device)
    return 2 * src.numel() * src.element_size() / t


def run(ops, device, dtype, quick, with_compile, rounds=1):
    results = []
    bw = copy_bandwidth(device)
    print(f"# device {device_name(device)}; copy bandwidth {bw / 1e9:.1f} GB/s", flush=True)
    for op, sizes in ops.items():
        if quick:
            sizes = (512,) if op in ("pgd_step", "mix") else (10, 1000)
        for size in sizes:
            inp, nbytes = C.make_case(op, size, device, dtype)
            row = {"op": op, "shape": _shape(op, size), "dtype": str(dtype).replace("torch.", ""),
                   "bytes": nbytes, "rounds": rounds, "providers": {}}
            fns, times = {}, {}
            for prov in C.providers(device, with_compile):
                try:
                    fns[prov] = C.make_fn(op, prov, inp)
                    fns[prov]()
                except Exception as e:  # a provider that fails is reported, not fatal
                    row["providers"][prov] = {"error": f"{type(e).__name__}: {e}"[:300]}
            for _ in range(rounds):
                for prov, fn in fns.items():
                    times.setdefault(prov, []).append(time_fn(fn, device))
            for prov, ts in times.items():
                t = statistics.median(ts)
                row["providers"][prov] = {"ms": t * 1e3, "GBps": nbytes / t / 1e9,
                                          "share_of_copy_bw": nbytes / t / bw,
                                          "ms_rounds": [round(v * 1e3, 4) for v in ts]}
            base = row["providers"].get("eager", {}).get("ms")
            for p in row["providers"].values():
                if "ms" in p and base:
                    p["ratio_to_eager"] = base / p["ms"]
            results.append(row)
            print(_line(row), flush=True)
    return {"copy_bandwidth_GBps": bw / 1e9, "results": results}


def _shape(op, size):
    return f"{size}x3x32x32" if op in ("pgd_step", "mix") else f"{C.LOGIT_BATCH}x{size}"



def _line(row):
    parts = [f"{row['op']} {row['shape']}"]
    for p, v in row["providers"].items():
        parts.append(f"{p}: " + (f"{v['ms']:.3f} ms ({v.get('ratio_to_eager', 0):.2f}x)" if "ms" in v else "error"))
    return " | ".join(parts)


def markdown(payload) -> str:
    provs = []
    for r in payload["results"]:
        for p in r["providers"]:
            if p not in provs:
                provs.append(p)
    lines = [f"# fastmix ops benchmark: {payload['device']} ({payload['date']})", "",
             f"torch {payload['torch']}, triton {payload['triton']}, dtype {payload['dtype']}; "
             f"copy bandwidth {payload['copy_bandwidth_GBps']:.1f} GB/s. Cells: median ms per call "
             f"(ratio to eager in this run; share of copy bandwidth); median of {payload.get('rounds', 1)} "
             f"interleaved round(s). Losses are forward + backward. `default` is the public call with "
             f"its defaults (no backend named, default checks); `raw-*` the registered op on kernel-form "
             f"arguments.", "",
             "| op | shape | " + " | ".join(provs) + " |", "|---|---|" + "---|" * len(provs)]
    for r in payload["results"]:
        cells = []
        for p in provs:
            v = r["providers"].get(p)
            if not v or "ms" not in v:
                cells.append("-" if not v else "error")
            else:
                cells.append(f"{v['ms']:.3f} ({v.get('ratio_to_eager', float('nan')):.2f}x; "
                             f"{100 * v['share_of_copy_bw']:.0f}%)")
        lines.append(f"| {r['op']} | {r['shape']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--ops", default=",".join(C.OPS), help="comma-separated subset of " + ",".join(C.OPS))
    ap.add_argument("--quick", action="store_true", help="B=512 and C in (10, 1000) only")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per shape; the median is kept")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement (CPU)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    ops = {}
    for o in args.ops.split(","):
        if o not in C.OPS:
            ap.error(f"--ops: unknown op {o!r}; choose from {', '.join(C.OPS)}")
        ops[o] = C.OPS[o]
    dtype = getattr(torch, args.dtype)
    global _MIN_TIME
    _MIN_TIME = args.min_time
    payload = run(ops, args.device, dtype, args.quick, not args.no_compile, rounds=max(1, args.rounds))
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = None
    payload.update(device=device_name(args.device), date=_dt.date.today().isoformat(), torch=torch.__version__,
                   triton=tv, python=platform.python_version(), dtype=args.dtype,
                   threads=torch.get_num_threads(), quick=args.quick, rounds=max(1, args.rounds))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{payload['device']}-{payload['date']}" + ("" if args.dtype == "float32" else f"-{args.dtype}"))
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    md = markdown(payload)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
