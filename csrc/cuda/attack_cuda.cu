// CUDA kernels of the attack-side ops: pgd_step, pgd_step_, random_start, mix.
//
// Layout: all image-like tensors of a call share one dense, batch-outermost layout
// (docs/OPS.md), so sample s is storage[s*D, (s+1)*D) and everything runs over raw
// storage, whatever the memory format.
//   * Element-wise ops (L-inf step and start, mix) are flat grid-stride loops over
//     VEC-element packs (128-bit accesses when every pointer is aligned and D is a
//     multiple of VEC, so that a pack never straddles two samples).  The sample of a
//     pack comes from a magic-number division when the range fits 32 bits.
//   * L2 ops need two per-sample reductions: one block per sample.  When a sample
//     fits in the block's registers (D <= BLOCK*ITEMS*VEC, e.g. CIFAR's 3072) it is
//     loaded once and kept there across the reductions, so DRAM sees exactly one
//     read of each input and one write; larger samples are re-read (from L2 when it
//     still holds them).
// No host synchronisation anywhere, so all ops can be captured in CUDA graphs.
#include <torch/library.h>

#include "../l2_plan.h"
#include "cuda_utils.cuh"

namespace fastmix {
namespace cuda {
namespace {

using at::cuda::detail::IntDivider;

constexpr float kL2GradEps = 1e-10f;   // reference.L2_GRAD_EPS
constexpr float kL2NoiseEps = 1e-12f;  // reference.L2_NOISE_EPS
constexpr int kEwThreads = 256;        // element-wise kernels
constexpr int kEwBlocksPerSm = 8;      // 8 x 256 = 2048 threads: a full SM

// ---------------------------------------------------------------------------
// Element-wise kernels.  `I` is uint32_t (fast division) or int64_t.
// ---------------------------------------------------------------------------
template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kEwThreads)
    pgd_linf_kernel(const T* x, const T* g, const T* nat, T* out, const float* __restrict__ eps,
                    const float* __restrict__ alpha, I npack, IntDivider<I> pack_to_sample, float lo, float hi) {
  // x and out may alias (pgd_step_): each pack is read before the same thread writes it.
  for (I p = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; p < npack;
       p += static_cast<I>(gridDim.x) * blockDim.x) {
    const I s = pack_to_sample.div(p);
    const float e = eps[s];
    const float a = alpha[s];
    const int64_t off = static_cast<int64_t>(p) * VEC;
    float xv[VEC], gv[VEC], nv[VEC], o[VEC];
    load_f<VEC>(x + off, xv);
    load_f<VEC>(g + off, gv);
    load_f<VEC>(nat + off, nv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float sg = static_cast<float>((gv[j] > 0.0f) - (gv[j] < 0.0f));  // torch.sign, NaN -> 0
      float y = add_rn(xv[j], mul_rn(a, sg));
      y = nan_min(nan_max(y, sub_rn(nv[j], e)), add_rn(nv[j], e));
      o[j] = clip(y, lo, hi);
    }
    store_f<VEC>(out + off, o);
  }
}

template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kEwThreads)
    random_start_linf_kernel(const T* __restrict__ nat, const float* __restrict__ noise, T* __restrict__ out,
                             const float* __restrict__ eps, I npack, IntDivider<I> pack_to_sample, float lo,
                             float hi) {
  for (I p = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; p < npack;
       p += static_cast<I>(gridDim.x) * blockDim.x) {
    const float e = eps[pack_to_sample.div(p)];
    const int64_t off = static_cast<int64_t>(p) * VEC;
    float nv[VEC], zv[VEC], o[VEC];
    load_f<VEC>(nat + off, nv);
    load_f<VEC>(noise + off, zv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float u = sub_rn(mul_rn(2.0f, zv[j]), 1.0f);  // 2*noise - 1, in [-1, 1)
      o[j] = clip(add_rn(nv[j], mul_rn(e, u)), lo, hi);
    }
    store_f<VEC>(out + off, o);
  }
}

template <typename T, int VEC, typename I>
__global__ void __launch_bounds__(kEwThreads)
    mix_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, const float* __restrict__ lam,
               const int64_t* __restrict__ index, int64_t nb, I npack, I packs_per_sample,
               IntDivider<I> pack_to_sample) {
  for (I p = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; p < npack;
       p += static_cast<I>(gridDim.x) * blockDim.x) {
    const I s = pack_to_sample.div(p);
    const float l = lam[s];
    const float m = sub_rn(1.0f, l);
    const int64_t off = static_cast<int64_t>(p) * VEC;
    // Same position inside sample index[s] of b.
    const int64_t bi = index[s];
    FASTMIX_ASSERT_INDEX(bi, nb, "mix: index");
    const int64_t boff = (bi * static_cast<int64_t>(packs_per_sample) + (p - s * packs_per_sample)) * VEC;
    float av[VEC], bv[VEC], o[VEC];
    load_f<VEC>(a + off, av);
    load_f<VEC>(b + boff, bv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) o[j] = add_rn(mul_rn(l, av[j]), mul_rn(m, bv[j]));
    store_f<VEC>(out + off, o);
  }
}

