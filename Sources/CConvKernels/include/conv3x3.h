#ifndef SPARSETRAIN_CONV3X3_H
#define SPARSETRAIN_CONV3X3_H
// Direct 3×3, stride-1, padding-1 convolution kernels for channel-major activations
// (C, N, H, W), for the small channel counts where im2col + GEMM wastes most of its time
// packing. Two variants chosen at run time by `isa`: 1 = AVX2 + FMA (blocks of 4 output
// channels, 8-pixel vectors; width a multiple of 8), 2 = AVX-512 F + VL (blocks of 8, 16-pixel
// vectors; width a multiple of 16). Output channels a multiple of the variant's block.
// Prefix: stconv_.
#include <stddef.h>

/// 1 when this CPU runs variant `isa` (1: AVX2 + FMA, 2: AVX-512 F + VL), else 0.
int stconv_isa_supported(int isa);

/// Output channels per block of variant `isa` (4 or 8): `stconv_pack_weights`' `block`.
int stconv_block(int isa);

/// Pixels per vector of variant `isa` (8 or 16): the width must be a multiple of it.
int stconv_vector(int isa);

/// Copies `count` images of `channels` planes H×W into `xpad` laid out
/// [channel][image][H+2][W+2] with a zero border. Plane c of image n is read at
/// `x + c·x_channel_stride + n·H·W`.
void stconv_pad(const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                int width, float *xpad);

/// Packs weights w[cout][cin][3][3] for `stconv_forward` as packed[o/block][i][9][block] with
/// o < cout, i < cin. With `flipped` ≠ 0 packs the weights of the input gradient instead:
/// o < cin, i < cout, value w[i][o][2-kh][2-kw]. `packed` holds cout·cin·9 floats.
void stconv_pack_weights(const float *w, int cout, int cin, int flipped, int block, float *packed);

/// y[o·y_channel_stride + n·H·W + h·W + w] = Σ_{i,kh,kw} W[o][i][kh][kw] · xpad[i][n][h+kh][w+kw]
/// for o < out_channels (a multiple of the block), n < count; `xpad` from `stconv_pad`
/// (in_channels planes), `packed` from `stconv_pack_weights` with `stconv_block(isa)`. Overwrites y.
void stconv_forward(int isa, const float *xpad, int in_channels, int count, int height, int width,
                    const float *packed, int out_channels, float *y, ptrdiff_t y_channel_stride);

/// dw[o][i][kh][kw] += Σ_{n,h,w} dy[o·dy_channel_stride + n·H·W + h·W + w] · xpad[i][n][h+kh][w+kw]
/// for o < out_channels (a multiple of the block), i < in_channels.
void stconv_weight_gradient(int isa, const float *xpad, int in_channels, int count, int height, int width,
                            const float *dy, ptrdiff_t dy_channel_stride, int out_channels,
                            float *dw);

/// Small images (AVX-512, needs variant 2): 1 when images of `height`×`width` go to the kernels
/// below — H·W divides 16 and is at least 2 (4×4, 2×2, …), so a vector holds whole images.
int stconv_small_applies(int height, int width);

/// As `stconv_forward` for small images, reading the unpadded input x[i·x_channel_stride +
/// n·H·W + h·W + w]; `packed` from `stconv_pack_weights` with block 8; out_channels a multiple of 8.
void stconv_small_forward(const float *x, ptrdiff_t x_channel_stride, int in_channels, int count,
                          int height, int width, const float *packed, int out_channels, float *y,
                          ptrdiff_t y_channel_stride);

/// As `stconv_weight_gradient` for small images, reading the unpadded input (see above);
/// out_channels a multiple of 8.
void stconv_small_weight_gradient(const float *x, ptrdiff_t x_channel_stride, int in_channels,
                                  int count, int height, int width, const float *dy,
                                  ptrdiff_t dy_channel_stride, int out_channels, float *dw);

#endif
