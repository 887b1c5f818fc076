// orthohash's own single-precision GEMM for AVX-512 CPUs (BLAS.swift and Conv2d.swift say when
// it is used): C (m, n) += op(A) (m, k) op(B) (k, n), row-major, one thread per call (the caller
// splits C over its threads). The design is the one of BLIS and OpenBLAS: op(B) is packed into
// panels of NR columns a block of KC rows at a time, op(A) into panels of MR rows, and an 8 x 32
// micro-kernel keeps its 16 accumulators in registers over the KC rows (89-92% of the core's FMA
// peak from cache on this session's Zen 5). It exists beside OpenBLAS for what OpenBLAS's
// interface cannot do: pack a convolution's columns straight from the images
// (oh_conv_gemm_forward: no im2col pass, no copy of the columns), keep a packed A for several
// GEMMs (a convolution's weights, once per pass instead of once per chunk), overwrite C without
// a clearing pass (beta 0), and read a large B where it lies instead of copying it into panels
// (oh_gemm_small_rows: a fully connected layer's weight).
//
// Each C element is the sum over k in blocks of KC, each block's products summed in k order into
// the accumulator and the block added to C: the order depends on k only, not on how the caller
// splits C, so results do not change with the number of threads.

#include "ohkernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#include "transpose16.h"
#endif

#define MR 8         // oh_gemm_row_block in ohkernels.h
#define NR 32
#define KC 256
#define MC 192      // 24 panels of A: MC x KC floats (192 KB) stay in L2 while B's panels pass
#define NC 256      // B's block: KC x NC floats (256 KB); C's block MC x NC stays in L2 over the k blocks

#if defined(__x86_64__)

int oh_gemm_available(void) {
    static int level = -1;
    if (level < 0) level = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return level;
}

// Per-thread packing buffers, allocated on a thread's first call and kept: no allocation per step.
static _Thread_local float *packed_a, *packed_b;
static _Thread_local size_t packed_a_capacity;

// The buffer for B's block, and one for all of A of at least `a_floats` (grown when a larger A
// comes: the step's GEMMs reach their largest within the first step).
static int workspace(size_t a_floats) {
    if (!packed_b) packed_b = aligned_alloc(64, (size_t)(NC + NR) * KC * sizeof(float));
    if (a_floats > packed_a_capacity) {
        free(packed_a);
        size_t bytes = (a_floats * sizeof(float) + 63) / 64 * 64;
        packed_a = aligned_alloc(64, bytes);
        packed_a_capacity = packed_a ? a_floats : 0;
    }
    return packed_a_capacity >= a_floats && packed_b;
}

// The micro-kernel: C (mr <= MR rows, nr <= 16 NV columns, ldc apart) += the kc-long products of
// an A panel (kc x MR) and a B panel (kc x NR, of which the first 16 NV columns are read). NV = 1
// serves a last panel of at most 16 columns at half the work.
__attribute__((target("avx512f"), always_inline))
static inline void kernel_nv(const int NV, size_t kc, const float *restrict a, const float *restrict b, float *restrict c,
                             size_t ldc, size_t mr, size_t nr, int overwrite) {
    __m512 acc[MR][2];
    for (size_t i = 0; i < MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        if (NV == 2) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
    for (int i = 0; i < MR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
#pragma clang loop unroll_count(4)
    for (size_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = NV == 2 ? _mm512_load_ps(b + 16) : b0;
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (NV == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR; b += NR;
    }
    if (overwrite) {
        // C = the products (the first k block of a GEMM into C's old content, beta 0).
        __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
        __mmask16 m1 = nr <= 16 ? 0 : nr >= 32 ? 0xffff : (__mmask16)((1u << (nr - 16)) - 1);
        for (size_t i = 0; i < mr; i++) {
            float *ci = c + i * ldc;
            _mm512_mask_storeu_ps(ci, m0, acc[i][0]);
            if (NV == 2) _mm512_mask_storeu_ps(ci + 16, m1, acc[i][1]);
        }
    } else if (mr == MR && nr == 16 * NV) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + i * ldc;
            _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][0]));
            if (NV == 2) _mm512_storeu_ps(ci + 16, _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc[i][1]));
        }
    } else {
        __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
        __mmask16 m1 = nr <= 16 ? 0 : nr >= 32 ? 0xffff : (__mmask16)((1u << (nr - 16)) - 1);
        for (size_t i = 0; i < mr; i++) {
            float *ci = c + i * ldc;
            _mm512_mask_storeu_ps(ci, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), acc[i][0]));
            if (NV == 2) _mm512_mask_storeu_ps(ci + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), acc[i][1]));
        }
    }
}

