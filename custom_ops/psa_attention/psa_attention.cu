// Fused PSA attention operator: the CUDA launchers psa_attention.cc calls
// (psa_attention_cuda.h), one instantiation of the kernels in
// psa_attention_kernels.cuh per element type.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Free of Paddle headers (like psa_mask.cu): `nvcc -c psa_attention.cu`
// checks it without a CUDA build of Paddle.

#include "psa_attention_cuda.h"
#include "psa_attention_kernels.cuh"

#define PSA_ATTENTION_CUDA_DEF(T, A)                                           \
  cudaError_t PsaAttentionForwardCuda(                                         \
      const T* x, const T* a, T* out, A* lse, A* col_sum, A* zero_w,           \
      int64_t n, int64_t c, int64_t h, int64_t w, int64_t mh, int64_t mw,      \
      int psa_type, bool softmax, cudaStream_t stream) {                       \
    return psa_attention_cuda::LaunchForward<T>(                               \
        x, a, out, lse, col_sum, zero_w, n, c, h, w, mh, mw, psa_type,         \
        softmax, kernel_support::kDefaultShape, stream);                       \
  }                                                                            \
  cudaError_t PsaAttentionBackwardCuda(                                        \
      const T* x, const T* a, const T* out, const A* lse, const T* dout,       \
      T* dx, T* da, A* zero_w, A* col_dot, A* base, int64_t n, int64_t c,      \
      int64_t h, int64_t w, int64_t mh, int64_t mw, int psa_type,              \
      bool softmax, cudaStream_t stream) {                                     \
    return psa_attention_cuda::LaunchBackward<T>(                              \
        x, a, out, lse, dout, dx, da, zero_w, col_dot, base, n, c, h, w, mh,   \
        mw, psa_type, softmax, kernel_support::kDefaultShape, stream);         \
  }
PSA_ATTENTION_CUDA_DEF(float, float)
PSA_ATTENTION_CUDA_DEF(double, double)
PSA_ATTENTION_CUDA_DEF(__half, float)
PSA_ATTENTION_CUDA_DEF(__nv_bfloat16, float)
#undef PSA_ATTENTION_CUDA_DEF
