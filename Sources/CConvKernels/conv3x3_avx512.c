// AVX-512 variants of the direct 3×3 kernels for widths that are a multiple of 16: vectors of
// 16 pixels and blocks of 8 output channels, so that 24 of the 32 vector registers accumulate
// (8 channels × 3 pixel vectors) and each input load feeds 8 FMAs instead of 4. Width 8 stays
// with the AVX2 variant: on Zen 4, ymm blocks of 8 channels (forward) and two rows per zmm
// (weight gradient) were slower there in whole layers.
#include "conv3x3_variants.h"

#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET

/// Output channels per block.
#define BLOCK 8

// 8 output channels × 3 vectors of 16 pixels (24 of 32 zmm registers accumulate).
DEFINE_DIRECT_FORWARD(stconv_forward_avx512, TARGET, __m512, 16, BLOCK, _mm512_loadu_ps, _mm512_storeu_ps,
                      _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps)

/// Adds to acc[j][k] (8 output channels × kw = 0, 1, 2) the products of dy rows with input rows
/// shifted by kw: `rows` rows of `width` (a multiple of 16) pixels, 16 per vector. Row h of
/// channel j of dy is at d + h·BLOCK·width + j·width (see `regroup`).
INLINE void weight_rows16(__m512 acc[BLOCK][3], int width, int rows, const float *x, ptrdiff_t wp,
                          const float *d) {
    const ptrdiff_t dcs = width;
    for (int h = 0; h < rows; h++, x += wp, d += BLOCK * width) {
        for (int c = 0; c < width; c += 16) {
            const __m512 x0 = _mm512_loadu_ps(x + c);
            const __m512 x1 = _mm512_loadu_ps(x + c + 1);
            const __m512 x2 = _mm512_loadu_ps(x + c + 2);
            for (int j = 0; j < BLOCK; j++) {
                const __m512 g = _mm512_loadu_ps(d + j * dcs + c);
                acc[j][0] = _mm512_fmadd_ps(g, x0, acc[j][0]);
                acc[j][1] = _mm512_fmadd_ps(g, x1, acc[j][1]);
                acc[j][2] = _mm512_fmadd_ps(g, x2, acc[j][2]);
            }
        }
    }
}

/// Copies rows of 8 channels of dy (`count` images from `d`, channel stride `dcs`) as
/// grouped[image][h][j][w]: the 8 rows one step reads lie next to each other instead of a
/// power-of-two channel stride apart, where 8 streams compete for the same L1 sets.
INLINE void regroup(const float *d, ptrdiff_t dcs, int count, int height, int width, float *grouped) {
    for (int n = 0; n < count; n++)
        for (int h = 0; h < height; h++)
            for (int j = 0; j < BLOCK; j++) {
                const float *src = d + j * dcs + ((ptrdiff_t)n * height + h) * width;
                float *dst = grouped + (((ptrdiff_t)n * height + h) * BLOCK + j) * width;
                for (int c = 0; c < width; c += 16) _mm512_storeu_ps(dst + c, _mm512_loadu_ps(src + c));
            }
}

TARGET void stconv_weight_gradient_avx512(const float *xpad, int in_channels, int count,
                                          int height, int width, const float *dy,
                                          ptrdiff_t dy_channel_stride, int out_channels,
                                          float *dw) {
    const ptrdiff_t wp = width + 2, plane = (ptrdiff_t)(height + 2) * wp;
    const ptrdiff_t cs = plane * count, hw = (ptrdiff_t)height * width;
    const ptrdiff_t dcs = dy_channel_stride;
    // Images per pass: about 4096 pixels, so that the 24 horizontal sums per (block, channel,
    // row of taps) are spread over enough FMAs, while the pass's input planes of all channels
    // stay within ~1 MB (L2).
    const ptrdiff_t fit = ((ptrdiff_t)1 << 18) / ((ptrdiff_t)in_channels * plane);
    int group = hw >= 4096 ? 1 : (int)(4096 / hw);
    if (group > fit) group = fit > 1 ? (int)fit : 1;
    float *grouped = aligned_alloc(64, sizeof(float) * BLOCK * group * hw);
    if (!grouped) abort();
    for (int n0 = 0; n0 < count; n0 += group) {
        const int n1 = n0 + group < count ? n0 + group : count;
        for (int o = 0; o < out_channels; o += BLOCK) {
            regroup(dy + o * dcs + n0 * hw, dcs, n1 - n0, height, width, grouped);
            for (int i = 0; i < in_channels; i++) {
                for (int kh = 0; kh < 3; kh++) {
                    __m512 acc[BLOCK][3];
                    for (int j = 0; j < BLOCK; j++)
                        for (int k = 0; k < 3; k++) acc[j][k] = _mm512_setzero_ps();
                    const float *x = xpad + i * cs + n0 * plane + kh * wp;
                    const float *d = grouped;
                    for (int n = n0; n < n1; n++, x += plane, d += BLOCK * hw) {
                        if (width == 16) weight_rows16(acc, 16, height, x, wp, d);
                        else if (width == 32) weight_rows16(acc, 32, height, x, wp, d);
                        else weight_rows16(acc, width, height, x, wp, d);
                    }
                    for (int j = 0; j < BLOCK; j++) {
                        float *t = dw + ((ptrdiff_t)(o + j) * in_channels + i) * 9 + kh * 3;
                        for (int k = 0; k < 3; k++) t[k] += _mm512_reduce_add_ps(acc[j][k]);
                    }
                }
            }
        }
    }
    free(grouped);
}

#endif
