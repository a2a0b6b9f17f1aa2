"""Compile-time check of the CUDA kernels' floating-point instructions (issues 11.6, 17.5, 17.7).

Reads the PTX that ``scripts/check_cuda_compile.sh`` keeps (``nvcc -keep``) and checks,
kernel by kernel (``.entry``):

* no flush-to-zero anywhere (``.ftz``: a subnormal gradient would get sign 0 and no step,
  where torch.sign gives +-1), no approximate instruction (``.approx``: ``rcp``, ``sqrt``,
  ``div.full``, ``lg2``, ``ex2``...), with one written-out exception: the soft-CE kernels
  use the accurate ``expf``, whose libdevice body evaluates ``ex2.approx.ftz.f32`` on its
  range-reduced argument (never subnormal there; the result has 2 ulp max error), so
  ``ex2.approx.ftz.f32`` is allowed in kernels whose name contains ``soft_ce``;
* the L2 kernels compute their norms and divisions with ``sqrt.rn.f32`` / ``div.rn.f32``,
  the rounding of Triton's ``sqrt_rn`` / ``div_rn``;
* no kernel has a local-memory stack frame (``.local``: the printf of an assert or a
  local array would put one in every kernel that has it);
* the kernels whose results are bitwise equal to the C++ kernels and the torch
  reference (the L-inf step and start, mix) contain no fused multiply-add (``fma``):
  their additions and multiplications are the never-contracted ``add.rn`` / ``mul.rn``.

Usage: ``python csrc/ptx_rules.py FILE.ptx...`` (exit 1 and one line per violation).
"""
from __future__ import annotations

import re
import sys
from collections import Counter

ALLOWED_APPROX = {"soft_ce": {"ex2.approx.ftz.f32"}}
L2_KERNELS = ("pgd_l2_kernel", "pgd_l2_offset_partial_kernel", "pgd_l2_apply_kernel", "random_start_l2_kernel",
              "random_start_l2_apply_kernel")
NO_FMA_KERNELS = ("pgd_linf_kernel", "random_start_linf_kernel", "mix_kernel")

_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)*\.entry\s+([\w$]+)\s*\(")


def kernels(ptx: str) -> dict[str, Counter]:
    """Opcode counts per ``.entry`` (kernel) of a PTX text; device functions that were not
    inlined are attributed to the kernel whose body follows them (there are none here)."""
    out: dict[str, Counter] = {}
    cur = None
    for line in ptx.splitlines():
        m = _ENTRY.match(line)
        if m:
            cur = out.setdefault(m.group(1), Counter())
            continue
        if cur is None:
            continue
        t = line.strip()
        if t.startswith(".local"):  # a stack frame (__local_depot): printf, local arrays
            cur[".local"] += 1
            continue
        if not t or t.startswith(("//", ".", "{", "}", ")")) or t.endswith(":"):
            continue
        words = t.split()
        op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
        cur[op.rstrip(";")] += 1
    return out


def short_name(mangled: str) -> str:
    """The kernel's own name inside an Itanium-mangled fastmix symbol (for messages)."""
    for name in sorted(set(L2_KERNELS + NO_FMA_KERNELS) | {"soft_ce_fwd_kernel", "soft_ce_bwd_kernel",
                                                           "cw_margin_fwd_kernel", "cw_margin_bwd_kernel",
                                                           "l2_sumsq_partial_kernel"}, key=len, reverse=True):
        if name in mangled:
            return name
    return mangled


def violations(ptx: str, where: str = "") -> list[str]:
    bad = []
    ks = kernels(ptx)
    if not ks:
        return [f"{where}: no kernels found"]
    for mangled, ops in ks.items():
        name = short_name(mangled)
        allowed = set().union(*(v for k, v in ALLOWED_APPROX.items() if k in mangled))
        for op, n in ops.items():
            parts = op.split(".")
            if ("approx" in parts or "ftz" in parts) and op not in allowed:
                bad.append(f"{where}: {name}: {n} x {op} (approximate / flush-to-zero)")
        if ops[".local"]:
            bad.append(f"{where}: {name}: a local-memory stack frame (.local; e.g. a printf in an assert)")
        if name in L2_KERNELS:
            for need in ("sqrt.rn.f32", "div.rn.f32"):
                if ops[need] == 0:
                    bad.append(f"{where}: {name}: no {need} (the L2 rule needs IEEE-rounded sqrt and division)")
        if name in NO_FMA_KERNELS:
            fma = sum(n for op, n in ops.items() if op.startswith("fma.") and op.endswith("f32"))
            if fma:
                bad.append(f"{where}: {name}: {fma} x fma.f32 (its float ops must not be contracted)")
    return bad


def main(paths: list[str]) -> int:
    bad = []
    n = 0
    for p in paths:
        with open(p) as f:
            text = f.read()
        n += len(kernels(text))
        bad += violations(text, p)
    for b in bad:
        print("ptx_rules:", b)
    print(f"ptx_rules: {n} kernels in {len(paths)} PTX files, {len(bad)} violations")
    return 1 if bad or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
