"""Attack classes with torchattacks' call contract (torchattacks 3.5), on fastmix's engine.

``atk = fastmix.attacks.PGD(model, eps=8/255, alpha=2/255, steps=10)``;
``adv = atk(images, labels)``: ``images`` ``(N, C, H, W)`` float in [0, 1], ``labels``
``(N,)`` int64; returns ``(N, C, H, W)`` in [0, 1] on the model's device (``atk.device``).
As in torchattacks:

- the model runs in eval mode during the attack unless ``set_model_training_mode(...)``
  says otherwise; unlike torchattacks every module's mode and every parameter's
  ``requires_grad`` is restored exactly afterwards, also when the attack raises;
- ``set_normalization_used(mean, std)``: the model expects normalised inputs; the attack
  then takes and returns *normalised* images (it de-normalises them, attacks in [0, 1] and
  normalises the result), torchattacks 3.5's contract;
- ``set_mode_targeted_random()``, ``set_mode_targeted_least_likely(kth_min)``,
  ``set_mode_targeted_by_label()`` (the labels passed are the targets),
  ``set_mode_targeted_by_function(fn)`` and ``set_mode_default()``; the target labels are
  computed in eval mode without gradients, vectorised (torchattacks loops per sample).

Arguments are validated (``ValueError`` naming the argument and value): eps < 0, steps < 1,
wrong shapes or dtypes, images outside [0, 1].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .fold import fold_bn as fold_bn_context
from ..ops import _validate as validate
from .apgd import apgd
from .checks import check_images, check_int
from .functional import pgd
from .modes import attack_mode, autocast_dtype

__all__ = ["Attack", "PGD", "PGDL2", "FGSM", "CW", "APGD", "APGDT", "torchattacks_norm", "check_number"]

_RANGE_TOL = 1e-5  # de-normalised images may leave [0, 1] by rounding only


class _Normalize(nn.Module):
    """``model((x - mean) / std)``: lets the attacks work in [0, 1] for a model that
    expects normalised inputs. One per attack (and device), reused across calls, so a
    captured CUDA graph keyed by it is replayed, not re-captured."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def check_number(name, v, lo=0.0):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= lo) or v != v or v == float("inf"):
        raise ValueError(f"{name} must be a finite number >= {lo}, got {v!r}")
    return float(v)


