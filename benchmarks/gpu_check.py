"""The prepared GPU run (issue 15 item 3, with issue 17's sanitizer passes): everything the
GPU work needs, in one device call of at most 8 minutes, results under ``--out``.

    bash scripts/gpu_check.sh             # on the GPU machine ($OUT set by the device tool)
    bash scripts/gpu_check.sh --dry-run   # here, on the CPU, at tiny sizes (what CI runs)

Phases, in order (each with a time cap; a phase that would pass the overall budget is
skipped and says so; the JSON is rewritten after every phase, so a run cut short still
returns what it measured):

1. ``env``       GPU, driver, torch/triton/python versions, multiprocessor count.
2. ``build``     the extension for sm_90 with PTX (``TORCH_CUDA_ARCH_LIST="9.0+PTX"``),
                 then ``cuobjdump --list-elf/--list-ptx`` of the built object.
3. ``tests``     the op, dispatch, attack (CUDA-graph capture included) and BN-folding
                 tests with every backend present (CUDA, Triton, C++, torch), and a trainer
                 smoke run (bf16 + channels-last + fold_bn + graphs on digits).
4. ``sanitizer`` ``compute-sanitizer --tool memcheck`` over the CUDA op tests;
                 ``racecheck`` and ``synccheck`` over the L2 PGD step (block-per-sample and
                 split paths) and the block-per-row soft-CE / CW kernels (C = 5000).
5. ``ceilings``  device-to-device copy bandwidth (bytes read + written) and a large bf16
                 matmul (random data).
6. ``ops``       every op on every backend against eager and torch.compile
                 (``benchmarks/run.py --quick``: share of the measured copy bandwidth).
7. ``pgd``       PGD-10 on PreActResNet-18 at batch 512 against torchattacks' PGD-10: fp32
                 eager and bf16 + channels-last + CUDA graph (+ BN folding).
8. ``train``     one training step of every method at batch 512 on CIFAR-shaped data,
                 eager fp32 against the fast path (bf16 + channels-last + BN folding +
                 attack graphs; and fp32 without the default BN folding), images/s and the
                 implied seconds per 50,000-image epoch.
9. ``mi``        Mixup Inference (OL, N = 30) on 10,000 CIFAR-shaped images.

Writes ``gpu_check.json`` (everything), ``gpu_check.md`` (the summary tables with the
issue's goals) and ``gpu_check.log`` (the subprocesses' output) under ``--out``. Exit
status 0 when every phase that ran passed (skipped phases are reported, not failures).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# Phase caps in seconds (GPU run). They add up to more than the budget on purpose: the
# early phases usually finish well under their caps; whatever is left goes to the rest.
CAPS = {"env": 20, "build": 180, "tests": 110, "sanitizer": 80, "ceilings": 15, "ops": 60,
        "pgd": 50, "train": 110, "mi": 30}
DRY_CAPS = {k: 240 for k in CAPS}
TEST_FILES = ["tests/test_ops.py", "tests/test_ops_errors.py", "tests/test_dispatch.py", "tests/test_attacks.py",
              "tests/test_fold.py"]
GOALS = {"pgd_ratio": 5.0, "copy_share": 0.85, "epoch_s": 8.0}


class Check:
    def __init__(self, out: str, dry: bool, budget: float):
        self.out, self.dry, self.budget = out, dry, budget
        self.t0 = time.perf_counter()
        self.report = {"dry_run": dry, "budget_s": budget, "started": _now(), "phases": {}}
        self.log_path = os.path.join(out, "gpu_check.log")
        self.python = sys.executable
        open(self.log_path, "w").close()

    # ------------------------------------------------------------------ plumbing
    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def log(self, msg: str, **_print_kw) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def sh(self, cmd, timeout: float, env=None, name="") -> dict:
        """Run a command, its output appended to the log; returns rc, seconds, tail."""
        t = time.perf_counter()
        full_env = dict(os.environ, **(env or {}))
        self.log(f"$ {' '.join(cmd) if isinstance(cmd, list) else cmd}  (timeout {timeout:.0f}s)")
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                               timeout=max(1.0, timeout), shell=isinstance(cmd, str))
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc = 124
            out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) + \
                  ((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
            out += f"\n[timed out after {timeout:.0f}s]"
        except FileNotFoundError as e:
            rc, out = 127, str(e)
        with open(self.log_path, "a") as f:
            f.write(out if out.endswith("\n") else out + "\n")
        return {"cmd": cmd if isinstance(cmd, str) else " ".join(cmd), "rc": rc,
                "seconds": round(time.perf_counter() - t, 2), "tail": out[-1500:]}

    def phase(self, name: str, fn) -> None:
        cap = (DRY_CAPS if self.dry else CAPS)[name]
        left = self.left()
        if left < 5:
            self.report["phases"][name] = {"status": "skipped", "why": f"time box: {left:.0f}s of the budget left"}
            self.log(f"== {name}: skipped (budget)")
            self.save()
            return
        limit = min(cap, left - 2)
        self.log(f"== {name} (up to {limit:.0f}s)")
        t = time.perf_counter()
        try:
            res = fn(limit) or {}
            status = res.pop("status", "ok")
        except Exception as e:  # a failing phase is reported; the others still run
            res, status = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}, "failed"
            self.log(f"   {name} failed: {type(e).__name__}: {e}")
        res.update(status=status, seconds=round(time.perf_counter() - t, 2))
        self.report["phases"][name] = res
        self.log(f"   {name}: {status} in {res['seconds']:.1f}s")
        self.save()

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        with open(os.path.join(self.out, "gpu_check.json"), "w") as f:
            json.dump(self.report, f, indent=1, default=str)
        with open(os.path.join(self.out, "gpu_check.md"), "w") as f:
            f.write(markdown(self.report))

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    # -------------------------------------------------------------------- phases
    def env(self, limit):
        import torch
        info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "cpu_count": os.cpu_count(), "machine": platform.machine()}
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
        try:
            import torchattacks
            info["torchattacks"] = torchattacks.__version__
        except ImportError:
            info["torchattacks"] = None
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(gpu=p.name, sm_count=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                        memory_GiB=round(p.total_memory / 2 ** 30, 1))
            smi = self.sh(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu",
                           "--format=csv,noheader"], min(limit, 15))
            info["nvidia_smi"] = smi["tail"].strip()
        elif not self.dry:
            return {"status": "failed", "error": "torch sees no GPU (use --dry-run on a CPU machine)", **info}
        self.report["env"] = info
        return info

    def build(self, limit):
        res = {}
        if self.dry:
            res["note"] = "dry run: the CPU build is CI's own step; the sm_90 build runs on the GPU machine only"
        else:
            env = {"TORCH_CUDA_ARCH_LIST": "9.0+PTX", "FASTMIX_CUDA_ARCH": "9.0+PTX",
                   "MAX_JOBS": str(os.cpu_count() or 8)}
            b = self.sh([self.python, "setup.py", "build_ext", "--inplace", "-q"], limit - 10, env=env)
            res["build"] = b
            if b["rc"] != 0:
                return {"status": "failed", **res}
        so = sorted(glob.glob(os.path.join(ROOT, "fastmix", "_C*.so")))
        res["object"] = [os.path.basename(s) for s in so]
        tool = shutil.which("cuobjdump") or ("/usr/local/cuda/bin/cuobjdump"
                                             if os.path.exists("/usr/local/cuda/bin/cuobjdump") else None)
        if so and tool and not self.dry:
            res["list_elf"] = self.sh([tool, "--list-elf", so[0]], 20)["tail"].strip()
            res["list_ptx"] = self.sh([tool, "--list-ptx", so[0]], 20)["tail"].strip()
        info = self.sh([self.python, "-m", "fastmix.info"], 90)
        res["fastmix_info"] = info["tail"].strip()
        if not so:
            return {"status": "failed", "error": "no fastmix/_C*.so: build the extension first", **res}
        return res

    def tests(self, limit):
        import xml.etree.ElementTree as ET
        junit = os.path.join(tempfile.mkdtemp(), "junit.xml")
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--junitxml={junit}"]
        if self.dry:  # the CI suite runs these files in full; here: that they collect with this command
            cmd.append("--collect-only")
        else:
            try:
                import xdist  # noqa: F401
                cmd += ["-n", "8"]
            except ImportError:
                pass
        r = self.sh(cmd + TEST_FILES, limit * 0.75)
        res = {"pytest": r}
        if os.path.exists(junit) and not self.dry:
            root = ET.parse(junit).getroot()
            suite = root if root.tag == "testsuite" else root.find("testsuite")
            res["counts"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        res["smoke"] = self.trainer_smoke()
        ok = r["rc"] == 0 and res["smoke"].get("ok")
        return {"status": "ok" if ok else "failed", **res}

    def trainer_smoke(self) -> dict:
        """One short training run on digits through fit(): every fast path on at once."""
        import torch
        from fastmix import data
        from fastmix.train import TrainConfig, Trainer
        cuda = not self.dry
        cfg = TrainConfig(dataset="digits", method="at", epochs=1, batch_size=64, eps=0.2, steps=3, eval_steps=3,
                          eval_samples=128, progress=False, out=tempfile.mkdtemp(), device="cuda" if cuda else "cpu",
                          amp="bf16", channels_last=True, fold_bn=True, compile="graphs" if cuda else "none",
                          model_opts={"width": 16})
        with _warnings_off():
            t = Trainer(cfg, data.load("digits"))
            hist = t.fit()
        row = hist[-1]
        return {"ok": bool(torch.isfinite(torch.tensor(row["train_loss"]))) and row["pgd_acc"] is not None,
                "metrics": {k: row[k] for k in ("train_loss", "clean_acc", "pgd_acc", "seconds", "images_per_s")}}

    def sanitizer(self, limit):
        res = {}
        if self.dry:
            res["note"] = "dry run: compute-sanitizer needs the GPU; the kernel workload runs on the CPU instead"
            res["workload"] = kernel_workload("cpu", tiny=True)
            return res
        tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
        per = limit / 3
        mem = [tool, "--tool", "memcheck", "--error-exitcode", "9", "--print-limit", "20",
               self.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_ops.py",
               "-k", "cuda"]
        res["memcheck"] = self.sh(mem, per * 1.4)
        kern = [self.python, os.path.join(HERE, "gpu_check.py"), "--kernels-only"]
        for t in ("racecheck", "synccheck"):
            res[t] = self.sh([tool, "--tool", t, "--error-exitcode", "9", "--print-limit", "20"] + kern, per * 0.8)
        runs = {k: v["rc"] for k, v in res.items() if isinstance(v, dict) and "rc" in v}
        bad = {k: rc for k, rc in runs.items() if rc not in (0, 124)}
        cut = [k for k, rc in runs.items() if rc == 124]  # ran out of its share of the box: incomplete, not a finding
        status = "failed" if bad else ("partial" if cut else "ok")
        return {"status": status, "nonzero": bad, "timed_out": cut, **res}

    def ceilings(self, limit):
        return measure_ceilings(self.device, tiny=self.dry)

    def ops(self, limit):
        tmp = tempfile.mkdtemp()
        cmd = [self.python, os.path.join(HERE, "run.py"), "--device", self.device, "--quick", "--out", tmp]
        if self.dry:
            cmd += ["--no-compile", "--ops", "pgd_step,mix"]
        r = self.sh(cmd, limit)
        res = {"run": r}
        js = sorted(glob.glob(os.path.join(tmp, "*.json")))
        if js:
            with open(js[0]) as f:
                res["payload"] = json.load(f)
        return {"status": "ok" if r["rc"] == 0 and js else "failed", **res}

    def pgd(self, limit):
        import bench_attacks as BA
        model, batch, rounds = ("cnn", 4, 1) if self.dry else ("preact18", 512, 10)
        only = {"fastmix", "fastmix-bf16-cl", "fastmix-bf16-cl-graph", "fastmix-bf16-cl-graph-fold",
                "fastmix-fold", "fastmix-bf16-cl-fold"}
        rows = BA.measure(model, batch, self.device, rounds, only)
        return {"model": model, "batch": batch, "rows": rows}

    def train(self, limit):
        import bench_train as BT
        if self.dry:
            BT.WORKLOADS["gpucheck"] = dict(shape=(3, 16), n=64, model="preact18", model_opts={"width": 4},
                                            batch=8, eps=8 / 255)
            rounds, steps = 1, 1
        else:
            BT.WORKLOADS["gpucheck"] = dict(shape=(3, 32), n=4096, model="preact18", model_opts={}, batch=512,
                                            eps=8 / 255)
            rounds, steps = 3, 2
        BT.VARIANTS["fastmix-fast"] = {"amp": "bf16", "channels_last": True, "_attack_graphs": not self.dry}
        methods = list(BT.METHODS) + ["iat-manifold", "gif"]  # "at" early: its epoch time is a goal
        with tempfile.TemporaryDirectory() as tmp, _warnings_off():
            provs = ["fastmix", "fastmix-fast"] if self.dry else ["fastmix-nofold", "fastmix", "fastmix-fast"]
            rows = BT.run_steps(["gpucheck"], methods, provs, rounds, steps, tmp, log=self.log)
        for r in rows:
            r["seconds_per_50k_epoch"] = 50000 / r["images_per_s"]
        done = sorted({r["method"] for r in rows})
        res = {"batch": BT.WORKLOADS["gpucheck"]["batch"], "rows": rows}
        if len(done) < len(methods):
            res.update(status="partial", why=f"time box: {len(done)} of {len(methods)} methods measured")
        return res

    def mi(self, limit):
        import torch
        from fastmix import models
        from fastmix.methods.mixup_inference import MixupInference
        n_img, pool, width = (32, 64, 4) if self.dry else (10000, 1000, 64)
        torch.manual_seed(0)
        dev = self.device
        model = models.build("preact18", 10, 3, 32, width=width).to(dev).eval()
        x = torch.rand(n_img, 3, 32, 32, device=dev)
        px, py = torch.rand(pool, 3, 32, 32, device=dev), torch.arange(pool, device=dev) % 10
        mi = MixupInference(model, px, py, mode="ol", n=30)
        bs = 16 if self.dry else 500
        mi(x[:bs])
        _sync(dev)
        t = time.perf_counter()
        for s in range(0, n_img, bs):
            mi(x[s:s + bs])
        _sync(dev)
        sec = time.perf_counter() - t
        return {"images": n_img, "n": 30, "batch": bs, "seconds": sec, "images_per_s": n_img / sec,
                "forwards_per_s": 30 * n_img / sec}

    def run(self, phases) -> int:
        for name in phases:
            self.phase(name, getattr(self, name))
        self.report["finished"] = _now()
        self.save()
        failed = [k for k, v in self.report["phases"].items() if v.get("status") == "failed"]
        self.log(f"done in {self.report['elapsed_s']:.1f}s; failed: {failed or 'none'}")
        print(markdown(self.report))
        return 1 if failed else 0


# ------------------------------------------------------------------------ helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sync(dev) -> None:
    import torch
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


class _warnings_off:
    def __enter__(self):
        import warnings
        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        return self._c.__exit__(*a)


def measure_ceilings(device: str, tiny: bool = False) -> dict:
    """Device-to-device copy bandwidth (bytes read + written over the time) and bf16 matmul
    TFLOP/s on random data; medians over repeats after a warm-up."""
    import torch
    n_bytes = (8 << 20) if tiny else (2 << 30)
    a = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    copy = _median_time(lambda: b.copy_(a), device, 3 if tiny else 20)
    m = 256 if tiny else 8192
    dt = torch.float32 if (tiny and device == "cpu") else torch.bfloat16
    x = torch.randn(m, m, device=device, dtype=dt)
    y = torch.randn(m, m, device=device, dtype=dt)
    mm = _median_time(lambda: x @ y, device, 3 if tiny else 10)
    return {"copy_bytes": 2 * n_bytes, "copy_s": copy, "copy_GBps": 2 * n_bytes / copy / 1e9,
            "matmul": f"{m}x{m}x{m} {str(dt).replace('torch.', '')}", "matmul_s": mm,
            "matmul_TFLOPs": 2 * m ** 3 / mm / 1e12}


def _median_time(fn, device, reps: int, warmup: int = 3) -> float:
    import torch
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(reps):
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def kernel_workload(device: str, tiny: bool = False) -> dict:
    """The kernels racecheck/synccheck look at, on every compiled backend of ``device``:
    the L2 PGD step with one block per sample (B >= the multiprocessor count) and split
    across blocks (B small, D large), and soft-CE / CW forward + backward with C = 5000
    (one block per row). Each result is compared with the torch reference."""
    import torch
    import fastmix.ops as fops
    out = {}
    backs = [b for b in fops.available_backends(device) if b != "torch"]
    l2_shapes = [(4, 3, 8, 8), (2, 3, 24, 24)] if tiny else [(264, 3, 32, 32), (16, 3, 224, 224)]
    C, B = (300, 4) if tiny else (5000, 64)
    g = torch.Generator(device=device).manual_seed(0)
    for bk in backs:
        for shape in l2_shapes:
            x = torch.rand(shape, device=device, generator=g)
            grad = torch.randn(shape, device=device, generator=g)
            xn = x.clone()
            got = fops.pgd_step(x, grad, xn, 0.5, 0.1, norm="l2", backend=bk, check=False)
            ref = fops.pgd_step_ref(x, grad, xn, torch.full((shape[0],), 0.5, device=device),
                                    torch.full((shape[0],), 0.1, device=device), norm="l2")
            out[f"{bk}:pgd_l2:{'x'.join(map(str, shape))}"] = float((got - ref).abs().max())
        z = torch.randn(B, C, device=device, generator=g).requires_grad_(True)
        y = torch.randint(0, C, (B,), device=device, generator=g)
        for name, fn, ref_fn in (("soft_ce", lambda t: fops.soft_cross_entropy(t, y, backend=bk, check=False),
                                  lambda t: fops.soft_cross_entropy_ref(t, y, y, *(torch.ones(B, device=device),) * 3,
                                                                        "mean")),
                                 ("cw", lambda t: fops.cw_margin(t, y, backend=bk, check=False),
                                  lambda t: fops.cw_margin_ref(t, y))):
            v = fn(z)
            (gz,) = torch.autograd.grad(v, z)
            vr = ref_fn(z)
            (gr,) = torch.autograd.grad(vr, z)
            out[f"{bk}:{name}:{B}x{C}"] = max(float((v - vr).detach().abs()), float((gz - gr).abs().max()))
    _sync(device)
    return out


def markdown(rep: dict) -> str:
    ph = rep.get("phases", {})
    env = rep.get("env", {})
    lines = [f"# fastmix GPU check{' (CPU dry run, tiny sizes)' if rep.get('dry_run') else ''}", "",
             f"{env.get('gpu', 'cpu')} ({env.get('nvidia_smi', platform.processor() or platform.machine())}); torch {env.get('torch')}, CUDA "
             f"{env.get('cuda')}, triton {env.get('triton')}, python {env.get('python')}, torchattacks "
             f"{env.get('torchattacks')}; started {rep.get('started')}, {rep.get('elapsed_s')} s of a "
             f"{rep.get('budget_s')} s budget.", "", "| phase | status | seconds | note |", "|---|---|---:|---|"]
    for k, v in ph.items():
        note = v.get("why") or v.get("error") or v.get("note") or ""
        if k == "tests" and "counts" in v:
            note = ", ".join(f"{a} {b}" for a, b in v["counts"].items())
        lines.append(f"| {k} | {v.get('status')} | {v.get('seconds', '-')} | {str(note)[:160]} |")
    c = ph.get("ceilings", {})
    if "copy_GBps" in c:
        lines += ["", f"Ceilings: copy {c['copy_GBps']:.0f} GB/s (read + write); matmul {c['matmul']} "
                      f"{c['matmul_TFLOPs']:.3g} TFLOP/s."]
    ops = ph.get("ops", {}).get("payload")
    if ops:
        lines += ["", "## Ops: share of the copy bandwidth (goal >= 85% for pgd_step and mix)", "",
                  "| op | shape | provider | ms | vs eager | share of copy |", "|---|---|---|---:|---:|---:|"]
        for r in ops.get("results", []):
            for p, v in r["providers"].items():
                if "ms" in v:
                    lines.append(f"| {r['op']} | {r['shape']} | {p} | {v['ms']:.3f} | "
                                 f"{v.get('ratio_to_eager', float('nan')):.2f}x | {100 * v['share_of_copy_bw']:.0f}% |")
    pg = ph.get("pgd", {}).get("rows")
    if pg:
        lines += ["", f"## PGD-10, {ph['pgd']['model']} batch {ph['pgd']['batch']} (goal >= "
                      f"{GOALS['pgd_ratio']:.0f}x torchattacks at bf16 + channels-last + graph)", "",
                  "| provider | images/s | vs torchattacks | fold: max diff |", "|---|---:|---:|---:|"]
        for r in pg:
            ratio = r.get("ratio_vs_torchattacks")
            fold = r.get("fold") or {}
            lines.append(f"| {r['provider']} | {r['images_per_s']:.1f} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
                         f"{fold.get('max_abs_diff', '-') if fold else '-'} |")
    tr = ph.get("train", {}).get("rows")
    if tr:
        lines += ["", f"## Training step, batch {ph['train']['batch']} (goal: PGD-10 AT <= {GOALS['epoch_s']:.0f} "
                      f"s per 50,000-image epoch)", "",
                  "| method | provider | images/s | s / 50k epoch | vs fastmix fp32 |", "|---|---|---:|---:|---:|"]
        for r in tr:
            rr = r.get("ratio_to_fastmix")
            lines.append(f"| {r['method']} | {r['provider']} | {r['images_per_s']:.1f} | "
                         f"{r['seconds_per_50k_epoch']:.1f} | {'-' if rr is None else f'{rr:.2f}x'} |")
    mi = ph.get("mi", {})
    if "images_per_s" in mi:
        lines += ["", f"Mixup Inference (OL, N = {mi['n']}): {mi['images']} images in {mi['seconds']:.2f} s, "
                      f"{mi['images_per_s']:.0f} images/s ({mi['forwards_per_s']:.0f} mixed forwards/s)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or None, help="result folder (default: $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that every phase runs")
    ap.add_argument("--budget", type=float, default=None, help="seconds for everything (default 450; dry run 900)")
    ap.add_argument("--phases", default=",".join(CAPS), help="comma-separated subset, in order")
    ap.add_argument("--kernels-only", action="store_true", help=argparse.SUPPRESS)  # the sanitizers' workload
    a = ap.parse_args(argv)
    if a.kernels_only:
        import torch
        res = kernel_workload("cuda" if torch.cuda.is_available() else "cpu")
        print(json.dumps(res, indent=1))
        return 0
    if a.out is None:
        ap.error("--out (or $OUT) is required")
    for p in a.phases.split(","):
        if p not in CAPS:
            ap.error(f"--phases: unknown phase {p!r}; choose from {', '.join(CAPS)}")
    os.makedirs(a.out, exist_ok=True)
    if a.dry_run:
        import torch
        torch.set_num_threads(1)
    budget = a.budget if a.budget is not None else (900.0 if a.dry_run else 450.0)
    return Check(a.out, a.dry_run, budget).run(a.phases.split(","))


if __name__ == "__main__":
    sys.exit(main())
