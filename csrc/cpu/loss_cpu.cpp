// CPU kernels of the loss ops: soft_ce_fwd/bwd (cross-entropy against the compact
// mixed, label-smoothed target) and cw_margin_fwd/bwd (Carlini-Wagner margin).
//
// One parallel task handles whole rows of the (B, C) logits; the row kernels are in
// loss_kernels.inc, built for the baseline ISA and for AVX2.  A row is at most a
// few KiB, so soft_ce_fwd's pass over a row is two sweeps while it sits in L1 (max
// and sum, then the sum of exponentials): DRAM sees the row once, and no extra exp
// per element is spent on online rescaling.  The dense target t is never formed: it
// has only three distinct values per row (off-target, at ya, at yb).
#include <torch/library.h>

#include "../fastmix_common.h"
#include "../soft_ce_math.h"
#include "cpu_utils.h"

namespace fastmix {
namespace cpu {
namespace {

// Per-row constants of the compact target t = w*phi(ya, sa) + (1-w)*phi(yb, sb).
struct SoftTarget {
  float w, sa, sb;
  float offa, offb;  // (1-s)/(C-1): the value phi gives to every other class
  int64_t ya, yb;

  FASTMIX_INLINE SoftTarget(int64_t ya_, int64_t yb_, float w_, float sa_, float sb_, int64_t C)
      : w(w_), sa(sa_), sb(sb_), ya(ya_), yb(yb_) {
    const float cm1 = static_cast<float>(C - 1);
    offa = (1.0f - sa) / cm1;
    offb = (1.0f - sb) / cm1;
  }
  // t_c for any class c, in the reference's operation order.
  FASTMIX_INLINE float at(int64_t c) const {
    return w * (c == ya ? sa : offa) + (1.0f - w) * (c == yb ? sb : offb);
  }
  // t_c for c outside {ya, yb}.
  FASTMIX_INLINE float off() const { return w * offa + (1.0f - w) * offb; }
};

namespace base {
#include "loss_kernels.inc"
}  // namespace base

#ifdef FASTMIX_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "loss_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

// Rows per parallel task: about kGrain elements of work (`cost` per element).
int64_t row_grain(int64_t C, int64_t cost) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, cost * C)); }


std::tuple<at::Tensor, at::Tensor> soft_ce_fwd(const at::Tensor& logits, const at::Tensor& ya, const at::Tensor& yb,
                                               const at::Tensor& w, const at::Tensor& sa, const at::Tensor& sb) {
  const char* op = "soft_ce_fwd";
  check_soft_ce_targets(op, logits, ya, yb, w, sa, sb, at::kCPU);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  check_index_range(op, ya, "ya", C, "classes");
  check_index_range(op, yb, "yb", C, "classes");
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor loss = at::empty({B}, f32);
  at::Tensor lse = at::empty({B}, f32);
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), op, [&] {
    const scalar_t* zp = logits.const_data_ptr<scalar_t>();
    const int64_t* yap = ya.const_data_ptr<int64_t>();
    const int64_t* ybp = yb.const_data_ptr<int64_t>();
    const float* wp = w.const_data_ptr<float>();
    const float* sap = sa.const_data_ptr<float>();
    const float* sbp = sb.const_data_ptr<float>();
    float* lossp = loss.mutable_data_ptr<float>();
    float* lsep = lse.mutable_data_ptr<float>();
    parallel_chunks(B, row_grain(C, 4), [&](int64_t r0, int64_t r1) {
      FASTMIX_ISA_CALL(soft_ce_fwd_rows, zp, yap, ybp, wp, sap, sbp, lossp, lsep, C, r0, r1);
    });
  });
  return {loss, lse};
}

