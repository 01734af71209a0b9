// Fused PSA attention custom operator for Paddle: CPU kernels and op
// registration.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// out[n, :, q] = sum_r x[n, :, r] * W[r, q], W = softmax over r of the
// psa_mask map Y (or Y itself with softmax off), computed per column q from
// the window alone (README.md has the derivation):
//   out = sum_{r in win(q)} x_r (w_rq - b_q) + b_q * S,
//   w_rq = exp(l_rq - lse_q), b_q = exp(-lse_q) if win(q) misses a position
//   (else 0), S = sum_r x_r.
// Outputs: Out [N, C, H, W] (not divided by the normalization factor; the
// Python face does that) and Lse [N, H, W] (lse_q, 0 with softmax off), kept
// for the backward. Nothing of size (H*W)^2 is ever allocated.
//
// Inputs X [N, C, H, W] and Mask [N, mh*mw, H, W]; attributes psa_type
// (0 collect, 1 distribute), mask_h, mask_w, softmax.
//
// CPU layout: X, Grad(Out) and Out are staged channels-last in blocks of
// kChannelBlock channels ([N][channel block][H*W][block width]), so every
// window cell is one contiguous row of a block; each task owns a block of
// positions of one channel block and writes its rows whole: no atomics, no
// zero pass needed, results independent of the thread count. The hot loops are
// compiled twice (default and AVX2+FMA) and picked at run time.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

// The custom-op subset of "paddle/extension.h" (see psa_mask.cc).
#include "paddle/common/ddim.h"
#include "paddle/common/exception.h"
#include "paddle/common/layout.h"
#include "paddle/fluid/platform/init_phi.h"
#include "paddle/phi/api/all.h"
#include "cpu_parallel.h"
#include "psa_attention_common.h"
#include "psa_mask_common.h"

static paddle::InitPhi g_psa_attention_init_phi;

#ifdef PADDLE_WITH_CUDA
#include <cuda_runtime.h>

// Launchers defined in psa_attention.cu (raw pointers, no Paddle headers).
#define PSA_ATTENTION_CUDA_DECL(T)                                            \
  cudaError_t PsaAttentionForwardCuda(                                        \
      const T* x, const T* a, T* out, T* lse, T* col_sum, T* zero_w,          \
      int64_t n, int64_t c, int64_t h, int64_t w, int64_t mh, int64_t mw,     \
      int psa_type, bool softmax, cudaStream_t stream);                       \
  cudaError_t PsaAttentionBackwardCuda(                                       \
      const T* x, const T* a, const T* out, const T* lse, const T* dout,      \
      T* dx, T* da, T* zero_w, T* col_dot, T* base, int64_t n, int64_t c,     \
      int64_t h, int64_t w, int64_t mh, int64_t mw, int psa_type,             \
      bool softmax, cudaStream_t stream);
PSA_ATTENTION_CUDA_DECL(float)
PSA_ATTENTION_CUDA_DECL(double)
#undef PSA_ATTENTION_CUDA_DECL
#endif

namespace {

using paddleseg_ext_cpu::ParallelFor;
using paddleseg_ext_cpu::Scratch;
using psa_attention::Walk;
using psa_mask::Geometry;
using psa_mask::kCollect;
using psa_mask::kDistribute;

// Channels per staged block: a window cell is a 512-byte row (float32), so
// the rows one position's window reads (~1.5k in-map cells at PSANet's
// 59x59 mask on a 32x64 map) stay in L2.
constexpr int64_t kChannelBlock = 128;
// Positions per task.
constexpr int64_t kPositionBlock = 16;

#define PSA_ALWAYS_INLINE __attribute__((always_inline)) inline

// AVX2 + FMA when the CPU has them (PSA_ATTENTION_NO_AVX2=1 forces the
// portable build; the tests run both).
bool UseAvx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    const char* env = std::getenv("PSA_ATTENTION_NO_AVX2");
    if (env != nullptr && std::strcmp(env, "0") != 0 && env[0] != '\0') {
      return false;
    }
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

#if defined(__x86_64__) || defined(__i386__)
#define PSA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define PSA_TARGET_AVX2
#endif

// Everything one call needs; pointers into dense buffers.
template <typename T>
struct Problem {
  Geometry g;
  int64_t c;       // channels C
  int64_t plane;   // H*W
  int psa_type;
  bool softmax;
  const T* a;      // [N, mh*mw, P] logits
  const T* lse;    // [N, P] per-column log-sum-exp (softmax) or unused
  const T* zero_w; // [N, P] b_q: weight of one out-of-window zero of column q
};

// Start of channel block `cb` of image n in a staged [N][block][P][width]
// buffer, and the block's width.
inline int64_t BlockBase(int64_t n, int64_t c0, int64_t plane, int64_t c) {
  return n * plane * c + c0 * plane;
}
inline int64_t BlockWidth(int64_t c0, int64_t c) {
  return std::min(kChannelBlock, c - c0);
}

// Stage src [N, C, P] channels-last in blocks; tasks are (n, block, 64 rows).
template <typename T>
void StageBlocks(const T* src, T* dst, int64_t n_img, int64_t c, int64_t plane) {
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  const int64_t rows = 64;
  const int64_t row_tasks = (plane + rows - 1) / rows;
  ParallelFor(n_img * blocks * row_tasks, n_img * c * plane, [&](int64_t t) {
    const int64_t rt = t % row_tasks;
    const int64_t b = (t / row_tasks) % blocks;
    const int64_t n = t / (row_tasks * blocks);
    const int64_t c0 = b * kChannelBlock, width = BlockWidth(c0, c);
    const int64_t p0 = rt * rows, p1 = std::min(plane, p0 + rows);
    T* out = dst + BlockBase(n, c0, plane, c);
    const T* in = src + (n * c + c0) * plane;
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t k = 0; k < width; ++k) out[p * width + k] = in[k * plane + p];
    }
  });
}

