"""Hand-written training steps: the same maths as each fastmix method, written the way a
user writes it in plain PyTorch (``model.eval()`` / ``model.train()`` around the attack,
``F.cross_entropy``, ``sign()`` and two clamps per iteration, dense soft targets,
``torch.optim.SGD`` with torch's defaults).

They are the baselines of ``bench_train.py`` and ``profile_train.py``: fastmix's
``Trainer.train_step`` has to run at least as fast. Each ``naive_<method>(t, x, y, idx)``
takes a :class:`fastmix.train.Trainer` ``t`` (for its model, optimiser and the method's
hyper-parameters) and runs one optimiser step on the batch. Benchmark code only: these
functions share nothing with fastmix beyond the model and the optimiser.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _pgd(model, x, y, eps, alpha, steps, loss_fn, start="uniform", kappa=False):
    """Plain PGD: uniform (or TRADES's normal) start, sign step, two clamps."""
    if start == "uniform":
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    elif start == "normal":
        x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    else:
        x_adv = x.clone()
    k = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if kappa else None
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv)
        if kappa:
            k += out.detach().argmax(1) == y
        loss = loss_fn(out)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv, k


def naive_optimizer(t):
    """``torch.optim.SGD`` as a user writes it, torch's default implementation, with the
    trainer's hyper-parameters and momentum buffers of its own (made on first use).
    ``t.naive_uses_trainer_optimizer = True`` (provider ``naive-fusedsgd``) makes the loop
    step the trainer's own optimiser instead, to show what the rest of the step costs."""
    if getattr(t, "naive_uses_trainer_optimizer", False):
        return t.optimizer
    opt = getattr(t, "_naive_sgd", None)
    if opt is None:
        g = t.optimizer.param_groups[0]
        opt = t._naive_sgd = torch.optim.SGD(t.module.parameters(), lr=g["lr"], momentum=g["momentum"],
                                             weight_decay=g["weight_decay"], nesterov=g["nesterov"])
    return opt


def _sgd(t, loss):
    opt = naive_optimizer(t)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _soft_ce(logits, target):
    return -(target * F.log_softmax(logits, dim=1)).sum(1)


def _phi(y, s, c):
    """Dense ``s`` on class y, ``(1 - s) / (C - 1)`` elsewhere, ``(B, C)``."""
    oh = F.one_hot(y, c).float()
    s = torch.as_tensor(s, dtype=torch.float32, device=y.device).reshape(-1, 1)
    return s * oh + (1 - s) / (c - 1) * (1 - oh)


def naive_standard(t, x, y, idx):
    model = t.module
    return _sgd(t, F.cross_entropy(model(x), y))


def naive_at(t, x, y, idx):
    m, model = t.method, t.module
    model.eval()
    x_adv, _ = _pgd(model, x, y, m.eps, m.alpha, m.steps, lambda o: F.cross_entropy(o, y))
    model.train()
    return _sgd(t, F.cross_entropy(model(x_adv), y))


def naive_trades(t, x, y, idx):
    m, model = t.method, t.module
    model.eval()
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    kl = lambda o: F.kl_div(F.log_softmax(o, dim=1), p_nat, reduction="sum")  # noqa: E731
    x_adv, _ = _pgd(model, x, y, m.eps, m.alpha, m.steps, kl, start="normal")
    model.train()
    logits_nat, logits_adv = model(x), model(x_adv)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean")
    return _sgd(t, F.cross_entropy(logits_nat, y) + m.beta * robust)


def naive_gairat(t, x, y, idx):
    m, model = t.method, t.module
    model.eval()
    x_adv, kappa = _pgd(model, x, y, m.eps, m.alpha, m.steps, lambda o: F.cross_entropy(o, y), kappa=True)
    model.train()
    ce = F.cross_entropy(model(x_adv), y, reduction="none")
    if m.reweighting:
        w = (1 + torch.tanh(m.lam + 5 * (1 - 2 * kappa.float() / m.steps))) / 2
        loss = (w * ce).sum() / w.sum()
    else:
        loss = ce.mean()
    return _sgd(t, loss)


def naive_fastat(t, x, y, idx):
    m, model = t.method, t.module  # attack in train mode (Wong et al.)
    x_adv, _ = _pgd(model, x, y, m.eps, m.alpha, 1, lambda o: F.cross_entropy(o, y))
    return _sgd(t, F.cross_entropy(model(x_adv), y))


