#include "ohkernels.h"
#include "clones.h"
#include <math.h>

OH_CLONES
void oh_adam_zero_grad(float *restrict p, float *restrict grad, float *restrict m, float *restrict v, size_t n,
                       float step_size, float beta1, float beta2, float weight_decay, float eps, float bc2_sqrt) {
    const float inv_bc2 = 1.0f / bc2_sqrt;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * p[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
        grad[i] = 0.0f;
    }
}

OH_CLONES
int oh_all_finite(const float *restrict x, size_t n) {
    // x * 0 is 0 for finite x and NaN for NaN or Inf; the sum stays 0 only if all are finite.
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j] * 0.0f;
    float total = 0;
    for (; i < n; i++) total += x[i] * 0.0f;
    for (int j = 0; j < 16; j++) total += acc[j];
    return total == 0.0f;
}

// |x| as a float's bit pattern with the sign cleared: as unsigned integers these order like the
// magnitudes, and every NaN or Inf (exponent all ones) is >= 0x7f800000, above every finite value.
static inline uint32_t magnitude_bits(float x) {
    uint32_t u;
    __builtin_memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

OH_CLONES
uint32_t oh_bias_relu(float *restrict y, const float *restrict bias, size_t rows, size_t cols) {
    uint32_t top = 0;
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        for (size_t c = 0; c < cols; c++) {
            float x = row[c] + bias[c];
            x = x > 0.0f ? x : (x != x ? x : 0.0f);
            row[c] = x;
            uint32_t m = magnitude_bits(x);
            top = m > top ? m : top;
        }
    }
    return top;
}

OH_CLONES
uint32_t oh_max_magnitude_bits(const float *restrict x, size_t n) {
    uint32_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t m = magnitude_bits(x[i]);
        top = m > top ? m : top;
    }
    return top;
}

// ReLU backward and the bias sums of the training step, each the last read of its input in the
// step, which it clears for the next step's GEMM (beta = 1, no clearing pass).
OH_CLONES
uint32_t oh_relu_backward_clear(float *restrict dy, float *restrict y, size_t n) {
    uint32_t top = 0;
    for (size_t i = 0; i < n; i++) {
        float d = y[i] > 0.0f ? dy[i] : 0.0f;
        dy[i] = d;
        y[i] = 0.0f;
        uint32_t m = magnitude_bits(d);
        top = m > top ? m : top;
    }
    return top;
}

OH_CLONES
void oh_column_sums_clear(float *restrict db, float *restrict dy, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        float *row = dy + r * cols;
        for (size_t c = 0; c < cols; c++) {
            db[c] += row[c];
            row[c] = 0.0f;
        }
    }
}

// exp(x) for x <= 0 (arguments are clamped to [-87, 0]): Cephes' expf polynomial, branch-free so
// that the loop below vectorises. Relative error about 1e-7 (1-2 ulp), as vectorised softmax
// implementations use; below -87 it returns exp(-87) ~ 1.6e-38 instead of a denormal or 0,
// which changes no sum it is added to (those are >= 1 here).
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;        // NaN stays NaN through both
    x = x > 0.0f ? 0.0f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return p * scale.f;
}

// exp(x) for the fused head's x = s (u - m [target]) - s in [-s (2 + m), 0] (the caller keeps
// s (2 + m) <= 80, so no clamping is needed; a NaN stays NaN): Cephes' expf polynomial with fused
// multiply-adds (one rounding each), and n rounded to nearest by adding 1.5 x 2^23, whose low
// bits are then n itself. 16 operations; head_block_avx512 computes it lane by lane with the same
// operations in the same order, so the same results. Within 1-2 ulp of exp_nonpositive.
#define EXP_ROUNDER 12582912.0f          // 1.5 x 2^23
static inline float exp_head(float x) {
    float t = __builtin_fmaf(x, 1.44269504088896341f, EXP_ROUNDER);
    float n = t - EXP_ROUNDER;
    float r = __builtin_fmaf(n, -0.693359375f, x);
    r = __builtin_fmaf(n, 2.12194440e-4f, r);
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = __builtin_fmaf(p, r, 1.3981999507e-3f);
    p = __builtin_fmaf(p, r, 8.3334519073e-3f);
    p = __builtin_fmaf(p, r, 4.1665795894e-2f);
    p = __builtin_fmaf(p, r, 1.6666665459e-1f);
    p = __builtin_fmaf(p, r, 5.0000001201e-1f);
    p = __builtin_fmaf(p, z, r) + 1.0f;
    union { float f; uint32_t i; } bits = { t }, scale;
    scale.i = (bits.i + 127u) << 23;      // t's bits are those of 1.5 x 2^23 plus n: (n + 127) << 23
    return p * scale.f;
}

