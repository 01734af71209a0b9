// PSA mask operator: the CUDA kernels and their launchers, as templates.
// nvcc compiles them for the GPU (psa_mask.cu); the host compiler compiles
// the same text with the CUDA emulation (kernel_support.h) for the sanitized
// CPU tests (tests/test_cuda_emulation.py).
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// One thread per x (or dx) element: reads/writes of x are coalesced, and the
// index map in psa_mask_common.h sends each element to at most one y entry, so
// there are no atomics and results are deterministic. The zero pass is a
// separate cudaMemsetAsync, queued on the same stream before the scatter
// (zeroing inside the kernel would race with other blocks' writes). The op is
// a permutation plus zeros, so every element type (float16 and bfloat16
// included) is copied exactly; all-zero bits is +0 in each of them.
#ifndef PSA_MASK_KERNELS_CUH_
#define PSA_MASK_KERNELS_CUH_

#include <cstdint>

#include "kernel_support.h"
#include "psa_mask_common.h"

namespace psa_mask_cuda {

using kernel_support::BlocksFor;
using kernel_support::LaunchShape;

template <typename T>
__global__ void ForwardKernel(const T* __restrict__ x, T* __restrict__ y,
                              psa_mask::Geometry g, int psa_type,
                              int64_t numel) {
  PSEXT_GRID_STRIDE_LOOP(idx, numel) {
    const int64_t out = psa_mask::map_x_to_y(g, psa_type, idx);
    if (out >= 0) y[out] = x[idx];
  }
}

template <typename T>
__global__ void BackwardKernel(const T* __restrict__ dy, T* __restrict__ dx,
                               psa_mask::Geometry g, int psa_type,
                               int64_t numel) {
  PSEXT_GRID_STRIDE_LOOP(idx, numel) {
    const int64_t src = psa_mask::map_x_to_y(g, psa_type, idx);
    if (src >= 0) dx[idx] = dy[src];  // unused cells keep the zero pass's 0
  }
}

template <typename T>
cudaError_t LaunchForward(const T* x, T* y, int64_t n, int64_t h, int64_t w,
                          int64_t mh, int64_t mw, int psa_type,
                          const LaunchShape& shape, cudaStream_t stream) {
  const psa_mask::Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t y_numel = psa_mask::y_numel(g);
  const int64_t x_numel = psa_mask::x_numel(g);
  if (y_numel == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(y, 0, sizeof(T) * y_numel, stream);
  if (err != cudaSuccess || x_numel == 0) return err;
  PSEXT_LAUNCH(ForwardKernel<T>, BlocksFor(x_numel, shape), shape.threads,
               stream, x, y, g, psa_type, x_numel);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const T* dy, T* dx, int64_t n, int64_t h, int64_t w,
                           int64_t mh, int64_t mw, int psa_type,
                           const LaunchShape& shape, cudaStream_t stream) {
  const psa_mask::Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t x_numel = psa_mask::x_numel(g);
  if (x_numel == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(dx, 0, sizeof(T) * x_numel, stream);
  if (err != cudaSuccess) return err;
  PSEXT_LAUNCH(BackwardKernel<T>, BlocksFor(x_numel, shape), shape.threads,
               stream, dy, dx, g, psa_type, x_numel);
  return cudaGetLastError();
}

}  // namespace psa_mask_cuda

#endif  // PSA_MASK_KERNELS_CUH_
