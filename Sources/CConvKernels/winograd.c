#include "winograd.h"

// Two variants, F(2×2, 3×3) (M = 2: 4×4 windows, 16 positions) and F(4×4, 3×3) (M = 4: 6×6
// windows, 36 positions), from one definition: each is five one-dimensional transforms (below)
// applied to the rows of a tile, then to its columns.

ptrdiff_t stwino_stride(ptrdiff_t floats) { return ((floats + 1023) & ~(ptrdiff_t)1023) + 16; }

/// Inlined everywhere: the vector loops over tiles must see straight-line code to vectorise.
#define INLINE static inline __attribute__((always_inline))

static inline int tiles_along(int n, int m) { return (n + m - 1) / m; }

/// dst[(size·r + q)·stride] = img[h0 + r][w0 + q] for r, q < size, zero outside the image: one
/// tile's window (or dY block) into a [position][tile] block.
INLINE void read_block(const float *img, int height, int width, int h0, int w0, int size, float *dst, int stride) {
    for (int r = 0; r < size; r++)
        for (int q = 0; q < size; q++) {
            const int h = h0 + r, wc = w0 + q;
            dst[(size * r + q) * stride] = h >= 0 && h < height && wc >= 0 && wc < width ? img[(ptrdiff_t)h * width + wc] : 0;
        }
}

// ---- one-dimensional transforms --------------------------------------------------------------
// in:  t = Bᵀ d (window → positions)      kernel: u = G g (3 taps → positions)
// out: y = Aᵀ m (positions → outputs)     out_adjoint: p = A e      kernel_adjoint: g = Gᵀ z

INLINE void in_2(const float d[4], float t[4]) {
    t[0] = d[0] - d[2];
    t[1] = d[1] + d[2];
    t[2] = d[2] - d[1];
    t[3] = d[1] - d[3];
}
INLINE void kernel_2(const float g[3], float u[4]) {
    u[0] = g[0];
    u[1] = 0.5f * (g[0] + g[1] + g[2]);
    u[2] = 0.5f * (g[0] - g[1] + g[2]);
    u[3] = g[2];
}
INLINE void out_2(const float m[4], float y[2]) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
}
INLINE void out_adjoint_2(const float e[2], float p[4]) {
    p[0] = e[0];
    p[1] = e[0] + e[1];
    p[2] = e[0] - e[1];
    p[3] = -e[1];
}
INLINE void kernel_adjoint_2(const float z[4], float g[3]) {
    g[0] = z[0] + 0.5f * (z[1] + z[2]);
    g[1] = 0.5f * (z[1] - z[2]);
    g[2] = 0.5f * (z[1] + z[2]) + z[3];
}

// F(4, 3) at the points 0, ±1, ±2 and ∞.
INLINE void in_4(const float d[6], float t[6]) {
    t[0] = 4 * d[0] - 5 * d[2] + d[4];
    t[1] = -4 * (d[1] + d[2]) + d[3] + d[4];
    t[2] = 4 * (d[1] - d[2]) - d[3] + d[4];
    t[3] = 2 * (d[3] - d[1]) - d[2] + d[4];
    t[4] = 2 * (d[1] - d[3]) - d[2] + d[4];
    t[5] = 4 * d[1] - 5 * d[3] + d[5];
}
INLINE void kernel_4(const float g[3], float u[6]) {
    u[0] = 0.25f * g[0];
    u[1] = (-1.0f / 6) * (g[0] + g[1] + g[2]);
    u[2] = (-1.0f / 6) * (g[0] - g[1] + g[2]);
    u[3] = (1.0f / 24) * g[0] + (1.0f / 12) * g[1] + (1.0f / 6) * g[2];
    u[4] = (1.0f / 24) * g[0] - (1.0f / 12) * g[1] + (1.0f / 6) * g[2];
    u[5] = g[2];
}
INLINE void out_4(const float m[6], float y[4]) {
    const float a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    y[0] = m[0] + a + c;
    y[1] = b + 2 * d;
    y[2] = a + 4 * c;
    y[3] = b + 8 * d + m[5];
}
INLINE void out_adjoint_4(const float e[4], float p[6]) {
    const float even = e[0] + e[2], odd = e[1] + e[3], even4 = e[0] + 4 * e[2], odd8 = 2 * e[1] + 8 * e[3];
    p[0] = e[0];
    p[1] = even + odd;
    p[2] = even - odd;
    p[3] = even4 + odd8;
    p[4] = even4 - odd8;
    p[5] = e[3];
}
INLINE void kernel_adjoint_4(const float z[6], float g[3]) {
    g[0] = 0.25f * z[0] - (1.0f / 6) * (z[1] + z[2]) + (1.0f / 24) * (z[3] + z[4]);
    g[1] = (1.0f / 6) * (z[2] - z[1]) + (1.0f / 12) * (z[3] - z[4]);
    g[2] = (-1.0f / 6) * (z[1] + z[2]) + (1.0f / 6) * (z[3] + z[4]) + z[5];
}

