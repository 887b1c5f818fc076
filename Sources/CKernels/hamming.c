// Exact Hamming search over packed binary codes: the k nearest database rows of each query, ties
// by ascending row (the order faiss returns), and the distances of one query to every row.
//
// Codes are `code_bytes` bytes each, in any fixed bit layout shared by queries and database (a
// Hamming distance does not depend on the order of the bits): numpy.packbits' rows as `orthohash
// encode` writes them, read in place from a memory-mapped file. The database is walked in chunks
// that are copied word-transposed (word w of T consecutive codes side by side) into a buffer that
// stays in cache, so that one vector instruction compares a query with 8 codes; every query of a
// block meets each chunk while it is in cache, four at a time (each vector of codes is loaded once
// for four queries). A query keeps candidates in a buffer of 4k entries: a row enters when its
// distance is below the query's limit (the worst distance of its k best so far; rows arrive in
// ascending order, so a later row at that distance is worse), and when the buffer is full a
// quickselect keeps the k best and lowers the limit. After the first few chunks almost no row
// enters, and the cost is the distance computation alone.
//
// Four variants, chosen at run time: AVX-512 with VPOPCNTDQ (8 codes per instruction), AVX2
// (4 codes, bits counted by table lookups), the POPCNT instruction, and portable C.

#include "ohkernels.h"
#include "clones.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define OH_X86 1
#endif

// Word w of code x, from `code_bytes` bytes (the last word zero-padded).
static inline uint64_t code_word(const uint8_t *code, size_t code_bytes, size_t w) {
    uint64_t v = 0;
    size_t at = w * 8, n = code_bytes - at < 8 ? code_bytes - at : 8;
    memcpy(&v, code + at, n);
    return v;
}

// A candidate as one integer: distance in the high 24 bits, row in the low 40, so that integer
// order is (distance, row) order (the limits OH_HAMMING_MAX_CODE_BYTES and _ROWS keep both in).
typedef uint64_t neighbour;
#define ROW_BITS 40
static inline neighbour make_neighbour(uint32_t d, int64_t row) { return (uint64_t)d << ROW_BITS | (uint64_t)row; }
static inline uint32_t neighbour_distance(neighbour n) { return (uint32_t)(n >> ROW_BITS); }
static inline int64_t neighbour_row(neighbour n) { return (int64_t)(n & (((uint64_t)1 << ROW_BITS) - 1)); }

// Moves the `k` smallest of the `n` entries of `v` to its front, in any order (quickselect:
// Lomuto partitions around a median of three).
static void keep_best(neighbour *v, size_t n, size_t k) {
    if (k >= n) return;
    size_t lo = 0, hi = n - 1;                     // inclusive
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        neighbour t;
#define SWAP(a, b) (t = v[a], v[a] = v[b], v[b] = t)
        if (v[mid] < v[lo]) SWAP(mid, lo);
        if (v[hi] < v[lo]) SWAP(hi, lo);
        if (v[mid] < v[hi]) SWAP(mid, hi);         // v[hi]: the median of the three
        const neighbour pivot = v[hi];
        size_t store = lo;
        for (size_t i = lo; i < hi; i++)
            if (v[i] < pivot) { SWAP(i, store); store++; }
        SWAP(store, hi);                           // [lo, store) below the pivot, now at store
#undef SWAP
        if (store == k) return;
        if (store > k) hi = store - 1; else lo = store + 1;
    }
}

// A query's candidates: a buffer of `cap` entries that rows enter by appending, while their
// distance is below `limit`; when it is full, the k best are kept and `limit` becomes the worst
// distance among them (rows arrive in ascending order, so a later row of equal distance is worse).
// When cap is every row (k close to the database size), the buffer fills only at the end.
typedef struct {
    size_t k, words, cap;
    neighbour *kept;   // (queries, cap): cap = 4k, or every row when there are fewer
    size_t *count;     // (nq)
    uint32_t *limit;   // (nq) a row enters when its distance is below this
} topk_state;

static void compact(topk_state *s, size_t q) {
    const size_t k = s->k;
    neighbour *v = s->kept + q * s->cap;
    keep_best(v, s->count[q], k);
    s->count[q] = k;
    neighbour worst = 0;
    for (size_t j = 0; j < k; j++) worst = v[j] > worst ? v[j] : worst;
    s->limit[q] = neighbour_distance(worst);
}

static inline void offer(topk_state *s, size_t q, uint32_t d, int64_t id) {
    size_t n = s->count[q];
    s->kept[q * s->cap + n] = make_neighbour(d, id);
    s->count[q] = ++n;
    if (n == s->cap) compact(s, q);
}

// One query against one transposed chunk of `n` codes (stride T words apart), rows from `first`.
typedef void (*chunk_fn)(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first);

