// The fused head's two products with the codebook, by table lookups instead of multiplications.
//
// Dimensions: R = rows (codes), K = bits, C = classes. The codebook's entries are signs s = +-1,
// so a product with it is a signed sum:
//   cosines   u[r, c] = alpha sum_j vn[r, j] s[c, j]        (R, K) x (K, C)
//   gradient  a[r, j] += sum_c e[r, c] s[c, j]               (R, C) x (C, K)
// Take the summed index four at a time: the signed sum of four values x0..x3 takes one of 16
// values, one per sign pattern p (bit i of p set: +x_i), so a 16-entry table of them per row and
// group of four, and the pattern of each output column in that group, turn four multiply-adds
// into one lookup and one add. One AVX-512 permute (vpermps) looks up 16 columns in a table held
// in one register, so 16 x 4 multiply-adds become two instructions; measured on an AMD Zen 4,
// a permute and an add took 0.38 ns against 0.28 ns for one 16-wide FMA, 2.9x the work per
// nanosecond. The patterns depend only on the codebook and are laid out once
// (oh_sign_cosine_index, oh_sign_gradient_index); the tables of the cosines depend on the codes
// and are built once per step (oh_sign_tables); those of the gradient depend on e, a block's
// exponentials, and are built in registers as the block is summed.
//
// Order of float32 operations (the same in the vector kernels and the portable reference, so
// they agree bit for bit): a table entry is ((s0 x0 + s1 x1) + s2 x2) + s3 x3 (each product is
// exact); a cosine adds its K/4 entries in ascending group order from 0 and is multiplied by
// alpha; the gradient adds one entry per group of four classes to a, in ascending class order.
// Groups beyond K or C are padded with zeros (their patterns are 0: the entry is a sum of -0s).

#include "ohkernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define OH_X86 1
#endif

#define GROUP 4                 // bits or classes per table
#define LANES 16                // columns per lookup
#define COS_ROWS 6              // rows per tile of the cosines
#define COS_GROUPS 4            // groups of 16 classes per tile of the cosines: 64 classes

static size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

// Groups of 16 output columns of the gradient, padded to a multiple of the tile's width.
static size_t gradient_column_groups(size_t bits) {
    size_t J = div_up(bits, LANES);
    return J > 4 ? div_up(J, 8) * 8 : 4;
}

size_t oh_sign_tables_count(size_t rows, size_t bits) {
    return div_up(rows, COS_ROWS) * COS_ROWS * div_up(bits, GROUP) * LANES;
}

size_t oh_sign_cosine_index_count(size_t classes, size_t bits) {
    return div_up(classes, LANES * COS_GROUPS) * COS_GROUPS * div_up(bits, GROUP) * LANES;
}

size_t oh_sign_gradient_index_count(size_t classes, size_t bits) {
    return div_up(classes, GROUP) * gradient_column_groups(bits) * LANES;
}

// The sign pattern of the 4 entries (c + i dc, j + i dj), i < 4: bit i set where the entry is +1
// (entries outside the codebook count as -1).
static int32_t pattern(const int8_t *signs, size_t classes, size_t bits, size_t c, size_t dc, size_t j, size_t dj) {
    int32_t p = 0;
    for (size_t i = 0; i < GROUP; i++, c += dc, j += dj)
        if (c < classes && j < bits && signs[c * bits + j] > 0) p |= 1 << i;
    return p;
}

// index (ceil(C / 64) * 4, G, 16): lane l of (class group q, bit group g) is the pattern of
// class 16 q + l over bits 4 g .. 4 g + 3.
void oh_sign_cosine_index(int32_t *index, const int8_t *signs, size_t classes, size_t bits) {
    const size_t G = div_up(bits, GROUP), groups = div_up(classes, LANES * COS_GROUPS) * COS_GROUPS;
    for (size_t q = 0; q < groups; q++)
        for (size_t g = 0; g < G; g++)
            for (size_t l = 0; l < LANES; l++)
                index[(q * G + g) * LANES + l] = pattern(signs, classes, bits, q * LANES + l, 0, g * GROUP, 1);
}

// index (ceil(C / 4), J, 16): lane l of (class quad h, column group jg) is the pattern of
// column 16 jg + l over classes 4 h .. 4 h + 3.
void oh_sign_gradient_index(int32_t *index, const int8_t *signs, size_t classes, size_t bits) {
    const size_t J = gradient_column_groups(bits), quads = div_up(classes, GROUP);
    for (size_t h = 0; h < quads; h++)
        for (size_t jg = 0; jg < J; jg++)
            for (size_t l = 0; l < LANES; l++)
                index[(h * J + jg) * LANES + l] = pattern(signs, classes, bits, h * GROUP, 1, jg * LANES + l, 0);
}

static inline float sign_of(int p, int i) { return (p >> i & 1) ? 1.0f : -1.0f; }

