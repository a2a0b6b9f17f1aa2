// fastmix._C: declares the fastmix:: operator schemas (docs/OPS.md).  The kernels
// register themselves per backend with TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and
// csrc/cuda/*.cu; the Triton versions are registered from Python.
//
// The module object itself exposes nothing: importing it runs the static
// registrations (the schemas below and the kernels' TORCH_LIBRARY_IMPL blocks),
// after which the ops are reachable as torch.ops.fastmix.*.
// A bare PyModule_Create keeps pybind11 (and its compile time) out of the build.
#include <Python.h>

#include <torch/library.h>

TORCH_LIBRARY(fastmix, m) {
  m.def("pgd_step(Tensor x, Tensor grad, Tensor x_nat, Tensor eps, Tensor alpha, int norm, float lo, float hi) -> Tensor");
  m.def("pgd_step_(Tensor(a!) x, Tensor grad, Tensor x_nat, Tensor eps, Tensor alpha, int norm, float lo, float hi) -> ()");
  m.def("random_start(Tensor x_nat, Tensor noise, Tensor eps, Tensor radius, int norm, float lo, float hi) -> Tensor");
  m.def("mix(Tensor a, Tensor b, Tensor lam, Tensor index) -> Tensor");
  m.def("soft_ce_fwd(Tensor logits, Tensor ya, Tensor yb, Tensor w, Tensor sa, Tensor sb) -> (Tensor, Tensor)");
  m.def("soft_ce_bwd(Tensor grad_loss, Tensor logits, Tensor lse, Tensor ya, Tensor yb, Tensor w, Tensor sa, Tensor sb) -> Tensor");
  m.def("cw_margin_fwd(Tensor logits, Tensor y, float kappa) -> (Tensor, Tensor)");
  m.def("cw_margin_bwd(Tensor grad, Tensor logits, Tensor y, Tensor jstar, Tensor margin, float kappa) -> Tensor");
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

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&fastmix_c_module); }
