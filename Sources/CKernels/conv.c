// Convolution and pooling over PyTorch's NCHW layout: the passes around the GEMMs of a
// convolution (im2col, col2im, the output's bias + ReLU + transposition, the gradient's gather)
// and max pooling. Layer.swift and Conv2d.swift say how they fit together.
//
// Dimensions: n images, C input channels, H x W input, k x k kernel, Ho x Wo output,
// P = Ho x Wo, O output channels.

#include "ohkernels.h"
#include "clones.h"
#include <string.h>

static inline uint32_t magnitude_bits(float x) {
    union { float f; uint32_t u; } v = { x };
    return v.u & 0x7fffffffu;
}

// The output columns ow of one kernel offset whose input column lies inside the image:
// 0 <= ow * stride - pad + kj < W.
static inline void valid_columns(ptrdiff_t W, ptrdiff_t Wo, ptrdiff_t stride, ptrdiff_t offset,
                                 ptrdiff_t *lo, ptrdiff_t *hi) {
    // offset = kj - pad; ow >= ceil(-offset / stride), ow < ceil((W - offset) / stride)
    ptrdiff_t a = -offset, b = W - offset;
    ptrdiff_t l = a <= 0 ? 0 : (a + stride - 1) / stride;
    ptrdiff_t h = b <= 0 ? 0 : (b + stride - 1) / stride;
    *lo = l < Wo ? l : Wo;
    *hi = h < Wo ? h : Wo;
    if (*hi < *lo) *hi = *lo;
}

// no_builtin: clang would turn the row copies and the zeros beside them into calls to memmove and
// memset, each costing more than a row of a few dozen floats does.
OH_CLONES __attribute__((no_builtin("memcpy", "memmove", "memset")))
void oh_im2col(float *restrict col, size_t row_length, const float *restrict x, size_t images, size_t C, size_t H, size_t W,
               size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo, size_t first_row, size_t rows) {
    const size_t P = Ho * Wo;
    for (size_t r = first_row; r < first_row + rows; r++) {
        const size_t c = r / (k * k), ki = r / k % k, kj = r % k;
        float *dst = col + r * row_length;
        ptrdiff_t lo, hi, offset = (ptrdiff_t)kj - (ptrdiff_t)pad;
        valid_columns((ptrdiff_t)W, (ptrdiff_t)Wo, (ptrdiff_t)stride, offset, &lo, &hi);
        if (stride == 1 && Wo == W) {
            // "Same" padding (AlexNet's and VGG's stride-1 layers, the cnn's): an image's block is
            // its plane shifted by (ki - pad) rows and (kj - pad) columns, so one long copy, then
            // zeros where the shift wrapped into the next row or left the plane. Measured in 3
            // alternated pairs of whole steps: the cnn +2% at 1 thread, AlexNet within noise.
            const ptrdiff_t dr = (ptrdiff_t)ki - (ptrdiff_t)pad, HW = (ptrdiff_t)(H * W);
            ptrdiff_t first = dr < 0 ? -dr : 0, last = (ptrdiff_t)H - dr;
            if (last > (ptrdiff_t)Ho) last = (ptrdiff_t)Ho;
            if (last < first) last = first;
            for (size_t n = 0; n < images; n++) {
                const float *plane = x + (n * C + c) * H * W;
                float *d = dst + n * P;
                for (ptrdiff_t i = 0; i < first * (ptrdiff_t)Wo; i++) d[i] = 0.0f;
                ptrdiff_t from = first * (ptrdiff_t)Wo, to = last * (ptrdiff_t)Wo;
                const ptrdiff_t shift = dr * (ptrdiff_t)W + offset;       // source index = i + shift
                ptrdiff_t a = from, b = to;                               // [a, b): inside the plane
                if (a + shift < 0) a = -shift;
                if (a > to) a = to;
                if (b + shift > HW) b = HW - shift;
                if (b < a) b = a;
                for (ptrdiff_t i = from; i < a; i++) d[i] = 0.0f;
                for (ptrdiff_t i = a; i < b; i++) d[i] = plane[i + shift];
                for (ptrdiff_t i = b; i < to; i++) d[i] = 0.0f;
                for (ptrdiff_t oh = first; oh < last; oh++) {
                    float *row = d + oh * (ptrdiff_t)Wo;
                    for (ptrdiff_t ow = 0; ow < lo; ow++) row[ow] = 0.0f;
                    for (ptrdiff_t ow = hi; ow < (ptrdiff_t)Wo; ow++) row[ow] = 0.0f;
                }
                for (ptrdiff_t i = to; i < (ptrdiff_t)P; i++) d[i] = 0.0f;
            }
            continue;
        }
        for (size_t n = 0; n < images; n++) {
            const float *plane = x + (n * C + c) * H * W;
            for (size_t oh = 0; oh < Ho; oh++) {
                float *d = dst + n * P + oh * Wo;
                ptrdiff_t ih = (ptrdiff_t)(oh * stride + ki) - (ptrdiff_t)pad;
                if (ih < 0 || ih >= (ptrdiff_t)H) {
                    memset(d, 0, Wo * sizeof(float));
                    continue;
                }
                const float *src = plane + ih * (ptrdiff_t)W + offset;
                for (ptrdiff_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                if (stride == 1)
                    for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] = src[ow];
                else
                    for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow] = src[ow * (ptrdiff_t)stride];
                for (ptrdiff_t ow = hi; ow < (ptrdiff_t)Wo; ow++) d[ow] = 0.0f;
            }
        }
    }
}