// Inverse of StageBlocks.
template <typename T>
void UnstageBlocks(const T* src, T* dst, int64_t n_img, int64_t c, int64_t plane) {
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  const int64_t chans = 16;
  const int64_t chan_tasks = (kChannelBlock + chans - 1) / chans;
  ParallelFor(n_img * blocks * chan_tasks, n_img * c * plane, [&](int64_t t) {
    const int64_t ct = t % chan_tasks;
    const int64_t b = (t / chan_tasks) % blocks;
    const int64_t n = t / (chan_tasks * blocks);
    const int64_t c0 = b * kChannelBlock, width = BlockWidth(c0, c);
    const int64_t k0 = ct * chans, k1 = std::min(width, k0 + chans);
    const T* in = src + BlockBase(n, c0, plane, c);
    T* out = dst + (n * c + c0) * plane;
    for (int64_t k = k0; k < k1; ++k) {
      for (int64_t p = 0; p < plane; ++p) out[k * plane + p] = in[p * width + k];
    }
  });
}

// Per-column softmax statistics: lse_q = m + log(sum_win exp(l - m) +
// zeros * exp(-m)), m = max(max_win l, 0 if zeros > 0); b_q = exp(-lse_q) if
// the column has zeros, else 0. With softmax off both are 0.
template <typename T>
void ColumnStats(const Problem<T>& pb, T* lse, T* zero_w) {
  const Geometry& g = pb.g;
  const bool reverse = psa_attention::column_walk_is_reverse(pb.psa_type);
  ParallelFor(g.n * g.h, g.n * pb.plane * g.mh * g.mw, [&](int64_t t) {
    const int64_t n = t / g.h, h = t % g.h;
    for (int64_t w = 0; w < g.w; ++w) {
      const int64_t q = h * g.w + w;
      const int64_t idx = n * pb.plane + q;
      if (!pb.softmax) {
        lse[idx] = T(0);
        zero_w[idx] = T(0);
        continue;
      }
      const Walk k = psa_attention::make_walk(g, reverse, h, w);
      const int64_t zeros = pb.plane - psa_attention::walk_count(k);
      // The logit of cell (i, j) sits at the column (collect) or at the
      // source partner (distribute).
      auto logit = [&](int64_t i, int64_t j) {
        const int64_t at = reverse ? psa_attention::partner(g, true, h, w, i, j) : q;
        return pb.a[psa_attention::logit_offset(g, n, i, j, at)];
      };
      T m = zeros > 0 ? T(0) : -std::numeric_limits<T>::infinity();
      for (int64_t i = k.i0; i < k.i1; ++i)
        for (int64_t j = k.j0; j < k.j1; ++j) m = std::max(m, logit(i, j));
      T z = zeros > 0 ? static_cast<T>(zeros) * std::exp(-m) : T(0);
      for (int64_t i = k.i0; i < k.i1; ++i)
        for (int64_t j = k.j0; j < k.j1; ++j) z += std::exp(logit(i, j) - m);
      const T l = m + std::log(z);
      lse[idx] = l;
      zero_w[idx] = zeros > 0 ? std::exp(-l) : T(0);
    }
  });
}

// Channels per register tile of the logit-gradient dots (4 AVX registers in
// float32).
constexpr int64_t kTile = 32;

// 32-byte SIMD vectors (GCC vector extensions): one AVX register in the
// AVX2 build, two SSE registers in the portable one.
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
};

template <typename T>
PSA_ALWAYS_INLINE typename Simd<T>::V Load(const T* p) {
  typename Simd<T>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// Vectors per tile and lanes per vector.
template <typename T>
constexpr int64_t kTileVecs = kTile * static_cast<int64_t>(sizeof(T)) / 32;
template <typename T>
constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));

