"""GIF: the Guided Interpolation Framework (Chen et al. 2022), around AT, TRADES, GAIRAT
or FastAT; and the machinery AT-mixup (the paper's Algorithm 5) shares with it."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import ops
from ._mixup import parse_lam_dist, sample_lam
from .base import Method, StepOutput, build, register

BASES = ("at", "trades", "gairat", "fastat")


@register
class GIF(Method):
    """Adversarial training on ``m`` originals plus ``m'`` interpolations of *attackable*
    pairs per step (Algorithm 1; Algorithms 2-4 for the other bases).

    State across epochs: the attackable set ``A`` (a bool mask over the training set;
    ``A_0`` = everything). Epoch ``t``:

    - each step draws ``m' = round(interp_ratio * m)`` pairs ``(i, j)`` uniformly from
      ``A_{t-1}``, mixes them with ``lam = 0.5`` (Eq. 9) through :func:`fastmix.ops.mix`,
      target ``SoftTarget(y_i, y_j, 0.5)``;
    - the ``m + m'`` samples go through the *base method's* ``loss`` as one batch: its
      attack runs against the soft targets and its loss is the mean over all ``m + m'``
      (for GAIRAT: the weights are normalised over all of them, Algorithm 3);
    - an original is added to ``A_t`` when its adversarial prediction is wrong (Eq. 4);
      an interpolated sample counts as attackable when its adversarial prediction differs
      from both ``y_i`` and ``y_j`` (Eq. 7); both ratios are logged every epoch
      (``attackable_orig``, ``attackable_interp``: the paper's Figure 1);
    - at the end of the epoch the per-rank masks are OR-ed across DDP ranks (an
      all-reduced sum), so every rank holds the same ``A_t``; it is saved in checkpoints.

    During the first ``burn_in`` epochs only originals are trained on (the set is still
    tracked, so interpolation starts from the last burn-in epoch's set).

    With ``base="gairat"``, kappa (the steps at which the iterate is still classified
    correctly) is counted against ``y_i`` for an interpolated sample: the engine's label
    of a soft target is its ``ya``, and Algorithm 3 does not say what "correct" means for
    a 0.5/0.5 label.

    The interpolated samples are read unaugmented from the training set through
    ``ctx.fetch`` (the trainer provides it). If ``A_{t-1}`` is empty, pairs are drawn from
    the whole set, with a warning.

    Args:
        base: ``at``, ``trades``, ``gairat`` or ``fastat``: whose attack, loss and BN mode
            are used (the shared eps/alpha/steps/random_start/attack_bn go to it).
        base_opts: extra options of the base method (e.g. ``{"beta": 6.0}`` for TRADES,
            ``{"lam": -1.0, "burn_in": 0}`` for GAIRAT).
        interp_ratio: ``m' / m`` (1.0: the paper's 64 + 64).
        burn_in: epochs of originals only; None: half the run (the paper's 30 of 60).
        lam_dist: the interpolation weight; ``"const:0.5"`` for GIF (Eq. 9).
    """

    name = "gif"
    pool_kind = "attackable"  # AT-mixup: "all"
    default_lam = "const:0.5"
    default_burn_in: int | None = None

    def __init__(self, *, base: str = "at", base_opts: dict | None = None, interp_ratio: float = 1.0,
                 burn_in: int | None = -1, lam_dist=None, **kw):
        super().__init__(**kw)
        if base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}, got {base!r}")
        if not (isinstance(interp_ratio, (int, float)) and interp_ratio > 0):
            raise ValueError(f"interp_ratio must be a number > 0, got {interp_ratio!r}")
        if burn_in == -1:  # the class default (GIF: half the run; AT-mixup: none)
            burn_in = self.default_burn_in
        if burn_in is not None and (not isinstance(burn_in, int) or burn_in < 0):
            raise ValueError(f"burn_in must be None or an int >= 0, got {burn_in!r}")
        self.base, self.base_opts = base, dict(base_opts or {})
        self.interp_ratio, self.burn_in = float(interp_ratio), burn_in
        self.lam_dist = self.default_lam if lam_dist is None else lam_dist
        self._lam = parse_lam_dist(self.lam_dist)
        # The base method gets the shared options as given (FastAT turns alpha=None into 1.25 eps).
        self.inner = build(base, **kw, **self.base_opts)
        # Report the attack the base method actually runs (hparams() rebuilds from these).
        self.attack_bn = self.inner.attack_bn
        self.eps, self.alpha, self.steps = self.inner.eps, self.inner.alpha, self.inner.steps
        self.random_start = self.inner.random_start
        self.attackable: Tensor | None = None  # A_{t-1}, bool (num_train,)

    # ------------------------------------------------------------------ life cycle
    def bind(self, ctx) -> None:
        super().bind(ctx)
        self.inner.bind(ctx)
        if self.attackable is None:
            self.attackable = torch.ones(ctx.num_train, dtype=torch.bool, device=ctx.device)  # A_0 = S
        self._reset_epoch()

    def _reset_epoch(self):
        dev = self.ctx.device
        self._current = torch.zeros(self.ctx.num_train, dtype=torch.bool, device=dev)  # A_t being built
        # attackable originals / interpolated: device counters (no sync); the sample counts are host ints
        self._att = torch.zeros(2, dtype=torch.float64, device=dev)
        self._seen = [0, 0]

    @property
    def interpolating(self) -> bool:
        burn = self.ctx.epochs // 2 if self.burn_in is None else self.burn_in
        return self.epoch > burn

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        self.inner.start_epoch(epoch)
        self._reset_epoch()
        # One host read per epoch: the index list of the pool the pairs are drawn from.
        if self.pool_kind == "all":
            self._pool = None
        else:
            pool = self.attackable.nonzero().squeeze(1).cpu()
            if pool.numel() == 0:
                if self.interpolating:
                    warnings.warn(f"{self.name}: the attackable set is empty at epoch {epoch}; "
                                  f"drawing interpolation pairs from the whole training set", RuntimeWarning)
                pool = None
            self._pool = pool

    def draw_pairs(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` pairs ``(i, j)`` of dataset indices, int64 ``(n,)`` each on ``ctx.device``:
        uniform over ``A_{t-1}`` (GIF) or over the whole set (AT-mixup, an empty ``A``),
        with replacement, from the global CPU generator (per-rank seeded, checkpointed)."""
        if self._pool is None:
            ij = torch.randint(self.ctx.num_train, (2, n))
        else:
            ij = self._pool[torch.randint(self._pool.numel(), (2, n))]
        ij = ij.to(self.ctx.device)
        return ij[0], ij[1]

    def interpolate(self, n: int):
        """``n`` interpolated samples: ``(x_bar (n, C, H, W), SoftTarget, y_i, y_j)``."""
        from ..attacks import SoftTarget
        fetch = getattr(self.ctx, "fetch", None)
        if fetch is None:
            raise ValueError(f"{self.name} needs ctx.fetch (training samples by index); the trainer provides it")
        i, j = self.draw_pairs(n)
        xs, ys = fetch(torch.cat([i, j]))
        lam = sample_lam(*self._lam, n, xs.device)
        # x_bar_k = lam_k x_i + (1 - lam_k) x_j: row k of the first half with row n + k of the block
        x_bar = ops.mix(xs[:n], xs, lam, torch.arange(n, 2 * n, device=xs.device), check=False)
        yi, yj = ys[:n], ys[n:]
        return x_bar, SoftTarget(yi, yj, lam, None, None), yi, yj

    def loss(self, x, y, idx) -> StepOutput:
        from ..attacks import SoftTarget
        B = x.shape[0]
        if not self.interpolating:
            out = self.inner.loss(x, y, idx)
            self._track(out.logits[:B], y, idx, None, None)
            return StepOutput(out.loss, out.logits[:B], y, stats=out.stats)
        n = max(1, int(round(self.interp_ratio * B)))
        x_bar, t_bar, yi, yj = self.interpolate(n)
        ones = torch.ones(B, dtype=torch.float32, device=x.device)
        x_all = torch.cat([x, x_bar.to(x.dtype)])
        target = SoftTarget(torch.cat([y, t_bar.ya]), torch.cat([y, t_bar.yb]), torch.cat([ones, t_bar.w]),
                            None, None)
        idx_all = torch.cat([idx, torch.full((n,), -1, dtype=idx.dtype, device=idx.device)])
        out = self.inner.loss(x_all, target, idx_all)
        self._track(out.logits[:B], y, idx, out.logits[B:], (yi, yj))
        # The trainer's train_acc counts the originals: 1 - train_acc is their attackable ratio.
        return StepOutput(out.loss, out.logits[:B], y, stats=out.stats)

    def _track(self, logits_orig, y, idx, logits_bar, pair_labels):
        pred = logits_orig.detach().argmax(1)
        att = pred != y                                   # Eq. 4 on the originals
        self._current[idx] |= att
        self._att[0] += att.sum()
        self._seen[0] += y.shape[0]
        if logits_bar is not None:
            pb = logits_bar.detach().argmax(1)
            yi, yj = pair_labels
            att_bar = (pb != yi) & (pb != yj)             # Eq. 7
            self._att[1] += att_bar.sum()
            self._seen[1] += pb.shape[0]

    def end_epoch(self, epoch: int, probe=None) -> dict:
        # A_t: OR over ranks (each rank saw its shard of the indices), identical on every rank.
        merged = self.ctx.all_reduce_sum(self._current.to(torch.int32)) > 0
        self.attackable = merged
        seen = torch.tensor(self._seen, dtype=torch.float64, device=self._att.device)
        att_o, att_i, n_o, n_i = self.ctx.all_reduce_sum(torch.cat([self._att, seen])).tolist()
        diag = {"attackable_orig": att_o / n_o if n_o else None,
                "attackable_interp": att_i / n_i if n_i else None,
                "attackable_set": float(merged.sum()) / merged.numel()}
        diag.update(self.inner.end_epoch(epoch, probe))
        return diag

    def state_dict(self) -> dict:
        return {"attackable": self.attackable.cpu().clone(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        a = state["attackable"]
        if a.dtype != torch.bool or a.dim() != 1 or (self.ctx is not None and a.numel() != self.ctx.num_train):
            raise ValueError(f"attackable must be a bool mask over the {self.ctx.num_train if self.ctx else '?'} "
                             f"training samples, got {a.dtype} {tuple(a.shape)}")
        self.attackable = a.to(self.ctx.device if self.ctx is not None else "cpu")
        self.inner.load_state_dict(state.get("inner", {}))