// col2im's last read of channel c's k k rows of image n: zeros, while they are in the cache, so
// that the next GEMM into the columns adds into them (beta = 1) without a pass to clear them.
static inline void clear_channel(float *col, size_t row_length, size_t c, size_t k, size_t n, size_t P) {
    for (size_t r = c * k * k; r < (c + 1) * k * k; r++) memset(col + r * row_length + n * P, 0, P * sizeof(float));
}

// Stride 1 (every layer that needs an input gradient in these backbones): per image and channel,
// per kernel row and output row, the k kernel columns' rows added into one input row, which stays
// in L1; with k a constant (3, 5) the kernel columns' loop unrolls. 1.25x the loop over (ki, kj)
// then rows (below, kept for strided layers) on the cnn's second layer. Each input element
// receives its terms in (ki, kj) order either way, so the sums are the same bits.
static inline __attribute__((always_inline)) void col2im_stride1(float *restrict dx, float *restrict col, size_t row_length,
                                                                 size_t images, size_t C, size_t H, size_t W, size_t k, size_t pad,
                                                                 size_t Ho, size_t Wo, size_t c0, size_t c1) {
    const size_t P = Ho * Wo;
    for (size_t n = 0; n < images; n++)
        for (size_t c = c0; c < c1; c++) {
            float *plane = dx + (n * C + c) * H * W;
            for (size_t ki = 0; ki < k; ki++)
                for (size_t oh = 0; oh < Ho; oh++) {
                    const ptrdiff_t ih = (ptrdiff_t)(oh + ki) - (ptrdiff_t)pad;
                    if (ih < 0 || ih >= (ptrdiff_t)H) continue;
                    float *d = plane + ih * (ptrdiff_t)W;
                    const float *first = col + (c * k + ki) * k * row_length + n * P + oh * Wo;
                    for (size_t kj = 0; kj < k; kj++) {
                        const float *src = first + kj * row_length;
                        const ptrdiff_t offset = (ptrdiff_t)kj - (ptrdiff_t)pad;
                        const ptrdiff_t lo = offset < 0 ? -offset : 0;
                        ptrdiff_t hi = (ptrdiff_t)W - offset;
                        if (hi > (ptrdiff_t)Wo) hi = (ptrdiff_t)Wo;
                        for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow + offset] += src[ow];
                    }
                }
            clear_channel(col, row_length, c, k, n, P);
        }
}

