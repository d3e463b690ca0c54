#include "sparse_kernels.h"
#include <stdint.h>
#include <string.h>

// Sparse convolution passes straight on unpadded planes [C][N·H·W] (stride 1, or stride 2 on
// the input's phases): position p of a plane is pixel (n, i, j); tap t of reach R (shift
// (dh, dw) = (t / (2R + 1) − R, t mod (2R + 1) − R), (2R + 1)² taps) reads p + dh·W + dw, and
// the lanes whose source pixel lies outside the image (or past the last position) are masked
// to zero. Positions run in tiles of 128 (8 vectors of 16); a tile's masks depend only on
// its phase (see stsp_plane_masks: where tiles and images do not line up, every tile is a phase),
// so no padded frame is written and outputs are stored in place.

#define TILE 128

static int tile_phase(int tile, int tiles, int total, int phases) {
    return (tile == tiles - 1 && total % TILE) ? phases : tile % phases;
}

int stsp_plane_phases(int height, int width, int total) {
    const int plane = height * width;
    if (plane % TILE == 0) return plane / TILE;
    if (TILE % plane == 0) return 1;
    return (total + TILE - 1) / TILE;
}

void stsp_plane_masks(int height, int width, int total, int reach, uint16_t *masks) {
    const int plane = height * width, phases = stsp_plane_phases(height, width, total);
    const int tiles = (total + TILE - 1) / TILE, side = 2 * reach + 1, taps = side * side;
    for (int q = 0; q <= phases; q++) {
        // Phase q < phases: tiles whose first position is q·128 into an image (mod the plane);
        // q = phases: the last tile when it is partial.
        const int first = q < phases ? q * TILE : (tiles - 1) * TILE;
        for (int t = 0; t < taps; t++) {
            const int dh = t / side - reach, dw = t % side - reach;
            for (int v = 0; v < 8; v++) {
                unsigned bits = 0;
                for (int l = 0; l < 16; l++) {
                    const int p = first + 16 * v + l;
                    if (q == phases && p >= total) continue;
                    const int inImage = p % plane, i = inImage / width + dh, j = inImage % width + dw;
                    if (i >= 0 && i < height && j >= 0 && j < width) bits |= 1u << l;
                }
                masks[(q * taps + t) * 8 + v] = (uint16_t)bits;
            }
        }
    }
}

/// Lanes of the tile (8 vectors) that hold positions < total.
static unsigned valid_bits(int tile, int v, int total) {
    const int left = total - tile * TILE - 16 * v;
    return left >= 16 ? 0xFFFFu : left <= 0 ? 0u : (1u << left) - 1u;
}

// ---- portable C ---------------------------------------------------------------------------

static void plane_spmm_portable(const int32_t *row_ptr, const int32_t *src, const uint8_t *tap,
                                const float *w, const float *x, const uint16_t *masks, int taps,
                                int height, int width, int total, float *y, ptrdiff_t ldy, int r0,
                                int r1, int tile0, int tile1, int stream) {
    (void)stream;
    const int phases = stsp_plane_phases(height, width, total), tiles = (total + TILE - 1) / TILE;
    for (int tile = tile0; tile < tile1; tile++) {
        const int q = tile_phase(tile, tiles, total, phases), p0 = tile * TILE;
        const int n = total - p0 < TILE ? total - p0 : TILE;
        for (int r = r0; r < r1; r++) {
            float acc[TILE] = {0};
            for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
                const uint16_t *m = masks + (q * taps + tap[k]) * 8;
                const float *xr = x + src[k] + p0;
                for (int b = 0; b < n; b++)
                    if (m[b / 16] >> (b % 16) & 1) acc[b] += w[k] * xr[b];
            }
            float *yr = y + (ptrdiff_t)r * ldy + p0;
            for (int b = 0; b < n; b++) yr[b] = acc[b];
        }
    }
}