// Runs launch(VEC, I, npack, divider) with the widest pack the pointers and D allow
// and the cheapest index type for the range.
template <typename T, typename Launch>
void launch_elementwise(int64_t numel, int64_t D, bool aligned, Launch&& launch) {
  constexpr int V = kVecOf<T>;
  auto with_vec = [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    const int64_t npack = numel / VEC;
    const int64_t per = D / VEC;
    if (npack <= INT32_MAX) {
      launch(vec_tag, uint32_t{}, npack, per);
    } else {
      launch(vec_tag, int64_t{}, npack, per);
    }
  };
  if (aligned && D % V == 0) {
    with_vec(std::integral_constant<int, V>{});
  } else {
    with_vec(std::integral_constant<int, 1>{});
  }
}

// Per-sample (L2) kernels.
//
// Rounding rule (docs/OPS.md, "Numerics and backend parity"): the per-element
// formulas are those of the Triton kernels, operation by operation, with IEEE
// round-to-nearest and no contraction (the _rn intrinsics):
//   denom = sqrt_rn(sum g^2) + 1e-10;  d = (x + alpha*div_rn(g, denom)) - x_nat;
//   f = dn > 0 ? min(div_rn(eps, dn), 1) : 1 with dn = sqrt_rn(sum d^2);
//   out = clip(x_nat + d*f, lo, hi)
// (random_start: n = max(sqrt_rn(sum z^2), 1e-12), out = clip(x_nat + (eps*radius)*div_rn(z, n))).
// Only the summation order of the two reductions differs between CUDA and Triton.
//
// Work split (csrc/l2_plan.h, the rule of Triton's _l2_plan):
//   * fused: one block per sample, grid-stride over samples.  When a sample fits in
//     the block's registers (ITEMS > 0, D <= 256*ITEMS*VEC, e.g. CIFAR's 3072) it is
//     loaded once and kept there across the reductions, so DRAM sees one read of
//     each input and one write; larger samples are re-read (ITEMS = 0, streaming).
//   * split (B < SMs and big samples): n_chunks blocks per sample.  Phase 1 writes
//     per-(sample, chunk) partial sums of squares into a (B, n_chunks) float buffer;
//     each later block re-reduces its sample's n_chunks partials itself, in a fixed
//     order (deterministic, no atomics), then goes on with its chunk.
// ---------------------------------------------------------------------------
__device__ __forceinline__ float l2_offset(float x, float g, float nat, float a, float denom) {
  return sub_rn(add_rn(x, mul_rn(a, div_rn(g, denom))), nat);
}
__device__ __forceinline__ float l2_denom(float sumsq) { return add_rn(sqrt_rn(sumsq), kL2GradEps); }
__device__ __forceinline__ float l2_factor(float e, float dn) {
  return dn > 0.0f ? nan_min(div_rn(e, dn), 1.0f) : 1.0f;
}
__device__ __forceinline__ float l2_out(float nat, float d, float f, float lo, float hi) {
  return clip(add_rn(nat, mul_rn(d, f)), lo, hi);
}
__device__ __forceinline__ float noise_norm(float sumsq) { return fmaxf(sqrt_rn(sumsq), kL2NoiseEps); }
__device__ __forceinline__ float start_out(float nat, float scale, float z, float n, float lo, float hi) {
  return clip(add_rn(nat, mul_rn(scale, div_rn(z, n))), lo, hi);
}

