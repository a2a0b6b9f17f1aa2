"""Fault injection: the user-facing paths under bad input and faults (issue 14).

Each test reproduces one item of the issue against public behaviour (the ``fastmix``
command's exit code, its message, the files on disk; the public Python API) and asserts
the fixed behaviour:

 1. an existing run is never overwritten without ``--resume`` or ``--overwrite``;
 2. ``--resume`` without ``last.pt`` is an error that changes nothing;
 3. a kill between the checkpoint writes leaves files that agree with the metrics (a write
    hook stops the process in each window);
 4. ``--threads`` is recorded and reused on resume; a conflicting flag on resume is an error;
 5. a crafted CIFAR pickle cannot run code; the real format still loads;
 6. ``fastmix bench`` never runs ``./benchmarks/run.py`` from the current directory;
 7. out-of-range labels are rejected at load (every loader) and by ``fastmix.eval.evaluate``;
 8. attacks reject a NaN-producing model; MixupInference validates its inputs;
 9. every expected CLI failure is ``fastmix <cmd>: error: ...`` with exit code 2 (and SIGINT
    one line with the resume command), an unexpected one a traceback with exit code 1;
10. ``--mi`` with ``--sanity`` and ``--mi-eot -1`` are errors, not ignored;
11. AutoAttack / APGD arguments: dtypes, ``attacks`` as a string, ``seed``;
12. run outputs follow the user's umask.

Kept fast: 8x8 digits, a width-8 CNN, one or two epochs, one attack step.
"""
import errno
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fastmix.cli import main

from _single_thread import _single_thread  # noqa: F401  (autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--model-opt", "width=8", "--model-opt", "hidden=16", "--steps", "1",
        "--eval-samples", "32", "--eval-steps", "1", "--batch-size", "128", "--no-progress", "--threads", "1"]
TIMING = ("seconds", "images_per_s", "eval_seconds")


def cli(capsys, *argv):
    """Run ``fastmix ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def files(d) -> dict:
    """name -> bytes of every file in a directory (to assert nothing changed)."""
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))
            if os.path.isfile(os.path.join(d, n))}


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def metrics(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


def ck(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch run (copy it before changing it)."""
    d = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def full2(tmp_path_factory):
    """The uninterrupted two-epoch run the kill-and-resume tests compare with."""
    d = tmp_path_factory.mktemp("full") / "full"
    assert main(["train", *TINY, "--epochs", "2", "--deterministic", "--out", str(d)]) == 0
    return d


