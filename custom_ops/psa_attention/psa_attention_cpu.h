// CPU kernels of the fused PSA attention operator (no Paddle headers; the
// op registration is in psa_attention.cc).
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
//
// Layout idea: for a fixed mask cell k = (i, j) the partner of position
// (h, w) is (h + sy, w + sx) with a shift that does not depend on the
// position (psa_attention::cell_shift), and mask_logits[n, k] is a
// contiguous [H, W] plane. So every term of the sums above is, for fixed
// (k, h), a multiply-add of a weight row with a shifted source row, in NCHW
// as the tensors arrive: contiguous in w, vectorised along w, the weight row
// reused by a block of channels held in registers. The sources are copied
// once into rows padded with zeros left and right (so a shifted row never
// leaves its buffer and off-map partners read 0 against a 0 weight); rows
// whose partner row is off the map are skipped. Every task owns one output
// row chunk and writes it whole: no atomics, no zero pass, results
// independent of the thread count. The hot loops are compiled twice, AVX2+FMA
// and portable, chosen at run time (PSA_ATTENTION_NO_AVX2=1 forces the
// portable build; the tests run both).
#ifndef PSA_ATTENTION_CPU_H_
#define PSA_ATTENTION_CPU_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_parallel.h"
#include "psa_attention_common.h"
#include "psa_mask_common.h"

namespace psa_attention_cpu {

using paddleseg_ext_cpu::ParallelFor;
using paddleseg_ext_cpu::Scratch;
using psa_attention::Walk;
using psa_mask::Geometry;
using psa_mask::kCollect;
using psa_mask::kDistribute;

#define PSA_ALWAYS_INLINE __attribute__((always_inline)) inline

#if defined(__x86_64__) || defined(__i386__)
#define PSA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define PSA_TARGET_AVX2
#endif

// AVX2 + FMA when the CPU has them (PSA_ATTENTION_NO_AVX2=1 forces the
// portable build).
inline bool UseAvx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    const char* env = std::getenv("PSA_ATTENTION_NO_AVX2");
    if (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) {
      return false;
    }
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

// 32-byte SIMD vectors (GCC vector extensions): one AVX register in the
// AVX2 build, two SSE registers in the portable one.
template <typename T>
struct Simd {
  typedef T V __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));
};

