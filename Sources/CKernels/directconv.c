// Direct convolution for AVX-512 CPUs (Conv2d.swift says for which layers): the products of the
// convolution's GEMMs computed from the (zero-padded) images themselves, with no columns at all
// (no im2col, no packing of columns, no col2im). The GEMM's roles are turned around: a tile is 8
// positions (or, for the weight gradient, 8 rows of the weight) by 32 outputs; the 8 come from the
// padded planes as broadcasts, each at its own base plus one offset per step of the sum (a table:
// the kernel offset (c, ki, kj) for forward, the position for the weight gradient), and the 32
// are two vectors of a packed weight panel (or of the transposed output gradient). Nothing is
// packed per chunk but the padded planes, which are about the size of the input where im2col's
// columns are k^2 / stride^2 times it (AlexNet's conv1: 7.6x).
//
// Each output is summed by one tile over its whole sum (forward: C k k terms in k order; weight
// gradient: blocks of DQ positions in order, each block added to the sum): results do not change
// with the number of threads.

#include "ohkernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#include "transpose16.h"
#endif

#define DR 8      // tile rows: positions (forward) or weight rows (weight gradient), broadcast
#define DN 32     // tile columns: outputs, two vectors
#define DQ 256    // positions per block of the weight gradient's sum

size_t oh_direct_packed_floats(size_t outputs, size_t K) { return (outputs + DN - 1) / DN * DN * K; }

void oh_direct_pack_weights(float *out, const float *w, size_t O, size_t C, size_t k, int flipped, size_t first_panel,
                            size_t panels) {
    const size_t kk = k * k, outputs = flipped ? C : O, K = flipped ? O * kk : C * kk;
    for (size_t panel = first_panel; panel < first_panel + panels; panel++) {
        float *o = out + panel * DN * K;
        for (size_t r = 0; r < K; r++, o += DN)
            for (size_t j = 0; j < DN; j++) {
                const size_t n = panel * DN + j;
                if (n >= outputs) { o[j] = 0.0f; continue; }
                if (!flipped) {
                    o[j] = w[n * K + r];
                } else {
                    // Row r = (output channel oc, ki, kj) of the flipped kernel, column n = input channel.
                    const size_t oc = r / kk, t = r % kk, ki = k - 1 - t / k, kj = k - 1 - t % k;
                    o[j] = w[((oc * C + n) * k + ki) * k + kj];
                }
            }
    }
}

void oh_pad_planes(float *dst, const float *src, size_t channels, size_t image_stride, size_t channel_stride, size_t H,
                   size_t W, size_t pad, size_t first, size_t count) {
    const size_t Wp = W + 2 * pad, Hp = H + 2 * pad;
    for (size_t plane = first; plane < first + count; plane++) {
        const float *s = src + plane / channels * image_stride + plane % channels * channel_stride;
        float *d = dst + plane * Hp * Wp;
        memset(d, 0, pad * Wp * sizeof(float));
        for (size_t h = 0; h < H; h++) {
            float *row = d + (pad + h) * Wp;
            memset(row, 0, pad * sizeof(float));
            memcpy(row + pad, s + h * W, W * sizeof(float));
            memset(row + pad + W, 0, pad * sizeof(float));
        }
        memset(d + (pad + H) * Wp, 0, pad * Wp * sizeof(float));
    }
}

#if defined(__x86_64__)

// Per-thread tables of offsets, kept between calls: no allocation per step.
static _Thread_local int32_t *offsets;
static _Thread_local size_t offsets_capacity;