__attribute__((target("avx512f")))
static void kernel(size_t kc, const float *restrict a, const float *restrict b, float *restrict c, size_t ldc,
                   size_t mr, size_t nr, int overwrite) {
    if (nr > 16) kernel_nv(2, kc, a, b, c, ldc, mr, nr, overwrite);
    else kernel_nv(1, kc, a, b, c, ldc, mr, nr, overwrite);
}

// op(A)'s rows [0, mc) and columns [0, kc) (a points at its first element) into panels of MR rows,
// kc x MR each, rows past mc zero.
__attribute__((target("avx512f")))
static void pack_a(int trans, const float *a, size_t lda, size_t mc, size_t kc, float *restrict out) {
    for (size_t i0 = 0; i0 < mc; i0 += MR, out += MR * kc) {
        size_t mr = mc - i0 < MR ? mc - i0 : MR;
        if (trans) {
            // op(A)[i, p] = a[p lda + i]: MR contiguous floats per p.
            __mmask16 mask = (__mmask16)((1u << mr) - 1);
            for (size_t p = 0; p < kc; p++) {
                __m512 v = _mm512_maskz_loadu_ps(mask, a + p * lda + i0);
                _mm256_storeu_ps(out + p * MR, _mm512_castps512_ps256(v));
            }
        } else {
            // op(A)[i, p] = a[i lda + p]: rows are contiguous in p; blocks of MR rows x 16 are
            // transposed in registers (the other 8 rows zero).
            for (size_t p = 0; p < kc; p += 16) {
                size_t cols = kc - p < 16 ? kc - p : 16;
                __mmask16 mask = cols == 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
                __m512 r[16];
                for (size_t i = 0; i < 16; i++)
                    r[i] = i < mr ? _mm512_maskz_loadu_ps(mask, a + (i0 + i) * lda + p) : _mm512_setzero_ps();
                transpose16(r);
                for (size_t q = 0; q < cols; q++) _mm256_storeu_ps(out + (p + q) * MR, _mm512_castps512_ps256(r[q]));
            }
        }
    }
}

// op(B)'s rows [0, kc) and columns [0, nc) into panels of NR columns, kc x NR each, columns past
// nc zero.
__attribute__((target("avx512f")))
static void pack_b(int trans, const float *b, size_t ldb, size_t kc, size_t nc, float *restrict out) {
    for (size_t j0 = 0; j0 < nc; j0 += NR, out += NR * kc) {
        size_t nr = nc - j0 < NR ? nc - j0 : NR;
        if (!trans) {
            // op(B)[p, j] = b[p ldb + j]: NR contiguous floats per p.
            __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
            __mmask16 m1 = nr <= 16 ? 0 : nr >= 32 ? 0xffff : (__mmask16)((1u << (nr - 16)) - 1);
            for (size_t p = 0; p < kc; p++) {
                const float *row = b + p * ldb + j0;
                _mm512_store_ps(out + p * NR, _mm512_maskz_loadu_ps(m0, row));
                _mm512_store_ps(out + p * NR + 16, _mm512_maskz_loadu_ps(m1, row + 16));
            }
        } else {
            // op(B)[p, j] = b[j ldb + p]: columns of op(B) are contiguous in p; 16 x 16 blocks
            // are transposed in registers.
            for (size_t h = 0; h < NR; h += 16) {
                size_t cols = nr > h ? (nr - h < 16 ? nr - h : 16) : 0;
                size_t p = 0;
                if (cols == 16) {
                    for (; p + 16 <= kc; p += 16) {
                        __m512 r[16];
                        for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(b + (j0 + h + j) * ldb + p);
                        transpose16(r);
                        for (int q = 0; q < 16; q++) _mm512_store_ps(out + (p + q) * NR + h, r[q]);
                    }
                }
                for (; p < kc; p++)
                    for (size_t j = 0; j < 16; j++)
                        out[p * NR + h + j] = j < cols ? b[(j0 + h + j) * ldb + p] : 0.0f;
            }
        }
    }
}