// The window walk of position u as a list: partner positions and their
// coefficients (softmax: w - b of the partner's or u's column; else the
// logit). Returns the length. Computed once per position and reused by every
// channel tile, so each exp runs once per map entry.
template <typename T>
PSA_ALWAYS_INLINE int64_t WalkList(const Problem<T>& pb, int64_t n, int64_t u,
                                   bool reverse, bool logit_at_partner,
                                   bool column_is_partner, T* coef,
                                   int64_t* part) {
  const Geometry& g = pb.g;
  const int64_t uh = u / g.w, uw = u % g.w;
  const T* lse = pb.lse + n * pb.plane;
  const T* zw = pb.zero_w + n * pb.plane;
  const Walk wk = psa_attention::make_walk(g, reverse, uh, uw);
  int64_t e = 0;
  for (int64_t i = wk.i0; i < wk.i1; ++i) {
    for (int64_t j = wk.j0; j < wk.j1; ++j, ++e) {
      const int64_t p = psa_attention::partner(g, reverse, uh, uw, i, j);
      const T l = pb.a[psa_attention::logit_offset(g, n, i, j,
                                                   logit_at_partner ? p : u)];
      if (pb.softmax) {
        const int64_t col = column_is_partner ? p : u;
        coef[e] = std::exp(l - lse[col]) - zw[col];
      } else {
        coef[e] = l;
      }
      part[e] = p;
    }
  }
  return e;
}

// Positions handled together by the register-blocked loops: neighbours
// along a map row whose windows are the same cells shifted by one column, so
// one load of a partner row feeds all of them.
constexpr int64_t kGroup = 4;

// Bounding rectangle of the partners of a group of positions, and for each
// position its coefficient at every rectangle entry (0 outside its window).
template <typename T>
struct GroupPlan {
  int64_t r0, c0, rows, cols;  // rectangle in map coordinates
  T* dense;                    // [kGroup][rows * cols]
};

template <typename T>
PSA_ALWAYS_INLINE GroupPlan<T> PlanGroup(const Geometry& g, const T* coef,
                                         const int64_t* part,
                                         const int64_t* len, int64_t stride,
                                         int64_t members, T* buffer) {
  GroupPlan<T> plan;
  int64_t r_lo = g.h, r_hi = -1, c_lo = g.w, c_hi = -1;
  for (int64_t k = 0; k < members; ++k) {
    for (int64_t e = 0; e < len[k]; ++e) {
      const int64_t p = part[k * stride + e];
      const int64_t r = p / g.w, c = p % g.w;
      r_lo = std::min(r_lo, r);
      r_hi = std::max(r_hi, r);
      c_lo = std::min(c_lo, c);
      c_hi = std::max(c_hi, c);
    }
  }
  plan.r0 = r_lo;
  plan.c0 = c_lo;
  plan.rows = r_hi >= r_lo ? r_hi - r_lo + 1 : 0;
  plan.cols = c_hi >= c_lo ? c_hi - c_lo + 1 : 0;
  plan.dense = buffer;
  const int64_t area = plan.rows * plan.cols;
  std::fill(buffer, buffer + kGroup * area, T(0));
  for (int64_t k = 0; k < members; ++k) {
    for (int64_t e = 0; e < len[k]; ++e) {
      const int64_t p = part[k * stride + e];
      buffer[k * area + (p / g.w - plan.r0) * plan.cols + (p % g.w - plan.c0)] =
          coef[k * stride + e];
    }
  }
  return plan;
}