static void chunk_portable(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    const size_t W = s->words;
    for (size_t i = 0; i < n; i++) {
        uint32_t d = 0;
        for (size_t w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(query[w] ^ chunk[w * T + i]);
        if (d < s->limit[q]) offer(s, q, d, first + (int64_t)i);
    }
}

#if OH_X86
__attribute__((target("popcnt")))
static void chunk_popcnt(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    const size_t W = s->words;
    if (W == 1) {
        const uint64_t a = query[0];
        for (size_t i = 0; i < n; i++) {
            uint32_t d = (uint32_t)__builtin_popcountll(a ^ chunk[i]);
            if (d < s->limit[q]) offer(s, q, d, first + (int64_t)i);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t d = 0;
        for (size_t w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(query[w] ^ chunk[w * T + i]);
        if (d < s->limit[q]) offer(s, q, d, first + (int64_t)i);
    }
}

__attribute__((target("avx512f,avx512vpopcntdq,popcnt")))
static void chunk_avx512(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    const size_t W = s->words;
    size_t i = 0;
    __m512i limit = _mm512_set1_epi64((long long)s->limit[q]);
    for (; i + 8 <= n; i += 8) {
        __m512i d = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(chunk + i), _mm512_set1_epi64((long long)query[0])));
        for (size_t w = 1; w < W; w++)
            d = _mm512_add_epi64(d, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(chunk + w * T + i),
                                                                         _mm512_set1_epi64((long long)query[w]))));
        __mmask8 below = _mm512_cmplt_epu64_mask(d, limit);
        if (below) {
            uint64_t lane[8];
            _mm512_storeu_si512(lane, d);
            while (below) {
                int j = __builtin_ctz(below);
                below &= (__mmask8)(below - 1);
                // The limit may have fallen since the compare (rows of this vector entered).
                if (lane[j] < s->limit[q]) offer(s, q, (uint32_t)lane[j], first + (int64_t)(i + (size_t)j));
            }
            limit = _mm512_set1_epi64((long long)s->limit[q]);
        }
    }
    for (; i < n; i++) {
        uint32_t d = 0;
        for (size_t w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(query[w] ^ chunk[w * T + i]);
        if (d < s->limit[q]) offer(s, q, d, first + (int64_t)i);
    }
}

// The rows after the last full vector, for four queries: scalar popcounts.
static inline __attribute__((always_inline))
void four_tail(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t i, size_t n, size_t T,
               int64_t first, size_t W) {
    for (; i < n; i++) {
        for (int j = 0; j < 4; j++) {
            uint32_t d = 0;
            for (size_t w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(query[(size_t)j * W + w] ^ chunk[w * T + i]);
            if (d < s->limit[q + (size_t)j]) offer(s, q + (size_t)j, d, first + (int64_t)i);
        }
    }
}

// Four queries at once: each vector of 8 codes is loaded once and compared with all four, which
// divides the loads per comparison by four and gives the core independent work. The body is
// inlined with W a constant for the usual code lengths, so that the distances and limits stay
// in registers.
__attribute__((target("avx512f,avx512dq,avx512vpopcntdq,popcnt"), always_inline))
static inline void avx512_four_body(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T,
                                    int64_t first, const size_t W) {
    size_t i = 0;
    __m512i l0 = _mm512_set1_epi64((long long)s->limit[q]), l1 = _mm512_set1_epi64((long long)s->limit[q + 1]);
    __m512i l2 = _mm512_set1_epi64((long long)s->limit[q + 2]), l3 = _mm512_set1_epi64((long long)s->limit[q + 3]);
    for (; i + 8 <= n; i += 8) {
        __m512i d0 = _mm512_setzero_si512(), d1 = d0, d2 = d0, d3 = d0;
        for (size_t w = 0; w < W; w++) {
            const __m512i x = _mm512_loadu_si512(chunk + w * T + i);
            d0 = _mm512_add_epi64(d0, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_set1_epi64((long long)query[w]))));
            d1 = _mm512_add_epi64(d1, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_set1_epi64((long long)query[W + w]))));
            d2 = _mm512_add_epi64(d2, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_set1_epi64((long long)query[2 * W + w]))));
            d3 = _mm512_add_epi64(d3, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_set1_epi64((long long)query[3 * W + w]))));
        }
        // d - limit is negative where a row is below its query's limit (both far below 2^63):
        // one test of the four differences' sign bits instead of four compares.
        const __m512i any = _mm512_or_si512(_mm512_or_si512(_mm512_sub_epi64(d0, l0), _mm512_sub_epi64(d1, l1)),
                                            _mm512_or_si512(_mm512_sub_epi64(d2, l2), _mm512_sub_epi64(d3, l3)));
        if (__builtin_expect(_mm512_movepi64_mask(any) == 0, 1)) continue;
        const __mmask8 b0 = _mm512_cmplt_epu64_mask(d0, l0), b1 = _mm512_cmplt_epu64_mask(d1, l1);
        const __mmask8 b2 = _mm512_cmplt_epu64_mask(d2, l2), b3 = _mm512_cmplt_epu64_mask(d3, l3);
        const __m512i dj[4] = {d0, d1, d2, d3};
        const __mmask8 bj[4] = {b0, b1, b2, b3};
        for (int j = 0; j < 4; j++) {
            if (!bj[j]) continue;
            const size_t qj = q + (size_t)j;
            uint64_t lane[8];
            _mm512_storeu_si512(lane, dj[j]);
            __mmask8 m = bj[j];
            while (m) {
                int b = __builtin_ctz(m);
                m &= (__mmask8)(m - 1);
                // The limit may have fallen since the compare (rows of this vector entered).
                if (lane[b] < s->limit[qj]) offer(s, qj, (uint32_t)lane[b], first + (int64_t)(i + (size_t)b));
            }
        }
        l0 = _mm512_set1_epi64((long long)s->limit[q]); l1 = _mm512_set1_epi64((long long)s->limit[q + 1]);
        l2 = _mm512_set1_epi64((long long)s->limit[q + 2]); l3 = _mm512_set1_epi64((long long)s->limit[q + 3]);
    }
    four_tail(s, q, query, chunk, i, n, T, first, W);
}