// Packs op(B)'s rows [pc, pc + kc) and columns [jc, jc + nc) into panels (pack_b's layout).
typedef void (*pack_b_block)(const void *context, size_t pc, size_t kc, size_t jc, size_t nc, float *out);

// C's rows [m0, m1) and columns [n0, n1) += op(A) op(B), all of op(A) (m, k) packed as
// oh_gemm_pack_a lays it out, op(B)'s blocks packed by `pack`.
__attribute__((target("avx512f")))
static void gemm_packed(const float *pa, size_t m, size_t m0, size_t m1, size_t n0, size_t n1, size_t k, pack_b_block pack,
                        const void *context, float *c, size_t ldc, int overwrite) {
    // Rows [m0, m1) of C (m0 a multiple of MR) from A packed for all m rows.
    const size_t mpad = (m + MR - 1) / MR * MR;
    float *pb = packed_b;
    for (size_t jc = n0; jc < n1; jc += NC) {
        size_t nc = n1 - jc < NC ? n1 - jc : NC;
        for (size_t pc = 0; pc < k; pc += KC) {
            size_t kc = k - pc < KC ? k - pc : KC;
            pack(context, pc, kc, jc, nc, pb);
            for (size_t ic = m0; ic < m1; ic += MC) {
                size_t mc = m1 - ic < MC ? m1 - ic : MC;
                const float *a = pa + pc * mpad + ic * kc;
                for (size_t jr = 0; jr < nc; jr += NR)
                    for (size_t ir = 0; ir < mc; ir += MR)
                        kernel(kc, a + ir * kc, pb + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                               mc - ir < MR ? mc - ir : MR, nc - jr < NR ? nc - jr : NR, overwrite && pc == 0);
            }
        }
    }
}

struct matrix_b { const float *b; size_t ldb; int trans; };

static void pack_b_matrix(const void *context, size_t pc, size_t kc, size_t jc, size_t nc, float *out) {
    const struct matrix_b *m = context;
    pack_b(m->trans, m->trans ? m->b + jc * m->ldb + pc : m->b + pc * m->ldb + jc, m->ldb, kc, nc, out);
}

// The micro-kernel for a GEMM whose large operand is read where it lies, unpacked (a fully
// connected layer's weight, 151 MB for AlexNet's fc6: packing it would copy it once per GEMM):
// C (MR rows, 32 columns, ldc apart) += A' (MR x kc) B' (kc x 32), A' MR rows of W (lda apart),
// B' a packed panel. Each row's line 4 ahead is prefetched (W streams from memory once).
__attribute__((target("avx512f")))
static void kernel_streamed(size_t kc, const float *restrict a, size_t lda, const float *restrict b, float *restrict c,
                            size_t ldc) {
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
    for (size_t p = 0; p < kc; p++) {
        if ((p & 15) == 0)
            for (int i = 0; i < MR; i++) _mm_prefetch((const char *)(a + i * lda + p + 64), _MM_HINT_T0);
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i * lda + p]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        b += NR;
    }
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][0]));
        _mm512_storeu_ps(ci + 16, _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc[i][1]));
    }
}

// C^T (n x mpad, scratch) += W B' over all of k, W (n x k, rows ldw apart) read in place, B' =
// A^T packed (k x mpad) in panels of 32 columns. n a multiple of MR.
__attribute__((target("avx512f")))
static void gemm_streamed(size_t n, size_t mpad, size_t k, const float *w, size_t ldw, const float *packed, float *ct) {
    const size_t block = 64;    // rows of W per block: block x KC floats stay in L2 for the next panel of B'
    for (size_t ic = 0; ic < n; ic += block) {
        size_t mc = n - ic < block ? n - ic : block;
        for (size_t pc = 0; pc < k; pc += KC) {
            size_t kc = k - pc < KC ? k - pc : KC;
            for (size_t jr = 0; jr < mpad; jr += NR)
                for (size_t ir = ic; ir < ic + mc; ir += MR)
                    kernel_streamed(kc, w + ir * ldw + pc, ldw, packed + pc * mpad + jr * kc, ct + ir * mpad + jr, mpad);
        }
    }
}