// tables (ceil(rows / 6) * 6, G, 16); rows beyond `rows` are zeros.
void oh_sign_tables(float *tables, const float *vn, size_t rows, size_t bits) {
    const size_t G = div_up(bits, GROUP), padded = div_up(rows, COS_ROWS) * COS_ROWS;
    for (size_t r = 0; r < padded; r++)
        for (size_t g = 0; g < G; g++) {
            float x[GROUP];
            for (size_t i = 0; i < GROUP; i++) {
                size_t j = g * GROUP + i;
                x[i] = r < rows && j < bits ? vn[r * bits + j] : 0.0f;
            }
            float *t = tables + (r * G + g) * LANES;
            for (int p = 0; p < LANES; p++) {
                float v = sign_of(p, 0) * x[0];
                for (int i = 1; i < GROUP; i++) v = v + sign_of(p, i) * x[i];
                t[p] = v;
            }
        }
}

// The portable reference: the same operations in the same order as the vector kernels.
static void cosines_portable(float *u, size_t ldu, const float *tables, size_t rows, size_t bits,
                             const int32_t *index, size_t cols, float alpha) {
    const size_t G = div_up(bits, GROUP);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            const int32_t *ix = index + (c / LANES) * G * LANES + c % LANES;
            const float *t = tables + r * G * LANES;
            float a = 0.0f;
            for (size_t g = 0; g < G; g++) a = a + t[g * LANES + ix[g * LANES]];
            u[r * ldu + c] = a * alpha;
        }
}

static void accumulate_portable(float *acc, size_t bits, const float *e, size_t lde, size_t rows, size_t cols,
                                const int32_t *index) {
    const size_t J = gradient_column_groups(bits), quads = div_up(cols, GROUP);
    for (size_t r = 0; r < rows; r++)
        for (size_t h = 0; h < quads; h++) {
            float x[GROUP];
            for (size_t i = 0; i < GROUP; i++) x[i] = h * GROUP + i < cols ? e[r * lde + h * GROUP + i] : 0.0f;
            float t[LANES];
            for (int p = 0; p < LANES; p++) {
                float v = sign_of(p, 0) * x[0];
                for (int i = 1; i < GROUP; i++) v = v + sign_of(p, i) * x[i];
                t[p] = v;
            }
            for (size_t j = 0; j < bits; j++) acc[r * bits + j] = acc[r * bits + j] + t[index[(h * J + j / LANES) * LANES + j % LANES]];
        }
}

#if OH_X86
// A tile of the cosines: COS_ROWS rows x 64 classes in 24 registers. Each step of g loads the 4
// patterns and, per row, its table, and does 24 lookups and adds.
__attribute__((target("avx512f")))
static void cosines_avx512(float *u, size_t ldu, const float *tables, size_t rows, size_t bits,
                           const int32_t *index, size_t cols, float alpha) {
    const size_t G = div_up(bits, GROUP), tiles = div_up(cols, LANES * COS_GROUPS);
    const __m512 scale = _mm512_set1_ps(alpha);
    for (size_t r0 = 0; r0 < rows; r0 += COS_ROWS) {
        const float *tr = tables + r0 * G * LANES;
        const size_t live = rows - r0 < COS_ROWS ? rows - r0 : COS_ROWS;
        for (size_t tile = 0; tile < tiles; tile++) {
            const int32_t *ix = index + tile * COS_GROUPS * G * LANES;
            __m512 acc[COS_ROWS][COS_GROUPS];
            for (int r = 0; r < COS_ROWS; r++)
                for (int n = 0; n < COS_GROUPS; n++) acc[r][n] = _mm512_setzero_ps();
            for (size_t g = 0; g < G; g++) {
                __m512i p[COS_GROUPS];
                for (int n = 0; n < COS_GROUPS; n++) p[n] = _mm512_loadu_si512(ix + (n * G + g) * LANES);
                for (int r = 0; r < COS_ROWS; r++) {
                    const __m512 t = _mm512_loadu_ps(tr + (r * G + g) * LANES);
                    for (int n = 0; n < COS_GROUPS; n++) acc[r][n] = _mm512_add_ps(acc[r][n], _mm512_permutexvar_ps(p[n], t));
                }
            }
            for (size_t r = 0; r < live; r++)
                for (int n = 0; n < COS_GROUPS; n++) {
                    size_t c = tile * LANES * COS_GROUPS + (size_t)n * LANES;
                    if (c >= cols) break;
                    __mmask16 m = cols - c >= LANES ? (__mmask16)0xffff : (__mmask16)((1u << (cols - c)) - 1);
                    _mm512_mask_storeu_ps(u + (r0 + r) * ldu + c, m, _mm512_mul_ps(acc[r][n], scale));
                }
        }
    }
}

// The sign vectors of a table: lane p holds +1 where bit i of p is set, else -1.
__attribute__((target("avx512f"), always_inline))
static inline __m512 sign_vector(int i) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_set1_epi32(0x3f800000),
        _mm512_slli_epi32(_mm512_andnot_si512(_mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), (unsigned)i),
                                              _mm512_set1_epi32(1)), 31)));
}

