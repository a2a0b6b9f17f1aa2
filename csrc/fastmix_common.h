// Host-side helpers shared by the CPU (.cpp) and CUDA (.cu) kernels of fastmix._C:
// the dtype dispatch and the cheap structural checks of the "kernel form" of
// docs/OPS.md.  The Python front already normalises every argument, so these checks
// only guard against a front bug turning into out-of-bounds memory accesses; they
// never inspect tensor values (that would need a device sync on CUDA).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fastmix {

// Dispatch over the three float dtypes the kernels support, defining `scalar_t`
// for the body.  AT_DISPATCH_FLOATING_TYPES_AND2 would also instantiate double,
// which the contract does not allow and which the float32 arithmetic would
// silently degrade, so we spell out the three cases ourselves.
#define FASTMIX_DISPATCH_FLOAT(TYPE, NAME, ...)                                          \
  [&] {                                                                                  \
    const at::ScalarType _fm_st = (TYPE);                                                \
    switch (_fm_st) {                                                                    \
      case at::kFloat: {                                                                 \
        using scalar_t = float;                                                          \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case at::kBFloat16: {                                                              \
        using scalar_t = at::BFloat16;                                                   \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case at::kHalf: {                                                                  \
        using scalar_t = at::Half;                                                       \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      default:                                                                           \
        TORCH_CHECK(false, NAME, ": expected float32, bfloat16 or float16, got ", _fm_st); \
    }                                                                                    \
  }()

// Per-sample element count D of an image-like tensor, after checking that sample i
// is the contiguous block [i*D, (i+1)*D) of its storage (dense, batch outermost).
inline int64_t sample_numel(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1, op, ": expected a batched tensor, got a 0-d tensor");
  TORCH_CHECK(t.is_non_overlapping_and_dense(), op,
              ": image-like tensors must be dense (contiguous or channels-last)");
  const int64_t B = t.size(0);
  const int64_t D = B > 0 ? t.numel() / B : 0;
  TORCH_CHECK(B <= 1 || D == 0 || t.stride(0) == D, op,
              ": the batch dimension must be outermost in memory");
  return D;
}

// `t` must share `ref`'s shape and memory layout (so raw storage offsets line up):
// same sizes, and the same stride in every dimension of size > 1, dimension 0
// included, so an expand()-ed tensor (stride 0) or a [::2] slice of the batch
// (stride 2*D) is rejected instead of being read as if it were dense (issue 17.3).
// With `same_batch` false (mix's `b`, a pool of another size) dimension 0 is left
// out of the comparison and `t` is checked to be dense with the batch outermost.
// A storage offset is fine: the kernels start from data_ptr().
inline void check_like(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* name,
                       bool same_batch = true, bool same_dtype = true) {
  TORCH_CHECK(t.dim() == ref.dim(), op, ": ", name, " must have ", ref.dim(), " dims, got ", t.dim());
  if (!same_batch) sample_numel(op, t);
  for (int64_t d = same_batch ? 0 : 1; d < ref.dim(); ++d) {
    TORCH_CHECK(t.size(d) == ref.size(d), op, ": ", name, " has shape ", t.sizes(), ", expected ",
                ref.sizes());
    // (strides of an empty tensor are meaningless, and nothing is read)
    TORCH_CHECK(t.size(d) == 1 || ref.numel() == 0 || t.stride(d) == ref.stride(d), op, ": ", name, " has strides ", t.strides(),
                ", expected ", ref.strides(), " (the memory layout of the first input; pass a dense copy)");
  }
  TORCH_CHECK(!same_dtype || t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), ", expected ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), ", expected ",
              ref.device());
}

// Memory safety of every gather/scatter by a label or index (issue 11.2): on the CPU
// the B values are scanned serially before any parallel loop runs (B int64 reads,
// far below the cost of the kernel, and no exception can start inside an OpenMP
// region); the first value outside [0, limit) raises an IndexError naming the
// argument, the row, the value and the valid range.  CUDA kernels check the same
// condition with CUDA_KERNEL_ASSERT where they read the value (no host sync).
// `noun` completes "out of range for <limit> <noun>", e.g. "classes" or "rows of b".
inline void check_index_range(const char* op, const at::Tensor& t, const char* name, int64_t limit,
                              const char* noun) {
  const int64_t n = t.numel();
  const int64_t* p = t.const_data_ptr<int64_t>();
  int64_t bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = p[i];
    if (v < 0 || v >= limit) {
      bad = i;
      break;
    }
  }
  TORCH_CHECK_INDEX(bad < 0, op, ": ", name, "[", bad, "] = ", bad < 0 ? 0 : p[bad], " is out of range for ",
                    limit, " ", noun, " (need 0 <= ", name, " < ", limit, ")");
}

// A per-sample vector (float32 scalars, or int64 labels/indices): contiguous, shape (B,).
inline void check_vec(const char* op, const at::Tensor& t, int64_t B, const char* name,
                      const at::Device& dev, at::ScalarType st = at::kFloat) {
  TORCH_CHECK(t.scalar_type() == st, op, ": ", name, " must be ", st, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B, op, ": ", name, " must have shape (", B, ",), got ",
              t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(t.device() == dev, op, ": ", name, " is on ", t.device(), ", expected ", dev);
}

// Logits: 2-D (B, C) contiguous float with C >= 2.
inline void check_logits(const char* op, const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 2, op, ": logits must be 2-D (B, C), got ", z.sizes());
  TORCH_CHECK(z.size(1) >= 2, op, ": need at least 2 classes, got ", z.size(1));
  TORCH_CHECK(z.is_contiguous(), op, ": logits must be contiguous");
}

// norm code of the schemas: 0 = L-inf, 2 = L2.
inline void check_norm(const char* op, int64_t norm) {
  TORCH_CHECK(norm == 0 || norm == 2, op, ": norm must be 0 (L-inf) or 2 (L2), got ", norm);
}

// Structural checks shared by the CPU and CUDA registrations: every tensor of one call on
// `dev_type`, shapes and dtypes in the kernel form of docs/OPS.md.
inline void check_device_type(const char* op, const at::Tensor& t, c10::DeviceType dev_type) {
  TORCH_CHECK(t.device().type() == dev_type, op, ": expected ", c10::DeviceTypeName(dev_type),
              " tensors, got one on ", t.device());
}

inline void check_pgd_args(const char* op, const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x_nat,
                           const at::Tensor& eps, const at::Tensor& alpha, int64_t norm, c10::DeviceType dev_type) {
  check_device_type(op, x, dev_type);
  sample_numel(op, x);
  check_like(op, x, grad, "grad");
  check_like(op, x, x_nat, "x_nat");
  const int64_t B = x.size(0);
  check_vec(op, eps, B, "eps", x.device());
  check_vec(op, alpha, B, "alpha", x.device());
  check_norm(op, norm);
}

inline void check_soft_ce_targets(const char* op, const at::Tensor& logits, const at::Tensor& ya, const at::Tensor& yb,
                                  const at::Tensor& w, const at::Tensor& sa, const at::Tensor& sb,
                                  c10::DeviceType dev_type) {
  check_device_type(op, logits, dev_type);
  check_logits(op, logits);
  const int64_t B = logits.size(0);
  const auto dev = logits.device();
  check_vec(op, ya, B, "ya", dev, at::kLong);
  check_vec(op, yb, B, "yb", dev, at::kLong);
  check_vec(op, w, B, "w", dev);
  check_vec(op, sa, B, "sa", dev);
  check_vec(op, sb, B, "sb", dev);
}

}  // namespace fastmix
