// GPU branches of the package's ops: Paddle dtype -> the element types of the
// CUDA launchers. float16 and bfloat16 tensors hold the bits of CUDA's __half
// and __nv_bfloat16 (both IEEE layouts in 2 bytes), so their device pointers
// are passed reinterpreted; A is the type the kernels compute in and keep
// statistics in (float for the 16-bit types). Compiled by the host compiler
// under PADDLE_WITH_CUDA; needs Paddle's extension headers first.
#ifndef PADDLESEG_EXT_CUDA_DTYPE_DISPATCH_H_
#define PADDLESEG_EXT_CUDA_DTYPE_DISPATCH_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace paddleseg_ext_cuda {

template <typename P, typename C, typename A>
struct Types {
  static_assert(sizeof(P) == sizeof(C), "Paddle and CUDA element types must share a layout");
  typedef P paddle_t;  // Tensor::data<paddle_t>()
  typedef C cuda_t;    // what the launchers take
  typedef A acc_t;     // statistics and scratch
};

// Calls f(Types<...>()) for `dtype`; one clear error for any other dtype.
template <typename F>
void DispatchCudaTypes(paddle::DataType dtype, const char* op, const F& f) {
  switch (dtype) {
    case paddle::DataType::FLOAT32:
      f(Types<float, float, float>());
      return;
    case paddle::DataType::FLOAT64:
      f(Types<double, double, double>());
      return;
    case paddle::DataType::FLOAT16:
      f(Types<phi::dtype::float16, __half, float>());
      return;
    case paddle::DataType::BFLOAT16:
      f(Types<phi::dtype::bfloat16, __nv_bfloat16, float>());
      return;
    default:
      PD_THROW(op, ": the CUDA kernels take float32, float64, float16 or bfloat16 tensors, got ",
               dtype, ".");
  }
}

template <typename Ty>
const typename Ty::cuda_t* CudaData(const paddle::Tensor& t) {
  return reinterpret_cast<const typename Ty::cuda_t*>(t.data<typename Ty::paddle_t>());
}

template <typename Ty>
typename Ty::cuda_t* CudaData(paddle::Tensor& t) {
  return reinterpret_cast<typename Ty::cuda_t*>(t.data<typename Ty::paddle_t>());
}

}  // namespace paddleseg_ext_cuda

#endif  // PADDLESEG_EXT_CUDA_DTYPE_DISPATCH_H_