// ITEMS > 0: the sample lives in registers (ITEMS packs per thread).
// ITEMS == 0: streaming version for samples that do not fit.
template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(kL2Threads)
    pgd_l2_kernel(const T* x, const T* g, const T* nat, T* out, const float* __restrict__ eps,
                  const float* __restrict__ alpha, int64_t B, int64_t D, float lo, float hi) {
  __shared__ float red[kL2Threads / 32];
  const int64_t npack = D / VEC;
  for (int64_t s = blockIdx.x; s < B; s += gridDim.x) {
    const T* xs = x + s * D;
    const T* gs = g + s * D;
    const T* ns = nat + s * D;
    T* os = out + s * D;
    const float e = eps[s];
    const float a = alpha[s];
    if constexpr (ITEMS > 0) {
      float xv[ITEMS][VEC], gv[ITEMS][VEC], nv[ITEMS][VEC];
      float acc = 0.0f;
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          load_f<VEC>(xs + p * VEC, xv[it]);
          load_f<VEC>(gs + p * VEC, gv[it]);
          load_f<VEC>(ns + p * VEC, nv[it]);
        } else {  // zeros contribute nothing to either reduction
#pragma unroll
          for (int j = 0; j < VEC; ++j) xv[it][j] = gv[it][j] = nv[it][j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc += gv[it][j] * gv[it][j];
      }
      const float denom = l2_denom(block_sum<kL2Threads>(acc, red));
      acc = 0.0f;
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float d = l2_offset(xv[it][j], gv[it][j], nv[it][j], a, denom);
          xv[it][j] = d;  // x is no longer needed: keep the offset instead
          acc += d * d;
        }
      }
      const float f = l2_factor(e, sqrt_rn(block_sum<kL2Threads>(acc, red)));
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          float o[VEC];
#pragma unroll
          for (int j = 0; j < VEC; ++j) o[j] = l2_out(nv[it][j], xv[it][j], f, lo, hi);
          store_f<VEC>(os + p * VEC, o);
        }
      }
    } else {
      float acc = 0.0f;
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float gv[VEC];
        load_f<VEC>(gs + p * VEC, gv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc += gv[j] * gv[j];
      }
      const float denom = l2_denom(block_sum<kL2Threads>(acc, red));
      acc = 0.0f;
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float xv[VEC], gv[VEC], nv[VEC];
        load_f<VEC>(xs + p * VEC, xv);
        load_f<VEC>(gs + p * VEC, gv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float d = l2_offset(xv[j], gv[j], nv[j], a, denom);
          acc += d * d;
        }
      }
      const float f = l2_factor(e, sqrt_rn(block_sum<kL2Threads>(acc, red)));
      // In place (out == x) is safe: each thread re-reads x at p before writing p.
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float xv[VEC], gv[VEC], nv[VEC], o[VEC];
        load_f<VEC>(xs + p * VEC, xv);
        load_f<VEC>(gs + p * VEC, gv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) o[j] = l2_out(nv[j], l2_offset(xv[j], gv[j], nv[j], a, denom), f, lo, hi);
        store_f<VEC>(os + p * VEC, o);
      }
    }
  }
}

