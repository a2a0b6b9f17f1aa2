// CUDA kernels of the loss ops: soft_ce_fwd/bwd and cw_margin_fwd/bwd.
//
// Forward kernels and soft_ce_bwd reduce rows of the (B, C) logits: one warp per row
// for C <= kWarpRowMaxC (several rows per block), one block per row above that.
// soft_ce_fwd is a single pass over the row: every thread keeps an online (max, sum
// of exp) pair plus the plain sum S, and the pairs are merged by rescaling.  The
// dense target is never formed (it has three distinct values per row).
// soft_ce_bwd is a row kernel too, because the gradient at the target classes needs
// the sum of the other probabilities (csrc/soft_ce_math.h); cw_margin_bwd is
// element-wise over B*C.  No host synchronisation, so everything is CUDA-graph
// capturable.
//
// exp/log: the accurate expf/logf (max error 2 / 1 ulp; the compiled expf contains
// one ex2.approx.ftz on its range-reduced argument, which can neither be subnormal
// nor flush anything: that is the only approx/ftz instruction in these kernels, see
// tests/test_csrc_build.py), not __expf, whose error grows with |x|: the softmax
// must stay within 2x of torch's own float32 error (issue 11.5).
#include <torch/library.h>

#include <cmath>

#include "../soft_ce_math.h"
#include "cuda_utils.cuh"