__attribute__((target("avx512f,avx512dq,avx512vpopcntdq,popcnt")))
static void chunk_avx512_four(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    switch (s->words) {
    case 1: avx512_four_body(s, q, query, chunk, n, T, first, 1); break;
    case 2: avx512_four_body(s, q, query, chunk, n, T, first, 2); break;
    case 4: avx512_four_body(s, q, query, chunk, n, T, first, 4); break;
    case 8: avx512_four_body(s, q, query, chunk, n, T, first, 8); break;
    default: avx512_four_body(s, q, query, chunk, n, T, first, s->words); break;
    }
}

// The same four-at-once scheme with the POPCNT instruction, one code at a time, W a constant
// for the usual lengths; the four limits are tested at once through the signs of d - limit.
__attribute__((target("popcnt"), always_inline))
static inline void popcnt_four_body(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T,
                                    int64_t first, const size_t W) {
    int64_t l0 = s->limit[q], l1 = s->limit[q + 1], l2 = s->limit[q + 2], l3 = s->limit[q + 3];
    for (size_t i = 0; i < n; i++) {
        int64_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (size_t w = 0; w < W; w++) {
            const uint64_t x = chunk[w * T + i];
            d0 += __builtin_popcountll(x ^ query[w]);
            d1 += __builtin_popcountll(x ^ query[W + w]);
            d2 += __builtin_popcountll(x ^ query[2 * W + w]);
            d3 += __builtin_popcountll(x ^ query[3 * W + w]);
        }
        if (__builtin_expect(((d0 - l0) | (d1 - l1) | (d2 - l2) | (d3 - l3)) >= 0, 1)) continue;
        if (d0 < l0) offer(s, q, (uint32_t)d0, first + (int64_t)i);
        if (d1 < l1) offer(s, q + 1, (uint32_t)d1, first + (int64_t)i);
        if (d2 < l2) offer(s, q + 2, (uint32_t)d2, first + (int64_t)i);
        if (d3 < l3) offer(s, q + 3, (uint32_t)d3, first + (int64_t)i);
        l0 = s->limit[q]; l1 = s->limit[q + 1]; l2 = s->limit[q + 2]; l3 = s->limit[q + 3];
    }
}

__attribute__((target("popcnt")))
static void chunk_popcnt_four(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    switch (s->words) {
    case 1: popcnt_four_body(s, q, query, chunk, n, T, first, 1); break;
    case 2: popcnt_four_body(s, q, query, chunk, n, T, first, 2); break;
    case 4: popcnt_four_body(s, q, query, chunk, n, T, first, 4); break;
    case 8: popcnt_four_body(s, q, query, chunk, n, T, first, 8); break;
    default: popcnt_four_body(s, q, query, chunk, n, T, first, s->words); break;
    }
}

// AVX2 has no vector popcount: each byte's bits are counted by two table lookups of its nibbles
// (vpshufb), the counts of a code's W words added per byte (at most 8 W <= 248), and summed per
// 64-bit lane (vpsadbw). Four queries share each vector of 4 codes, as above.
__attribute__((target("avx2,popcnt"), always_inline))
static inline __m256i byte_counts(__m256i v) {
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                           _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
}

__attribute__((target("avx2,popcnt"), always_inline))
static inline void avx2_four_body(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T,
                                  int64_t first, const size_t W) {
    size_t i = 0;
    const __m256i zero = _mm256_setzero_si256();
    __m256i l0 = _mm256_set1_epi64x((long long)s->limit[q]), l1 = _mm256_set1_epi64x((long long)s->limit[q + 1]);
    __m256i l2 = _mm256_set1_epi64x((long long)s->limit[q + 2]), l3 = _mm256_set1_epi64x((long long)s->limit[q + 3]);
    for (; i + 4 <= n; i += 4) {
        __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
        for (size_t w = 0; w < W; w++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(chunk + w * T + i));
            c0 = _mm256_add_epi8(c0, byte_counts(_mm256_xor_si256(x, _mm256_set1_epi64x((long long)query[w]))));
            c1 = _mm256_add_epi8(c1, byte_counts(_mm256_xor_si256(x, _mm256_set1_epi64x((long long)query[W + w]))));
            c2 = _mm256_add_epi8(c2, byte_counts(_mm256_xor_si256(x, _mm256_set1_epi64x((long long)query[2 * W + w]))));
            c3 = _mm256_add_epi8(c3, byte_counts(_mm256_xor_si256(x, _mm256_set1_epi64x((long long)query[3 * W + w]))));
        }
        const __m256i d0 = _mm256_sad_epu8(c0, zero), d1 = _mm256_sad_epu8(c1, zero);
        const __m256i d2 = _mm256_sad_epu8(c2, zero), d3 = _mm256_sad_epu8(c3, zero);
        const __m256i any = _mm256_or_si256(_mm256_or_si256(_mm256_sub_epi64(d0, l0), _mm256_sub_epi64(d1, l1)),
                                            _mm256_or_si256(_mm256_sub_epi64(d2, l2), _mm256_sub_epi64(d3, l3)));
        if (__builtin_expect(_mm256_movemask_pd(_mm256_castsi256_pd(any)) == 0, 1)) continue;
        const __m256i dj[4] = {d0, d1, d2, d3};
        for (int j = 0; j < 4; j++) {
            const size_t qj = q + (size_t)j;
            uint64_t lane[4];
            _mm256_storeu_si256((__m256i *)lane, dj[j]);
            for (int b = 0; b < 4; b++)
                if (lane[b] < s->limit[qj]) offer(s, qj, (uint32_t)lane[b], first + (int64_t)(i + (size_t)b));
        }
        l0 = _mm256_set1_epi64x((long long)s->limit[q]); l1 = _mm256_set1_epi64x((long long)s->limit[q + 1]);
        l2 = _mm256_set1_epi64x((long long)s->limit[q + 2]); l3 = _mm256_set1_epi64x((long long)s->limit[q + 3]);
    }
    four_tail(s, q, query, chunk, i, n, T, first, W);
}

