// Fused PSA attention custom operator for Paddle: CPU kernels and op
// registration.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// out[n, :, q] = sum_r x[n, :, r] * W[r, q], W = softmax over r of the
// psa_mask map Y (or Y itself with softmax off), computed per column q from
// the window alone (README.md has the derivation):
//   out = sum_{r in win(q)} x_r (w_rq - b_q) + b_q * S,
//   w_rq = exp(l_rq - lse_q), b_q = exp(-lse_q) if win(q) misses a position
//   (else 0), S = sum_r x_r.
// Outputs: Out [N, C, H, W] (not divided by the normalization factor; the
// Python face does that) and Lse [N, H, W] (lse_q, 0 with softmax off; float32
// for float16 / bfloat16 inputs, which the GPU kernels compute in), kept
// for the backward. Nothing of size (H*W)^2 is ever allocated.
//
// Inputs X [N, C, H, W] and Mask [N, mh*mw, H, W]; attributes psa_type
// (0 collect, 1 distribute), mask_h, mask_w, softmax.
//
// CPU kernels: psa_attention_cpu.h (shifted-row multiply-adds in NCHW).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

// The custom-op subset of "paddle/extension.h" (see psa_mask.cc).
#include "paddle/common/ddim.h"
#include "paddle/common/exception.h"
#include "paddle/common/layout.h"
#include "paddle/fluid/platform/init_phi.h"
#include "paddle/phi/api/all.h"
#include "op_dtypes.h"
#include "psa_attention_common.h"
#include "psa_attention_cpu.h"
#include "psa_mask_common.h"

static paddle::InitPhi g_psa_attention_init_phi;

#ifdef PADDLE_WITH_CUDA
// Launchers defined in psa_attention.cu (raw pointers, no Paddle headers).
#include "cuda_dtype_dispatch.h"
#include "psa_attention_cuda.h"
#endif

namespace {

using psa_attention_cpu::BackwardCpu;
using psa_attention_cpu::ForwardCpu;
using psa_mask::Geometry;
using psa_mask::kCollect;
using psa_mask::kDistribute;

void CheckAttrs(int psa_type, int mask_h, int mask_w) {
  PD_CHECK(psa_type == kCollect || psa_type == kDistribute,
           "psa_attention: psa_type must be 0 (collect) or 1 (distribute), "
           "got ", psa_type, ".");
  PD_CHECK(mask_h >= 1 && mask_w >= 1,
           "psa_attention: mask_h and mask_w must be >= 1, got ", mask_h,
           " x ", mask_w, ".");
}

void CheckShapes(const std::vector<int64_t>& xs, const std::vector<int64_t>& as,
                 int mask_h, int mask_w) {
  PD_CHECK(xs.size() == 4, "psa_attention: x must be 4-D [N, C, H, W], got ",
           xs.size(), "-D.");
  PD_CHECK(as.size() == 4,
           "psa_attention: mask_logits must be 4-D [N, mask_h*mask_w, H, W], "
           "got ", as.size(), "-D.");
  const int64_t cells = static_cast<int64_t>(mask_h) * mask_w;
  PD_CHECK(as[1] < 0 || as[1] == cells, "psa_attention: mask_logits has ",
           as[1], " channels but mask ", mask_h, " x ", mask_w, " needs ",
           cells, ".");
  for (int d : {0, 2, 3}) {
    PD_CHECK(xs[d] < 0 || as[d] < 0 || xs[d] == as[d],
             "psa_attention: x and mask_logits differ in dimension ", d, " (",
             xs[d], " vs ", as[d], ").");
  }
}

// Dense row-major buffers (see psa_mask.cc: strided views, oneDNN layouts).
paddle::Tensor Dense(const paddle::Tensor& t, const char* name) {
  paddle::Tensor out = t;
  if (out.layout() == phi::DataLayout::ONEDNN) {
    out = paddle::experimental::assign(out);
    PD_CHECK(out.layout() != phi::DataLayout::ONEDNN, "psa_attention: ",
             name, " arrived in a oneDNN layout that could not be converted "
             "to NCHW; disable oneDNN for this model.");
  }
  return out.is_contiguous() ? out : out.contiguous();
}

}  // namespace