static void plane_sddmm_portable(const int32_t *row_groups, const int32_t *group_entries,
                                 const uint8_t *group_tap, const uint8_t *group_count,
                                 const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x,
                                 const uint16_t *masks, int taps, int height, int width, int total,
                                 float *out, const int32_t *outpos, int r0, int r1, int tile0,
                                 int tile1) {
    const int phases = stsp_plane_phases(height, width, total), tiles = (total + TILE - 1) / TILE;
    for (int r = r0; r < r1; r++) {
        const float *d = dy + (ptrdiff_t)r * lddy;
        for (int32_t g = row_groups[r]; g < row_groups[r + 1]; g++) {
            for (int i = 0; i < group_count[g]; i++) {
                const int32_t k = group_entries[8 * g + i];
                float s = 0;
                for (int tile = tile0; tile < tile1; tile++) {
                    const int q = tile_phase(tile, tiles, total, phases), p0 = tile * TILE;
                    const int n = total - p0 < TILE ? total - p0 : TILE;
                    const uint16_t *m = masks + (q * taps + group_tap[g]) * 8;
                    for (int b = 0; b < n; b++)
                        if (m[b / 16] >> (b % 16) & 1) s += d[p0 + b] * x[src[k] + p0 + b];
                }
                out[outpos ? outpos[k] : k] += s;
            }
        }
    }
}

#if defined(__x86_64__)
#include "x86_common.h"

/// Defines NAME: the weight gradient's walk over each row's groups of one tap (the first entry
/// repeated in a group's unused slots), each group's dot products by GROUP with 4 or 8 slots.
#define DEFINE_PLANE_SDDMM(NAME, ATTR, GROUP)                                                      \
    static ATTR void NAME(const int32_t *row_groups, const int32_t *group_entries,                \
                          const uint8_t *group_tap, const uint8_t *group_count,                   \
                          const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x,    \
                          const uint16_t *masks, int taps, int height, int width, int total,      \
                          float *out, const int32_t *outpos, int r0, int r1, int tile0,           \
                          int tile1) {                                                            \
        const int phases = stsp_plane_phases(height, width, total);                               \
        const int tiles = (total + TILE - 1) / TILE;                                              \
        for (int r = r0; r < r1; r++) {                                                           \
            const float *d = dy + (ptrdiff_t)r * lddy;                                            \
            for (int32_t g = row_groups[r]; g < row_groups[r + 1]; g++) {                         \
                const int count = group_count[g];                                                 \
                const int32_t *e = group_entries + 8 * g;                                         \
                const float *xr[8];                                                               \
                for (int i = 0; i < 8; i++) xr[i] = x + src[e[i < count ? i : 0]];                \
                float s[8];                                                                       \
                if (count <= 4)                                                                   \
                    GROUP(4, xr, d, masks, taps, group_tap[g], phases, tiles, total, tile0,       \
                          tile1, s);                                                              \
                else                                                                              \
                    GROUP(8, xr, d, masks, taps, group_tap[g], phases, tiles, total, tile0,       \
                          tile1, s);                                                              \
                for (int i = 0; i < count; i++) out[outpos ? outpos[e[i]] : e[i]] += s[i];        \
            }                                                                                     \
        }                                                                                         \
    }


