#include "conv3x3.h"
#include "conv3x3_variants.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define STCONV_X86 1
#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#else
#define STCONV_X86 0
#endif

int stconv_isa_supported(int isa) {
#if STCONV_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == 1) return avx2;
    if (isa == 2) return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
#endif
    return 0;
}

int stconv_block(int isa) { return isa == 2 ? 8 : 4; }

int stconv_vector(int isa) { return isa == 2 ? 16 : 8; }

void stconv_forward(int isa, const float *xpad, int in_channels, int count, int height, int width,
                    const float *packed, int out_channels, float *y, ptrdiff_t y_channel_stride) {
    if (isa == 2)
        stconv_forward_avx512(xpad, in_channels, count, height, width, packed, out_channels, y,
                              y_channel_stride);
    else
        stconv_forward_avx2(xpad, in_channels, count, height, width, packed, out_channels, y,
                            y_channel_stride);
}

void stconv_weight_gradient(int isa, const float *xpad, int in_channels, int count, int height,
                            int width, const float *dy, ptrdiff_t dy_channel_stride,
                            int out_channels, float *dw) {
    if (isa == 2)
        stconv_weight_gradient_avx512(xpad, in_channels, count, height, width, dy,
                                      dy_channel_stride, out_channels, dw);
    else
        stconv_weight_gradient_avx2(xpad, in_channels, count, height, width, dy,
                                    dy_channel_stride, out_channels, dw);
}

void stconv_pad(const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                int width, float *xpad) {
    const ptrdiff_t wp = width + 2, plane = (ptrdiff_t)(height + 2) * wp;
    for (int c = 0; c < channels; c++) {
        for (int n = 0; n < count; n++) {
            const float *src = x + c * x_channel_stride + (ptrdiff_t)n * height * width;
            float *dst = xpad + ((ptrdiff_t)c * count + n) * plane;
            memset(dst, 0, sizeof(float) * wp);
            for (int h = 0; h < height; h++) {
                float *row = dst + (h + 1) * wp;
                row[0] = 0;
                memcpy(row + 1, src + (ptrdiff_t)h * width, sizeof(float) * width);
                row[width + 1] = 0;
            }
            memset(dst + (height + 1) * wp, 0, sizeof(float) * wp);
        }
    }
}

void stconv_pack_weights(const float *w, int cout, int cin, int flipped, int block, float *packed) {
    const int outs = flipped ? cin : cout, ins = flipped ? cout : cin;
    for (int o = 0; o < outs; o++)
        for (int i = 0; i < ins; i++)
            for (int t = 0; t < 9; t++) {
                const float v = flipped ? w[((ptrdiff_t)i * cin + o) * 9 + (8 - t)]
                                        : w[((ptrdiff_t)o * cin + i) * 9 + t];
                packed[(((ptrdiff_t)(o / block) * ins + i) * 9 + t) * block + o % block] = v;
            }
}

#if STCONV_X86

