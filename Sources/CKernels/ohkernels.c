#include "ohkernels.h"
#include <math.h>

#if defined(__x86_64__) && defined(__linux__)
#define OH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OH_CLONES
#endif

// One body for both entry points; `zero_grad` is a constant at each call site, so the compiler
// emits two loops, neither with a branch inside.
static inline __attribute__((always_inline))
void adam_body(float *restrict p, float *restrict grad, float *restrict m, float *restrict v, size_t n,
               float step_size, float beta1, float beta2, float weight_decay, float eps, float bc2_sqrt,
               int zero_grad) {
    const float inv_bc2 = 1.0f / bc2_sqrt;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * p[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
        if (zero_grad) grad[i] = 0.0f;
    }
}

OH_CLONES
void oh_adam(float *restrict p, const float *restrict grad, float *restrict m, float *restrict v, size_t n,
             float step_size, float beta1, float beta2, float weight_decay, float eps, float bc2_sqrt) {
    adam_body(p, (float *)grad, m, v, n, step_size, beta1, beta2, weight_decay, eps, bc2_sqrt, 0);
}

OH_CLONES
void oh_adam_zero_grad(float *restrict p, float *restrict grad, float *restrict m, float *restrict v, size_t n,
                       float step_size, float beta1, float beta2, float weight_decay, float eps, float bc2_sqrt) {
    adam_body(p, grad, m, v, n, step_size, beta1, beta2, weight_decay, eps, bc2_sqrt, 1);
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

OH_CLONES
void oh_relu(float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : (x[i] != x[i] ? x[i] : 0.0f);
}

OH_CLONES
void oh_bias_relu(float *restrict y, const float *restrict bias, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        for (size_t c = 0; c < cols; c++) {
            float x = row[c] + bias[c];
            row[c] = x > 0.0f ? x : (x != x ? x : 0.0f);
        }
    }
}

OH_CLONES
void oh_relu_backward(float *restrict dy, const float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

OH_CLONES
void oh_column_sums(float *restrict db, const float *restrict dy, size_t rows, size_t cols, int accumulate) {
    if (!accumulate)
        for (size_t c = 0; c < cols; c++) db[c] = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *row = dy + r * cols;
        for (size_t c = 0; c < cols; c++) db[c] += row[c];
    }
}

OH_CLONES
void oh_relu_backward_clear(float *restrict dy, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        y[i] = 0.0f;
    }
}

OH_CLONES
void oh_column_sums_clear(float *restrict db, float *restrict dy, size_t rows, size_t cols, int accumulate) {
    if (!accumulate)
        for (size_t c = 0; c < cols; c++) db[c] = 0;
    for (size_t r = 0; r < rows; r++) {
        float *row = dy + r * cols;
        for (size_t c = 0; c < cols; c++) {
            db[c] += row[c];
            row[c] = 0.0f;
        }
    }
}