template <typename T>
PSA_ALWAYS_INLINE typename Simd<T>::V Load(const T* p) {
  typename Simd<T>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
PSA_ALWAYS_INLINE void Store(T* p, const typename Simd<T>::V& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Register tile: kVecs vectors along w times kGatherChannels channels
// (gathers) or kDotCells mask cells (logit-gradient dots): 12 accumulators
// plus the 3 shared vectors fit the 16 AVX registers.
constexpr int kVecs = 3;
constexpr int kGatherChannels = 4;
constexpr int kDotCells = 4;
// Channels per pass of the logit-gradient dots (their partial sums live in a
// per-task buffer between passes, so the rows of one pass stay in L1).
constexpr int64_t kDotChannelBlock = 64;
// Positions of one map row per task (a multiple of the tile width).
constexpr int64_t kChunk = 96;

template <typename T>
constexpr int64_t TileWidth() {
  return kVecs * Simd<T>::kLanes;
}

// Zero-padded row layout of a source: [N*C][H][wp], the image's column w at
// pad + w. pad covers every |shift| that reaches the map (< W), wr is W
// rounded up to whole tiles (the tail lanes compute values nobody stores).
struct Padded {
  int64_t pad, wr, wp;
};

template <typename T>
Padded MakePadded(const Geometry& g) {
  Padded p;
  p.pad = std::min(std::max(g.hw, g.mw - 1 - g.hw), g.w - 1);
  const int64_t tile = TileWidth<T>();
  p.wr = (g.w + tile - 1) / tile * tile;
  p.wp = p.pad + p.wr + p.pad;
  return p;
}

// dst = src [planes, H, W] copied into padded rows.
template <typename T>
void PadRows(const T* src, T* dst, int64_t planes, const Geometry& g,
             const Padded& lay) {
  const int64_t rows = planes * g.h;
  ParallelFor((rows + 63) / 64, rows * lay.wp, [&](int64_t t) {
    const int64_t r1 = std::min(rows, (t + 1) * 64);
    for (int64_t r = t * 64; r < r1; ++r) {
      T* out = dst + r * lay.wp;
      std::fill(out, out + lay.pad, T(0));
      std::memcpy(out + lay.pad, src + r * g.w, sizeof(T) * g.w);
      std::fill(out + lay.pad + g.w, out + lay.wp, T(0));
    }
  });
}

// Per-column softmax statistics: lse_q = m + log(sum_win exp(l - m) +
// zeros * exp(-m)), m = max(max_win l, 0 if zeros > 0); b_q = exp(-lse_q) if
// the column has zeros, else 0. With softmax off both are 0. One task per
// map row; each window cell is one contiguous (shifted) logit row.
template <typename T>
void ColumnStats(const Geometry& g, const T* a, int psa_type, bool softmax,
                 T* lse, T* zero_w) {
  const int64_t plane = g.h * g.w, cells = g.mh * g.mw;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  ParallelFor(g.n * g.h, g.n * plane * cells, [&](int64_t t) {
    const int64_t n = t / g.h, h = t % g.h;
    T* lse_row = lse + n * plane + h * g.w;
    T* zw_row = zero_w + n * plane + h * g.w;
    if (!softmax) {
      std::fill(lse_row, lse_row + g.w, T(0));
      std::fill(zw_row, zw_row + g.w, T(0));
      return;
    }
    T* m = Scratch<T>(2 * g.w);
    T* z = m + g.w;
    const Walk any = psa_attention::make_walk(g, reverse, h, 0);
    int64_t j0, j1;
    psa_attention::cell_union(reverse, 0, g.w, g.hw, g.mw, g.w, &j0, &j1);
    auto zeros_at = [&](int64_t w) {
      const Walk k = psa_attention::make_walk(g, reverse, h, w);
      return plane - psa_attention::walk_count(k);
    };
    for (int64_t w = 0; w < g.w; ++w) {
      m[w] = zeros_at(w) > 0 ? T(0) : -std::numeric_limits<T>::infinity();
    }
    // The logit of cell (i, j) sits at the column (collect) or at the
    // source partner (distribute): row `at` of plane k, shifted by `ax`.
    auto logit_row = [&](int64_t i, int64_t j, int64_t* lo, int64_t* hi) {
      const int64_t sy = psa_attention::cell_shift(reverse, i, g.hh);
      const int64_t sx = psa_attention::cell_shift(reverse, j, g.hw);
      psa_attention::shift_span(sx, g.w, lo, hi);
      const int64_t at = reverse ? h + sy : h, ax = reverse ? sx : 0;
      return a + psa_attention::logit_offset(g, n, i, j, at * g.w) + ax;
    };
    for (int64_t i = any.i0; i < any.i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        int64_t lo, hi;
        const T* l = logit_row(i, j, &lo, &hi);
        for (int64_t w = lo; w < hi; ++w) m[w] = std::max(m[w], l[w]);
      }
    }
    for (int64_t w = 0; w < g.w; ++w) {
      const int64_t zeros = zeros_at(w);
      z[w] = zeros > 0 ? static_cast<T>(zeros) * std::exp(-m[w]) : T(0);
    }
    for (int64_t i = any.i0; i < any.i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        int64_t lo, hi;
        const T* l = logit_row(i, j, &lo, &hi);
        for (int64_t w = lo; w < hi; ++w) z[w] += std::exp(l[w] - m[w]);
      }
    }
    for (int64_t w = 0; w < g.w; ++w) {
      const T l = m[w] + std::log(z[w]);
      lse_row[w] = l;
      zw_row[w] = zeros_at(w) > 0 ? std::exp(-l) : T(0);
    }
  });
}

// Everything a gather needs. dst[n, c, u] = scale(u) * base[n, c] +
// sum over the walk's cells of coef_k(u) * src[n, c, u + shift_k], with
//   coef_k(u) = exp(a[k, at] - lse[col]) - b[col] (softmax) or a[k, at],
//   at = u + shift_k if logit_at_partner else u,
//   col = u + shift_k if column_is_partner else u.
// Forward: u = column q, src = x, its own walk. Backward to x: u = row r,
// src = grad of out, the other walk (README.md).
template <typename T>
struct GatherArgs {
  Geometry g;
  int64_t c;
  bool softmax;
  bool reverse;
  bool logit_at_partner;
  bool column_is_partner;
  const T* a;           // [N, mh*mw, H, W]
  const T* lse;         // [N, H, W]
  const T* zero_w;      // [N, H, W]
  const T* src;         // padded [N*C][H][wp]
  Padded lay;
  const T* base;        // [N, C]
  const T* base_scale;  // [N, H, W] or null (= 1)
  T* dst;               // [N, C, H, W]
};

