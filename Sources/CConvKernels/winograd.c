#include "winograd.h"

// Two variants, F(2×2, 3×3) (M = 2: 4×4 windows, 16 positions) and F(4×4, 3×3) (M = 4: 6×6
// windows, 36 positions), from one definition: each is five one-dimensional transforms (below)
// applied to the rows of a tile, then to its columns.
// The transforms walk one row of tiles at a time: the rows they read are first copied into a
// small buffer with the zero border in place, so the loop over tiles has no bounds tests and
// the compiler vectorises it (the outputs of a tile go to one array per position, each
// contiguous in t).

ptrdiff_t stwino_stride(ptrdiff_t floats) { return ((floats + 1023) & ~(ptrdiff_t)1023) + 16; }

static inline int tiles_along(int n, int m) { return (n + m - 1) / m; }

// ---- one-dimensional transforms --------------------------------------------------------------
// in:  t = Bᵀ d (window → positions)      kernel: u = G g (3 taps → positions)
// out: y = Aᵀ m (positions → outputs)     out_adjoint: p = A e      kernel_adjoint: g = Gᵀ z

static inline void in_2(const float d[4], float t[4]) {
    t[0] = d[0] - d[2];
    t[1] = d[1] + d[2];
    t[2] = d[2] - d[1];
    t[3] = d[1] - d[3];
}
static inline void kernel_2(const float g[3], float u[4]) {
    u[0] = g[0];
    u[1] = 0.5f * (g[0] + g[1] + g[2]);
    u[2] = 0.5f * (g[0] - g[1] + g[2]);
    u[3] = g[2];
}
static inline void out_2(const float m[4], float y[2]) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
}
static inline void out_adjoint_2(const float e[2], float p[4]) {
    p[0] = e[0];
    p[1] = e[0] + e[1];
    p[2] = e[0] - e[1];
    p[3] = -e[1];
}
static inline void kernel_adjoint_2(const float z[4], float g[3]) {
    g[0] = z[0] + 0.5f * (z[1] + z[2]);
    g[1] = 0.5f * (z[1] - z[2]);
    g[2] = 0.5f * (z[1] + z[2]) + z[3];
}

// F(4, 3) at the points 0, ±1, ±2 and ∞.
static inline void in_4(const float d[6], float t[6]) {
    t[0] = 4 * d[0] - 5 * d[2] + d[4];
    t[1] = -4 * (d[1] + d[2]) + d[3] + d[4];
    t[2] = 4 * (d[1] - d[2]) - d[3] + d[4];
    t[3] = 2 * (d[3] - d[1]) - d[2] + d[4];
    t[4] = 2 * (d[1] - d[3]) - d[2] + d[4];
    t[5] = 4 * d[1] - 5 * d[3] + d[5];
}
static inline void kernel_4(const float g[3], float u[6]) {
    u[0] = 0.25f * g[0];
    u[1] = (-1.0f / 6) * (g[0] + g[1] + g[2]);
    u[2] = (-1.0f / 6) * (g[0] - g[1] + g[2]);
    u[3] = (1.0f / 24) * g[0] + (1.0f / 12) * g[1] + (1.0f / 6) * g[2];
    u[4] = (1.0f / 24) * g[0] - (1.0f / 12) * g[1] + (1.0f / 6) * g[2];
    u[5] = g[2];
}
static inline void out_4(const float m[6], float y[4]) {
    const float a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    y[0] = m[0] + a + c;
    y[1] = b + 2 * d;
    y[2] = a + 4 * c;
    y[3] = b + 8 * d + m[5];
}
static inline void out_adjoint_4(const float e[4], float p[6]) {
    const float even = e[0] + e[2], odd = e[1] + e[3], even4 = e[0] + 4 * e[2], odd8 = 2 * e[1] + 8 * e[3];
    p[0] = e[0];
    p[1] = even + odd;
    p[2] = even - odd;
    p[3] = even4 + odd8;
    p[4] = even4 - odd8;
    p[5] = e[3];
}
static inline void kernel_adjoint_4(const float z[6], float g[3]) {
    g[0] = 0.25f * z[0] - (1.0f / 6) * (z[1] + z[2]) + (1.0f / 24) * (z[3] + z[4]);
    g[1] = (1.0f / 6) * (z[2] - z[1]) + (1.0f / 12) * (z[3] - z[4]);
    g[2] = (-1.0f / 6) * (z[1] + z[2]) + (1.0f / 6) * (z[3] + z[4]) + z[5];
}

