// C++ autograd for the differentiable C++ ops: soft_ce_fwd, cw_margin_fwd, mix.
//
// Registered at the Autograd alias key, so it serves CPU and CUDA tensors alike and
// needs no Python: `torch.ops.fastmix.soft_ce_fwd(...)` backpropagates as soon as
// fastmix._C is imported, and a public call's forward + backward never enters the
// Python interpreter between the op call and the loss.backward() (issue 11.5: at
// C = 10 a Python autograd.Function costs more than the kernel).  Each forward
// redispatches below autograd to the backend kernel (or, under torch.compile and
// opcheck, to the fake kernel the Python side registers); each backward calls the
// matching *_bwd op through the dispatcher, so AOTAutograd traces it like an aten
// derivative.  The targets (labels, w, sa, sb, kappa, index) are constants.
// Double backward is not supported (the *_bwd ops have no autograd).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastmix {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Typed handles of the ops, looked up once.
const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&)>&
soft_ce_fwd_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastmix::soft_ce_fwd", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&)>();
  return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&)>&
soft_ce_bwd_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastmix::soft_ce_bwd", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&)>();
  return op;
}

const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double)>&
cw_margin_fwd_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastmix::cw_margin_fwd", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double)>();
  return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, double)>&
cw_margin_bwd_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastmix::cw_margin_bwd", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&, double)>();
  return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&)>&
mix_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastmix::mix", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op;
}

// The *_bwd kernels take a float32 contiguous (B,) upstream gradient.
at::Tensor as_row_grad(const at::Tensor& g) { return g.to(at::kFloat).contiguous(); }

// ---- soft cross-entropy: d loss/dz = g * (softmax - t), d lse/dz = softmax ----------
class SoftCE : public torch::autograd::Function<SoftCE> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& ya,
                               const at::Tensor& yb, const at::Tensor& w, const at::Tensor& sa,
                               const at::Tensor& sb) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [loss, lse] = soft_ce_fwd_op().call(logits, ya, yb, w, sa, sb);
    ctx->save_for_backward({logits, lse, ya, yb, w, sa, sb});
    ctx->set_materialize_grads(false);  // an unused output (usually lse) costs nothing
    return {loss, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& logits = s[0];
    const at::Tensor& lse = s[1];
    const at::Tensor& g_loss = grads[0];
    const at::Tensor& g_lse = grads[1];
    at::Tensor grad;
    if (g_loss.defined()) {
      grad = soft_ce_bwd_op().call(as_row_grad(g_loss), logits, lse, s[2], s[3], s[4], s[5], s[6]);
    }
    if (g_lse.defined()) {
      const at::Tensor p = at::exp(logits.to(at::kFloat) - lse.unsqueeze(1));
      const at::Tensor extra = (g_lse.to(at::kFloat).unsqueeze(1) * p).to(logits.scalar_type());
      grad = grad.defined() ? grad + extra : extra;
    }
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> soft_ce_fwd_autograd(const at::Tensor& logits, const at::Tensor& ya,
                                                        const at::Tensor& yb, const at::Tensor& w,
                                                        const at::Tensor& sa, const at::Tensor& sb) {
  auto out = SoftCE::apply(logits, ya, yb, w, sa, sb);
  return {out[0], out[1]};
}

// ---- CW margin: +g at jstar, -g at y while margin < kappa ---------------------------
class CWMargin : public torch::autograd::Function<CWMargin> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& y, double kappa) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [margin, jstar] = cw_margin_fwd_op().call(logits, y, kappa);
    ctx->save_for_backward({logits, y, jstar, margin});
    ctx->saved_data["kappa"] = kappa;
    ctx->mark_non_differentiable({jstar});
    ctx->set_materialize_grads(false);
    return {margin, jstar};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    at::Tensor grad;
    if (grads[0].defined()) {
      grad = cw_margin_bwd_op().call(as_row_grad(grads[0]), s[0], s[1], s[2], s[3],
                                     ctx->saved_data["kappa"].toDouble());
    }
    return {grad, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> cw_margin_fwd_autograd(const at::Tensor& logits, const at::Tensor& y,
                                                          double kappa) {
  auto out = CWMargin::apply(logits, y, kappa);
  return {out[0], out[1]};
}

// ---- mix: out = lam*a + (1-lam)*b[index] --------------------------------------------
class Mix : public torch::autograd::Function<Mix> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, const at::Tensor& lam,
                            const at::Tensor& index) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = mix_op().call(a, b, lam, index);
    }
    // a and b are only needed for d/d lam (manifold mixup); do not keep them otherwise.
    // (needs_input_grad() is only valid once a graph node exists, i.e. in backward;
    // forward runs with grad mode off, so ask the input itself)
    const bool need_lam = lam.requires_grad();
    ctx->save_for_backward({lam, index, need_lam ? a : at::Tensor(), need_lam ? b : at::Tensor()});
    ctx->saved_data["b_rows"] = b.size(0);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& lam = s[0];
    const at::Tensor& index = s[1];
    const at::Tensor& g = grads[0];
    std::vector<int64_t> shape(g.dim(), 1);
    shape[0] = -1;
    const at::Tensor l = lam.reshape(shape);
    at::Tensor ga, gb, gl;
    if (ctx->needs_input_grad(0)) ga = (g.to(at::kFloat) * l).to(g.scalar_type());
    if (ctx->needs_input_grad(1)) {
      std::vector<int64_t> bshape = g.sizes().vec();
      bshape[0] = ctx->saved_data["b_rows"].toInt();
      const at::Tensor contrib = (g.to(at::kFloat) * (1.0 - l)).to(g.scalar_type());
      gb = at::zeros(bshape, g.options()).index_add_(0, index, contrib);
    }
    if (ctx->needs_input_grad(2)) {
      const at::Tensor diff = s[2].to(at::kFloat) - s[3].index_select(0, index).to(at::kFloat);
      const at::Tensor prod = diff * g.to(at::kFloat);
      gl = prod.dim() == 1 ? prod : prod.flatten(1).sum(1);
    }
    return {ga, gb, gl, at::Tensor()};
  }
};

at::Tensor mix_autograd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lam, const at::Tensor& index) {
  return Mix::apply(a, b, lam, index);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmix, Autograd, m) {
  m.impl("soft_ce_fwd", &soft_ce_fwd_autograd);
  m.impl("cw_margin_fwd", &cw_margin_fwd_autograd);
  m.impl("mix", &mix_autograd);
}

}  // namespace fastmix
