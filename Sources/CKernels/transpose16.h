// Internal to CKernels (gemm.c, directconv.c): a 16 x 16 transpose of floats in AVX-512 registers.
#ifndef OH_TRANSPOSE16_H
#define OH_TRANSPOSE16_H
#include <immintrin.h>

// 16 x 16 transpose in registers: r[i][j] -> r[j][i].
__attribute__((target("avx512f"), always_inline))
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // u[4g + q]: column 4L + q of rows 4g..4g+3, in each 128-bit lane L.
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        __m512 v = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88), w = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xDD);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88), w2 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xDD);
        r[q] = _mm512_shuffle_f32x4(v, v2, 0x88);
        r[8 + q] = _mm512_shuffle_f32x4(v, v2, 0xDD);
        r[4 + q] = _mm512_shuffle_f32x4(w, w2, 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(w, w2, 0xDD);
    }
}

#endif