/// Lanes 0, 1, …, 31: `ramp + s` is the permutation that takes lanes s … s + 15 of two
/// consecutive vectors.
static const int32_t ramp[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/// acc[v] += w · xr[16v …] over the lanes of the tap's masks `lo` (vectors 0–3) and `hi` (4–7),
/// reading nine aligned vectors from xr rounded down to 64 bytes and shifting them into place
/// (a tap's shift puts most of its unaligned loads across two cache lines, which costs a second
/// L1 access each). The caller guarantees those nine vectors lie inside the buffer.
INLINE AVX512 void fma_shifted(__m512 acc[8], __m512 wv, const float *xr, uint64_t lo, uint64_t hi) {
    const float *base = (const float *)((uintptr_t)xr & ~(uintptr_t)63);
    const __m512i idx = _mm512_loadu_si512(ramp + (((uintptr_t)xr & 63) >> 2));
    __m512 a = _mm512_load_ps(base);
    for (int v = 0; v < 8; v++) {
        const __m512 b = _mm512_load_ps(base + 16 * (v + 1));
        const __mmask16 m = (__mmask16)((v < 4 ? lo : hi) >> 16 * (v & 3));
        acc[v] = _mm512_mask3_fmadd_ps(wv, _mm512_permutex2var_ps(a, idx, b), acc[v], m);
        a = b;
    }
}

/// As fma_shifted with masked unaligned loads (masked-off lanes are not read: the loads may
/// start before the plane or end past it).
INLINE AVX512 void fma_masked(__m512 acc[8], __m512 wv, const float *xr, uint64_t lo, uint64_t hi) {
    for (int v = 0; v < 8; v++) {
        const __mmask16 m = (__mmask16)((v < 4 ? lo : hi) >> 16 * (v & 3));
        acc[v] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, xr + 16 * v), acc[v]);
    }
}

static AVX512 void plane_spmm_avx512(const int32_t *row_ptr, const int32_t *src, const uint8_t *tap,
                                     const float *w, const float *x, const uint16_t *masks, int taps,
                                     int height, int width, int total, float *y, ptrdiff_t ldy,
                                     int r0, int r1, int tile0, int tile1, int stream) {
    const int phases = stsp_plane_phases(height, width, total), tiles = (total + TILE - 1) / TILE;
    // Tiles whose shifted aligned reads stay inside every plane: a tap reaches reach·(width + 1)
    // positions either way, the first aligned vector starts up to 15 floats before the tap's
    // first position and the ninth ends up to 16 after its last. The others read through masked
    // loads.
    int reach = 0;
    while ((2 * reach + 1) * (2 * reach + 1) < taps) reach++;
    const int margin = reach * (width + 1) + 16;
    for (int tile = tile0; tile < tile1; tile++) {
        const int q = tile_phase(tile, tiles, total, phases), p0 = tile * TILE;
        const uint16_t *phase = masks + q * taps * 8;
        __mmask16 store[8];
        for (int v = 0; v < 8; v++) store[v] = (__mmask16)valid_bits(tile, v, total);
        const int full = p0 + TILE <= total;
        const int inside = p0 + 1 >= margin && p0 + TILE + margin <= total;
        for (int r = r0; r < r1; r++) {
            __m512 acc[8];
            for (int v = 0; v < 8; v++) acc[v] = _mm512_setzero_ps();
            // Entries in index order, as the frame kernels sum them: the same roundings. A tap's
            // eight lane masks come in two 64-bit loads, not eight 16-bit mask loads.
            for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
                uint64_t lo, hi;
                memcpy(&lo, phase + tap[k] * 8, 8);
                memcpy(&hi, phase + tap[k] * 8 + 4, 8);
                const __m512 wv = _mm512_set1_ps(w[k]);
                if (inside) fma_shifted(acc, wv, x + src[k] + p0, lo, hi);
                else fma_masked(acc, wv, x + src[k] + p0, lo, hi);
            }
            float *yr = y + (ptrdiff_t)r * ldy + p0;
            if (stream && full && ((uintptr_t)yr & 63) == 0)
                for (int v = 0; v < 8; v++) _mm512_stream_ps(yr + 16 * v, acc[v]);
            else
                for (int v = 0; v < 8; v++) _mm512_mask_storeu_ps(yr + 16 * v, store[v], acc[v]);
        }
    }
    if (stream) _mm_sfence();
}