// A table of `kernel` + `positions` offsets into the padded planes, without divisions (the
// kernels would otherwise spend a division per row of every tile): the kernel offsets (c, ki, kj)
// at [0, kernel), then each position's window corner (image, oh stride, ow stride).
static int32_t *offset_tables(const struct oh_conv_geometry *g, size_t images) {
    const size_t k = g->k, K = g->C * k * k, Wp = g->W + 2 * g->pad, plane = (g->H + 2 * g->pad) * Wp;
    const size_t n = K + images * g->Ho * g->Wo;
    if (n > offsets_capacity) {
        free(offsets);
        offsets = malloc(n * sizeof(int32_t));
        offsets_capacity = offsets ? n : 0;
        if (!offsets) return NULL;
    }
    int32_t *t = offsets;
    for (size_t c = 0; c < g->C; c++)
        for (size_t ki = 0; ki < k; ki++)
            for (size_t kj = 0; kj < k; kj++) *t++ = (int32_t)(c * plane + ki * Wp + kj);
    for (size_t img = 0; img < images; img++)
        for (size_t oh = 0; oh < g->Ho; oh++)
            for (size_t ow = 0; ow < g->Wo; ow++) *t++ = (int32_t)(img * g->C * plane + oh * g->stride * Wp + ow * g->stride);
    return offsets;
}

// acc[i][v] = sum over p < kc of src[i][koff[p]] b[p ldb + 16 v + lane], for the DR rows.
__attribute__((target("avx512f"), always_inline))
static inline void direct_tile(size_t kc, const float *const src[DR], const int32_t *restrict koff, const float *restrict b,
                               size_t ldb, __mmask16 m0, __mmask16 m1, __m512 acc[DR][2]) {
    const float *s0 = src[0], *s1 = src[1], *s2 = src[2], *s3 = src[3], *s4 = src[4], *s5 = src[5], *s6 = src[6], *s7 = src[7];
    for (int i = 0; i < DR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
#pragma clang loop unroll_count(4)
    for (size_t p = 0; p < kc; p++) {
        const ptrdiff_t o = koff[p];
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
#define OH_ROW(i, s) do { const __m512 a = _mm512_set1_ps(s[o]); \
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]); acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]); } while (0)
        OH_ROW(0, s0); OH_ROW(1, s1); OH_ROW(2, s2); OH_ROW(3, s3);
        OH_ROW(4, s4); OH_ROW(5, s5); OH_ROW(6, s6); OH_ROW(7, s7);
#undef OH_ROW
        b += ldb;
    }
}