template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(kL2Threads)
    random_start_l2_kernel(const T* __restrict__ nat, const float* __restrict__ noise, T* __restrict__ out,
                           const float* __restrict__ eps, const float* __restrict__ radius, int64_t B, int64_t D,
                           float lo, float hi) {
  __shared__ float red[kL2Threads / 32];
  const int64_t npack = D / VEC;
  for (int64_t s = blockIdx.x; s < B; s += gridDim.x) {
    const T* ns = nat + s * D;
    const float* zs = noise + s * D;
    T* os = out + s * D;
    const float scale = mul_rn(eps[s], radius[s]);
    if constexpr (ITEMS > 0) {
      float zv[ITEMS][VEC];
      float acc = 0.0f;
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          load_f<VEC>(zs + p * VEC, zv[it]);
        } else {
#pragma unroll
          for (int j = 0; j < VEC; ++j) zv[it][j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc += zv[it][j] * zv[it][j];
      }
      const float n = noise_norm(block_sum<kL2Threads>(acc, red));
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          float nv[VEC], o[VEC];
          load_f<VEC>(ns + p * VEC, nv);  // x_nat is only needed once: load it late
#pragma unroll
          for (int j = 0; j < VEC; ++j) o[j] = start_out(nv[j], scale, zv[it][j], n, lo, hi);
          store_f<VEC>(os + p * VEC, o);
        }
      }
    } else {
      float acc = 0.0f;
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float zv[VEC];
        load_f<VEC>(zs + p * VEC, zv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc += zv[j] * zv[j];
      }
      const float n = noise_norm(block_sum<kL2Threads>(acc, red));
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float zv[VEC], nv[VEC], o[VEC];
        load_f<VEC>(zs + p * VEC, zv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) o[j] = start_out(nv[j], scale, zv[j], n, lo, hi);
        store_f<VEC>(os + p * VEC, o);
      }
    }
  }
}

// ---- split path ---------------------------------------------------------------------
// Block `pid` of the split grid (B * n_chunks blocks) covers packs [p0, p1) of sample s.
struct ChunkRange {
  int64_t s, p0, p1;
};
template <int VEC>
__device__ __forceinline__ ChunkRange chunk_range(int64_t D, int64_t chunk, int64_t n_chunks) {
  const int64_t pid = blockIdx.x;
  const int64_t s = pid / n_chunks;
  const int64_t start = (pid - s * n_chunks) * chunk;
  const int64_t stop = start + chunk < D ? start + chunk : D;
  return {s, start / VEC, stop / VEC};  // chunk is a multiple of 256*VEC, D of VEC
}

// The sum of sample s's n_chunks partials, in the same order in every block.
__device__ __forceinline__ float sample_total(const float* partial, int64_t s, int64_t n_chunks, float* red) {
  float acc = 0.0f;
  for (int64_t c = threadIdx.x; c < n_chunks; c += kL2Threads) acc += partial[s * n_chunks + c];
  return block_sum<kL2Threads>(acc, red);
}