// One gather task: for positions u in [u0, u1) of image n,
// dst[u] = base_scale(u) * base + sum over the walk's cells of
// coef * rows[partner], every channel. Used by the forward (u = column,
// rows = x) and by the backward to x (u = row, rows = grad of out).
//   reverse:           which walk (partner = u - off or u + off);
//   logit_at_partner:  the cell's logit sits at the partner (else at u);
//   column_is_partner: lse/b of the partner's column (else u's).
// Groups of kGroup positions of one map row share every partner-row load
// (kGroup x 2 vector accumulators stay in registers); channels beyond the
// last full 64-byte tile go through the per-position lists.
template <typename T>
PSA_ALWAYS_INLINE void GatherTaskBody(const Problem<T>& pb, bool reverse,
                                      bool logit_at_partner,
                                      bool column_is_partner, const T* rows,
                                      const T* base, const T* base_scale,
                                      T* dst, int64_t n, int64_t u0,
                                      int64_t u1) {
  typedef typename Simd<T>::V V;
  constexpr int64_t lanes = kLanes<T>;
  constexpr int64_t tile = 2 * lanes;  // channels per register tile
  const Geometry& g = pb.g;
  const int64_t cells = g.mh * g.mw;
  T* coef = Scratch<T>(kGroup * cells + kGroup * (g.mh + 1) * (g.mw + kGroup));
  T* dense_buf = coef + kGroup * cells;
  int64_t* part = Scratch<int64_t>(kGroup * cells);
  for (int64_t ua = u0; ua < u1;) {
    // A group: up to kGroup consecutive positions on one map row.
    int64_t members = 1;
    while (members < kGroup && ua + members < u1 &&
           (ua + members) / g.w == ua / g.w) {
      ++members;
    }
    int64_t len[kGroup] = {0, 0, 0, 0};
    T scale[kGroup] = {T(0), T(0), T(0), T(0)};
    for (int64_t k = 0; k < members; ++k) {
      len[k] = WalkList(pb, n, ua + k, reverse, logit_at_partner,
                        column_is_partner, coef + k * cells, part + k * cells);
      scale[k] = base_scale != nullptr ? base_scale[n * pb.plane + ua + k] : T(1);
    }
    const GroupPlan<T> plan =
        PlanGroup(g, coef, part, len, cells, members, dense_buf);
    const int64_t area = plan.rows * plan.cols;
    for (int64_t cb = 0; cb < pb.c; cb += kChannelBlock) {
      const int64_t width = BlockWidth(cb, pb.c);
      const T* blk = rows + BlockBase(n, cb, pb.plane, pb.c);
      T* out = dst + BlockBase(n, cb, pb.plane, pb.c);
      const T* bvec = base + n * pb.c + cb;
      int64_t k0 = 0;
      for (; k0 + tile <= width; k0 += tile) {
        V acc[kGroup][2];
        const V b0 = Load(bvec + k0), b1 = Load(bvec + k0 + lanes);
        for (int64_t k = 0; k < kGroup; ++k) {
          acc[k][0] = scale[k] * b0;
          acc[k][1] = scale[k] * b1;
        }
        for (int64_t r = 0; r < plan.rows; ++r) {
          const T* row = blk + ((plan.r0 + r) * g.w + plan.c0) * width + k0;
          const T* d = plan.dense + r * plan.cols;
          for (int64_t c = 0; c < plan.cols; ++c, row += width) {
            const V x0 = Load(row), x1 = Load(row + lanes);
            for (int64_t k = 0; k < kGroup; ++k) {
              const T cf = d[k * area + c];
              acc[k][0] += cf * x0;
              acc[k][1] += cf * x1;
            }
          }
        }
        for (int64_t k = 0; k < members; ++k) {
          __builtin_memcpy(out + (ua + k) * width + k0, acc[k], sizeof(acc[k]));
        }
      }
      for (; k0 < width; ++k0) {  // channels beyond the last full tile
        for (int64_t k = 0; k < members; ++k) {
          const T* cf = coef + k * cells;
          const int64_t* pt = part + k * cells;
          T acc = scale[k] * bvec[k0];
          for (int64_t e = 0; e < len[k]; ++e) acc += cf[e] * blk[pt[e] * width + k0];
          out[(ua + k) * width + k0] = acc;
        }
      }
    }
    ua += members;
  }
}

template <typename T>
PSA_TARGET_AVX2 void GatherTaskAvx2(const Problem<T>& pb, bool reverse,
                                    bool logit_at_partner,
                                    bool column_is_partner, const T* rows,
                                    const T* base, const T* base_scale, T* dst,
                                    int64_t n, int64_t u0, int64_t u1) {
  GatherTaskBody(pb, reverse, logit_at_partner, column_is_partner, rows, base,
                 base_scale, dst, n, u0, u1);
}

template <typename T>
void GatherTaskPortable(const Problem<T>& pb, bool reverse,
                        bool logit_at_partner, bool column_is_partner,
                        const T* rows, const T* base, const T* base_scale,
                        T* dst, int64_t n, int64_t u0, int64_t u1) {
  GatherTaskBody(pb, reverse, logit_at_partner, column_is_partner, rows, base,
                 base_scale, dst, n, u0, u1);
}

// base: [N, C] per-channel vector; base_scale: [N, P] or null (= 1).
template <typename T>
void Gather(const Problem<T>& pb, bool reverse, bool logit_at_partner,
            bool column_is_partner, const T* rows, const T* base,
            const T* base_scale, T* dst) {
  const Geometry& g = pb.g;
  const int64_t u_tasks = (pb.plane + kPositionBlock - 1) / kPositionBlock;
  const bool avx2 = UseAvx2();
  ParallelFor(g.n * u_tasks, g.n * pb.plane * pb.c, [&](int64_t t) {
    const int64_t n = t / u_tasks;
    const int64_t u0 = (t % u_tasks) * kPositionBlock;
    const int64_t u1 = std::min(pb.plane, u0 + kPositionBlock);
    if (avx2) {
      GatherTaskAvx2(pb, reverse, logit_at_partner, column_is_partner, rows,
                     base, base_scale, dst, n, u0, u1);
    } else {
      GatherTaskPortable(pb, reverse, logit_at_partner, column_is_partner,
                         rows, base, base_scale, dst, n, u0, u1);
    }
  });
}