OH_CLONES
void oh_col2im_add_clear(float *restrict dx, float *restrict col, size_t row_length, size_t images, size_t C, size_t H, size_t W,
                         size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo, size_t first_channel, size_t channels) {
    const size_t c0 = first_channel, c1 = first_channel + channels;
    if (stride == 1) {
        // The common kernels with k a constant: the kernel columns' loop unrolled.
        if (k == 3 && pad == 1) return col2im_stride1(dx, col, row_length, images, C, H, W, 3, 1, Ho, Wo, c0, c1);
        if (k == 5 && pad == 2) return col2im_stride1(dx, col, row_length, images, C, H, W, 5, 2, Ho, Wo, c0, c1);
        return col2im_stride1(dx, col, row_length, images, C, H, W, k, pad, Ho, Wo, c0, c1);
    }
    const size_t P = Ho * Wo;
    for (size_t n = 0; n < images; n++)
        for (size_t c = c0; c < c1; c++) {
            float *plane = dx + (n * C + c) * H * W;
            for (size_t ki = 0; ki < k; ki++)
                for (size_t kj = 0; kj < k; kj++) {
                    const float *s = col + ((c * k + ki) * k + kj) * row_length + n * P;
                    ptrdiff_t lo, hi, offset = (ptrdiff_t)kj - (ptrdiff_t)pad;
                    valid_columns((ptrdiff_t)W, (ptrdiff_t)Wo, (ptrdiff_t)stride, offset, &lo, &hi);
                    for (size_t oh = 0; oh < Ho; oh++) {
                        ptrdiff_t ih = (ptrdiff_t)(oh * stride + ki) - (ptrdiff_t)pad;
                        if (ih < 0 || ih >= (ptrdiff_t)H) continue;
                        float *d = plane + ih * (ptrdiff_t)W + offset;
                        const float *src = s + oh * Wo;
                        for (ptrdiff_t ow = lo; ow < hi; ow++) d[ow * (ptrdiff_t)stride] += src[ow];
                    }
                }
            clear_channel(col, row_length, c, k, n, P);
        }
}

OH_CLONES
uint32_t oh_conv_output_clear(float *restrict y, float *restrict columns, size_t row_length, const float *restrict bias,
                              size_t images, size_t O, size_t P, int relu, size_t first_channel, size_t channels) {
    uint32_t top = 0;
    for (size_t n = 0; n < images; n++)
        for (size_t o = first_channel; o < first_channel + channels; o++) {
            float *src = columns + o * row_length + n * P;
            float *dst = y + (n * O + o) * P;
            const float b = bias[o];
            for (size_t p = 0; p < P; p++) {
                float v = src[p] + b;
                if (relu) v = v > 0.0f ? v : (v != v ? v : 0.0f);
                dst[p] = v;
                src[p] = 0.0f;
                uint32_t m = magnitude_bits(v);
                top = m > top ? m : top;
            }
        }
    return top;
}

OH_CLONES
uint32_t oh_conv_gather_gradient(float *restrict columns, size_t row_length, float *restrict dy, const float *restrict y,
                                 size_t images, size_t O, size_t P, int relu, size_t first_channel, size_t channels) {
    uint32_t top = 0;
    for (size_t n = 0; n < images; n++)
        for (size_t o = first_channel; o < first_channel + channels; o++) {
            float *src = dy + (n * O + o) * P;
            const float *out = y + (n * O + o) * P;
            float *dst = columns + o * row_length + n * P;
            for (size_t p = 0; p < P; p++) {
                float d = relu ? (out[p] > 0.0f ? src[p] : 0.0f) : src[p];
                dst[p] = d;
                src[p] = 0.0f;
                uint32_t m = magnitude_bits(d);
                top = m > top ? m : top;
            }
        }
    return top;
}

void oh_row_sums_add(float *restrict sums, const float *restrict x, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * cols;
        // Eight partial sums in double: the order is fixed (the same on every CPU), the error small.
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        size_t c = 0;
        for (; c + 8 <= cols; c += 8)
            for (int j = 0; j < 8; j++) part[j] += row[c + j];
        for (; c < cols; c++) part[c % 8] += row[c];
        double s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        sums[r] += (float)s;
    }
}

