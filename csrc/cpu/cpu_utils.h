// Inline helpers for the CPU kernels.
//
// The kernels are written as plain loops that GCC/Clang auto-vectorise at -O3
// (no -march=native, no -ffast-math); the hot ones are additionally built for AVX2
// and chosen at run time (see FASTMIX_ISA_CALL).  What gets in the way of
// auto-vectorisation without -ffast-math is handled here:
//   * reductions (sums cannot be reordered, a NaN-propagating max is a conditional
//     reduction) use explicit generic vectors, see "Reductions" below;
//   * exp: libm's expf is an opaque call, so exp_approx is an inlinable
//     branch-free Cody-Waite + polynomial exp (about 1 ulp) that vectorises;
//   * selects and the float16 conversions are branch-free integer bit operations
//     (see select_bits() for why), and every helper is forced inline.
// All arithmetic is float32; values are loaded/stored through to_f/from_f so the
// same templates serve float, bfloat16 and float16 (rounded once, on store).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace fastmix {
namespace cpu {

// Elements of work per parallel task.  Below this much work, waking a second thread
// costs more than it saves (the same threshold ATen uses).
constexpr int64_t kGrain = 32768;

// The helpers below must be inlined into the loops that use them, or those loops
// cannot be vectorised; GCC's heuristics otherwise leave e.g. exp_approx out of line.
#if defined(__GNUC__) || defined(__clang__)
#define FASTMIX_INLINE inline __attribute__((always_inline))
#else
#define FASTMIX_INLINE inline
#endif

// Bit casts and branch-free selects.  GCC (with its default -ftrapping-math) sinks a
// float expression that only one arm of a `?:` uses into that arm, and then refuses
// to vectorise the loop ("control flow in loop"); selecting with integer masks keeps
// every value computed unconditionally, so the loops below stay vectorisable.
FASTMIX_INLINE uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
FASTMIX_INLINE float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
FASTMIX_INLINE uint32_t mask_of(bool c) { return c ? 0xffffffffu : 0u; }
FASTMIX_INLINE float select_bits(bool c, float a, float b) {
  const uint32_t m = mask_of(c);
  return float_of((bits_of(a) & m) | (bits_of(b) & ~m));
}

// ---------------------------------------------------------------------------
// Loads and stores.  c10's Half conversions (and their NaN branches) are written
// with data-dependent selects on float expressions that stop GCC from vectorising
// any loop they appear in, so the 16-bit formats are converted here with integer
// bit manipulation.  Results are identical to Tensor.to(): exact widening, and
// round-to-nearest-even narrowing (NaN -> canonical quiet NaN for bfloat16, like
// c10::BFloat16).
// ---------------------------------------------------------------------------
FASTMIX_INLINE uint32_t sel_u(uint32_t m, uint32_t a, uint32_t b) { return (a & m) | (b & ~m); }

FASTMIX_INLINE float to_f(float v) { return v; }
FASTMIX_INLINE float to_f(at::BFloat16 v) { return float_of(static_cast<uint32_t>(v.x) << 16); }
FASTMIX_INLINE float to_f(at::Half v) {
  const uint32_t h = v.x;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);  // rebias the exponent
  const uint32_t infnan = (em << 13) | 0x7f800000u;
  // Subnormal halves are em * 2^-24, exactly representable as a float.
  const uint32_t sub = bits_of(static_cast<float>(static_cast<int32_t>(em)) * 5.9604644775390625e-8f);
  uint32_t r = sel_u(mask_of(em >= 0x7c00u), infnan, normal);
  r = sel_u(mask_of(em < 0x0400u), sub, r);
  return float_of(r | sign);
}

// float -> T, rounding to nearest even.
template <typename T>
FASTMIX_INLINE T from_f(float v);

template <>
FASTMIX_INLINE float from_f<float>(float v) {
  return v;
}

