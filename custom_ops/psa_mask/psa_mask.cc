// PSA mask custom operator for Paddle: CPU kernels and op registration.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Attributes: psa_type (0 collect, 1 distribute), mask_h, mask_w.
// Shapes are read from the tensors at run time (nothing baked in), so a graph
// saved with paddle.jit.save keeps working for any H, W.
// The index arithmetic lives in psa_mask_common.h (shared with psa_mask.cu).

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

// The custom-op subset of "paddle/extension.h". The full header also pulls
// in PIR/DRR pass headers and pybind11, which this op does not use and which
// take ~11 s of the ~14 s compile (measured with g++ 12, Paddle 3.3).
#include "paddle/common/ddim.h"
#include "paddle/common/exception.h"
#include "paddle/common/layout.h"
#include "paddle/fluid/platform/init_phi.h"
#include "paddle/phi/api/all.h"
#include "cpu_parallel.h"
#include "op_dtypes.h"
#include "psa_mask_common.h"

// As in paddle/extension.h: initialise phi once when the library loads.
static paddle::InitPhi g_psa_mask_init_phi;

#ifdef PADDLE_WITH_CUDA
// Launchers defined in psa_mask.cu (plain C++ over raw pointers, so the .cu
// compiles with nvcc without Paddle headers).
#include "cuda_dtype_dispatch.h"
#include "psa_mask_cuda.h"
#endif