// PyTorch's rule over a window in row-major order: a value is taken when it is larger than the
// one kept, or NaN (so the last NaN of a window is the one whose gradient flows). Branch-free:
// comparisons of noisy activations are unpredictable.
#define OH_TAKE(value, position) do { \
        const float v_ = (value); \
        const int t_ = (v_ > best) | (v_ != v_); \
        best = t_ ? v_ : best; \
        at = t_ ? (position) : at; \
    } while (0)

// 2 x 2 windows with stride 2 and no padding (the cnn's pools): two rows at a time, no bounds.
static inline __attribute__((always_inline)) uint32_t maxpool_2x2(float *restrict y, int32_t *restrict argmax, const float *restrict x, size_t planes,
                            size_t H, size_t W, size_t Ho, size_t Wo) {
    uint32_t top = 0;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * H * W;
        float *out = y + pl * Ho * Wo;
        int32_t *arg = argmax + pl * Ho * Wo;
        for (size_t oh = 0; oh < Ho; oh++) {
            const float *r0 = in + 2 * oh * W, *r1 = r0 + W;
            const int32_t i0 = (int32_t)(2 * oh * W), i1 = i0 + (int32_t)W;
            for (size_t ow = 0; ow < Wo; ow++) {
                const int32_t j = (int32_t)(2 * ow);
                float best = -__builtin_inff();
                int32_t at = i0 + j;
                OH_TAKE(r0[j], i0 + j);
                OH_TAKE(r0[j + 1], i0 + j + 1);
                OH_TAKE(r1[j], i1 + j);
                OH_TAKE(r1[j + 1], i1 + j + 1);
                out[oh * Wo + ow] = best;
                arg[oh * Wo + ow] = at;
                uint32_t m = magnitude_bits(best);
                top = m > top ? m : top;
            }
        }
    }
    return top;
}

// Other windows: per output row, the taps (ki, kj) in row-major order, each over the whole row
// of outputs at once, so the loop over ow vectorises and every output still sees its window's
// values in row-major order. On AlexNet's first pool at batch 64 (64 x 64 planes of 55 x 55),
// 9.8x the loop over each window's taps (43 ms to 4.4 ms; with k and stride as constants: a
// runtime stride leaves the loop scalar); its share of the step's profile went from 7.6% to 1.9%.
#define OH_POOL_ROW 256
static inline __attribute__((always_inline)) uint32_t maxpool_rows(float *restrict y, int32_t *restrict argmax, const float *restrict x, size_t planes,
                             size_t H, size_t W, size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo) {
    uint32_t top = 0;
    float best[OH_POOL_ROW];
    int32_t at[OH_POOL_ROW];
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * H * W;
        float *out = y + pl * Ho * Wo;
        int32_t *arg = argmax + pl * Ho * Wo;
        for (size_t oh = 0; oh < Ho; oh++)
            for (size_t first = 0; first < Wo; first += OH_POOL_ROW) {
                const ptrdiff_t count = (ptrdiff_t)(Wo - first < OH_POOL_ROW ? Wo - first : OH_POOL_ROW);
                const ptrdiff_t h0 = (ptrdiff_t)(oh * stride) - (ptrdiff_t)pad;
                const ptrdiff_t top_row = h0 < 0 ? 0 : h0;
                for (ptrdiff_t j = 0; j < count; j++) {
                    const ptrdiff_t w0 = (ptrdiff_t)((first + (size_t)j) * stride) - (ptrdiff_t)pad;
                    best[j] = -__builtin_inff();
                    at[j] = (int32_t)(top_row * (ptrdiff_t)W + (w0 < 0 ? 0 : w0));
                }
                for (size_t ki = 0; ki < k; ki++) {
                    const ptrdiff_t ih = h0 + (ptrdiff_t)ki;
                    if (ih < 0 || ih >= (ptrdiff_t)H) continue;
                    for (size_t kj = 0; kj < k; kj++) {
                        ptrdiff_t lo, hi, offset = (ptrdiff_t)kj - (ptrdiff_t)pad;
                        valid_columns((ptrdiff_t)W, (ptrdiff_t)Wo, (ptrdiff_t)stride, offset, &lo, &hi);
                        lo -= (ptrdiff_t)first; hi -= (ptrdiff_t)first;
                        if (lo < 0) lo = 0;
                        if (hi > count) hi = count;
                        const ptrdiff_t base = ih * (ptrdiff_t)W + offset + (ptrdiff_t)(first * stride);
                        for (ptrdiff_t j = lo; j < hi; j++) {
                            const ptrdiff_t i = base + j * (ptrdiff_t)stride;
                            const float v = in[i];
                            const int t = (v > best[j]) | (v != v);
                            best[j] = t ? v : best[j];
                            at[j] = t ? (int32_t)i : at[j];
                        }
                    }
                }
                for (ptrdiff_t j = 0; j < count; j++) {
                    out[oh * Wo + first + (size_t)j] = best[j];
                    arg[oh * Wo + first + (size_t)j] = at[j];
                    uint32_t m = magnitude_bits(best[j]);
                    top = m > top ? m : top;
                }
            }
    }
    return top;
}