// Accumulates, for channels [c0, c0 + CB) and one tile of kVecs vectors at
// chunk offset t, the nj cells of window row i into acc_buf ([C][chunk]).
template <typename T, int CB>
PSA_ALWAYS_INLINE void GatherTile(const T* coef, int64_t nj, int64_t chunk,
                                  const T* const* rows, int64_t step,
                                  T* acc_buf, bool first, const T* init_scale,
                                  const T* base, int64_t t) {
  typedef typename Simd<T>::V V;
  constexpr int64_t lanes = Simd<T>::kLanes;
  V acc[CB][kVecs];
  for (int cc = 0; cc < CB; ++cc) {
    for (int v = 0; v < kVecs; ++v) {
      acc[cc][v] = first ? base[cc] * Load(init_scale + t + v * lanes)
                         : Load(acc_buf + cc * chunk + t + v * lanes);
    }
  }
  const T* cf = coef + t;
  for (int64_t jj = 0; jj < nj; ++jj, cf += chunk) {
    V wv[kVecs];
    for (int v = 0; v < kVecs; ++v) wv[v] = Load(cf + v * lanes);
    const int64_t shift = jj * step + t;
    for (int cc = 0; cc < CB; ++cc) {
      const T* s = rows[cc] + shift;
      for (int v = 0; v < kVecs; ++v) acc[cc][v] += wv[v] * Load(s + v * lanes);
    }
  }
  for (int cc = 0; cc < CB; ++cc) {
    for (int v = 0; v < kVecs; ++v) Store(acc_buf + cc * chunk + t + v * lanes, acc[cc][v]);
  }
}

template <typename T, int CB>
PSA_ALWAYS_INLINE void GatherChannels(const GatherArgs<T>& ar, int64_t n,
                                      int64_t c0, int64_t srow, int64_t col0,
                                      const T* coef, int64_t nj, int64_t step,
                                      int64_t chunk, T* acc_buf, bool first,
                                      const T* init_scale) {
  const Geometry& g = ar.g;
  const T* rows[CB];
  T base[CB];
  for (int cc = 0; cc < CB; ++cc) {
    rows[cc] = ar.src + ((n * ar.c + c0 + cc) * g.h + srow) * ar.lay.wp + col0;
    base[cc] = ar.base[n * ar.c + c0 + cc];
  }
  for (int64_t t = 0; t < chunk; t += TileWidth<T>()) {
    GatherTile<T, CB>(coef, nj, chunk, rows, step, acc_buf + c0 * chunk, first,
                      init_scale, base, t);
  }
}

