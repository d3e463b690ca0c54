#ifndef SPARSETRAIN_CONV3X3_VARIANTS_H
#define SPARSETRAIN_CONV3X3_VARIANTS_H
// The kernels of each instruction-set variant, for the dispatch in conv3x3.c. Arguments as in
// conv3x3.h; `packed` uses the variant's block of output channels (4 for AVX2, 8 for AVX-512),
// the width is a multiple of its vector (8 for AVX2, 16 for AVX-512).
#include <stddef.h>

void stconv_forward_avx2(const float *xpad, int in_channels, int count, int height, int width,
                         const float *packed, int out_channels, float *y, ptrdiff_t y_channel_stride);
void stconv_weight_gradient_avx2(const float *xpad, int in_channels, int count, int height,
                                 int width, const float *dy, ptrdiff_t dy_channel_stride,
                                 int out_channels, float *dw);

void stconv_forward_avx512(const float *xpad, int in_channels, int count, int height, int width,
                           const float *packed, int out_channels, float *y,
                           ptrdiff_t y_channel_stride);
void stconv_weight_gradient_avx512(const float *xpad, int in_channels, int count, int height,
                                   int width, const float *dy, ptrdiff_t dy_channel_stride,
                                   int out_channels, float *dw);

/// Input channels per pass of the forward kernels: the rows a block of output vectors reads from
/// that many channels stay in L1 while all output channels are computed; later passes add to y.
#define DIRECT_CHANNEL_BLOCK 64

/// Defines the forward kernel NAME of one variant (arguments as `stconv_forward`) and its block
/// NAME##_block: BLOCK output channels × P (1…3) vectors of WIDTH output pixels accumulate in
/// registers over a pass's input channels and the 9 taps; in[p] is the top-left input of vector
/// p in the pass's first channel, cs the channel stride, w packed[o/BLOCK][i][9][BLOCK] at the
/// block. VEC, LOAD, STORE, ZERO, SET1, FMA: the variant's vector type and intrinsics; ATTR its
/// target attribute.
#define DEFINE_DIRECT_FORWARD(NAME, ATTR, VEC, WIDTH, BLOCK, LOAD, STORE, ZERO, SET1, FMA)          \
    static inline __attribute__((always_inline)) ATTR void NAME##_block(                           \
        int P, int accumulate, const float *const *in, ptrdiff_t cs, ptrdiff_t wp, int cin,         \
        const float *w, float *const *out, ptrdiff_t ycs) {                                         \
        VEC acc[BLOCK][3];                                                                          \
        for (int j = 0; j < BLOCK; j++)                                                             \
            for (int p = 0; p < P; p++) acc[j][p] = accumulate ? LOAD(out[p] + j * ycs) : ZERO();   \
        for (int i = 0; i < cin; i++, w += 9 * BLOCK) {                                             \
            for (int t = 0; t < 9; t++) {                                                           \
                const ptrdiff_t off = i * cs + (t / 3) * wp + t % 3;                                \
                VEC a[3];                                                                           \
                for (int p = 0; p < P; p++) a[p] = LOAD(in[p] + off);                               \
                for (int j = 0; j < BLOCK; j++) {                                                   \
                    const VEC b = SET1(w[t * BLOCK + j]);                                           \
                    for (int p = 0; p < P; p++) acc[j][p] = FMA(a[p], b, acc[j][p]);                \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        for (int j = 0; j < BLOCK; j++)                                                             \
            for (int p = 0; p < P; p++) STORE(out[p] + j * ycs, acc[j][p]);                         \
    }                                                                                               \
                                                                                                    \
    ATTR void NAME(const float *xpad, int in_channels, int count, int height, int width,            \
                   const float *packed, int out_channels, float *y, ptrdiff_t y_channel_stride) {  \
        const ptrdiff_t wp = width + 2, plane = (ptrdiff_t)(height + 2) * wp, cs = plane * count;   \
        const int perRow = width / (WIDTH), perImage = height * perRow;                             \
        const ptrdiff_t vectors = (ptrdiff_t)count * perImage;                                      \
        for (int c0 = 0; c0 < in_channels; c0 += DIRECT_CHANNEL_BLOCK) {                            \
            const int cn = in_channels - c0 < DIRECT_CHANNEL_BLOCK ? in_channels - c0               \
                                                                   : DIRECT_CHANNEL_BLOCK;          \
            const int acc = c0 > 0;                                                                 \
            for (ptrdiff_t g = 0; g < vectors; g += 3) {                                            \
                const int P = vectors - g < 3 ? (int)(vectors - g) : 3;                             \
                const float *in[3];                                                                 \
                float *out[3];                                                                      \
                for (int p = 0; p < P; p++) {                                                       \
                    const ptrdiff_t v = g + p, n = v / perImage, r = v % perImage;                  \
                    in[p] = xpad + c0 * cs + n * plane + (r / perRow) * wp + (r % perRow) * (WIDTH); \
                    out[p] = y + v * (WIDTH);                                                       \
                }                                                                                   \
                for (int o = 0; o < out_channels; o += BLOCK) {                                     \
                    const float *w = packed + ((ptrdiff_t)o * in_channels + (ptrdiff_t)c0 * BLOCK) * 9; \
                    float *o3[3];                                                                   \
                    for (int p = 0; p < P; p++) o3[p] = out[p] + o * y_channel_stride;              \
                    /* Constant arguments keep every accumulator in a register. */                  \
                    if (P == 3) {                                                                   \
                        if (acc) NAME##_block(3, 1, in, cs, wp, cn, w, o3, y_channel_stride);       \
                        else NAME##_block(3, 0, in, cs, wp, cn, w, o3, y_channel_stride);           \
                    } else if (P == 2) {                                                            \
                        NAME##_block(2, acc, in, cs, wp, cn, w, o3, y_channel_stride);              \
                    } else {                                                                        \
                        NAME##_block(1, acc, in, cs, wp, cn, w, o3, y_channel_stride);              \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }

#endif
