// Direct 3×3 kernels (AVX-512) for images of at most 16 pixels whose H·W divides 16 (4×4, 2×2,
// …): one zmm vector holds 16/(H·W) whole images of one channel, unpadded, and each tap's input
// is a single masked lane permutation of it (zero where the tap falls outside the image). The
// deep, small layers of VGG-style networks (512 channels at 4×4 and 2×2) run here instead of
// im2col + sgemm, with no padded or im2col copy.
#include "conv3x3.h"

#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET

/// Output channels per block (as the AVX-512 variant of the padded kernels: packed[o/8][i][9][8]).
#define BLOCK 8

int stconv_small_applies(int height, int width) {
    const int hw = height * width;
    return height > 0 && width > 0 && hw >= 2 && hw <= 16 && 16 % hw == 0;
}

/// Lane permutation and mask of each tap t = kh·3 + kw: lane l (image l / HW, pixel h, w) takes
/// lane idx[t][l] (same image, pixel h + kh − 1, w + kw − 1) where that pixel exists, else 0.
typedef struct {
    __m512i idx[9];
    __mmask16 mask[9];
} Taps;

static TARGET Taps make_taps(int height, int width) {
    Taps taps;
    const int hw = height * width;
    for (int t = 0; t < 9; t++) {
        int idx[16];
        unsigned mask = 0;
        for (int l = 0; l < 16; l++) {
            const int image = l / hw, p = l % hw, h = p / width + t / 3 - 1, w = p % width + t % 3 - 1;
            const int inside = h >= 0 && h < height && w >= 0 && w < width;
            idx[l] = inside ? image * hw + h * width + w : 0;
            if (inside) mask |= 1u << l;
        }
        taps.idx[t] = _mm512_loadu_si512(idx);
        taps.mask[t] = (__mmask16)mask;
    }
    return taps;
}

