// Tile geometry and CPU transforms of Winograd F(2x2, 3x3) for 3x3 convolutions
// with stride 1, dilation d and zero padding d ("same" size).
//
// Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016
// (https://arxiv.org/abs/1509.09308):
//   Y = A^T [(G g G^T) . (B^T D B)] A
// per 4x4 input tile D and 2x2 output tile Y, with
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1].
// With dilation d a tile pairs outputs (y, y + d) and (x, x + d) and reads the
// inputs y + (i - 1) d, x + (j - 1) d for i, j in 0..3 (zero outside the image).
// Tile row r starts at output row (r / d) * 2d + r % d: blocks of 2d rows hold d
// tile rows each; the last, partial block holds min(H % 2d, d). Tiles partition
// the output, so every output is written once; an output past the border (the
// partner of a last-row origin) is skipped.
//
// Layouts: V and M are [16, C, T] (k = 4 i + j, then channel, then tile
// t = (n * tile_rows + r) * tile_cols + c), so the 16 products are one batched
// GEMM M[k] = U[k] V[k] with U [16, C_out, C_in]. The four functions below are
// the two linear maps and their adjoints (the backward of each is the other's
// adjoint, written out, not differentiated).
#ifndef PADDLESEG_EXT_WINOGRAD_TILES_H_
#define PADDLESEG_EXT_WINOGRAD_TILES_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu_parallel.h"

namespace winograd {

// Tile rows (or columns) of an axis of `size` outputs with dilation d.
inline int64_t TileCount(int64_t size, int64_t d) {
  return (size / (2 * d)) * d + std::min(size % (2 * d), d);
}

// First output row (or column) of tile row (or column) `index`.
inline int64_t TileOrigin(int64_t index, int64_t d) {
  return (index / d) * 2 * d + index % d;
}

struct Geometry {
  int64_t n, c, h, w, d;
  int64_t tile_rows, tile_cols, tiles;  // tiles = n * tile_rows * tile_cols
};

inline Geometry MakeGeometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t d) {
  Geometry g{n, c, h, w, d, TileCount(h, d), TileCount(w, d), 0};
  g.tiles = n * g.tile_rows * g.tile_cols;
  return g;
}

// V = B^T D B of every tile. x: [N, C, H, W]; v: [16, C, T].
template <typename T>
void InputTransform(const T* x, T* v, const Geometry& g) {
  const int64_t d = g.d, pw = g.w + 3 * d;  // padded row: column p is x = p - d
  const int64_t kstride = g.c * g.tiles;
  paddleseg_ext_cpu::ParallelFor(g.n * g.c, 16 * g.c * g.tiles, [&](int64_t task) {
    const int64_t n = task / g.c, ch = task % g.c;
    const T* plane = x + task * g.h * g.w;
    T* rows = paddleseg_ext_cpu::Scratch<T>(4 * pw);
    for (int k = 0; k < 4; ++k) {  // the zero columns of the padding
      std::fill(rows + k * pw, rows + k * pw + d, T(0));
      std::fill(rows + k * pw + d + g.w, rows + (k + 1) * pw, T(0));
    }
    for (int64_t r = 0; r < g.tile_rows; ++r) {
      const int64_t y0 = TileOrigin(r, d);
      const T* in[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t y = y0 + (i - 1) * d;
        in[i] = (y >= 0 && y < g.h) ? plane + y * g.w : nullptr;
      }
      // Columns first: rows k = (B^T D)[k, :] over the whole padded width.
      T* r0 = rows + d;
      T* r1 = r0 + pw;
      T* r2 = r1 + pw;
      T* r3 = r2 + pw;
      for (int64_t xx = 0; xx < g.w; ++xx) {
        const T d0 = in[0] ? in[0][xx] : T(0), d1 = in[1] ? in[1][xx] : T(0);
        const T d2 = in[2] ? in[2][xx] : T(0), d3 = in[3] ? in[3][xx] : T(0);
        r0[xx] = d0 - d2;
        r1[xx] = d1 + d2;
        r2[xx] = d2 - d1;
        r3[xx] = d1 - d3;
      }
      // Then rows: V[4k + j] for every tile of the row, one output stream at a time.
      T* out = v + ch * g.tiles + (n * g.tile_rows + r) * g.tile_cols;
      for (int k = 0; k < 4; ++k) {
        const T* row = rows + k * pw;
        T* o0 = out + (4 * k) * kstride;
        T* o1 = o0 + kstride;
        T* o2 = o1 + kstride;
        T* o3 = o2 + kstride;
        for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
          const T* q = row + TileOrigin(tc, d);  // padded column of x0 - d
          const T a = q[0], b = q[d], c = q[2 * d], e = q[3 * d];
          o0[tc] = a - c;
          o1[tc] = b + c;
          o2[tc] = c - b;
          o3[tc] = b - e;
        }
      }
    }
  });
}

