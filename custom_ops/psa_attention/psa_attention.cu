// Fused PSA attention operator: CUDA kernels and plain C++ launchers.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Free of Paddle headers (like psa_mask.cu): `nvcc -c psa_attention.cu`
// checks it without a CUDA build of Paddle; psa_attention.cc calls the
// launchers under PADDLE_WITH_CUDA. Tensors are NCHW as Paddle passes them.
// The window walks and index arithmetic come from psa_attention_common.h,
// shared with the CPU kernels. Every kernel is a gather: one thread per
// output element, no atomics, deterministic. Gradients get a separate zero
// pass (cudaMemsetAsync, same stream) before the kernel that fills the used
// entries.

#include <cuda_runtime.h>

#include <cstdint>

#include "psa_attention_common.h"
#include "psa_mask_common.h"

namespace {

using psa_attention::Walk;
using psa_mask::Geometry;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 2147483647;

unsigned int BlocksFor(int64_t numel) {
  const int64_t blocks = (numel + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

#define PSA_GRID_STRIDE_LOOP(idx, numel)                                       \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x +          \
                     threadIdx.x;                                              \
       idx < (numel); idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ inline float Exp(float v) { return expf(v); }
__device__ inline double Exp(double v) { return exp(v); }
__device__ inline float Log(float v) { return logf(v); }
__device__ inline double Log(double v) { return log(v); }

// lse[n, q] and b[n, q] (README.md): one thread per column.
template <typename T>
__global__ void ColumnStatsKernel(const T* __restrict__ a, T* __restrict__ lse,
                                  T* __restrict__ zero_w, Geometry g,
                                  bool reverse, bool softmax) {
  const int64_t plane = g.h * g.w;
  PSA_GRID_STRIDE_LOOP(idx, g.n * plane) {
    if (!softmax) {
      lse[idx] = T(0);
      zero_w[idx] = T(0);
      continue;
    }
    const int64_t n = idx / plane, q = idx % plane;
    const int64_t h = q / g.w, w = q % g.w;
    const Walk k = psa_attention::make_walk(g, reverse, h, w);
    const int64_t zeros = plane - psa_attention::walk_count(k);
    // m includes the zeros' logit 0 only when the column has zeros.
    bool have = zeros > 0;
    T m = T(0);
    for (int64_t i = k.i0; i < k.i1; ++i)
      for (int64_t j = k.j0; j < k.j1; ++j) {
        const int64_t at = reverse ? psa_attention::partner(g, true, h, w, i, j) : q;
        const T l = a[psa_attention::logit_offset(g, n, i, j, at)];
        if (!have || l > m) m = l;
        have = true;
      }
    T z = zeros > 0 ? static_cast<T>(zeros) * Exp(-m) : T(0);
    for (int64_t i = k.i0; i < k.i1; ++i)
      for (int64_t j = k.j0; j < k.j1; ++j) {
        const int64_t at = reverse ? psa_attention::partner(g, true, h, w, i, j) : q;
        z += Exp(a[psa_attention::logit_offset(g, n, i, j, at)] - m);
      }
    const T l = m + Log(z);
    lse[idx] = l;
    zero_w[idx] = zeros > 0 ? Exp(-l) : T(0);
  }
}

// b[n, q] from lse (the backward does not keep it).
template <typename T>
__global__ void ZeroWeightKernel(const T* __restrict__ lse,
                                 T* __restrict__ zero_w, Geometry g,
                                 bool reverse, bool softmax) {
  const int64_t plane = g.h * g.w;
  PSA_GRID_STRIDE_LOOP(idx, g.n * plane) {
    const int64_t q = idx % plane;
    const Walk k = psa_attention::make_walk(g, reverse, q / g.w, q % g.w);
    zero_w[idx] = softmax && psa_attention::walk_count(k) < plane
                      ? Exp(-lse[idx]) : T(0);
  }
}

// out[n, c, i] = sum_k v[n, c, k] * (weight ? weight[n, k] : 1), k over
// `len` entries: one thread per (n, c).
template <typename T>
__global__ void RowSumKernel(const T* __restrict__ v,
                             const T* __restrict__ weight, T* __restrict__ out,
                             int64_t rows, int64_t per_image, int64_t len) {
  PSA_GRID_STRIDE_LOOP(idx, rows) {
    const T* r = v + idx * len;
    const T* wt = weight != nullptr ? weight + (idx / per_image) * len : nullptr;
    T acc = T(0);
    for (int64_t k = 0; k < len; ++k) acc += wt != nullptr ? r[k] * wt[k] : r[k];
    out[idx] = acc;
  }
}

// D[n, q] = sum_c g[n, c, q] * out[n, c, q]: one thread per column.
template <typename T>
__global__ void ColumnDotKernel(const T* __restrict__ g_,
                                const T* __restrict__ out,
                                T* __restrict__ d, int64_t n_img, int64_t c,
                                int64_t plane) {
  PSA_GRID_STRIDE_LOOP(idx, n_img * plane) {
    const int64_t n = idx / plane, q = idx % plane;
    T acc = T(0);
    for (int64_t k = 0; k < c; ++k) {
      const int64_t off = (n * c + k) * plane + q;
      acc += g_[off] * out[off];
    }
    d[idx] = acc;
  }
}

// dst[n, c, u] = scale(u) * base[n, c] + sum_walk coef * rows[n, c, partner]
// (the CPU kernel's GatherTaskBody, one thread per (n, c, u)).
template <typename T>
__global__ void GatherKernel(const T* __restrict__ rows,
                             const T* __restrict__ a,
                             const T* __restrict__ lse,
                             const T* __restrict__ zero_w,
                             const T* __restrict__ base,
                             const T* __restrict__ base_scale,
                             T* __restrict__ dst, Geometry g, int64_t c,
                             bool reverse, bool logit_at_partner,
                             bool column_is_partner, bool softmax) {
  const int64_t plane = g.h * g.w;
  PSA_GRID_STRIDE_LOOP(idx, g.n * c * plane) {
    const int64_t u = idx % plane;
    const int64_t ch = (idx / plane) % c;
    const int64_t n = idx / (plane * c);
    const int64_t uh = u / g.w, uw = u % g.w;
    const T* src = rows + (n * c + ch) * plane;
    T acc = (base_scale != nullptr ? base_scale[n * plane + u] : T(1)) *
            base[n * c + ch];
    const Walk wk = psa_attention::make_walk(g, reverse, uh, uw);
    for (int64_t i = wk.i0; i < wk.i1; ++i) {
      for (int64_t j = wk.j0; j < wk.j1; ++j) {
        const int64_t p = psa_attention::partner(g, reverse, uh, uw, i, j);
        const T l = a[psa_attention::logit_offset(g, n, i, j,
                                                  logit_at_partner ? p : u)];
        T coef = l;
        if (softmax) {
          const int64_t col = n * plane + (column_is_partner ? p : u);
          coef = Exp(l - lse[col]) - zero_w[col];
        }
        acc += coef * src[p];
      }
    }
    dst[idx] = acc;
  }
}

// da for every used (n, k, p): one thread per logit; unused cells keep the
// zero pass's 0.
template <typename T>
__global__ void LogitGradKernel(const T* __restrict__ x,
                                const T* __restrict__ g_,
                                const T* __restrict__ a,
                                const T* __restrict__ lse,
                                const T* __restrict__ col_dot,
                                T* __restrict__ da, Geometry g, int64_t c,
                                bool collect, bool softmax) {
  const int64_t plane = g.h * g.w;
  const int64_t cells = g.mh * g.mw;
  PSA_GRID_STRIDE_LOOP(idx, g.n * cells * plane) {
    const int64_t p = idx % plane;
    const int64_t cell = (idx / plane) % cells;
    const int64_t n = idx / (plane * cells);
    const int64_t i = cell / g.mw, j = cell % g.mw;
    const int64_t th = psa_mask::target(p / g.w, i, g.hh);
    const int64_t tw = psa_mask::target(p % g.w, j, g.hw);
    if (!psa_mask::inside(th, g.h) || !psa_mask::inside(tw, g.w)) continue;
    const int64_t t = th * g.w + tw;
    const int64_t col = collect ? p : t, row = collect ? t : p;
    T dot = T(0);
    for (int64_t k = 0; k < c; ++k) {
      dot += x[(n * c + k) * plane + row] * g_[(n * c + k) * plane + col];
    }
    da[idx] = softmax ? Exp(a[idx] - lse[n * plane + col]) *
                            (dot - col_dot[n * plane + col])
                      : dot;
  }
}

template <typename T>
cudaError_t LaunchForward(const T* x, const T* a, T* out, T* lse, T* col_sum,
                          T* zero_w, int64_t n, int64_t c, int64_t h,
                          int64_t w, int64_t mh, int64_t mw, int psa_type,
                          bool softmax, cudaStream_t stream) {
  const Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t plane = h * w;
  if (n * plane == 0) return cudaSuccess;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  ColumnStatsKernel<T><<<BlocksFor(n * plane), kThreads, 0, stream>>>(
      a, lse, zero_w, g, reverse, softmax);
  if (c == 0) return cudaGetLastError();
  RowSumKernel<T><<<BlocksFor(n * c), kThreads, 0, stream>>>(
      x, nullptr, col_sum, n * c, c, plane);
  GatherKernel<T><<<BlocksFor(n * c * plane), kThreads, 0, stream>>>(
      x, a, lse, zero_w, col_sum, zero_w, out, g, c, reverse, reverse, false,
      softmax);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const T* x, const T* a, const T* out, const T* lse,
                           const T* dout, T* dx, T* da, T* zero_w, T* col_dot,
                           T* base, int64_t n, int64_t c, int64_t h,
                           int64_t w, int64_t mh, int64_t mw, int psa_type,
                           bool softmax, cudaStream_t stream) {
  const Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t plane = h * w;
  if (n * plane == 0) return cudaSuccess;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  cudaError_t err = cudaMemsetAsync(da, 0, sizeof(T) * n * mh * mw * plane, stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(base, 0, sizeof(T) * n * c, stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(col_dot, 0, sizeof(T) * n * plane, stream);
  if (err != cudaSuccess) return err;
  ZeroWeightKernel<T><<<BlocksFor(n * plane), kThreads, 0, stream>>>(
      lse, zero_w, g, reverse, softmax);
  if (c == 0) return cudaGetLastError();
  if (softmax) {
    ColumnDotKernel<T><<<BlocksFor(n * plane), kThreads, 0, stream>>>(
        dout, out, col_dot, n, c, plane);
    RowSumKernel<T><<<BlocksFor(n * c), kThreads, 0, stream>>>(
        dout, zero_w, base, n * c, c, plane);
  }
  GatherKernel<T><<<BlocksFor(n * c * plane), kThreads, 0, stream>>>(
      dout, a, lse, zero_w, base, nullptr, dx, g, c, !reverse, !reverse, true,
      softmax);
  LogitGradKernel<T><<<BlocksFor(n * mh * mw * plane), kThreads, 0, stream>>>(
      x, dout, a, lse, col_dot, da, g, c, psa_type == psa_mask::kCollect,
      softmax);
  return cudaGetLastError();
}

}  // namespace

#define PSA_ATTENTION_CUDA_DEF(T)                                              \
  cudaError_t PsaAttentionForwardCuda(                                         \
      const T* x, const T* a, T* out, T* lse, T* col_sum, T* zero_w,           \
      int64_t n, int64_t c, int64_t h, int64_t w, int64_t mh, int64_t mw,      \
      int psa_type, bool softmax, cudaStream_t stream) {                       \
    return LaunchForward<T>(x, a, out, lse, col_sum, zero_w, n, c, h, w, mh,   \
                            mw, psa_type, softmax, stream);                    \
  }                                                                            \
  cudaError_t PsaAttentionBackwardCuda(                                        \
      const T* x, const T* a, const T* out, const T* lse, const T* dout,       \
      T* dx, T* da, T* zero_w, T* col_dot, T* base, int64_t n, int64_t c,      \
      int64_t h, int64_t w, int64_t mh, int64_t mw, int psa_type,              \
      bool softmax, cudaStream_t stream) {                                     \
    return LaunchBackward<T>(x, a, out, lse, dout, dx, da, zero_w, col_dot,    \
                             base, n, c, h, w, mh, mw, psa_type, softmax,      \
                             stream);                                          \
  }

PSA_ATTENTION_CUDA_DEF(float)
PSA_ATTENTION_CUDA_DEF(double)
#undef PSA_ATTENTION_CUDA_DEF
