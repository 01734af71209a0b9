// Launchers of the fused PSA attention CUDA kernels (defined in
// psa_attention.cu): raw device pointers, no Paddle headers (see
// psa_mask_cuda.h). T stores the tensors; A (float for the 16-bit types,
// else T) stores lse and the scratch buffers. Each returns the CUDA status.
#ifndef PSA_ATTENTION_CUDA_H_
#define PSA_ATTENTION_CUDA_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#define PSA_ATTENTION_CUDA_DECL(T, A)                                         \
  cudaError_t PsaAttentionForwardCuda(                                        \
      const T* x, const T* a, T* out, A* lse, A* col_sum, A* zero_w,          \
      int64_t n, int64_t c, int64_t h, int64_t w, int64_t mh, int64_t mw,     \
      int psa_type, bool softmax, cudaStream_t stream);                       \
  cudaError_t PsaAttentionBackwardCuda(                                       \
      const T* x, const T* a, const T* out, const A* lse, const T* dout,      \
      T* dx, T* da, A* zero_w, A* col_dot, A* base, int64_t n, int64_t c,     \
      int64_t h, int64_t w, int64_t mh, int64_t mw, int psa_type,             \
      bool softmax, cudaStream_t stream);
PSA_ATTENTION_CUDA_DECL(float, float)
PSA_ATTENTION_CUDA_DECL(double, double)
PSA_ATTENTION_CUDA_DECL(__half, float)
PSA_ATTENTION_CUDA_DECL(__nv_bfloat16, float)
#undef PSA_ATTENTION_CUDA_DECL

#endif  // PSA_ATTENTION_CUDA_H_