/// The index of the largest of x[0..n) (n >= 1), the first on ties, and the value in *top:
/// lane-wise maxima with the index of each lane's first maximum (branch-free, so it vectorises),
/// then the smallest index among the lanes that hold the overall maximum, then the tail. A NaN
/// is never larger.
static inline __attribute__((always_inline)) size_t first_largest(const float *restrict x, size_t n, float *top_out) {
    float lanes[8];
    int32_t where[8];
    for (int j = 0; j < 8; j++) { lanes[j] = x[0]; where[j] = 0; }
    size_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; j++) {
            float v = x[c + j];
            int larger = v > lanes[j];
            lanes[j] = larger ? v : lanes[j];
            where[j] = larger ? (int32_t)(c + j) : where[j];
        }
    float top = lanes[0];
    for (int j = 1; j < 8; j++) top = lanes[j] > top ? lanes[j] : top;
    size_t best = n;
    for (int j = 0; j < 8; j++)
        if (lanes[j] == top && (size_t)where[j] < best) best = (size_t)where[j];
    if (best == n) best = 0;
    for (; c < n; c++)
        if (x[c] > top) { top = x[c]; best = c; }
    *top_out = top;
    return best;
}

OH_CLONES
double oh_cos_margin_softmax_ce(float *restrict u, const int32_t *restrict targets, size_t rows, size_t classes,
                                float scale, float margin, float grad_scale, int64_t *restrict correct) {
    double loss = 0;
    int64_t right = 0;
    for (size_t r = 0; r < rows; r++) {
        float *row = u + r * classes;
        size_t t = (size_t)targets[r];
        // Largest cosine, the first on ties. A NaN is never larger: a row of NaNs gives index 0
        // and a NaN loss, which stops training.
        float top;
        size_t best = first_largest(row, classes, &top), c;
        if (best == t) right++;
        float zt = scale * (row[t] - margin);
        float shift = scale * top > zt ? scale * top : zt;     // >= every z, so exp(z - shift) <= 1
        // Exponentials in place (a plain map, which vectorises), then eight partial sums in
        // double, added in a fixed order.
        for (c = 0; c < classes; c++) row[c] = exp_nonpositive(scale * row[c] - shift);
        double partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        double sum = 0;
        for (c = 0; c + 8 <= classes; c += 8)
            for (int j = 0; j < 8; j++) partial[j] += (double)row[c + j];
        for (; c < classes; c++) sum += (double)row[c];
        for (int j = 0; j < 8; j++) sum += partial[j];
        float et = exp_nonpositive(zt - shift);            // the target's logit has the margin
        sum += (double)et - (double)row[t];
        row[t] = et;
        loss += (double)shift + log(sum) - (double)zt;
        float k = (float)((double)grad_scale / sum);
        for (size_t c = 0; c < classes; c++) row[c] *= k;
        row[t] -= grad_scale;
    }
    *correct = right;
    return loss;
}

OH_CLONES
static void head_block_portable(float *restrict u, size_t rows, size_t cols, size_t first_class, const int32_t *restrict targets,
                                float scale, float margin, double *restrict row_sums, float *restrict target_cosines,
                                float *restrict best, int64_t *restrict best_class) {
    for (size_t r = 0; r < rows; r++) {
        float *row = u + r * cols;
        // Largest cosine of the block, the first on ties, kept only when larger than the earlier
        // blocks' best: the first over the whole row.
        float top;
        size_t at = first_largest(row, cols, &top), c;
        if (top > best[r]) { best[r] = top; best_class[r] = (int64_t)(first_class + at); }
        size_t t = (size_t)targets[r];
        int has_target = t >= first_class && t < first_class + cols;
        if (has_target) target_cosines[r] = row[t - first_class];
        // exp(z - scale), z = scale (u - margin [c = target]) <= scale: the shift is the
        // logits' bound, the same for every block, so no rescaling between blocks.
        for (c = 0; c < cols; c++) row[c] = exp_head(__builtin_fmaf(scale, row[c], -scale));
        if (has_target) row[t - first_class] = exp_head(__builtin_fmaf(scale, target_cosines[r] - margin, -scale));
        // Sixteen partial sums in double, one per class modulo 16 over whole runs of 16; of the
        // rest, a run of 8 to the first eight, then one by one; added in a fixed order.
        double partial[16] = {0};
        double sum = 0;
        for (c = 0; c + 16 <= cols; c += 16)
            for (int j = 0; j < 16; j++) partial[j] += (double)row[c + j];
        if (c + 8 <= cols) {
            for (int j = 0; j < 8; j++) partial[j] += (double)row[c + j];
            c += 8;
        }
        for (; c < cols; c++) sum += (double)row[c];
        for (int j = 0; j < 16; j++) sum += partial[j];
        row_sums[r] += sum;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// exp_head on 16 lanes: the same operations in the same order, so the same results.
__attribute__((target("avx512f"), always_inline))
static inline __m512 exp_head16(__m512 x) {
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(EXP_ROUNDER));
    const __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(EXP_ROUNDER));
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), _mm512_set1_ps(1.0f));
    const __m512 two_n = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, two_n);
}