class Attack:
    """Base class: torchattacks' ``Attack`` contract on fastmix's engine.

    Subclasses implement ``forward(images, labels)`` on ``self._net(images.device)`` (the
    model, behind the normalisation when one is set) with images in [0, 1].

    Extra keyword arguments every subclass accepts (fastmix's fast paths):
        autocast: None, "bf16" or "fp16".  channels_last: bool.
        cuda_graph: capture the attack loop in a CUDA graph per input shape (GPU only).
        fold_bn: fold each eval-mode BatchNorm into the convolution before it for the
            duration of each call (:func:`fastmix.attacks.fold.fold_bn`; the model is
            untouched afterwards).
    """

    def __init__(self, name: str, model: nn.Module, *, autocast=None, channels_last: bool = False,
                 cuda_graph: bool = False, fold_bn: bool = False):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.attack = name
        self.model = model
        self.model_name = type(model).__name__
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = None
        self.attack_mode = "default"
        self.supported_mode = ["default"]
        self.targeted = False
        self._target_map_function = None
        self._kth_min = 1
        self.normalization_used = None
        self._wrapper = None  # the cached _Normalize around self.model
        self._model_training = False
        self._batchnorm_training = False
        self._dropout_training = False
        autocast_dtype(autocast)  # validates
        self._fast = dict(autocast=autocast, channels_last=bool(channels_last), cuda_graph=bool(cuda_graph),
                          fold_bn=bool(fold_bn))

    # ----------------------------------------------------------------- torchattacks API
    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def set_model(self, model: nn.Module):
        self.model = model
        self.model_name = type(model).__name__
        self._wrapper = None

    def set_device(self, device):
        self.device = torch.device(device) if device is not None else None

    def get_logits(self, inputs: Tensor) -> Tensor:
        """Logits for images in [0, 1] (normalised first when a normalisation is set)."""
        return self._net(inputs.device)(inputs)

    def set_normalization_used(self, mean, std):
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != std.numel() or mean.numel() == 0:
            raise ValueError(f"mean and std must have one value per channel, got {mean.numel()} and {std.numel()}")
        if not bool((std > 0).all()):
            raise ValueError(f"std must be > 0, got {std.tolist()}")
        n = mean.numel()
        self.normalization_used = {"mean": mean.reshape(1, n, 1, 1), "std": std.reshape(1, n, 1, 1)}
        self._wrapper = None

    def normalize(self, inputs: Tensor) -> Tensor:
        m, s = (self.normalization_used[k].to(inputs.device) for k in ("mean", "std"))
        return (inputs - m) / s

    def inverse_normalize(self, inputs: Tensor) -> Tensor:
        m, s = (self.normalization_used[k].to(inputs.device) for k in ("mean", "std"))
        return inputs * s + m

    def get_mode(self) -> str:
        return self.attack_mode

    def set_mode_default(self):
        self.attack_mode, self.targeted = "default", False
        print("Attack mode is changed to 'default.'")

    def _set_mode_targeted(self, mode: str, quiet: bool):
        if "targeted" not in self.supported_mode:
            raise ValueError("Targeted mode is not supported.")
        self.targeted, self.attack_mode = True, mode
        if not quiet:
            print(f"Attack mode is changed to '{mode}'.")

    def set_mode_targeted_by_function(self, target_map_function, quiet: bool = False):
        """Targets = ``target_map_function(images, labels)``."""
        self._set_mode_targeted("targeted(custom)", quiet)
        self._target_map_function = target_map_function

    def set_mode_targeted_random(self, quiet: bool = False):
        """Targets drawn uniformly among the classes other than the label."""
        self._set_mode_targeted("targeted(random)", quiet)
        self._target_map_function = self.get_random_target_label

    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = False):
        """Target = the class with the ``kth_min``-th smallest logit other than the label."""
        check_int("kth_min", kth_min, 1)
        self._set_mode_targeted("targeted(least-likely)", quiet)
        self._kth_min = kth_min
        self._target_map_function = self.get_least_likely_label

    def set_mode_targeted_by_label(self, quiet: bool = False):
        """The labels passed to the call are the target classes."""
        self._set_mode_targeted("targeted(label)", quiet)
        self._target_map_function = "function is a string"

    def set_model_training_mode(self, model_training: bool = False, batchnorm_training: bool = False,
                                dropout_training: bool = False):
        """The model's mode during the attack (torchattacks' flags): ``model.train()`` when
        ``model_training``, with BatchNorm and Dropout modules kept in eval unless their own
        flag is set; ``model.eval()`` otherwise."""
        self._model_training = bool(model_training)
        self._batchnorm_training = bool(batchnorm_training)
        self._dropout_training = bool(dropout_training)

    def get_target_label(self, inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        if self._target_map_function is None:
            raise ValueError("target_map_function is not initialized by set_mode_targeted.")
        if self.attack_mode == "targeted(label)":
            return labels
        return self._target_map_function(inputs, labels)

    @torch.no_grad()
    def _eval_logits(self, inputs: Tensor) -> Tensor:
        with attack_mode(self.model, "eval"):
            return self.get_logits(inputs)

    @torch.no_grad()
    def get_random_target_label(self, inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        logits = self._eval_logits(inputs)
        labels = logits.argmax(dim=1) if labels is None else labels
        C = logits.shape[1]
        shift = torch.randint(1, C, labels.shape, device=labels.device)
        return (labels + shift) % C

    @torch.no_grad()
    def get_least_likely_label(self, inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        logits = self._eval_logits(inputs).float()
        labels = logits.argmax(dim=1) if labels is None else labels
        if self._kth_min > logits.shape[1] - 1:
            raise ValueError(f"kth_min must be at most C - 1 = {logits.shape[1] - 1}, got {self._kth_min}")
        masked = logits.scatter(1, labels[:, None], float("inf"))
        return masked.kthvalue(self._kth_min, dim=1).indices

    # -------------------------------------------------------------------------- call
    def _net(self, device=None) -> nn.Module:
        """The module the attack runs: the model, or (with a normalisation set) one cached
        wrapper that normalises first, its mean/std on ``device`` (default: the model's)."""
        if self.normalization_used is None:
            return self.model
        device = torch.device(device) if device is not None else (self.device or torch.device("cpu"))
        net = self._wrapper
        if net is None or net.model is not self.model or net.mean.device != device:
            net = self._wrapper = _Normalize(self.model, self.normalization_used["mean"].to(device),
                                             self.normalization_used["std"].to(device))
        net.training = self.model.training  # the wrapper alone; .train() would recurse
        return net

    def _mode(self):
        return (self._model_training, self._batchnorm_training, self._dropout_training)

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        validate.float_tensor("images", images, min_dim=2)
        if images.shape[0] == 0:
            raise ValueError(f"images must hold at least one sample, got shape {tuple(images.shape)}")
        dev = self.device or images.device
        images = images.detach().to(dev)
        self._check_dtype(images)
        if self.normalization_used is not None:
            images = self.inverse_normalize(images)
            validate.finite("images", images)
            validate.in_range("images", images, -_RANGE_TOL, 1 + _RANGE_TOL,
                         " once de-normalised (torchattacks' set_normalization_used contract: "
                         "the attack takes normalised images)")
            images = images.clamp(0.0, 1.0)  # removes rounding of the de-normalisation only
        else:
            check_images("images", images, True)
        if labels is not None:
            validate.index_tensor("labels", labels, images.shape[0])
            labels = labels.detach().to(dev).long()
        if labels is None:  # attack the model's own prediction
            labels = self._eval_logits(images).argmax(dim=1)
        if self.targeted:
            labels = self.get_target_label(images, labels).to(dev).long()
        with _reject_nonfinite_output(self.model), fold_bn_context(self.model, self._fast["fold_bn"]):
            adv = self.forward(images, labels)
        return adv if self.normalization_used is None else self.normalize(adv)

    def _check_dtype(self, images: Tensor) -> None:
        """The images' precision must be the model's (the attacks do not cast either one):
        a clear error instead of a dtype mismatch deep inside the model or torchattacks."""
        want = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        if want is None or images.dtype == want or self._fast.get("autocast"):
            return
        if want not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"the model's parameters are {want}; fastmix attacks run float32, bfloat16 or float16 "
                             f"models: pass model.float() (and float32 images)")
        raise ValueError(f"images are {images.dtype} but the model's parameters are {want}: pass "
                         f"images.to({want}) (or autocast='bf16'/'fp16' for mixed precision)")

    def __repr__(self):
        skip = {"model", "attack", "supported_mode"}
        items = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k not in skip}
        items["attack_mode"] = self.attack_mode
        items["normalization_used"] = self.normalization_used is not None
        return f"{self.attack}(" + ", ".join(f"{k}={v}" for k, v in items.items()) + ")"


class _reject_nonfinite_output:
    """While an attack runs: the first forward of ``model`` whose output is not finite raises
    ValueError. One value scan (one host read) per attack call: the hook removes itself
    after the first output it sees, and it never reads inside a CUDA-graph capture."""

    def __init__(self, model: nn.Module):
        self.model, self.handle = model, None

    def _hook(self, module, inputs, output):
        if not isinstance(output, Tensor) or not output.is_floating_point():
            return
        if output.is_cuda and torch.cuda.is_current_stream_capturing():
            return
        self.handle.remove()
        if not bool(torch.isfinite(output.detach()).all()):
            raise ValueError("the model returned NaN or infinite logits for the attack's input (checked once per "
                             "attack call): no adversarial images can be computed; check the model's weights and "
                             "inputs")

    def __enter__(self):
        self.handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        return False


def check_seed(seed, allow_none: bool = True):
    """A random seed: an int >= 0 (or None: torch's global RNG)."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0{' or None' if allow_none else ''}, got {seed!r}")
    return seed


class PGD(Attack):
    """L-inf PGD (Madry et al.) with cross-entropy: ``steps`` sign steps of ``alpha`` from
    a uniform random start (``random_start``) in the eps-ball. Targeted modes supported.

    Args: eps >= 0 (default 8/255), alpha >= 0 (2/255), steps >= 1 (10), random_start (True).
    """

    _norm = "linf"
    _loss = "ce"

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True, **fast):
        super().__init__(type(self).__name__, model, **fast)
        self.eps = check_number("eps", eps)
        self.alpha = check_number("alpha", alpha)
        self.steps = check_int("steps", steps, 1)
        self.random_start = bool(random_start)
        self.supported_mode = ["default", "targeted"]

    def _extra(self) -> dict:
        return {}

    def forward(self, images, labels):
        return pgd(self._net(images.device), images, labels, eps=self.eps, alpha=self.alpha, steps=self.steps,
                   norm=self._norm, loss=self._loss, random_start=self.random_start, targeted=self.targeted,
                   bn_mode=self._mode(), check=True, **self._extra(), **self._fast)


class PGDL2(PGD):
    """L2 PGD: normalised-gradient steps, projection onto the L2 ball (torchattacks'
    ``PGDL2`` defaults: eps 1.0, alpha 0.2, 10 steps)."""

    _norm = "l2"

    def __init__(self, model, eps=1.0, alpha=0.2, steps=10, random_start=True, **fast):
        super().__init__(model, eps, alpha, steps, random_start, **fast)


class FGSM(PGD):
    """FGSM (Goodfellow et al.): one step of size eps, no random start."""

    def __init__(self, model, eps=8 / 255, **fast):
        super().__init__(model, eps=eps, alpha=eps, steps=1, random_start=False, **fast)


class CW(PGD):
    """The L-inf CW attack of the adversarial-training literature ("CW-20"): PGD on the
    Carlini-Wagner margin ``min(max_{j!=y} z_j - z_y, kappa)`` (targeted: ``min(z_t -
    max_{j!=t} z_j, kappa)``). Not torchattacks' L2 C&W optimisation (no ``c``, no Adam):
    ``alpha`` plays the role of its learning rate.

    Args: eps (8/255), alpha (2/255), steps (20), kappa >= 0 (0), random_start (True).
    """

    _loss = "cw"

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=20, kappa=0.0, random_start=True, **fast):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, **fast)
        self.kappa = check_number("kappa", kappa)

    def _extra(self):
        return {"confidence": self.kappa}


def torchattacks_norm(norm):
    if norm not in ("Linf", "L2"):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    return "linf" if norm == "Linf" else "l2"


class APGD(Attack):
    """APGD-CE / APGD-DLR (Croce and Hein 2020) with torchattacks' signature.

    Args: norm ('Linf' | 'L2'), eps (8/255), steps (10), n_restarts (1), seed (0),
    loss ('ce' | 'dlr'), eot_iter (1), rho (0.75), verbose (False).
    """

    def __init__(self, model, norm="Linf", eps=8 / 255, steps=10, n_restarts=1, seed=0, loss="ce",
                 eot_iter=1, rho=0.75, verbose=False, **fast):
        super().__init__(type(self).__name__, model, **fast)
        self.norm = norm
        self._fm_norm = torchattacks_norm(norm)
        self.eps = check_number("eps", eps)
        self.steps = check_int("steps", steps, 1)
        self.n_restarts = check_int("n_restarts", n_restarts, 1)
        self.seed = check_seed(seed)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        self.loss = loss
        self.eot_iter = check_int("eot_iter", eot_iter, 1)
        self.rho = check_number("rho", rho)
        self.verbose = verbose

    def _apgd(self, images, labels, **kw):
        fast = {k: v for k, v in self._fast.items() if k not in ("cuda_graph", "fold_bn")}
        return apgd(self._net(images.device), images, labels, eps=self.eps, steps=self.steps, norm=self._fm_norm,
                    restarts=self.n_restarts, rho=self.rho, seed=self.seed, eot_iter=self.eot_iter,
                    bn_mode=self._mode(), check=True, verbose=self.verbose, **fast, **kw)

    def forward(self, images, labels):
        return self._apgd(images, labels, loss=self.loss)


class APGDT(APGD):
    """APGD-T: targeted DLR against each of the ``n_classes - 1`` most likely other classes.

    Args: norm, eps, steps (10), n_restarts (1), seed (0), eot_iter (1), rho (0.75),
    verbose, n_classes (10).
    """

    def __init__(self, model, norm="Linf", eps=8 / 255, steps=10, n_restarts=1, seed=0, eot_iter=1,
                 rho=0.75, verbose=False, n_classes=10, **fast):
        super().__init__(model, norm, eps, steps, n_restarts, seed, "dlr", eot_iter, rho, verbose, **fast)
        self.n_classes = check_int("n_classes", n_classes, 2)
        self.n_target_classes = n_classes - 1

    def forward(self, images, labels):
        return self._apgd(images, labels, loss="dlr", targeted=True, n_target_classes=self.n_target_classes)
