#include "sparse_kernels.h"

// Forward / input-gradient kernel: output-stationary. For one row and a tile of the batch, the
// outputs stay in registers across all the row's entries (one broadcast weight, one activation
// row load per vector), so nothing is read back and written per entry.
// Weight-gradient kernel: for a row r, eight entries at a time, dot products of the dy row with
// eight activation rows in eight accumulators, folded with one horizontal-add tree.
// Rows are independent: callers split [r0, r1) between threads (disjoint outputs, no atomics).

// ---- portable C ---------------------------------------------------------------------------

static void spmm_portable(const int32_t *row_ptr, const int32_t *src, const int32_t *wpos,
                          const float *w, const float *x, ptrdiff_t ldx, int n, float *y,
                          ptrdiff_t ldy, int r0, int r1, int accumulate) {
    for (int r = r0; r < r1; r++) {
        float *yr = y + (ptrdiff_t)r * ldy;
        if (!accumulate)
            for (int b = 0; b < n; b++) yr[b] = 0;
        for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
            const float v = wpos ? w[wpos[k]] : w[k];
            const float *xr = x + (ptrdiff_t)src[k] * ldx;
            for (int b = 0; b < n; b++) yr[b] += v * xr[b];
        }
    }
}

static void sddmm_portable(const int32_t *row_ptr, ptrdiff_t block_stride, int blocks, const int32_t *src,
                           const float *dy, ptrdiff_t lddy, const float *x, ptrdiff_t ldx, int n, float *out,
                           const int32_t *outpos, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        const float *d = dy + (ptrdiff_t)r * lddy;
        for (int b = 0; b < blocks; b++) {
            const int32_t *rp = row_ptr + b * block_stride;
            for (int32_t k = rp[r]; k < rp[r + 1]; k++) {
                const float *xr = x + (ptrdiff_t)src[k] * ldx;
                float s = 0;
                for (int i = 0; i < n; i++) s += d[i] * xr[i];
                out[outpos ? outpos[k] : k] += s;
            }
        }
    }
}

static void scatter_portable(const int32_t *row_ptr, const int32_t *src, const float *w,
                             const float *dy, ptrdiff_t lddy, int n, float *dx, ptrdiff_t lddx,
                             int rows) {
    for (int r = 0; r < rows; r++) {
        const float *g = dy + (ptrdiff_t)r * lddy;
        for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; k++) {
            float *o = dx + (ptrdiff_t)src[k] * lddx;
            for (int b = 0; b < n; b++) o[b] += w[k] * g[b];
        }
    }
}

/// Weights ahead whose cache lines the gather prefetches.
#define GATHER_PREFETCH_DISTANCE 32

void stsp_gather(const int32_t *offset, const float *w, const int32_t *entry1, float *dst1,
                 const int32_t *entry2, float *dst2, ptrdiff_t j0, ptrdiff_t j1) {
    if (!offset) {
        for (ptrdiff_t j = j0; j < j1; j++) {
            dst1[entry1[j]] = w[j];
            if (dst2) dst2[entry2[j]] = w[j];
        }
        return;
    }
    const ptrdiff_t ahead = j1 - GATHER_PREFETCH_DISTANCE;
    for (ptrdiff_t j = j0; j < j1; j++) {
        if (j < ahead) __builtin_prefetch(w + offset[j + GATHER_PREFETCH_DISTANCE], 0, 0);
        const float v = w[offset[j]];
        dst1[entry1[j]] = v;
        if (dst2) dst2[entry2[j]] = v;
    }
}

#if defined(__x86_64__)
#include "x86_common.h"

/// The region the next product reads (see stsp_spmm): `rows` rows of `n` floats, `ld` apart.
struct ahead {
    const float *x;
    ptrdiff_t ld;
    int rows, n;
};

/// Prefetches into L2 row i's share (of `count` rows) of the lines of region `a`.
static inline void prefetch_share(struct ahead a, int i, int count) {
    if (!a.x || count <= 0) return;
    const long per_row = (a.n + 15) / 16, total = (long)a.rows * per_row;
    const long first = total * i / count, last = total * (i + 1) / count;
    for (long l = first; l < last; l++)
        _mm_prefetch((const char *)(a.x + (l / per_row) * a.ld) + 64 * (l % per_row), _MM_HINT_T1);
}

