"""(e) ``torchrun`` DDP training of a model of your own, two ways.

1. The trainer: ``fastmix.train.train(cfg, model=MyNet(...))`` under torchrun shards every
   global batch over the ranks, wraps the model in DDP (SyncBatchNorm on GPUs), reduces
   the method's global statistics and writes checkpoints from rank 0. The same from the
   command line (from this directory)::

       torchrun --nproc_per_node 2 -m fastmix train --model mynet:build --model-opt width=8 \\
           --method avmixup --dataset digits --epochs 1 --out runs/ddp

2. Your own loop: wrap the model in ``DistributedDataParallel`` yourself and call
   ``method.step(ddp_model, x, y, idx)`` on each rank's shard. The method finds the rank
   and world size in the process group: GIF's ``end_epoch`` merges the attackable set
   over all ranks, so every rank draws its next pairs from the same set (checked below).

Run with torchrun, or plainly (the script then starts itself under torchrun with two
CPU processes, gloo backend)::

    torchrun --nproc_per_node 2 examples/e_torchrun_ddp.py
    python examples/e_torchrun_ddp.py
"""
import os
import subprocess
import sys
import tempfile

import torch
import torch.distributed as tdist
from torch import nn

import fastmix
from mynet import MyNet, digits


def with_trainer(out):
    from fastmix.train import TrainConfig, train
    cfg = TrainConfig.for_dataset("digits", method="avmixup", epochs=1, batch_size=64, steps=3, eval_samples=96,
                                  eval_steps=5, progress=False, out=out)
    torch.manual_seed(0)  # the same initial weights on every rank
    t = train(cfg, model=MyNet(width=8))  # uses the process group (it would start and end one itself)
    row = t.history[-1]
    if t.info.is_main:
        print(f"trainer, {t.info.world_size} ranks: avmixup epoch 1: loss {row['train_loss']:.3f} "
              f"clean {row['clean_acc']:.3f} PGD-20 {row['pgd_acc']:.3f} -> {out}/last.pt")


def with_own_loop(epochs=2, global_batch=64):
    rank, world = tdist.get_rank(), tdist.get_world_size()
    xtr, ytr, xte, yte = digits()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(MyNet(width=8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = fastmix.methods.GIF(eps=0.2, steps=3, burn_in=0).attach(model, train_data=(xtr, ytr), epochs=epochs)
    g = torch.Generator().manual_seed(1)  # the same order on every rank; each takes its slice
    for epoch in range(1, epochs + 1):
        method.start_epoch(epoch)
        order = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(order) - global_batch + 1, global_batch):
            idx = order[s:s + global_batch].chunk(world)[rank]
            loss = method.step(model, xtr[idx], ytr[idx], idx)
            opt.zero_grad()
            loss.backward()  # DDP averages the gradients over the ranks
            opt.step()
        diag = method.end_epoch(epoch)
        sets = [torch.zeros_like(method.attackable) for _ in range(world)]
        tdist.all_gather(sets, method.attackable.contiguous())
        assert all(torch.equal(sets[0], s) for s in sets), "the attackable set differs between ranks"
        if rank == 0:
            print(f"own loop, {world} ranks: gif epoch {epoch}: loss {loss.item():.3f}  "
                  f"attackable set {diag['attackable_set']:.3f} (the same on every rank)")
    for p in model.parameters():  # DDP keeps the replicas identical
        ps = [torch.zeros_like(p) for _ in range(world)]
        tdist.all_gather(ps, p.detach().contiguous())
        assert all(torch.allclose(ps[0], q) for q in ps)


def main():
    if "LOCAL_RANK" not in os.environ:  # not under torchrun: start two CPU processes
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.abspath(__file__), *sys.argv[1:]]
        sys.exit(subprocess.call(cmd, env=env))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo")  # torchrun's environment: rank, world size, rendezvous
    with tempfile.TemporaryDirectory() as tmp:
        out = os.environ.get("FASTMIX_EXAMPLE_OUT") or os.path.join(tmp, "ddp")
        if int(os.environ.get("RANK", "0")) == 0:  # rank 0 owns the run directory
            os.makedirs(out, exist_ok=True)
        with_trainer(out)
        with_own_loop()
    tdist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print("OK")


if __name__ == "__main__":
    main()
