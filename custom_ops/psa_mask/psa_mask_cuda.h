// Launchers of the PSA mask CUDA kernels (defined in psa_mask.cu): plain C++
// over raw device pointers, so the .cu needs no Paddle headers and psa_mask.cc
// (compiled by the host compiler under PADDLE_WITH_CUDA) needs no CUDA
// kernels. Each returns the CUDA status of its launch.
#ifndef PSA_MASK_CUDA_H_
#define PSA_MASK_CUDA_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#define PSA_MASK_CUDA_DECL(T)                                                 \
  cudaError_t PsaMaskForwardCuda(const T* x, T* y, int64_t n, int64_t h,     \
                                 int64_t w, int64_t mh, int64_t mw,          \
                                 int psa_type, cudaStream_t stream);         \
  cudaError_t PsaMaskBackwardCuda(const T* dy, T* dx, int64_t n, int64_t h,  \
                                  int64_t w, int64_t mh, int64_t mw,         \
                                  int psa_type, cudaStream_t stream);
PSA_MASK_CUDA_DECL(float)
PSA_MASK_CUDA_DECL(double)
PSA_MASK_CUDA_DECL(__half)
PSA_MASK_CUDA_DECL(__nv_bfloat16)
#undef PSA_MASK_CUDA_DECL

#endif  // PSA_MASK_CUDA_H_