// 4 output channels × 3 vectors of 8 pixels (12 of 16 ymm registers accumulate).
DEFINE_DIRECT_FORWARD(stconv_forward_avx2, TARGET, __m256, 8, 4, _mm256_loadu_ps, _mm256_storeu_ps,
                      _mm256_setzero_ps, _mm256_set1_ps, _mm256_fmadd_ps)

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/// Adds to acc[j][k] (4 output channels × kw = 0, 1, 2) the products of dy rows with input rows
/// shifted by kw, over `rows` rows of `width` pixels (one image: rows = height). `x` steps by
/// `wp` per row, dy by `width` (its rows are contiguous).
INLINE void weight_rows(__m256 acc[4][3], int width, int rows, const float *x, ptrdiff_t wp,
                        const float *d, ptrdiff_t dcs) {
    for (int h = 0; h < rows; h++, x += wp, d += width) {
        for (int c = 0; c < width; c += 8) {
            const __m256 x0 = _mm256_loadu_ps(x + c);
            const __m256 x1 = _mm256_loadu_ps(x + c + 1);
            const __m256 x2 = _mm256_loadu_ps(x + c + 2);
            for (int j = 0; j < 4; j++) {
                const __m256 g = _mm256_loadu_ps(d + j * dcs + c);
                acc[j][0] = _mm256_fmadd_ps(g, x0, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(g, x1, acc[j][1]);
                acc[j][2] = _mm256_fmadd_ps(g, x2, acc[j][2]);
            }
        }
    }
}

TARGET void stconv_weight_gradient_avx2(const float *xpad, int in_channels, int count, int height,
                                   int width, const float *dy, ptrdiff_t dy_channel_stride,
                                   int out_channels, float *dw) {
    const ptrdiff_t wp = width + 2, plane = (ptrdiff_t)(height + 2) * wp;
    const ptrdiff_t cs = plane * count, hw = (ptrdiff_t)height * width;
    const ptrdiff_t dcs = dy_channel_stride;
    // Images per pass: about 1024 pixels, so 4 channels of dy and one input plane stay in L1.
    const int group = hw >= 1024 ? 1 : (int)(1024 / hw);
    for (int n0 = 0; n0 < count; n0 += group) {
        const int n1 = n0 + group < count ? n0 + group : count;
        for (int o = 0; o < out_channels; o += 4) {
            const float *d0 = dy + o * dcs + n0 * hw;
            for (int i = 0; i < in_channels; i++) {
                for (int kh = 0; kh < 3; kh++) {
                    __m256 acc[4][3];
                    for (int j = 0; j < 4; j++)
                        for (int k = 0; k < 3; k++) acc[j][k] = _mm256_setzero_ps();
                    const float *x = xpad + i * cs + n0 * plane + kh * wp;
                    const float *d = d0;
                    // Constant widths let the compiler drop the column loop for CIFAR sizes.
                    for (int n = n0; n < n1; n++, x += plane, d += hw) {
                        if (width == 8) weight_rows(acc, 8, height, x, wp, d, dcs);
                        else if (width == 16) weight_rows(acc, 16, height, x, wp, d, dcs);
                        else weight_rows(acc, width, height, x, wp, d, dcs);
                    }
                    for (int j = 0; j < 4; j++) {
                        float *t = dw + ((ptrdiff_t)(o + j) * in_channels + i) * 9 + kh * 3;
                        for (int k = 0; k < 3; k++) t[k] += hsum(acc[j][k]);
                    }
                }
            }
        }
    }
}

#else
// Other CPUs: stconv_isa_supported() and stconv_small_applies() return 0 and callers take the
// GEMM path; the kernels of every variant are never run.
#include <stdlib.h>

int stconv_small_applies(int height, int width) { return 0; }

void stconv_forward_avx2(const float *xpad, int in_channels, int count, int height, int width,
                         const float *packed, int out_channels, float *y,
                         ptrdiff_t y_channel_stride) {
    abort();
}

void stconv_weight_gradient_avx2(const float *xpad, int in_channels, int count, int height,
                                 int width, const float *dy, ptrdiff_t dy_channel_stride,
                                 int out_channels, float *dw) {
    abort();
}

void stconv_forward_avx512(const float *xpad, int in_channels, int count, int height, int width,
                           const float *packed, int out_channels, float *y,
                           ptrdiff_t y_channel_stride) {
    abort();
}

void stconv_weight_gradient_avx512(const float *xpad, int in_channels, int count, int height,
                                   int width, const float *dy, ptrdiff_t dy_channel_stride,
                                   int out_channels, float *dw) {
    abort();
}

void stconv_small_forward(const float *x, ptrdiff_t x_channel_stride, int in_channels, int count,
                          int height, int width, const float *packed, int out_channels, float *y,
                          ptrdiff_t y_channel_stride) {
    abort();
}

void stconv_small_weight_gradient(const float *x, ptrdiff_t x_channel_stride, int in_channels,
                                  int count, int height, int width, const float *dy,
                                  ptrdiff_t dy_channel_stride, int out_channels, float *dw) {
    abort();
}

#endif