namespace {

using psa_mask::Geometry;
using psa_mask::kCollect;
using psa_mask::kDistribute;
using paddleseg_ext_cpu::ParallelFor;
using paddleseg_ext_cpu::Scratch;

// The zero pass, separate from the scatter: every entry the scatter does not
// write must be exactly 0, never stale memory. All-zero bits is +0.0.
template <typename T>
void ZeroFill(T* data, int64_t numel) {
  const int64_t chunk = int64_t{1} << 16;  // elements per task
  ParallelFor((numel + chunk - 1) / chunk, numel, [&](int64_t c) {
    const int64_t begin = c * chunk;
    const int64_t len = std::min(chunk, numel - begin);
    std::memset(data + begin, 0, static_cast<size_t>(len) * sizeof(T));
  });
}

// Forward tasks are (n, h, th): one row of positions and one target row
// (mask row i = th - h + hh, which may be off the mask). A task owns, and
// writes whole, zeros included, W rows of W output entries:
//   collect:    y[n, th*W + tw, h, :] for every tw;
//   distribute: y[n, h*W + w, th, :] for every w.
// Over all (h, th) that is every y entry exactly once, so the output needs no
// separate zero-fill pass (a 16 MB memset at PSANet size, as long as the
// scatter itself). Backward tasks are (n, h, i): they own the rows
// dx[n, i*mw + j, h, :] for every j. Tasks write disjoint entries, so they run
// in parallel without atomics and the result does not depend on the thread
// count.
//
// Both sides of a task are blocks of W-element rows that sit H*W elements
// apart (8 KB at PSANet sizes): that stride maps every row to the same L1
// sets. So the side that is read in a permuted order is first staged, row by
// row, into a contiguous per-thread buffer (the x rows of mask row i in the
// forward, the W x W block of dy in the backward); the permutation then runs
// from L1 and the destination is written row by row, in order.

// Backward task t -> (n, h, i) and target row th; false when th is off the map.
inline bool DecodeTask(const Geometry& g, int64_t t, int64_t* n, int64_t* h,
                       int64_t* i, int64_t* th) {
  *i = t % g.mh;
  *h = (t / g.mh) % g.h;
  *n = t / (g.mh * g.h);
  *th = psa_mask::target(*h, *i, g.hh);
  return psa_mask::inside(*th, g.h);
}

// Forward task t -> (n, h, th) and mask row i; false when no mask row maps
// row h onto row th (the task's entries are all zero).
inline bool DecodeForwardTask(const Geometry& g, int64_t t, int64_t* n,
                              int64_t* h, int64_t* th, int64_t* i) {
  *th = t % g.h;
  *h = (t / g.h) % g.h;
  *n = t / (g.h * g.h);
  *i = psa_mask::cell_of(*th, *h, g.hh);
  return *i >= 0 && *i < g.mh;
}

// row[0, lo) = 0, row[lo, hi) = value(k), row[hi, W) = 0 (lo, hi clamped).
template <typename T, typename Value>
inline void WriteRow(T* row, int64_t width, int64_t lo, int64_t hi,
                     const Value& value) {
  lo = std::min(std::max(lo, int64_t{0}), width);
  hi = std::min(std::max(hi, lo), width);
  std::fill(row, row + lo, T(0));
  for (int64_t k = lo; k < hi; ++k) row[k] = value(k);
  std::fill(row + hi, row + width, T(0));
}

template <typename T, int kType>
void ForwardCpu(const T* x, T* y, const Geometry& g) {
  ParallelFor(g.n * g.h * g.h, psa_mask::y_numel(g), [&](int64_t t) {
    int64_t n, h, th, i;
    if (!DecodeForwardTask(g, t, &n, &h, &th, &i)) {
      for (int64_t r = 0; r < g.w; ++r) {  // r: tw (collect) or w
        T* row = y + (kType == kCollect
                          ? psa_mask::y_offset(g, kType, n, h, 0, th, r)
                          : psa_mask::y_offset(g, kType, n, h, r, th, 0));
        std::memset(row, 0, static_cast<size_t>(g.w) * sizeof(T));
      }
      return;
    }
    // buf[j * W + w] = x[n, i*mw + j, h, w]
    T* buf = Scratch<T>(g.mw * g.w);
    for (int64_t j = 0; j < g.mw; ++j) {
      std::memcpy(buf + j * g.w, x + psa_mask::x_offset(g, n, i, j, h, 0),
                  g.w * sizeof(T));
    }
    for (int64_t r = 0; r < g.w; ++r) {
      int64_t lo, hi;
      if (kType == kCollect) {
        // Row of output channel th*W + tw (tw = r), indexed by position w.
        psa_mask::pos_range_for_target(r, g.hw, g.mw, g.w, &lo, &hi);
        WriteRow(y + psa_mask::y_offset(g, kType, n, h, 0, th, r), g.w, lo, hi,
                 [&](int64_t w) {
                   return buf[psa_mask::cell_of(r, w, g.hw) * g.w + w];
                 });
      } else {
        // Row th of output channel h*W + w (w = r), indexed by target tw.
        psa_mask::cell_range(r, g.hw, g.mw, g.w, &lo, &hi);
        WriteRow(y + psa_mask::y_offset(g, kType, n, h, r, th, 0), g.w,
                 psa_mask::target(r, lo, g.hw), psa_mask::target(r, hi, g.hw),
                 [&](int64_t tw) {
                   return buf[psa_mask::cell_of(tw, r, g.hw) * g.w + r];
                 });
      }
    }
  });
}

// dx[n, i*mw + j, h, w] = dy[matching entry]; both modes read one W x W block
// of dy per task (collect: rows tw of channel block th; distribute: rows of
// channels h*W + w at plane row th).
//
// Task (n, h, i) owns the rows dx[n, i*mw + j, h, :] for every j, so together
// the tasks cover dx exactly once. Each task writes its rows whole, zeros
// where a cell's target is off the map: the gradient is explicitly zero there
// without a separate zero-fill pass over dx (which cost as much as the gather).
template <typename T, int kType>
void BackwardCpu(const T* dy, T* dx, const Geometry& g) {
  ParallelFor(g.n * g.h * g.mh, psa_mask::x_numel(g), [&](int64_t t) {
    int64_t n, h, i, th;
    const bool row_inside = DecodeTask(g, t, &n, &h, &i, &th);
    if (!row_inside) {
      for (int64_t j = 0; j < g.mw; ++j) {
        std::memset(dx + psa_mask::x_offset(g, n, i, j, h, 0), 0,
                    static_cast<size_t>(g.w) * sizeof(T));
      }
      return;
    }
    // collect: buf[tw * W + w]; distribute: buf[w * W + tw].
    T* buf = Scratch<T>(g.w * g.w);
    for (int64_t r = 0; r < g.w; ++r) {
      const int64_t offset =
          kType == kCollect ? psa_mask::y_offset(g, kType, n, h, 0, th, r)
                            : psa_mask::y_offset(g, kType, n, h, r, th, 0);
      std::memcpy(buf + r * g.w, dy + offset, g.w * sizeof(T));
    }
    for (int64_t j = 0; j < g.mw; ++j) {
      int64_t lo, hi;
      psa_mask::pos_range_for_cell(j, g.hw, g.w, &lo, &hi);
      WriteRow(dx + psa_mask::x_offset(g, n, i, j, h, 0), g.w, lo, hi,
               [&](int64_t w) {
                 const int64_t tw = psa_mask::target(w, j, g.hw);
                 return kType == kCollect ? buf[tw * g.w + w]
                                          : buf[w * g.w + tw];
               });
    }
  });
}

// One element at a time through psa_mask::map_x_to_y, exactly as the CUDA
// kernels do. Selected with PSA_MASK_CPU_KERNEL=elementwise so that CPU tests
// cover the GPU's arithmetic; slower than the blocked kernels above.
bool UseElementwiseKernels() {
  const char* env = std::getenv("PSA_MASK_CPU_KERNEL");
  return env != nullptr && std::strcmp(env, "elementwise") == 0;
}

// Tasks are blocks of consecutive x elements.
constexpr int64_t kElementwiseBlock = int64_t{1} << 14;

template <typename T>
void ForwardElementwiseCpu(const T* x, T* y, const Geometry& g, int psa_type) {
  const int64_t numel = psa_mask::x_numel(g);
  const int64_t blocks = (numel + kElementwiseBlock - 1) / kElementwiseBlock;
  ParallelFor(blocks, numel, [&](int64_t b) {
    const int64_t end = std::min(numel, (b + 1) * kElementwiseBlock);
    for (int64_t idx = b * kElementwiseBlock; idx < end; ++idx) {
      const int64_t out = psa_mask::map_x_to_y(g, psa_type, idx);
      if (out >= 0) y[out] = x[idx];
    }
  });
}

template <typename T>
void BackwardElementwiseCpu(const T* dy, T* dx, const Geometry& g,
                            int psa_type) {
  const int64_t numel = psa_mask::x_numel(g);
  const int64_t blocks = (numel + kElementwiseBlock - 1) / kElementwiseBlock;
  ParallelFor(blocks, numel, [&](int64_t b) {
    const int64_t end = std::min(numel, (b + 1) * kElementwiseBlock);
    for (int64_t idx = b * kElementwiseBlock; idx < end; ++idx) {
      const int64_t src = psa_mask::map_x_to_y(g, psa_type, idx);
      if (src >= 0) dx[idx] = dy[src];
    }
  });
}

void CheckAttrs(int psa_type, int mask_h, int mask_w) {
  PD_CHECK(psa_type == kCollect || psa_type == kDistribute,
           "psa_mask: psa_type must be 0 (collect) or 1 (distribute), got ",
           psa_type, ".");
  PD_CHECK(mask_h >= 1 && mask_w >= 1,
           "psa_mask: mask_h and mask_w must be >= 1, got ", mask_h, " x ",
           mask_w, ".");
}

// The kernels need a dense, row-major (NCHW) buffer. Paddle 3 may pass a
// strided view, and Paddle Inference with oneDNN may pass a tensor in a
// blocked oneDNN layout; going through a regular Paddle API call makes Paddle
// convert it to a plain layout.
paddle::Tensor Dense(const paddle::Tensor& t, const char* name) {
  paddle::Tensor out = t;
  if (out.layout() == phi::DataLayout::ONEDNN) {
    out = paddle::experimental::assign(out);
    PD_CHECK(out.layout() != phi::DataLayout::ONEDNN, "psa_mask: ", name,
             " arrived in a oneDNN layout that could not be converted to "
             "NCHW; disable oneDNN for this model (Paddle Inference: "
             "config.disable_onednn()).");
  }
  return out.is_contiguous() ? out : out.contiguous();
}

}  // namespace

