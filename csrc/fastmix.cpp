// fastmix._C: declares the fastmix:: operator schemas (docs/OPS.md).  The kernels
// register themselves per backend with TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and
// csrc/cuda/*.cu; the Triton versions are registered from Python.
//
// The module object exposes one attribute, `cuda_arch_list`; importing it runs the
// static registrations (the schemas below, the kernels' TORCH_LIBRARY_IMPL blocks and
// the C++ autograd of csrc/autograd.cpp), after which the ops are reachable, and
// differentiable, as torch.ops.fastmix.*.
// A bare PyModule_Create keeps pybind11 (and its compile time) out of the build.
#include <Python.h>

#include <torch/library.h>

#include <vector>

#include "l2_plan.h"

namespace {

// [n_chunks, chunk, items] of the CUDA L2 launch (csrc/l2_plan.h), for the unit test of
// the split decision on machines without a GPU (tests/test_ops_paths.py).
std::vector<int64_t> l2_split_plan(int64_t B, int64_t D, int64_t vec, int64_t sm_count, int64_t force_chunks) {
  TORCH_CHECK(B >= 0 && D >= 0 && sm_count >= 1 && force_chunks >= 0, "l2_split_plan: bad arguments");
  TORCH_CHECK(vec == 1 || vec == 2 || vec == 4 || vec == 8, "l2_split_plan: vec must be 1, 2, 4 or 8, got ", vec);
  const fastmix::L2Plan p = fastmix::l2_plan(B, D, static_cast<int>(vec), sm_count, force_chunks);
  return {p.n_chunks, p.chunk, p.items};
}

}  // namespace

TORCH_LIBRARY(fastmix, m) {
  m.def("pgd_step(Tensor x, Tensor grad, Tensor x_nat, Tensor eps, Tensor alpha, int norm, float lo, float hi) -> Tensor");
  m.def("pgd_step_(Tensor(a!) x, Tensor grad, Tensor x_nat, Tensor eps, Tensor alpha, int norm, float lo, float hi) -> ()");
  m.def("random_start(Tensor x_nat, Tensor noise, Tensor eps, Tensor radius, int norm, float lo, float hi) -> Tensor");
  m.def("mix(Tensor a, Tensor b, Tensor lam, Tensor index) -> Tensor");
  m.def("soft_ce_fwd(Tensor logits, Tensor ya, Tensor yb, Tensor w, Tensor sa, Tensor sb) -> (Tensor, Tensor)");
  m.def("soft_ce_bwd(Tensor grad_loss, Tensor logits, Tensor lse, Tensor ya, Tensor yb, Tensor w, Tensor sa, Tensor sb) -> Tensor");
  m.def("cw_margin_fwd(Tensor logits, Tensor y, float kappa) -> (Tensor, Tensor)");
  m.def("cw_margin_bwd(Tensor grad, Tensor logits, Tensor y, Tensor jstar, Tensor margin, float kappa) -> Tensor");
  // Host-side helper without tensors (a catch-all kernel): for tests only.
  m.def("l2_split_plan(int B, int D, int vec, int sm_count, int force_chunks=0) -> int[]", &l2_split_plan);
}

static struct PyModuleDef fastmix_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",                                                          // m_name
    "fastmix C++/CUDA kernels; the ops live in torch.ops.fastmix",  // m_doc
    -1,                                                            // m_size: no per-module state
    nullptr,                                                       // m_methods
    nullptr,                                                       // m_slots
    nullptr,                                                       // m_traverse
    nullptr,                                                       // m_clear
    nullptr,                                                       // m_free
};

// The GPU architectures of the CUDA kernels, "sm_90,compute_90" (SASS and PTX), from
// setup.py via csrc/build_flags.py; "" when the extension was built without CUDA.
#define FASTMIX_STR2(...) #__VA_ARGS__
#define FASTMIX_STR(...) FASTMIX_STR2(__VA_ARGS__)
#ifdef FASTMIX_CUDA_ARCH_LIST
static const char* const kCudaArchList = FASTMIX_STR(FASTMIX_CUDA_ARCH_LIST);
#else
static const char* const kCudaArchList = "";
#endif

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&fastmix_c_module);
  if (m == nullptr) return nullptr;
  if (PyModule_AddStringConstant(m, "cuda_arch_list", kCudaArchList) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