// ---- the two-dimensional passes, once per variant ---------------------------------------------

#define DEFINE_VARIANT(M)                                                                         \
    enum { R##M = M + 2 };                                                                        \
                                                                                                  \
    /* The R×R values of G g Gᵀ for one kernel g (9 floats; `flip`: turned by 180°). */          \
    static inline void transform_kernel_##M(const float *g, int flip, float *out, ptrdiff_t stride) { \
        float t[3][R##M], col[3], u[R##M];                                                        \
        for (int a = 0; a < 3; a++) {                                                             \
            float row[3];                                                                         \
            for (int b = 0; b < 3; b++) row[b] = flip ? g[8 - 3 * a - b] : g[3 * a + b];          \
            kernel_##M(row, t[a]);                                                                \
        }                                                                                         \
        for (int b = 0; b < R##M; b++) {                                                          \
            for (int a = 0; a < 3; a++) col[a] = t[a][b];                                         \
            kernel_##M(col, u);                                                                   \
            for (int a = 0; a < R##M; a++) out[(R##M * a + b) * stride] = u[a];                   \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    static void weights_##M(const float *w, int cout, int cin, int flipped, int row0, int row1, float *u) { \
        const int cols = flipped ? cout : cin;                                                    \
        const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin);                             \
        if (flipped) {                                                                            \
            for (int o = row0; o < row1; o++)                                                     \
                for (int i = 0; i < cols; i++)                                                    \
                    transform_kernel_##M(w + ((ptrdiff_t)i * cin + o) * 9, 1, u + (ptrdiff_t)o * cols + i, plane); \
        } else {                                                                                  \
            for (int o = row0; o < row1; o++)                                                     \
                for (int i = 0; i < cols; i++)                                                    \
                    transform_kernel_##M(w + ((ptrdiff_t)o * cin + i) * 9, 0, u + (ptrdiff_t)o * cols + i, plane); \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    static void input_##M(const float *x, ptrdiff_t x_channel_stride, int channels, int count,   \
                          int height, int width, float *v) {                                      \
        const int th = tiles_along(height, M), tw = tiles_along(width, M), span = M * tw + 2;      \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        float rows[R##M][span];                                                                   \
        for (int c = 0; c < channels; c++)                                                        \
            for (int n = 0; n < count; n++) {                                                     \
                const float *img = x + c * x_channel_stride + (ptrdiff_t)n * height * width;      \
                for (int ty = 0; ty < th; ty++) {                                                 \
                    /* rows[r][j]: input row M·ty - 1 + r, column j - 1 (zero outside). */        \
                    for (int r = 0; r < R##M; r++) {                                              \
                        const int h = M * ty - 1 + r;                                             \
                        for (int j = 0; j < span; j++) rows[r][j] = 0;                            \
                        if (h >= 0 && h < height)                                                 \
                            for (int j = 0; j < width; j++) rows[r][j + 1] = img[(ptrdiff_t)h * width + j]; \
                    }                                                                             \
                    float *out = v + (ptrdiff_t)c * tiles + ((ptrdiff_t)n * th + ty) * tw;         \
                    for (int tx = 0; tx < tw; tx++) {                                             \
                        float e[R##M][R##M], col[R##M], t[R##M];                                  \
                        for (int r = 0; r < R##M; r++) in_##M(rows[r] + M * tx, e[r]);            \
                        for (int b = 0; b < R##M; b++) {                                          \
                            for (int r = 0; r < R##M; r++) col[r] = e[r][b];                      \
                            in_##M(col, t);                                                       \
                            for (int a = 0; a < R##M; a++) out[(R##M * a + b) * plane + tx] = t[a]; \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void output_##M(const float *m, int channels, int count, int height, int width, float *y, \
                           ptrdiff_t y_channel_stride) {                                          \
        const int th = tiles_along(height, M), tw = tiles_along(width, M);                        \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        float rows[M][M * tw];                                                                    \
        for (int o = 0; o < channels; o++)                                                        \
            for (int n = 0; n < count; n++) {                                                     \
                float *img = y + o * y_channel_stride + (ptrdiff_t)n * height * width;            \
                for (int ty = 0; ty < th; ty++) {                                                 \
                    const float *in = m + (ptrdiff_t)o * tiles + ((ptrdiff_t)n * th + ty) * tw;    \
                    for (int tx = 0; tx < tw; tx++) {                                             \
                        float f[R##M][M], pos[R##M], col[R##M], out[M];                           \
                        for (int a = 0; a < R##M; a++) {                                          \
                            for (int b = 0; b < R##M; b++) pos[b] = in[(R##M * a + b) * plane + tx]; \
                            out_##M(pos, f[a]);                                                   \
                        }                                                                         \
                        for (int b = 0; b < M; b++) {                                             \
                            for (int a = 0; a < R##M; a++) col[a] = f[a][b];                      \
                            out_##M(col, out);                                                    \
                            for (int r = 0; r < M; r++) rows[r][M * tx + b] = out[r];             \
                        }                                                                         \
                    }                                                                             \
                    for (int r = 0; r < M && M * ty + r < height; r++)                            \
                        for (int j = 0; j < width; j++) img[(ptrdiff_t)(M * ty + r) * width + j] = rows[r][j]; \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void output_gradient_##M(const float *dy, ptrdiff_t dy_channel_stride, int channels,  \
                                    int count, int height, int width, float *p) {                 \
        const int th = tiles_along(height, M), tw = tiles_along(width, M), span = M * tw;         \
        const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles); \
        float rows[M][span];                                                                      \
        for (int o = 0; o < channels; o++)                                                        \
            for (int n = 0; n < count; n++) {                                                     \
                const float *img = dy + o * dy_channel_stride + (ptrdiff_t)n * height * width;    \
                for (int ty = 0; ty < th; ty++) {                                                 \
                    for (int r = 0; r < M; r++) {                                                 \
                        const int h = M * ty + r;                                                 \
                        for (int j = 0; j < span; j++) rows[r][j] = 0;                            \
                        if (h < height)                                                           \
                            for (int j = 0; j < width; j++) rows[r][j] = img[(ptrdiff_t)h * width + j]; \
                    }                                                                             \
                    float *out = p + (ptrdiff_t)o * tiles + ((ptrdiff_t)n * th + ty) * tw;         \
                    for (int tx = 0; tx < tw; tx++) {                                             \
                        float e[M][R##M], col[M], t[R##M];                                        \
                        for (int r = 0; r < M; r++) out_adjoint_##M(rows[r] + M * tx, e[r]);       \
                        for (int b = 0; b < R##M; b++) {                                          \
                            for (int r = 0; r < M; r++) col[r] = e[r][b];                         \
                            out_adjoint_##M(col, t);                                              \
                            for (int a = 0; a < R##M; a++) out[(R##M * a + b) * plane + tx] = t[a]; \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
    }                                                                                             \
                                                                                                  \
    static void weight_gradient_##M(const float *z, int cout, int cin, int row0, int row1, float *dw) { \
        const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin);                             \
        for (ptrdiff_t k = (ptrdiff_t)row0 * cin; k < (ptrdiff_t)row1 * cin; k++) {               \
            float t[R##M][3], pos[R##M], col[R##M], g[3];                                         \
            for (int a = 0; a < R##M; a++) {                                                      \
                for (int b = 0; b < R##M; b++) pos[b] = z[(R##M * a + b) * plane + k];            \
                kernel_adjoint_##M(pos, t[a]);                                                    \
            }                                                                                     \
            for (int b = 0; b < 3; b++) {                                                         \
                for (int a = 0; a < R##M; a++) col[a] = t[a][b];                                  \
                kernel_adjoint_##M(col, g);                                                       \
                for (int a = 0; a < 3; a++) dw[k * 9 + 3 * a + b] += g[a];                        \
            }                                                                                     \
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