static _Thread_local float *streamed_scratch;
static _Thread_local size_t streamed_capacity;

int oh_gemm_small_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                       float *c, size_t ldc) {
    const size_t mpad = (m + NR - 1) / NR * NR, npad = (n + MR - 1) / MR * MR;
    if (!oh_gemm_available() || m > 128 || !workspace(k * mpad)) return 0;
    if (npad * mpad > streamed_capacity) {
        free(streamed_scratch);
        streamed_scratch = aligned_alloc(64, npad * mpad * sizeof(float));
        streamed_capacity = streamed_scratch ? npad * mpad : 0;
        if (!streamed_scratch) return 0;
    }
    // B' = A^T (k x m) in panels of 32 of A's rows, a block of KC rows of k at a time (in the
    // buffer kept for packed A's); C^T starts at zero.
    for (size_t pc = 0; pc < k; pc += KC) {
        size_t kc = k - pc < KC ? k - pc : KC;
        pack_b(1, a + pc, lda, kc, m, packed_a + pc * mpad);
    }
    memset(streamed_scratch, 0, npad * mpad * sizeof(float));
    // The kernel reads MR rows of B at a time: the last n % MR rows (the layers' widths are
    // multiples of 8, so none there) by plain loops.
    const size_t nfull = n / MR * MR;
    if (nfull > 0) gemm_streamed(nfull, mpad, k, b, ldb, packed_a, streamed_scratch);
    for (size_t i = nfull; i < n; i++)
        for (size_t j = 0; j < m; j++) {
            float sum = 0.0f;
            for (size_t p = 0; p < k; p++) sum += a[j * lda + p] * b[i * ldb + p];
            streamed_scratch[i * mpad + j] += sum;
        }
    // C += (C^T)^T.
    for (size_t j = 0; j < m; j++) {
        float *row = c + j * ldc;
        for (size_t i = 0; i < n; i++) row[i] += streamed_scratch[i * mpad + j];
    }
    return 1;
}

int oh_gemm_packed(const float *packed, size_t m, size_t first_row, size_t rows, size_t n, size_t k, int trans_b,
                   const float *b, size_t ldb, float *c, size_t ldc, int beta) {
    if (!oh_gemm_available() || !workspace(0) || first_row % MR != 0 || first_row + rows > m) return 0;
    struct matrix_b context = { b, ldb, trans_b };
    gemm_packed(packed, m, first_row, first_row + rows, 0, n, k, pack_b_matrix, &context, c, ldc, beta == 0 && k > 0);
    return 1;
}

size_t oh_gemm_packed_a_floats(size_t m, size_t k) { return (m + MR - 1) / MR * MR * k; }

void oh_gemm_pack_a(int trans_a, size_t m, size_t k, const float *a, size_t lda, float *out) {
    const size_t mpad = (m + MR - 1) / MR * MR;
    for (size_t pc = 0; pc < k; pc += KC) {
        size_t kc = k - pc < KC ? k - pc : KC;
        pack_a(trans_a, trans_a ? a + pc * lda : a + pc, lda, m, kc, out + pc * mpad);
    }
}