/// The dot products of one group's G entries (one tap: one mask per vector for all of them) with
/// the dy row over the tiles, lane by lane as the portable kernel orders positions; G is 4 or 8.
INLINE AVX512 void plane_group_avx512(const int G, const float *const xr[8], const float *d,
                                      const uint16_t *masks, int taps, int tap, int phases, int tiles,
                                      int total, int tile0, int tile1, float s[8]) {
    __m512 acc[8];
    for (int i = 0; i < G; i++) acc[i] = _mm512_setzero_ps();
    for (int tile = tile0; tile < tile1; tile++) {
        const int p0 = tile * TILE;
        const uint16_t *m = masks + (tile_phase(tile, tiles, total, phases) * taps + tap) * 8;
        for (int v = 0; v < 8; v++) {
            // The tap's lanes inside the image (and before `total`): neither row is read elsewhere.
            const __mmask16 k = (__mmask16)m[v];
            const int p = p0 + 16 * v;
            const __m512 dv = _mm512_maskz_loadu_ps(k, d + p);
            for (int i = 0; i < G; i++) acc[i] = _mm512_fmadd_ps(dv, _mm512_maskz_loadu_ps(k, xr[i] + p), acc[i]);
        }
    }
    for (int i = G; i < 8; i++) acc[i] = _mm512_setzero_ps();
    _mm256_storeu_ps(s, hsum16x8(acc));
}

DEFINE_PLANE_SDDMM(plane_sddmm_avx512, AVX512, plane_group_avx512)

// ---- AVX2 + FMA: 8 lanes per vector; a tile as two halves of 8 vectors ------------------------

/// The ymm lane mask of 8 mask bits.
INLINE AVX2 __m256i lanes8(unsigned bits) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), bit), bit);
}

/// Bits 8h ..< 8h + 8 of the 16-bit mask of vector v / 2 (the 8-lane vector v of a tile).
INLINE unsigned half_bits(const uint16_t *m, int v) { return (unsigned)(m[v / 2] >> (8 * (v % 2))) & 0xFFu; }

/// As plane_spmm_avx512 with 8-lane vectors: each tile's lane masks expanded once into vectors
/// (taps × 16), then its two halves of 64 positions (8 accumulators each) over all rows.
static AVX2 void plane_spmm_avx2(const int32_t *row_ptr, const int32_t *src, const uint8_t *tap,
                                 const float *w, const float *x, const uint16_t *masks, int taps,
                                 int height, int width, int total, float *y, ptrdiff_t ldy, int r0,
                                 int r1, int tile0, int tile1, int stream) {
    const int phases = stsp_plane_phases(height, width, total), tiles = (total + TILE - 1) / TILE;
    __m256i lane[49 * 16], store[16];
    for (int tile = tile0; tile < tile1; tile++) {
        const int q = tile_phase(tile, tiles, total, phases), p0 = tile * TILE;
        const uint16_t *phase = masks + q * taps * 8;
        for (int t = 0; t < taps; t++)
            for (int v = 0; v < 16; v++) lane[t * 16 + v] = lanes8(half_bits(phase + t * 8, v));
        const int full = p0 + TILE <= total;
        for (int v = 0; v < 16; v++) {
            const uint16_t valid = (uint16_t)valid_bits(tile, v / 2, total);
            store[v] = lanes8(half_bits(&valid, v % 2));
        }
        for (int h = 0; h < 2; h++) {
            for (int r = r0; r < r1; r++) {
                __m256 acc[8];
                for (int v = 0; v < 8; v++) acc[v] = _mm256_setzero_ps();
                // Entries in index order, as the other kernels sum them: the same roundings.
                for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
                    const __m256i *m = lane + tap[k] * 16 + 8 * h;
                    const __m256 wv = _mm256_broadcast_ss(w + k);
                    const float *xr = x + src[k] + p0 + 64 * h;
                    for (int v = 0; v < 8; v++)
                        acc[v] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(xr + 8 * v, m[v]), acc[v]);
                }
                float *yr = y + (ptrdiff_t)r * ldy + p0 + 64 * h;
                // Masked stores only in a partial last tile (they are slow on some x86 cores).
                if (full && stream && ((uintptr_t)yr & 31) == 0)
                    for (int v = 0; v < 8; v++) _mm256_stream_ps(yr + 8 * v, acc[v]);
                else if (full)
                    for (int v = 0; v < 8; v++) _mm256_storeu_ps(yr + 8 * v, acc[v]);
                else
                    for (int v = 0; v < 8; v++) _mm256_maskstore_ps(yr + 8 * v, store[8 * h + v], acc[v]);
            }
        }
    }
    if (stream) _mm_sfence();
}