at::Tensor soft_ce_bwd(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& lse,
                       const at::Tensor& ya, const at::Tensor& yb, const at::Tensor& w, const at::Tensor& sa,
                       const at::Tensor& sb) {
  const char* op = "soft_ce_bwd";
  check_soft_ce_targets(op, logits, ya, yb, w, sa, sb, at::kCPU);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  check_index_range(op, ya, "ya", C, "classes");
  check_index_range(op, yb, "yb", C, "classes");
  check_vec(op, grad_loss, B, "grad_loss", logits.device());
  check_vec(op, lse, B, "lse", logits.device());
  at::Tensor out = at::empty({B, C}, logits.options());
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), op, [&] {
    const scalar_t* zp = logits.const_data_ptr<scalar_t>();
    const float* gp = grad_loss.const_data_ptr<float>();
    const float* lp = lse.const_data_ptr<float>();
    const int64_t* yap = ya.const_data_ptr<int64_t>();
    const int64_t* ybp = yb.const_data_ptr<int64_t>();
    const float* wp = w.const_data_ptr<float>();
    const float* sap = sa.const_data_ptr<float>();
    const float* sbp = sb.const_data_ptr<float>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    parallel_chunks(B, row_grain(C, 2), [&](int64_t r0, int64_t r1) {
      FASTMIX_ISA_CALL(soft_ce_bwd_rows, gp, zp, lp, yap, ybp, wp, sap, sbp, outp, C, r0, r1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> cw_margin_fwd(const at::Tensor& logits, const at::Tensor& y, double kappa_d) {
  const char* op = "cw_margin_fwd";
  check_device_type(op, logits, at::kCPU);
  check_logits(op, logits);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  check_vec(op, y, B, "y", logits.device(), at::kLong);
  check_index_range(op, y, "y", C, "classes");
  const float kappa = static_cast<float>(kappa_d);
  at::Tensor margin = at::empty({B}, logits.options().dtype(at::kFloat));
  at::Tensor jstar = at::empty({B}, logits.options().dtype(at::kLong));
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), op, [&] {
    const scalar_t* zp = logits.const_data_ptr<scalar_t>();
    const int64_t* yp = y.const_data_ptr<int64_t>();
    float* mp = margin.mutable_data_ptr<float>();
    int64_t* jp = jstar.mutable_data_ptr<int64_t>();
    parallel_chunks(B, row_grain(C, 1), [&](int64_t r0, int64_t r1) {
      FASTMIX_ISA_CALL(cw_margin_fwd_rows, zp, yp, mp, jp, C, kappa, r0, r1);
    });
  });
  return {margin, jstar};
}

at::Tensor cw_margin_bwd(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& y,
                         const at::Tensor& jstar, const at::Tensor& margin, double kappa_d) {
  const char* op = "cw_margin_bwd";
  check_device_type(op, logits, at::kCPU);
  check_logits(op, logits);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  const auto dev = logits.device();
  check_vec(op, grad, B, "grad", dev);
  check_vec(op, y, B, "y", dev, at::kLong);
  check_vec(op, jstar, B, "jstar", dev, at::kLong);
  check_vec(op, margin, B, "margin", dev);
  check_index_range(op, y, "y", C, "classes");
  check_index_range(op, jstar, "jstar", C, "classes");
  const float kappa = static_cast<float>(kappa_d);
  at::Tensor out = at::empty({B, C}, logits.options());
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), op, [&] {
    const float* gp = grad.const_data_ptr<float>();
    const int64_t* yp = y.const_data_ptr<int64_t>();
    const int64_t* jp = jstar.const_data_ptr<int64_t>();
    const float* mp = margin.const_data_ptr<float>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    parallel_chunks(B, row_grain(C, 1), [&](int64_t r0, int64_t r1) {
      FASTMIX_ISA_CALL(cw_margin_bwd_rows, gp, yp, jp, mp, outp, C, kappa, r0, r1);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmix, CPU, m) {
  m.impl("soft_ce_fwd", &soft_ce_fwd);
  m.impl("soft_ce_bwd", &soft_ce_bwd);
  m.impl("cw_margin_fwd", &cw_margin_fwd);
  m.impl("cw_margin_bwd", &cw_margin_bwd);
}

}  // namespace cpu
}  // namespace fastmix
