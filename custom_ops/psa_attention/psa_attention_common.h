// Window arithmetic of the fused PSA attention operator, shared by the CPU
// (.cc) and CUDA (.cu) kernels. Builds on psa_mask_common.h (the mask op's
// index map), so both ops agree on which mask cell lands where.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// The psa_mask op writes a [P, P] map Y (P = H*W; rows r = source positions,
// columns q = receiving positions). Column q holds the logits of one window
// of mask cells and zeros elsewhere. With off(i, j) = (i - hh, j - hw):
//   collect:    column q holds a[k, q] at row q + off(k)   ("direct" walk:
//               partner = q + off, logit stored at the column itself);
//   distribute: column q holds a[k, p] at row p = q - off(k) ("reverse" walk:
//               partner = q - off, logit stored at the partner).
// Every kernel walks, for one position u, the cells k whose partner lies in
// the map; the walk is a rectangle of cells, so no per-cell bounds checks.
// See README.md for the closed form these walks evaluate.
#ifndef PSA_ATTENTION_COMMON_H_
#define PSA_ATTENTION_COMMON_H_

#include <cstdint>

#include "psa_mask_common.h"

namespace psa_attention {

using psa_mask::Geometry;

// One axis of the reverse walk: cells [*lo, *hi) with pos - cell + half in
// [0, extent) (the source pos - off lies in the map).
PSA_INLINE void reverse_cell_range(int64_t pos, int64_t half, int64_t mask,
                                   int64_t extent, int64_t* lo, int64_t* hi) {
  // pos - cell + half in [0, extent)  <=>  cell in (pos + half - extent, pos + half]
  *lo = psa_mask::max64(pos + half - extent + 1, 0);
  *hi = psa_mask::min64(pos + half + 1, mask);
}

// The rectangle of cells [i0, i1) x [j0, j1) walked from position (h, w).
struct Walk {
  int64_t i0, i1, j0, j1;
};

PSA_INLINE Walk make_walk(const Geometry& g, bool reverse, int64_t h,
                          int64_t w) {
  Walk k;
  if (reverse) {
    reverse_cell_range(h, g.hh, g.mh, g.h, &k.i0, &k.i1);
    reverse_cell_range(w, g.hw, g.mw, g.w, &k.j0, &k.j1);
  } else {
    psa_mask::cell_range(h, g.hh, g.mh, g.h, &k.i0, &k.i1);
    psa_mask::cell_range(w, g.hw, g.mw, g.w, &k.j0, &k.j1);
  }
  if (k.i1 < k.i0) k.i1 = k.i0;
  if (k.j1 < k.j0) k.j1 = k.j0;
  return k;
}

// Number of cells in the walk: the window entries of column (h, w) of Y for
// the walk that enumerates that column (direct for collect, reverse for
// distribute). The column has plane - count out-of-window zeros.
PSA_INLINE int64_t walk_count(const Walk& k) {
  return (k.i1 - k.i0) * (k.j1 - k.j0);
}

// One axis: the partner of a position via cell `cell` is pos + cell_shift
// (direct walk: cell - half; reverse walk: half - cell). For a fixed cell the
// shift is the same at every position, which the CPU kernels use: one cell of
// the window is one shifted row of the map.
PSA_INLINE int64_t cell_shift(bool reverse, int64_t cell, int64_t half) {
  return reverse ? half - cell : cell - half;
}

// One axis: the positions [*lo, *hi) of [0, extent) whose partner
// pos + shift lies in [0, extent) (empty when |shift| >= extent).
PSA_INLINE void shift_span(int64_t shift, int64_t extent, int64_t* lo,
                           int64_t* hi) {
  *lo = psa_mask::max64(-shift, 0);
  *hi = psa_mask::min64(extent - shift, extent);
  if (*hi < *lo) *hi = *lo;
}

// One axis: the cells [*lo, *hi) used by at least one position of
// [p0, p1) (p0 < p1), i.e. the union of that axis of make_walk over the
// positions; contiguous because the per-position ranges slide by one.
PSA_INLINE void cell_union(bool reverse, int64_t p0, int64_t p1, int64_t half,
                           int64_t mask, int64_t extent, int64_t* lo,
                           int64_t* hi) {
  int64_t a0, a1, b0, b1;
  if (reverse) {
    reverse_cell_range(p0, half, mask, extent, &a0, &a1);
    reverse_cell_range(p1 - 1, half, mask, extent, &b0, &b1);
    *lo = a0;
    *hi = b1;
  } else {
    psa_mask::cell_range(p1 - 1, half, mask, extent, &a0, &a1);
    psa_mask::cell_range(p0, half, mask, extent, &b0, &b1);
    *lo = a0;
    *hi = b1;
  }
  if (*hi < *lo) *hi = *lo;
}

// Flat position (within one image) of the partner of (h, w) via cell (i, j).
PSA_INLINE int64_t partner(const Geometry& g, bool reverse, int64_t h,
                           int64_t w, int64_t i, int64_t j) {
  return (h + cell_shift(reverse, i, g.hh)) * g.w +
         (w + cell_shift(reverse, j, g.hw));
}

// The walk that enumerates column q's window: collect direct, distribute
// reverse. The other walk enumerates the columns a row r belongs to.
PSA_INLINE bool column_walk_is_reverse(int psa_type) {
  return psa_type == psa_mask::kDistribute;
}

// Flat offset of a[n, i*mw + j, pos] (pos flat within the image).
PSA_INLINE int64_t logit_offset(const Geometry& g, int64_t n, int64_t i,
                                int64_t j, int64_t pos) {
  return (n * g.mh * g.mw + i * g.mw + j) * (g.h * g.w) + pos;
}

}  // namespace psa_attention

#endif  // PSA_ATTENTION_COMMON_H_
