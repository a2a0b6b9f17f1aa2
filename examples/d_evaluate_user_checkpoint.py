"""(d) Evaluating your own checkpoint with ``fastmix.eval``: AutoAttack beside PGD, and the
sanity checks that catch overstated robustness.

Your checkpoint is whatever your code saves: here ``torch.save(model.state_dict(), path)``
of a ``MyNet``. Load it into your model as usual, then::

    res = fastmix.eval.evaluate(model, x, y, ["clean", "pgd20", "apgd-ce", "autoattack"], eps=0.2)
    print(res.table())                        # per attack, and the worst case over all of them
    verdicts = fastmix.eval.run_sanity(model, x, y, eps=0.2, surrogate=standard_model)
    print(fastmix.eval.format_verdicts(verdicts))

The sanity checks (Carlini et al. 2019) test that PGD accuracy falls as eps grows, that
more steps and restarts never help the model, that FGSM and random noise are weaker than
PGD, that the CW margin loss agrees with cross-entropy, and that PGD transferred from a
standard-trained model is weaker than white-box PGD.

To make the example self-contained it first writes two checkpoints: a PGD-AT model
(trained with ``fastmix.methods.MadryAT(...).step`` in a plain loop) and a standard one
(the transfer check's surrogate). AutoAttack runs with small budgets here
(``apgd_steps=10, square_queries=100``, 120 images) so the example takes seconds; use the
defaults (100 and 5000) for a reported number.

    python examples/d_evaluate_user_checkpoint.py [--out DIR]
"""
import argparse
import os
import tempfile

import torch

import fastmix
import fastmix.eval
from mynet import MyNet, digits

EPS = 0.2


def write_checkpoint(path, method, data, epochs=2, seed=0):
    """Your training code, whatever it is; what matters here is the state_dict it saves."""
    xtr, ytr, _, _ = data
    torch.manual_seed(seed)
    model = MyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr)).split(64):
            loss = method.step(model, xtr[idx], ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), path)


def load(path):
    model = MyNet()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="where to write the two checkpoints (default: a temporary directory)")
    a = p.parse_args()
    torch.set_num_threads(1)  # tiny 8x8 batches: one thread is fastest on a small CPU
    data = digits()
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or tmp
        os.makedirs(out, exist_ok=True)
        robust_ck, standard_ck = os.path.join(out, "mynet_at.pt"), os.path.join(out, "mynet_standard.pt")
        write_checkpoint(robust_ck, fastmix.methods.MadryAT(eps=EPS, steps=3), data)
        write_checkpoint(standard_ck, fastmix.methods.Standard(), data)

        # ---- the evaluation script: your checkpoint, fastmix.eval
        model, surrogate = load(robust_ck), load(standard_ck)
        x, y = data[2][:120], data[3][:120]
        res = fastmix.eval.evaluate(model, x, y, ["clean", "fgsm", "pgd20", "apgd-ce", "autoattack"], eps=EPS,
                                    apgd_steps=10, square_queries=100)
        print(f"MyNet (PGD-AT) on {res.n} held-out digits, L-inf eps {EPS}:")
        print(res.table())
        verdicts = fastmix.eval.run_sanity(model, x, y, eps=EPS, surrogate=surrogate, steps=10,
                                           more_steps=(10, 20), restarts=2, warn=False)
        print(fastmix.eval.format_verdicts(verdicts))

    acc = res.accuracy
    assert acc["autoattack"] <= acc["clean"] and res.worst_case <= min(acc.values())
    assert acc["pgd20"] < acc["clean"]
    assert len(verdicts) == 6 and all(v.passed is not None for v in verdicts)  # every check ran
    print("OK")


if __name__ == "__main__":
    main()
