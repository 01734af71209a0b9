// Winograd F(2x2, 3x3) tile transforms as Paddle custom operators (CPU).
//
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016
// (https://arxiv.org/abs/1509.09308). winograd_tiles.h has the geometry and
// the arithmetic; paddleseg_ext/ops/winograd.py composes the convolution:
//   V = winograd_input_transform(x)        [16, C_in, T]
//   M = matmul(U, V), U = G g G^T          [16, C_out, T]   (Paddle autograd)
//   y = winograd_output_transform(M)       [N, C_out, H, W]
// Both transforms are linear; each one's backward is its adjoint.
//
// Ops:
//   winograd_input_transform(X [N, C, H, W]; dilation) -> V [16, C, T]
//   winograd_output_transform(M [16, C, T]; n, h, w, dilation) -> Y [N, C, H, W]

#include <cstdint>
#include <vector>

// The custom-op subset of "paddle/extension.h" (see psa_mask.cc).
#include "paddle/common/ddim.h"
#include "paddle/common/exception.h"
#include "paddle/common/layout.h"
#include "paddle/fluid/platform/init_phi.h"
#include "paddle/phi/api/all.h"
#include "winograd_tiles.h"

static paddle::InitPhi g_winograd_init_phi;

namespace {

using winograd::Geometry;
using winograd::MakeGeometry;

void CheckDilation(int dilation) {
  PD_CHECK(dilation >= 1, "winograd: dilation must be >= 1, got ", dilation, ".");
}

// Dense row-major CPU buffers (strided views and oneDNN layouts are converted).
paddle::Tensor DenseCpu(const paddle::Tensor& t, const char* op, const char* name) {
  PD_CHECK(t.is_cpu(), op, ": ", name, " must be on the CPU (GPUs use cuDNN's convolution).");
  paddle::Tensor out = t;
  if (out.layout() == phi::DataLayout::ONEDNN) out = paddle::experimental::assign(out);
  PD_CHECK(out.layout() != phi::DataLayout::ONEDNN, op, ": ", name,
           " arrived in a oneDNN layout that could not be converted.");
  return out.is_contiguous() ? out : out.contiguous();
}

std::vector<int64_t> VShape(const std::vector<int64_t>& xs, int dilation) {
  PD_CHECK(xs.size() == 4, "winograd_input_transform: x must be 4-D [N, C, H, W], got ",
           xs.size(), "-D.");
  if (xs[0] < 0 || xs[2] < 0 || xs[3] < 0) return {16, xs[1], -1};
  const Geometry g = MakeGeometry(xs[0], xs[1], xs[2], xs[3], dilation);
  return {16, xs[1], g.tiles};
}

Geometry OutputGeometry(const std::vector<int64_t>& ms, int n, int h, int w, int dilation,
                        const char* op) {
  PD_CHECK(ms.size() == 3 && ms[0] == 16, op, ": m must be [16, C, T], got rank ", ms.size(),
           ".");
  PD_CHECK(n >= 0 && h >= 1 && w >= 1, op, ": n, h, w must be >= 0, 1, 1.");
  const Geometry g = MakeGeometry(n, ms[1], h, w, dilation);
  PD_CHECK(ms[2] < 0 || ms[2] == g.tiles, op, ": m has ", ms[2], " tiles but ", n, "x", h,
           "x", w, " with dilation ", dilation, " needs ", g.tiles, ".");
  return g;
}

}  // namespace

std::vector<paddle::Tensor> WinogradInputForward(const paddle::Tensor& x_in, int dilation) {
  CheckDilation(dilation);
  const paddle::Tensor x = DenseCpu(x_in, "winograd_input_transform", "x");
  const std::vector<int64_t> s = x.shape();
  VShape(s, dilation);
  const Geometry g = MakeGeometry(s[0], s[1], s[2], s[3], dilation);
  paddle::Tensor v = paddle::empty({16, g.c, g.tiles}, x.dtype(), x.place());
  if (g.tiles * g.c == 0) return {v};
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "winograd_input_transform", ([&] {
    winograd::InputTransform<data_t>(x.data<data_t>(), v.data<data_t>(), g);
  }));
  return {v};
}

std::vector<paddle::Tensor> WinogradInputBackward(const paddle::Tensor& x_in,
                                                  const paddle::Tensor& dv_in, int dilation) {
  CheckDilation(dilation);
  const std::vector<int64_t> s = x_in.shape();
  const paddle::Tensor dv = DenseCpu(dv_in, "winograd_input_transform_grad", "grad of v");
  PD_CHECK(dv.shape() == VShape(s, dilation),
           "winograd_input_transform_grad: grad of v does not match x's tiles.");
  const Geometry g = MakeGeometry(s[0], s[1], s[2], s[3], dilation);
  paddle::Tensor dx = paddle::empty(s, dv.dtype(), dv.place());
  if (g.n * g.c * g.h * g.w == 0) return {dx};
  PD_DISPATCH_FLOATING_TYPES(dv.dtype(), "winograd_input_transform_grad", ([&] {
    winograd::InputTransformAdjoint<data_t>(dv.data<data_t>(), dx.data<data_t>(), g);
  }));
  return {dx};
}

