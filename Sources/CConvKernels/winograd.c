#include "winograd.h"

// The transforms walk one row of tiles at a time: the rows they read are first copied into a
// small buffer with the zero border in place, so the loop over tiles has no bounds tests and
// the compiler vectorises it (the 16 outputs of a tile go to 16 arrays, each contiguous in t).

static inline int half_up(int n) { return (n + 1) / 2; }

ptrdiff_t stwino_stride(ptrdiff_t floats) { return ((floats + 1023) & ~(ptrdiff_t)1023) + 16; }

/// The 16 values of G g Gᵀ for one kernel g (9 floats, row-major; `flip`: turned by 180°),
/// written `stride` apart.
static inline void transform_kernel(const float *g, int flip, float *out, ptrdiff_t stride) {
    float k[3][3], t[4][3];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) k[a][b] = flip ? g[8 - 3 * a - b] : g[3 * a + b];
    for (int b = 0; b < 3; b++) {  // t = G k
        t[0][b] = k[0][b];
        t[1][b] = 0.5f * (k[0][b] + k[1][b] + k[2][b]);
        t[2][b] = 0.5f * (k[0][b] - k[1][b] + k[2][b]);
        t[3][b] = k[2][b];
    }
    for (int a = 0; a < 4; a++) {  // t Gᵀ
        out[(4 * a + 0) * stride] = t[a][0];
        out[(4 * a + 1) * stride] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
        out[(4 * a + 2) * stride] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
        out[(4 * a + 3) * stride] = t[a][2];
    }
}

void stwino_weights(const float *w, int cout, int cin, int flipped, int row0, int row1, float *u) {
    const int cols = flipped ? cout : cin;
    const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin);
    if (flipped) {
        for (int o = row0; o < row1; o++)
            for (int i = 0; i < cols; i++) transform_kernel(w + ((ptrdiff_t)i * cin + o) * 9, 1, u + (ptrdiff_t)o * cols + i, plane);
    } else {
        for (int o = row0; o < row1; o++)
            for (int i = 0; i < cols; i++) transform_kernel(w + ((ptrdiff_t)o * cin + i) * 9, 0, u + (ptrdiff_t)o * cols + i, plane);
    }
}

void stwino_input(const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                  int width, float *v) {
    const int th = half_up(height), tw = half_up(width), span = 2 * tw + 2;
    const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles);
    float rows[4][span];
    for (int c = 0; c < channels; c++)
        for (int n = 0; n < count; n++) {
            const float *img = x + c * x_channel_stride + (ptrdiff_t)n * height * width;
            for (int ty = 0; ty < th; ty++) {
                // rows[r][j]: input row 2·ty - 1 + r, column j - 1 (zero outside the image).
                for (int r = 0; r < 4; r++) {
                    const int h = 2 * ty - 1 + r;
                    for (int j = 0; j < span; j++) rows[r][j] = 0;
                    if (h >= 0 && h < height)
                        for (int j = 0; j < width; j++) rows[r][j + 1] = img[(ptrdiff_t)h * width + j];
                }
                float *out = v + (ptrdiff_t)c * tiles + ((ptrdiff_t)n * th + ty) * tw;
                for (int tx = 0; tx < tw; tx++) {
                    float e[4][4];
                    for (int r = 0; r < 4; r++) {  // e = d B
                        const float *d = rows[r] + 2 * tx;
                        e[r][0] = d[0] - d[2];
                        e[r][1] = d[1] + d[2];
                        e[r][2] = d[2] - d[1];
                        e[r][3] = d[1] - d[3];
                    }
                    for (int b = 0; b < 4; b++) {  // Bᵀ e
                        out[(0 + b) * plane + tx] = e[0][b] - e[2][b];
                        out[(4 + b) * plane + tx] = e[1][b] + e[2][b];
                        out[(8 + b) * plane + tx] = e[2][b] - e[1][b];
                        out[(12 + b) * plane + tx] = e[1][b] - e[3][b];
                    }
                }
            }
        }
}