// The masks of the `stride` loads of strided_row: the floats of [first, first + 16 stride) that
// lie in the row [0, W).
static inline void strided_masks(ptrdiff_t first, ptrdiff_t W, int stride, __mmask16 *masks) {
    for (int i = 0; i < stride; i++) {
        const ptrdiff_t start = first + 16 * i;
        ptrdiff_t lo = -start, hi = W - start;
        lo = lo < 0 ? 0 : lo;
        hi = hi > 16 ? 16 : hi;
        masks[i] = hi > lo ? (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
    }
}

// The lanes' values x[first + stride l] (l = 0..15) of one input row `row` (the positions
// outside [0, W) zero: `masks` from strided_masks), from `stride` masked loads of consecutive
// floats (never outside the row) and permutes that keep every stride-th: no gather.
__attribute__((target("avx512f"), always_inline))
static inline __m512 strided_row(const float *row, ptrdiff_t first, int stride, const __mmask16 *masks) {
    __m512 v[4];
    for (int i = 0; i < stride; i++) v[i] = _mm512_maskz_loadu_ps(masks[i], row + first + 16 * i);
    switch (stride) {
    case 1: return v[0];
    case 2: return _mm512_permutex2var_ps(v[0], _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), v[1]);
    case 3: {
        // Lanes 0-10: floats 0, 3, ..., 30 of v0:v1; lanes 11-15: floats 33, ..., 45, in v2.
        __m512 t = _mm512_permutex2var_ps(v[0], _mm512_set_epi32(0, 0, 0, 0, 0, 30, 27, 24, 21, 18, 15, 12, 9, 6, 3, 0), v[1]);
        return _mm512_mask_permutexvar_ps(t, 0xf800, _mm512_set_epi32(13, 10, 7, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), v[2]);
    }
    default: {
        const __m512i every4 = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 28, 24, 20, 16, 12, 8, 4, 0);
        __m512 t0 = _mm512_permutex2var_ps(v[0], every4, v[1]), t1 = _mm512_permutex2var_ps(v[2], every4, v[3]);
        return _mm512_shuffle_f32x4(t0, t1, 0x44);
    }
    }
}

// Kernel columns kj0 .. kj0 + n of one kernel row for a group of up to two runs (strided_row
// each, merged by the runs' lanes), into n rows of a panel NR floats apart.
__attribute__((target("avx512f"), always_inline))
static inline void strided_columns(const int stride, const float *const rows[2], const ptrdiff_t firsts[2],
                                   const __mmask16 run_mask[2], __mmask16 load_mask[2][32][4], size_t kj0, size_t n, float *o) {
    for (size_t j = 0; j < n; j++, o += NR) {
        const size_t kj = kj0 + j;
        __m512 v = _mm512_setzero_ps();
        if (rows[0]) v = _mm512_mask_mov_ps(v, run_mask[0], strided_row(rows[0], firsts[0] + (ptrdiff_t)kj, stride, load_mask[0][kj]));
        if (rows[1]) v = _mm512_mask_mov_ps(v, run_mask[1], strided_row(rows[1], firsts[1] + (ptrdiff_t)kj, stride, load_mask[1][kj]));
        _mm512_store_ps(o, v);
    }
}

