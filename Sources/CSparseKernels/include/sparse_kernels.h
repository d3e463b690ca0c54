#ifndef SPARSETRAIN_SPARSE_KERNELS_H
#define SPARSETRAIN_SPARSE_KERNELS_H
// Sparse kernels of masked layers on batch-innermost activations ([features][n], row stride ld).
// A masked weight W[rows × cols] is described by a compressed row index: for row r the entries
// k in [row_ptr[r], row_ptr[r+1]) read the activation row src[k] and the weight value w[wpos[k]]
// (an element offset into the layer's weights, so the kernels always see the current values).
// The same kernel runs the forward pass (rows = outputs, src = input features) and the input
// gradient over a transposed index (a convolution's phases); a linear weight's input gradient
// scatters over the forward index instead (stsp_scatter), so it needs no second index.
// Variants: 0 portable C, 1 AVX2 + FMA, 2 AVX-512F; pick one with stsp_isa_supported.
// Prefix: stsp_.
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU can run variant `isa` (0 portable, 1 AVX2 + FMA, 2 AVX-512F), else 0.
int stsp_isa_supported(int isa);

/// y[r·ldy + b] (= or, with accumulate ≠ 0, +=) Σ_{k ∈ row r} w[wpos[k]] · x[src[k]·ldx + b]
/// for r0 ≤ r < r1, 0 ≤ b < n. Rows with no entry get 0 (or keep y). With wpos NULL the
/// values are in index order: w[k].
/// `ahead` (NULL: none): the region the next call reads, `ahead_rows` rows of `ahead_n` floats
/// `ldx` apart; each row r takes its share of those lines and prefetches them into L2, so the
/// next call finds its activation rows there instead of waiting on each first touch (the rows
/// are read in index order, which no hardware prefetcher follows).
void stsp_spmm(int isa, const int32_t *row_ptr, const int32_t *src, const int32_t *wpos,
               const float *w, const float *x, ptrdiff_t ldx, int n, float *y, ptrdiff_t ldy,
               int r0, int r1, int accumulate, const float *ahead, int ahead_rows, int ahead_n);

/// Transposed product by scattering over one block of a row index, values in index order:
/// dx[src[k]·lddx + b] += w[k] · dy[r·lddy + b] for every entry k of rows 0 ≤ r < rows,
/// 0 ≤ b < n (the input gradient dX = (W⊙M)ᵀ·dY from the forward index: each row's dY slice
/// stays in registers while its entries update dx rows, which stay in cache for a block).
void stsp_scatter(int isa, const int32_t *row_ptr, const int32_t *src, const float *w,
                  const float *dy, ptrdiff_t lddy, int n, float *dx, ptrdiff_t lddx, int rows);

/// Sampled product at the index's entries only:
/// out[outpos ? outpos[k] : k] += Σ_b dy[r·lddy + b] · x[src[k]·ldx + b] for every entry k of
/// rows r0 ≤ r < r1 in `blocks` consecutive source blocks, whose row starts lie `block_stride`
/// apart in row_ptr (the weight gradient of the forward index: dW at the mask's positions).
void stsp_sddmm(int isa, const int32_t *row_ptr, ptrdiff_t block_stride, int blocks,
                const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x, ptrdiff_t ldx,
                int n, float *out, const int32_t *outpos, int r0, int r1);

/// Gathers a weight into index order for j0 ≤ j < j1: v = w[offset[j]], dst1[entry1[j]] = v and,
/// when dst2 is not NULL, dst2[entry2[j]] = v (offsets ascending: the active weights in
/// row-major order). Prefetches the weights a few entries ahead: at low density the offsets are
/// too far apart for the hardware prefetcher to follow. With offset NULL, v = w[j]: w holds the
/// active weights packed in row-major order.
void stsp_gather(const int32_t *offset, const float *w, const int32_t *entry1, float *dst1,
                 const int32_t *entry2, float *dst2, ptrdiff_t j0, ptrdiff_t j1);

/// Padded row copy for r in [0, rows), 0 ≤ j < width:
/// dst[r·dst_stride + j] = src[r·src_stride + j − lead] when lead ≤ j < lead + n, else 0
/// (lead = 0, width = n: a plain copy of `rows` rows). Reads only src[r·src_stride + [0, n)].
/// For the many short rows of convolution frames: no call per row.
void stsp_pad_rows(int isa, const float *src, ptrdiff_t src_stride, int n, float *dst,
                   ptrdiff_t dst_stride, int lead, int width, int rows);

// ---- k×k convolutions on unpadded planes [C][N·H·W] (no frame copies) -------------------
// Position p = (n·H + i)·W + j; an entry's tap t of reach R (shift dh = t / (2R + 1) − R,
// dw = t mod (2R + 1) − R; (2R + 1)² taps) reads src[k] + p with src[k] = plane·ld + dh·W + dw,
// zero where that pixel lies outside the image. A stride-1 k×k convolution with padding k / 2
// is reach k / 2 with tap (kh, kw) at shift (kh − R, kw − R); a stride-2 one runs on the input's
// phases (see SparseConvolution+Planes.swift). Positions run in tiles of 128; masks (from
// stsp_plane_masks) hold, per tile phase, tap and vector of 16, the lanes that read inside the
// image. Tiles [tile0, tile1), rows [r0, r1).

/// Tile phases of `total` = N·H·W positions: the tiles whose masks differ before they repeat.
/// H·W/128 when 128 divides H·W, 1 when H·W divides 128, else every tile is its own phase
/// (⌈total/128⌉: tiles do not line up with images, ResNet-50's 56×56 … 7×7).
int stsp_plane_phases(int height, int width, int total);

/// Writes the (phases + 1)·(2·reach + 1)²·8 lane masks for `total` = N·H·W positions (the extra
/// phase: the last tile when it is partial, its lanes past `total` off).
void stsp_plane_masks(int height, int width, int total, int reach, uint16_t *masks);

/// y[r·ldy + p] = Σ_{k ∈ row r} w[k] · x[src[k] + p] (masked by tap[k]; entries in index order,
/// the order the frame kernels sum in) for the positions of the tiles, r0 ≤ r < r1: the forward
/// pass, or the input gradient over the transposed index with flipped taps ((2R + 1)² − 1 − t,
/// offsets negated). With `stream`, full tiles whose row starts on a vector are written with
/// non-temporal stores (no read of each output line before it is written), fenced at the end.
void stsp_plane_spmm(int isa, const int32_t *row_ptr, const int32_t *src, const uint8_t *tap,
                     const float *w, const float *x, const uint16_t *masks, int reach, int height,
                     int width, int total, float *y, ptrdiff_t ldy, int r0, int r1, int tile0,
                     int tile1, int stream);

/// out[outpos ? outpos[k] : k] += Σ_p dy[r·lddy + p] · x[src[k] + p] (masked by the tap) over
/// the positions of the tiles, for every entry of rows r0 ≤ r < r1: the weight gradient. A row's
/// entries come in groups of one tap (groups row_groups[r] ..< row_groups[r + 1]): group g holds
/// group_count[g] ≤ 8 entries group_entries[8g ..< 8g + count] of tap group_tap[g], so its
/// products share one lane mask per vector. Each entry's sum runs over the positions in the same
/// order whatever its group.
void stsp_plane_sddmm(int isa, const int32_t *row_groups, const int32_t *group_entries,
                      const uint8_t *group_tap, const uint8_t *group_count, const int32_t *src,
                      const float *dy, ptrdiff_t lddy, const float *x, const uint16_t *masks,
                      int reach, int height, int width, int total, float *out,
                      const int32_t *outpos, int r0, int r1, int tile0, int tile1);

#endif