namespace fastmix {
namespace cuda {
namespace {

using at::cuda::detail::IntDivider;

constexpr int kWarpRowMaxC = 2048;  // up to this many classes a warp handles a row
constexpr int kRowBlock = 256;      // block-per-row size (large C)
constexpr int kWarpsPerBlock = 4;   // warp-per-row: rows per block
constexpr int kEwThreads = 256;
constexpr int kEwBlocksPerSm = 8;

// ---------------------------------------------------------------------------
// Row statistics of soft_ce_fwd.
// ---------------------------------------------------------------------------
struct SoftmaxStats {
  float m;  // running max
  float s;  // sum of exp(z - base(m))
  float S;  // plain sum of z
};

// exp offset for a running max m: torch.logsumexp does not subtract an infinite
// max, which keeps a row of -inf at lse = -inf and a row holding +inf at +inf
// instead of NaN (inf - inf).
__device__ __forceinline__ float lse_base(float m) { return isinf(m) ? 0.0f : m; }

__device__ __forceinline__ SoftmaxStats shfl_xor(const SoftmaxStats& v, int off) {
  return {__shfl_xor_sync(kFullMask, v.m, off), __shfl_xor_sync(kFullMask, v.s, off),
          __shfl_xor_sync(kFullMask, v.S, off)};
}

// Commutative merge of two partial statistics.  fmaxf ignores NaN, but a NaN logit
// still poisons s (exp(NaN) = NaN), so lse is NaN like the reference's.
__device__ __forceinline__ SoftmaxStats merge(const SoftmaxStats& a, const SoftmaxStats& b) {
  const float m = fmaxf(a.m, b.m);
  const float base = lse_base(m);
  // s == 0 exactly when nothing was accumulated; skipping it avoids 0 * inf.
  const float sa = a.s == 0.0f ? 0.0f : a.s * expf(a.m - base);
  const float sb = b.s == 0.0f ? 0.0f : b.s * expf(b.m - base);
  return {m, sa + sb, a.S + b.S};
}

__device__ __forceinline__ void accumulate(SoftmaxStats& st, float z) {
  if (z > st.m) {  // new max: rescale what was summed so far (rare after a few elements)
    const float base = lse_base(z);
    st.s = (st.s == 0.0f ? 0.0f : st.s * expf(st.m - base)) + expf(z - base);
    st.m = z;
  } else {
    st.s += expf(z - lse_base(st.m));
  }
  st.S += z;
}

// One row per GROUP threads (a warp, or the block when GROUP == kRowBlock).
template <typename T, int VEC, int GROUP>
__global__ void __launch_bounds__(GROUP == 32 ? 32 * kWarpsPerBlock : GROUP)
    soft_ce_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ ya, const int64_t* __restrict__ yb,
                       const float* __restrict__ w, const float* __restrict__ sa, const float* __restrict__ sb,
                       float* __restrict__ loss, float* __restrict__ lse, int64_t B, int64_t C) {
  __shared__ SoftmaxStats smem[GROUP / 32];
  constexpr int kRowsPerBlock = GROUP == 32 ? kWarpsPerBlock : 1;
  const int tid = GROUP == 32 ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (GROUP == 32 ? threadIdx.x >> 5 : 0);
  const int64_t npack = C / VEC;
  // The loop bound is uniform over the group, as group_reduce's barriers require.
  for (int64_t r = row0; r < B; r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* z = logits + r * C;
    SoftmaxStats st{-INFINITY, 0.0f, 0.0f};
    for (int64_t p = tid; p < npack; p += GROUP) {
      float v[VEC];
      load_f<VEC>(z + p * VEC, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) accumulate(st, v[j]);
    }
    st = group_reduce<GROUP>(st, [](const SoftmaxStats& a, const SoftmaxStats& b) { return merge(a, b); }, smem);
    if (tid == 0) {
      const float shift = lse_base(st.m);
      const float lse_shifted = logf(st.s);
      const int64_t ia = ya[r];
      const int64_t ib = yb[r];
      FASTMIX_ASSERT_INDEX(ia, C, "soft_ce: ya");
      FASTMIX_ASSERT_INDEX(ib, C, "soft_ce: yb");
      const float sar = sa[r];
      const float sbr = sb[r];
      const float cm1 = static_cast<float>(C - 1);
      lse[r] = lse_shifted + shift;
      loss[r] = soft_ce_loss(lse_shifted, shift, st.S, static_cast<float>(z[ia]), static_cast<float>(z[ib]), w[r],
                             sar, sbr, (1.0f - sar) / cm1, (1.0f - sbr) / cm1, cm1);
    }
  }
}

// ---------------------------------------------------------------------------
// cw_margin_fwd: argmax over j != y (first index on ties, NaN counts as largest,
// like torch.argmax) and the margin.
// ---------------------------------------------------------------------------
struct ArgMax {
  float v;
  int64_t i;
};

__device__ __forceinline__ ArgMax shfl_xor(const ArgMax& a, int off) {
  return {__shfl_xor_sync(kFullMask, a.v, off), __shfl_xor_sync(kFullMask, a.i, off)};
}

__device__ __forceinline__ bool beats(const ArgMax& a, const ArgMax& b) {
  const bool an = a.v != a.v;
  const bool bn = b.v != b.v;
  if (an != bn) return an;
  if (!an && a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}

template <typename T, int VEC, int GROUP>
__global__ void __launch_bounds__(GROUP == 32 ? 32 * kWarpsPerBlock : GROUP)
    cw_margin_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ y, float* __restrict__ margin,
                         int64_t* __restrict__ jstar, int64_t B, int64_t C, float kappa) {
  __shared__ ArgMax smem[GROUP / 32];
  constexpr int kRowsPerBlock = GROUP == 32 ? kWarpsPerBlock : 1;
  const int tid = GROUP == 32 ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (GROUP == 32 ? threadIdx.x >> 5 : 0);
  const int64_t npack = C / VEC;
  for (int64_t r = row0; r < B; r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* z = logits + r * C;
    const int64_t yr = y[r];
    FASTMIX_ASSERT_INDEX(yr, C, "cw_margin: y");
    // The sentinel index loses every tie, so any real class replaces it.
    ArgMax best{-INFINITY, INT64_MAX};
    for (int64_t p = tid; p < npack; p += GROUP) {
      float v[VEC];
      load_f<VEC>(z + p * VEC, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const ArgMax cand{v[j], p * VEC + j};
        if (cand.i != yr && beats(cand, best)) best = cand;
      }
    }
    best = group_reduce<GROUP>(best, [](const ArgMax& a, const ArgMax& b) { return beats(a, b) ? a : b; }, smem);
    if (tid == 0) {
      const float raw = best.v - static_cast<float>(z[yr]);
      margin[r] = raw < kappa ? raw : kappa;
      jstar[r] = best.i;
    }
  }
}

// ---------------------------------------------------------------------------
// Backward kernels: element-wise over B*C packs.
// ---------------------------------------------------------------------------
// soft_ce_bwd: one row per GROUP threads, like the forward.  Every class gets
// g*(p - t_off); the group sums p over the classes outside {ya, yb}; then lane 0
// rewrites the (at most two) target classes with the cancellation-free form.
template <typename T, int VEC, int GROUP>
__global__ void __launch_bounds__(GROUP == 32 ? 32 * kWarpsPerBlock : GROUP)
    soft_ce_bwd_kernel(const float* __restrict__ grad_loss, const T* __restrict__ logits,
                       const float* __restrict__ lse, const int64_t* __restrict__ ya, const int64_t* __restrict__ yb,
                       const float* __restrict__ w, const float* __restrict__ sa, const float* __restrict__ sb,
                       T* __restrict__ out, int64_t B, int64_t C) {
  __shared__ float smem[GROUP / 32];
  constexpr int kRowsPerBlock = GROUP == 32 ? kWarpsPerBlock : 1;
  const int tid = GROUP == 32 ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (GROUP == 32 ? threadIdx.x >> 5 : 0);
  const int64_t npack = C / VEC;
  const float cm1 = static_cast<float>(C - 1);
  for (int64_t r = row0; r < B; r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* z = logits + r * C;
    T* o = out + r * C;
    const float g = grad_loss[r];
    const float l = lse[r];
    const float wr = w[r];
    const float sar = sa[r];
    const float sbr = sb[r];
    const int64_t ia = ya[r];
    const int64_t ib = yb[r];
    FASTMIX_ASSERT_INDEX(ia, C, "soft_ce: ya");
    FASTMIX_ASSERT_INDEX(ib, C, "soft_ce: yb");
    const float offa = (1.0f - sar) / cm1;
    const float offb = (1.0f - sbr) / cm1;
    const float toff = wr * offa + (1.0f - wr) * offb;
    float rest = 0.0f;  // sum of p over the classes outside {ya, yb}
    for (int64_t p = tid; p < npack; p += GROUP) {
      float zv[VEC], ov[VEC];
      load_f<VEC>(z + p * VEC, zv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int64_t c = p * VEC + j;
        const float pr = expf(zv[j] - l);
        ov[j] = g * (pr - toff);
        rest += (c == ia || c == ib) ? 0.0f : pr;
      }
      store_f<VEC>(o + p * VEC, ov);
    }
    rest = group_reduce<GROUP>(rest, [](float a, float b) { return a + b; }, smem);
    if constexpr (GROUP == 32) __syncwarp();  // order the sweep's stores before lane 0's rewrite
    if (tid == 0) {
      const float pa = expf(static_cast<float>(z[ia]) - l);
      const float pb = expf(static_cast<float>(z[ib]) - l);
      const float ta = wr * sar + (1.0f - wr) * (ia == ib ? sbr : offb);
      const float tb = wr * (ia == ib ? sar : offa) + (1.0f - wr) * sbr;
      float ga, gb;
      soft_ce_target_grads(finite_f(l), ia == ib, rest, pa, pb, ta, tb, wr, sar, sbr, offa, offb, &ga, &gb);
      o[ia] = static_cast<T>(g * ga);
      o[ib] = static_cast<T>(g * gb);
    }
  }
}

template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kEwThreads)
    cw_margin_bwd_kernel(const float* __restrict__ grad, const int64_t* __restrict__ y,
                         const int64_t* __restrict__ jstar, const float* __restrict__ margin, T* __restrict__ out,
                         I npack, IntDivider<I> pack_to_row, int64_t C, float kappa) {
  for (I p = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; p < npack;
       p += static_cast<I>(gridDim.x) * blockDim.x) {
    const I r = pack_to_row.div(p);
    const int64_t off = static_cast<int64_t>(p) * VEC;
    const int64_t c0 = off - static_cast<int64_t>(r) * C;
    // Rows whose margin is clamped at kappa have zero gradient; the others get
    // d(z_jstar - z_y) = +grad at jstar, -grad at y (jstar != y).
    const bool active = margin[r] < kappa;
    const float g = grad[r];
    const int64_t yr = y[r];
    const int64_t jr = jstar[r];
    float o[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t c = c0 + j;
      o[j] = !active ? 0.0f : (c == jr ? g : (c == yr ? -g : 0.0f));
    }
    store_f<VEC>(out + off, o);
  }
}

// ---------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------
// Calls launch(vec_tag) with the widest pack that row starts allow.
template <typename T, typename Launch>
void with_row_vec(int64_t C, bool aligned, Launch&& launch) {
  if (aligned && C % kVecOf<T> == 0) {
    launch(std::integral_constant<int, kVecOf<T>>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// Runs a row-reduction kernel with a warp per row (several rows per block) for
// moderate C, or a block per row for large C.
template <typename Launch>
void with_row_group(int64_t B, int64_t C, int dev, Launch&& launch) {
  const int64_t cap = static_cast<int64_t>(sm_count(dev)) * 16;
  if (C <= kWarpRowMaxC) {
    const int blocks = static_cast<int>(std::max<int64_t>(1, std::min(ceil_div(B, kWarpsPerBlock), cap)));
    launch(std::integral_constant<int, 32>{}, blocks, 32 * kWarpsPerBlock);
  } else {
    const int blocks = static_cast<int>(std::max<int64_t>(1, std::min(B, cap)));
    launch(std::integral_constant<int, kRowBlock>{}, blocks, kRowBlock);
  }
}

// Runs an element-wise kernel over the (B, C) matrix.
template <typename T, typename Launch>
void with_flat(int64_t B, int64_t C, bool aligned, Launch&& launch) {
  with_row_vec<T>(C, aligned, [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    const int64_t npack = B * C / VEC;
    if (npack <= INT32_MAX) {
      launch(vec_tag, uint32_t{}, npack, C / VEC);
    } else {
      launch(vec_tag, int64_t{}, npack, C / VEC);
    }
  });
}


std::tuple<at::Tensor, at::Tensor> soft_ce_fwd(const at::Tensor& logits, const at::Tensor& ya, const at::Tensor& yb,
                                               const at::Tensor& w, const at::Tensor& sa, const at::Tensor& sb) {
  const char* opname = "soft_ce_fwd";
  check_soft_ce_targets(opname, logits, ya, yb, w, sa, sb, at::kCUDA);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor loss = at::empty({B}, f32);
  at::Tensor lse = at::empty({B}, f32);
  if (B == 0) return {loss, lse};
  const c10::cuda::CUDAGuard guard(logits.device());
  const int dev = logits.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), opname, [&] {
    using T = scalar_t;
    const T* zp = logits.const_data_ptr<T>();
    with_row_vec<T>(C, is_aligned(zp, 16), [&](auto vec_tag) {
      constexpr int VEC = decltype(vec_tag)::value;
      with_row_group(B, C, dev, [&](auto group_tag, int blocks, int threads) {
        constexpr int GROUP = decltype(group_tag)::value;
        soft_ce_fwd_kernel<T, VEC, GROUP><<<blocks, threads, 0, stream>>>(
            zp, ya.const_data_ptr<int64_t>(), yb.const_data_ptr<int64_t>(), w.const_data_ptr<float>(),
            sa.const_data_ptr<float>(), sb.const_data_ptr<float>(), loss.mutable_data_ptr<float>(),
            lse.mutable_data_ptr<float>(), B, C);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {loss, lse};
}

at::Tensor soft_ce_bwd(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& lse,
                       const at::Tensor& ya, const at::Tensor& yb, const at::Tensor& w, const at::Tensor& sa,
                       const at::Tensor& sb) {
  const char* opname = "soft_ce_bwd";
  check_soft_ce_targets(opname, logits, ya, yb, w, sa, sb, at::kCUDA);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  check_vec(opname, grad_loss, B, "grad_loss", logits.device());
  check_vec(opname, lse, B, "lse", logits.device());
  at::Tensor out = at::empty({B, C}, logits.options());
  if (B == 0) return out;
  const c10::cuda::CUDAGuard guard(logits.device());
  const int dev = logits.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), opname, [&] {
    using T = scalar_t;
    const T* zp = logits.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    with_row_vec<T>(C, is_aligned(zp, 16) && is_aligned(op, 16), [&](auto vec_tag) {
      constexpr int VEC = decltype(vec_tag)::value;
      with_row_group(B, C, dev, [&](auto group_tag, int blocks, int threads) {
        constexpr int GROUP = decltype(group_tag)::value;
        soft_ce_bwd_kernel<T, VEC, GROUP><<<blocks, threads, 0, stream>>>(
            grad_loss.const_data_ptr<float>(), zp, lse.const_data_ptr<float>(), ya.const_data_ptr<int64_t>(),
            yb.const_data_ptr<int64_t>(), w.const_data_ptr<float>(), sa.const_data_ptr<float>(),
            sb.const_data_ptr<float>(), op, B, C);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> cw_margin_fwd(const at::Tensor& logits, const at::Tensor& y, double kappa) {
  const char* opname = "cw_margin_fwd";
  check_device_type(opname, logits, at::kCUDA);
  check_logits(opname, logits);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  check_vec(opname, y, B, "y", logits.device(), at::kLong);
  at::Tensor margin = at::empty({B}, logits.options().dtype(at::kFloat));
  at::Tensor jstar = at::empty({B}, logits.options().dtype(at::kLong));
  if (B == 0) return {margin, jstar};
  const c10::cuda::CUDAGuard guard(logits.device());
  const int dev = logits.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), opname, [&] {
    using T = scalar_t;
    const T* zp = logits.const_data_ptr<T>();
    with_row_vec<T>(C, is_aligned(zp, 16), [&](auto vec_tag) {
      constexpr int VEC = decltype(vec_tag)::value;
      with_row_group(B, C, dev, [&](auto group_tag, int blocks, int threads) {
        constexpr int GROUP = decltype(group_tag)::value;
        cw_margin_fwd_kernel<T, VEC, GROUP><<<blocks, threads, 0, stream>>>(
            zp, y.const_data_ptr<int64_t>(), margin.mutable_data_ptr<float>(), jstar.mutable_data_ptr<int64_t>(),
            B, C, static_cast<float>(kappa));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {margin, jstar};
}

at::Tensor cw_margin_bwd(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& y,
                         const at::Tensor& jstar, const at::Tensor& margin, double kappa) {
  const char* opname = "cw_margin_bwd";
  check_device_type(opname, logits, at::kCUDA);
  check_logits(opname, logits);
  const int64_t B = logits.size(0);
  const int64_t C = logits.size(1);
  const auto devc = logits.device();
  check_vec(opname, grad, B, "grad", devc);
  check_vec(opname, y, B, "y", devc, at::kLong);
  check_vec(opname, jstar, B, "jstar", devc, at::kLong);
  check_vec(opname, margin, B, "margin", devc);
  at::Tensor out = at::empty({B, C}, logits.options());
  if (B == 0) return out;
  const c10::cuda::CUDAGuard guard(logits.device());
  const int dev = logits.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(logits.scalar_type(), opname, [&] {
    using T = scalar_t;
    T* op = out.mutable_data_ptr<T>();
    with_flat<T>(B, C, is_aligned(op, 16), [&](auto vec_tag, auto idx_tag, int64_t npack, int64_t per_row) {
      constexpr int VEC = decltype(vec_tag)::value;
      using I = decltype(idx_tag);
      cw_margin_bwd_kernel<T, VEC, I><<<grid_for(npack, kEwThreads, kEwBlocksPerSm, dev), kEwThreads, 0, stream>>>(
          grad.const_data_ptr<float>(), y.const_data_ptr<int64_t>(), jstar.const_data_ptr<int64_t>(),
          margin.const_data_ptr<float>(), op, static_cast<I>(npack), IntDivider<I>(static_cast<I>(per_row)), C,
          static_cast<float>(kappa));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmix, CUDA, m) {
  m.impl("soft_ce_fwd", &soft_ce_fwd);
  m.impl("soft_ce_bwd", &soft_ce_bwd);
  m.impl("cw_margin_fwd", &cw_margin_fwd);
  m.impl("cw_margin_bwd", &cw_margin_bwd);
}

}  // namespace cuda
}  // namespace fastmix
