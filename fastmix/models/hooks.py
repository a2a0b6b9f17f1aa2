"""Layers of a user's model by name: penultimate features and manifold-mixup points on any
``nn.Module``, through forward hooks on ``named_modules()`` (the model's class is not changed).

fastmix's own models (:class:`fastmix.models.MixableNet`) have ``features(x)`` and the
mixing points ``forward(x, mix_layer=0|1|2, mix_fn=...)`` built in; a model of your own
needs neither. Name the module instead, with the method options that are part of the
contract (``--opt features=pool`` on the command line):

- ``features="<module name>"`` (AIT): the module whose output is the feature vector
  (flattened to ``(B, F)``); :class:`FeatureModel` gives the model a ``features(x)``.
- ``mix_layers=("<module name>", ...)`` (manifold mixup, ``iat-manifold``): mix right after
  these modules; the input is always a candidate too. :func:`mix_after` applies a mixing
  function to the output of one named module during one forward.

A name is a key of ``dict(model.named_modules())`` (``"layer2"``, ``"layer2.1.conv2"``,
``"blocks.3"``). The named module must run exactly once per forward and return a tensor;
otherwise a ValueError says which module and how many times it ran.

>>> net = MyNet()                                   # any images -> logits module
>>> fm = FeatureModel(net, "pool")                  # fm.features(x) == output of net.pool
>>> with mix_after(net, "layer1", lambda h: fastmix.ops.mix(h, h, lam, perm)):
...     logits = net(x)                             # mixed after layer1
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Iterator, Sequence

from torch import Tensor, nn

INPUT = "input"  # the name of the mixing point before the first layer (also accepted as 0)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    return model


def eager(model):
    """``model`` without its ``torch.compile`` wrappers (DDP kept): a compiled graph does not
    see forward hooks added after it was traced, so the forwards that need a hook run the
    eager module (the same parameters)."""
    seen = 0
    while isinstance(getattr(model, "_orig_mod", None), nn.Module) and seen < 8:
        model, seen = model._orig_mod, seen + 1
    return model


def module_names(model: nn.Module) -> list[str]:
    """The names ``features=`` and ``mix_layers=`` accept for ``model`` (every submodule)."""
    return [n for n, _ in unwrap(model).named_modules() if n]


def _listing(model: nn.Module, limit: int = 24) -> str:
    names = module_names(model)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def resolve(model: nn.Module, name: str, option: str) -> nn.Module:
    """The submodule called ``name``; ValueError naming ``option`` and the valid names otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{option} must be a module name (a key of model.named_modules()), got {name!r}")
    mods = dict(unwrap(model).named_modules())
    if name not in mods:
        raise ValueError(f"{option}={name!r}: {type(unwrap(model)).__name__} has no module {name!r}; "
                         f"its modules: {_listing(model)}")
    return mods[name]


def has_mix_points(model: nn.Module) -> bool:
    """Whether ``model``'s forward takes fastmix's ``mix_layer``/``mix_fn`` arguments
    (fastmix's own models do; a user's model usually does not)."""
    try:
        params = inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False
    return "mix_layer" in params and "mix_fn" in params


def has_features(model: nn.Module) -> bool:
    """Whether ``model`` has a callable ``features(x)`` of its own."""
    return callable(getattr(unwrap(model), "features", None))


class _Once:
    """A forward hook that acts on the first call of a module in one forward and counts calls."""

    def __init__(self, name: str, option: str, fn: Callable[[Tensor], Tensor] | None):
        self.name, self.option, self.fn = name, option, fn
        self.calls = 0
        self.output: Tensor | None = None

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls > 1:
            return None
        if not isinstance(output, Tensor):
            raise ValueError(f"{self.option}={self.name!r}: module {self.name!r} ({type(module).__name__}) returns "
                             f"{type(output).__name__}, not a tensor; name a module that returns one")
        if self.fn is not None:
            output = self.fn(output)
        self.output = output
        return output

    def check(self) -> None:
        if self.calls != 1:
            what = "did not run" if self.calls == 0 else f"ran {self.calls} times"
            raise ValueError(f"{self.option}={self.name!r}: module {self.name!r} {what} in one forward; name a "
                             f"module that runs exactly once per forward (a block, not a shared activation; and "
                             f"call the eager module, not a torch.compile'd one: compiled graphs skip new hooks)")


@contextlib.contextmanager
def mix_after(model: nn.Module, name: str, fn: Callable[[Tensor], Tensor], *,
              option: str = "mix_layers") -> Iterator[None]:
    """Inside the ``with`` block, the output ``h`` of ``model``'s module ``name`` is replaced by
    ``fn(h)`` (manifold mixup: ``fn = lambda h: fastmix.ops.mix(h, h, lam, perm)``).

    ``name == "input"`` is not handled here (mix the input before calling the model). The
    hook is removed on exit; if the module did not run exactly once, exiting raises a
    ValueError naming ``option``.
    """
    hook = _Once(name, option, fn)
    handle = resolve(model, name, option).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    hook.check()


