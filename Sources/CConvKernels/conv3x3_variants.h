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

#endif