// One task: row h of image n, positions [w0, w0 + chunk) (chunk whole tiles;
// those past W are computed and dropped).
template <typename T>
PSA_ALWAYS_INLINE void GatherTaskBody(const GatherArgs<T>& ar, int64_t n,
                                      int64_t h, int64_t w0, int64_t chunk) {
  const Geometry& g = ar.g;
  const int64_t plane = g.h * g.w, cells = g.mh * g.mw;
  const int64_t wend = std::min(g.w, w0 + chunk);
  int64_t i0, i1, j0, j1;
  {
    const Walk k = psa_attention::make_walk(g, ar.reverse, h, w0);
    i0 = k.i0;
    i1 = k.i1;
    psa_attention::cell_union(ar.reverse, w0, wend, g.hw, g.mw, g.w, &j0, &j1);
  }
  const int64_t nj = j1 - j0;
  T* coef = Scratch<T>(nj * chunk + chunk + ar.c * chunk);
  T* init_scale = coef + nj * chunk;
  T* acc_buf = init_scale + chunk;
  for (int64_t w = 0; w < chunk; ++w) {
    init_scale[w] = w0 + w < g.w && ar.base_scale != nullptr
                        ? ar.base_scale[n * plane + h * g.w + w0 + w]
                        : T(w0 + w < g.w ? 1 : 0);
  }
  const T* lse = ar.lse + n * plane;
  const T* zw = ar.zero_w + n * plane;
  const int64_t step = ar.reverse ? -1 : 1;
  bool first = true;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t sy = psa_attention::cell_shift(ar.reverse, i, g.hh);
    // Weights of the nj cells of this window row over the chunk; 0 where
    // the partner is off the map.
    for (int64_t jj = 0; jj < nj; ++jj) {
      const int64_t j = j0 + jj;
      const int64_t sx = psa_attention::cell_shift(ar.reverse, j, g.hw);
      int64_t lo, hi;
      psa_attention::shift_span(sx, g.w, &lo, &hi);
      lo = std::max(lo, w0);
      hi = std::min(hi, wend);
      T* cf = coef + jj * chunk - w0;
      std::fill(coef + jj * chunk, coef + (jj + 1) * chunk, T(0));
      const T* l = ar.a + psa_attention::logit_offset(
                              g, n, i, j,
                              ar.logit_at_partner ? (h + sy) * g.w + sx : h * g.w);
      if (!ar.softmax) {
        for (int64_t w = lo; w < hi; ++w) cf[w] = l[w];
        continue;
      }
      const int64_t col = ar.column_is_partner ? (h + sy) * g.w + sx : h * g.w;
      const T* ls = lse + col;
      const T* bz = zw + col;
      for (int64_t w = lo; w < hi; ++w) cf[w] = std::exp(l[w] - ls[w]) - bz[w];
    }
    const int64_t col0 =
        ar.lay.pad + w0 + psa_attention::cell_shift(ar.reverse, j0, g.hw);
    int64_t c0 = 0;
    for (; c0 + kGatherChannels <= ar.c; c0 += kGatherChannels) {
      GatherChannels<T, kGatherChannels>(ar, n, c0, h + sy, col0, coef, nj,
                                         step, chunk, acc_buf, first, init_scale);
    }
    for (; c0 < ar.c; ++c0) {
      GatherChannels<T, 1>(ar, n, c0, h + sy, col0, coef, nj, step, chunk,
                           acc_buf, first, init_scale);
    }
    first = false;
  }
  for (int64_t c = 0; c < ar.c; ++c) {
    T* out = ar.dst + (n * ar.c + c) * plane + h * g.w;
    const T* acc = acc_buf + c * chunk;
    for (int64_t w = w0; w < wend; ++w) {
      out[w] = first ? init_scale[w - w0] * ar.base[n * ar.c + c] : acc[w - w0];
    }
  }
  (void)cells;
}

template <typename T>
PSA_TARGET_AVX2 void GatherTaskAvx2(const GatherArgs<T>& ar, int64_t n,
                                    int64_t h, int64_t w0, int64_t chunk) {
  GatherTaskBody(ar, n, h, w0, chunk);
}

template <typename T>
void GatherTaskPortable(const GatherArgs<T>& ar, int64_t n, int64_t h,
                        int64_t w0, int64_t chunk) {
  GatherTaskBody(ar, n, h, w0, chunk);
}

// Positions per task along a row: whole tiles, at most kChunk.
template <typename T>
int64_t ChunkWidth(const Padded& lay) {
  const int64_t tile = TileWidth<T>();
  return std::min(lay.wr, std::max(tile, kChunk / tile * tile));
}

// Runs one task per (image, row, chunk of positions) of a kernel's arguments
// `ar` (fields g, c, lay), the AVX2 or the portable build of the task chosen
// once: task(avx2, n, h, w0, width).
template <typename T, typename Args, typename Task>
void ForEachRowChunk(const Args& ar, Task task) {
  const Geometry& g = ar.g;
  const int64_t chunk = ChunkWidth<T>(ar.lay);
  const int64_t chunks = (ar.lay.wr + chunk - 1) / chunk;
  const bool avx2 = UseAvx2();
  ParallelFor(g.n * g.h * chunks, g.n * g.h * g.w * ar.c, [&](int64_t t) {
    const int64_t ch = t % chunks, h = (t / chunks) % g.h, n = t / (chunks * g.h);
    const int64_t w0 = ch * chunk;
    task(avx2, n, h, w0, std::min(chunk, ar.lay.wr - w0));
  });
}

template <typename T>
void Gather(const GatherArgs<T>& ar) {
  ForEachRowChunk<T>(ar, [&](bool avx2, int64_t n, int64_t h, int64_t w0, int64_t width) {
    if (avx2) {
      GatherTaskAvx2(ar, n, h, w0, width);
    } else {
      GatherTaskPortable(ar, n, h, w0, width);
    }
  });
}

