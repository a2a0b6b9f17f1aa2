// CPU kernels of the attack-side ops: pgd_step, pgd_step_, random_start, mix.
//
// Every image-like tensor of a call shares one dense layout with the batch outermost
// (docs/OPS.md, kernel form), so sample i is storage[i*D, (i+1)*D) whatever the memory
// format, and all the work runs over raw storage:
//   * element-wise ops (L-inf step, L-inf start, mix) split the flat storage into
//     parallel chunks, so a batch of a few huge samples still uses every core;
//   * L2 ops need two per-sample reductions and run whole samples per task.
// The inner loops are in attack_kernels.inc, built for the baseline ISA and for
// AVX2.  L-inf and mix evaluate the reference's formulas operation by operation in
// float32 (no FMA contraction), so they are bit-identical to
// fastmix/ops/reference.py.
#include <torch/library.h>

#include "../fastmix_common.h"
#include "cpu_utils.h"

namespace fastmix {
namespace cpu {
namespace {

constexpr float kL2GradEps = 1e-10f;   // reference.L2_GRAD_EPS
constexpr float kL2NoiseEps = 1e-12f;  // reference.L2_NOISE_EPS

namespace base {
#include "attack_kernels.inc"
}  // namespace base

#ifdef FASTMIX_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
#include "attack_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

// Parallel grain in samples for the per-sample (L2) kernels: about kGrain elements.
int64_t sample_grain(int64_t D) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, 3 * D)); }


// pgd_step with the output in `out` (which is x itself for pgd_step_).
void pgd_step_into(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
                   const at::Tensor& alpha, int64_t norm, double lo_d, double hi_d, const at::Tensor& out) {
  const int64_t B = x.size(0);
  const int64_t N = x.numel();
  if (N == 0) return;
  const int64_t D = N / B;
  const float lo = static_cast<float>(lo_d);
  const float hi = static_cast<float>(hi_d);
  FASTMIX_DISPATCH_FLOAT(x.scalar_type(), "pgd_step", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* np = x_nat.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const float* ep = eps.const_data_ptr<float>();
    const float* ap = alpha.const_data_ptr<float>();
    if (norm == 0) {
      parallel_chunks(N, kGrain, [&](int64_t begin, int64_t end) {
        FASTMIX_ISA_CALL(pgd_linf_range, xp, gp, np, op, ep, ap, D, begin, end, lo, hi);
      });
    } else {
      parallel_chunks(B, sample_grain(D), [&](int64_t s0, int64_t s1) {
        FASTMIX_ISA_CALL(pgd_l2_samples, xp, gp, np, op, ep, ap, D, s0, s1, lo, hi);
      });
    }
  });
}

at::Tensor pgd_step(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
                    const at::Tensor& alpha, int64_t norm, double lo, double hi) {
  check_pgd_args("pgd_step", x, grad, x_nat, eps, alpha, norm, at::kCPU);
  at::Tensor out = at::empty_like(x);  // keeps x's memory format
  pgd_step_into(x, grad, x_nat, eps, alpha, norm, lo, hi, out);
  return out;
}

void pgd_step_(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
               const at::Tensor& alpha, int64_t norm, double lo, double hi) {
  check_pgd_args("pgd_step_", x, grad, x_nat, eps, alpha, norm, at::kCPU);
  pgd_step_into(x, grad, x_nat, eps, alpha, norm, lo, hi, x);
}

at::Tensor random_start(const at::Tensor& x_nat, const at::Tensor& noise, const at::Tensor& eps,
                        const at::Tensor& radius, int64_t norm, double lo_d, double hi_d) {
  const char* opname = "random_start";
  check_device_type(opname, x_nat, at::kCPU);
  sample_numel(opname, x_nat);
  check_like(opname, x_nat, noise, "noise", true, /*same_dtype=*/false);
  TORCH_CHECK(noise.scalar_type() == at::kFloat, opname, ": noise must be float32, got ", noise.scalar_type());
  const int64_t B = x_nat.size(0);
  check_vec(opname, eps, B, "eps", x_nat.device());
  check_norm(opname, norm);
  if (norm == 2) check_vec(opname, radius, B, "radius", x_nat.device());  // unused (maybe empty) for L-inf
  at::Tensor out = at::empty_like(x_nat);
  const int64_t N = x_nat.numel();
  if (N == 0) return out;
  const int64_t D = N / B;
  const float lo = static_cast<float>(lo_d);
  const float hi = static_cast<float>(hi_d);
  FASTMIX_DISPATCH_FLOAT(x_nat.scalar_type(), opname, [&] {
    const scalar_t* np = x_nat.const_data_ptr<scalar_t>();
    const float* zp = noise.const_data_ptr<float>();
    const float* ep = eps.const_data_ptr<float>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (norm == 0) {
      parallel_chunks(N, kGrain, [&](int64_t begin, int64_t end) {
        FASTMIX_ISA_CALL(random_start_linf_range, np, zp, op, ep, D, begin, end, lo, hi);
      });
    } else {
      const float* rp = radius.const_data_ptr<float>();
      parallel_chunks(B, sample_grain(D), [&](int64_t s0, int64_t s1) {
        FASTMIX_ISA_CALL(random_start_l2_samples, np, zp, op, ep, rp, D, s0, s1, lo, hi);
      });
    }
  });
  return out;
}

at::Tensor mix(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lam, const at::Tensor& index) {
  const char* opname = "mix";
  check_device_type(opname, a, at::kCPU);
  sample_numel(opname, a);
  check_like(opname, a, b, "b", /*same_batch=*/false);
  const int64_t B = a.size(0);
  check_vec(opname, lam, B, "lam", a.device());
  check_vec(opname, index, B, "index", a.device(), at::kLong);
  check_index_range(opname, index, "index", b.size(0), "rows of b");
  at::Tensor out = at::empty_like(a);
  const int64_t N = a.numel();
  if (N == 0) return out;
  const int64_t D = N / B;
  FASTMIX_DISPATCH_FLOAT(a.scalar_type(), opname, [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    const scalar_t* bp = b.const_data_ptr<scalar_t>();
    const float* lp = lam.const_data_ptr<float>();
    const int64_t* ip = index.const_data_ptr<int64_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    parallel_chunks(N, kGrain, [&](int64_t begin, int64_t end) {
      FASTMIX_ISA_CALL(mix_range, ap, bp, op, lp, ip, D, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmix, CPU, m) {
  m.impl("pgd_step", &pgd_step);
  m.impl("pgd_step_", &pgd_step_);
  m.impl("random_start", &random_start);
  m.impl("mix", &mix);
}

}  // namespace cpu
}  // namespace fastmix
