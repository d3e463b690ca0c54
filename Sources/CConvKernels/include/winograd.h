#ifndef SPARSETRAIN_WINOGRAD_H
#define SPARSETRAIN_WINOGRAD_H
// Winograd F(M×M, 3×3) transforms, M = `tile` ∈ {2, 4}, for 3×3, stride-1, padding-1
// convolutions over channel-major activations (C, N, H, W). An image is cut into
// ⌈H/M⌉·⌈W/M⌉ tiles of M×M outputs, each read from an R×R window (R = M + 2) of the
// zero-padded input; with d that window and g a 3×3 kernel, a tile's output is
// Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A: R² products per channel pair instead of 9·M². Summed over input
// channels, each of the R² positions ξ is one GEMM over all tiles.
//   M = 2: Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//          Aᵀ = [1 1 1 0; 0 1 -1 -1]
//   M = 4: the points 0, ±1, ±2, ∞ (Bᵀ, G, Aᵀ written out in winograd.c).
// Transformed data is laid out [ξ][channel][tile], tile t = (ty·count + n)·⌈W/M⌉ + tx, the
// positions `stwino_stride(channels·tiles)` floats apart (not a multiple of 4 KiB: the streams
// a transform reads or writes would otherwise fall into the same cache sets).
// Prefix: stwino_.
#include <stddef.h>

/// Floats between consecutive positions ξ of a transformed array of `floats` per position.
ptrdiff_t stwino_stride(ptrdiff_t floats);

/// u[ξ][o][i] = (G g Gᵀ)[ξ] with g = w[o][i] (w: [cout][cin][3][3]), o < cout, i < cin; with
/// `flipped` ≠ 0 the input gradient's kernels instead: o < cin, i < cout, g[kh][kw] =
/// w[i][o][2-kh][2-kw]. Rows o in [row0, row1) only; `u` holds
/// positions·stwino_stride(cout·cin) floats.
void stwino_weights(int tile, const float *w, int cout, int cin, int flipped, int row0, int row1, float *u);

/// v[ξ][c][t] = (Bᵀ d B)[ξ] for the window d of tile t in channel c (zeros outside the image);
/// plane c of image n is read at x + c·x_channel_stride + n·H·W. `v` holds
/// positions·stwino_stride(channels·T) floats, T = count·⌈H/M⌉·⌈W/M⌉.
void stwino_input(int tile, const float *x, ptrdiff_t x_channel_stride, int channels, int count, int height,
                  int width, float *v);

/// y[o·y_channel_stride + n·H·W + h·W + w] = (Aᵀ m A) at the tile's M×M positions inside the
/// image, from m[ξ][o][t]. Overwrites y.
void stwino_output(int tile, const float *m, int channels, int count, int height, int width, float *y,
                   ptrdiff_t y_channel_stride);

/// p[ξ][o][t] = (A e Aᵀ)[ξ] for the M×M block e of dy at tile t (zeros outside the image): the
/// adjoint of `stwino_output`, for the weight gradient.
void stwino_output_gradient(int tile, const float *dy, ptrdiff_t dy_channel_stride, int channels, int count,
                            int height, int width, float *p);

/// dw[o][i] += Gᵀ z[·][o][i] G (3×3) for o in [row0, row1), i < cin: the adjoint of
/// `stwino_weights`, from z[ξ][o][i] = Σ_t p[ξ][o][t]·v[ξ][i][t] (positions
/// `stwino_stride(cout·cin)` apart).
void stwino_weight_gradient(int tile, const float *z, int cout, int cin, int row0, int row1, float *dw);

#endif
