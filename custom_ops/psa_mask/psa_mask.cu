// PSA mask operator: the CUDA launchers psa_mask.cc calls (psa_mask_cuda.h),
// one instantiation of the kernels in psa_mask_kernels.cuh per element type.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Deliberately free of Paddle headers: `nvcc -c psa_mask.cu` checks it on
// machines without a CUDA build of Paddle.

#include "psa_mask_cuda.h"
#include "psa_mask_kernels.cuh"

#define PSA_MASK_CUDA_DEF(T)                                                  \
  cudaError_t PsaMaskForwardCuda(const T* x, T* y, int64_t n, int64_t h,     \
                                 int64_t w, int64_t mh, int64_t mw,          \
                                 int psa_type, cudaStream_t stream) {        \
    return psa_mask_cuda::LaunchForward<T>(x, y, n, h, w, mh, mw, psa_type,  \
                                           kernel_support::kDefaultShape,    \
                                           stream);                          \
  }                                                                           \
  cudaError_t PsaMaskBackwardCuda(const T* dy, T* dx, int64_t n, int64_t h,  \
                                  int64_t w, int64_t mh, int64_t mw,         \
                                  int psa_type, cudaStream_t stream) {       \
    return psa_mask_cuda::LaunchBackward<T>(dy, dx, n, h, w, mh, mw,         \
                                            psa_type,                        \
                                            kernel_support::kDefaultShape,   \
                                            stream);                         \
  }
PSA_MASK_CUDA_DEF(float)
PSA_MASK_CUDA_DEF(double)
PSA_MASK_CUDA_DEF(__half)
PSA_MASK_CUDA_DEF(__nv_bfloat16)
#undef PSA_MASK_CUDA_DEF