std::vector<paddle::Tensor> WinogradOutputForward(const paddle::Tensor& m_in, int n, int h,
                                                  int w, int dilation) {
  CheckDilation(dilation);
  const paddle::Tensor m = DenseCpu(m_in, "winograd_output_transform", "m");
  const Geometry g = OutputGeometry(m.shape(), n, h, w, dilation, "winograd_output_transform");
  paddle::Tensor y = paddle::empty({g.n, g.c, g.h, g.w}, m.dtype(), m.place());
  if (g.tiles * g.c == 0) return {y};
  PD_DISPATCH_FLOATING_TYPES(m.dtype(), "winograd_output_transform", ([&] {
    winograd::OutputTransform<data_t>(m.data<data_t>(), y.data<data_t>(), g);
  }));
  return {y};
}

std::vector<paddle::Tensor> WinogradOutputBackward(const paddle::Tensor& dy_in, int n, int h,
                                                   int w, int dilation) {
  CheckDilation(dilation);
  const paddle::Tensor dy = DenseCpu(dy_in, "winograd_output_transform_grad", "grad of y");
  const std::vector<int64_t> s = dy.shape();
  PD_CHECK(s.size() == 4 && s[0] == n && s[2] == h && s[3] == w,
           "winograd_output_transform_grad: grad of y must be [n, C, h, w].");
  const Geometry g = MakeGeometry(n, s[1], h, w, dilation);
  paddle::Tensor dm = paddle::empty({16, g.c, g.tiles}, dy.dtype(), dy.place());
  if (g.tiles * g.c == 0) return {dm};
  PD_DISPATCH_FLOATING_TYPES(dy.dtype(), "winograd_output_transform_grad", ([&] {
    winograd::OutputTransformAdjoint<data_t>(dy.data<data_t>(), dm.data<data_t>(), g);
  }));
  return {dm};
}

std::vector<std::vector<int64_t>> WinogradInputInferShape(const std::vector<int64_t>& x_shape,
                                                          int dilation) {
  CheckDilation(dilation);
  return {VShape(x_shape, dilation)};
}

std::vector<std::vector<int64_t>> WinogradInputGradInferShape(
    const std::vector<int64_t>& x_shape, const std::vector<int64_t>& dv_shape, int dilation) {
  return {x_shape};
}

std::vector<std::vector<int64_t>> WinogradOutputInferShape(const std::vector<int64_t>& m_shape,
                                                           int n, int h, int w, int dilation) {
  CheckDilation(dilation);
  const Geometry g = OutputGeometry(m_shape, n, h, w, dilation, "winograd_output_transform");
  return {{g.n, g.c, g.h, g.w}};
}

std::vector<std::vector<int64_t>> WinogradOutputGradInferShape(
    const std::vector<int64_t>& dy_shape, int n, int h, int w, int dilation) {
  const Geometry g = MakeGeometry(n, dy_shape[1], h, w, dilation);
  return {{16, g.c, g.tiles}};
}

std::vector<paddle::DataType> WinogradSameDtype(const paddle::DataType& dtype) {
  return {dtype};
}

std::vector<paddle::DataType> WinogradInputGradDtype(const paddle::DataType& x_dtype,
                                                     const paddle::DataType& dv_dtype) {
  return {dv_dtype};
}

PD_BUILD_OP(winograd_input_transform)
    .Inputs({"X"})
    .Outputs({"V"})
    .Attrs({"dilation: int"})
    .SetKernelFn(PD_KERNEL(WinogradInputForward))
    .SetInferShapeFn(PD_INFER_SHAPE(WinogradInputInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(WinogradSameDtype));

// X only for its shape (the map is linear; nothing else is kept).
PD_BUILD_GRAD_OP(winograd_input_transform)
    .Inputs({"X", paddle::Grad("V")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"dilation: int"})
    .SetKernelFn(PD_KERNEL(WinogradInputBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(WinogradInputGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(WinogradInputGradDtype));

PD_BUILD_OP(winograd_output_transform)
    .Inputs({"M"})
    .Outputs({"Y"})
    .Attrs({"n: int", "h: int", "w: int", "dilation: int"})
    .SetKernelFn(PD_KERNEL(WinogradOutputForward))
    .SetInferShapeFn(PD_INFER_SHAPE(WinogradOutputInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(WinogradSameDtype));

PD_BUILD_GRAD_OP(winograd_output_transform)
    .Inputs({paddle::Grad("Y")})
    .Outputs({paddle::Grad("M")})
    .Attrs({"n: int", "h: int", "w: int", "dilation: int"})
    .SetKernelFn(PD_KERNEL(WinogradOutputBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(WinogradOutputGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(WinogradSameDtype));