std::vector<paddle::Tensor> PsaAttentionForward(const paddle::Tensor& x_in,
                                                const paddle::Tensor& a_in,
                                                int psa_type, int mask_h,
                                                int mask_w, bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_in.shape(), a_in.shape(), mask_h, mask_w);
  PD_CHECK(x_in.dtype() == a_in.dtype(),
           "psa_attention: x and mask_logits must have the same dtype.");
  const paddle::Tensor x = Dense(x_in, "x");
  const paddle::Tensor a = Dense(a_in, "mask_logits");
  const std::vector<int64_t> s = x.shape();
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const int64_t c = s[1];
  paddle::Tensor out = paddle::empty({g.n, c, g.h, g.w}, x.dtype(), x.place());
  paddle::Tensor lse = paddle::empty(
      {g.n, g.h, g.w}, paddleseg_ext_dtypes::AccDtype(x.dtype()), x.place());
  if (g.n * g.h * g.w == 0) return {out, lse};

  if (x.is_cpu()) {
    paddleseg_ext_dtypes::CheckCpuDtype(x.dtype(), "psa_attention");
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_forward_cpu", ([&] {
      ForwardCpu<data_t>(x.data<data_t>(), a.data<data_t>(),
                         out.data<data_t>(), lse.data<data_t>(), g, c,
                         psa_type, softmax);
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (x.is_gpu()) {
    const paddle::DataType acc = paddleseg_ext_dtypes::AccDtype(x.dtype());
    paddle::Tensor col_sum = paddle::empty({g.n, c}, acc, x.place());
    paddle::Tensor zero_w = paddle::empty({g.n, g.h * g.w}, acc, x.place());
    paddleseg_ext_cuda::DispatchCudaTypes(x.dtype(), "psa_attention", [&](auto types) {
      typedef decltype(types) Ty;
      typedef typename Ty::acc_t A;
      const cudaError_t err = PsaAttentionForwardCuda(
          paddleseg_ext_cuda::CudaData<Ty>(x), paddleseg_ext_cuda::CudaData<Ty>(a),
          paddleseg_ext_cuda::CudaData<Ty>(out), lse.data<A>(), col_sum.data<A>(),
          zero_w.data<A>(), g.n, c, g.h, g.w, g.mh, g.mw, psa_type, softmax, x.stream());
      PD_CHECK(err == cudaSuccess, "psa_attention forward CUDA launch failed: ",
               cudaGetErrorString(err));
    });
#endif
  } else {
    PD_THROW("psa_attention: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {out, lse};
}

std::vector<paddle::Tensor> PsaAttentionBackward(
    const paddle::Tensor& x_in, const paddle::Tensor& a_in,
    const paddle::Tensor& out_in, const paddle::Tensor& lse_in,
    const paddle::Tensor& dout_in, int psa_type, int mask_h, int mask_w,
    bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_in.shape(), a_in.shape(), mask_h, mask_w);
  const paddle::Tensor x = Dense(x_in, "x");
  const paddle::Tensor a = Dense(a_in, "mask_logits");
  const paddle::Tensor out = Dense(out_in, "out");
  const paddle::Tensor lse = Dense(lse_in, "lse");
  const paddle::Tensor dout = Dense(dout_in, "grad of out");
  PD_CHECK(dout.shape() == x.shape(),
           "psa_attention_grad: grad of out must have x's shape.");
  const std::vector<int64_t> s = x.shape();
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const int64_t c = s[1];
  paddle::Tensor dx = paddle::empty(s, x.dtype(), x.place());
  paddle::Tensor da = paddle::empty(a.shape(), a.dtype(), a.place());
  if (g.n * g.h * g.w == 0) return {dx, da};

  if (x.is_cpu()) {
    paddleseg_ext_dtypes::CheckCpuDtype(x.dtype(), "psa_attention_grad");
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_backward_cpu", ([&] {
      BackwardCpu<data_t>(x.data<data_t>(), a.data<data_t>(),
                          out.data<data_t>(), lse.data<data_t>(),
                          dout.data<data_t>(), dx.data<data_t>(),
                          da.data<data_t>(), g, c, psa_type, softmax);
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (x.is_gpu()) {
    const int64_t plane = g.h * g.w;
    const paddle::DataType acc = paddleseg_ext_dtypes::AccDtype(x.dtype());
    paddle::Tensor zero_w = paddle::empty({g.n, plane}, acc, x.place());
    paddle::Tensor col_dot = paddle::empty({g.n, plane}, acc, x.place());
    paddle::Tensor base = paddle::empty({g.n, c}, acc, x.place());
    paddleseg_ext_cuda::DispatchCudaTypes(x.dtype(), "psa_attention_grad", [&](auto types) {
      typedef decltype(types) Ty;
      typedef typename Ty::acc_t A;
      const cudaError_t err = PsaAttentionBackwardCuda(
          paddleseg_ext_cuda::CudaData<Ty>(x), paddleseg_ext_cuda::CudaData<Ty>(a),
          paddleseg_ext_cuda::CudaData<Ty>(out), lse.data<A>(),
          paddleseg_ext_cuda::CudaData<Ty>(dout), paddleseg_ext_cuda::CudaData<Ty>(dx),
          paddleseg_ext_cuda::CudaData<Ty>(da), zero_w.data<A>(), col_dot.data<A>(),
          base.data<A>(), g.n, c, g.h, g.w, g.mh, g.mw, psa_type, softmax, x.stream());
      PD_CHECK(err == cudaSuccess, "psa_attention backward CUDA launch failed: ",
               cudaGetErrorString(err));
    });
#endif
  } else {
    PD_THROW("psa_attention_grad: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {dx, da};
}

std::vector<std::vector<int64_t>> PsaAttentionInferShape(
    const std::vector<int64_t>& x_shape, const std::vector<int64_t>& a_shape,
    int psa_type, int mask_h, int mask_w, bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_shape, a_shape, mask_h, mask_w);
  return {x_shape, {x_shape[0], x_shape[2], x_shape[3]}};
}

std::vector<paddle::DataType> PsaAttentionInferDtype(
    const paddle::DataType& x_dtype, const paddle::DataType& a_dtype) {
  return {x_dtype, paddleseg_ext_dtypes::AccDtype(x_dtype)};
}

std::vector<std::vector<int64_t>> PsaAttentionGradInferShape(
    const std::vector<int64_t>& x_shape, const std::vector<int64_t>& a_shape,
    const std::vector<int64_t>& out_shape,
    const std::vector<int64_t>& lse_shape,
    const std::vector<int64_t>& dout_shape, int psa_type, int mask_h,
    int mask_w, bool softmax) {
  return {x_shape, a_shape};
}

std::vector<paddle::DataType> PsaAttentionGradInferDtype(
    const paddle::DataType& x_dtype, const paddle::DataType& a_dtype,
    const paddle::DataType& out_dtype, const paddle::DataType& lse_dtype,
    const paddle::DataType& dout_dtype) {
  return {x_dtype, a_dtype};
}

PD_BUILD_OP(psa_attention)
    .Inputs({"X", "Mask"})
    .Outputs({"Out", "Lse"})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int", "softmax: bool"})
    .SetKernelFn(PD_KERNEL(PsaAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaAttentionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaAttentionInferDtype));

// The backward keeps X, Mask, Out and Lse: O(N * H*W * (C + mh*mw)).
PD_BUILD_GRAD_OP(psa_attention)
    .Inputs({"X", "Mask", "Out", "Lse", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Mask")})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int", "softmax: bool"})
    .SetKernelFn(PD_KERNEL(PsaAttentionBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaAttentionGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaAttentionGradInferDtype));
