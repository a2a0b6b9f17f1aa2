"""Mixup Inference (Pang et al. 2020): average a mixup-trained model's softmax over
inputs mixed with clean samples, batched (METHODS.md section 3).

For an input batch ``x`` (B images) and N draws per image, the ``B x N`` mixed inputs
``lam * x_b + (1 - lam) * pool[j_bk]`` are made by one :func:`fastmix.ops.mix` call per
chunk (``a`` = the rows of ``x`` gathered per draw, ``b`` = the whole pool, ``index`` =
the drawn pool rows), pushed through the model in chunks of at most ``chunk`` rows and
averaged with a scatter-add: no per-image or per-draw Python loop (the official
evaluation loops over images and draws in Python).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops

MODES = ("pl", "ol", "combined")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` for the duration, then every module's own ``training`` flag back (a
    BatchNorm layer the caller had frozen in an otherwise training model stays frozen;
    ``model.train(was)`` would unfreeze it), also when the body raises."""
    modules = list(model.modules())
    flags = [m.training for m in modules]
    model.eval()
    try:
        yield model
    finally:
        for m, f in zip(modules, flags):
            m.training = f

# Official defaults (METHODS.md section 4): MI-PL lam 0.5 with 10 draws; MI-OL 30 draws,
# lam 0.5 for a mixup model (0.6 for IAT); MI-Combined: PL (lam 0.4, 5 draws) detects with
# threshold 0.2, OL (lam 0.5, 15 draws) predicts on the flagged inputs.
_DEFAULTS = {"pl": (0.5, 10), "ol": (0.5, 30), "combined": (0.5, 15)}