def naive_avmixup(t, x, y, idx):
    # attack with batch statistics, running statistics left as they were (the TF original
    # attacks with is_training=True and updates the moving averages in the train step only):
    # train mode, the BatchNorm buffers saved before the attack and put back after it
    m, model = t.method, t.module
    bufs = [b for mod in model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
            for b in mod.buffers()]
    saved = [b.clone() for b in bufs]
    x_adv, _ = _pgd(model, x, y, m.eps, m.alpha, m.steps, lambda o: F.cross_entropy(o, y))
    for b, v in zip(bufs, saved):
        b.copy_(v)
    x_av = x + m.gamma * (x_adv - x)
    a = torch.rand(x.shape[0]).to(x.device)
    x_hat = (a.view(-1, 1, 1, 1) * x + (1 - a.view(-1, 1, 1, 1)) * x_av).clamp(0, 1)
    logits = model(x_hat)
    c = logits.shape[1]
    target = a[:, None] * _phi(y, m.lambda1, c) + (1 - a[:, None]) * _phi(y, m.lambda2, c)
    return _sgd(t, _soft_ce(logits, target).mean())


def naive_iat(t, x, y, idx):
    m, model = t.method, t.module
    B = x.shape[0]
    model.eval()
    x_adv, _ = _pgd(model, x, y, m.eps, m.alpha, m.steps, lambda o: F.cross_entropy(o, y))
    model.train()
    xx, yy = torch.cat([x, x_adv]), torch.cat([y, y])
    perm = torch.cat([torch.randperm(B), B + torch.randperm(B)]).to(x.device)
    lam = torch.rand(2 * B).to(x.device)
    mixed = lam.view(-1, 1, 1, 1) * xx + (1 - lam.view(-1, 1, 1, 1)) * xx[perm]
    logits = model(mixed)
    c = logits.shape[1]
    target = lam[:, None] * F.one_hot(yy, c) + (1 - lam[:, None]) * F.one_hot(yy[perm], c)
    return _sgd(t, _soft_ce(logits, target).mean())


def naive_ait(t, x, y, idx):
    m, model = t.method, t.module
    partner = x.flip(0)
    model.eval()
    with torch.no_grad():
        f_p = model.features(partner)
    cos = lambda f: (1 - F.cosine_similarity(f, f_p, dim=1)).sum()  # noqa: E731
    x_adv = (x + torch.empty_like(x).uniform_(-m.eps, m.eps)).clamp(0, 1)
    for _ in range(m.interp_steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(cos(model.features(x_adv)), x_adv)
        x_adv = x_adv.detach() - m.eps * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - m.eps), x + m.eps).clamp(0, 1)
    model.train()
    logits = model(x_adv)
    c = logits.shape[1]
    target = (1 - m.eps_y) * F.one_hot(y, c) + m.eps_y * (1 - F.one_hot(y.flip(0), c)) / (c - 1)
    return _sgd(t, _soft_ce(logits, target).mean())


def naive_at_mixup(t, x, y, idx):
    """AT-mixup (GIF's Algorithm 5) as fastmix runs it by default: the first half of the
    batch as originals plus as many mixup samples of random pairs ``i != j`` of the whole
    training set (lam ~ U(0, 1)); PGD against the dense soft target, then the verdicts GIF
    logs (the prediction on each attacked image, one no-grad forward in the attack's BN
    mode) and the mean soft CE over both halves."""
    m, model = t.method, t.module
    k = x.shape[0] - x.shape[0] // 2
    x, y = x[:k], y[:k]
    n_train = m.ctx.num_train
    i = torch.randint(n_train, (k,))
    j = (i + torch.randint(1, n_train, (k,))) % n_train
    xs, ys = t.loader.fetch(torch.cat([i, j]).to(x.device))
    lam = torch.rand(k).to(x.device)
    x_bar = lam.view(-1, 1, 1, 1) * xs[:k] + (1 - lam.view(-1, 1, 1, 1)) * xs[k:]
    c = t.splits.num_classes
    x_all = torch.cat([x, x_bar])
    target = torch.cat([F.one_hot(y, c).float(),
                        lam[:, None] * F.one_hot(ys[:k], c) + (1 - lam[:, None]) * F.one_hot(ys[k:], c)])
    model.eval()
    x_adv, _ = _pgd(model, x_all, None, m.eps, m.alpha, m.steps, lambda o: _soft_ce(o, target).mean())
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    model.train()
    m._naive_verdicts = (pred[:k] != y, (pred[k:] != ys[:k]) & (pred[k:] != ys[k:]))  # kept on device
    logits = model(x_adv)
    return _sgd(t, _soft_ce(logits, target).mean())


NAIVE = {"standard": naive_standard, "at": naive_at, "trades": naive_trades, "gairat": naive_gairat,
         "fastat": naive_fastat, "avmixup": naive_avmixup, "iat": naive_iat, "ait": naive_ait,
         "at-mixup": naive_at_mixup}