// Gradient of the logits, one task per block of source positions p of one
// image: for every cell k, the pair (column, row) it feeds is
// collect (p, p + off_k), distribute (p + off_k, p);
// dot = <x[row], g[col]>, da = w (dot - D_col) with softmax, dot without;
// cells whose target is off the map get an explicit 0.
template <typename T>
PSA_ALWAYS_INLINE void LogitGradTaskBody(const Problem<T>& pb, const T* xs,
                                         const T* gs, const T* col_dot, T* da,
                                         int64_t n, int64_t p0, int64_t p1) {
  const Geometry& g = pb.g;
  const int64_t cells = g.mh * g.mw;
  const bool collect = pb.psa_type == kCollect;
  typedef typename Simd<T>::V V;
  constexpr int64_t lanes = kLanes<T>;
  T* partial = Scratch<T>(cells * lanes);  // one vector of partial sums per cell
  int64_t* part = Scratch<int64_t>(cells);
  const T* lse = pb.lse + n * pb.plane;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t ph = p / g.w, pw = p % g.w;
    const Walk wk = psa_attention::make_walk(g, false, ph, pw);
    const int64_t count = psa_attention::walk_count(wk);
    int64_t e = 0;
    for (int64_t i = wk.i0; i < wk.i1; ++i)
      for (int64_t j = wk.j0; j < wk.j1; ++j)
        part[e++] = psa_attention::partner(g, false, ph, pw, i, j);
    std::fill(partial, partial + count * lanes, T(0));
    for (int64_t c0 = 0; c0 < pb.c; c0 += kChannelBlock) {
      const int64_t width = BlockWidth(c0, pb.c);
      const T* xb = xs + BlockBase(n, c0, pb.plane, pb.c);
      const T* gb = gs + BlockBase(n, c0, pb.plane, pb.c);
      // The row fixed by p and the rows that move with the cell.
      const T* f = (collect ? gb : xb) + p * width;
      const T* moving = collect ? xb : gb;
      int64_t k0 = 0;
      for (; k0 + kTile <= width; k0 += kTile) {
        V fv[kTileVecs<T>];
        for (int64_t v = 0; v < kTileVecs<T>; ++v) fv[v] = Load(f + k0 + v * lanes);
        for (e = 0; e < count; ++e) {
          const T* m = moving + part[e] * width + k0;
          V acc = Load(partial + e * lanes);
          for (int64_t v = 0; v < kTileVecs<T>; ++v) acc += fv[v] * Load(m + v * lanes);
          __builtin_memcpy(partial + e * lanes, &acc, sizeof(acc));
        }
      }
      for (; k0 < width; ++k0) {
        for (e = 0; e < count; ++e) {
          partial[e * lanes] += f[k0] * moving[part[e] * width + k0];
        }
      }
    }
    e = 0;
    for (int64_t i = 0; i < g.mh; ++i) {
      for (int64_t j = 0; j < g.mw; ++j) {
        const int64_t off = psa_attention::logit_offset(g, n, i, j, p);
        if (i < wk.i0 || i >= wk.i1 || j < wk.j0 || j >= wk.j1) {
          da[off] = T(0);
          continue;
        }
        const T* acc = partial + (e++) * lanes;
        T dot = T(0);
        for (int64_t l = 0; l < lanes; ++l) dot += acc[l];
        if (!pb.softmax) {
          da[off] = dot;
          continue;
        }
        const int64_t col =
            collect ? p : psa_attention::partner(g, false, ph, pw, i, j);
        da[off] = std::exp(pb.a[off] - lse[col]) *
                  (dot - col_dot[n * pb.plane + col]);
      }
    }
  }
}

template <typename T>
PSA_TARGET_AVX2 void LogitGradTaskAvx2(const Problem<T>& pb, const T* xs,
                                       const T* gs, const T* col_dot, T* da,
                                       int64_t n, int64_t p0, int64_t p1) {
  LogitGradTaskBody(pb, xs, gs, col_dot, da, n, p0, p1);
}

template <typename T>
void LogitGradTaskPortable(const Problem<T>& pb, const T* xs, const T* gs,
                           const T* col_dot, T* da, int64_t n, int64_t p0,
                           int64_t p1) {
  LogitGradTaskBody(pb, xs, gs, col_dot, da, n, p0, p1);
}

template <typename T>
void LogitGrad(const Problem<T>& pb, const T* xs, const T* gs,
               const T* col_dot, T* da) {
  const int64_t p_tasks = (pb.plane + kPositionBlock - 1) / kPositionBlock;
  const bool avx2 = UseAvx2();
  ParallelFor(pb.g.n * p_tasks, pb.g.n * pb.plane * pb.c, [&](int64_t t) {
    const int64_t n = t / p_tasks;
    const int64_t p0 = (t % p_tasks) * kPositionBlock;
    const int64_t p1 = std::min(pb.plane, p0 + kPositionBlock);
    if (avx2) {
      LogitGradTaskAvx2(pb, xs, gs, col_dot, da, n, p0, p1);
    } else {
      LogitGradTaskPortable(pb, xs, gs, col_dot, da, n, p0, p1);
    }
  });
}