// Columns [j0, j0 + nc) of a convolution's im2col columns (row r = (c, ki, kj) of C k k, column
// (image, oh, ow) of n P) for the rows [r0, r0 + kc), from the images x into panels as pack_b
// lays them out. A group of 16 columns is one or two runs of one output row each (a run's next
// column is the next ow); a run reads its values for row r as strided_row does: with stride s,
// 16 s consecutive floats of the input row and permutes, for strides up to 4 (AlexNet's first
// layer's 4, and 1). Groups of more runs (output rows narrower than 16), or larger strides,
// gather each float.
__attribute__((target("avx512f")))
static void pack_b_conv(const float *x, const struct oh_conv_geometry *g, size_t r0, size_t kc, size_t j0, size_t nc,
                        size_t columns_end, float *restrict out) {
    const size_t P = g->Ho * g->Wo, k = g->k, kk = k * k;
    const ptrdiff_t HW = (ptrdiff_t)(g->H * g->W), W = (ptrdiff_t)g->W, H = (ptrdiff_t)g->H, CHW = (ptrdiff_t)(g->C * g->H * g->W);
    const ptrdiff_t stride = (ptrdiff_t)g->stride, pad = (ptrdiff_t)g->pad;
    const __m512i Hv = _mm512_set1_epi32((int32_t)g->H), Wv = _mm512_set1_epi32((int32_t)g->W);
    const int same = g->stride == 1 && g->Ho == g->H && g->Wo == g->W;
    for (size_t p0 = j0; p0 < j0 + nc; p0 += NR, out += NR * kc) {
        for (size_t h = 0; h < NR; h += 16) {
            // Each lane's column: its image and output row (a run), the offset of its kernel's corner.
            int32_t base[16], ih0[16], iw0[16];
            __mmask16 valid = 0;
            // Runs: lanes [0, split) and [split, end); first lane's image, row, and ow - lane.
            int runs = 0, split = 16;
            ptrdiff_t run_img[2] = {0, 0}, run_oh[2] = {0, 0}, run_ow[2] = {0, 0};
            size_t col = p0 + h, img = col / P, oh = col % P / g->Wo, ow = col % g->Wo;
            for (int l = 0; l < 16; l++, col++) {
                if (col < columns_end) {
                    ih0[l] = (int32_t)((ptrdiff_t)oh * stride - pad);
                    iw0[l] = (int32_t)((ptrdiff_t)ow * stride - pad);
                    base[l] = (int32_t)((ptrdiff_t)img * CHW + (ptrdiff_t)ih0[l] * W + iw0[l]);
                    valid |= (__mmask16)(1u << l);
                    if (l == 0 || ow == 0) {
                        if (runs < 2) { run_img[runs] = (ptrdiff_t)img; run_oh[runs] = (ptrdiff_t)oh; run_ow[runs] = (ptrdiff_t)ow - l; }
                        if (runs == 1) split = l;
                        runs++;
                    }
                } else {
                    ih0[l] = iw0[l] = -(1 << 20); base[l] = 0;
                }
                if (++ow == g->Wo) { ow = 0; if (++oh == g->Ho) { oh = 0; img++; } }
            }
            // Same (stride 1, output as large as the input): a run's lanes and the next image's
            // first run read consecutive floats of the planes, so the whole group is one or two
            // masked loads, the masks per kernel row and column.
            __mmask16 first = valid;
            ptrdiff_t next = 0;
            int consecutive = same;
            if (same) {
                int second = 0;
                for (int l = 1; l < 16 && consecutive; l++) {
                    if (!((valid >> l) & 1)) break;
                    if (!second && base[l] != base[0] + l) {
                        second = l;
                        first = (__mmask16)((1u << l) - 1);
                        next = (ptrdiff_t)base[l] - (ptrdiff_t)(base[0] + l);
                    } else if (second && base[l] != base[second] + (l - second)) {
                        consecutive = 0;
                    }
                }
            }
            const int strided = !consecutive && runs <= 2 && stride <= 4;
            const __mmask16 run_mask[2] = { (__mmask16)(valid & ((1u << split) - 1)), (__mmask16)(valid & ~((1u << split) - 1)) };
            const __m512i basev = _mm512_loadu_si512(base), ih0v = _mm512_loadu_si512(ih0), iw0v = _mm512_loadu_si512(iw0);
            __mmask16 row_mask[32], col_mask[32];      // k <= 32 (checked by the caller)
            __mmask16 load_mask[2][32][4];             // strided: each run's and kernel column's loads
            if (strided) {
                for (int u = 0; u < runs; u++)
                    for (size_t j = 0; j < k; j++) strided_masks(run_ow[u] * stride - pad + (ptrdiff_t)j, W, (int)stride, load_mask[u][j]);
            } else {
                for (size_t i = 0; i < k; i++) {
                    row_mask[i] = valid & _mm512_cmplt_epu32_mask(_mm512_add_epi32(ih0v, _mm512_set1_epi32((int32_t)i)), Hv);
                    col_mask[i] = _mm512_cmplt_epu32_mask(_mm512_add_epi32(iw0v, _mm512_set1_epi32((int32_t)i)), Wv);
                }
            }
            size_t r = r0, end = r0 + kc;
            float *o = out + h;
            while (r < end) {
                size_t c = r / kk, t = r % kk, ki = t / k, kj = t % k;
                for (; ki < k && r < end; ki++, kj = 0) {
                    if (consecutive) {
                        const __mmask16 rm = row_mask[ki];
                        const float *src = x + base[0] + (ptrdiff_t)c * HW + (ptrdiff_t)ki * W;
                        for (; kj < k && r < end; kj++, r++, o += NR) {
                            __mmask16 m = rm & col_mask[kj];
                            __m512 v = _mm512_maskz_loadu_ps(m & first, src + kj);
                            if (m & ~first) v = _mm512_mask_loadu_ps(v, m & ~first, src + kj + next);
                            _mm512_store_ps(o, v);
                        }
                    } else if (strided) {
                        // Each run's input row for this kernel row, or none (padding rows: zeros).
                        const float *rows[2] = {0, 0};
                        ptrdiff_t firsts[2] = {0, 0};
                        for (int u = 0; u < runs; u++) {
                            ptrdiff_t ih = run_oh[u] * stride - pad + (ptrdiff_t)ki;
                            if (ih >= 0 && ih < H && run_mask[u]) rows[u] = x + run_img[u] * CHW + (ptrdiff_t)c * HW + ih * W;
                            firsts[u] = run_ow[u] * stride - pad;
                            // The span the next channel's same row reads (input rows are strided
                            // in memory: not a pattern the hardware prefetcher follows).
                            if (rows[u] && c + 1 < g->C)
                                for (ptrdiff_t f = firsts[u] < 0 ? 0 : firsts[u]; f < firsts[u] + 16 * stride + (ptrdiff_t)k && f < W; f += 16)
                                    _mm_prefetch((const char *)(rows[u] + HW + f), _MM_HINT_T0);
                        }
                        size_t n = (k - kj) < (end - r) ? k - kj : end - r;
                        // The stride as a constant: the loads stay in registers.
                        switch (stride) {
                        case 1: strided_columns(1, rows, firsts, run_mask, load_mask, kj, n, o); break;
                        case 2: strided_columns(2, rows, firsts, run_mask, load_mask, kj, n, o); break;
                        case 3: strided_columns(3, rows, firsts, run_mask, load_mask, kj, n, o); break;
                        default: strided_columns(4, rows, firsts, run_mask, load_mask, kj, n, o); break;
                        }
                        kj += n; r += n; o += n * NR;
                    } else {
                        const __mmask16 rm = row_mask[ki];
                        const __m512i rowv = _mm512_add_epi32(basev, _mm512_set1_epi32((int32_t)((ptrdiff_t)c * HW + (ptrdiff_t)ki * W)));
                        for (; kj < k && r < end; kj++, r++, o += NR) {
                            __m512i idx = _mm512_add_epi32(rowv, _mm512_set1_epi32((int32_t)kj));
                            _mm512_store_ps(o, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), rm & col_mask[kj], idx, x, 4));
                        }
                    }
                }
            }
        }
    }
}