template <>
FASTMIX_INLINE at::BFloat16 from_f<at::BFloat16>(float v) {
  const uint32_t u = bits_of(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return at::BFloat16(static_cast<uint16_t>(sel_u(mask_of(v != v), 0x7fc0u, rounded)), at::BFloat16::from_bits());
}

template <>
FASTMIX_INLINE at::Half from_f<at::Half>(float v) {
  const uint32_t u = bits_of(v);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // |v| >= 65536 (or inf/NaN): inf, or a quiet NaN.  Values in [65520, 65536) reach
  // inf through the rounding of the normal path.
  const uint32_t big = sel_u(mask_of(a > 0x7f800000u), 0x7e00u, 0x7c00u);
  // |v| < 2^-14 (half subnormal or zero): adding 0.5f aligns the half subnormal
  // step (2^-24) with the float ulp at 0.5, so the FPU does the rounding.
  const uint32_t sub = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  // Normal: rebias, then round the 13 dropped bits to nearest even.
  const uint32_t normal = (a + ((15u - 127u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  uint32_t r = sel_u(mask_of(a >= 0x47800000u), big, normal);
  // The mask for a < 2^-14 comes from the sign of a - 2^-14 (a <= 0x7fffffff, so no
  // overflow): GCC does not recognise it as a condition, so it cannot sink the float
  // add above into a branch (see select_bits() for why that matters).
  const uint32_t small = static_cast<uint32_t>(static_cast<int32_t>(a - 0x38800000u) >> 31);
  r = sel_u(small, sub, r);
  return at::Half(static_cast<uint16_t>(r | sign), at::Half::from_bits());
}

// torch.maximum / torch.minimum semantics: a NaN in either argument propagates.
// The first select is exactly an x86 max/min instruction (it returns its second
// operand when unordered, so a NaN in `a` propagates); the second one propagates a
// NaN in `b`.  Both only select between values their conditions already use, so
// nothing can be sunk into a branch.
FASTMIX_INLINE float nan_max(float a, float b) {
  const float m = b > a ? b : a;
  return b != b ? b : m;
}
FASTMIX_INLINE float nan_min(float a, float b) {
  const float m = b < a ? b : a;
  return b != b ? b : m;
}

// clamp(v, lo, hi) as torch.clamp computes it: min(max(v, lo), hi), NaN propagating.
FASTMIX_INLINE float clip(float v, float lo, float hi) { return nan_min(nan_max(v, lo), hi); }

// Branch-free exp for float32: x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of
// ln2 so r is exact), e^r from the classic degree-6 polynomial of Cephes' expf, and
// 2^n built directly in the exponent bits.  Max error about 1 ulp on normal results.
// Results below FLT_MIN flush to 0 and x > 88 gives +inf (exp(88) ~ 1.65e38, so only
// the last sliver of the float range saturates early); NaN propagates.
FASTMIX_INLINE float exp_approx(float x) {
  const float xc = select_bits(x < -87.0f, -87.0f, select_bits(x > 88.0f, 88.0f, x));
  // Round x*log2(e) to the nearest integer with the 1.5*2^23 trick: adding it pushes
  // the fraction bits out of the mantissa (valid as |xc*log2e| < 2^22).
  const float kRound = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + kRound) - kRound;
  float r = xc - n * 0.693359375f;  // ln2 split into an exactly representable head...
  r = r - n * -2.12194440e-4f;      // ...and a tail
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // n is in [-126, 127] thanks to the clamp, so 2^n is a normal float.
  const float y = p * float_of(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  const float inf = std::numeric_limits<float>::infinity();
  return select_bits(x != x, x, select_bits(x > 88.0f, inf, select_bits(x < -87.0f, 0.0f, y)));
}

// ---------------------------------------------------------------------------
// Reductions.  GCC does not vectorise a float sum without -ffast-math (it may not
// reassociate) nor a NaN-propagating max (a conditional reduction), and emulating
// lanes with scalar arrays gives shuffle-heavy code, so the reductions use GCC /
// Clang generic vectors of 4 floats (SSE2 / NEON at the baseline ISA; wider
// generic vectors are split badly there), four of them per loop iteration to hide
// latencies.  A reduction over a computed term (x^2, exp(z - m)...) first stages
// the terms of a kChunk-element chunk in an L1-resident buffer with a plain
// element-wise loop, which auto-vectorises at the full width of the target, and
// then sums the buffer.
// ---------------------------------------------------------------------------
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

// Elements per staged chunk.  Chunk sums are added in double, so the rounding
// error of a long sum does not grow with its length (a 150k-element ImageNet
// sample stays at ~1e-7 relative).
constexpr int64_t kChunk = 256;

FASTMIX_INLINE f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
template <typename T>
FASTMIX_INLINE f32x4 load4(const T* p) {
  return f32x4{to_f(p[0]), to_f(p[1]), to_f(p[2]), to_f(p[3])};
}
FASTMIX_INLINE f32x4 nan_max4(f32x4 a, f32x4 b) {
  const i32x4 take_a = (a > b) | (a != a);
  return take_a ? a : b;
}
FASTMIX_INLINE float hsum4(f32x4 v) { return (v[0] + v[2]) + (v[1] + v[3]); }
FASTMIX_INLINE float hmax4(f32x4 v) { return nan_max(nan_max(v[0], v[2]), nan_max(v[1], v[3])); }

// sum of v[0, n) for a short (staged) array, in float.
FASTMIX_INLINE float sum_floats(const float* v, int64_t n) {
  f32x4 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    a0 += load4(v + k);
    a1 += load4(v + k + 4);
    a2 += load4(v + k + 8);
    a3 += load4(v + k + 12);
  }
  for (; k + 4 <= n; k += 4) a0 += load4(v + k);
  float s = hsum4((a0 + a1) + (a2 + a3));
  for (; k < n; ++k) s += v[k];
  return s;
}

// sum_k v[k]^2 over [0, n).
template <typename T>
FASTMIX_INLINE float sum_squares(const T* v, int64_t n) {
  float buf[kChunk];
  double total = 0.0;
  for (int64_t b0 = 0; b0 < n; b0 += kChunk) {
    const int64_t len = std::min(kChunk, n - b0);
    for (int64_t k = 0; k < len; ++k) {
      const float x = to_f(v[b0 + k]);
      buf[k] = x * x;
    }
    total += sum_floats(buf, len);
  }
  return static_cast<float>(total);
}

// max_{k in [begin, end)} v[k] (NaN propagating); -inf for an empty range.
template <typename T>
FASTMIX_INLINE float range_max(const T* v, int64_t begin, int64_t end) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f32x4 a0 = {ninf, ninf, ninf, ninf};
  f32x4 a1 = a0, a2 = a0, a3 = a0;
  int64_t k = begin;
  for (; k + 16 <= end; k += 16) {
    a0 = nan_max4(load4(v + k), a0);
    a1 = nan_max4(load4(v + k + 4), a1);
    a2 = nan_max4(load4(v + k + 8), a2);
    a3 = nan_max4(load4(v + k + 12), a3);
  }
  for (; k + 4 <= end; k += 4) a0 = nan_max4(load4(v + k), a0);
  float m = hmax4(nan_max4(nan_max4(a0, a1), nan_max4(a2, a3)));
  for (; k < end; ++k) m = nan_max(to_f(v[k]), m);
  return m;
}

// max (NaN propagating) of v[0, n), with the plain sum of v[0, n) in *sum.
template <typename T>
FASTMIX_INLINE float row_max_sum(const T* v, int64_t n, float* sum) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f32x4 m0 = {ninf, ninf, ninf, ninf};
  f32x4 m1 = m0;
  f32x4 s0 = {}, s1 = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const f32x4 x0 = load4(v + k);
    const f32x4 x1 = load4(v + k + 4);
    m0 = nan_max4(x0, m0);
    m1 = nan_max4(x1, m1);
    s0 += x0;
    s1 += x1;
  }
  float m = hmax4(nan_max4(m0, m1));
  float s = hsum4(s0 + s1);
  for (; k < n; ++k) {
    const float x = to_f(v[k]);
    m = nan_max(x, m);
    s += x;
  }
  *sum = s;
  return m;
}