class MixupInference:
    """Mixup Inference around a trained classifier.

    Args:
        model: ``(n, C, H, W)`` images in [0, 1] -> ``(n, K)`` logits (run in eval mode,
            without gradients, for the prediction; its mode is restored).
        pool_x: ``(P, C, H, W)`` float clean images in [0, 1] (held-out data) to mix with;
            uint8 images are divided by 255.
        pool_y: ``(P,)`` int64 true labels in ``[0, K)``; every class must occur.
        mode: ``"pl"`` (x_s from the predicted class), ``"ol"`` (a class drawn uniformly
            among the other K - 1, then an image uniformly within it), or ``"combined"``.
        lam: the mixing weight of ``x`` (``lam*x + (1-lam)*x_s``) for PL/OL, and OL's weight
            in combined mode. Default 0.5.
        n: draws per image (PL 10, OL 30, combined's OL part 15).
        lam_pl, n_pl: combined mode's detector (MI-PL, lam 0.4, 5 draws).
        threshold: combined mode flags an input as adversarial when the predicted class's
            probability drops by more than this under MI-PL (0.2).
        chunk: the most mixed rows per forward pass (bounds memory: about ``chunk`` images
            and their activations at a time). None: 2048 on a GPU, 64 on the CPU, where
            chunks whose activations stay in cache are several times faster (measured on
            the MNIST CNN: 64 rows ~150-220 img/s vs 2048 rows ~50-65 img/s, N = 30).
        num_classes: K (default: ``model.num_classes`` if present, else ``pool_y.max() + 1``).

    Calling it on ``x`` ``(B, C, H, W)`` returns float32 ``(B, K)`` probabilities (rows sum
    to 1): the mean softmax over the draws (PL/OL) or, for combined, MI-OL's mean on the
    flagged inputs and the plain softmax elsewhere.
    """

    def __init__(self, model: nn.Module, pool_x: Tensor, pool_y: Tensor, mode: str = "ol", lam: float | None = None,
                 n: int | None = None, *, lam_pl: float = 0.4, n_pl: int = 5, threshold: float = 0.2,
                 chunk: int | None = None, num_classes: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        lam = _DEFAULTS[mode][0] if lam is None else lam
        n = _DEFAULTS[mode][1] if n is None else n
        for name, v in (("lam", lam), ("lam_pl", lam_pl)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        if chunk is None:
            chunk = 2048 if pool_x.is_cuda else 64
        for name, v in (("n", n), ("n_pl", n_pl), ("chunk", chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not isinstance(pool_x, Tensor) or pool_x.dim() < 2:
            raise ValueError(f"pool_x must be a (P, C, H, W) tensor, got {getattr(pool_x, 'shape', pool_x)!r}")
        if pool_x.shape[0] == 0:
            raise ValueError(f"pool_x is empty (shape {tuple(pool_x.shape)}); MI needs clean images of every class")
        if pool_x.dtype == torch.uint8:
            pool_x = pool_x.float().div_(255.0)
        if not pool_x.is_floating_point():
            raise ValueError(f"pool_x must be float (or uint8) images, got {pool_x.dtype}")
        _check_images(pool_x, "pool_x")
        if not isinstance(pool_y, Tensor) or pool_y.shape != (pool_x.shape[0],) or pool_y.is_floating_point():
            raise ValueError(f"pool_y must be integer labels of shape ({pool_x.shape[0]},), got "
                             f"{getattr(pool_y, 'dtype', None)} {tuple(getattr(pool_y, 'shape', ()))}")
        model_k = getattr(model, "num_classes", None)
        if num_classes is None:
            num_classes = model_k if isinstance(model_k, int) else int(pool_y.max()) + 1
        elif isinstance(model_k, int) and num_classes != model_k:
            raise ValueError(f"num_classes={num_classes!r} but the model has {model_k} classes "
                             f"(model.num_classes); omit num_classes or pass {model_k}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if int(pool_y.min()) < 0 or int(pool_y.max()) >= num_classes:
            raise ValueError(f"pool_y must lie in [0, {num_classes}), got [{int(pool_y.min())}, {int(pool_y.max())}]")
        counts = torch.bincount(pool_y.long().cpu(), minlength=num_classes)
        if bool((counts == 0).any()):
            missing = (counts == 0).nonzero().squeeze(1).tolist()
            hint = (f" (num_classes={num_classes} but the pool's labels stop at {int(pool_y.max())}: pass the "
                    f"model's number of classes)" if min(missing) > int(pool_y.max()) else "")
            raise ValueError(f"the pool has no image of class(es) {missing}; MI needs every class{hint}")
        self.model, self.mode, self.lam, self.n = model, mode, float(lam), n
        self.lam_pl, self.n_pl, self.threshold, self.chunk = float(lam_pl), n_pl, float(threshold), chunk
        self.num_classes = num_classes
        # The pool sorted by class: class c occupies rows [start[c], start[c] + count[c]).
        order = torch.argsort(pool_y.long().cpu(), stable=True).to(pool_x.device)
        self.pool = pool_x.index_select(0, order).contiguous()
        self.pool_y = pool_y.long().to(pool_x.device).index_select(0, order)
        self.count = counts.to(pool_x.device)
        self.start = (torch.cumsum(counts, 0) - counts).to(pool_x.device)

    # -------------------------------------------------------------------- sampling
    def sample_classes(self, pred: Tensor, n: int, mode: str) -> Tensor:
        """The class of each draw, int64 ``(B, n)``: ``pred`` itself (PL) or uniform over the
        other K - 1 classes (OL: ``(pred + 1 + U{0..K-2}) mod K``)."""
        if mode == "pl":
            return pred[:, None].expand(pred.shape[0], n)
        off = torch.randint(self.num_classes - 1, (pred.shape[0], n), device=pred.device)
        return (pred[:, None] + 1 + off) % self.num_classes

    def sample_pool(self, classes: Tensor) -> Tensor:
        """A uniform pool row of each requested class: int64 like ``classes``."""
        cnt = self.count[classes]
        u = torch.rand(classes.shape, device=classes.device)
        return self.start[classes] + torch.minimum((u * cnt).long(), cnt - 1)

    # ------------------------------------------------------------------ inference
    def mixed_probs(self, x: Tensor, pred: Tensor, lam: float, n: int, mode: str) -> Tensor:
        """Mean softmax over ``n`` mixed copies of each image: float32 ``(B, K)``.

        ``x`` ``(B, C, H, W)``; ``pred`` ``(B,)`` the labels the draws are conditioned on.
        """
        B = x.shape[0]
        j = self.sample_pool(self.sample_classes(pred, n, mode)).reshape(-1)  # row b*n + k
        owner = torch.arange(B, device=x.device).repeat_interleave(n)
        out = torch.zeros(B, self.num_classes, dtype=torch.float32, device=x.device)
        pool = self.pool.to(x.dtype)
        for s in range(0, B * n, self.chunk):  # chunks of rows bound the activation memory
            o = owner[s:s + self.chunk]
            mixed = ops.mix(x.index_select(0, o), pool, lam, j[s:s + self.chunk], check=False)
            p = F.softmax(self.model(mixed).float(), dim=1)
            out.index_add_(0, o, p)
        return out / n

    @contextlib.contextmanager
    def _eval(self):
        with eval_mode(self.model), torch.no_grad():
            yield

    def _plain(self, x: Tensor) -> Tensor:
        outs = [F.softmax(self.model(x[s:s + self.chunk]).float(), dim=1) for s in range(0, x.shape[0], self.chunk)]
        if outs[0].dim() != 2 or outs[0].shape[1] != self.num_classes:
            raise ValueError(f"the model outputs shape {tuple(outs[0].shape)} but num_classes={self.num_classes}; "
                             f"pass the model's number of classes")
        return torch.cat(outs)

    def _check(self, x: Tensor) -> Tensor:
        """The one validation of a public call's input (metadata, then one NaN/range scan)."""
        if not isinstance(x, Tensor) or x.dim() != self.pool.dim() or x.shape[1:] != self.pool.shape[1:]:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.pool.shape[1:]))}), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if x.shape[0] == 0:
            raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}); pass at least one image")
        if x.device != self.pool.device:
            raise ValueError(f"x is on {x.device} but the pool is on {self.pool.device}")
        if not x.is_floating_point():
            if x.dtype != torch.uint8:
                raise ValueError(f"x must be float images in [0, 1] (or uint8 in [0, 255]), got {x.dtype}")
            x = x.float().div_(255.0)
        want = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        if want is not None and x.dtype != want and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"x is {x.dtype} but the model's parameters are {want}; pass x.to({want})")
        _check_images(x, "x")
        return x

    def detect(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """MI-PL's detector: ``(score, flagged, plain)`` with ``score = p(pred | x) -
        p_MI-PL(pred | x)`` float32 ``(B,)`` (larger: more likely adversarial), ``flagged =
        score > threshold`` bool ``(B,)`` and the plain softmax ``(B, K)``."""
        x = self._check(x)
        with self._eval():
            plain = self._plain(x)
            pred = plain.argmax(1)
            pl = self.mixed_probs(x, pred, self.lam_pl, self.n_pl, "pl")
        score = plain.gather(1, pred[:, None]).squeeze(1) - pl.gather(1, pred[:, None]).squeeze(1)
        return score, score > self.threshold, plain

    def __call__(self, x: Tensor) -> Tensor:
        """Probabilities ``(B, K)`` float32 for images ``x`` ``(B, C, H, W)`` in [0, 1]."""
        x = self._check(x)
        if self.mode == "combined":
            _, flagged, plain = self.detect(x)
            rows = flagged.nonzero().squeeze(1)  # MI-OL runs on the flagged inputs only
            if rows.numel() == 0:
                return plain
            with self._eval():
                ol = self.mixed_probs(x.index_select(0, rows), plain.argmax(1).index_select(0, rows), self.lam,
                                      self.n, "ol")
            return plain.index_copy(0, rows, ol)
        with self._eval():
            pred = self._plain(x).argmax(1)
            return self.mixed_probs(x, pred, self.lam, self.n, self.mode)

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels, int64 ``(B,)``."""
        return self(x).argmax(1)

    def predict_loop(self, x: Tensor) -> Tensor:
        """The same probabilities computed one image and one draw at a time (the official
        evaluation's structure), for throughput comparisons and tests only."""
        x = self._check(x)
        mode = "ol" if self.mode == "combined" else self.mode
        rows = []
        with self._eval():
            for b in range(x.shape[0]):
                xb = x[b:b + 1]
                pred = self.model(xb).argmax(1)
                acc = torch.zeros(1, self.num_classes, device=x.device)
                for _ in range(self.n):
                    jb = self.sample_pool(self.sample_classes(pred, 1, mode)).reshape(1)
                    xm = self.lam * xb + (1 - self.lam) * self.pool[jb]
                    acc += F.softmax(self.model(xm).float(), dim=1)
                rows.append(acc / self.n)
        return torch.cat(rows)

    # ------------------------------------------------------------- adaptive attack
    def transform(self, batch: int, mode: str | None = None):
        """The EOT transform of MI for :func:`fastmix.attacks.eot_pgd`: maps the stacked
        iterate ``(n*B, ...)`` (row ``r*B + i`` is a copy of sample ``i``) to
        ``lam * x + (1 - lam) * x_s`` with a fresh ``x_s`` per row, drawn as MI draws it
        (conditioned on the model's current prediction of the iterate). Differentiable
        w.r.t. the iterate (the mix op's gradient is ``lam``)."""
        mode = mode or ("ol" if self.mode == "combined" else self.mode)
        lam = self.lam

        def fn(inp: Tensor) -> Tensor:
            n = inp.shape[0] // batch
            with torch.no_grad():
                pred = self.model(inp[:batch]).argmax(1)
            # classes for row r*B + i: sample (B, n), then lay out draw-major
            j = self.sample_pool(self.sample_classes(pred, n, mode)).t().reshape(-1)
            return ops.mix(inp, self.pool.to(inp.dtype), lam, j, check=False)
        return fn

    def adaptive_attack(self, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, n_adaptive: int,
                        loss="ce", random_start: bool = True, mode: str | None = None, **kw) -> Tensor:
        """The paper's adaptive attack on MI (section 4.4, appendix B.2, and the official
        ``attack_resnet_mixuptest_OL_adaptive.py``): draw ``N_A = n_adaptive`` mixing samples
        ``x_s,k`` *once* (as MI draws them, conditioned on the plain prediction of the clean
        ``x``), run ``N_A`` independent PGD attacks on the plain model, attack ``k`` starting
        from the mixed input ``u_k = lam x + (1 - lam) x_s,k`` (eps-ball around ``u_k``,
        image range [0, 1]), and add the mean perturbation: ``x_adv = clip(x + mean_k
        (u_k^adv - u_k), 0, 1)`` ("we average the generated perturbations over the adaptive
        samples as the final perturbation"). The ``N_A`` attacks run as one batch of
        ``N_A * B`` rows (row ``k*B + i``), which with BatchNorm in eval mode is the same as
        running them one by one.

        Departures from the official script, on purpose: the attacks use the true labels
        ``y`` (the script's cleverhans PGD attacks the model's prediction on each ``u_k``)
        and the result is clipped to [0, 1] (the script does not clip ``x + delta``).
        Weaker than :meth:`eot_attack` in principle (its samples are fixed, EOT redraws at
        every step); both are reported by :func:`evaluate`. Extra keyword arguments go to
        :func:`fastmix.attacks.pgd`. Returns ``(B, C, H, W)`` adversarial images.
        """
        from .. import attacks
        x = self._check(x)
        if isinstance(n_adaptive, bool) or not isinstance(n_adaptive, int) or n_adaptive < 1:
            raise ValueError(f"n_adaptive must be an int >= 1, got {n_adaptive!r}")
        mode = mode or ("ol" if self.mode == "combined" else self.mode)
        B, na = x.shape[0], n_adaptive
        with self._eval():
            pred = self._plain(x).argmax(1)
        j = self.sample_pool(self.sample_classes(pred, na, mode)).t().reshape(-1)  # row k*B + i: draw k of i
        rep = x.repeat(na, *([1] * (x.dim() - 1)))
        u = ops.mix(rep, self.pool.to(x.dtype), self.lam, j, check=False)
        yy = y.repeat(na) if isinstance(y, Tensor) else y
        # true labels (the official script attacks the model's prediction on each u_k)
        u_adv = attacks.pgd(self.model, u, yy, eps=eps, alpha=alpha, steps=steps, loss=loss,
                            random_start=random_start, **kw)
        delta = (u_adv - u).view(na, B, *x.shape[1:]).mean(0)
        return (x + delta).clamp_(0.0, 1.0)  # clipped to the image range (the script does not clip)

    def eot_attack(self, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, eot_iter: int,
                   eot_batch: int | None = None, loss="ce", **kw) -> Tensor:
        """EOT-PGD on MI (Athalye et al.'s Expectation over Transformation, METHODS.md
        section 3): PGD whose gradient at every step is summed over ``eot_iter`` *fresh*
        draws of ``x_s``; at least as strong as the paper's :meth:`adaptive_attack`, which
        fixes its samples. Returns the adversarial images ``(B, C, H, W)``."""
        from .. import attacks
        x = self._check(x)
        return attacks.eot_pgd(self.model, x, y, transform=self.transform(x.shape[0]), eot_iter=eot_iter,
                               eot_batch=eot_batch, eps=eps, alpha=alpha, steps=steps, loss=loss, **kw)


def _check_images(x: Tensor, name: str) -> None:
    """One scan (a single host read) of a public input: no NaN/inf, values in [0, 1]."""
    lo, hi = torch.stack(torch.aminmax(x.detach())).float().tolist()  # one host read
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if lo < 0.0 or hi > 1.0:
        hint = " (images in [0, 255]? divide by 255)" if hi > 1.0 else ""
        raise ValueError(f"{name} must be images in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")


def evaluate(model: nn.Module, x: Tensor, y: Tensor, pool_x: Tensor, pool_y: Tensor, *, attacks=("clean", "pgd20"),
             eps: float, alpha: float | None = None, mode: str = "ol", lam: float | None = None, n: int | None = None,
             threshold: float = 0.2, eot_iter: int = 0, batch_size: int = 250, seed: int = 0) -> dict:
    """Accuracy of ``model`` with and without Mixup Inference (what ``fastmix eval --mi`` prints).

    For each attack name (``clean``, ``fgsm``, ``pgdK``, ``cwK``; see
    :func:`fastmix.attacks.parse_attack`) the adversarial images are crafted on the plain
    model (the *oblivious* threat model) and both the plain prediction (``name``) and MI's
    (``name+mi``) are scored. With ``eot_iter = N_A > 0`` every PGD/CW attack is also run
    *adaptively* against MI (``eot-name+mi``: EOT-PGD whose gradient sums ``N_A`` draws of
    ``x_s`` per step, :meth:`MixupInference.eot_attack`) and with the paper's own adaptive
    attack (``adaptive-name+mi``: ``N_A`` PGD attacks on fixed mixed inputs, mean
    perturbation, :meth:`MixupInference.adaptive_attack`). ``mode="combined"`` also reports
    the share of inputs its detector flags (``name:flagged``).

    Args:
        x, y: ``(B, C, H, W)`` float images in [0, 1] and int64 labels; pool_x, pool_y: MI's
            clean pool (other held-out images). Returns ``{name: accuracy in [0, 1]}``.
    """
    from ..attacks.specs import parse_attack
    mi = MixupInference(model, pool_x, pool_y, mode=mode, lam=lam, n=n, threshold=threshold)
    alpha = eps / 4 if alpha is None else alpha
    out: dict = {}
    with eval_mode(model):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for name in attacks:
                atk = parse_attack(name, eps, alpha)
                hit = {name: 0, f"{name}+mi": 0}
                adaptive = atk is not None and eot_iter > 0 and not name.startswith("fgsm")
                if adaptive:
                    hit[f"eot-{name}+mi"] = 0
                    hit[f"adaptive-{name}+mi"] = 0
                flagged = 0
                for s in range(0, x.shape[0], batch_size):
                    xb, yb = x[s:s + batch_size], y[s:s + batch_size]
                    xa = xb if atk is None else atk(model, xb, yb)
                    with torch.no_grad():
                        hit[name] += int((model(xa).argmax(1) == yb).sum())
                    hit[f"{name}+mi"] += int((mi(xa).argmax(1) == yb).sum())
                    if mode == "combined":
                        flagged += int(mi.detect(xa)[1].sum())
                    if adaptive:
                        k = int(name.lstrip("pgdcw"))
                        loss = "cw" if name.startswith("cw") else "ce"
                        xe = mi.eot_attack(xb, yb, eps=eps, alpha=alpha, steps=k, eot_iter=eot_iter, loss=loss)
                        hit[f"eot-{name}+mi"] += int((mi(xe).argmax(1) == yb).sum())
                        xp = mi.adaptive_attack(xb, yb, eps=eps, alpha=alpha, steps=k, n_adaptive=eot_iter, loss=loss)
                        hit[f"adaptive-{name}+mi"] += int((mi(xp).argmax(1) == yb).sum())
                out.update({k: v / x.shape[0] for k, v in hit.items()})
                if mode == "combined":
                    out[f"{name}:flagged"] = flagged / x.shape[0]
    return out
