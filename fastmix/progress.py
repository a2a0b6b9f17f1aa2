"""The progress bar of the trainer and the evaluation suite (tqdm, when installed)."""
from __future__ import annotations

__all__ = ["bar"]


def bar(enabled: bool, total: int, desc: str, *, unit: str = "img", unit_scale: bool = False):
    """A tqdm bar over ``total`` units, or None when not ``enabled`` or tqdm is missing
    (callers test ``if bar is not None``). The bar is transient (``leave=False``)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, dynamic_ncols=True)
