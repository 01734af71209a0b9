// PSA mask operator: CUDA kernels and plain C++ launchers.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Deliberately free of Paddle headers: it needs only the CUDA runtime and
// psa_mask_common.h, so `nvcc -c psa_mask.cu` checks it on machines without a
// CUDA build of Paddle. psa_mask.cc calls the launchers under PADDLE_WITH_CUDA.
//
// One thread per x (or dx) element: reads/writes of x are coalesced, and the
// index map in psa_mask_common.h sends each element to at most one y entry, so
// there are no atomics and results are deterministic. The zero pass is a
// separate cudaMemsetAsync, queued on the same stream before the scatter.

#include <cuda_runtime.h>

#include <cstdint>

#include "psa_mask_common.h"

namespace {

constexpr int kThreads = 256;
// gridDim.x limit; the kernels use a grid-stride loop beyond it.
constexpr int64_t kMaxBlocks = 2147483647;

int64_t BlocksFor(int64_t numel) {
  const int64_t blocks = (numel + kThreads - 1) / kThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

template <typename T>
__global__ void PsaMaskForwardKernel(const T* __restrict__ x,
                                     T* __restrict__ y, psa_mask::Geometry g,
                                     int psa_type, int64_t numel) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t idx = first; idx < numel; idx += stride) {
    const int64_t out = psa_mask::map_x_to_y(g, psa_type, idx);
    if (out >= 0) y[out] = x[idx];
  }
}

template <typename T>
__global__ void PsaMaskBackwardKernel(const T* __restrict__ dy,
                                      T* __restrict__ dx, psa_mask::Geometry g,
                                      int psa_type, int64_t numel) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t idx = first; idx < numel; idx += stride) {
    const int64_t src = psa_mask::map_x_to_y(g, psa_type, idx);
    if (src >= 0) dx[idx] = dy[src];  // unused cells keep the zero pass's 0
  }
}

template <typename T>
cudaError_t LaunchForward(const T* x, T* y, int64_t n, int64_t h, int64_t w,
                          int64_t mh, int64_t mw, int psa_type,
                          cudaStream_t stream) {
  const psa_mask::Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t y_numel = psa_mask::y_numel(g);
  const int64_t x_numel = psa_mask::x_numel(g);
  if (y_numel == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(y, 0, sizeof(T) * y_numel, stream);
  if (err != cudaSuccess || x_numel == 0) return err;
  PsaMaskForwardKernel<T>
      <<<static_cast<unsigned int>(BlocksFor(x_numel)), kThreads, 0, stream>>>(
          x, y, g, psa_type, x_numel);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const T* dy, T* dx, int64_t n, int64_t h, int64_t w,
                           int64_t mh, int64_t mw, int psa_type,
                           cudaStream_t stream) {
  const psa_mask::Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t x_numel = psa_mask::x_numel(g);
  if (x_numel == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(dx, 0, sizeof(T) * x_numel, stream);
  if (err != cudaSuccess) return err;
  PsaMaskBackwardKernel<T>
      <<<static_cast<unsigned int>(BlocksFor(x_numel)), kThreads, 0, stream>>>(
          dy, dx, g, psa_type, x_numel);
  return cudaGetLastError();
}

}  // namespace

// Non-template overloads: the symbols psa_mask.cc links against.
cudaError_t PsaMaskForwardCuda(const float* x, float* y, int64_t n, int64_t h,
                               int64_t w, int64_t mh, int64_t mw, int psa_type,
                               cudaStream_t stream) {
  return LaunchForward<float>(x, y, n, h, w, mh, mw, psa_type, stream);
}

cudaError_t PsaMaskForwardCuda(const double* x, double* y, int64_t n,
                               int64_t h, int64_t w, int64_t mh, int64_t mw,
                               int psa_type, cudaStream_t stream) {
  return LaunchForward<double>(x, y, n, h, w, mh, mw, psa_type, stream);
}

cudaError_t PsaMaskBackwardCuda(const float* dy, float* dx, int64_t n,
                                int64_t h, int64_t w, int64_t mh, int64_t mw,
                                int psa_type, cudaStream_t stream) {
  return LaunchBackward<float>(dy, dx, n, h, w, mh, mw, psa_type, stream);
}

cudaError_t PsaMaskBackwardCuda(const double* dy, double* dx, int64_t n,
                                int64_t h, int64_t w, int64_t mh, int64_t mw,
                                int psa_type, cudaStream_t stream) {
  return LaunchBackward<double>(dy, dx, n, h, w, mh, mw, psa_type, stream);
}
