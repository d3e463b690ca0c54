#ifndef SPARSETRAIN_CONV3X3_H
#define SPARSETRAIN_CONV3X3_H
// Direct 3×3, stride-1, padding-1 convolution kernels for channel-major activations
// (C, N, H, W) with AVX2 + FMA, for the small channel counts where im2col + GEMM wastes most of
// its time packing. Width must be a multiple of 8, output channels a multiple of 4.
// Prefix: stconv_.
#include <stddef.h>

/// 1 when this CPU runs the kernels below (AVX2 and FMA), else 0.
int stconv_available(void);

/// Copies `count` images of `channels` planes H×W into `xpad` laid out
/// [channel][image][H+2][W+2] with a zero border. Plane c of image n is read at
/// `x + c·x_channel_stride + n·H·W`.
void stconv_pad(const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                int width, float *xpad);

/// Packs weights w[cout][cin][3][3] for `stconv_forward` as packed[o/4][i][9][4] with
/// o < cout, i < cin. With `flipped` ≠ 0 packs the weights of the input gradient instead:
/// o < cin, i < cout, value w[i][o][2-kh][2-kw]. `packed` holds cout·cin·9 floats.
void stconv_pack_weights(const float *w, int cout, int cin, int flipped, float *packed);

/// y[o·y_channel_stride + n·H·W + h·W + w] = Σ_{i,kh,kw} W[o][i][kh][kw] · xpad[i][n][h+kh][w+kw]
/// for o < out_channels (a multiple of 4), n < count; `xpad` from `stconv_pad` (in_channels planes),
/// `packed` from `stconv_pack_weights`. Overwrites y.
void stconv_forward(const float *xpad, int in_channels, int count, int height, int width,
                    const float *packed, int out_channels, float *y, ptrdiff_t y_channel_stride);

/// dw[o][i][kh][kw] += Σ_{n,h,w} dy[o·dy_channel_stride + n·H·W + h·W + w] · xpad[i][n][h+kh][w+kw]
/// for o < out_channels (a multiple of 4), i < in_channels.
void stconv_weight_gradient(const float *xpad, int in_channels, int count, int height, int width,
                            const float *dy, ptrdiff_t dy_channel_stride, int out_channels,
                            float *dw);

#endif