// S[n, c] = sum_p x[n, c, p] (the column sum that the zeros of every column
// weight by b_q).
template <typename T>
void ChannelSums(const T* x, T* s, int64_t n_img, int64_t c, int64_t plane) {
  ParallelFor(n_img * c, n_img * c * plane, [&](int64_t t) {
    const T* row = x + t * plane;
    T acc = T(0);
    for (int64_t p = 0; p < plane; ++p) acc += row[p];
    s[t] = acc;
  });
}

// base[n, c] = sum_q g[n, c, q] * b[n, q]: every row r receives it (the zero
// entries of every column), before the window corrections.
template <typename T>
void WeightedChannelSums(const T* g, const T* b, T* base, int64_t n_img,
                         int64_t c, int64_t plane) {
  ParallelFor(n_img * c, n_img * c * plane, [&](int64_t t) {
    const T* row = g + t * plane;
    const T* bq = b + (t / c) * plane;
    T acc = T(0);
    for (int64_t p = 0; p < plane; ++p) acc += row[p] * bq[p];
    base[t] = acc;
  });
}

// D[n, q] = sum_c g[n, c, q] * out[n, c, q] (softmax backward's per-column
// inner product), one task per image and block of columns.
template <typename T>
void ColumnDots(const T* g, const T* out, T* d, int64_t n_img, int64_t c,
                int64_t plane) {
  const int64_t cols = 256;
  const int64_t q_tasks = (plane + cols - 1) / cols;
  ParallelFor(n_img * q_tasks, n_img * c * plane, [&](int64_t t) {
    const int64_t n = t / q_tasks;
    const int64_t q0 = (t % q_tasks) * cols, q1 = std::min(plane, q0 + cols);
    T* dn = d + n * plane;
    std::fill(dn + q0, dn + q1, T(0));
    for (int64_t k = 0; k < c; ++k) {
      const T* gr = g + (n * c + k) * plane;
      const T* orow = out + (n * c + k) * plane;
      for (int64_t q = q0; q < q1; ++q) dn[q] += gr[q] * orow[q];
    }
  });
}

template <typename T>
void ForwardCpu(const T* x, const T* a, T* out, T* lse, const Geometry& g,
                int64_t c, int psa_type, bool softmax) {
  const int64_t plane = g.h * g.w;
  std::vector<T> zero_w(g.n * plane), sums(g.n * c);
  std::vector<T> xs(g.n * c * plane), os(g.n * c * plane);
  Problem<T> pb{g, c, plane, psa_type, softmax, a, lse, zero_w.data()};
  ColumnStats(pb, lse, zero_w.data());
  StageBlocks(x, xs.data(), g.n, c, plane);
  ChannelSums(x, sums.data(), g.n, c, plane);
  // u = column q: its own walk, logits at the source, lse/b of q itself.
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  Gather(pb, reverse, /*logit_at_partner=*/reverse, /*column_is_partner=*/false,
         xs.data(), sums.data(), zero_w.data(), os.data());
  UnstageBlocks(os.data(), out, g.n, c, plane);
}

template <typename T>
void BackwardCpu(const T* x, const T* a, const T* out, const T* lse,
                 const T* dout, T* dx, T* da, const Geometry& g, int64_t c,
                 int psa_type, bool softmax) {
  const int64_t plane = g.h * g.w;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  std::vector<T> zero_w(g.n * plane), col_dot(g.n * plane), base(g.n * c);
  // b_q again, from lse and the geometry (zeros > 0 <=> b_q > 0).
  ParallelFor(g.n * plane, g.n * plane, [&](int64_t t) {
    const int64_t q = t % plane;
    const Walk k = psa_attention::make_walk(g, reverse, q / g.w, q % g.w);
    zero_w[t] = softmax && psa_attention::walk_count(k) < plane
                    ? std::exp(-lse[t]) : T(0);
  });
  if (softmax) {
    ColumnDots(dout, out, col_dot.data(), g.n, c, plane);
    WeightedChannelSums(dout, zero_w.data(), base.data(), g.n, c, plane);
  }
  std::vector<T> xs(g.n * c * plane), gs(g.n * c * plane);
  StageBlocks(x, xs.data(), g.n, c, plane);
  StageBlocks(dout, gs.data(), g.n, c, plane);
  Problem<T> pb{g, c, plane, psa_type, softmax, a, lse, zero_w.data()};
  // u = row r: the other walk finds the columns r belongs to; the logit sits
  // at the source position (the row for distribute, the column for collect).
  {
    std::vector<T> dxs(g.n * c * plane);
    Gather(pb, !reverse, /*logit_at_partner=*/!reverse,
           /*column_is_partner=*/true, gs.data(), base.data(),
           static_cast<const T*>(nullptr),
           dxs.data());
    UnstageBlocks(dxs.data(), dx, g.n, c, plane);
  }
  LogitGrad(pb, xs.data(), gs.data(), col_dot.data(), da);
}