#if defined(__x86_64__)
#include <immintrin.h>
// 3 x 3 windows, stride 2, no padding (AlexNet's three pools), 16 outputs of a row at a time: for
// each window row the three taps come from 48 consecutive inputs by two-source permutes (no
// gathers), taken in row-major order by the rule above, and the next plane is prefetched. On
// AlexNet's pools at batch 64, one thread: 13.4, 14.0 and 9.1 ms for maxpool_rows (whose 27-,
// 13- and 6-wide output rows leave its vector loops in their remainders), 2.8, 1.8 and 1.0 here.
__attribute__((target("avx512f")))
static uint32_t maxpool_3x3s2_avx512(float *restrict y, int32_t *restrict argmax, const float *restrict x, size_t planes,
                                     size_t H, size_t W, size_t Ho, size_t Wo) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1)), next = _mm512_add_epi32(even, _mm512_set1_epi32(2));
    __m512i top = _mm512_setzero_si512();
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * H * W;
        float *out = y + pl * Ho * Wo;
        int32_t *arg = argmax + pl * Ho * Wo;
        // The next plane's lines, a share per output row: the three-row pattern leaves the
        // hardware's prefetcher behind (2.7 ms from cache, 8.2 from memory, for 4096 planes).
        const size_t lines = (H * W * sizeof(float) + 63) / 64, per_row = (lines + Ho - 1) / Ho;
        const char *ahead = (const char *)(in + H * W);
        for (size_t oh = 0; oh < Ho; oh++) {
            if (pl + 1 < planes)
                for (size_t l = oh * per_row; l < (oh + 1) * per_row && l < lines; l++) _mm_prefetch(ahead + 64 * l, _MM_HINT_T0);
            for (size_t ow = 0; ow < Wo; ow += 16) {
                const size_t count = Wo - ow < 16 ? Wo - ow : 16;
                const __mmask16 store = (__mmask16)((1u << count) - 1);
                // Inputs 2 ow .. 2 ow + 2 count of each window row: at most 33 of them, in W.
                const size_t first = 2 * ow, avail = W - first;
                const __mmask16 l0 = avail >= 16 ? 0xffff : (__mmask16)((1u << avail) - 1);
                const __mmask16 l1 = avail >= 32 ? 0xffff : avail <= 16 ? 0 : (__mmask16)((1u << (avail - 16)) - 1);
                const __mmask16 l2 = avail >= 48 ? 0xffff : avail <= 32 ? 0 : (__mmask16)((1u << (avail - 32)) - 1);
                __m512 best = _mm512_set1_ps(-__builtin_inff());
                // A window of -inf only: its first element, as maxpool_rows.
                __m512i at = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * W + first)), even);
                for (size_t ki = 0; ki < 3; ki++) {
                    const size_t ih = 2 * oh + ki;
                    const float *row = in + ih * W + first;
                    const __m512 a = _mm512_maskz_loadu_ps(l0, row), b = _mm512_maskz_loadu_ps(l1, row + 16),
                                 c = _mm512_maskz_loadu_ps(l2, row + 32);
                    const __m512i base = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(ih * W + first)), even);
                    const __m512 tap[3] = {
                        _mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b),
                        // next: inputs 2, 4, ..., 32: the last from c's first lane.
                        _mm512_mask_permutexvar_ps(_mm512_permutex2var_ps(a, next, b), 0x8000, _mm512_setzero_si512(), c) };
                    for (int kj = 0; kj < 3; kj++) {
                        const __mmask16 take = _mm512_cmp_ps_mask(tap[kj], best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(tap[kj], tap[kj], _CMP_UNORD_Q);
                        best = _mm512_mask_mov_ps(best, take, tap[kj]);
                        at = _mm512_mask_mov_epi32(at, take, _mm512_add_epi32(base, _mm512_set1_epi32(kj)));
                    }
                }
                _mm512_mask_storeu_ps(out + oh * Wo + ow, store, best);
                _mm512_mask_storeu_epi32(arg + oh * Wo + ow, store, at);
                top = _mm512_mask_max_epu32(top, store, top, _mm512_and_si512(_mm512_castps_si512(best), magnitude));
            }
        }
    }
    return (uint32_t)_mm512_reduce_max_epu32(top);
}
#endif