// Phase 1: partial[s, c] = sum of src^2 over chunk c of sample s (src: grad or noise).
template <typename S, int VEC>
__global__ void __launch_bounds__(kL2Threads)
    l2_sumsq_partial_kernel(const S* __restrict__ src, float* __restrict__ partial, int64_t D, int64_t chunk,
                            int64_t n_chunks) {
  __shared__ float red[kL2Threads / 32];
  const ChunkRange r = chunk_range<VEC>(D, chunk, n_chunks);
  const S* base = src + r.s * D;
  float acc = 0.0f;
  for (int64_t p = r.p0 + threadIdx.x; p < r.p1; p += kL2Threads) {
    float v[VEC];
    load_f<VEC>(base + p * VEC, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc += v[j] * v[j];
  }
  acc = block_sum<kL2Threads>(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// pgd_step phase 2: partial sums of d^2 (needs the whole ||g||, from the phase-1 partials).
template <typename T, int VEC>
__global__ void __launch_bounds__(kL2Threads)
    pgd_l2_offset_partial_kernel(const T* x, const T* g, const T* nat, const float* __restrict__ alpha,
                                 const float* __restrict__ gsq, float* __restrict__ dsq, int64_t D, int64_t chunk,
                                 int64_t n_chunks) {
  __shared__ float red[kL2Threads / 32];
  const ChunkRange r = chunk_range<VEC>(D, chunk, n_chunks);
  const float denom = l2_denom(sample_total(gsq, r.s, n_chunks, red));
  const float a = alpha[r.s];
  const int64_t off = r.s * D;
  float acc = 0.0f;
  for (int64_t p = r.p0 + threadIdx.x; p < r.p1; p += kL2Threads) {
    float xv[VEC], gv[VEC], nv[VEC];
    load_f<VEC>(x + off + p * VEC, xv);
    load_f<VEC>(g + off + p * VEC, gv);
    load_f<VEC>(nat + off + p * VEC, nv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float d = l2_offset(xv[j], gv[j], nv[j], a, denom);
      acc += d * d;
    }
  }
  acc = block_sum<kL2Threads>(acc, red);
  if (threadIdx.x == 0) dsq[blockIdx.x] = acc;
}

// pgd_step phase 3: both norms from the partials, then the chunk's outputs.
// out may be x (pgd_step_): phase 2 has finished reading x (stream order), and here
// each element is read and then written by the same thread.
template <typename T, int VEC>
__global__ void __launch_bounds__(kL2Threads)
    pgd_l2_apply_kernel(const T* x, const T* g, const T* nat, T* out, const float* __restrict__ eps,
                        const float* __restrict__ alpha, const float* __restrict__ gsq,
                        const float* __restrict__ dsq, int64_t D, int64_t chunk, int64_t n_chunks, float lo,
                        float hi) {
  __shared__ float red[kL2Threads / 32];
  const ChunkRange r = chunk_range<VEC>(D, chunk, n_chunks);
  const float denom = l2_denom(sample_total(gsq, r.s, n_chunks, red));
  const float f = l2_factor(eps[r.s], sqrt_rn(sample_total(dsq, r.s, n_chunks, red)));
  const float a = alpha[r.s];
  const int64_t off = r.s * D;
  for (int64_t p = r.p0 + threadIdx.x; p < r.p1; p += kL2Threads) {
    float xv[VEC], gv[VEC], nv[VEC], o[VEC];
    load_f<VEC>(x + off + p * VEC, xv);
    load_f<VEC>(g + off + p * VEC, gv);
    load_f<VEC>(nat + off + p * VEC, nv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) o[j] = l2_out(nv[j], l2_offset(xv[j], gv[j], nv[j], a, denom), f, lo, hi);
    store_f<VEC>(out + off + p * VEC, o);
  }
}

// random_start phase 2: the noise norm from the partials, then the chunk's outputs.
template <typename T, int VEC>
__global__ void __launch_bounds__(kL2Threads)
    random_start_l2_apply_kernel(const T* __restrict__ nat, const float* __restrict__ noise, T* __restrict__ out,
                                 const float* __restrict__ eps, const float* __restrict__ radius,
                                 const float* __restrict__ nsq, int64_t D, int64_t chunk, int64_t n_chunks,
                                 float lo, float hi) {
  __shared__ float red[kL2Threads / 32];
  const ChunkRange r = chunk_range<VEC>(D, chunk, n_chunks);
  const float n = noise_norm(sample_total(nsq, r.s, n_chunks, red));
  const float scale = mul_rn(eps[r.s], radius[r.s]);
  const int64_t off = r.s * D;
  for (int64_t p = r.p0 + threadIdx.x; p < r.p1; p += kL2Threads) {
    float zv[VEC], nv[VEC], o[VEC];
    load_f<VEC>(noise + off + p * VEC, zv);
    load_f<VEC>(nat + off + p * VEC, nv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) o[j] = start_out(nv[j], scale, zv[j], n, lo, hi);
    store_f<VEC>(out + off + p * VEC, o);
  }
}

// Calls launch(items_tag) for the fused kernel variant of plan.items.
template <int VEC, typename Launch>
void with_items(int items, Launch&& launch) {
  switch (items) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 8:
      if constexpr (VEC <= 4) {
        launch(std::integral_constant<int, 8>{});
        break;
      }
      [[fallthrough]];
    default: launch(std::integral_constant<int, 0>{}); break;
  }
}

// Blocks for the one-block-per-sample kernels: one per sample, capped at what
// stays resident (the grid-stride loop takes the rest).
inline int sample_grid(int64_t B, int device) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(B, static_cast<int64_t>(sm_count(device)) * 8)));
}