void CheckAttrs(int psa_type, int mask_h, int mask_w) {
  PD_CHECK(psa_type == kCollect || psa_type == kDistribute,
           "psa_attention: psa_type must be 0 (collect) or 1 (distribute), "
           "got ", psa_type, ".");
  PD_CHECK(mask_h >= 1 && mask_w >= 1,
           "psa_attention: mask_h and mask_w must be >= 1, got ", mask_h,
           " x ", mask_w, ".");
}

void CheckShapes(const std::vector<int64_t>& xs, const std::vector<int64_t>& as,
                 int mask_h, int mask_w) {
  PD_CHECK(xs.size() == 4, "psa_attention: x must be 4-D [N, C, H, W], got ",
           xs.size(), "-D.");
  PD_CHECK(as.size() == 4,
           "psa_attention: mask_logits must be 4-D [N, mask_h*mask_w, H, W], "
           "got ", as.size(), "-D.");
  const int64_t cells = static_cast<int64_t>(mask_h) * mask_w;
  PD_CHECK(as[1] < 0 || as[1] == cells, "psa_attention: mask_logits has ",
           as[1], " channels but mask ", mask_h, " x ", mask_w, " needs ",
           cells, ".");
  for (int d : {0, 2, 3}) {
    PD_CHECK(xs[d] < 0 || as[d] < 0 || xs[d] == as[d],
             "psa_attention: x and mask_logits differ in dimension ", d, " (",
             xs[d], " vs ", as[d], ").");
  }
}

// Dense row-major buffers (see psa_mask.cc: strided views, oneDNN layouts).
paddle::Tensor Dense(const paddle::Tensor& t, const char* name) {
  paddle::Tensor out = t;
  if (out.layout() == phi::DataLayout::ONEDNN) {
    out = paddle::experimental::assign(out);
    PD_CHECK(out.layout() != phi::DataLayout::ONEDNN, "psa_attention: ",
             name, " arrived in a oneDNN layout that could not be converted "
             "to NCHW; disable oneDNN for this model.");
  }
  return out.is_contiguous() ? out : out.contiguous();
}

}  // namespace

std::vector<paddle::Tensor> PsaAttentionForward(const paddle::Tensor& x_in,
                                                const paddle::Tensor& a_in,
                                                int psa_type, int mask_h,
                                                int mask_w, bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_in.shape(), a_in.shape(), mask_h, mask_w);
  PD_CHECK(x_in.dtype() == a_in.dtype(),
           "psa_attention: x and mask_logits must have the same dtype.");
  const paddle::Tensor x = Dense(x_in, "x");
  const paddle::Tensor a = Dense(a_in, "mask_logits");
  const std::vector<int64_t> s = x.shape();
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const int64_t c = s[1];
  paddle::Tensor out = paddle::empty({g.n, c, g.h, g.w}, x.dtype(), x.place());
  paddle::Tensor lse = paddle::empty({g.n, g.h, g.w}, x.dtype(), x.place());
  if (g.n * g.h * g.w == 0) return {out, lse};

  if (x.is_cpu()) {
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_forward_cpu", ([&] {
      ForwardCpu<data_t>(x.data<data_t>(), a.data<data_t>(),
                         out.data<data_t>(), lse.data<data_t>(), g, c,
                         psa_type, softmax);
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (x.is_gpu()) {
    paddle::Tensor col_sum = paddle::empty({g.n, c}, x.dtype(), x.place());
    paddle::Tensor zero_w = paddle::empty({g.n, g.h * g.w}, x.dtype(), x.place());
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_forward_cuda", ([&] {
      const cudaError_t err = PsaAttentionForwardCuda(
          x.data<data_t>(), a.data<data_t>(), out.data<data_t>(),
          lse.data<data_t>(), col_sum.data<data_t>(), zero_w.data<data_t>(),
          g.n, c, g.h, g.w, g.mh, g.mw, psa_type, softmax, x.stream());
      PD_CHECK(err == cudaSuccess, "psa_attention forward CUDA launch failed: ",
               cudaGetErrorString(err));
    }));