// ---------------------------------------------------------------------------
// Run-time ISA choice.  The hot kernels live in .inc files that each .cpp compiles
// twice, into namespace `base` (baseline ISA) and, with GCC on x86-64, into
// namespace `avx2` under `#pragma GCC target("avx2")`.  -ffp-contract is off under
// -std=c++17, so both builds round identically: results never depend on the CPU.
// ---------------------------------------------------------------------------
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTMIX_HAVE_AVX2 1
#endif

// Whether to use the AVX2 build: the CPU must support it and torch's own choice of
// kernels (which honours ATEN_CPU_CAPABILITY=default) must allow it.
inline bool use_avx2() {
#ifdef FASTMIX_HAVE_AVX2
  static const bool use = [] {
    const std::string cap = at::get_cpu_capability();
    return __builtin_cpu_supports("avx2") && (cap == "AVX2" || cap == "AVX512");
  }();
  return use;
#else
  return false;
#endif
}

// Calls base::KERNEL(args...) or avx2::KERNEL(args...).
#ifdef FASTMIX_HAVE_AVX2
#define FASTMIX_ISA_CALL(KERNEL, ...) (use_avx2() ? avx2::KERNEL(__VA_ARGS__) : base::KERNEL(__VA_ARGS__))
#else
#define FASTMIX_ISA_CALL(KERNEL, ...) base::KERNEL(__VA_ARGS__)
#endif

// Splits [0, n) into parallel chunks of at least `grain` items and calls
// body(begin, end) for each (serially when the work is small).
template <typename F>
inline void parallel_chunks(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  at::parallel_for(0, n, std::max<int64_t>(1, grain), body);
}

}  // namespace cpu
}  // namespace fastmix