// The launch plan for B samples of D elements on `device` (csrc/l2_plan.h).
inline L2Plan plan_for(int64_t B, int64_t D, int vec, int device) {
  const L2Plan p = l2_plan(B, D, vec, sm_count(device));
  TORCH_CHECK(p.n_chunks == 1 || B * p.n_chunks <= INT32_MAX, "pgd_step: split grid too large");
  return p;
}

// ---------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------

void pgd_step_into(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
                   const at::Tensor& alpha, int64_t norm, double lo_d, double hi_d, const at::Tensor& out) {
  const int64_t B = x.size(0);
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const int64_t D = numel / B;
  const float lo = static_cast<float>(lo_d);
  const float hi = static_cast<float>(hi_d);
  const c10::cuda::CUDAGuard guard(x.device());
  const int dev = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(x.scalar_type(), "pgd_step", [&] {
    using T = scalar_t;
    const T* xp = x.const_data_ptr<T>();
    const T* gp = grad.const_data_ptr<T>();
    const T* np = x_nat.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    const float* ep = eps.const_data_ptr<float>();
    const float* ap = alpha.const_data_ptr<float>();
    constexpr size_t kBytes = 16;
    const bool aligned =
        is_aligned(xp, kBytes) && is_aligned(gp, kBytes) && is_aligned(np, kBytes) && is_aligned(op, kBytes);
    if (norm == 0) {
      launch_elementwise<T>(numel, D, aligned, [&](auto vec_tag, auto idx_tag, int64_t npack, int64_t per) {
        constexpr int VEC = decltype(vec_tag)::value;
        using I = decltype(idx_tag);
        pgd_linf_kernel<T, VEC, I><<<grid_for(npack, kEwThreads, kEwBlocksPerSm, dev), kEwThreads, 0, stream>>>(
            xp, gp, np, op, ep, ap, static_cast<I>(npack), IntDivider<I>(static_cast<I>(per)), lo, hi);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    } else {
      auto run = [&](auto vec_tag) {
        constexpr int VEC = decltype(vec_tag)::value;
        const L2Plan plan = plan_for(B, D, VEC, dev);
        if (plan.n_chunks == 1) {
          with_items<VEC>(plan.items, [&](auto items_tag) {
            constexpr int ITEMS = decltype(items_tag)::value;
            pgd_l2_kernel<T, VEC, ITEMS><<<sample_grid(B, dev), kL2Threads, 0, stream>>>(xp, gp, np, op, ep, ap, B,
                                                                                         D, lo, hi);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
          return;
        }
        const int grid = static_cast<int>(B * plan.n_chunks);
        at::Tensor parts = at::empty({2, B * plan.n_chunks}, x.options().dtype(at::kFloat));
        float* gsq = parts.data_ptr<float>();
        float* dsq = gsq + B * plan.n_chunks;
        l2_sumsq_partial_kernel<T, VEC><<<grid, kL2Threads, 0, stream>>>(gp, gsq, D, plan.chunk, plan.n_chunks);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        pgd_l2_offset_partial_kernel<T, VEC>
            <<<grid, kL2Threads, 0, stream>>>(xp, gp, np, ap, gsq, dsq, D, plan.chunk, plan.n_chunks);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        pgd_l2_apply_kernel<T, VEC><<<grid, kL2Threads, 0, stream>>>(xp, gp, np, op, ep, ap, gsq, dsq, D,
                                                                     plan.chunk, plan.n_chunks, lo, hi);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (aligned && D % kVecOf<T> == 0) {
        run(std::integral_constant<int, kVecOf<T>>{});
      } else {
        run(std::integral_constant<int, 1>{});
      }
    }
  });
}

at::Tensor pgd_step(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
                    const at::Tensor& alpha, int64_t norm, double lo, double hi) {
  check_pgd_args("pgd_step", x, grad, x_nat, eps, alpha, norm, at::kCUDA);
  at::Tensor out = at::empty_like(x);  // keeps x's memory format
  pgd_step_into(x, grad, x_nat, eps, alpha, norm, lo, hi, out);
  return out;
}

void pgd_step_(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat, const at::Tensor& eps,
               const at::Tensor& alpha, int64_t norm, double lo, double hi) {
  check_pgd_args("pgd_step_", x, grad, x_nat, eps, alpha, norm, at::kCUDA);
  pgd_step_into(x, grad, x_nat, eps, alpha, norm, lo, hi, x);
}

at::Tensor random_start(const at::Tensor& x_nat, const at::Tensor& noise, const at::Tensor& eps,
                        const at::Tensor& radius, int64_t norm, double lo_d, double hi_d) {
  const char* opname = "random_start";
  check_device_type(opname, x_nat, at::kCUDA);
  sample_numel(opname, x_nat);
  check_like(opname, x_nat, noise, "noise", true, /*same_dtype=*/false);
  TORCH_CHECK(noise.scalar_type() == at::kFloat, opname, ": noise must be float32, got ", noise.scalar_type());
  const int64_t B = x_nat.size(0);
  check_vec(opname, eps, B, "eps", x_nat.device());
  check_norm(opname, norm);
  if (norm == 2) check_vec(opname, radius, B, "radius", x_nat.device());
  at::Tensor out = at::empty_like(x_nat);
  const int64_t numel = x_nat.numel();
  if (numel == 0) return out;
  const int64_t D = numel / B;
  const float lo = static_cast<float>(lo_d);
  const float hi = static_cast<float>(hi_d);
  const c10::cuda::CUDAGuard guard(x_nat.device());
  const int dev = x_nat.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(x_nat.scalar_type(), opname, [&] {
    using T = scalar_t;
    constexpr int V = kVecOf<T>;
    const T* np = x_nat.const_data_ptr<T>();
    const float* zp = noise.const_data_ptr<float>();
    T* op = out.mutable_data_ptr<T>();
    const float* ep = eps.const_data_ptr<float>();
    // A pack of V image elements pairs with V float32 noise values (V*4 bytes).
    const bool aligned = is_aligned(np, 16) && is_aligned(op, 16) && is_aligned(zp, V * sizeof(float));
    if (norm == 0) {
      launch_elementwise<T>(numel, D, aligned, [&](auto vec_tag, auto idx_tag, int64_t npack, int64_t per) {
        constexpr int VEC = decltype(vec_tag)::value;
        using I = decltype(idx_tag);
        random_start_linf_kernel<T, VEC, I>
            <<<grid_for(npack, kEwThreads, kEwBlocksPerSm, dev), kEwThreads, 0, stream>>>(
                np, zp, op, ep, static_cast<I>(npack), IntDivider<I>(static_cast<I>(per)), lo, hi);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    } else {
      const float* rp = radius.const_data_ptr<float>();
      auto run = [&](auto vec_tag) {
        constexpr int VEC = decltype(vec_tag)::value;
        const L2Plan plan = plan_for(B, D, VEC, dev);
        if (plan.n_chunks == 1) {
          with_items<VEC>(plan.items, [&](auto items_tag) {
            constexpr int ITEMS = decltype(items_tag)::value;
            random_start_l2_kernel<T, VEC, ITEMS>
                <<<sample_grid(B, dev), kL2Threads, 0, stream>>>(np, zp, op, ep, rp, B, D, lo, hi);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
          return;
        }
        const int grid = static_cast<int>(B * plan.n_chunks);
        at::Tensor nsq_t = at::empty({B * plan.n_chunks}, x_nat.options().dtype(at::kFloat));
        float* nsq = nsq_t.data_ptr<float>();
        l2_sumsq_partial_kernel<float, VEC><<<grid, kL2Threads, 0, stream>>>(zp, nsq, D, plan.chunk, plan.n_chunks);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        random_start_l2_apply_kernel<T, VEC><<<grid, kL2Threads, 0, stream>>>(np, zp, op, ep, rp, nsq, D, plan.chunk,
                                                                              plan.n_chunks, lo, hi);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (aligned && D % V == 0) {
        run(std::integral_constant<int, V>{});
      } else {
        run(std::integral_constant<int, 1>{});
      }
    }
  });
  return out;
}

at::Tensor mix(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lam, const at::Tensor& index) {
  const char* opname = "mix";
  check_device_type(opname, a, at::kCUDA);
  sample_numel(opname, a);
  check_like(opname, a, b, "b", /*same_batch=*/false);
  const int64_t B = a.size(0);
  check_vec(opname, lam, B, "lam", a.device());
  check_vec(opname, index, B, "index", a.device(), at::kLong);
  at::Tensor out = at::empty_like(a);
  const int64_t numel = a.numel();
  if (numel == 0) return out;
  const int64_t D = numel / B;
  const c10::cuda::CUDAGuard guard(a.device());
  const int dev = a.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev).stream();
  FASTMIX_DISPATCH_FLOAT(a.scalar_type(), opname, [&] {
    using T = scalar_t;
    const T* ap = a.const_data_ptr<T>();
    const T* bp = b.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    const float* lp = lam.const_data_ptr<float>();
    const int64_t* ip = index.const_data_ptr<int64_t>();
    const bool aligned = is_aligned(ap, 16) && is_aligned(bp, 16) && is_aligned(op, 16);
    launch_elementwise<T>(numel, D, aligned, [&](auto vec_tag, auto idx_tag, int64_t npack, int64_t per) {
      constexpr int VEC = decltype(vec_tag)::value;
      using I = decltype(idx_tag);
      mix_kernel<T, VEC, I><<<grid_for(npack, kEwThreads, kEwBlocksPerSm, dev), kEwThreads, 0, stream>>>(
          ap, bp, op, lp, ip, b.size(0), static_cast<I>(npack), static_cast<I>(per),
          IntDivider<I>(static_cast<I>(per)));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

// The SM version (major*10 + minor) of the kernel image the CUDA runtime loads for
// `device`: the SASS built for it, or the PTX it JIT-compiles; 0 when the extension
// has no image that runs there ("no kernel image is available", issue 17.4).  The
// error of a failed lookup is cleared (it is not sticky), so the caller can fall
// back to another backend.
int64_t cuda_kernel_arch(int64_t device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
    (void)cudaGetLastError();
    return 0;
  }
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, pgd_linf_kernel<float, 4, uint32_t>);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return attr.binaryVersion;
}

}  // namespace

// Without tensor arguments: a catch-all kernel, present only in CUDA builds.
TORCH_LIBRARY_FRAGMENT(fastmix, m) { m.def("cuda_kernel_arch(int device) -> int", &cuda_kernel_arch); }

TORCH_LIBRARY_IMPL(fastmix, CUDA, m) {
  m.impl("pgd_step", &pgd_step);
  m.impl("pgd_step_", &pgd_step_);
  m.impl("random_start", &random_start);
  m.impl("mix", &mix);
}

}  // namespace cuda
}  // namespace fastmix