// head_block_portable in one pass over each row, 16 classes at a time: the largest cosine (lane
// maxima with the first index of each), the exponentials (the target's lane with its margin) and
// the sixteen double partial sums, in the portable code's order: the same results bit for bit.
__attribute__((target("avx512f")))
static void head_block_avx512(float *restrict u, size_t rows, size_t cols, size_t first_class, const int32_t *restrict targets,
                              float scale, float margin, double *restrict row_sums, float *restrict target_cosines,
                              float *restrict best, int64_t *restrict best_class) {
    const __m512 s = _mm512_set1_ps(scale);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t r = 0; r < rows; r++) {
        float *row = u + r * cols;
        size_t t = (size_t)targets[r];
        int has_target = t >= first_class && t < first_class + cols;
        const size_t tc = t - first_class;
        // The run of 16 holding the target (none: an impossible start) and its lane.
        const size_t target_run = has_target ? tc / 16 * 16 : (size_t)-1;
        const __mmask16 target_lane = (__mmask16)(1u << (tc % 16));
        __m512 zt = _mm512_setzero_ps();
        if (has_target) {
            target_cosines[r] = row[tc];
            zt = _mm512_set1_ps(__builtin_fmaf(scale, row[tc] - margin, -scale));
        }
        __m512 top = _mm512_set1_ps(row[0]);
        __m512i where = _mm512_setzero_si512(), index = lane;
        __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
        double sum = 0;
        size_t c = 0;
        for (; c + 16 <= cols; c += 16) {
            const __m512 x = _mm512_loadu_ps(row + c);
            const __mmask16 larger = _mm512_cmp_ps_mask(x, top, _CMP_GT_OQ);
            top = _mm512_mask_mov_ps(top, larger, x);
            where = _mm512_mask_mov_epi32(where, larger, index);
            index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
            __m512 z = _mm512_fmsub_ps(s, x, s);
            if (c == target_run) z = _mm512_mask_mov_ps(z, target_lane, zt);
            const __m512 e = exp_head16(z);
            _mm512_storeu_ps(row + c, e);
            low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
            high = _mm512_add_pd(high, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
        }
        if (c < cols) {
            const size_t live = cols - c;
            const __mmask16 m = (__mmask16)((1u << live) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(m, row + c);
            const __mmask16 larger = _mm512_mask_cmp_ps_mask(m, x, top, _CMP_GT_OQ);
            top = _mm512_mask_mov_ps(top, larger, x);
            where = _mm512_mask_mov_epi32(where, larger, index);
            __m512 z = _mm512_fmsub_ps(s, x, s);
            if (c == target_run) z = _mm512_mask_mov_ps(z, target_lane, zt);
            const __m512 e = exp_head16(z);
            _mm512_mask_storeu_ps(row + c, m, e);
            size_t i = 0;
            if (live >= 8) { low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(e))); i = 8; }
            for (; i < live; i++) sum += (double)row[c + i];
        }
        // The first largest: the largest lane, then the smallest index among the lanes holding it.
        float top1 = _mm512_reduce_max_ps(top);
        __mmask16 at = _mm512_cmp_ps_mask(top, _mm512_set1_ps(top1), _CMP_EQ_OQ);
        size_t first = at ? (size_t)_mm512_mask_reduce_min_epi32(at, where) : 0;
        if (top1 > best[r]) { best[r] = top1; best_class[r] = (int64_t)(first_class + first); }
        double partial[16];
        _mm512_storeu_pd(partial, low);
        _mm512_storeu_pd(partial + 8, high);
        for (int j = 0; j < 16; j++) sum += partial[j];
        row_sums[r] += sum;
    }
}
#endif

void oh_head_block(float *restrict u, size_t rows, size_t cols, size_t first_class, const int32_t *restrict targets,
                   float scale, float margin, double *restrict row_sums, float *restrict target_cosines,
                   float *restrict best, int64_t *restrict best_class, int level) {
#if defined(__x86_64__)
    if (level >= 1) {
        head_block_avx512(u, rows, cols, first_class, targets, scale, margin, row_sums, target_cosines, best, best_class);
        return;
    }
#endif
    (void)level;
    head_block_portable(u, rows, cols, first_class, targets, scale, margin, row_sums, target_cosines, best, best_class);
}

OH_CLONES
int oh_half_to_float(float *restrict dst, const uint16_t *restrict src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        _Float16 h;
        __builtin_memcpy(&h, &src[i], sizeof h);
        dst[i] = (float)h;
    }
    return oh_all_finite(dst, n);
}

OH_CLONES
void oh_lookup_bytes(float *restrict dst, const uint8_t *restrict src, size_t n, const float *restrict table) {
    for (size_t i = 0; i < n; i++) dst[i] = table[src[i]];
}