/// As plane_group_avx512 with 8-lane vectors.
INLINE AVX2 void plane_group_avx2(const int G, const float *const xr[8], const float *d,
                                  const uint16_t *masks, int taps, int tap, int phases, int tiles,
                                  int total, int tile0, int tile1, float s[8]) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int tile = tile0; tile < tile1; tile++) {
        const int p0 = tile * TILE;
        const uint16_t *m = masks + (tile_phase(tile, tiles, total, phases) * taps + tap) * 8;
        for (int v = 0; v < 16; v++) {
            const __m256i k = lanes8(half_bits(m, v));
            const int p = p0 + 8 * v;
            const __m256 dv = _mm256_maskload_ps(d + p, k);
            for (int i = 0; i < G; i++) acc[i] = _mm256_fmadd_ps(dv, _mm256_maskload_ps(xr[i] + p, k), acc[i]);
        }
    }
    _mm256_storeu_ps(s, hsum8x8(acc));
}

DEFINE_PLANE_SDDMM(plane_sddmm_avx2, AVX2, plane_group_avx2)

#define HAVE_AVX512 __builtin_cpu_supports("avx512f")
#define HAVE_AVX2 (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#else
#define HAVE_AVX512 0
#define HAVE_AVX2 0
#define plane_spmm_avx2 plane_spmm_portable
#define plane_sddmm_avx2 plane_sddmm_portable
#define plane_spmm_avx512 plane_spmm_portable
#define plane_sddmm_avx512 plane_sddmm_portable
#endif

void stsp_plane_spmm(int isa, const int32_t *row_ptr, const int32_t *src, const uint8_t *tap,
                     const float *w, const float *x, const uint16_t *masks, int reach, int height,
                     int width, int total, float *y, ptrdiff_t ldy, int r0, int r1, int tile0,
                     int tile1, int stream) {
    const int taps = (2 * reach + 1) * (2 * reach + 1);
    if (isa == 2 && HAVE_AVX512)
        plane_spmm_avx512(row_ptr, src, tap, w, x, masks, taps, height, width, total, y, ldy, r0, r1, tile0, tile1, stream);
    else if (isa >= 1 && HAVE_AVX2)
        plane_spmm_avx2(row_ptr, src, tap, w, x, masks, taps, height, width, total, y, ldy, r0, r1, tile0, tile1, stream);
    else
        plane_spmm_portable(row_ptr, src, tap, w, x, masks, taps, height, width, total, y, ldy, r0, r1, tile0, tile1, stream);
}

void stsp_plane_sddmm(int isa, const int32_t *row_groups, const int32_t *group_entries,
                      const uint8_t *group_tap, const uint8_t *group_count, const int32_t *src,
                      const float *dy, ptrdiff_t lddy, const float *x, const uint16_t *masks,
                      int reach, int height, int width, int total, float *out,
                      const int32_t *outpos, int r0, int r1, int tile0, int tile1) {
    const int taps = (2 * reach + 1) * (2 * reach + 1);
    if (isa == 2 && HAVE_AVX512)
        plane_sddmm_avx512(row_groups, group_entries, group_tap, group_count, src, dy, lddy, x, masks, taps,
                           height, width, total, out, outpos, r0, r1, tile0, tile1);
    else if (isa >= 1 && HAVE_AVX2)
        plane_sddmm_avx2(row_groups, group_entries, group_tap, group_count, src, dy, lddy, x, masks, taps,
                         height, width, total, out, outpos, r0, r1, tile0, tile1);
    else
        plane_sddmm_portable(row_groups, group_entries, group_tap, group_count, src, dy, lddy, x, masks, taps,
                             height, width, total, out, outpos, r0, r1, tile0, tile1);
}
