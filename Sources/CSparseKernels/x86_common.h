#ifndef SPARSETRAIN_X86_COMMON_H
#define SPARSETRAIN_X86_COMMON_H
// Shared by the x86 kernel files of this target: target attributes and horizontal sums.
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/// [Σa0, Σa1, …, Σa7]: the horizontal sums of eight vectors in one vector.
INLINE AVX2 __m256 hsum8x8(const __m256 a[8]) {
    const __m256 h0 = _mm256_hadd_ps(a[0], a[1]), h1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 h2 = _mm256_hadd_ps(a[4], a[5]), h3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 g0 = _mm256_hadd_ps(h0, h1), g1 = _mm256_hadd_ps(h2, h3);
    return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

/// As hsum8x8 for eight 512-bit vectors: each one's 256-bit halves added first.
INLINE AVX512 __m256 hsum16x8(const __m512 a[8]) {
    __m256 h[8];
    for (int i = 0; i < 8; i++)
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(a[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[i]), 1)));
    return hsum8x8(h);
}

#endif