OH_CLONES
uint32_t oh_maxpool_forward(float *restrict y, int32_t *restrict argmax, const float *restrict x, size_t planes,
                            size_t H, size_t W, size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo) {
    if (k == 2 && stride == 2 && pad == 0) return maxpool_2x2(y, argmax, x, planes, H, W, Ho, Wo);
#if defined(__x86_64__)
    if (k == 3 && stride == 2 && pad == 0 && oh_gemm_available()) return maxpool_3x3s2_avx512(y, argmax, x, planes, H, W, Ho, Wo);
#endif
    // AlexNet's and VGG's windows with constants: the row loop vectorises with shuffles, not gathers.
    if (k == 3 && stride == 2) return maxpool_rows(y, argmax, x, planes, H, W, 3, 2, pad, Ho, Wo);
    return maxpool_rows(y, argmax, x, planes, H, W, k, stride, pad, Ho, Wo);
}

void oh_maxpool_backward_clear(float *restrict dx, float *restrict dy, const int32_t *restrict argmax,
                               size_t planes, size_t HW, size_t P) {
    for (size_t pl = 0; pl < planes; pl++) {
        float *d = dx + pl * HW;
        float *g = dy + pl * P;
        const int32_t *arg = argmax + pl * P;
        for (size_t p = 0; p < P; p++) {
            d[arg[p]] += g[p];
            g[p] = 0.0f;
        }
    }
}

void oh_adaptive_avgpool_forward(float *restrict y, const float *restrict x, size_t planes, size_t H, size_t W,
                                 size_t Ho, size_t Wo) {
    for (size_t pl = 0; pl < planes; pl++) {
        const float *in = x + pl * H * W;
        float *out = y + pl * Ho * Wo;
        for (size_t oh = 0; oh < Ho; oh++) {
            size_t h0 = oh * H / Ho, h1 = ((oh + 1) * H + Ho - 1) / Ho;
            for (size_t ow = 0; ow < Wo; ow++) {
                size_t w0 = ow * W / Wo, w1 = ((ow + 1) * W + Wo - 1) / Wo;
                float s = 0.0f;
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++) s += in[ih * W + iw];
                out[oh * Wo + ow] = s / (float)((h1 - h0) * (w1 - w0));
            }
        }
    }
}