static inline __mmask16 lanes(ptrdiff_t n) { return n <= 0 ? 0 : n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

// ReLU as PyTorch's (NaN stays NaN, and -0 or below becomes +0).
__attribute__((target("avx512f"), always_inline))
static inline __m512 relu512(__m512 v) {
    const __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_maskz_mov_ps(keep, v);
}

// dst = src (rows, columns; lds apart) transposed into panels of 32 rows: dst[(i / 32) columns
// 32 + j 32 + i % 32] = src[i lds + j] (rows past the last zero, to the panel's end), for src's
// columns [first, first + count); 16 x 16 blocks transposed in registers.
__attribute__((target("avx512f")))
void oh_transpose_panels(float *dst, const float *src, size_t lds, size_t rows, size_t columns, size_t first, size_t count) {
    const size_t padded_rows = (rows + DN - 1) / DN * DN;
    for (size_t j0 = first; j0 < first + count; j0 += 16) {
        const size_t nj = first + count - j0 < 16 ? first + count - j0 : 16;
        const __mmask16 mj = lanes((ptrdiff_t)nj);
        for (size_t i0 = 0; i0 < padded_rows; i0 += 16) {
            __m512 r[16];
            for (size_t i = 0; i < 16; i++) r[i] = i0 + i < rows ? _mm512_maskz_loadu_ps(mj, src + (i0 + i) * lds + j0) : _mm512_setzero_ps();
            transpose16(r);
            float *d = dst + i0 / DN * columns * DN + i0 % DN;
            for (size_t j = 0; j < nj; j++) _mm512_storeu_ps(d + (j0 + j) * DN, r[j]);
        }
    }
}

// dst (rows, columns; ldd apart) += src^T (src: columns x rows, lds apart), then src = 0, for
// dst's rows [first, first + count).
__attribute__((target("avx512f")))
void oh_transpose_add_clear(float *dst, size_t ldd, float *src, size_t lds, size_t columns, size_t first, size_t count) {
    for (size_t i0 = first; i0 < first + count; i0 += 16) {
        const size_t ni = first + count - i0 < 16 ? first + count - i0 : 16;
        const __mmask16 mi = lanes((ptrdiff_t)ni);
        for (size_t j0 = 0; j0 < columns; j0 += 16) {
            const size_t nj = columns - j0 < 16 ? columns - j0 : 16;
            const __mmask16 mj = lanes((ptrdiff_t)nj);
            __m512 r[16];
            for (size_t j = 0; j < 16; j++) {
                r[j] = j < nj ? _mm512_maskz_loadu_ps(mi, src + (j0 + j) * lds + i0) : _mm512_setzero_ps();
                if (j < nj) _mm512_mask_storeu_ps(src + (j0 + j) * lds + i0, mi, _mm512_setzero_ps());
            }
            transpose16(r);
            for (size_t i = 0; i < ni; i++) {
                float *d = dst + (i0 + i) * ldd + j0;
                _mm512_mask_storeu_ps(d, mj, _mm512_add_ps(_mm512_maskz_loadu_ps(mj, d), r[i]));
            }
        }
    }
}

__attribute__((target("avx512f")))
int oh_direct_conv_forward(float *y, const float *xpad, const float *packed, const float *bias, size_t O,
                           const struct oh_conv_geometry *g, size_t images, int relu, int accumulate,
                           size_t first_unit, size_t units, uint32_t *largest) {
    if (!oh_gemm_available()) return 0;
    const size_t K = g->C * g->k * g->k, P = g->Ho * g->Wo, positions = images * P, tiles = (positions + DR - 1) / DR;
    const int32_t *koff = offset_tables(g, images), *qoff = koff + K;
    if (!koff) return 0;
    __m256i top = _mm256_setzero_si256();
    for (size_t u = first_unit; u < first_unit + units; u++) {
        const size_t panel = u / tiles, q0 = u % tiles * DR, o0 = panel * DN;
        const float *src[DR];
        size_t img0 = q0 / P, p0 = q0 % P;
        for (size_t i = 0; i < DR; i++) src[i] = xpad + qoff[q0 + i < positions ? q0 + i : q0];
        __m512 acc[DR][2];
        direct_tile(K, src, koff, packed + panel * DN * K, DN, 0xffff, 0xffff, acc);
        if (q0 + DR <= positions && p0 + DR <= P) {
            // The 8 positions lie in one plane, consecutive: per output, one 256-bit row.
            __m512 r[16];
            for (int i = 0; i < DR; i++) { r[i] = acc[i][0]; r[DR + i] = acc[i][1]; }
            transpose16(r);
            float *base = y + (img0 * O + o0) * P + p0;
            for (size_t j = 0; j < 16; j++) {
                // Lanes 0-7: output o0 + j; lanes 8-15: output o0 + 16 + j.
                __m512 v = r[j];
                const int lo = o0 + j < O, hi = o0 + 16 + j < O;
                if (bias) v = _mm512_add_ps(v, _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(lo ? bias[o0 + j] : 0.0f),
                                                                   _mm512_set1_ps(hi ? bias[o0 + 16 + j] : 0.0f)));
                if (relu) v = relu512(v);
                __m256 vlo = _mm512_castps512_ps256(v), vhi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                float *dlo = base + j * P, *dhi = base + (16 + j) * P;
                if (accumulate) {
                    if (lo) vlo = _mm256_add_ps(vlo, _mm256_loadu_ps(dlo));
                    if (hi) vhi = _mm256_add_ps(vhi, _mm256_loadu_ps(dhi));
                }
                if (lo) { _mm256_storeu_ps(dlo, vlo); top = _mm256_max_epu32(top, _mm256_and_si256(_mm256_castps_si256(vlo), _mm256_set1_epi32(0x7fffffff))); }
                if (hi) { _mm256_storeu_ps(dhi, vhi); top = _mm256_max_epu32(top, _mm256_and_si256(_mm256_castps_si256(vhi), _mm256_set1_epi32(0x7fffffff))); }
            }
        } else {
            // A tile across two images or past the last position: one value at a time.
            float tile[DR][DN];
            for (int i = 0; i < DR; i++) { _mm512_storeu_ps(tile[i], acc[i][0]); _mm512_storeu_ps(tile[i] + 16, acc[i][1]); }
            uint32_t t = 0;
            for (size_t i = 0; i < DR && q0 + i < positions; i++) {
                const size_t img = (q0 + i) / P, p = (q0 + i) % P;
                for (size_t j = 0; j < DN && o0 + j < O; j++) {
                    float v = tile[i][j] + (bias ? bias[o0 + j] : 0.0f);
                    if (relu) v = v > 0.0f ? v : (v != v ? v : 0.0f);
                    float *d = y + (img * O + o0 + j) * P + p;
                    v = accumulate ? *d + v : v;
                    *d = v;
                    union { float f; uint32_t u; } bits = { v };
                    t = (bits.u & 0x7fffffffu) > t ? bits.u & 0x7fffffffu : t;
                }
            }
            top = _mm256_max_epu32(top, _mm256_set1_epi32((int32_t)t));
        }
    }
    uint32_t lanes_[8], best = 0;
    _mm256_storeu_si256((__m256i *)lanes_, top);
    for (int i = 0; i < 8; i++) best = lanes_[i] > best ? lanes_[i] : best;
    *largest = best;
    return 1;
}

