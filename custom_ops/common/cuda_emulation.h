// Host emulation of the small part of CUDA that the package's kernels use, so
// that the kernel bodies nvcc compiles for the GPU also compile with g++ and
// run on the CPU (under AddressSanitizer / UndefinedBehaviorSanitizer in the
// tests), exactly as written.
//
// Execution model: a launch runs every thread of every block one after the
// other on the calling thread (blocks in order, threads in order, or both in
// reverse; see set_launch_order). That is a legal schedule of a CUDA grid
// only for kernels whose threads never wait for or talk to each other: no
// shared memory, no barriers, no atomics, no warp intrinsics. Those features
// are therefore not emulated but refused at compile time: using one is a
// static_assert that says so. The grid-stride, one-writer-per-element kernels
// of psa_mask and psa_attention need none of them.
//
// Provided: __global__ / __device__ / __host__ / __forceinline__, dim3,
// threadIdx / blockIdx / blockDim / gridDim, cudaStream_t, cudaError_t,
// cudaMemsetAsync, cudaGetLastError, cudaGetErrorString, __half and
// __nv_bfloat16 (soft_half.h) with their float conversions, and launch(),
// which the launch macro of kernel_support.h calls instead of <<<...>>>.
// A launch checks its configuration the way the CUDA runtime does (at most
// 1024 threads per block, gridDim.x < 2^31, gridDim.y/z <= 65535, no empty
// dimension) and reports cudaErrorInvalidConfiguration through
// cudaGetLastError without running anything.
#ifndef PADDLESEG_EXT_CUDA_EMULATION_H_
#define PADDLESEG_EXT_CUDA_EMULATION_H_

#if defined(__CUDACC__) || defined(__HIPCC__)
#error "cuda_emulation.h is the host compiler's stand-in for CUDA; nvcc uses the CUDA runtime."
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "soft_half.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

// What a sequential schedule cannot honour. Each use is a compile error at
// the kernel's definition, naming the feature.
#define CUDA_EMULATION_REFUSE(what)                                           \
  static_assert(false, "cuda_emulation: " what " cannot be emulated: the "    \
                       "emulation runs a kernel's threads one after another, " \
                       "so it supports only kernels whose threads are "       \
                       "independent (no shared memory, barriers, atomics or " \
                       "warp intrinsics)")
#define CUDA_EMULATION_REFUSE_EXPR(what) \
  ([]() -> int { CUDA_EMULATION_REFUSE(what); return 0; }())

#define __shared__ CUDA_EMULATION_REFUSE("__shared__ memory");
#define __syncthreads() CUDA_EMULATION_REFUSE("__syncthreads")
#define __syncthreads_count(...) CUDA_EMULATION_REFUSE_EXPR("__syncthreads_count")
#define __syncthreads_and(...) CUDA_EMULATION_REFUSE_EXPR("__syncthreads_and")
#define __syncthreads_or(...) CUDA_EMULATION_REFUSE_EXPR("__syncthreads_or")
#define __syncwarp(...) CUDA_EMULATION_REFUSE("__syncwarp")
#define __threadfence() CUDA_EMULATION_REFUSE("__threadfence")
#define __threadfence_block() CUDA_EMULATION_REFUSE("__threadfence_block")
#define __shfl_sync(...) CUDA_EMULATION_REFUSE_EXPR("__shfl_sync")
#define __shfl_up_sync(...) CUDA_EMULATION_REFUSE_EXPR("__shfl_up_sync")
#define __shfl_down_sync(...) CUDA_EMULATION_REFUSE_EXPR("__shfl_down_sync")
#define __shfl_xor_sync(...) CUDA_EMULATION_REFUSE_EXPR("__shfl_xor_sync")
#define __ballot_sync(...) CUDA_EMULATION_REFUSE_EXPR("__ballot_sync")
#define __any_sync(...) CUDA_EMULATION_REFUSE_EXPR("__any_sync")
#define __all_sync(...) CUDA_EMULATION_REFUSE_EXPR("__all_sync")
#define atomicAdd(...) CUDA_EMULATION_REFUSE_EXPR("atomicAdd")
#define atomicSub(...) CUDA_EMULATION_REFUSE_EXPR("atomicSub")
#define atomicExch(...) CUDA_EMULATION_REFUSE_EXPR("atomicExch")
#define atomicMin(...) CUDA_EMULATION_REFUSE_EXPR("atomicMin")
#define atomicMax(...) CUDA_EMULATION_REFUSE_EXPR("atomicMax")
#define atomicInc(...) CUDA_EMULATION_REFUSE_EXPR("atomicInc")
#define atomicDec(...) CUDA_EMULATION_REFUSE_EXPR("atomicDec")
#define atomicCAS(...) CUDA_EMULATION_REFUSE_EXPR("atomicCAS")
#define atomicAnd(...) CUDA_EMULATION_REFUSE_EXPR("atomicAnd")
#define atomicOr(...) CUDA_EMULATION_REFUSE_EXPR("atomicOr")
#define atomicXor(...) CUDA_EMULATION_REFUSE_EXPR("atomicXor")

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};

