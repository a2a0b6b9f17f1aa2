"""Kill in the window after last.pt of epoch 2 is written (epoch 2 a new best), resume, and
compare best.pt with metrics.jsonl.  usage: killwin.py before|after OUTDIR"""
import json, os, signal, subprocess, sys
import torch
mode, out = sys.argv[1], sys.argv[2]
T = ["train", "--dataset", "digits", "--model-opt", "width=8", "--model-opt", "hidden=16", "--steps", "1",
     "--eval-samples", "32", "--eval-steps", "1", "--batch-size", "128", "--no-progress", "--threads", "1",
     "--epochs", "2", "--deterministic", "--out", out]
if mode == "before":  # main's code: _save writes last.pt, then best.pt; stop before the second best.pt
    child = """
import os, signal, sys
import fastmix.train.checkpoint as c
real, n = c.save_atomic, []
def save(obj, path):
    if path.endswith("best.pt"):
        n.append(1)
        if len(n) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real(obj, path)
c.save_atomic = save
import fastmix.train.trainer as t; t.ckpt.save_atomic = save
from fastmix.cli import main; sys.exit(main(sys.argv[1:]))
"""
else:  # this branch: the checkpoint writer's hook, same window (after last.pt, before best.pt)
    child = """
import os, signal, sys
from fastmix.train import checkpoint as c
n = []
def hook(stage, path):
    if stage == "last-written":
        n.append(1)
        if len(n) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
c.set_write_hook(hook)
from fastmix.cli import main; sys.exit(main(sys.argv[1:]))
"""
p = subprocess.run([sys.executable, "-c", child, *T], capture_output=True, text=True)
print("killed run rc", p.returncode)
ep = lambda f: torch.load(os.path.join(out, f), weights_only=True)["epoch"]
print("after kill: last.pt epoch", ep("last.pt"), "best.pt epoch", ep("best.pt"),
      "last.pt says best", torch.load(os.path.join(out, "last.pt"), weights_only=True)["best"])
r = subprocess.run([sys.executable, "-m", "fastmix", "train", "--resume", *T[1:]] if mode == "before" else
                   [sys.executable, "-m", "fastmix", "train", "--resume", "--out", out, "--no-progress"],
                   capture_output=True, text=True)
print("resume rc", r.returncode, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:])
rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
best_row = max(rows, key=lambda r: r["pgd_acc"])["epoch"]
print(f"metrics.jsonl best epoch {best_row}; best.pt holds epoch {ep('best.pt')}:",
      "AGREE" if best_row == ep("best.pt") else "DISAGREE")
