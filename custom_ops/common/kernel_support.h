// What the package's CUDA kernel headers (*_kernels.cuh) share, under nvcc
// (the real CUDA runtime) and under the host compiler (cuda_emulation.h):
// the launch macro, the launch shape and the grid-stride loop, and the
// narrow-type loads and stores (float16 / bfloat16 stored, float32 computed).
//
// A kernel header includes only this file and the op's index header, so the
// code that runs on a GPU is the code the emulated tests run on the CPU.
#ifndef PADDLESEG_EXT_KERNEL_SUPPORT_H_
#define PADDLESEG_EXT_KERNEL_SUPPORT_H_

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define PSEXT_HD __host__ __device__
// kernel<<<grid, block, 0, stream>>>(...). `kernel` may name a template
// specialisation with one argument (Kernel<T>); wrap more in parentheses.
#define PSEXT_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#include "cuda_emulation.h"
#define PSEXT_HD
#define PSEXT_LAUNCH(kernel, grid, block, stream, ...) \
  ::cuda_emulation::launch(kernel, dim3(grid), dim3(block), 0, (stream), __VA_ARGS__)
#endif

namespace kernel_support {

// Threads per block and the cap on blocks of a 1-D launch. The GPU build
// uses kDefaultShape; the emulated tests pass small ones so that every
// grid-stride loop wraps several times.
struct LaunchShape {
  int threads;
  int64_t max_blocks;
};

constexpr LaunchShape kDefaultShape{256, 2147483647};  // gridDim.x limit

// Blocks for `numel` elements, capped; the kernels' grid-stride loops cover
// what the cap leaves out.
inline unsigned int BlocksFor(int64_t numel, const LaunchShape& shape) {
  const int64_t blocks = (numel + shape.threads - 1) / shape.threads;
  return static_cast<unsigned int>(blocks < shape.max_blocks ? blocks : shape.max_blocks);
}

// Storage type T, computed in Acc<T>::type: float32 for the 16-bit types
// (their 8- or 11-bit significands would lose every sum), T otherwise.
template <typename T>
struct Acc {
  typedef T type;
  static PSEXT_HD inline T load(T v) { return v; }
  static PSEXT_HD inline T store(T v) { return v; }
};

template <>
struct Acc<__half> {
  typedef float type;
  static PSEXT_HD inline float load(__half v) { return __half2float(v); }
  static PSEXT_HD inline __half store(float v) { return __float2half_rn(v); }
};

template <>
struct Acc<__nv_bfloat16> {
  typedef float type;
  static PSEXT_HD inline float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static PSEXT_HD inline __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

}  // namespace kernel_support

// for (idx = global thread index; idx < numel; idx += all threads): 64-bit,
// so neither the index nor the stride overflows past 2^31 elements.
#define PSEXT_GRID_STRIDE_LOOP(idx, numel)                                  \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x +       \
                     threadIdx.x;                                           \
       idx < (numel); idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

#endif  // PADDLESEG_EXT_KERNEL_SUPPORT_H_