__attribute__((target("avx512f")))
int oh_direct_conv_weight_gradient(float *dwt, const float *xpad, const float *dyt, size_t O, const struct oh_conv_geometry *g,
                                   size_t images, size_t first_unit, size_t units) {
    if (!oh_gemm_available()) return 0;
    const size_t K = g->C * g->k * g->k, positions = images * g->Ho * g->Wo, rtiles = (K + DR - 1) / DR;
    const int32_t *roff = offset_tables(g, images), *qoff = roff + K;
    if (!roff) return 0;
    for (size_t q0 = 0; q0 < positions; q0 += DQ) {
        const size_t kc = positions - q0 < DQ ? positions - q0 : DQ;
        for (size_t u = first_unit; u < first_unit + units; u++) {
            const size_t r0 = u % rtiles * DR, o0 = u / rtiles * DN;
            const float *src[DR];
            for (size_t i = 0; i < DR; i++) src[i] = xpad + roff[r0 + i < K ? r0 + i : r0];
            const __mmask16 m0 = lanes((ptrdiff_t)O - (ptrdiff_t)o0), m1 = lanes((ptrdiff_t)O - (ptrdiff_t)o0 - 16);
            __m512 acc[DR][2];
            direct_tile(kc, src, qoff + q0, dyt + (o0 * positions + q0 * DN), DN, 0xffff, 0xffff, acc);
            for (size_t i = 0; i < DR && r0 + i < K; i++) {
                float *row = dwt + (r0 + i) * O + o0;
                _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), acc[i][0]));
                _mm512_mask_storeu_ps(row + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), acc[i][1]));
            }
        }
    }
    return 1;
}

#else

void oh_transpose_panels(float *dst, const float *src, size_t lds, size_t rows, size_t columns, size_t first, size_t count) {}
void oh_transpose_add_clear(float *dst, size_t ldd, float *src, size_t lds, size_t columns, size_t first, size_t count) {}
int oh_direct_conv_forward(float *y, const float *xpad, const float *packed, const float *bias, size_t O,
                           const struct oh_conv_geometry *g, size_t images, int relu, int accumulate,
                           size_t first_unit, size_t units, uint32_t *largest) { return 0; }
int oh_direct_conv_weight_gradient(float *dwt, const float *xpad, const float *dyt, size_t O, const struct oh_conv_geometry *g,
                                   size_t images, size_t first_unit, size_t units) { return 0; }

#endif
