// Per-row formulas of soft_ce_fwd/bwd shared by the CPU and CUDA kernels, written in
// the forms that keep their digits at a saturated softmax (issue 11.5):
//   * the loss as lse_shifted + sum_c t_c (m - z_c) instead of lse - sum_c t_c z_c, so
//     that a confident correct row (z_y = m, hard label) gives exactly log(sum exp(z - m))
//     rather than the difference of two numbers of the size of the logits;
//   * the gradient at a target class as (1 - t_y) - sum_{c != y} p_c instead of
//     p_y - t_y, whose p_y = 1 - 1e-9 rounds to 1 in float32.
// Target: t = w*phi(ya, sa) + (1-w)*phi(yb, sb), phi(y, s) = s at y, off = (1-s)/(C-1)
// elsewhere (docs/OPS.md).
#pragma once

#if defined(__CUDACC__)
#define FASTMIX_HD __host__ __device__ __forceinline__
#else
#define FASTMIX_HD inline
#endif

namespace fastmix {

// True for finite x (false for +-inf and NaN), the same on host and device without
// relying on <cmath> overloads; the compilers keep x - x (no -ffast-math anywhere).
FASTMIX_HD bool finite_f(float x) { return (x - x) == 0.0f; }

// weight * value, where a zero weight contributes exactly 0 (even against an infinite
// value): a class the target does not weigh does not enter sum_c t_c z_c, so a hard
// label with -inf logits elsewhere gives a finite loss, as F.cross_entropy does (the
// reference's rule, fastmix/ops: `where(t == 0, 0, t * z)`).
FASTMIX_HD float weigh(float weight, float value) { return weight == 0.0f ? 0.0f : weight * value; }

// loss of one row from lse = lse_shifted + shift (shift = the row max when finite,
// else 0), the plain sum S of the row's logits and its logits za, zb at ya, yb.
FASTMIX_HD float soft_ce_loss(float lse_shifted, float shift, float S, float za, float zb, float w, float sa,
                              float sb, float offa, float offb, float cm1) {
  if (finite_f(shift) && finite_f(lse_shifted)) {
    // loss = lse_shifted + sum_c t_c (m - z_c), as phi sums to 1:
    // sum_c phi(y, s)_c (m - z_c) = s*(m - z_y) + off*((C-1)*m - (S - z_y))
    const float da = weigh(sa, shift - za) + weigh(offa, cm1 * shift - (S - za));
    const float db = weigh(sb, shift - zb) + weigh(offb, cm1 * shift - (S - zb));
    return lse_shifted + (weigh(w, da) + weigh(1.0f - w, db));
  }
  // Rows with an infinite max or a NaN: the reference's form, lse - sum_c t_c z_c, so
  // that inf and NaN propagate as there.
  const float dota = weigh(sa, za) + weigh(offa, S - za);
  const float dotb = weigh(sb, zb) + weigh(offb, S - zb);
  return (lse_shifted + shift) - (weigh(w, dota) + weigh(1.0f - w, dotb));
}

// 1 - t_c at a target class c (c == ya or c == yb), as a sum of non-negative terms
// (1 - s and 1 - off lose nothing), so it is accurate when t_c is close to 1.
FASTMIX_HD float soft_ce_one_minus_t(bool at_a, bool at_b, float w, float sa, float sb, float offa, float offb) {
  return w * (at_a ? 1.0f - sa : 1.0f - offa) + (1.0f - w) * (at_b ? 1.0f - sb : 1.0f - offb);
}

// d loss / d z at the target classes, given `rest` = sum of p_c over the classes
// outside {ya, yb} and pa, pb = p at ya, yb (ta, tb = t there).  Writes the gradient
// (per unit of grad_loss) at ya into *ga and at yb into *gb (equal when ya == yb).
// A class holding most of the mass (p > 1/2, where p - t would round p to 1) gets
// (1 - t) - sum_{c != y} p_c; the others keep p - t, which is already exact to the
// precision of p.  Rows with a non-finite lse keep p - t.
FASTMIX_HD void soft_ce_target_grads(bool finite_lse, bool same, float rest, float pa, float pb, float ta, float tb,
                                     float w, float sa, float sb, float offa, float offb, float* ga, float* gb) {
  *ga = pa - ta;
  *gb = pb - tb;
  if (!finite_lse) return;
  if (same) {
    if (pa > 0.5f) *ga = *gb = soft_ce_one_minus_t(true, true, w, sa, sb, offa, offb) - rest;
    return;
  }
  if (pa > 0.5f) *ga = soft_ce_one_minus_t(true, false, w, sa, sb, offa, offb) - (rest + pb);
  if (pb > 0.5f) *gb = soft_ce_one_minus_t(false, true, w, sa, sb, offa, offb) - (rest + pa);
}

}  // namespace fastmix
