// Fused PSA attention operator: the CUDA kernels and their launchers, as
// templates. nvcc compiles them for the GPU (psa_attention.cu); the host
// compiler compiles the same text with the CUDA emulation (kernel_support.h)
// for the sanitized CPU tests (tests/test_cuda_emulation.py).
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Tensors are NCHW as Paddle passes them. The window walks and index
// arithmetic come from psa_attention_common.h, shared with the CPU kernels.
// Every kernel is a gather: one thread per output element, no atomics,
// deterministic. Gradients get a separate zero pass (cudaMemsetAsync, same
// stream) before the kernel that fills the used entries.
//
// Types: T stores x, the logits, out and the gradients (float, double, __half,
// __nv_bfloat16); A = kernel_support::Acc<T>::type computes every sum and
// stores the per-column softmax statistics (lse, b) and the other
// intermediates (float for the 16-bit types: a 16-bit lse would shift every
// weight exp(l - lse) by up to half an ulp of lse).
#ifndef PSA_ATTENTION_KERNELS_CUH_
#define PSA_ATTENTION_KERNELS_CUH_

#include <cstdint>

#include "kernel_support.h"
#include "psa_attention_common.h"
#include "psa_mask_common.h"

namespace psa_attention_cuda {

using kernel_support::Acc;
using kernel_support::BlocksFor;
using kernel_support::LaunchShape;
using psa_attention::Walk;
using psa_mask::Geometry;

__device__ inline float Exp(float v) { return expf(v); }
__device__ inline double Exp(double v) { return exp(v); }
__device__ inline float Log(float v) { return logf(v); }
__device__ inline double Log(double v) { return log(v); }

// lse[n, q] and b[n, q] (README.md): one thread per column.
template <typename T>
__global__ void ColumnStatsKernel(const T* __restrict__ a,
                                  typename Acc<T>::type* __restrict__ lse,
                                  typename Acc<T>::type* __restrict__ zero_w,
                                  Geometry g, bool reverse, bool softmax) {
  typedef typename Acc<T>::type A;
  const int64_t plane = g.h * g.w;
  PSEXT_GRID_STRIDE_LOOP(idx, g.n * plane) {
    if (!softmax) {
      lse[idx] = A(0);
      zero_w[idx] = A(0);
      continue;
    }
    const int64_t n = idx / plane, q = idx % plane;
    const int64_t h = q / g.w, w = q % g.w;
    const Walk k = psa_attention::make_walk(g, reverse, h, w);
    const int64_t zeros = plane - psa_attention::walk_count(k);
    // m includes the zeros' logit 0 only when the column has zeros.
    bool have = zeros > 0;
    A m = A(0);
    for (int64_t i = k.i0; i < k.i1; ++i)
      for (int64_t j = k.j0; j < k.j1; ++j) {
        const int64_t at = reverse ? psa_attention::partner(g, true, h, w, i, j) : q;
        const A l = Acc<T>::load(a[psa_attention::logit_offset(g, n, i, j, at)]);
        if (!have || l > m) m = l;
        have = true;
      }
    A z = zeros > 0 ? static_cast<A>(zeros) * Exp(-m) : A(0);
    for (int64_t i = k.i0; i < k.i1; ++i)
      for (int64_t j = k.j0; j < k.j1; ++j) {
        const int64_t at = reverse ? psa_attention::partner(g, true, h, w, i, j) : q;
        z += Exp(Acc<T>::load(a[psa_attention::logit_offset(g, n, i, j, at)]) - m);
      }
    const A l = m + Log(z);
    lse[idx] = l;
    zero_w[idx] = zeros > 0 ? Exp(-l) : A(0);
  }
}

// b[n, q] from lse (the backward does not keep it).
template <typename A>
__global__ void ZeroWeightKernel(const A* __restrict__ lse,
                                 A* __restrict__ zero_w, Geometry g,
                                 bool reverse, bool softmax) {
  const int64_t plane = g.h * g.w;
  PSEXT_GRID_STRIDE_LOOP(idx, g.n * plane) {
    const int64_t q = idx % plane;
    const Walk k = psa_attention::make_walk(g, reverse, q / g.w, q % g.w);
    zero_w[idx] = softmax && psa_attention::walk_count(k) < plane
                      ? Exp(-lse[idx]) : A(0);
  }
}

// out[n, c] = sum_k v[n, c, k] * (weight ? weight[n, k] : 1), k over `len`
// entries: one thread per (n, c).
template <typename T>
__global__ void RowSumKernel(const T* __restrict__ v,
                             const typename Acc<T>::type* __restrict__ weight,
                             typename Acc<T>::type* __restrict__ out,
                             int64_t rows, int64_t per_image, int64_t len) {
  typedef typename Acc<T>::type A;
  PSEXT_GRID_STRIDE_LOOP(idx, rows) {
    const T* r = v + idx * len;
    const A* wt = weight != nullptr ? weight + (idx / per_image) * len : nullptr;
    A acc = A(0);
    for (int64_t k = 0; k < len; ++k) {
      const A rk = Acc<T>::load(r[k]);
      acc += wt != nullptr ? rk * wt[k] : rk;
    }
    out[idx] = acc;
  }
}

// D[n, q] = sum_c g[n, c, q] * out[n, c, q]: one thread per column.
template <typename T>
__global__ void ColumnDotKernel(const T* __restrict__ g_,
                                const T* __restrict__ out,
                                typename Acc<T>::type* __restrict__ d,
                                int64_t n_img, int64_t c, int64_t plane) {
  typedef typename Acc<T>::type A;
  PSEXT_GRID_STRIDE_LOOP(idx, n_img * plane) {
    const int64_t n = idx / plane, q = idx % plane;
    A acc = A(0);
    for (int64_t k = 0; k < c; ++k) {
      const int64_t off = (n * c + k) * plane + q;
      acc += Acc<T>::load(g_[off]) * Acc<T>::load(out[off]);
    }
    d[idx] = acc;
  }
}

// dst[n, c, u] = scale(u) * base[n, c] + sum_walk coef * rows[n, c, partner]
// (the CPU kernel's GatherTaskBody, one thread per (n, c, u)).
template <typename T>
__global__ void GatherKernel(const T* __restrict__ rows,
                             const T* __restrict__ a,
                             const typename Acc<T>::type* __restrict__ lse,
                             const typename Acc<T>::type* __restrict__ zero_w,
                             const typename Acc<T>::type* __restrict__ base,
                             const typename Acc<T>::type* __restrict__ base_scale,
                             T* __restrict__ dst, Geometry g, int64_t c,
                             bool reverse, bool logit_at_partner,
                             bool column_is_partner, bool softmax) {
  typedef typename Acc<T>::type A;
  const int64_t plane = g.h * g.w;
  PSEXT_GRID_STRIDE_LOOP(idx, g.n * c * plane) {
    const int64_t u = idx % plane;
    const int64_t ch = (idx / plane) % c;
    const int64_t n = idx / (plane * c);
    const int64_t uh = u / g.w, uw = u % g.w;
    const T* src = rows + (n * c + ch) * plane;
    A acc = (base_scale != nullptr ? base_scale[n * plane + u] : A(1)) *
            base[n * c + ch];
    const Walk wk = psa_attention::make_walk(g, reverse, uh, uw);
    for (int64_t i = wk.i0; i < wk.i1; ++i) {
      for (int64_t j = wk.j0; j < wk.j1; ++j) {
        const int64_t p = psa_attention::partner(g, reverse, uh, uw, i, j);
        const A l = Acc<T>::load(a[psa_attention::logit_offset(
            g, n, i, j, logit_at_partner ? p : u)]);
        A coef = l;
        if (softmax) {
          const int64_t col = n * plane + (column_is_partner ? p : u);
          coef = Exp(l - lse[col]) - zero_w[col];
        }
        acc += coef * Acc<T>::load(src[p]);
      }
    }
    dst[idx] = Acc<T>::store(acc);
  }
}

// da for every used (n, k, p): one thread per logit; unused cells keep the
// zero pass's 0.
template <typename T>
__global__ void LogitGradKernel(const T* __restrict__ x,
                                const T* __restrict__ g_,
                                const T* __restrict__ a,
                                const typename Acc<T>::type* __restrict__ lse,
                                const typename Acc<T>::type* __restrict__ col_dot,
                                T* __restrict__ da, Geometry g, int64_t c,
                                bool collect, bool softmax) {
  typedef typename Acc<T>::type A;
  const int64_t plane = g.h * g.w;
  const int64_t cells = g.mh * g.mw;
  PSEXT_GRID_STRIDE_LOOP(idx, g.n * cells * plane) {
    const int64_t p = idx % plane;
    const int64_t cell = (idx / plane) % cells;
    const int64_t n = idx / (plane * cells);
    const int64_t i = cell / g.mw, j = cell % g.mw;
    const int64_t th = psa_mask::target(p / g.w, i, g.hh);
    const int64_t tw = psa_mask::target(p % g.w, j, g.hw);
    if (!psa_mask::inside(th, g.h) || !psa_mask::inside(tw, g.w)) continue;
    const int64_t t = th * g.w + tw;
    const int64_t col = collect ? p : t, row = collect ? t : p;
    A dot = A(0);
    for (int64_t k = 0; k < c; ++k) {
      dot += Acc<T>::load(x[(n * c + k) * plane + row]) *
             Acc<T>::load(g_[(n * c + k) * plane + col]);
    }
    da[idx] = Acc<T>::store(
        softmax ? Exp(Acc<T>::load(a[idx]) - lse[n * plane + col]) *
                      (dot - col_dot[n * plane + col])
                : dot);
  }
}

// Forward: out (not divided by the normalization factor), lse; col_sum
// [N, C] and zero_w [N, H*W] are scratch.
template <typename T>
cudaError_t LaunchForward(const T* x, const T* a, T* out,
                          typename Acc<T>::type* lse,
                          typename Acc<T>::type* col_sum,
                          typename Acc<T>::type* zero_w, int64_t n, int64_t c,
                          int64_t h, int64_t w, int64_t mh, int64_t mw,
                          int psa_type, bool softmax, const LaunchShape& shape,
                          cudaStream_t stream) {
  const Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t plane = h * w;
  if (n * plane == 0) return cudaSuccess;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  PSEXT_LAUNCH(ColumnStatsKernel<T>, BlocksFor(n * plane, shape), shape.threads,
               stream, a, lse, zero_w, g, reverse, softmax);
  if (c == 0) return cudaGetLastError();
  PSEXT_LAUNCH(RowSumKernel<T>, BlocksFor(n * c, shape), shape.threads, stream,
               x, nullptr, col_sum, n * c, c, plane);
  PSEXT_LAUNCH(GatherKernel<T>, BlocksFor(n * c * plane, shape), shape.threads,
               stream, x, a, lse, zero_w, col_sum, zero_w, out, g, c, reverse,
               reverse, false, softmax);
  return cudaGetLastError();
}

// Backward: dx and da; zero_w, col_dot [N, H*W] and base [N, C] are scratch.
template <typename T>
cudaError_t LaunchBackward(const T* x, const T* a, const T* out,
                           const typename Acc<T>::type* lse, const T* dout,
                           T* dx, T* da, typename Acc<T>::type* zero_w,
                           typename Acc<T>::type* col_dot,
                           typename Acc<T>::type* base, int64_t n, int64_t c,
                           int64_t h, int64_t w, int64_t mh, int64_t mw,
                           int psa_type, bool softmax, const LaunchShape& shape,
                           cudaStream_t stream) {
  typedef typename Acc<T>::type A;
  const Geometry g = psa_mask::make_geometry(n, h, w, mh, mw);
  const int64_t plane = h * w;
  if (n * plane == 0) return cudaSuccess;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  cudaError_t err = cudaMemsetAsync(da, 0, sizeof(T) * n * mh * mw * plane, stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(base, 0, sizeof(A) * n * c, stream);
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(col_dot, 0, sizeof(A) * n * plane, stream);
  if (err != cudaSuccess) return err;
  PSEXT_LAUNCH(ZeroWeightKernel<A>, BlocksFor(n * plane, shape), shape.threads,
               stream, lse, zero_w, g, reverse, softmax);
  if (c == 0) return cudaGetLastError();
  if (softmax) {
    PSEXT_LAUNCH(ColumnDotKernel<T>, BlocksFor(n * plane, shape), shape.threads,
                 stream, dout, out, col_dot, n, c, plane);
    PSEXT_LAUNCH(RowSumKernel<T>, BlocksFor(n * c, shape), shape.threads,
                 stream, dout, zero_w, base, n * c, c, plane);
  }
  PSEXT_LAUNCH(GatherKernel<T>, BlocksFor(n * c * plane, shape), shape.threads,
               stream, dout, a, lse, zero_w, base, nullptr, dx, g, c, !reverse,
               !reverse, true, softmax);
  PSEXT_LAUNCH(LogitGradKernel<T>, BlocksFor(n * mh * mw * plane, shape),
               shape.threads, stream, x, dout, a, lse, col_dot, da, g, c,
               psa_type == psa_mask::kCollect, softmax);
  return cudaGetLastError();
}

}  // namespace psa_attention_cuda

#endif  // PSA_ATTENTION_KERNELS_CUH_