void oh_adaptive_avgpool_backward_clear(float *restrict dx, float *restrict dy, size_t planes, size_t H, size_t W,
                                        size_t Ho, size_t Wo) {
    for (size_t pl = 0; pl < planes; pl++) {
        float *d = dx + pl * H * W;
        float *g = dy + pl * Ho * Wo;
        for (size_t oh = 0; oh < Ho; oh++) {
            size_t h0 = oh * H / Ho, h1 = ((oh + 1) * H + Ho - 1) / Ho;
            for (size_t ow = 0; ow < Wo; ow++) {
                size_t w0 = ow * W / Wo, w1 = ((ow + 1) * W + Wo - 1) / Wo;
                float share = g[oh * Wo + ow] / (float)((h1 - h0) * (w1 - w0));
                for (size_t ih = h0; ih < h1; ih++)
                    for (size_t iw = w0; iw < w1; iw++) d[ih * W + iw] += share;
                g[oh * Wo + ow] = 0.0f;
            }
        }
    }
}

// Dropout masks from a counter-based hash (SplitMix64's finaliser): element i of a row is kept
// when the top 24 bits of mix(row_key + i) are at least `threshold` (p 2^24), so a mask depends
// only on the row's key, never on a stream shared with other rows.
static inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t oh_dropout_row_key(uint64_t seed, uint64_t step, uint64_t layer, uint64_t row) {
    return mix64(mix64(mix64(mix64(seed ^ 0xd1b54a32d192ed03ull) ^ step) ^ layer) ^ row);
}

OH_CLONES
uint32_t oh_dropout_forward(float *restrict y, const float *restrict x, size_t rows, size_t cols, uint64_t seed, uint64_t step,
                            uint64_t layer, uint64_t first_row, uint32_t threshold, float scale) {
    uint32_t top = 0;
    for (size_t r = 0; r < rows; r++) {
        const uint64_t key = oh_dropout_row_key(seed, step, layer, first_row + r);
        const float *in = x + r * cols;
        float *out = y + r * cols;
        for (size_t c = 0; c < cols; c++) {
            const uint32_t u = (uint32_t)(mix64(key + c) >> 40);
            const float v = u >= threshold ? in[c] * scale : 0.0f;
            out[c] = v;
            uint32_t m = magnitude_bits(v);
            top = m > top ? m : top;
        }
    }
    return top;
}

OH_CLONES
void oh_dropout_backward_clear(float *restrict dx, float *restrict dy, size_t rows, size_t cols, uint64_t seed, uint64_t step,
                               uint64_t layer, uint64_t first_row, uint32_t threshold, float scale) {
    for (size_t r = 0; r < rows; r++) {
        const uint64_t key = oh_dropout_row_key(seed, step, layer, first_row + r);
        float *g = dy + r * cols;
        float *d = dx + r * cols;
        for (size_t c = 0; c < cols; c++) {
            const uint32_t u = (uint32_t)(mix64(key + c) >> 40);
            d[c] += u >= threshold ? g[c] * scale : 0.0f;
            g[c] = 0.0f;
        }
    }
}

// The core's floating-point peak, measured: 12 independent chains of 16-lane fused multiply-adds
// (zmm registers where the CPU has AVX-512, two ymm where it has AVX2), enough to fill the FMA
// pipes' latency. Each iteration is 12 x 16 x 2 floating-point operations.
typedef float oh_v16 __attribute__((vector_size(64)));

OH_CLONES
void oh_fma_loop(float *out, size_t iterations) {
    oh_v16 a[12];
    const oh_v16 m = {0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f,
                      0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f, 0.999999f};
    const oh_v16 c = m * 1e-6f;
    for (int j = 0; j < 12; j++) a[j] = m * (float)(j + 1);
    for (size_t i = 0; i < iterations; i++)
        for (int j = 0; j < 12; j++) a[j] = __builtin_elementwise_fma(a[j], m, c);   // one FMA per lane
    oh_v16 s = a[0];
    for (int j = 1; j < 12; j++) s += a[j];
    float t = 0;
    for (int l = 0; l < 16; l++) t += s[l];
    *out = t;   // kept, so that the loop is not optimised away
}