// ---- the two-dimensional passes, once per variant ---------------------------------------------
// Tiles are numbered t = (ty·count + n)·tw + tx: the tiles of one tile row of all images are
// consecutive, so a transform runs over them as one vector loop. The input of wide images
// (tw ≥ 2·M tiles) is walked a tile row of one image at a time through a zero-bordered copy of
// the rows it reads; otherwise, and for dY and the outputs, each tile's window is copied to or
// from a block of BLOCK tiles laid out [position][tile] (C harness, one core, input transform of
// 256 channels × 32 images at 8×8: F(2×2) 1.1 ms by rows, 1.5 by windows; F(4×4) 1.3 / 1.0).

#define VECTORISE _Pragma("clang loop vectorize(enable) interleave(disable)")
#define UNROLL _Pragma("clang loop unroll(full)")
enum { BLOCK = 128 };

#define DEFINE_VARIANT(M)                                                                         \
    enum { R##M = M + 2 };                                                                        \
                                                                                                  \
    /* t = Bᵀ d B for one R×R window d. */                                                        \
    INLINE void window_##M(const float d[R##M][R##M], float t[R##M][R##M]) {                      \
        float e[R##M][R##M], col[R##M], out[R##M];                                                \
        UNROLL for (int r = 0; r < R##M; r++) in_##M(d[r], e[r]);                                 \
        UNROLL for (int b = 0; b < R##M; b++) {                                                   \
            UNROLL for (int r = 0; r < R##M; r++) col[r] = e[r][b];                               \
            in_##M(col, out);                                                                     \
            UNROLL for (int a = 0; a < R##M; a++) t[a][b] = out[a];                               \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* y = Aᵀ m A for one tile's R×R products m. */                                               \
    INLINE void tile_out_##M(const float m[R##M][R##M], float y[M][M]) {                          \
        float f[R##M][M], col[R##M], out[M];                                                      \
        UNROLL for (int a = 0; a < R##M; a++) out_##M(m[a], f[a]);                                \
        UNROLL for (int b = 0; b < M; b++) {                                                      \
            UNROLL for (int a = 0; a < R##M; a++) col[a] = f[a][b];                               \
            out_##M(col, out);                                                                    \
            UNROLL for (int r = 0; r < M; r++) y[r][b] = out[r];                                  \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* p = A e Aᵀ for one tile's M×M block e of dY. */                                            \
    INLINE void tile_adjoint_##M(const float e[M][M], float p[R##M][R##M]) {                      \
        float h[M][R##M], col[M], out[R##M];                                                      \
        UNROLL for (int r = 0; r < M; r++) out_adjoint_##M(e[r], h[r]);                           \
        UNROLL for (int b = 0; b < R##M; b++) {                                                   \
            UNROLL for (int r = 0; r < M; r++) col[r] = h[r][b];                                  \
            out_adjoint_##M(col, out);                                                            \
            UNROLL for (int a = 0; a < R##M; a++) p[a][b] = out[a];                               \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Kernels i0 ≤ i < i0 + n of row o, BLOCK at a time: their taps copied to [tap][i], then     \
       transformed with one vector loop over i. */                                                \
    static void weights_##M(const float *w, int cout, int cin, int flipped, int row0, int row1, float *u) { \
        const int cols = flipped ? cout : cin;                                                    \
        const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin);                             \
        float taps[9][BLOCK];                                                                     \
        for (int o = row0; o < row1; o++)                                                         \
            for (int i0 = 0; i0 < cols; i0 += BLOCK) {                                            \
                const int n = cols - i0 < BLOCK ? cols - i0 : BLOCK;                              \
                for (int i = 0; i < n; i++) {                                                     \
                    const float *g = flipped ? w + ((ptrdiff_t)(i0 + i) * cin + o) * 9            \
                                             : w + ((ptrdiff_t)o * cin + i0 + i) * 9;             \
                    for (int k = 0; k < 9; k++) taps[k][i] = g[flipped ? 8 - k : k];              \
                }                                                                                 \
                float *out = u + (ptrdiff_t)o * cols + i0;                                        \
                VECTORISE for (int i = 0; i < n; i++) {                                           \
                    float t[3][R##M], col[3], v[R##M];                                            \
                    UNROLL for (int a = 0; a < 3; a++) {                                          \
                        const float row[3] = {taps[3 * a][i], taps[3 * a + 1][i], taps[3 * a + 2][i]}; \
                        kernel_##M(row, t[a]);                                                    \
                    }                                                                             \
                    UNROLL for (int b = 0; b < R##M; b++) {                                       \
                        UNROLL for (int a = 0; a < 3; a++) col[a] = t[a][b];                      \
                        kernel_##M(col, v);                                                       \
                        UNROLL for (int a = 0; a < R##M; a++) out[(R##M * a + b) * plane + i] = v[a]; \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void input_##M(const float *x, ptrdiff_t x_channel_stride, int channels, int count,    \
                          int height, int width, float *v) {                                      \
        const int th = tiles_along(height, M), tw = tiles_along(width, M), row_tiles = count * tw; \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        const int span = M * tw + 2;                                                              \
        float rows[R##M][span], win[R##M * R##M][BLOCK];                                          \
        for (int c = 0; c < channels; c++)                                                        \
            for (int ty = 0; ty < th; ty++) {                                                     \
                float *out = v + (ptrdiff_t)c * tiles + (ptrdiff_t)ty * row_tiles;                \
                if (tw >= 2 * M) {                                                                \
                    for (int n = 0; n < count; n++) {                                             \
                        const float *img = x + c * x_channel_stride + (ptrdiff_t)n * height * width; \
                        /* rows[r][j]: input row M·ty - 1 + r, column j - 1 (zero outside). */    \
                        for (int r = 0; r < R##M; r++) {                                          \
                            const int h = M * ty - 1 + r;                                         \
                            for (int j = 0; j < span; j++) rows[r][j] = 0;                        \
                            if (h >= 0 && h < height)                                             \
                                for (int j = 0; j < width; j++) rows[r][j + 1] = img[(ptrdiff_t)h * width + j]; \
                        }                                                                         \
                        float *o = out + (ptrdiff_t)n * tw;                                       \
                        VECTORISE for (int tx = 0; tx < tw; tx++) {                               \
                            float d[R##M][R##M], t[R##M][R##M];                                   \
                            UNROLL for (int r = 0; r < R##M; r++)                                 \
                                UNROLL for (int q = 0; q < R##M; q++) d[r][q] = rows[r][M * tx + q]; \
                            window_##M(d, t);                                                     \
                            UNROLL for (int a = 0; a < R##M; a++)                                 \
                                UNROLL for (int b = 0; b < R##M; b++) o[(R##M * a + b) * plane + tx] = t[a][b]; \
                        }                                                                         \
                    }                                                                             \
                    continue;                                                                     \
                }                                                                                 \
                for (int u0 = 0; u0 < row_tiles; u0 += BLOCK) {                                   \
                    const int nu = row_tiles - u0 < BLOCK ? row_tiles - u0 : BLOCK;               \
                    for (int k = 0; k < nu; k++) {                                                \
                        const int n = (u0 + k) / tw, tx = (u0 + k) % tw;                          \
                        const float *img = x + c * x_channel_stride + (ptrdiff_t)n * height * width; \
                        read_block(img, height, width, M * ty - 1, M * tx - 1, R##M, &win[0][k], BLOCK); \
                    }                                                                             \
                    float *o = out + u0;                                                          \
                    VECTORISE for (int k = 0; k < nu; k++) {                                      \
                        float d[R##M][R##M], t[R##M][R##M];                                       \
                        UNROLL for (int r = 0; r < R##M; r++)                                     \
                            UNROLL for (int q = 0; q < R##M; q++) d[r][q] = win[R##M * r + q][k]; \
                        window_##M(d, t);                                                         \
                        UNROLL for (int a = 0; a < R##M; a++)                                     \
                            UNROLL for (int b = 0; b < R##M; b++) o[(R##M * a + b) * plane + k] = t[a][b]; \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void output_##M(const float *m, int channels, int count, int height, int width, float *y, \
                           ptrdiff_t y_channel_stride) {                                          \
        const int th = tiles_along(height, M), tw = tiles_along(width, M), row_tiles = count * tw; \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        float res[M * M][BLOCK];                                                                  \
        for (int o = 0; o < channels; o++)                                                        \
            for (int ty = 0; ty < th; ty++) {                                                     \
                const float *in = m + (ptrdiff_t)o * tiles + (ptrdiff_t)ty * row_tiles;           \
                for (int u0 = 0; u0 < row_tiles; u0 += BLOCK) {                                   \
                    const int nu = row_tiles - u0 < BLOCK ? row_tiles - u0 : BLOCK;               \
                    const float *i0 = in + u0;                                                    \
                    VECTORISE for (int k = 0; k < nu; k++) {                                      \
                        float p[R##M][R##M], out[M][M];                                           \
                        UNROLL for (int a = 0; a < R##M; a++)                                     \
                            UNROLL for (int b = 0; b < R##M; b++) p[a][b] = i0[(R##M * a + b) * plane + k]; \
                        tile_out_##M(p, out);                                                     \
                        UNROLL for (int r = 0; r < M; r++)                                        \
                            UNROLL for (int b = 0; b < M; b++) res[M * r + b][k] = out[r][b];     \
                    }                                                                             \
                    for (int k = 0; k < nu; k++) {                                                \
                        const int n = (u0 + k) / tw, tx = (u0 + k) % tw;                          \
                        float *img = y + o * y_channel_stride + (ptrdiff_t)n * height * width;    \
                        for (int r = 0; r < M && M * ty + r < height; r++)                        \
                            for (int b = 0; b < M && M * tx + b < width; b++)                     \
                                img[(ptrdiff_t)(M * ty + r) * width + M * tx + b] = res[M * r + b][k]; \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void output_gradient_##M(const float *dy, ptrdiff_t dy_channel_stride, int channels,   \
                                    int count, int height, int width, float *p) {                 \
        const int th = tiles_along(height, M), tw = tiles_along(width, M), row_tiles = count * tw; \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        float blk[M * M][BLOCK];                                                                  \
        for (int o = 0; o < channels; o++)                                                        \
            for (int ty = 0; ty < th; ty++) {                                                     \
                float *out = p + (ptrdiff_t)o * tiles + (ptrdiff_t)ty * row_tiles;                \
                for (int u0 = 0; u0 < row_tiles; u0 += BLOCK) {                                   \
                    const int nu = row_tiles - u0 < BLOCK ? row_tiles - u0 : BLOCK;               \
                    for (int k = 0; k < nu; k++) {                                                \
                        const int n = (u0 + k) / tw, tx = (u0 + k) % tw;                          \
                        const float *img = dy + o * dy_channel_stride + (ptrdiff_t)n * height * width; \
                        read_block(img, height, width, M * ty, M * tx, M, &blk[0][k], BLOCK);     \
                    }                                                                             \
                    float *o0 = out + u0;                                                         \
                    VECTORISE for (int k = 0; k < nu; k++) {                                      \
                        float e[M][M], t[R##M][R##M];                                             \
                        UNROLL for (int r = 0; r < M; r++)                                        \
                            UNROLL for (int b = 0; b < M; b++) e[r][b] = blk[M * r + b][k];       \
                        tile_adjoint_##M(e, t);                                                   \
                        UNROLL for (int a = 0; a < R##M; a++)                                     \
                            UNROLL for (int b = 0; b < R##M; b++) o0[(R##M * a + b) * plane + k] = t[a][b]; \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    /* BLOCK weights at a time: Gᵀ z G with one vector loop over them into [tap][k], then added   \
       to dw[k][tap]. */                                                                          \
    static void weight_gradient_##M(const float *z, int cout, int cin, int row0, int row1, float *dw) { \
        const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin), last = (ptrdiff_t)row1 * cin; \
        float taps[9][BLOCK];                                                                     \
        for (ptrdiff_t k0 = (ptrdiff_t)row0 * cin; k0 < last; k0 += BLOCK) {                      \
            const int n = last - k0 < BLOCK ? (int)(last - k0) : BLOCK;                           \
            const float *z0 = z + k0;                                                             \
            VECTORISE for (int k = 0; k < n; k++) {                                               \
                float t[R##M][3], pos[R##M], col[R##M], g[3];                                     \
                UNROLL for (int a = 0; a < R##M; a++) {                                           \
                    UNROLL for (int b = 0; b < R##M; b++) pos[b] = z0[(R##M * a + b) * plane + k]; \
                    kernel_adjoint_##M(pos, t[a]);                                                \
                }                                                                                 \
                UNROLL for (int b = 0; b < 3; b++) {                                              \
                    UNROLL for (int a = 0; a < R##M; a++) col[a] = t[a][b];                       \
                    kernel_adjoint_##M(col, g);                                                   \
                    UNROLL for (int a = 0; a < 3; a++) taps[3 * a + b][k] = g[a];                 \
                }                                                                                 \
            }                                                                                     \
            for (int k = 0; k < n; k++)                                                           \
                for (int j = 0; j < 9; j++) dw[(k0 + k) * 9 + j] += taps[j][k];                   \
        }                                                                                         \
    }

DEFINE_VARIANT(2)
DEFINE_VARIANT(4)

void stwino_weights(int tile, const float *w, int cout, int cin, int flipped, int row0, int row1, float *u) {
    (tile == 4 ? weights_4 : weights_2)(w, cout, cin, flipped, row0, row1, u);
}

void stwino_input(int tile, const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                  int width, float *v) {
    (tile == 4 ? input_4 : input_2)(x, x_channel_stride, channels, count, height, width, v);
}

void stwino_output(int tile, const float *m, int channels, int count, int height, int width, float *y,
                   ptrdiff_t y_channel_stride) {
    (tile == 4 ? output_4 : output_2)(m, channels, count, height, width, y, y_channel_stride);
}

void stwino_output_gradient(int tile, const float *dy, ptrdiff_t dy_channel_stride, int channels, int count,
                            int height, int width, float *p) {
    (tile == 4 ? output_gradient_4 : output_gradient_2)(dy, dy_channel_stride, channels, count, height, width, p);
}

void stwino_weight_gradient(int tile, const float *z, int cout, int cin, int row0, int row1, float *dw) {
    (tile == 4 ? weight_gradient_4 : weight_gradient_2)(z, cout, cin, row0, row1, dw);
}