def copy_run(run, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------ 1, 2: run directories
def test_existing_run_is_not_overwritten_without_resume_or_overwrite(run, tmp_path, capsys):
    d = copy_run(run, tmp_path)
    before = files(d)
    rc, _, err = cli(capsys, "train", *TINY, "--epochs", "1", "--out", d)
    assert rc == 2 and err.startswith("fastmix train: error:"), err
    assert "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert files(d) == before  # nothing touched

    old = os.umask(0o027)  # item 12 on the same run: outputs follow the umask, not 0600
    try:
        rc, _, err = cli(capsys, "train", *TINY, "--epochs", "1", "--seed", "1", "--overwrite", "--out", d)
    finally:
        os.umask(old)
    assert rc == 0, err
    assert len(metrics(d)) == 1 and ck(d / "best.pt")["config"]["seed"] == 1
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o640, name


@pytest.mark.parametrize("layout", ["missing", "no-last"])
def test_resume_without_a_checkpoint_is_an_error_that_changes_nothing(run, tmp_path, capsys, layout):
    d = tmp_path / "run"
    if layout == "no-last":
        d = copy_run(run, tmp_path)
        os.unlink(d / "last.pt")
    before = files(d) if d.exists() else None
    rc, _, err = cli(capsys, "train", *TINY, "--epochs", "1", "--resume", "--out", d)
    assert rc == 2 and err.startswith("fastmix train: error: cannot resume"), err
    assert (files(d) if d.exists() else None) == before
    assert layout == "no-last" or not d.exists()


# ---------------------------------------------------------- 3: a kill between the writes
KILLER = """
import os, signal, sys
from fastmix.train import checkpoint
stage, nth = sys.argv[1], int(sys.argv[2])
seen = []
def hook(s, path):
    if s == stage:
        seen.append(path)
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
checkpoint.set_write_hook(hook)
from fastmix.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("stage", ["best-staged", "last-written", "best-written"])
def test_kill_between_checkpoint_writes_keeps_best_and_metrics_in_agreement(full2, tmp_path, capsys, stage):
    d = tmp_path / "killed"
    args = ["train", *TINY, "--epochs", "2", "--deterministic", "--out", str(d)]
    p = subprocess.run([sys.executable, "-c", KILLER, stage, "2", *args], env=env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    if p.returncode == 0:  # epoch 2 was not better than epoch 1: no second "best" write to stop in
        pytest.skip("no second best epoch in this run, so no window to kill in")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    # On disk right after the kill: whole files. Before the commit point (last.pt) and right
    # after it, best.pt is the best epoch metrics.jsonl lists; after the move of the new best
    # into place, best.pt is the committed epoch whose metrics row was about to be appended.
    rows, last, on_disk = metrics(d), ck(d / "last.pt"), ck(d / "best.pt")["epoch"]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    if stage == "best-written":
        assert on_disk == last["epoch"] == last["best"]["epoch"] == rows[-1]["epoch"] + 1
    else:
        assert on_disk == max(rows, key=lambda r: r["pgd_acc"])["epoch"]
    # ... and after resuming, files and metrics agree and equal the uninterrupted run
    rc, out, err = cli(capsys, "train", "--resume", "--out", d)
    assert rc == 0, err
    rows, want = metrics(d), metrics(full2)
    assert strip(rows) == strip(want)
    best_epoch = max(rows, key=lambda r: r["pgd_acc"])["epoch"]
    best = ck(d / "best.pt")
    assert best["epoch"] == best_epoch == json.loads(out.strip().splitlines()[-1])["best"]["epoch"]
    ref = ck(full2 / "best.pt")
    assert all(torch.equal(v, ref["model"][k]) for k, v in best["model"].items())
    assert not (d / "best.pt.pending").exists()


# ------------------------------------------------------- 4: threads and conflicting flags
def test_threads_are_recorded_and_a_conflicting_flag_on_resume_names_itself(tmp_path, capsys):
    d = tmp_path / "run"
    rc, _, err = cli(capsys, "train", *TINY, "--epochs", "2", "--stop-after", "1", "--out", d)
    assert rc == 0, err
    assert json.load(open(d / "config.json"))["threads"] == 1
    before = files(d)
    for flag, value in (("--eps", "0.3"), ("--method", "trades"), ("--threads", "2"), ("--lr", "0.5")):
        rc, _, err = cli(capsys, "train", "--resume", "--out", d, flag, value, "--no-progress")
        assert rc == 2 and flag in err and "cannot resume" in err, (flag, err)
        assert files(d) == before
    torch.set_num_threads(2)  # a different default: the stored count must win
    try:
        rc, _, err = cli(capsys, "train", "--resume", "--out", d, "--no-progress")
        assert torch.get_num_threads() == 2  # the trainer gave the process-wide count back
    finally:
        torch.set_num_threads(1)
    assert rc == 0, err
    assert ck(d / "last.pt")["config"]["threads"] == 1 and ck(d / "last.pt")["epoch"] == 2


# ----------------------------------------------------------------- 5: CIFAR pickles
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote CIFAR's files: byte strings as BINSTRING
    opcodes (Python 2 str) and numpy's reconstructor under ``numpy.core.multiarray``."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
                   + obj)
        self.memoize(obj)
    dispatch[bytes] = save_py2str
    dispatch[str] = lambda self, obj: self.save_py2str(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)
    dispatch[type] = save_global


def _py2_dump(obj, path):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _cifar10_dir(root, rng, labels=None):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        b = {b"batch_label": b"synthetic " + name.encode(), b"labels": rng.integers(0, 10, 3).tolist(),
             b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"filenames": [b"a.png", b"b.png", b"c.png"]}
        if labels is not None and name == "data_batch_3":
            b[b"labels"] = labels
        _py2_dump(b, d / name)
        batches[name] = b
    return d, batches


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # exec takes the byte string a Python 2 pickle's str arrives as
        return (exec, (f"open({self.path!r}, 'w').close()",))


def test_crafted_cifar_pickle_is_rejected_and_the_real_format_loads(tmp_path, capsys):
    from fastmix.data import load
    rng = np.random.default_rng(0)
    d, batches = _cifar10_dir(tmp_path / "good", rng)
    assert (d / "data_batch_1").read_bytes()[:3] == b"\x80\x02}"  # as CIFAR's own files begin
    s = load("cifar10", str(tmp_path / "good"))
    assert (len(s.train), len(s.test)) == (15, 3)
    assert torch.equal(s.train.images[3:6].reshape(3, -1), torch.from_numpy(batches["data_batch_2"][b"data"]))
    assert s.test.labels.tolist() == batches["test_batch"][b"labels"]

    evil = tmp_path / "evil" / "cifar-10-batches-py"
    shutil.copytree(d, evil)
    marker = tmp_path / "PWNED"
    # a CIFAR-looking batch (Python 2 format) with one value that runs code when unpickled
    _py2_dump({b"labels": [0], b"data": _CreatesAFile(str(marker))}, evil / "data_batch_1")
    rc, _, err = cli(capsys, "train", "--dataset", "cifar10", "--data-dir", tmp_path / "evil", "--epochs", "1",
                     "--out", tmp_path / "r")
    assert rc == 2, err
    assert "data_batch_1" in err and "refusing to unpickle __builtin__.exec" in err and "Traceback" not in err
    assert not marker.exists()
    with open(evil / "data_batch_1", "rb") as f:  # the file really is hostile to pickle.load
        pickle.load(f, encoding="bytes")
    assert marker.exists()


# -------------------------------------------------------------------------- 6: bench
def test_bench_never_runs_benchmarks_from_the_current_directory(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "RAN"
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "run.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                      "def main(argv=None):\n    return 0\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "bench", "--help")
    assert not marker.exists()
    assert rc == 0 and "usage" in out.lower(), err  # the package's own runner answered


# ------------------------------------------------------------------------ 7: labels
def _idx(path, arr):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
                + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("bad", [200, 10])
def test_out_of_range_labels_are_rejected_when_the_dataset_loads(tmp_path, capsys, bad):
    rng = np.random.default_rng(0)
    for pre, n in (("train", 64), ("t10k", 32)):
        _idx(tmp_path / f"{pre}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        y = rng.integers(0, 10, n)
        if pre == "train":
            y[5] = bad
        _idx(tmp_path / f"{pre}-labels-idx1-ubyte", y)
    rc, _, err = cli(capsys, "train", *TINY, "--dataset", "mnist", "--data-dir", tmp_path, "--epochs", "1",
                     "--out", tmp_path / "r")
    assert rc == 2 and "train-labels-idx1-ubyte" in err and f"e.g. {bad}" in err, err
    assert not (tmp_path / "r").exists()


def test_out_of_range_cifar_and_svhn_labels_name_their_file(tmp_path):
    from scipy.io import savemat

    from fastmix.data import load
    _cifar10_dir(tmp_path / "c", np.random.default_rng(1), labels=[0, 10, 3])
    with pytest.raises(ValueError, match=r"data_batch_3.*\[0, 10\)"):
        load("cifar10", str(tmp_path / "c"))
    X = np.zeros((32, 32, 3, 2), np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": X, "y": np.array([[1], [11]], np.uint8)})
    savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[1], [2]], np.uint8)})
    with pytest.raises(ValueError, match="train_32x32.mat"):
        load("svhn", str(tmp_path))


def test_evaluate_checks_labels_once_per_call():
    from fastmix.eval import evaluate
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(6, 1, 8, 8)
    for y in (torch.tensor([0, 1, 2, 3, 4, 10]), torch.tensor([0, 1, 2, 3, 4, -1])):
        with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
            evaluate(model, x, y, ["clean", "cw2", "apgd-ce"], eps=0.1)
    assert evaluate(model, x, torch.tensor([0, 1, 2, 3, 4, 9]), ["clean"], eps=0.1).n == 6


# -------------------------------------------------------------- 8: NaN models, MI input
class _NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1)) * float("nan")


def _attacks():
    from fastmix.attacks import APGD, CW, FGSM, PGD, AutoAttack
    return {"PGD": lambda m: PGD(m, eps=0.1, alpha=0.02, steps=2), "FGSM": lambda m: FGSM(m, eps=0.1),
            "CW": lambda m: CW(m, eps=0.1, steps=2), "APGD": lambda m: APGD(m, eps=0.1, steps=2),
            "AutoAttack": lambda m: AutoAttack(m, eps=0.1, steps=2, attacks=("apgd-ce", "apgd-t"))}


@pytest.mark.parametrize("name", ["PGD", "FGSM", "CW", "APGD", "AutoAttack"])
def test_attacks_reject_a_model_that_outputs_nan(name):
    model = _NaNNet()
    model.train()
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        _attacks()[name](model)(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert model.training and not model._forward_hooks  # mode restored, no hook left behind
    good = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    adv = _attacks()[name](good)(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert adv.shape == (4, 1, 8, 8) and bool(torch.isfinite(adv).all()) and not good._forward_hooks


def _mi_case(case):
    from fastmix.methods.mixup_inference import MixupInference
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    px, py = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    x = torch.rand(3, 1, 8, 8)
    if case == "nan":
        return lambda: MixupInference(model, px, py)(torch.full_like(x, float("nan")))
    if case == "x255":
        return lambda: MixupInference(model, px, py)(x * 255)
    if case == "pool-x255":
        return lambda: MixupInference(model, px * 255, py)
    if case == "float64":
        return lambda: MixupInference(model, px, py)(x.double())
    if case == "empty-batch":
        return lambda: MixupInference(model, px, py)(x[:0])
    if case == "empty-pool":
        return lambda: MixupInference(model, px[:0], py[:0])
    if case == "num-classes-large":
        return lambda: MixupInference(model, px, py, num_classes=12)
    if case == "num-classes-vs-output":  # a pool with 12 classes, a model with 10 outputs
        return lambda: MixupInference(model, torch.rand(48, 1, 8, 8), torch.arange(48) % 12)(x)
    raise AssertionError(case)


@pytest.mark.parametrize("case,match", [
    ("nan", "NaN"), ("x255", r"in \[0, 1\].*divide by 255"), ("pool-x255", r"pool_x must be images in \[0, 1\]"),
    ("float64", "float64 but the model's parameters are torch.float32"), ("empty-batch", "empty batch"),
    ("empty-pool", "pool_x is empty"), ("num-classes-large", "num_classes=12"),
    ("num-classes-vs-output", "num_classes=12")])
def test_mixup_inference_input_errors_are_clear(case, match):
    with pytest.raises(ValueError, match=match):
        _mi_case(case)()


# ------------------------------------------------------------- 9, 10: CLI failure paths
def _corrupt(run, tmp_path, kind):
    p = tmp_path / f"{kind}.pt"
    data = (run / "last.pt").read_bytes()
    if kind == "truncated":
        p.write_bytes(data[: len(data) // 3])
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "other-model":
        c = ck(run / "last.pt")
        c["model_args"]["width"] = 16
        torch.save(c, p)
    return p


def _unwritable(tmp_path):
    """A directory this process cannot write into (root ignores permission bits: then a
    path under /sys, which refuses new entries)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d / "run"
    return "/sys/fastmix-test-unwritable/run"


def _paths(run, tmp_path):
    """Every expected CLI failure path: (name, argv, what the message must say)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    last = run / "last.pt"
    ev = ["eval", "--checkpoint", last, "--attacks", "clean", "--no-progress"]
    tr = ["train", *TINY, "--epochs", "1"]
    paths = [
        ("model-opt unknown", tr + ["--model-opt", "foo=1", "--out", tmp_path / "a"], "no option 'foo'"),
        ("model-opt width=-1", tr + ["--model-opt", "width=-1", "--out", tmp_path / "b"], "width must be an int >= 1"),
        ("opt without =", tr + ["--opt", "foo", "--out", tmp_path / "c"], "--opt expects KEY=VALUE"),
        ("train --out is a file", tr + ["--out", afile], "is a file"),
        ("train --out under a file", tr + ["--out", afile / "sub"], "not a directory"),
        ("train --out unwritable", tr + ["--out", _unwritable(tmp_path)], "(choose"),
        ("eval truncated checkpoint", ev[:2] + [_corrupt(run, tmp_path, "truncated")] + ev[3:], "not a readable"),
        ("eval random-bytes checkpoint", ev[:2] + [_corrupt(run, tmp_path, "random")] + ev[3:], "not a readable"),
        ("eval empty checkpoint", ev[:2] + [_corrupt(run, tmp_path, "empty")] + ev[3:], "not a readable"),
        ("eval another model's checkpoint", ev[:2] + [_corrupt(run, tmp_path, "other-model")] + ev[3:],
         "do not fit"),
        ("eval checkpoint is a directory", ev[:2] + [run] + ev[3:], "is a directory"),
        ("eval --out is a directory", ev + ["--out", outdir], "is a directory"),
        ("eval --out on a full disk", ev + ["--out", "/dev/full"], "No space left on device (free some space"),
        ("eval --mi with --sanity", ev + ["--mi", "ol", "--sanity"], "--sanity does not run with --mi"),
        ("eval --mi-eot -1", ev + ["--mi", "ol", "--mi-eot", "-1"], "--mi-eot must be >= 0"),
        ("eval --mi-eot without --mi", ev + ["--mi-eot", "2"], "used only with --mi"),
        ("plot --out is a directory", ["plot", "train", run, "--out", outdir], "is a directory"),
    ]
    if not torch.cuda.is_available():
        paths += [("train --device cuda without a GPU", tr + ["--device", "cuda", "--out", tmp_path / "d"],
                   "asked for a GPU"),
                  ("eval --device cuda without a GPU", ev + ["--device", "cuda"], "asked for a GPU")]
    return paths


def test_every_expected_cli_failure_is_one_line_with_exit_code_2(run, tmp_path, capsys):
    tracebacks, wrong = [], []
    paths = _paths(run, tmp_path)
    for name, argv, want in paths:
        rc, _, err = cli(capsys, *argv)
        if "Traceback" in err or rc == 1:
            tracebacks.append(name)
        cmd = str(argv[0])
        if not (rc == 2 and err.startswith(f"fastmix {cmd}: error: ") and want in err):
            wrong.append((name, rc, err[-400:]))
    print(f"\nCLI failure paths ending in a traceback: {len(tracebacks)} of {len(paths)}")
    assert not tracebacks and not wrong, wrong


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to find the checkpoint file")
def test_a_full_disk_during_training_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """A write that fails with ENOSPC while a checkpoint is written (injected at the file
    write, below torch) ends in the one-line error, and leaves no torn file behind."""
    real = os.fdopen

    class _Full(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def fileno(self):
            return self.f.fileno()

        def close(self):
            self.f.close()
            super().close()

    def fdopen(fd, mode="r", *a, **k):  # only the checkpoint files' writes fail
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        f = real(fd, mode, *a, **k)
        return _Full(f) if "w" in mode and ".pt" in os.path.basename(name) else f
    monkeypatch.setattr(os, "fdopen", fdopen)
    rc, _, err = cli(capsys, "train", *TINY, "--epochs", "1", "--out", tmp_path / "r")
    assert rc == 2 and "fastmix train: error: No space left on device (free some space" in err, err
    assert sorted(os.listdir(tmp_path / "r")) == ["config.json", "metrics.jsonl"]  # no torn checkpoint


def test_an_unexpected_failure_is_a_traceback_with_exit_code_1(monkeypatch):
    """A bug is not dressed up as a user error: main() lets it propagate, so Python prints
    the traceback and exits with 1."""
    import fastmix.cli as c

    def boom(a):
        raise RuntimeError("a bug")
    monkeypatch.setattr(c, "cmd_info", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        c.main(["info"])


INTERRUPT = """
import os, signal, sys
# as in a terminal: a process started in the background of a non-interactive shell (a CI
# runner's `cmd &`) inherits SIGINT ignored, and Python then installs no handler for it
signal.signal(signal.SIGINT, signal.default_int_handler)
from fastmix.train import checkpoint
checkpoint.set_write_hook(lambda stage, path: os.kill(os.getpid(), signal.SIGINT) if stage == "last-written"
                          else None)  # a real Ctrl-C, delivered right after epoch 1's checkpoint
from fastmix.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigint_prints_one_line_saying_how_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", INTERRUPT, "train", *TINY, "--epochs", "2", "--out", str(out)],
                       env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 130, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and f"fastmix train --resume --out {out}" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert ck(out / "last.pt")["epoch"] == 1
    rc, _, err = cli(capsys, "train", "--resume", "--out", out)  # and the command it prints works
    assert rc == 0 and ck(out / "last.pt")["epoch"] == 2, err


# ------------------------------------------------------------ 11: AutoAttack / APGD args
def test_autoattack_and_apgd_arguments_are_checked_or_accepted():
    from fastmix.attacks import APGD, AutoAttack
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for dt in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=f"images are {dt}"):
            AutoAttack(model, eps=0.1, steps=2, attacks=("apgd-ce",))(x.to(dt), y)
    with pytest.raises(ValueError, match="float64"):
        AutoAttack(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double(), eps=0.1, steps=2,
                   attacks=("apgd-ce",))(x, y)
    one = AutoAttack(model, eps=0.1, steps=2, attacks="apgd-ce,apgd-t", seed=3)
    assert one.attacks == ("apgd-ce", "apgd-t")
    two = AutoAttack(model, eps=0.1, steps=2, attacks=("apgd-ce", "apgd-t"), seed=3)
    assert torch.equal(one(x, y), two(x, y))
    for bad in ("abc", -1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an int"):
            APGD(model, eps=0.1, steps=2, seed=bad)
        with pytest.raises(ValueError, match="seed must be an int"):
            AutoAttack(model, eps=0.1, seed=bad, attacks=("apgd-ce",))