void stwino_output(const float *m, int channels, int count, int height, int width, float *y,
                   ptrdiff_t y_channel_stride) {
    const int th = half_up(height), tw = half_up(width);
    const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles);
    float rows[2][2 * tw];
    for (int o = 0; o < channels; o++)
        for (int n = 0; n < count; n++) {
            float *img = y + o * y_channel_stride + (ptrdiff_t)n * height * width;
            for (int ty = 0; ty < th; ty++) {
                const float *in = m + (ptrdiff_t)o * tiles + ((ptrdiff_t)n * th + ty) * tw;
                for (int tx = 0; tx < tw; tx++) {
                    float f[4][2];
                    for (int a = 0; a < 4; a++) {  // f = M A
                        const float m0 = in[(4 * a) * plane + tx], m1 = in[(4 * a + 1) * plane + tx];
                        const float m2 = in[(4 * a + 2) * plane + tx], m3 = in[(4 * a + 3) * plane + tx];
                        f[a][0] = m0 + m1 + m2;
                        f[a][1] = m1 - m2 - m3;
                    }
                    for (int b = 0; b < 2; b++) {  // Aᵀ f
                        rows[0][2 * tx + b] = f[0][b] + f[1][b] + f[2][b];
                        rows[1][2 * tx + b] = f[1][b] - f[2][b] - f[3][b];
                    }
                }
                for (int r = 0; r < 2 && 2 * ty + r < height; r++)
                    for (int j = 0; j < width; j++) img[(ptrdiff_t)(2 * ty + r) * width + j] = rows[r][j];
            }
        }
}

void stwino_output_gradient(const float *dy, ptrdiff_t dy_channel_stride, int channels, int count,
                            int height, int width, float *p) {
    const int th = half_up(height), tw = half_up(width), span = 2 * tw;
    const ptrdiff_t tiles = (ptrdiff_t)count * th * tw, plane = stwino_stride(channels * tiles);
    float rows[2][span];
    for (int o = 0; o < channels; o++)
        for (int n = 0; n < count; n++) {
            const float *img = dy + o * dy_channel_stride + (ptrdiff_t)n * height * width;
            for (int ty = 0; ty < th; ty++) {
                for (int r = 0; r < 2; r++) {
                    const int h = 2 * ty + r;
                    for (int j = 0; j < span; j++) rows[r][j] = 0;
                    if (h < height)
                        for (int j = 0; j < width; j++) rows[r][j] = img[(ptrdiff_t)h * width + j];
                }
                float *out = p + (ptrdiff_t)o * tiles + ((ptrdiff_t)n * th + ty) * tw;
                for (int tx = 0; tx < tw; tx++) {
                    float e[2][4];
                    for (int r = 0; r < 2; r++) {  // e = g Aᵀ
                        const float g0 = rows[r][2 * tx], g1 = rows[r][2 * tx + 1];
                        e[r][0] = g0;
                        e[r][1] = g0 + g1;
                        e[r][2] = g0 - g1;
                        e[r][3] = -g1;
                    }
                    for (int b = 0; b < 4; b++) {  // A e
                        out[(0 + b) * plane + tx] = e[0][b];
                        out[(4 + b) * plane + tx] = e[0][b] + e[1][b];
                        out[(8 + b) * plane + tx] = e[0][b] - e[1][b];
                        out[(12 + b) * plane + tx] = -e[1][b];
                    }
                }
            }
        }
}

void stwino_weight_gradient(const float *z, int cout, int cin, int row0, int row1, float *dw) {
    const ptrdiff_t plane = stwino_stride((ptrdiff_t)cout * cin);
    for (ptrdiff_t k = (ptrdiff_t)row0 * cin; k < (ptrdiff_t)row1 * cin; k++) {
        float t[4][3];
        for (int a = 0; a < 4; a++) {  // t = Z G
            const float z0 = z[(4 * a) * plane + k], z1 = z[(4 * a + 1) * plane + k];
            const float z2 = z[(4 * a + 2) * plane + k], z3 = z[(4 * a + 3) * plane + k];
            t[a][0] = z0 + 0.5f * (z1 + z2);
            t[a][1] = 0.5f * (z1 - z2);
            t[a][2] = 0.5f * (z1 + z2) + z3;
        }
        float *g = dw + k * 9;
        for (int b = 0; b < 3; b++) {  // Gᵀ t
            g[b] += t[0][b] + 0.5f * (t[1][b] + t[2][b]);
            g[3 + b] += 0.5f * (t[1][b] - t[2][b]);
            g[6 + b] += 0.5f * (t[1][b] + t[2][b]) + t[3][b];
        }
    }
}
