"""One per-dtype tolerance table and an assert helper that says where and how much.

The kernels compute in float32 and round once, like the references, so fp32 results
agree to a few ulps (reductions are summed in a different order); bf16/fp16 outputs
may differ by one or two units in the last place of the narrow dtype (the Triton
interpreter rounds bf16 by truncation).
"""
import torch

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
}


def assert_close(actual, expected, dtype=None, what="", **override):
    """Like torch.testing.assert_close with the table above; on failure reports the worst
    index, the two values there and the share of elements out of tolerance."""
    dtype = dtype or expected.dtype
    tol = dict(TOL.get(dtype, TOL[torch.float32]))
    tol.update(override)
    a, e = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs()
    bound = tol["atol"] + tol["rtol"] * e.abs()
    bad = err > bound
    both_nan = torch.isnan(a) & torch.isnan(e)
    bad &= ~both_nan
    bad |= torch.isnan(a) ^ torch.isnan(e)
    if bool(bad.any()):
        worst = int((err - bound).flatten().nan_to_num(float("inf")).argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} elements ({100.0 * bad.float().mean():.3f}%) out of "
            f"tolerance {tol} for {dtype}; worst at {idx}: got {a.flatten()[worst].item():.8g}, "
            f"expected {e.flatten()[worst].item():.8g}, |diff| {err.flatten()[worst].item():.3g}")