__attribute__((target("avx2,popcnt")))
static void chunk_avx2_four(topk_state *s, size_t q, const uint64_t *query, const uint64_t *chunk, size_t n, size_t T, int64_t first) {
    switch (s->words) {
    case 1: avx2_four_body(s, q, query, chunk, n, T, first, 1); break;
    case 2: avx2_four_body(s, q, query, chunk, n, T, first, 2); break;
    case 4: avx2_four_body(s, q, query, chunk, n, T, first, 4); break;
    case 8: avx2_four_body(s, q, query, chunk, n, T, first, 8); break;
    default:
        // Byte counts of up to 31 words fit in a byte; longer codes take the POPCNT kernel.
        if (s->words <= 31) avx2_four_body(s, q, query, chunk, n, T, first, s->words);
        else chunk_popcnt_four(s, q, query, chunk, n, T, first);
        break;
    }
}
#endif

int oh_hamming_level(void) {
#if OH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vpopcntdq")) return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return 2;
    if (__builtin_cpu_supports("popcnt")) return 1;
#endif
    return 0;
}

static chunk_fn chunk_kernel(int level) {
#if OH_X86
    if (level >= 3) return chunk_avx512;
    if (level >= 1) return chunk_popcnt;
#endif
    (void)level;
    return chunk_portable;
}

// Four consecutive queries (their words side by side in `query`); NULL: take them one by one.
static chunk_fn chunk_kernel_four(int level) {
#if OH_X86
    if (level >= 3) return chunk_avx512_four;
    if (level == 2) return chunk_avx2_four;
    if (level == 1) return chunk_popcnt_four;
#endif
    (void)level;
    return NULL;
}

static int by_distance_then_row(const void *a, const void *b) {
    const neighbour x = *(const neighbour *)a, y = *(const neighbour *)b;
    return x < y ? -1 : x > y;
}

// Candidate buffers of one block of queries take at most this many bytes (or four queries' worth).
#define STATE_BUDGET ((size_t)64 << 20)

