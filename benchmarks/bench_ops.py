"""pytest-benchmark view of the ops benchmark (the same cases and providers as run.py).

    pytest benchmarks/bench_ops.py --benchmark-only --benchmark-group-by=param:op,param:size

These are measurements, never pass/fail checks; run.py writes the JSON and the table
with ratios to eager measured in one run.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ops_cases as C  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [(op, size, prov) for op, sizes in C.OPS.items() for size in sizes
         for prov in C.providers(DEVICE, with_compile=os.environ.get("FASTMIX_BENCH_COMPILE", "0") == "1")]


@pytest.mark.parametrize("op,size,provider", CASES, ids=[f"{o}-{s}-{p}" for o, s, p in CASES])
def test_bench_op(benchmark, op, size, provider):
    inp, nbytes = C.make_case(op, size, DEVICE)
    fn = C.make_fn(op, provider, inp)
    if DEVICE == "cuda":
        def run():
            fn()
            torch.cuda.synchronize()
    else:
        run = fn
    benchmark.extra_info.update(op=op, size=size, provider=provider, bytes=nbytes)
    benchmark(run)