// Adjoint of InputTransform: dx = sum over tiles of B dV B^T, scattered back
// onto the inputs each tile read (padding dropped). dv: [16, C, T]; dx: [N, C,
// H, W], every element written (zero where no tile reads it).
template <typename T>
void InputTransformAdjoint(const T* dv, T* dx, const Geometry& g) {
  const int64_t d = g.d, pw = g.w + 3 * d, ph = g.h + 3 * d;
  const int64_t kstride = g.c * g.tiles;
  paddleseg_ext_cpu::ParallelFor(g.n * g.c, 16 * g.c * g.tiles, [&](int64_t task) {
    const int64_t n = task / g.c, ch = task % g.c;
    T* acc = paddleseg_ext_cpu::Scratch<T>(ph * pw);  // padded plane: (y + d, x + d)
    std::fill(acc, acc + ph * pw, T(0));
    for (int64_t r = 0; r < g.tile_rows; ++r) {
      const int64_t y0 = TileOrigin(r, d);
      const T* in = dv + ch * g.tiles + (n * g.tile_rows + r) * g.tile_cols;
      T* a[4];
      for (int i = 0; i < 4; ++i) a[i] = acc + (y0 + i * d) * pw;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        const int64_t p = TileOrigin(tc, d);
        T h[4][4];  // h[k][j] = sum_l B^T[l][j] dV[k][l]
        for (int k = 0; k < 4; ++k) {
          const T* q = in + (4 * k) * kstride + tc;
          const T g0 = q[0], g1 = q[kstride], g2 = q[2 * kstride], g3 = q[3 * kstride];
          h[k][0] = g0;
          h[k][1] = g1 - g2 + g3;
          h[k][2] = g1 + g2 - g0;
          h[k][3] = -g3;
        }
        for (int j = 0; j < 4; ++j) {
          const int64_t col = p + j * d;
          a[0][col] += h[0][j];
          a[1][col] += h[1][j] - h[2][j] + h[3][j];
          a[2][col] += h[1][j] + h[2][j] - h[0][j];
          a[3][col] -= h[3][j];
        }
      }
    }
    T* plane = dx + task * g.h * g.w;
    for (int64_t y = 0; y < g.h; ++y) {
      std::memcpy(plane + y * g.w, acc + (y + d) * pw + d, sizeof(T) * g.w);
    }
  });
}

// Y = A^T M A of every tile. m: [16, C, T] (C output channels); y: [N, C, H, W].
template <typename T>
void OutputTransform(const T* m, T* y, const Geometry& g) {
  const int64_t d = g.d, kstride = g.c * g.tiles;
  paddleseg_ext_cpu::ParallelFor(g.n * g.c, 16 * g.c * g.tiles, [&](int64_t task) {
    const int64_t n = task / g.c, ch = task % g.c;
    T* plane = y + task * g.h * g.w;
    for (int64_t r = 0; r < g.tile_rows; ++r) {
      const int64_t y0 = TileOrigin(r, d);
      const bool second_row = y0 + d < g.h;
      const T* in = m + ch * g.tiles + (n * g.tile_rows + r) * g.tile_cols;
      T* row0 = plane + y0 * g.w;
      T* row1 = row0 + d * g.w;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        const int64_t x0 = TileOrigin(tc, d);
        T s0[4], s1[4];  // (A^T M)[a][j]
        for (int j = 0; j < 4; ++j) {
          const T* q = in + j * kstride + tc;
          const T m0 = q[0], m1 = q[4 * kstride], m2 = q[8 * kstride], m3 = q[12 * kstride];
          s0[j] = m0 + m1 + m2;
          s1[j] = m1 - m2 - m3;
        }
        const bool second_col = x0 + d < g.w;
        row0[x0] = s0[0] + s0[1] + s0[2];
        if (second_col) row0[x0 + d] = s0[1] - s0[2] - s0[3];
        if (second_row) {
          row1[x0] = s1[0] + s1[1] + s1[2];
          if (second_col) row1[x0 + d] = s1[1] - s1[2] - s1[3];
        }
      }
    }
  });
}

// Adjoint of OutputTransform: dM = A dY A^T per tile (outputs past the border
// count as 0). dy: [N, C, H, W]; dm: [16, C, T], every element written.
template <typename T>
void OutputTransformAdjoint(const T* dy, T* dm, const Geometry& g) {
  const int64_t d = g.d, kstride = g.c * g.tiles;
  paddleseg_ext_cpu::ParallelFor(g.n * g.c, 16 * g.c * g.tiles, [&](int64_t task) {
    const int64_t n = task / g.c, ch = task % g.c;
    const T* plane = dy + task * g.h * g.w;
    for (int64_t r = 0; r < g.tile_rows; ++r) {
      const int64_t y0 = TileOrigin(r, d);
      const bool second_row = y0 + d < g.h;
      T* out = dm + ch * g.tiles + (n * g.tile_rows + r) * g.tile_cols;
      const T* row0 = plane + y0 * g.w;
      const T* row1 = row0 + d * g.w;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        const int64_t x0 = TileOrigin(tc, d);
        const bool second_col = x0 + d < g.w;
        const T y00 = row0[x0], y01 = second_col ? row0[x0 + d] : T(0);
        const T y10 = second_row ? row1[x0] : T(0);
        const T y11 = (second_row && second_col) ? row1[x0 + d] : T(0);
        // Along j: h[a][j] = sum_b A^T[b][j] dY[a][b]; then the same along i.
        const T h0[4] = {y00, y00 + y01, y00 - y01, -y01};
        const T h1[4] = {y10, y10 + y11, y10 - y11, -y11};
        for (int j = 0; j < 4; ++j) {
          T* q = out + j * kstride + tc;
          q[0] = h0[j];
          q[4 * kstride] = h0[j] + h1[j];
          q[8 * kstride] = h0[j] - h1[j];
          q[12 * kstride] = -h1[j];
        }
      }
    }
  });
}

}  // namespace winograd

#endif  // PADDLESEG_EXT_WINOGRAD_TILES_H_