int oh_hamming_topk(const uint8_t *queries, size_t nq, const uint8_t *db, size_t ndb, size_t code_bytes, size_t k,
                    int64_t *ids, int32_t *distances, int level) {
    if (nq == 0) return 0;
    // Distances must fit the 24 bits of a neighbour's key and rows its 40.
    if (k == 0 || k > ndb || code_bytes == 0 || code_bytes > OH_HAMMING_MAX_CODE_BYTES || ndb > OH_HAMMING_MAX_ROWS) return -1;
    const size_t W = (code_bytes + 7) / 8;
    // A chunk of T codes: W x T words, 64 KB, in the second-level cache with room to spare.
    size_t T = (8192 / W) & ~(size_t)7;
    if (T < 64) T = 64;
    // Buffers of 4k candidates (all rows, when there are fewer), for blocks of queries.
    const size_t cap = 4 * k < ndb ? 4 * k : ndb;
    size_t block = STATE_BUDGET / (cap * sizeof(neighbour));
    block = block < 4 ? 4 : block & ~(size_t)3;
    if (block > nq) block = nq;
    topk_state s = {k, W, cap, malloc(block * cap * sizeof(neighbour)), malloc(block * sizeof(size_t)),
                    malloc(block * sizeof(uint32_t))};
    uint64_t *qwords = malloc(block * W * sizeof(uint64_t)), *chunk = malloc(W * T * sizeof(uint64_t));
    if (!s.kept || !s.count || !s.limit || !qwords || !chunk) {
        free(s.kept); free(s.count); free(s.limit); free(qwords); free(chunk);
        return -2;
    }
    chunk_fn kernel = chunk_kernel(level), four = chunk_kernel_four(level);
    for (size_t q0 = 0; q0 < nq; q0 += block) {
        const size_t nb = nq - q0 < block ? nq - q0 : block;
        for (size_t q = 0; q < nb; q++) {
            s.count[q] = 0;
            s.limit[q] = UINT32_MAX;
            for (size_t w = 0; w < W; w++) qwords[q * W + w] = code_word(queries + (q0 + q) * code_bytes, code_bytes, w);
        }
        for (size_t first = 0; first < ndb; first += T) {
            const size_t n = ndb - first < T ? ndb - first : T;
            if (W == 1 && code_bytes == 8) {
                memcpy(chunk, db + first * 8, n * 8);
            } else {
                for (size_t i = 0; i < n; i++)
                    for (size_t w = 0; w < W; w++) chunk[w * T + i] = code_word(db + (first + i) * code_bytes, code_bytes, w);
            }
            size_t q = 0;
            if (four)
                for (; q + 4 <= nb; q += 4) four(&s, q, qwords + q * W, chunk, n, T, (int64_t)first);
            for (; q < nb; q++) kernel(&s, q, qwords + q * W, chunk, n, T, (int64_t)first);
        }
        // Each query's k best, by (distance, row).
        for (size_t q = 0; q < nb; q++) {
            neighbour *v = s.kept + q * cap;
            keep_best(v, s.count[q], k);
            qsort(v, k, sizeof(neighbour), by_distance_then_row);
            for (size_t j = 0; j < k; j++) {
                distances[(q0 + q) * k + j] = (int32_t)neighbour_distance(v[j]);
                ids[(q0 + q) * k + j] = neighbour_row(v[j]);
            }
        }
    }
    free(s.kept); free(s.count); free(s.limit); free(qwords); free(chunk);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Where the relevant rows fall in a query's full ranking (every database row by distance, ties by
// ascending row), without ranking the database: one pass in row order counts the rows at each
// distance and notes, for each relevant row, its distance d and how many rows at distance d came
// before it (t, relevant or not); its position is then (rows at distances below d) + t. A
// counting sort of the notes by distance (stable, so rows stay ascending within a distance) puts
// them in ranking order.
// The database is walked in chunks that a block of queries meets while they are in cache (the
// codes and labels of a million rows would otherwise be read from memory once per query).

typedef struct {
    const int32_t *labels; const int32_t *query_labels;                    // mode 0: the same class
    const uint64_t *label_bits; size_t label_words; const uint64_t *query_bits;  // mode 1: a class in common
    const uint8_t *marks;                                                  // mode 2: marked rows
} oh_relevance_args;

static inline int relevant_row(const oh_relevance_args *r, size_t q, size_t x, const int mode) {
    if (mode == 0) return r->labels[x] == r->query_labels[q];
    if (mode == 1) {
        uint64_t any = 0;
        for (size_t w = 0; w < r->label_words; w++) any |= r->label_bits[x * r->label_words + w] & r->query_bits[q * r->label_words + w];
        return any != 0;
    }
    return r->marks[x] != 0;
}

typedef struct {
    size_t bins, capacity;
    uint64_t *counts;    // (queries, 4, bins): four histograms, row x counted in histogram x % 4
    uint64_t *notes;     // (queries, capacity + 1): t << 20 | d
    int64_t *rows;       // (queries, capacity + 1)
    size_t *found;       // (queries)
    int dense;           // relevant rows are common: note every row, keep the relevant (no branch)
    int keep_rows;       // note the rows too (positions are asked for, not figures)
} rank_state;

// Rows [lo, hi) for query q, with the mode and the word count constants where inlined (W = 0:
// read `words`). The histograms count every row; a relevant row's note holds the count at its
// distance when it is met (t: the rows before it there).
// Relevant rows few: rows four at a time with a branch on their relevance, each counted in its
// own of four histograms (so that a run of rows at one distance does not wait on increments).
// Relevant rows common: no branch, one histogram (a note is written for every row, and kept for
// the relevant ones); with AVX-512, rank_dense_avx512 instead.
__attribute__((always_inline))
static inline void rank_chunk(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, size_t words, const size_t W,
                              const oh_relevance_args *r, const int mode, rank_state *s, size_t q) {
    const size_t nw = W ? W : words, cap = s->capacity, bins = s->bins;
    uint64_t *restrict counts = s->counts + q * 4 * bins, *restrict notes = s->notes + q * (cap + 1);
    int64_t *restrict rows = s->rows + q * (cap + 1);
    size_t n = s->found[q];
#define DISTANCE(x) ({ uint32_t d_ = 0; for (size_t w = 0; w < nw; w++) d_ += (uint32_t)__builtin_popcountll(query[w] ^ db[(x) * nw + w]); d_; })
    if (s->dense) {
        for (size_t x = lo; x < hi; x++) {
            const uint32_t d = DISTANCE(x);
            const uint64_t before = counts[d];
            const size_t relevant = (size_t)relevant_row(r, q, x, mode);
            notes[n] = before << 20 | d;
            if (s->keep_rows) rows[n] = (int64_t)x;
            counts[d] = before + 1;
            // A query with more relevant rows than the capacity stops noting them (the caller is told).
            n += relevant & (size_t)(n < cap);
        }
    } else {
        // Four rows at a time: when none of them is relevant (nearly always), four increments,
        // one per histogram; otherwise the four one by one.
        size_t x = lo;
        for (; x + 4 <= hi; x += 4) {
            const uint32_t d0 = DISTANCE(x), d1 = DISTANCE(x + 1), d2 = DISTANCE(x + 2), d3 = DISTANCE(x + 3);
            const int any = relevant_row(r, q, x, mode) | relevant_row(r, q, x + 1, mode) | relevant_row(r, q, x + 2, mode) |
                            relevant_row(r, q, x + 3, mode);
            if (__builtin_expect(!any, 1)) {
                counts[d0]++; counts[bins + d1]++; counts[2 * bins + d2]++; counts[3 * bins + d3]++;
                continue;
            }
            const uint32_t d4[4] = {d0, d1, d2, d3};
            for (size_t i = 0; i < 4; i++) {
                const uint32_t d = d4[i];
                if (relevant_row(r, q, x + i, mode) && n < cap) {
                    notes[n] = (counts[d] + counts[bins + d] + counts[2 * bins + d] + counts[3 * bins + d]) << 20 | d;
                    rows[n] = (int64_t)(x + i);
                    n++;
                }
                counts[i * bins + d]++;
            }
        }
        for (; x < hi; x++) {
            const uint32_t d = DISTANCE(x);
            if (relevant_row(r, q, x, mode) && n < cap) {
                notes[n] = (counts[d] + counts[bins + d] + counts[2 * bins + d] + counts[3 * bins + d]) << 20 | d;
                rows[n] = (int64_t)x;
                n++;
            }
            counts[d]++;
        }
    }
#undef DISTANCE
    s->found[q] = n;
}

#define RANK_CHUNK_MODES(W)                                                                                      \
    switch (mode) {                                                                                              \
    case 0: rank_chunk(query, db, lo, hi, words, W, r, 0, s, q); return;                                         \
    case 1: rank_chunk(query, db, lo, hi, words, W, r, 1, s, q); return;                                         \
    default: rank_chunk(query, db, lo, hi, words, W, r, 2, s, q); return;                                        \
    }

typedef void (*rank_fn)(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, size_t words, const oh_relevance_args *r,
                        int mode, rank_state *s, size_t q);

static void rank_chunk_portable(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, size_t words, const oh_relevance_args *r,
                                int mode, rank_state *s, size_t q) {
    RANK_CHUNK_MODES(0)
}

#if OH_X86
__attribute__((target("popcnt")))
static void rank_chunk_popcnt(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, size_t words, const oh_relevance_args *r,
                              int mode, rank_state *s, size_t q) {
    switch (words) {
    case 1: RANK_CHUNK_MODES(1)
    case 2: RANK_CHUNK_MODES(2)
    default: RANK_CHUNK_MODES(0)
    }
}
#endif

#if OH_X86
// The pass for common relevant rows with AVX-512, rows 64 at a time, codes of at most 3 words
// (distances below 256, one byte each): the group's distances (8 rows per popcount) and its
// relevance as a 64-bit mask (16 labels per compare); each relevant row's note counts the rows
// before it at its distance (the four histograms, which hold the rows before the group, and the
// group's own rows before it, by one byte compare); then the group's rows join the histograms.
// The same notes as rank_chunk's, with a branch per relevant row instead of a note per row.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vpopcntdq,popcnt"), always_inline))
static inline void rank_dense_avx512_body(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, const size_t W,
                                          const oh_relevance_args *r, const int mode, rank_state *s, size_t q) {
    const size_t cap = s->capacity, bins = s->bins;
    uint64_t *restrict counts = s->counts + q * 4 * bins, *restrict notes = s->notes + q * (cap + 1);
    int64_t *restrict rows = s->rows + q * (cap + 1);
    size_t n = s->found[q];
    const int keep = s->keep_rows;
    uint8_t d8[64] __attribute__((aligned(64)));
    const __m512i q0 = _mm512_set1_epi64((long long)query[0]);
    // W = 2: rows' two words side by side; odd lanes hold the second word.
    const __m512i q01 = W == 2 ? _mm512_mask_set1_epi64(q0, 0xaa, (long long)query[1]) : q0;
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    const __m512i label = _mm512_set1_epi32(mode == 0 ? r->query_labels[q] : 0);
    for (size_t x0 = lo; x0 < hi; x0 += 64) {
        const size_t live = hi - x0 < 64 ? hi - x0 : 64;
        if (live < 64) memset(d8, 0, sizeof d8);
        size_t i = 0;
        if (W == 1) {
            for (; i + 8 <= live; i += 8)
                _mm_storel_epi64((__m128i *)(d8 + i), _mm512_cvtepi64_epi8(_mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(db + x0 + i), q0))));
        } else if (W == 2) {
            for (; i + 8 <= live; i += 8) {
                const __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(db + 2 * (x0 + i)), q01));
                const __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(db + 2 * (x0 + i) + 8), q01));
                const __m512i d = _mm512_add_epi64(_mm512_permutex2var_epi64(a, even, b), _mm512_permutex2var_epi64(a, odd, b));
                _mm_storel_epi64((__m128i *)(d8 + i), _mm512_cvtepi64_epi8(d));
            }
        }
        for (; i < live; i++) {
            uint32_t d = 0;
            for (size_t w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(query[w] ^ db[(x0 + i) * W + w]);
            d8[i] = (uint8_t)d;
        }
        uint64_t relevant = 0;
        if (mode == 0) {
            for (size_t k = 0; k < 4 && 16 * k < live; k++) {
                const size_t left = live - 16 * k;
                const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                relevant |= (uint64_t)_mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, r->labels + x0 + 16 * k), label) << (16 * k);
            }
        } else {
            for (size_t k = 0; k < live; k++) relevant |= (uint64_t)relevant_row(r, q, x0 + k, mode) << k;
        }
        const __m512i D = _mm512_load_si512(d8);
        while (relevant && n < cap) {
            const unsigned b = (unsigned)__builtin_ctzll(relevant);
            relevant &= relevant - 1;
            const uint32_t d = d8[b];
            const uint64_t earlier = _mm512_cmpeq_epi8_mask(D, _mm512_set1_epi8((char)d)) & ((1ull << b) - 1);
            notes[n] = (counts[d] + counts[bins + d] + counts[2 * bins + d] + counts[3 * bins + d] + (uint64_t)__builtin_popcountll(earlier)) << 20 | d;
            if (keep) rows[n] = (int64_t)(x0 + b);
            n++;
        }
        i = 0;
        for (; i + 4 <= live; i += 4) {
            counts[d8[i]]++; counts[bins + d8[i + 1]]++; counts[2 * bins + d8[i + 2]]++; counts[3 * bins + d8[i + 3]]++;
        }
        for (; i < live; i++) counts[d8[i]]++;
    }
    s->found[q] = n;
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vpopcntdq,popcnt")))
static void rank_dense_avx512(const uint64_t *query, const uint64_t *db, size_t lo, size_t hi, size_t words, const oh_relevance_args *r,
                              int mode, rank_state *s, size_t q) {
#define DENSE_MODES(W)                                                                                           \
    switch (mode) {                                                                                              \
    case 0: rank_dense_avx512_body(query, db, lo, hi, W, r, 0, s, q); return;                                    \
    case 1: rank_dense_avx512_body(query, db, lo, hi, W, r, 1, s, q); return;                                    \
    default: rank_dense_avx512_body(query, db, lo, hi, W, r, 2, s, q); return;                                   \
    }
    switch (words) {
    case 1: DENSE_MODES(1)
    case 2: DENSE_MODES(2)
    default: DENSE_MODES(3)
    }
#undef DENSE_MODES
}

