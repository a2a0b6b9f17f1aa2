// Launch plan of the CUDA L2 kernels (pgd_step norm 2, random_start norm 2), host
// code only, so that the decision is unit-tested on the CPU through the op
// fastmix::l2_split_plan (tests/test_ops_paths.py) and used as is by the .cu files.
//
// The same split rule as the Triton kernels (fastmix's Triton pgd module, `_l2_plan`):
// one block per sample ("fused") while the batch alone fills the GPU or samples are
// small; otherwise (B < SMs, e.g. 16 ImageNet images on 132 SMs, issue 17.8) each
// sample is cut into n_chunks chunks of >= kSplitMinChunk elements, aiming at about
// 4 blocks per SM.  The split path is a two-phase, atomics-free reduction: partial
// sums per (sample, chunk) into a (B, n_chunks) buffer, then every block re-reduces
// its sample's partials in a fixed order (deterministic, no second kernel needed
// to combine them).
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastmix {

constexpr int kL2Threads = 256;           // threads per L2 block
constexpr int64_t kSplitMinChunk = 4096;  // below this the partial-sum round trip is not worth it
constexpr int64_t kSplitMaxChunks = 1024; // partials of one sample are re-reduced by one block

struct L2Plan {
  int64_t n_chunks;  // 1: fused (one block per sample); > 1: split path
  int64_t chunk;     // elements per chunk (a multiple of kL2Threads * vec); D when fused
  int items;         // fused path: packs per thread kept in registers (1, 2, 4, 8), 0 = streaming
};

inline int64_t plan_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Register-resident variant with the fewest ITEMS that holds a sample of `npack`
// packs, or 0 (streaming).  A thread caches at most 32 elements per input
// (ITEMS*VEC <= 32), beyond which spills would cost more than re-reading from L2.
inline int l2_items(int64_t npack, int vec) {
  if (npack <= kL2Threads * 1) return 1;
  if (npack <= kL2Threads * 2) return 2;
  if (npack <= kL2Threads * 4) return 4;
  if (vec <= 4 && npack <= kL2Threads * 8) return 8;
  return 0;
}

// B samples of D elements, loaded in packs of `vec`, on a GPU with `sms` SMs.
// `force_chunks` > 0 forces that many chunks (tests), like Triton's FORCE_L2_CHUNKS.
inline L2Plan l2_plan(int64_t B, int64_t D, int vec, int64_t sms, int64_t force_chunks = 0) {
  int64_t want;
  if (force_chunks > 0) {
    want = force_chunks;
  } else {
    want = B >= sms ? 1 : std::min<int64_t>(D / kSplitMinChunk, plan_ceil_div(4 * sms, std::max<int64_t>(B, 1)));
  }
  want = std::max<int64_t>(1, std::min<int64_t>(want, kSplitMaxChunks));
  if (want > 1) {
    const int64_t unit = static_cast<int64_t>(kL2Threads) * vec;  // one sweep of the block
    const int64_t chunk = plan_ceil_div(plan_ceil_div(D, want), unit) * unit;
    const int64_t n = plan_ceil_div(D, chunk);  // <= want: chunk was rounded up
    if (n > 1) return {n, chunk, 0};
  }
  return {1, D, l2_items(D / vec, vec)};
}

}  // namespace fastmix
