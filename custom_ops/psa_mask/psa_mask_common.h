// Index arithmetic of the PSA mask operator, shared by the CPU (.cc) and CUDA
// (.cu) kernels so that the CPU tests exercise exactly the arithmetic the GPU
// kernels run.
//
// PSANet: Point-wise Spatial Attention Network for Scene Parsing
// (Zhao et al., ECCV 2018, https://hszhao.github.io/papers/eccv18_psanet.pdf).
//
// Layout: x is [N, mh*mw, H, W]; y is [N, H*W, H, W]. For position (h, w) and
// mask cell (i, j) the target is (h + i - hh, w + j - hw) with
// hh = (mh - 1) / 2, hw = (mw - 1) / 2; a cell is used only if its target lies
// inside the H x W map.
//   collect    (0): y[n, th*W + tw, h, w] = x[n, i*mw + j, h, w]
//   distribute (1): y[n, h*W + w, th, tw] = x[n, i*mw + j, h, w]
// Each x entry reaches at most one y entry, so the backward pass is the same
// mapping read the other way (a gather: no atomics, deterministic).
//
// This header only needs <cstdint>; it compiles under g++ and nvcc alike.
// All offsets are int64_t: N * (H*W)^2 passes 2^31 at PSANet sizes.
#ifndef PSA_MASK_COMMON_H_
#define PSA_MASK_COMMON_H_

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PSA_HOST_DEVICE __host__ __device__
#else
#define PSA_HOST_DEVICE
#endif
#define PSA_INLINE PSA_HOST_DEVICE inline

namespace psa_mask {

enum PsaType : int { kCollect = 0, kDistribute = 1 };

// Sizes of one problem; every field is 64-bit so products never overflow.
struct Geometry {
  int64_t n;   // batch
  int64_t h;   // map height H
  int64_t w;   // map width W
  int64_t mh;  // mask height
  int64_t mw;  // mask width
  int64_t hh;  // (mh - 1) / 2: cells above the centre (even masks: lopsided)
  int64_t hw;  // (mw - 1) / 2: cells left of the centre
};

// Offset from a position to the window centre. mask >= 1, so the truncating
// division equals floor division here.
PSA_INLINE int64_t half_window(int64_t mask) { return (mask - 1) / 2; }

PSA_INLINE Geometry make_geometry(int64_t n, int64_t h, int64_t w, int64_t mh,
                                  int64_t mw) {
  Geometry g;
  g.n = n;
  g.h = h;
  g.w = w;
  g.mh = mh;
  g.mw = mw;
  g.hh = half_window(mh);
  g.hw = half_window(mw);
  return g;
}

PSA_INLINE int64_t plane(const Geometry& g) { return g.h * g.w; }
PSA_INLINE int64_t x_numel(const Geometry& g) {
  return g.n * g.mh * g.mw * g.h * g.w;
}
PSA_INLINE int64_t y_numel(const Geometry& g) {
  return g.n * plane(g) * plane(g);
}

// One axis: target coordinate of mask cell `cell` seen from position `pos`.
PSA_INLINE int64_t target(int64_t pos, int64_t cell, int64_t half) {
  return pos + cell - half;
}

// One axis: inverse of target(): the cell that maps `pos` onto `tgt`.
PSA_INLINE int64_t cell_of(int64_t tgt, int64_t pos, int64_t half) {
  return tgt - pos + half;
}

PSA_INLINE bool inside(int64_t t, int64_t extent) {
  return t >= 0 && t < extent;
}

PSA_INLINE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
PSA_INLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// One axis: the cells [*lo, *hi) of a mask of size `mask` whose target from
// `pos` lies in [0, extent). Empty (hi <= lo) when the mask is entirely off
// the map.
PSA_INLINE void cell_range(int64_t pos, int64_t half, int64_t mask,
                           int64_t extent, int64_t* lo, int64_t* hi) {
  // pos + cell - half in [0, extent)
  //   <=>  cell in [half - pos, extent + half - pos)
  *lo = max64(half - pos, 0);
  *hi = min64(extent + half - pos, mask);
}

// One axis: the positions [*lo, *hi) in [0, extent) whose cell `cell` lands
// inside the map (the same inequality solved for pos instead of cell).
PSA_INLINE void pos_range_for_cell(int64_t cell, int64_t half, int64_t extent,
                                   int64_t* lo, int64_t* hi) {
  *lo = max64(half - cell, 0);
  *hi = min64(extent + half - cell, extent);
}

// One axis: the positions [*lo, *hi) in [0, extent) that reach target `tgt`
// with some cell of a mask of size `mask` (cell_of(tgt, pos) in [0, mask)).
PSA_INLINE void pos_range_for_target(int64_t tgt, int64_t half, int64_t mask,
                                     int64_t extent, int64_t* lo,
                                     int64_t* hi) {
  // tgt - pos + half in [0, mask)  <=>  pos in (tgt + half - mask, tgt + half]
  *lo = max64(tgt + half - mask + 1, 0);
  *hi = min64(tgt + half + 1, extent);
}

// Flat offset of x[n, i*mw + j, h, w].
PSA_INLINE int64_t x_offset(const Geometry& g, int64_t n, int64_t i, int64_t j,
                            int64_t h, int64_t w) {
  return ((n * g.mh * g.mw + i * g.mw + j) * g.h + h) * g.w + w;
}

// Flat offset of the y entry fed by position (h, w) with target (th, tw).
PSA_INLINE int64_t y_offset(const Geometry& g, int psa_type, int64_t n,
                            int64_t h, int64_t w, int64_t th, int64_t tw) {
  const int64_t hw_plane = plane(g);
  if (psa_type == kCollect) {
    return (n * hw_plane + th * g.w + tw) * hw_plane + h * g.w + w;
  }
  return (n * hw_plane + h * g.w + w) * hw_plane + th * g.w + tw;
}

// Full per-element mapping: flat x offset -> flat y offset, or -1 when the
// cell's target falls outside the map (the entry is unused). This is what the
// one-thread-per-element CUDA kernels evaluate.
PSA_INLINE int64_t map_x_to_y(const Geometry& g, int psa_type,
                              int64_t x_index) {
  int64_t rest = x_index;
  const int64_t w = rest % g.w;
  rest /= g.w;
  const int64_t h = rest % g.h;
  rest /= g.h;
  const int64_t k = rest % (g.mh * g.mw);
  const int64_t n = rest / (g.mh * g.mw);
  const int64_t i = k / g.mw;
  const int64_t j = k % g.mw;
  const int64_t th = target(h, i, g.hh);
  const int64_t tw = target(w, j, g.hw);
  if (!inside(th, g.h) || !inside(tw, g.w)) return -1;
  return y_offset(g, psa_type, n, h, w, th, tw);
}

}  // namespace psa_mask

#endif  // PSA_MASK_COMMON_H_