#endif
  } else {
    PD_THROW("psa_attention: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {out, lse};
}

std::vector<paddle::Tensor> PsaAttentionBackward(
    const paddle::Tensor& x_in, const paddle::Tensor& a_in,
    const paddle::Tensor& out_in, const paddle::Tensor& lse_in,
    const paddle::Tensor& dout_in, int psa_type, int mask_h, int mask_w,
    bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_in.shape(), a_in.shape(), mask_h, mask_w);
  const paddle::Tensor x = Dense(x_in, "x");
  const paddle::Tensor a = Dense(a_in, "mask_logits");
  const paddle::Tensor out = Dense(out_in, "out");
  const paddle::Tensor lse = Dense(lse_in, "lse");
  const paddle::Tensor dout = Dense(dout_in, "grad of out");
  PD_CHECK(dout.shape() == x.shape(),
           "psa_attention_grad: grad of out must have x's shape.");
  const std::vector<int64_t> s = x.shape();
  const Geometry g = psa_mask::make_geometry(s[0], s[2], s[3], mask_h, mask_w);
  const int64_t c = s[1];
  paddle::Tensor dx = paddle::empty(s, x.dtype(), x.place());
  paddle::Tensor da = paddle::empty(a.shape(), a.dtype(), a.place());
  if (g.n * g.h * g.w == 0) return {dx, da};

  if (x.is_cpu()) {
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_backward_cpu", ([&] {
      BackwardCpu<data_t>(x.data<data_t>(), a.data<data_t>(),
                          out.data<data_t>(), lse.data<data_t>(),
                          dout.data<data_t>(), dx.data<data_t>(),
                          da.data<data_t>(), g, c, psa_type, softmax);
    }));
#ifdef PADDLE_WITH_CUDA
  } else if (x.is_gpu()) {
    const int64_t plane = g.h * g.w;
    paddle::Tensor zero_w = paddle::empty({g.n, plane}, x.dtype(), x.place());
    paddle::Tensor col_dot = paddle::empty({g.n, plane}, x.dtype(), x.place());
    paddle::Tensor base = paddle::empty({g.n, c}, x.dtype(), x.place());
    PD_DISPATCH_FLOATING_TYPES(x.dtype(), "psa_attention_backward_cuda", ([&] {
      const cudaError_t err = PsaAttentionBackwardCuda(
          x.data<data_t>(), a.data<data_t>(), out.data<data_t>(),
          lse.data<data_t>(), dout.data<data_t>(), dx.data<data_t>(),
          da.data<data_t>(), zero_w.data<data_t>(), col_dot.data<data_t>(),
          base.data<data_t>(), g.n, c, g.h, g.w, g.mh, g.mw, psa_type,
          softmax, x.stream());
      PD_CHECK(err == cudaSuccess, "psa_attention backward CUDA launch failed: ",
               cudaGetErrorString(err));
    }));
#endif
  } else {
    PD_THROW("psa_attention_grad: unsupported place (CPU, or GPU when built with CUDA).");
  }
  return {dx, da};
}

std::vector<std::vector<int64_t>> PsaAttentionInferShape(
    const std::vector<int64_t>& x_shape, const std::vector<int64_t>& a_shape,
    int psa_type, int mask_h, int mask_w, bool softmax) {
  CheckAttrs(psa_type, mask_h, mask_w);
  CheckShapes(x_shape, a_shape, mask_h, mask_w);
  return {x_shape, {x_shape[0], x_shape[2], x_shape[3]}};
}

std::vector<paddle::DataType> PsaAttentionInferDtype(
    const paddle::DataType& x_dtype, const paddle::DataType& a_dtype) {
  return {x_dtype, x_dtype};
}

std::vector<std::vector<int64_t>> PsaAttentionGradInferShape(
    const std::vector<int64_t>& x_shape, const std::vector<int64_t>& a_shape,
    const std::vector<int64_t>& out_shape,
    const std::vector<int64_t>& lse_shape,
    const std::vector<int64_t>& dout_shape, int psa_type, int mask_h,
    int mask_w, bool softmax) {
  return {x_shape, a_shape};
}

std::vector<paddle::DataType> PsaAttentionGradInferDtype(
    const paddle::DataType& x_dtype, const paddle::DataType& a_dtype,
    const paddle::DataType& out_dtype, const paddle::DataType& lse_dtype,
    const paddle::DataType& dout_dtype) {
  return {x_dtype, a_dtype};
}

PD_BUILD_OP(psa_attention)
    .Inputs({"X", "Mask"})
    .Outputs({"Out", "Lse"})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int", "softmax: bool"})
    .SetKernelFn(PD_KERNEL(PsaAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaAttentionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaAttentionInferDtype));

// The backward keeps X, Mask, Out and Lse: O(N * H*W * (C + mh*mw)).
PD_BUILD_GRAD_OP(psa_attention)
    .Inputs({"X", "Mask", "Out", "Lse", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Mask")})
    .Attrs({"psa_type: int", "mask_h: int", "mask_w: int", "softmax: bool"})
    .SetKernelFn(PD_KERNEL(PsaAttentionBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(PsaAttentionGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(PsaAttentionGradInferDtype));