/// Lanes of vector v that hold pixels (all but the tail of the last vector).
INLINE __mmask16 lanes(ptrdiff_t v, ptrdiff_t pixels) {
    const ptrdiff_t left = pixels - v * 16;
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/// Input channels per pass of the forward kernel: their shifted vectors (9 taps × 3 vectors
/// × 64 bytes each, 216 KB) stay in L2 while every output channel is computed.
#define CHANNEL_BLOCK 128

/// 8 output channels × P vectors, over `cin` input channels: y[o + j][v_p] (+)= Σ_{i,t} w[i][t][j] ·
/// shifted[i][t][p], where shifted holds each tap's input vectors (see `shift_inputs`).
INLINE void forward_block(int P, int accumulate, const float *shifted, const ptrdiff_t *v,
                          const __mmask16 *live, int cin, const float *w, float *y, ptrdiff_t ycs) {
    __m512 acc[BLOCK][3];
    for (int j = 0; j < BLOCK; j++)
        for (int p = 0; p < P; p++)
            acc[j][p] = accumulate ? _mm512_maskz_loadu_ps(live[p], y + j * ycs + v[p] * 16)
                                   : _mm512_setzero_ps();
    for (int i = 0; i < cin; i++, w += 9 * BLOCK) {
        for (int t = 0; t < 9; t++, shifted += 3 * 16) {
            __m512 a[3];
            for (int p = 0; p < P; p++) a[p] = _mm512_load_ps(shifted + p * 16);
            for (int j = 0; j < BLOCK; j++) {
                const __m512 b = _mm512_set1_ps(w[t * BLOCK + j]);
                for (int p = 0; p < P; p++) acc[j][p] = _mm512_fmadd_ps(a[p], b, acc[j][p]);
            }
        }
    }
    for (int j = 0; j < BLOCK; j++)
        for (int p = 0; p < P; p++) _mm512_mask_storeu_ps(y + j * ycs + v[p] * 16, live[p], acc[j][p]);
}

/// shifted[i][t][p] = tap t of x[c0 + i] at vector v_p, for i < cn (3 vector slots per tap).
INLINE void shift_inputs(int P, const float *x, ptrdiff_t xcs, int c0, int cn, const ptrdiff_t *v,
                         const __mmask16 *live, const Taps *taps, float *shifted) {
    for (int i = 0; i < cn; i++) {
        for (int p = 0; p < P; p++) {
            const __m512 xv = _mm512_maskz_loadu_ps(live[p], x + (c0 + i) * xcs + v[p] * 16);
            for (int t = 0; t < 9; t++) {
                const __m512 a = t == 4 ? xv : _mm512_maskz_permutexvar_ps(taps->mask[t], taps->idx[t], xv);
                _mm512_store_ps(shifted + ((ptrdiff_t)(i * 9 + t) * 3 + p) * 16, a);
            }
        }
    }
}

TARGET void stconv_small_forward(const float *x, ptrdiff_t x_channel_stride, int in_channels,
                                 int count, int height, int width, const float *packed,
                                 int out_channels, float *y, ptrdiff_t y_channel_stride) {
    const Taps taps = make_taps(height, width);
    const ptrdiff_t pixels = (ptrdiff_t)count * height * width, vectors = (pixels + 15) / 16;
    float *shifted = aligned_alloc(64, sizeof(float) * CHANNEL_BLOCK * 9 * 3 * 16);
    if (!shifted) abort();
    for (ptrdiff_t g = 0; g < vectors; g += 3) {
        const int P = vectors - g < 3 ? (int)(vectors - g) : 3;
        ptrdiff_t v[3];
        __mmask16 live[3];
        for (int p = 0; p < P; p++) {
            v[p] = g + p;
            live[p] = lanes(v[p], pixels);
        }
        for (int c0 = 0; c0 < in_channels; c0 += CHANNEL_BLOCK) {
            const int cn = in_channels - c0 < CHANNEL_BLOCK ? in_channels - c0 : CHANNEL_BLOCK;
            shift_inputs(P, x, x_channel_stride, c0, cn, v, live, &taps, shifted);
            for (int o = 0; o < out_channels; o += BLOCK) {
                const float *w = packed + ((ptrdiff_t)o * in_channels + (ptrdiff_t)c0 * BLOCK) * 9;
                float *yo = y + o * y_channel_stride;
                // Constant P keeps every accumulator in a register.
                if (P == 3) {
                    if (c0 > 0) forward_block(3, 1, shifted, v, live, cn, w, yo, y_channel_stride);
                    else forward_block(3, 0, shifted, v, live, cn, w, yo, y_channel_stride);
                } else if (P == 2) {
                    forward_block(2, c0 > 0, shifted, v, live, cn, w, yo, y_channel_stride);
                } else {
                    forward_block(1, c0 > 0, shifted, v, live, cn, w, yo, y_channel_stride);
                }
            }
        }
    }
    free(shifted);
}

/// Output channels whose dY stays in cache while the weight gradient walks the input channels.
#define OUTPUT_GROUP 64

TARGET void stconv_small_weight_gradient(const float *x, ptrdiff_t x_channel_stride,
                                         int in_channels, int count, int height, int width,
                                         const float *dy, ptrdiff_t dy_channel_stride,
                                         int out_channels, float *dw) {
    // For each input channel its 9 shifted vectors are built once (shifted[v][t]) and read by
    // every block of a group of output channels: 3 shifted inputs + 8 dY loads per 24 FMAs.
    // The group's dY is first copied as grouped[block][v][j] (one stream per block: the
    // channels' own stride is a power of two, and 8 streams that far apart thrash L1 sets).
    const Taps taps = make_taps(height, width);
    const ptrdiff_t pixels = (ptrdiff_t)count * height * width, vectors = (pixels + 15) / 16;
    float *shifted = aligned_alloc(64, sizeof(float) * 9 * vectors * 16);
    float *grouped = aligned_alloc(64, sizeof(float) * OUTPUT_GROUP * vectors * 16);
    if (!shifted || !grouped) abort();
    for (int o0 = 0; o0 < out_channels; o0 += OUTPUT_GROUP) {
        const int o1 = o0 + OUTPUT_GROUP < out_channels ? o0 + OUTPUT_GROUP : out_channels;
        for (int o = o0; o < o1; o++)
            for (ptrdiff_t v = 0; v < vectors; v++)
                _mm512_store_ps(grouped + ((((o - o0) / BLOCK) * vectors + v) * BLOCK + (o - o0) % BLOCK) * 16,
                                _mm512_maskz_loadu_ps(lanes(v, pixels), dy + o * dy_channel_stride + v * 16));
        for (int i = 0; i < in_channels; i++) {
            const float *xi = x + i * x_channel_stride;
            for (ptrdiff_t v = 0; v < vectors; v++) {
                const __m512 xv = _mm512_maskz_loadu_ps(lanes(v, pixels), xi + v * 16);
                for (int t = 0; t < 9; t++) {
                    const __m512 a = t == 4 ? xv : _mm512_maskz_permutexvar_ps(taps.mask[t], taps.idx[t], xv);
                    _mm512_store_ps(shifted + (v * 9 + t) * 16, a);
                }
            }
            for (int o = o0; o < o1; o += BLOCK) {
                const float *d = grouped + (ptrdiff_t)((o - o0) / BLOCK) * vectors * BLOCK * 16;
                for (int kh = 0; kh < 3; kh++) {
                    __m512 acc[BLOCK][3];
                    for (int j = 0; j < BLOCK; j++)
                        for (int k = 0; k < 3; k++) acc[j][k] = _mm512_setzero_ps();
                    for (ptrdiff_t v = 0; v < vectors; v++) {
                        const float *sv = shifted + (v * 9 + kh * 3) * 16;
                        const __m512 a0 = _mm512_load_ps(sv), a1 = _mm512_load_ps(sv + 16);
                        const __m512 a2 = _mm512_load_ps(sv + 32);
                        for (int j = 0; j < BLOCK; j++) {
                            const __m512 g = _mm512_load_ps(d + (v * BLOCK + j) * 16);
                            acc[j][0] = _mm512_fmadd_ps(g, a0, acc[j][0]);
                            acc[j][1] = _mm512_fmadd_ps(g, a1, acc[j][1]);
                            acc[j][2] = _mm512_fmadd_ps(g, a2, acc[j][2]);
                        }
                    }
                    for (int j = 0; j < BLOCK; j++) {
                        float *t = dw + ((ptrdiff_t)(o + j) * in_channels + i) * 9 + kh * 3;
                        for (int k = 0; k < 3; k++) t[k] += _mm512_reduce_add_ps(acc[j][k]);
                    }
                }
            }
        }
    }
    free(shifted);
    free(grouped);
}

#endif