// Gradient of the logits. Logit a[k, p] feeds one entry, (row, column) =
// collect (p + off_k, p), distribute (p, p + off_k); with dot_k(p) =
// sum_c fixed[c, p] * moving[c, p + off_k] (collect: fixed = grad of out,
// moving = x; distribute: fixed = x, moving = grad of out),
//   da = exp(a - lse[col]) (dot - D[col]) (softmax) or dot,
// and an explicit 0 where p + off_k is off the map.
template <typename T>
struct LogitGradArgs {
  Geometry g;
  int64_t c;
  bool softmax;
  bool collect;
  const T* a;
  const T* lse;
  const T* col_dot;  // D [N, H, W]
  const T* fixed;    // padded [N*C][H][wp]
  const T* moving;   // padded [N*C][H][wp]
  Padded lay;
  T* da;             // [N, mh*mw, H, W]
};

// dots[jj][t..] += sum over channels [c0, c1) for cells jj0 .. jj0 + CELLS of
// one tile.
template <typename T, int CELLS>
PSA_ALWAYS_INLINE void DotTile(const LogitGradArgs<T>& ar, int64_t n,
                               int64_t c0, int64_t c1, int64_t h, int64_t sy,
                               int64_t col_f, int64_t col_m, T* dots,
                               int64_t chunk) {
  typedef typename Simd<T>::V V;
  constexpr int64_t lanes = Simd<T>::kLanes;
  const Geometry& g = ar.g;
  V acc[CELLS][kVecs];
  for (int e = 0; e < CELLS; ++e)
    for (int v = 0; v < kVecs; ++v) acc[e][v] = Load(dots + e * chunk + v * lanes);
  const int64_t stride = g.h * ar.lay.wp;
  const T* f = ar.fixed + ((n * ar.c + c0) * g.h + h) * ar.lay.wp + col_f;
  const T* m = ar.moving + ((n * ar.c + c0) * g.h + h + sy) * ar.lay.wp + col_m;
  for (int64_t c = c0; c < c1; ++c, f += stride, m += stride) {
    V fv[kVecs];
    for (int v = 0; v < kVecs; ++v) fv[v] = Load(f + v * lanes);
    for (int e = 0; e < CELLS; ++e) {
      for (int v = 0; v < kVecs; ++v) acc[e][v] += fv[v] * Load(m + e + v * lanes);
    }
  }
  for (int e = 0; e < CELLS; ++e)
    for (int v = 0; v < kVecs; ++v) Store(dots + e * chunk + v * lanes, acc[e][v]);
}

template <typename T>
PSA_ALWAYS_INLINE void LogitGradTaskBody(const LogitGradArgs<T>& ar, int64_t n,
                                         int64_t h, int64_t w0,
                                         int64_t chunk) {
  const Geometry& g = ar.g;
  const int64_t plane = g.h * g.w;
  const int64_t wend = std::min(g.w, w0 + chunk);
  const Walk k = psa_attention::make_walk(g, false, h, w0);
  int64_t j0, j1;
  psa_attention::cell_union(false, w0, wend, g.hw, g.mw, g.w, &j0, &j1);
  const int64_t nj = j1 - j0;
  T* dots = Scratch<T>(nj * chunk);
  const T* lse = ar.lse + n * plane;
  const T* dcol = ar.col_dot + n * plane;
  const int64_t tile = TileWidth<T>();
  for (int64_t i = 0; i < g.mh; ++i) {
    if (i < k.i0 || i >= k.i1) {  // partner row off the map: every cell unused
      for (int64_t j = 0; j < g.mw; ++j) {
        T* out = ar.da + psa_attention::logit_offset(g, n, i, j, h * g.w);
        std::fill(out + w0, out + wend, T(0));
      }
      continue;
    }
    const int64_t sy = i - g.hh;
    std::fill(dots, dots + nj * chunk, T(0));
    for (int64_t c0 = 0; c0 < ar.c; c0 += kDotChannelBlock) {
      const int64_t c1 = std::min(ar.c, c0 + kDotChannelBlock);
      for (int64_t t = 0; t < chunk; t += tile) {
        const int64_t col_f = ar.lay.pad + w0 + t;
        int64_t jj = 0;
        for (; jj + kDotCells <= nj; jj += kDotCells) {
          DotTile<T, kDotCells>(ar, n, c0, c1, h, sy, col_f,
                                col_f + j0 + jj - g.hw, dots + jj * chunk + t, chunk);
        }
        for (; jj < nj; ++jj) {
          DotTile<T, 1>(ar, n, c0, c1, h, sy, col_f, col_f + j0 + jj - g.hw,
                        dots + jj * chunk + t, chunk);
        }
      }
    }
    for (int64_t j = 0; j < g.mw; ++j) {
      T* out = ar.da + psa_attention::logit_offset(g, n, i, j, h * g.w);
      if (j < j0 || j >= j1) {
        std::fill(out + w0, out + wend, T(0));
        continue;
      }
      const int64_t sx = j - g.hw;
      int64_t lo, hi;
      psa_attention::shift_span(sx, g.w, &lo, &hi);
      lo = std::max(lo, w0);
      hi = std::max(std::min(hi, wend), lo);
      const T* dot = dots + (j - j0) * chunk - w0;
      std::fill(out + w0, out + lo, T(0));
      std::fill(out + hi, out + wend, T(0));
      if (!ar.softmax) {
        for (int64_t w = lo; w < hi; ++w) out[w] = dot[w];
        continue;
      }
      const T* l = ar.a + psa_attention::logit_offset(g, n, i, j, h * g.w);
      const int64_t col = ar.collect ? h * g.w : (h + sy) * g.w + sx;
      const T* ls = lse + col;
      const T* dc = dcol + col;
      for (int64_t w = lo; w < hi; ++w) {
        out[w] = std::exp(l[w] - ls[w]) * (dot[w] - dc[w]);
      }
    }
  }
}