struct conv_b { const float *x; const struct oh_conv_geometry *g; size_t end; };

static void pack_b_image(const void *context, size_t pc, size_t kc, size_t jc, size_t nc, float *out) {
    const struct conv_b *cb = context;
    pack_b_conv(cb->x, cb->g, pc, kc, jc, nc, cb->end, out);
}

int oh_conv_gemm_forward(float *c, size_t ldc, const float *packed_w, size_t O, const float *x,
                         const struct oh_conv_geometry *g, size_t images, size_t first_column, size_t columns) {
    if (!oh_gemm_available() || !workspace(0) || images * g->C * g->H * g->W >= (size_t)1 << 31 || g->k > 32) return 0;
    struct conv_b context = { x, g, first_column + columns };
    gemm_packed(packed_w, O, 0, O, first_column, first_column + columns, g->C * g->k * g->k, pack_b_image, &context, c, ldc, 0);
    return 1;
}

#else

int oh_gemm_available(void) { return 0; }
size_t oh_gemm_packed_a_floats(size_t m, size_t k) { return 0; }
int oh_gemm_small_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                       float *c, size_t ldc) { return 0; }
int oh_gemm_packed(const float *packed, size_t m, size_t first_row, size_t rows, size_t n, size_t k, int trans_b,
                   const float *b, size_t ldb, float *c, size_t ldc, int beta) { return 0; }
void oh_gemm_pack_a(int trans_a, size_t m, size_t k, const float *a, size_t lda, float *out) {}
int oh_conv_gemm_forward(float *c, size_t ldc, const float *packed_w, size_t O, const float *x,
                         const struct oh_conv_geometry *g, size_t images, size_t first_column, size_t columns) { return 0; }

#endif