class FeatureModel(nn.Module):
    """``model`` with a ``features(x)``: the output of its module ``name``, flattened to ``(B, F)``.

    ``forward(x)`` is ``model(x)``; ``features(x)`` runs the same full forward once with a hook
    that keeps the named module's output (so the layers after it run too: for the
    penultimate layer, only the classifier head), eagerly if ``model`` is compiled. Parameters and modes are the model's
    own (an attack's ``attack_mode`` applied to this wrapper reaches every submodule).

    Args:
        model: any module mapping ``(B, C, H, W)`` images to logits.
        name: a key of ``model.named_modules()`` (e.g. ``"pool"``, ``"layer4"``).
        option: the option name errors refer to (``features``).
    """

    def __init__(self, model: nn.Module, name: str, option: str = "features"):
        super().__init__()
        resolve(model, name, option)
        self.model, self.name, self.option = model, name, option

    def features(self, x: Tensor) -> Tensor:
        hook = _Once(self.name, self.option, None)
        handle = resolve(self.model, self.name, self.option).register_forward_hook(hook)
        try:
            eager(self.model)(x)
        finally:
            handle.remove()
        hook.check()
        return hook.output.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def feature_model(model: nn.Module, features: str | None, method: str) -> nn.Module:
    """What AIT's feature attack runs on: ``model`` itself when it has ``features(x)`` and no
    ``features=`` name is given, else a :class:`FeatureModel` on the named module. A model
    with neither raises a ValueError naming the ``features`` option."""
    if features is not None:
        return FeatureModel(model, features)
    if has_features(model):
        return model
    raise ValueError(f"{method} needs the model's penultimate features and {type(unwrap(model)).__name__} has no "
                     f"features(x): pass features='<module name>' (the module whose output is the feature "
                     f"vector; CLI --opt features=NAME); its modules: {_listing(model)}")


def parse_mix_layers(spec) -> tuple | None:
    """``mix_layers`` as given (a sequence, or a comma-separated string from the CLI) ->
    a tuple of ints (fastmix's mixing points 0, 1, 2) or of names (``"input"`` for the input).

    None stays None (the model's default). Ints and names cannot be combined except 0
    with names (0 means the input). ValueError names the option and value otherwise.
    """
    if spec is None:
        return None
    items: Sequence
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ValueError(f"mix_layers must be a sequence of module names or of mixing points 0, 1, 2, got {spec!r}")
    out = []
    for v in items:
        if isinstance(v, str) and v.lstrip("-").isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"mix_layers entries must be module names or ints, got {v!r} in {spec!r}")
        out.append(v)
    if not out:
        raise ValueError(f"mix_layers must not be empty, got {spec!r}")
    names = [v for v in out if isinstance(v, str)]
    ints = [v for v in out if isinstance(v, int)]
    if names:
        if any(v != 0 for v in ints):
            raise ValueError(f"mix_layers mixes module names with mixing-point numbers other than 0 (the input): "
                             f"{spec!r}")
        seq = [INPUT if v == 0 else v for v in out]
        return tuple(dict.fromkeys([INPUT] + seq))  # the input is always a candidate
    if any(v not in (0, 1, 2) for v in ints):
        raise ValueError(f"mix_layers as numbers must be a subset of (0, 1, 2) (fastmix models' mixing points), "
                         f"got {spec!r}")
    return tuple(dict.fromkeys(ints))


def check_mix_layers(model: nn.Module, layers: tuple | None, method: str) -> tuple:
    """The candidate mixing points of manifold mixup on ``model``: the named ones resolved
    (each must exist), the numbered ones only on a model with fastmix's mixing points, and
    ``None`` -> ``(0, 1, 2)`` on such a model; ValueError naming ``mix_layers`` otherwise."""
    if layers is None:
        if has_mix_points(model):
            return (0, 1, 2)
        raise ValueError(f"{method} mixes hidden layers and {type(unwrap(model)).__name__} has no fastmix mixing "
                         f"points: pass mix_layers=('<module name>', ...) (mix after these modules; the input is "
                         f"always a candidate; CLI --opt mix_layers=NAME1,NAME2); its modules: {_listing(model)}")
    if all(isinstance(v, int) for v in layers):
        if not has_mix_points(model) and any(v != 0 for v in layers):
            raise ValueError(f"mix_layers={layers!r} are fastmix mixing-point numbers, which "
                             f"{type(unwrap(model)).__name__} does not have: name its modules instead "
                             f"(mix_layers=('<module name>', ...)); its modules: {_listing(model)}")
        return layers
    for v in layers:
        if v != INPUT:
            resolve(model, v, "mix_layers")
    return layers


def mixed_forward(model: Callable, module: nn.Module, x: Tensor, layer, mix_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``model(x)`` with ``mix_fn`` applied at mixing point ``layer``: the input (0 or
    ``"input"``: ``model(mix_fn(x))``, no extra arguments, so any module works), a fastmix
    mixing point 1 or 2 (``model(x, mix_layer=layer, mix_fn=mix_fn)``) or a module name of
    ``module`` (the plain module under ``model``'s wrappers: a forward hook; a
    ``torch.compile`` wrapper is bypassed for that forward, see :func:`eager`)."""
    if layer == 0 or layer == INPUT:
        return model(mix_fn(x))
    if isinstance(layer, int):
        return model(x, mix_layer=layer, mix_fn=mix_fn)
    with mix_after(module, layer, mix_fn):
        out = eager(model)(x)
    return out


__all__ = ["INPUT", "eager", "FeatureModel", "feature_model", "mix_after", "mixed_forward", "module_names", "resolve",
           "unwrap", "has_features", "has_mix_points", "parse_mix_layers", "check_mix_layers"]