template <typename T>
PSA_TARGET_AVX2 void LogitGradTaskAvx2(const LogitGradArgs<T>& ar, int64_t n,
                                       int64_t h, int64_t w0, int64_t chunk) {
  LogitGradTaskBody(ar, n, h, w0, chunk);
}

template <typename T>
void LogitGradTaskPortable(const LogitGradArgs<T>& ar, int64_t n, int64_t h,
                           int64_t w0, int64_t chunk) {
  LogitGradTaskBody(ar, n, h, w0, chunk);
}

template <typename T>
void LogitGrad(const LogitGradArgs<T>& ar) {
  ForEachRowChunk<T>(ar, [&](bool avx2, int64_t n, int64_t h, int64_t w0, int64_t width) {
    if (avx2) {
      LogitGradTaskAvx2(ar, n, h, w0, width);
    } else {
      LogitGradTaskPortable(ar, n, h, w0, width);
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

// Forward: out (not divided by the normalization factor) and lse.
template <typename T>
void ForwardCpu(const T* x, const T* a, T* out, T* lse, const Geometry& g,
                int64_t c, int psa_type, bool softmax) {
  const int64_t plane = g.h * g.w;
  const Padded lay = MakePadded<T>(g);
  std::vector<T> zero_w(g.n * plane), sums(g.n * c);
  std::vector<T> xp(g.n * c * g.h * lay.wp);
  ColumnStats(g, a, psa_type, softmax, lse, zero_w.data());
  PadRows(x, xp.data(), g.n * c, g, lay);
  ChannelSums(x, sums.data(), g.n, c, plane);
  // u = column q: its own walk, logits at the source (distribute), lse/b of
  // q itself.
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  GatherArgs<T> ar{g,     c,          softmax, reverse,     reverse,
                   false, a,          lse,     zero_w.data(), xp.data(),
                   lay,   sums.data(), zero_w.data(), out};
  Gather(ar);
}

// Backward: dx (to x, including 1/norm's absence: the Python face scales)
// and da (to the logits).
template <typename T>
void BackwardCpu(const T* x, const T* a, const T* out, const T* lse,
                 const T* dout, T* dx, T* da, const Geometry& g, int64_t c,
                 int psa_type, bool softmax) {
  const int64_t plane = g.h * g.w;
  const bool reverse = psa_attention::column_walk_is_reverse(psa_type);
  const Padded lay = MakePadded<T>(g);
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
  std::vector<T> gp(g.n * c * g.h * lay.wp);
  PadRows(dout, gp.data(), g.n * c, g, lay);
  // u = row r: the other walk finds the columns r belongs to; the logit sits
  // at the source position (the row for distribute, the column for collect).
  GatherArgs<T> ar{g,    c,           softmax, !reverse,      !reverse,
                   true, a,           lse,     zero_w.data(), gp.data(),
                   lay,  base.data(), nullptr, dx};
  Gather(ar);
  std::vector<T> xp(g.n * c * g.h * lay.wp);
  PadRows(x, xp.data(), g.n * c, g, lay);
  const bool collect = psa_type == kCollect;
  LogitGradArgs<T> lg{g,   c,   softmax,        collect,
                      a,   lse, col_dot.data(), collect ? gp.data() : xp.data(),
                      collect ? xp.data() : gp.data(), lay, da};
  LogitGrad(lg);
}

}  // namespace psa_attention_cpu

#endif  // PSA_ATTENTION_CPU_H_
