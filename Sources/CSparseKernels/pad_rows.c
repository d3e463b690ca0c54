#include "sparse_kernels.h"

// Row copies of the convolution frames: many short rows (2 to a few hundred floats) per call,
// with one masked vector load and store per 16 (8) floats and no call per row.

static void pad_rows_portable(const float *src, ptrdiff_t src_stride, int n, float *dst,
                              ptrdiff_t dst_stride, int lead, int width, int rows) {
    for (int r = 0; r < rows; r++) {
        const float *s = src + (ptrdiff_t)r * src_stride;
        float *d = dst + (ptrdiff_t)r * dst_stride;
        for (int j = 0; j < width; j++) d[j] = j >= lead && j - lead < n ? s[j - lead] : 0.0f;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/// Bits [lo, hi) of a lane mask of `lanes` lanes, lo and hi clamped to [0, lanes].
static inline unsigned lane_bits(int lo, int hi, int lanes) {
    lo = lo < 0 ? 0 : lo > lanes ? lanes : lo;
    hi = hi < 0 ? 0 : hi > lanes ? lanes : hi;
    if (hi <= lo) return 0;
    const unsigned all = (1u << lanes) - 1;
    return (all >> (lanes - (hi - lo))) << lo;
}

__attribute__((target("avx512f")))
static void pad_rows_avx512(const float *src, ptrdiff_t src_stride, int n, float *dst,
                            ptrdiff_t dst_stride, int lead, int width, int rows) {
    if (width <= 16) {
        // One vector per row: the masks are the same for every row.
        const __mmask16 in = (__mmask16)lane_bits(lead, lead + n, 16), out = (__mmask16)lane_bits(0, width, 16);
        for (int r = 0; r < rows; r++)
            _mm512_mask_storeu_ps(dst + (ptrdiff_t)r * dst_stride, out,
                                  _mm512_maskz_loadu_ps(in, src + (ptrdiff_t)r * src_stride - lead));
        return;
    }
    for (int r = 0; r < rows; r++) {
        // Masked-off lanes are not read: the load may start before the row or end past it.
        const float *s = src + (ptrdiff_t)r * src_stride - lead;
        float *d = dst + (ptrdiff_t)r * dst_stride;
        for (int q = 0; q < width; q += 16) {
            const __mmask16 in = (__mmask16)lane_bits(lead - q, lead + n - q, 16);
            const __mmask16 out = (__mmask16)lane_bits(0, width - q, 16);
            _mm512_mask_storeu_ps(d + q, out, _mm512_maskz_loadu_ps(in, s + q));
        }
    }
}

__attribute__((target("avx2")))
static inline __m256i lane_mask8(unsigned bits) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), lane), lane);
}

__attribute__((target("avx2")))
static void pad_rows_avx2(const float *src, ptrdiff_t src_stride, int n, float *dst,
                          ptrdiff_t dst_stride, int lead, int width, int rows) {
    if (width <= 8) {
        const __m256i in = lane_mask8(lane_bits(lead, lead + n, 8)), out = lane_mask8(lane_bits(0, width, 8));
        for (int r = 0; r < rows; r++)
            _mm256_maskstore_ps(dst + (ptrdiff_t)r * dst_stride, out,
                                _mm256_maskload_ps(src + (ptrdiff_t)r * src_stride - lead, in));
        return;
    }
    for (int r = 0; r < rows; r++) {
        const float *s = src + (ptrdiff_t)r * src_stride - lead;
        float *d = dst + (ptrdiff_t)r * dst_stride;
        for (int q = 0; q < width; q += 8) {
            const __m256 v = _mm256_maskload_ps(s + q, lane_mask8(lane_bits(lead - q, lead + n - q, 8)));
            _mm256_maskstore_ps(d + q, lane_mask8(lane_bits(0, width - q, 8)), v);
        }
    }
}

void stsp_pad_rows(int isa, const float *src, ptrdiff_t src_stride, int n, float *dst,
                   ptrdiff_t dst_stride, int lead, int width, int rows) {
    if (isa == 2) pad_rows_avx512(src, src_stride, n, dst, dst_stride, lead, width, rows);
    else if (isa == 1) pad_rows_avx2(src, src_stride, n, dst, dst_stride, lead, width, rows);
    else pad_rows_portable(src, src_stride, n, dst, dst_stride, lead, width, rows);
}

#else

void stsp_pad_rows(int isa, const float *src, ptrdiff_t src_stride, int n, float *dst,
                   ptrdiff_t dst_stride, int lead, int width, int rows) {
    (void)isa;
    pad_rows_portable(src, src_stride, n, dst, dst_stride, lead, width, rows);
}

#endif
