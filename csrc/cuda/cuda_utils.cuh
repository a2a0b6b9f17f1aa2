// Device and launch helpers shared by the CUDA kernels of fastmix._C.
//
// Only c10/cuda headers are used on the host side (not ATen/cuda/CUDAContext.h),
// so the files also compile against a CPU-only torch plus a bare CUDA toolkit,
// which is what scripts/check_cuda_compile.sh does in CI.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "../fastmix_common.h"

namespace fastmix {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------
// Vectorised access.  A Pack of N elements is one aligned memory transaction
// (128 bits for 4 floats or 8 halves; two for 8 floats), which is what lets the
// memory-bound kernels reach full DRAM bandwidth.
// ---------------------------------------------------------------------------
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 128-bit access for the image/logit dtype T.
template <typename T>
constexpr int kVecOf = 16 / static_cast<int>(sizeof(T));

// Loads p[0..N) (p aligned to sizeof(T)*N) and widens to float.
template <int N, typename T>
__device__ __forceinline__ void load_f(const T* p, float (&out)[N]) {
  const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = static_cast<float>(pk.v[j]);
}

// Rounds to T (nearest even, like Tensor.to) and stores p[0..N).
template <int N, typename T>
__device__ __forceinline__ void store_f(T* p, const float (&in)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int j = 0; j < N; ++j) pk.v[j] = static_cast<T>(in[j]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

inline bool is_aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---------------------------------------------------------------------------
// Float helpers.  No --use_fast_math (csrc/build_flags.py), but nvcc still contracts
// a*b + c into an FMA by default; the explicitly rounded intrinsics, which are never
// contracted, spell out the operations whose rounding the parity rule of docs/OPS.md
// fixes (bitwise equal to the CPU kernels and the reference for mix and the L-inf
// ops, the Triton operation order for L2).
// ---------------------------------------------------------------------------
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }

// Device-side bounds check of a label or index read from memory (issue 11.2): a
// failed check aborts the kernel with "device-side assert triggered" (the host sees
// it at the next synchronising call), printing the message with file and line,
// instead of reading or writing out of bounds.  Active in release builds
// (CUDA_KERNEL_ASSERT ignores NDEBUG); costs one compare per loaded value.  The
// message is a literal on purpose: the printf variant (CUDA_KERNEL_ASSERT_PRINTF,
// which could print the value) gives every kernel a 48-byte stack frame.
#ifdef CUDA_KERNEL_ASSERT_MSG
#define FASTMIX_ASSERT_INDEX(v, n, what) \
  CUDA_KERNEL_ASSERT_MSG((v) >= 0 && (v) < (n), "fastmix: " what " out of range [0, n)")
#else
#define FASTMIX_ASSERT_INDEX(v, n, what) CUDA_KERNEL_ASSERT((v) >= 0 && (v) < (n))
#endif

// torch.maximum / torch.minimum: NaN in either argument propagates (fmaxf drops it).
__device__ __forceinline__ float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float nan_min(float a, float b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ float clip(float v, float lo, float hi) { return nan_min(nan_max(v, lo), hi); }

// ---------------------------------------------------------------------------
// Reductions.
// ---------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// Sum over a block of BLOCK threads; every thread gets the (identical) result.
// `smem` holds BLOCK/32 floats and may be reused right after the call returns.
template <int BLOCK>
__device__ __forceinline__ float block_sum(float v, float* smem) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "block must be whole warps");
  v = warp_sum(v);
  const int lane = threadIdx.x & 31;
  const int wid = threadIdx.x >> 5;
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  // Every warp redoes the tiny final reduction, which saves a broadcast round trip.
  v = lane < BLOCK / 32 ? smem[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();  // smem is free again
  return v;
}

// shfl_xor for group_reduce: overloads for the value types it reduces (a float one
// here, structs next to their kernels; a builtin type has no namespace for
// argument-dependent lookup, so its overload must precede the template).
__device__ __forceinline__ float shfl_xor(float v, int off) { return __shfl_xor_sync(kFullMask, v, off); }

// Reduction of an arbitrary value type over a group of GROUP threads that is either
// one warp (GROUP == 32) or the whole block.  `combine` must be commutative so that
// the xor butterfly leaves the same value in every lane; shfl_xor(V, int) must be
// overloaded for V.  `smem` holds GROUP/32 values (unused for a warp).
template <int GROUP, typename V, typename Combine>
__device__ __forceinline__ V group_reduce(V v, Combine combine, V* smem) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = combine(v, shfl_xor(v, off));
  if constexpr (GROUP == 32) {
    return v;
  } else {
    const int lane = threadIdx.x & 31;
    const int wid = threadIdx.x >> 5;
    if (lane == 0) smem[wid] = v;
    __syncthreads();
    // A serial combine over <= 32 warp results, in the same order in every thread.
    v = smem[0];
#pragma unroll
    for (int w = 1; w < GROUP / 32; ++w) v = combine(v, smem[w]);
    __syncthreads();
    return v;
  }
}

// ---------------------------------------------------------------------------
// Launch configuration.
// ---------------------------------------------------------------------------
// Streaming multiprocessors of a device, cached: cudaDeviceGetAttribute is cheap
// and legal during stream capture, but it is still a driver call per launch.
inline int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) {
    int n = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work` items with `threads` per block: enough
// blocks to fill every SM (`per_sm` resident blocks each), never more than needed.
inline int grid_for(int64_t work, int threads, int per_sm, int device) {
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * per_sm;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, threads), cap)));
}

}  // namespace cuda
}  // namespace fastmix