// CUDA's half types, as software storage types with the same conversions.
typedef soft_half::Half __half;
typedef soft_half::BFloat16 __nv_bfloat16;

inline float __half2float(__half h) { return soft_half::from_half(h); }
inline __half __float2half_rn(float f) { return soft_half::to_half(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return soft_half::from_bfloat16(b); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return soft_half::to_bfloat16(f); }

namespace cuda_emulation {

// The indices of the thread being run (read-only to kernels via the macros).
struct ThreadState {
  dim3 thread_idx{0, 0, 0};
  dim3 block_idx{0, 0, 0};
  dim3 block_dim{0, 0, 0};
  dim3 grid_dim{0, 0, 0};
  cudaError_t last_error = cudaSuccess;
  bool reverse = false;
};

inline ThreadState& state() {
  thread_local ThreadState s;
  return s;
}

inline const ThreadState& const_state() { return state(); }

// Order in which launches visit blocks and threads: a kernel whose result
// depends on it has threads that race (two writers of one element).
inline void set_launch_order(bool reverse) { state().reverse = reverse; }

inline bool valid_launch(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && threads >= 1 &&
         threads <= 1024 && block.z <= 64 && grid.x <= 2147483647u &&
         grid.y <= 65535u && grid.z <= 65535u;
}

// Visits 0 .. n-1, or n-1 .. 0 when reverse.
template <typename Body>
void visit(unsigned int n, bool reverse, const Body& body) {
  for (unsigned int k = 0; k < n; ++k) body(reverse ? n - 1 - k : k);
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), run sequentially.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block,
            size_t shared_bytes, cudaStream_t /*stream*/, Args&&... args) {
  ThreadState& s = state();
  if (shared_bytes != 0 || !valid_launch(grid, block)) {
    s.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  s.grid_dim = grid;
  s.block_dim = block;
  const bool rev = s.reverse;
  visit(grid.z, rev, [&](unsigned int bz) {
    visit(grid.y, rev, [&](unsigned int by) {
      visit(grid.x, rev, [&](unsigned int bx) {
        s.block_idx = dim3(bx, by, bz);
        visit(block.z, rev, [&](unsigned int tz) {
          visit(block.y, rev, [&](unsigned int ty) {
            visit(block.x, rev, [&](unsigned int tx) {
              s.thread_idx = dim3(tx, ty, tz);
              kernel(args...);
            });
          });
        });
      });
    });
  });
}

}  // namespace cuda_emulation

#define threadIdx (::cuda_emulation::const_state().thread_idx)
#define blockIdx (::cuda_emulation::const_state().block_idx)
#define blockDim (::cuda_emulation::const_state().block_dim)
#define gridDim (::cuda_emulation::const_state().grid_dim)

inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes,
                                   cudaStream_t /*stream*/ = nullptr) {
  if (bytes != 0 && ptr == nullptr) return cudaErrorInvalidValue;
  if (bytes != 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() {
  cuda_emulation::ThreadState& s = cuda_emulation::state();
  const cudaError_t err = s.last_error;
  s.last_error = cudaSuccess;
  return err;
}

inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

#endif  // PADDLESEG_EXT_CUDA_EMULATION_H_