/// Defines NAME: for each row, full tiles of 8 vectors of WIDTH floats, then the rest as P < 8
/// vectors and a masked tail, with P a constant in each call so TILE unrolls.
#define DEFINE_SPMM(NAME, ATTR, TILE, WIDTH)                                                      \
    static ATTR void NAME(const int32_t *row_ptr, const int32_t *src, const int32_t *wpos,       \
                          const float *w, const float *x, ptrdiff_t ldx, int n, float *y,         \
                          ptrdiff_t ldy, int r0, int r1, int accumulate, struct ahead next) {     \
        for (int r = r0; r < r1; r++) {                                                           \
            const int32_t k0 = row_ptr[r], k1 = row_ptr[r + 1];                                   \
            float *yr = y + (ptrdiff_t)r * ldy;                                                   \
            prefetch_share(next, r - r0, r1 - r0);                                                \
            int b = 0;                                                                            \
            for (; n - b >= 8 * (WIDTH); b += 8 * (WIDTH))                                        \
                TILE(8, 0, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate);                 \
            const int rest = n - b, P = rest / (WIDTH), tail = rest % (WIDTH);                    \
            switch (P) {                                                                          \
            case 7: TILE(7, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 6: TILE(6, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 5: TILE(5, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 4: TILE(4, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 3: TILE(3, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 2: TILE(2, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            case 1: TILE(1, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate); break;   \
            default:                                                                              \
                if (tail) TILE(0, tail, src, wpos, k0, k1, w, x + b, ldx, yr + b, accumulate);    \
            }                                                                                     \
        }                                                                                         \
    }

/// Defines NAME: column tiles of 8 vectors of WIDTH floats (then the rest as P < 8 vectors and
/// a masked tail, P constant in each call so TILE unrolls), each over every row of the index, so
/// the tile's slice of dx stays in cache while the rows scatter into it.
#define DEFINE_SCATTER(NAME, ATTR, TILE, WIDTH)                                                   \
    static ATTR void NAME(const int32_t *row_ptr, const int32_t *src, const float *w,             \
                          const float *dy, ptrdiff_t lddy, int n, float *dx, ptrdiff_t lddx,      \
                          int rows) {                                                             \
        int b = 0;                                                                                \
        for (; n - b >= 8 * (WIDTH); b += 8 * (WIDTH))                                            \
            for (int r = 0; r < rows; r++)                                                        \
                TILE(8, 0, src, row_ptr[r], row_ptr[r + 1], w, dy + (ptrdiff_t)r * lddy + b,      \
                     dx + b, lddx);                                                               \
        const int rest = n - b, P = rest / (WIDTH), tail = rest % (WIDTH);                        \
        if (rest == 0) return;                                                                    \
        for (int r = 0; r < rows; r++) {                                                          \
            const int32_t k0 = row_ptr[r], k1 = row_ptr[r + 1];                                   \
            const float *g = dy + (ptrdiff_t)r * lddy + b;                                        \
            switch (P) {                                                                          \
            case 7: TILE(7, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 6: TILE(6, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 5: TILE(5, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 4: TILE(4, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 3: TILE(3, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 2: TILE(2, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            case 1: TILE(1, tail, src, k0, k1, w, g, dx + b, lddx); break;                        \
            default: TILE(0, tail, src, k0, k1, w, g, dx + b, lddx);                              \
            }                                                                                     \
        }                                                                                         \
    }

// ---- AVX2 + FMA: 8 floats per vector, tiles of up to 8 vectors ---------------------------

/// Lanes [0, count) of a ymm mask.
INLINE AVX2 __m256i tail_mask8(int count) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

/// One row, P full vectors (+ one masked vector when tail > 0) starting at yr / column b.
INLINE AVX2 void spmm_tile8(const int P, int tail, const int32_t *src, const int32_t *wpos,
                            int32_t k0, int32_t k1, const float *w, const float *x,
                            ptrdiff_t ldx, float *yr, int accumulate) {
    __m256 acc[9];
    const __m256i tm = tail_mask8(tail);
    for (int p = 0; p < P; p++) acc[p] = accumulate ? _mm256_loadu_ps(yr + 8 * p) : _mm256_setzero_ps();
    if (tail) acc[P] = accumulate ? _mm256_maskload_ps(yr + 8 * P, tm) : _mm256_setzero_ps();
    for (int32_t k = k0; k < k1; k++) {
        const __m256 v = _mm256_broadcast_ss(wpos ? w + wpos[k] : w + k);
        const float *xr = x + (ptrdiff_t)src[k] * ldx;
        for (int p = 0; p < P; p++) acc[p] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8 * p), acc[p]);
        if (tail) acc[P] = _mm256_fmadd_ps(v, _mm256_maskload_ps(xr + 8 * P, tm), acc[P]);
    }
    for (int p = 0; p < P; p++) _mm256_storeu_ps(yr + 8 * p, acc[p]);
    if (tail) _mm256_maskstore_ps(yr + 8 * P, tm, acc[P]);
}

DEFINE_SPMM(spmm_avx2, AVX2, spmm_tile8, 8)

/// One row's dY slice (P vectors + masked tail) in registers, scattered into the dx rows of its
/// entries: dx[src[k]] += w[k] · dY[r].
INLINE AVX2 void scatter_tile8(const int P, int tail, const int32_t *src, int32_t k0, int32_t k1,
                               const float *w, const float *g, float *dx, ptrdiff_t lddx) {
    if (k0 == k1) return;
    __m256 d[9];
    const __m256i tm = tail_mask8(tail);
    for (int p = 0; p < P; p++) d[p] = _mm256_loadu_ps(g + 8 * p);
    if (tail) d[P] = _mm256_maskload_ps(g + 8 * P, tm);
    for (int32_t k = k0; k < k1; k++) {
        const __m256 v = _mm256_broadcast_ss(w + k);
        float *o = dx + (ptrdiff_t)src[k] * lddx;
        for (int p = 0; p < P; p++) _mm256_storeu_ps(o + 8 * p, _mm256_fmadd_ps(v, d[p], _mm256_loadu_ps(o + 8 * p)));
        if (tail) _mm256_maskstore_ps(o + 8 * P, tm, _mm256_fmadd_ps(v, d[P], _mm256_maskload_ps(o + 8 * P, tm)));
    }
}

DEFINE_SCATTER(scatter_avx2, AVX2, scatter_tile8, 8)

INLINE void add_results(float *out, const int32_t *outpos, const int32_t *e, const float *s, int count) {
    if (outpos)
        for (int i = 0; i < count; i++) out[outpos[e[i]]] += s[i];
    else
        for (int i = 0; i < count; i++) out[e[i]] += s[i];
}

/// Dot products of one dy row with eight activation rows xr[0..8) (n floats each), summed
/// horizontally: s[i] = Σ_b d[b] · xr[i][b].
INLINE AVX2 void sddmm_group8(const float *d, const float *const xr[8], int full, int tail, __m256i tm,
                              float s[8]) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < full; b += 8) {
        const __m256 dv = _mm256_loadu_ps(d + b);
        for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(xr[i] + b), acc[i]);
    }
    if (tail) {
        const __m256 dv = _mm256_maskload_ps(d + full, tm);
        for (int i = 0; i < 8; i++) acc[i] = _mm256_fmadd_ps(dv, _mm256_maskload_ps(xr[i] + full, tm), acc[i]);
    }
    _mm256_storeu_ps(s, hsum8x8(acc));
}

/// Rows ahead whose results' lines the weight gradient prefetches: each row's sums are added
/// into `out` (a packed gradient of millions of entries lies in L3 or memory), and waiting on
/// those lines stalled the kernel.
#define SDDMM_OUT_AHEAD 4

/// Prefetches the lines of `out` that row r's entries in blocks [0, blocks) add into: from its
/// first entry's position to its last one's (one run in the packed row-major order), at most 8.
INLINE void prefetch_outputs(float *out, const int32_t *outpos, const int32_t *row_ptr,
                             ptrdiff_t block_stride, int blocks, int r) {
    const int32_t k0 = row_ptr[r], k1 = row_ptr[(blocks - 1) * block_stride + r + 1] - 1;
    if (k1 < k0) return;
    const char *first = (const char *)(out + (outpos ? outpos[k0] : k0));
    const char *last = (const char *)(out + (outpos ? outpos[k1] : k1));
    if (last < first || last - first > 7 * 64) last = first;
    for (const char *p = first; p <= last + 63; p += 64) _mm_prefetch(p, _MM_HINT_T0);
}

/// Defines NAME: per row, its entries in `blocks` consecutive source blocks (row starts
/// `block_stride` apart) taken eight at a time through GROUP, across block boundaries, then the
/// last 1–7 as one group (the first repeated in the unused slots): eight independent sums, not
/// one serial chain per entry, and no partial group per block however narrow the blocks are.
#define DEFINE_SDDMM(NAME, ATTR, GROUP, WIDTH, MASK_T, MASK)                                      \
    static ATTR void NAME(const int32_t *row_ptr, ptrdiff_t block_stride, int blocks,             \
                          const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x,    \
                          ptrdiff_t ldx, int n, float *out, const int32_t *outpos, int r0,        \
                          int r1) {                                                               \
        const int full = n / (WIDTH) * (WIDTH), tail = n % (WIDTH);                               \
        const MASK_T tm = MASK(tail);                                                             \
        for (int r = r0; r < r1; r++) {                                                           \
            const float *d = dy + (ptrdiff_t)r * lddy;                                            \
            if (r + SDDMM_OUT_AHEAD < r1)                                                         \
                prefetch_outputs(out, outpos, row_ptr, block_stride, blocks, r + SDDMM_OUT_AHEAD); \
            const float *xr[8];                                                                   \
            int32_t e[8];                                                                         \
            float s[8];                                                                           \
            int count = 0;                                                                        \
            for (int b = 0; b < blocks; b++) {                                                    \
                const int32_t *rp = row_ptr + b * block_stride;                                   \
                for (int32_t k = rp[r]; k < rp[r + 1]; k++) {                                     \
                    e[count] = k;                                                                 \
                    xr[count] = x + (ptrdiff_t)src[k] * ldx;                                      \
                    if (++count == 8) {                                                           \
                        GROUP(d, xr, full, tail, tm, s);                                          \
                        add_results(out, outpos, e, s, 8);                                        \
                        count = 0;                                                                \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
            if (count > 0) {                                                                      \
                for (int i = count; i < 8; i++) xr[i] = xr[0];                                    \
                GROUP(d, xr, full, tail, tm, s);                                                  \
                add_results(out, outpos, e, s, count);                                            \
            }                                                                                     \
        }                                                                                         \
    }

DEFINE_SDDMM(sddmm_avx2, AVX2, sddmm_group8, 8, __m256i, tail_mask8)

// ---- AVX-512F: 16 floats per vector, tiles of up to 8 vectors -----------------------------

INLINE AVX512 void spmm_tile16(const int P, int tail, const int32_t *src, const int32_t *wpos,
                               int32_t k0, int32_t k1, const float *w, const float *x,
                               ptrdiff_t ldx, float *yr, int accumulate) {
    __m512 acc[9];
    const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    for (int p = 0; p < P; p++) acc[p] = accumulate ? _mm512_loadu_ps(yr + 16 * p) : _mm512_setzero_ps();
    if (tail) acc[P] = accumulate ? _mm512_maskz_loadu_ps(tm, yr + 16 * P) : _mm512_setzero_ps();
    for (int32_t k = k0; k < k1; k++) {
        const __m512 v = _mm512_set1_ps(wpos ? w[wpos[k]] : w[k]);
        const float *xr = x + (ptrdiff_t)src[k] * ldx;
        for (int p = 0; p < P; p++) acc[p] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16 * p), acc[p]);
        if (tail) acc[P] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(tm, xr + 16 * P), acc[P]);
    }
    for (int p = 0; p < P; p++) _mm512_storeu_ps(yr + 16 * p, acc[p]);
    if (tail) _mm512_mask_storeu_ps(yr + 16 * P, tm, acc[P]);
}

DEFINE_SPMM(spmm_avx512, AVX512, spmm_tile16, 16)

/// As `scatter_tile8` with 16 floats per vector.
INLINE AVX512 void scatter_tile16(const int P, int tail, const int32_t *src, int32_t k0, int32_t k1,
                                  const float *w, const float *g, float *dx, ptrdiff_t lddx) {
    if (k0 == k1) return;
    __m512 d[9];
    const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
    for (int p = 0; p < P; p++) d[p] = _mm512_loadu_ps(g + 16 * p);
    if (tail) d[P] = _mm512_maskz_loadu_ps(tm, g + 16 * P);
    for (int32_t k = k0; k < k1; k++) {
        const __m512 v = _mm512_set1_ps(w[k]);
        float *o = dx + (ptrdiff_t)src[k] * lddx;
        for (int p = 0; p < P; p++) _mm512_storeu_ps(o + 16 * p, _mm512_fmadd_ps(v, d[p], _mm512_loadu_ps(o + 16 * p)));
        if (tail) _mm512_mask_storeu_ps(o + 16 * P, tm, _mm512_fmadd_ps(v, d[P], _mm512_maskz_loadu_ps(tm, o + 16 * P)));
    }
}

DEFINE_SCATTER(scatter_avx512, AVX512, scatter_tile16, 16)

/// Dot products of one dy row with eight activation rows xr[0..8) (n floats each), summed
/// horizontally: s[i] = Σ_b d[b] · xr[i][b].
INLINE AVX512 void sddmm_group16(const float *d, const float *const xr[8], int full, int tail, __mmask16 tm,
                                 float s[8]) {
    __m512 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < full; b += 16) {
        const __m512 dv = _mm512_loadu_ps(d + b);
        for (int i = 0; i < 8; i++) acc[i] = _mm512_fmadd_ps(dv, _mm512_loadu_ps(xr[i] + b), acc[i]);
    }
    if (tail) {
        const __m512 dv = _mm512_maskz_loadu_ps(tm, d + full);
        for (int i = 0; i < 8; i++) acc[i] = _mm512_fmadd_ps(dv, _mm512_maskz_loadu_ps(tm, xr[i] + full), acc[i]);
    }
    _mm256_storeu_ps(s, hsum16x8(acc));
}

/// Lanes [0, count) of a zmm mask.
INLINE AVX512 __mmask16 tail_mask16(int count) { return (__mmask16)((1u << count) - 1u); }

DEFINE_SDDMM(sddmm_avx512, AVX512, sddmm_group16, 16, __mmask16, tail_mask16)

int stsp_isa_supported(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case 0: return 1;
    case 1: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case 2: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return 0;
    }
}

void stsp_spmm(int isa, const int32_t *row_ptr, const int32_t *src, const int32_t *wpos,
               const float *w, const float *x, ptrdiff_t ldx, int n, float *y, ptrdiff_t ldy,
               int r0, int r1, int accumulate, const float *ahead, int ahead_rows, int ahead_n) {
    const struct ahead next = {ahead, ldx, ahead_rows, ahead_n};
    if (isa == 2) spmm_avx512(row_ptr, src, wpos, w, x, ldx, n, y, ldy, r0, r1, accumulate, next);
    else if (isa == 1) spmm_avx2(row_ptr, src, wpos, w, x, ldx, n, y, ldy, r0, r1, accumulate, next);
    else spmm_portable(row_ptr, src, wpos, w, x, ldx, n, y, ldy, r0, r1, accumulate);
}

void stsp_scatter(int isa, const int32_t *row_ptr, const int32_t *src, const float *w,
                  const float *dy, ptrdiff_t lddy, int n, float *dx, ptrdiff_t lddx, int rows) {
    if (isa == 2) scatter_avx512(row_ptr, src, w, dy, lddy, n, dx, lddx, rows);
    else if (isa == 1) scatter_avx2(row_ptr, src, w, dy, lddy, n, dx, lddx, rows);
    else scatter_portable(row_ptr, src, w, dy, lddy, n, dx, lddx, rows);
}

void stsp_sddmm(int isa, const int32_t *row_ptr, ptrdiff_t block_stride, int blocks,
                const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x, ptrdiff_t ldx,
                int n, float *out, const int32_t *outpos, int r0, int r1) {
    if (isa == 2) sddmm_avx512(row_ptr, block_stride, blocks, src, dy, lddy, x, ldx, n, out, outpos, r0, r1);
    else if (isa == 1) sddmm_avx2(row_ptr, block_stride, blocks, src, dy, lddy, x, ldx, n, out, outpos, r0, r1);
    else sddmm_portable(row_ptr, block_stride, blocks, src, dy, lddy, x, ldx, n, out, outpos, r0, r1);
}

#else

int stsp_isa_supported(int isa) { return isa == 0; }

void stsp_spmm(int isa, const int32_t *row_ptr, const int32_t *src, const int32_t *wpos,
               const float *w, const float *x, ptrdiff_t ldx, int n, float *y, ptrdiff_t ldy,
               int r0, int r1, int accumulate, const float *ahead, int ahead_rows, int ahead_n) {
    (void)isa; (void)ahead; (void)ahead_rows; (void)ahead_n;
    spmm_portable(row_ptr, src, wpos, w, x, ldx, n, y, ldy, r0, r1, accumulate);
}

void stsp_scatter(int isa, const int32_t *row_ptr, const int32_t *src, const float *w,
                  const float *dy, ptrdiff_t lddy, int n, float *dx, ptrdiff_t lddx, int rows) {
    (void)isa;
    scatter_portable(row_ptr, src, w, dy, lddy, n, dx, lddx, rows);
}

void stsp_sddmm(int isa, const int32_t *row_ptr, ptrdiff_t block_stride, int blocks,
                const int32_t *src, const float *dy, ptrdiff_t lddy, const float *x, ptrdiff_t ldx,
                int n, float *out, const int32_t *outpos, int r0, int r1) {
    (void)isa;
    sddmm_portable(row_ptr, block_stride, blocks, src, dy, lddy, x, ldx, n, out, outpos, r0, r1);
}

#endif