// A table of four values of e (x[i] = 0 where i >= live).
__attribute__((target("avx512f"), always_inline))
static inline __m512 gradient_table(const float *x, size_t live, const __m512 *s) {
    // s[i] x[i] is exact, so a fused multiply-add rounds as the portable code's add does.
    __m512 t = _mm512_mul_ps(s[0], _mm512_set1_ps(x[0]));
    for (size_t i = 1; i < GROUP; i++) t = _mm512_fmadd_ps(s[i], _mm512_set1_ps(i < live ? x[i] : 0.0f), t);
    return t;
}

// A tile of the gradient: R rows x JN column groups of a, over the block's classes. Per group of
// four classes: R tables built in registers, JN patterns loaded, R x JN lookups and adds.
#define ACCUMULATE_TILE(R, JN)                                                                                \
__attribute__((target("avx512f")))                                                                            \
static void accumulate_##R##_##JN(float *acc, size_t bits, const float *e, size_t lde, size_t cols,           \
                                  const int32_t *index, size_t J, size_t jg0) {                               \
    __m512 s[GROUP];                                                                                          \
    for (int i = 0; i < GROUP; i++) s[i] = sign_vector(i);                                                    \
    __m512 a[R][JN];                                                                                          \
    __mmask16 m[JN];                                                                                          \
    for (int j = 0; j < JN; j++) {                                                                            \
        size_t c = (jg0 + (size_t)j) * LANES;                                                                 \
        m[j] = c >= bits ? 0 : bits - c >= LANES ? (__mmask16)0xffff : (__mmask16)((1u << (bits - c)) - 1);  \
        for (int r = 0; r < R; r++) a[r][j] = _mm512_maskz_loadu_ps(m[j], acc + r * bits + c);              \
    }                                                                                                         \
    const size_t quads = div_up(cols, GROUP);                                                                 \
    for (size_t h = 0; h < quads; h++) {                                                                      \
        const size_t live = cols - h * GROUP < GROUP ? cols - h * GROUP : GROUP;                              \
        __m512 t[R];                                                                                          \
        for (int r = 0; r < R; r++) t[r] = gradient_table(e + r * lde + h * GROUP, live, s);                  \
        for (int j = 0; j < JN; j++) {                                                                        \
            const __m512i p = _mm512_loadu_si512(index + (h * J + jg0 + (size_t)j) * LANES);                  \
            for (int r = 0; r < R; r++) a[r][j] = _mm512_add_ps(a[r][j], _mm512_permutexvar_ps(p, t[r]));    \
        }                                                                                                     \
    }                                                                                                         \
    for (int j = 0; j < JN; j++)                                                                              \
        for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(acc + r * bits + (jg0 + (size_t)j) * LANES, m[j], a[r][j]); \
}
ACCUMULATE_TILE(1, 8) ACCUMULATE_TILE(2, 8) ACCUMULATE_TILE(3, 8)
ACCUMULATE_TILE(1, 4) ACCUMULATE_TILE(2, 4) ACCUMULATE_TILE(3, 4) ACCUMULATE_TILE(4, 4) ACCUMULATE_TILE(5, 4)
#undef ACCUMULATE_TILE

typedef void (*accumulate_tile)(float *, size_t, const float *, size_t, size_t, const int32_t *, size_t, size_t);

static void accumulate_avx512(float *acc, size_t bits, const float *e, size_t lde, size_t rows, size_t cols,
                              const int32_t *index) {
    const size_t J = gradient_column_groups(bits);
    const int wide = J % 8 == 0;
    static const accumulate_tile by8[] = { 0, accumulate_1_8, accumulate_2_8, accumulate_3_8 };
    static const accumulate_tile by4[] = { 0, accumulate_1_4, accumulate_2_4, accumulate_3_4, accumulate_4_4, accumulate_5_4 };
    const size_t R = wide ? 3 : 5, JN = wide ? 8 : 4;
    for (size_t r0 = 0; r0 < rows; r0 += R) {
        size_t live = rows - r0 < R ? rows - r0 : R;
        accumulate_tile tile = wide ? by8[live] : by4[live];
        for (size_t jg = 0; jg < J; jg += JN) tile(acc + r0 * bits, bits, e + r0 * lde, lde, cols, index, J, jg);
    }
}
#endif

int oh_sign_level(void) {
#if OH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 1;
#endif
    return 0;
}

void oh_sign_cosines(float *u, size_t ldu, const float *tables, size_t rows, size_t bits,
                     const int32_t *index, size_t cols, float alpha, int level) {
#if OH_X86
    if (level >= 1) { cosines_avx512(u, ldu, tables, rows, bits, index, cols, alpha); return; }
#endif
    (void)level;
    cosines_portable(u, ldu, tables, rows, bits, index, cols, alpha);
}

void oh_sign_accumulate(float *acc, size_t bits, const float *e, size_t lde, size_t rows, size_t cols,
                        const int32_t *index, int level) {
#if OH_X86
    if (level >= 1) { accumulate_avx512(acc, bits, e, lde, rows, cols, index); return; }
#endif
    (void)level;
    accumulate_portable(acc, bits, e, lde, rows, cols, index);
}