std::vector<paddle::Tensor> PsaMaskForward(const paddle::Tensor& x_in,
                                           int psa_type, int mask_h,
                                           int mask_w) {
  CheckAttrs(psa_type, mask_h, mask_w);
  const std::vector<int64_t> s = x_in.shape();
  PD_CHECK(s.size() == 4,
           "psa_mask: x must be 4-D [N, mask_h*mask_w, H, W], got ", s.size(),
           "-D.");
  PD_CHECK(s[1] == static_cast<int64_t>(mask_h) * mask_w,
           "psa_mask: x has ", s[1], " channels but mask ", mask_h, " x ",
           mask_w, " needs ", static_cast<int64_t>(mask_h) * mask_w, ".");
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const paddle::Tensor x = Dense(x_in, "x");
  paddle::Tensor y = paddle::empty({g.n, psa_mask::plane(g), g.h, g.w},
                                   x.dtype(), x.place());
  if (psa_mask::y_numel(g) == 0) return {y};

  if (x.is_cpu()) {
    paddleseg_ext_dtypes::CheckCpuDtype(x.dtype(), "psa_mask");
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_mask_forward_cpu", ([&] {
      data_t* out = y.data<data_t>();
      if (UseElementwiseKernels()) {
        ZeroFill(out, psa_mask::y_numel(g));  // the GPU's way: fill, then scatter
        ForwardElementwiseCpu<data_t>(x.data<data_t>(), out, g, psa_type);
      } else if (psa_type == kCollect) {
        ForwardCpu<data_t, kCollect>(x.data<data_t>(), out, g);
      } else {
        ForwardCpu<data_t, kDistribute>(x.data<data_t>(), out, g);
      }
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (x.is_gpu()) {
    paddleseg_ext_cuda::DispatchCudaTypes(x.dtype(), "psa_mask", [&](auto types) {
      typedef decltype(types) Ty;
      const cudaError_t err = PsaMaskForwardCuda(
          paddleseg_ext_cuda::CudaData<Ty>(x), paddleseg_ext_cuda::CudaData<Ty>(y),
          g.n, g.h, g.w, g.mh, g.mw, psa_type, x.stream());
      PD_CHECK(err == cudaSuccess, "psa_mask forward CUDA launch failed: ",
               cudaGetErrorString(err));
    });
#endif
  } else {
    PD_THROW("psa_mask: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {y};
}

std::vector<paddle::Tensor> PsaMaskBackward(const paddle::Tensor& dy_in,
                                            int psa_type, int mask_h,
                                            int mask_w) {
  CheckAttrs(psa_type, mask_h, mask_w);
  const std::vector<int64_t> s = dy_in.shape();
  PD_CHECK(s.size() == 4, "psa_mask_grad: grad of out must be 4-D, got ",
           s.size(), "-D.");
  PD_CHECK(s[1] == s[2] * s[3],
           "psa_mask_grad: grad of out must be [N, H*W, H, W], got ", s[1],
           " channels for H*W = ", s[2] * s[3], ".");
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const paddle::Tensor dy = Dense(dy_in, "grad of out");
  paddle::Tensor dx =
      paddle::empty({g.n, g.mh * g.mw, g.h, g.w}, dy.dtype(), dy.place());
  if (psa_mask::x_numel(g) == 0) return {dx};

  if (dy.is_cpu()) {
    paddleseg_ext_dtypes::CheckCpuDtype(dy.dtype(), "psa_mask_grad");
    PD_DISPATCH_FLOATING_TYPES(dy.dtype(), "psa_mask_backward_cpu", ([&] {
      data_t* out = dx.data<data_t>();
      if (UseElementwiseKernels()) {
        ZeroFill(out, psa_mask::x_numel(g));  // the GPU's way: fill, then gather
        BackwardElementwiseCpu<data_t>(dy.data<data_t>(), out, g, psa_type);
      } else if (psa_type == kCollect) {
        BackwardCpu<data_t, kCollect>(dy.data<data_t>(), out, g);
      } else {
        BackwardCpu<data_t, kDistribute>(dy.data<data_t>(), out, g);
      }
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (dy.is_gpu()) {
    paddleseg_ext_cuda::DispatchCudaTypes(dy.dtype(), "psa_mask_grad", [&](auto types) {
      typedef decltype(types) Ty;
      const cudaError_t err = PsaMaskBackwardCuda(
          paddleseg_ext_cuda::CudaData<Ty>(dy), paddleseg_ext_cuda::CudaData<Ty>(dx),
          g.n, g.h, g.w, g.mh, g.mw, psa_type, dy.stream());
      PD_CHECK(err == cudaSuccess, "psa_mask backward CUDA launch failed: ",
               cudaGetErrorString(err));
    });
#endif
  } else {
    PD_THROW(
        "psa_mask_grad: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {dx};
}

// -1 marks a dimension unknown at graph-build time (dynamic InputSpec); H*W
// is only known when both H and W are.
std::vector<std::vector<int64_t>> PsaMaskInferShape(
    const std::vector<int64_t>& x_shape, int psa_type, int mask_h,
    int mask_w) {
  CheckAttrs(psa_type, mask_h, mask_w);
  PD_CHECK(x_shape.size() == 4,
           "psa_mask: x must be 4-D [N, mask_h*mask_w, H, W], got ",
           x_shape.size(), "-D.");
  PD_CHECK(x_shape[1] < 0 ||
               x_shape[1] == static_cast<int64_t>(mask_h) * mask_w,
           "psa_mask: x has ", x_shape[1], " channels but mask ", mask_h, " x ",
           mask_w, " needs ", static_cast<int64_t>(mask_h) * mask_w, ".");
  const int64_t h = x_shape[2];
  const int64_t w = x_shape[3];
  const int64_t hw = (h >= 0 && w >= 0) ? h * w : -1;
  return {{x_shape[0], hw, h, w}};
}

std::vector<std::vector<int64_t>> PsaMaskGradInferShape(
    const std::vector<int64_t>& dy_shape, int psa_type, int mask_h,
    int mask_w) {
  CheckAttrs(psa_type, mask_h, mask_w);
  PD_CHECK(dy_shape.size() == 4, "psa_mask_grad: grad of out must be 4-D, got ",
           dy_shape.size(), "-D.");
  return {{dy_shape[0], static_cast<int64_t>(mask_h) * mask_w, dy_shape[2],
           dy_shape[3]}};
}

std::vector<paddle::DataType> PsaMaskInferDtype(const paddle::DataType& dtype) {
  return {dtype};
}

PD_BUILD_OP(psa_mask)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int"})
    .SetKernelFn(PD_KERNEL(PsaMaskForward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaMaskInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaMaskInferDtype));

// The backward needs only Grad(Out): N, H, W come from its shape and the mask
// from the attributes, so X is not kept alive for the backward pass.
PD_BUILD_GRAD_OP(psa_mask)
    .Inputs({paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int"})
    .SetKernelFn(PD_KERNEL(PsaMaskBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaMaskGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaMaskInferDtype));
