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
               const int64_t* __restrict__ index, I npack, I packs_per_sample, IntDivider<I> pack_to_sample) {
  for (I p = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; p < npack;
       p += static_cast<I>(gridDim.x) * blockDim.x) {
    const I s = pack_to_sample.div(p);
    const float l = lam[s];
    const float m = sub_rn(1.0f, l);
    const int64_t off = static_cast<int64_t>(p) * VEC;
    // Same position inside sample index[s] of b.
    const int64_t boff = (index[s] * static_cast<int64_t>(packs_per_sample) + (p - s * packs_per_sample)) * VEC;
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

// ---------------------------------------------------------------------------
// Per-sample (L2) kernels: one block per sample, grid-stride over samples.
// ---------------------------------------------------------------------------
constexpr int kL2Threads = 256;

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
      const float denom = sqrtf(block_sum<kL2Threads>(acc, red)) + kL2GradEps;
      acc = 0.0f;
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float d = (xv[it][j] + a * (gv[it][j] / denom)) - nv[it][j];
          xv[it][j] = d;  // x is no longer needed: keep the offset instead
          acc += d * d;
        }
      }
      const float dn = sqrtf(block_sum<kL2Threads>(acc, red));
      const float f = dn > 0.0f ? nan_min(e / dn, 1.0f) : 1.0f;
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          float o[VEC];
#pragma unroll
          for (int j = 0; j < VEC; ++j) o[j] = clip(nv[it][j] + xv[it][j] * f, lo, hi);
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
      const float denom = sqrtf(block_sum<kL2Threads>(acc, red)) + kL2GradEps;
      acc = 0.0f;
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float xv[VEC], gv[VEC], nv[VEC];
        load_f<VEC>(xs + p * VEC, xv);
        load_f<VEC>(gs + p * VEC, gv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float d = (xv[j] + a * (gv[j] / denom)) - nv[j];
          acc += d * d;
        }
      }
      const float dn = sqrtf(block_sum<kL2Threads>(acc, red));
      const float f = dn > 0.0f ? nan_min(e / dn, 1.0f) : 1.0f;
      // In place (out == x) is safe: each thread re-reads x at p before writing p.
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float xv[VEC], gv[VEC], nv[VEC], o[VEC];
        load_f<VEC>(xs + p * VEC, xv);
        load_f<VEC>(gs + p * VEC, gv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float d = (xv[j] + a * (gv[j] / denom)) - nv[j];
          o[j] = clip(nv[j] + d * f, lo, hi);
        }
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
    const float scale = eps[s] * radius[s];
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
      const float n = fmaxf(sqrtf(block_sum<kL2Threads>(acc, red)), kL2NoiseEps);
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int64_t p = threadIdx.x + static_cast<int64_t>(it) * kL2Threads;
        if (p < npack) {
          float nv[VEC], o[VEC];
          load_f<VEC>(ns + p * VEC, nv);  // x_nat is only needed once: load it late
#pragma unroll
          for (int j = 0; j < VEC; ++j) o[j] = clip(nv[j] + scale * (zv[it][j] / n), lo, hi);
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
      const float n = fmaxf(sqrtf(block_sum<kL2Threads>(acc, red)), kL2NoiseEps);
      for (int64_t p = threadIdx.x; p < npack; p += kL2Threads) {
        float zv[VEC], nv[VEC], o[VEC];
        load_f<VEC>(zs + p * VEC, zv);
        load_f<VEC>(ns + p * VEC, nv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) o[j] = clip(nv[j] + scale * (zv[j] / n), lo, hi);
        store_f<VEC>(os + p * VEC, o);
      }
    }
  }
}

// Picks the register-resident variant with the fewest ITEMS that holds a sample of
// `npack` packs, or the streaming one (ITEMS = 0), and calls launch(items_tag).
// A thread caches at most 32 elements per input (ITEMS*VEC <= 32, i.e. <= 96
// registers of data for pgd_step), beyond which spills would cost more than
// re-reading from L2; with 256 threads that covers D <= 8192 elements.
template <int VEC, typename Launch>
void with_items(int64_t npack, Launch&& launch) {
  if (npack <= kL2Threads * 1) {
    launch(std::integral_constant<int, 1>{});
  } else if (npack <= kL2Threads * 2) {
    launch(std::integral_constant<int, 2>{});
  } else if (npack <= kL2Threads * 4) {
    launch(std::integral_constant<int, 4>{});
  } else {
    if constexpr (VEC <= 4) {
      if (npack <= kL2Threads * 8) {
        launch(std::integral_constant<int, 8>{});
        return;
      }
    }
    launch(std::integral_constant<int, 0>{});
  }
}

// Blocks for the one-block-per-sample kernels: one per sample, capped at what
// stays resident (the grid-stride loop takes the rest).
inline int sample_grid(int64_t B, int device) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(B, static_cast<int64_t>(sm_count(device)) * 8)));
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
        with_items<VEC>(D / VEC, [&](auto items_tag) {
          constexpr int ITEMS = decltype(items_tag)::value;
          pgd_l2_kernel<T, VEC, ITEMS><<<sample_grid(B, dev), kL2Threads, 0, stream>>>(xp, gp, np, op, ep, ap, B,
                                                                                       D, lo, hi);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
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
  TORCH_CHECK(x_nat.is_cuda(), opname, ": expected CUDA tensors");
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
        with_items<VEC>(D / VEC, [&](auto items_tag) {
          constexpr int ITEMS = decltype(items_tag)::value;
          random_start_l2_kernel<T, VEC, ITEMS>
              <<<sample_grid(B, dev), kL2Threads, 0, stream>>>(np, zp, op, ep, rp, B, D, lo, hi);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
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
  TORCH_CHECK(a.is_cuda(), opname, ": expected CUDA tensors");
  sample_numel(opname, a);
  sample_numel(opname, b);
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
          ap, bp, op, lp, ip, static_cast<I>(npack), static_cast<I>(per), IntDivider<I>(static_cast<I>(per)));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmix, CUDA, m) {
  m.impl("pgd_step", &pgd_step);
  m.impl("pgd_step_", &pgd_step_);
  m.impl("random_start", &random_start);
  m.impl("mix", &mix);
}

}  // namespace cuda
}  // namespace fastmix