// Whether the dense pass with AVX-512 runs: the CPU has it, and distances fit in a byte.
static int dense_avx512(int level, size_t words) {
    __builtin_cpu_init();
    return level >= 3 && words <= 3 && __builtin_cpu_supports("avx512bw");
}
#endif

// The figures from the noted positions p and ranks: sum over the relevant rows above each cutoff
// of rank / (p + 1), and their count; eight partial sums in a fixed order (vectorised).
OH_CLONES
static void cutoff_figures(const uint64_t *restrict p, double *restrict precision, size_t n, const int64_t *restrict cutoffs, size_t ncut,
                           double *restrict ap, int64_t *restrict hit) {
    for (size_t j = 0; j < n; j++) precision[j] = precision[j] / (double)(p[j] + 1);
    for (size_t i = 0; i < ncut; i++) {
        const uint64_t cut = (uint64_t)cutoffs[i];
        double partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t count[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        size_t j = 0;
        for (; j + 8 <= n; j += 8)
            for (size_t l = 0; l < 8; l++) {
                const int above = p[j + l] < cut;
                partial[l] += above ? precision[j + l] : 0.0;
                count[l] += above;
            }
        double sum = 0;
        int64_t hits = 0;
        for (; j < n; j++)
            if (p[j] < cut) { sum += precision[j]; hits++; }
        for (size_t l = 0; l < 8; l++) { sum += partial[l]; hits += count[l]; }
        ap[i] = sum;
        hit[i] = hits;
    }
}

size_t oh_hamming_relevant_scratch(size_t nq, size_t words, size_t capacity) {
    return nq * (4 * (words * 64 + 1) + 2 * (capacity + 1) + 1) + (words * 64 + 1);
}

long long oh_hamming_relevant_positions(const uint64_t *queries, size_t nq, const uint64_t *db, size_t ndb, size_t words, int level,
                                        const int32_t *labels, const int32_t *query_labels,
                                        const uint64_t *label_bits, size_t label_words, const uint64_t *query_bits,
                                        const uint8_t *marks, size_t capacity, uint64_t *scratch, int64_t *positions, int64_t *rows,
                                        int64_t *found, const int64_t *cutoffs, size_t ncut, double *ap_sums, int64_t *hits) {
    // Notes pack t in 44 bits and d in 20.
    if (words == 0 || words >= 16384 || ndb >> 44 || (marks && nq > 1)) return -1;
    const size_t bins = words * 64 + 1, block = nq;
    // Chunks of 32 KB of codes, which every query of the block meets while they are in cache.
    size_t chunk = 4096 / words;
    if (chunk < 64) chunk = 64;
    rank_state s = {bins, capacity, scratch, scratch + block * 4 * bins, (int64_t *)(scratch + block * (4 * bins + capacity + 1)),
                    (size_t *)(scratch + block * (4 * bins + 2 * (capacity + 1))), capacity * 16 >= ndb, cutoffs == NULL};
    uint64_t *first = scratch + block * (4 * bins + 2 * (capacity + 1) + 1);
    const oh_relevance_args r = {labels, query_labels, label_bits, label_words, query_bits, marks};
    const int mode = labels ? 0 : label_bits ? 1 : 2;
    rank_fn pass = rank_chunk_portable;
#if OH_X86
    if (level >= 1) pass = rank_chunk_popcnt;
    if (s.dense && dense_avx512(level, words)) pass = rank_dense_avx512;
#endif
    (void)level;
    long long status = 0;
    for (size_t q0 = 0; q0 < nq; q0 += block) {
        const size_t nb = nq - q0 < block ? nq - q0 : block;
        memset(s.counts, 0, nb * 4 * bins * sizeof(uint64_t));
        memset(s.found, 0, nb * sizeof(size_t));
        // The block's queries and relevance, seen from the block (q counts from 0).
        oh_relevance_args rb = r;
        if (query_labels) rb.query_labels = query_labels + q0;
        if (query_bits) rb.query_bits = query_bits + q0 * label_words;
        for (size_t lo = 0; lo < ndb; lo += chunk) {
            const size_t hi = ndb - lo < chunk ? ndb : lo + chunk;
            for (size_t q = 0; q < nb; q++) pass(queries + (q0 + q) * words, db, lo, hi, words, &rb, mode, &s, q);
        }
        for (size_t q = 0; q < nb; q++) {
            uint64_t *counts = s.counts + q * 4 * bins, *notes = s.notes + q * (capacity + 1);
            const int64_t *noted = s.rows + q * (capacity + 1);
            const size_t n = s.found[q];
            // The relevant rows beyond the capacity were not noted: count them to tell the caller.
            if (n == capacity) {
                size_t all = 0;
                for (size_t x = 0; x < ndb; x++) all += (size_t)relevant_row(&rb, q, x, mode);
                if (all > capacity) { status = -3; goto done; }
            }
            // first[d]: relevant rows at distances below d; counts[d]: all rows below d. A note's
            // row, the k-th relevant row at its distance d (from 0, in row order: the notes'
            // order), is at position counts[d] + t, and first[d] + k among the relevant.
            memset(first, 0, bins * sizeof(uint64_t));
            for (size_t j = 0; j < n; j++) first[notes[j] & 0xfffff]++;
            uint64_t below = 0, relevant_below = 0;
            for (size_t d = 0; d < bins; d++) {
                const uint64_t f = first[d], c = counts[d] + counts[bins + d] + counts[2 * bins + d] + counts[3 * bins + d];
                counts[d] = below; first[d] = relevant_below;
                below += c; relevant_below += f;
            }
            // counts[bins + d]: the relevant rows at distance d met so far.
            memset(counts + bins, 0, bins * sizeof(uint64_t));
            found[q0 + q] = (int64_t)n;
            if (cutoffs) {
                // The relevant row at position p, the rank-th of them: precision rank / (p + 1) for
                // every cutoff beyond p. The notes become the positions, the unused rows' buffer
                // the ranks and then the precisions.
                double *rank = (double *)(s.rows + q * (capacity + 1));
                for (size_t j = 0; j < n; j++) {
                    const size_t d = notes[j] & 0xfffff;
                    const uint64_t k = counts[bins + d]++;
                    rank[j] = (double)(first[d] + k + 1);
                    notes[j] = counts[d] + (notes[j] >> 20);
                }
                cutoff_figures(notes, rank, n, cutoffs, ncut, ap_sums + (q0 + q) * ncut, hits + (q0 + q) * ncut);
                continue;
            }
            int64_t *pos = positions + (q0 + q) * capacity, *rw = rows + (q0 + q) * capacity;
            for (size_t j = 0; j < n; j++) {
                const size_t d = notes[j] & 0xfffff;
                const uint64_t k = counts[bins + d]++, slot = first[d] + k;
                pos[slot] = (int64_t)(counts[d] + (notes[j] >> 20));
                rw[slot] = noted[j];
            }
        }
    }
done:
    return status;
}

// For each query, how many database rows lie at each Hamming distance, and how many of them are
// relevant (the same class: `labels`; else a class in common: `label_bits`): the counts behind
// precision and recall at every Hamming radius. all and relevant: (nq, words 64 + 1).
OH_CLONES
void oh_hamming_histograms(const uint64_t *queries, size_t nq, const uint64_t *db, size_t ndb, size_t words,
                           const int32_t *labels, const int32_t *query_labels, const uint64_t *label_bits, size_t label_words,
                           const uint64_t *query_bits, uint64_t *all, uint64_t *relevant) {
    const size_t bins = words * 64 + 1;
    const oh_relevance_args r = { labels, query_labels, label_bits, label_words, query_bits, NULL };
    for (size_t q = 0; q < nq; q++) {
        const uint64_t *query = queries + q * words;
        uint64_t *a = all + q * bins, *rel = relevant + q * bins;
        for (size_t x = 0; x < ndb; x++) {
            const uint64_t *row = db + x * words;
            uint32_t d = 0;
            for (size_t w = 0; w < words; w++) d += (uint32_t)__builtin_popcountll(query[w] ^ row[w]);
            a[d]++;
            rel[d] += (uint64_t)(labels ? relevant_row(&r, q, x, 0) : relevant_row(&r, q, x, 1));
        }
    }
}
