// Element types of the package's Paddle ops (needs Paddle's extension
// headers first): the CPU kernels take float32 / float64; the CUDA kernels
// also float16 / bfloat16, computing and keeping statistics in float32.
#ifndef PADDLESEG_EXT_OP_DTYPES_H_
#define PADDLESEG_EXT_OP_DTYPES_H_

namespace paddleseg_ext_dtypes {

inline bool IsHalf(paddle::DataType dtype) {
  return dtype == paddle::DataType::FLOAT16 || dtype == paddle::DataType::BFLOAT16;
}

// The dtype of the statistics the kernels keep for a tensor of `dtype`.
inline paddle::DataType AccDtype(paddle::DataType dtype) {
  return IsHalf(dtype) ? paddle::DataType::FLOAT32 : dtype;
}

// One clear error instead of the dispatch macro's, for a 16-bit tensor on
// the CPU (the Python faces run the CPU kernels on a float32 copy).
inline void CheckCpuDtype(paddle::DataType dtype, const char* op) {
  PD_CHECK(dtype == paddle::DataType::FLOAT32 || dtype == paddle::DataType::FLOAT64, op,
           ": the CPU kernels take float32 or float64 tensors, got ", dtype,
           " (float16 and bfloat16 run on GPU places).");
}

}  // namespace paddleseg_ext_dtypes

#endif  // PADDLESEG_EXT_OP_DTYPES_H_
