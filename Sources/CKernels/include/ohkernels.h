#ifndef OHKERNELS_H
#define OHKERNELS_H
#include <stddef.h>
#include <stdint.h>

// Kernels of the training step (elementwise passes, the loss, the convolution and pooling passes),
// of the fused head and of Hamming search, in C so that the compiler vectorises them; most pick
// AVX-512 / AVX2 / baseline code at run time (target_clones, clones.h), some dispatch themselves
// (signproducts.c, hamming.c): one binary for every x86-64 CPU.

/// A hint to the core that the caller spins waiting (x86's PAUSE): ThreadTeam's workers between jobs.
static inline void oh_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// PyTorch's Adam with coupled L2 over [0, n), and grad = 0 afterwards in the same pass:
/// g = grad + wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= step_size m / (sqrt(v) / bc2_sqrt + eps)
/// The next backward pass accumulates into grad (GEMMs with beta = 1, which skips BLAS's
/// separate pass to clear the output).
void oh_adam_zero_grad(float *p, float *grad, float *m, float *v, size_t n,
                       float step_size, float beta1, float beta2, float weight_decay, float eps, float bc2_sqrt);
/// 1 if every value is finite.
int oh_all_finite(const float *x, size_t n);
/// y = max(y + bias, 0) row by row, y (rows, cols), in place (NaN stays NaN). Returns the largest
/// magnitude of the result as in oh_max_magnitude_bits.
uint32_t oh_bias_relu(float *y, const float *bias, size_t rows, size_t cols);
/// The largest |x[i]| as a float bit pattern (sign cleared), 0 for n = 0. Unsigned comparison of
/// such patterns orders magnitudes; a value >= 0x7f800000 means some x[i] is NaN or Inf.
uint32_t oh_max_magnitude_bits(const float *x, size_t n);
/// dy = y > 0 ? dy : 0, then y = 0: the training step's last read of y, which leaves the buffer
/// clear for the next step's GEMM to accumulate into (beta = 1, no clearing pass). Returns the
/// largest magnitude of the new dy as in oh_max_magnitude_bits.
uint32_t oh_relu_backward_clear(float *dy, float *y, size_t n);
/// db += column sums of dy (rows, cols), then dy = 0 (the last read of dy in the step, as above).
void oh_column_sums_clear(float *db, float *dy, size_t rows, size_t cols);
/// Single-label softmax cross-entropy over cosine-margin logits z = s (u - m y), rows at a time:
/// on return u holds grad_scale * (softmax(z) - y) (grad_scale = ce * s / N gives dL/du), `correct`
/// the rows whose largest cosine is the target. Returns sum over rows of lse(z) - z_target.
/// The exponentials use a vectorised polynomial (relative error ~1e-7) and the sums are in double:
/// the path for many classes (GLDv2: 81,313).
double oh_cos_margin_softmax_ce(float *u, const int32_t *targets, size_t rows, size_t classes,
                                float scale, float margin, float grad_scale, int64_t *correct);
/// One block of classes [first_class, first_class + cols) of the fused head (FusedHead.swift):
/// `u` (rows, cols) holds the cosines of each row to the block's codebook rows; on return it
/// holds exp(z - scale), z = scale (u - margin [class = target]), and row_sums[r] has their sum
/// (double) added. Where a row's target is in the block, target_cosines[r] gets its cosine.
/// best[r] and best_class[r] keep the largest cosine seen so far and its class (the first on
/// ties, blocks given in ascending order). Needs scale (2 + margin) <= 87 so that no exponential
/// underflows (the caller falls back to oh_cos_margin_softmax_ce otherwise). `level` 1 takes the
/// AVX-512 kernel (where oh_sign_level() is 1), 0 the portable one: the same results bit for bit.
void oh_head_block(float *u, size_t rows, size_t cols, size_t first_class, const int32_t *targets,
                   float scale, float margin, double *row_sums, float *target_cosines,
                   float *best, int64_t *best_class, int level);
/// dst = float(src) for IEEE half-precision src (F16C where the CPU has it); 1 if all are finite.
int oh_half_to_float(float *dst, const uint16_t *src, size_t n);
/// dst[i] = table[src[i]] (table: 256 entries): 8-bit pixels to features.
void oh_lookup_bytes(float *dst, const uint8_t *src, size_t n, const float *table);


// orthohash's own GEMM (gemm.c), for AVX-512 CPUs; BLAS.swift and Conv2d.swift choose between it and OpenBLAS.
/// 1 if orthohash's GEMM runs on this CPU (AVX-512), else 0. Its functions return 0, having done
/// nothing, where it is 0; each runs on one thread (callers split C over theirs). Row-major: A is
/// (m, k), or (k, m) when trans_a, rows lda apart; B (k, n), or (n, k) when trans_b.
int oh_gemm_available(void);
/// C (m, n) += A B^T for few rows (m <= 128: a batch through a fully connected layer, x W^T), B
/// (n, k) read where it lies, unpacked: it is the weight, too large to copy once per GEMM. 0
/// also where m > 128.
int oh_gemm_small_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                       float *c, size_t ldc);
/// Floats of op(A) (m, k) packed by oh_gemm_pack_a (0 where oh_gemm_available() is 0).
size_t oh_gemm_packed_a_floats(size_t m, size_t k);
/// Packs all of op(A) (m, k) as the GEMM's kernel reads it: for a matrix that several GEMMs share
/// (a convolution's weights, for every chunk of its images).
void oh_gemm_pack_a(int trans_a, size_t m, size_t k, const float *a, size_t lda, float *out);
/// Rows [first_row, first_row + rows) of C = op(A) op(B) + beta C, for beta 0 (C's old content,
/// even NaN, not read) or 1, op(A) packed by oh_gemm_pack_a (`packed`, all m x k of it); c is C's
/// row 0. first_row must be a multiple of oh_gemm_row_block (else 0 is returned, nothing done).
int oh_gemm_packed(const float *packed, size_t m, size_t first_row, size_t rows, size_t n, size_t k, int trans_b,
                   const float *b, size_t ldb, float *c, size_t ldc, int beta);
/// The rows of op(A) in a packed panel (8).
static const size_t oh_gemm_row_block = 8;
/// A convolution's shape: C channels of H x W in, k x k kernel, stride, zero padding, Ho x Wo out.
struct oh_conv_geometry { size_t C, H, W, k, stride, pad, Ho, Wo; };
/// A convolution's forward GEMM with the columns gathered from the images instead of an im2col
/// pass: c (O, n P; rows ldc apart) += W (O, C k k) im2col(x) over the columns
/// [first_column, first_column + columns) of n P (column (image, oh, ow)), W packed by
/// oh_gemm_pack_a(0, O, C k k, ...), x the n images (n, C, H, W). One thread; returns 0, having
/// done nothing, where oh_gemm_available() is 0 or x exceeds 2^31 floats.
int oh_conv_gemm_forward(float *c, size_t ldc, const float *packed_w, size_t O, const float *x,
                         const struct oh_conv_geometry *g, size_t images, size_t first_column, size_t columns);

// Direct convolution (directconv.c), for AVX-512 CPUs (oh_gemm_available()): the convolution's
// products from zero-padded planes, no columns. g is the convolution's geometry (its input C x H x W
// unpadded); xpad its n input images padded by g->pad on each side (oh_pad_planes).
/// Floats of weights packed for the direct kernels: panels of 32 outputs, K x 32 floats each.
size_t oh_direct_packed_floats(size_t outputs, size_t K);
/// Packs the panels [first_panel, first_panel + panels) of W (O, C, k, k): for forward (outputs O,
/// K = C k k, B[(c, ki, kj)][o] = W[o, c, ki, kj]) or, `flipped`, for the input gradient as a
/// convolution of the padded output gradient (outputs C, K = O k k, B[(o, ki, kj)][c] =
/// W[o, c, k-1-ki, k-1-kj]).
void oh_direct_pack_weights(float *out, const float *w, size_t O, size_t C, size_t k, int flipped, size_t first_panel,
                            size_t panels);
/// dst (planes, H + 2 pad, W + 2 pad) = planes of src padded with zeros, for the planes [first,
/// first + count); plane i is channel i % channels of image i / channels, at src + image
/// image_stride + channel channel_stride.
void oh_pad_planes(float *dst, const float *src, size_t channels, size_t image_stride, size_t channel_stride, size_t H,
                   size_t W, size_t pad, size_t first, size_t count);
/// dst = src (rows, columns; lds apart) transposed into panels of 32 rows (panel i / 32 at
/// dst + (i / 32) columns 32, column j's 32 floats at + 32 j; rows past the last zero), for src's
/// columns [first, first + count): the output gradient position-major, as
/// oh_direct_conv_weight_gradient reads it. AVX-512 only (as the direct kernels).
void oh_transpose_panels(float *dst, const float *src, size_t lds, size_t rows, size_t columns, size_t first, size_t count);
/// dst (rows, columns; ldd apart) += src^T (src: columns x rows, lds apart), then those floats of
/// src = 0, for dst's rows [first, first + count). AVX-512 only.
void oh_transpose_add_clear(float *dst, size_t ldd, float *src, size_t lds, size_t columns, size_t first, size_t count);
/// y (n, O, P) = conv(x) (+ bias, then ReLU when `relu`; or y += conv(x) when `accumulate`, with
/// bias NULL), for the units [first_unit, first_unit + units) of ceil(O / 32) panels x ceil(n P / 8)
/// tiles (unit = panel x tiles + tile); `packed` from oh_direct_pack_weights. One thread; sets
/// *largest to the largest magnitude written (as oh_max_magnitude_bits) and returns 1; 0, having
/// done nothing, where oh_gemm_available() is 0 (or its table of offsets cannot be allocated).
int oh_direct_conv_forward(float *y, const float *xpad, const float *packed, const float *bias, size_t O,
                           const struct oh_conv_geometry *g, size_t images, int relu, int accumulate,
                           size_t first_unit, size_t units, uint32_t *largest);
/// dwt (C k k, O; W's gradient transposed) += the products of the padded input's windows and dyt
/// (the output gradient position-major, in panels of 32 outputs: oh_transpose_panels), for the units [first_unit, first_unit + units)
/// of ceil(C k k / 8) row tiles x ceil(O / 32) panels (unit = panel x tiles + tile). One thread;
/// 0, having done nothing, where oh_gemm_available() is 0 (or its tables cannot be allocated).
int oh_direct_conv_weight_gradient(float *dwt, const float *xpad, const float *dyt, size_t O, const struct oh_conv_geometry *g,
                                   size_t images, size_t first_unit, size_t units);

// Convolution and pooling over NCHW (conv.c). n images, C channels, H x W in, k x k kernel,
// Ho x Wo out, P = Ho x Wo, O output channels.
/// col (C k k, n P) from x (n, C, H, W): row (c, ki, kj), column (image, oh, ow) holds
/// x[image, c, oh stride - pad + ki, ow stride - pad + kj], 0 outside the image. Rows of col are
/// `row_length` floats apart; this call writes rows [first_row, first_row + rows) (threads share
/// a chunk by rows).
void oh_im2col(float *col, size_t row_length, const float *x, size_t images, size_t C, size_t H, size_t W,
               size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo, size_t first_row, size_t rows);
/// The transpose of oh_im2col, added: dx (n, C, H, W) += col2im(col), for the input channels
/// [first_channel, first_channel + channels); then those channels' rows of col (their n P
/// columns) = 0 (its last read: the next GEMM into col adds into zeros).
void oh_col2im_add_clear(float *dx, float *col, size_t row_length, size_t images, size_t C, size_t H, size_t W,
                         size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo, size_t first_channel, size_t channels);
/// y (n, O, P) = columns (O, n P; rows `row_length` apart) + bias per channel, then ReLU when
/// `relu` (NaN stays NaN), for the output channels [first_channel, first_channel + channels);
/// then those rows of columns = 0 (their last read, as above). Returns the largest magnitude of
/// y as in oh_max_magnitude_bits.
uint32_t oh_conv_output_clear(float *y, float *columns, size_t row_length, const float *bias, size_t images, size_t O, size_t P, int relu,
                              size_t first_channel, size_t channels);
/// columns (O, n P; rows `row_length` apart) = dy (n, O, P), times (y > 0) when `relu`; then
/// dy = 0 (its last read in the step); for the output channels [first_channel, first_channel +
/// channels). Returns the largest magnitude written.
uint32_t oh_conv_gather_gradient(float *columns, size_t row_length, float *dy, const float *y, size_t images, size_t O, size_t P, int relu,
                                 size_t first_channel, size_t channels);
/// sums[r] += the sum of row r of x (rows, cols), in double with eight partial sums.
void oh_row_sums_add(float *sums, const float *x, size_t rows, size_t cols);
/// Max pooling of each of `planes` (H, W) planes (PyTorch's rule: in row-major order a value is
/// taken when larger than the one kept or NaN: the first largest, or the last NaN); argmax gets
/// each output's index within its input plane. Returns the largest magnitude of y.
uint32_t oh_maxpool_forward(float *y, int32_t *argmax, const float *x, size_t planes, size_t H, size_t W,
                            size_t k, size_t stride, size_t pad, size_t Ho, size_t Wo);
/// dx[plane, argmax] += dy, then dy = 0.
void oh_maxpool_backward_clear(float *dx, float *dy, const int32_t *argmax, size_t planes, size_t HW, size_t P);
/// Adaptive average pooling with PyTorch's bins: output (i, j) averages rows [floor(i H / Ho),
/// ceil((i + 1) H / Ho)) and the same for columns.
void oh_adaptive_avgpool_forward(float *y, const float *x, size_t planes, size_t H, size_t W, size_t Ho, size_t Wo);
/// The key of a row's dropout mask: a hash of (seed, global step, layer, global row).
uint64_t oh_dropout_row_key(uint64_t seed, uint64_t step, uint64_t layer, uint64_t row);
/// Dropout: y = x scale where the row's mask keeps the element (the top 24 bits of a hash of the
/// row's key and the column are at least `threshold`, p 2^24), else 0; rows are first_row,
/// first_row + 1, ... Returns the largest magnitude of y.
uint32_t oh_dropout_forward(float *y, const float *x, size_t rows, size_t cols, uint64_t seed, uint64_t step,
                            uint64_t layer, uint64_t first_row, uint32_t threshold, float scale);
/// dx += dy scale where the same mask keeps the element; then dy = 0.
void oh_dropout_backward_clear(float *dx, float *dy, size_t rows, size_t cols, uint64_t seed, uint64_t step,
                               uint64_t layer, uint64_t first_row, uint32_t threshold, float scale);
/// `iterations` x 384 floating-point operations in independent fused multiply-add chains: timed,
/// the core's measured peak (benchmarks' "share of peak"); the result goes to *out.
void oh_fma_loop(float *out, size_t iterations);
/// dx += each output's gradient shared evenly over its bin, then dy = 0.
void oh_adaptive_avgpool_backward_clear(float *dx, float *dy, size_t planes, size_t H, size_t W, size_t Ho, size_t Wo);


/// Codes of up to 2^20 bytes (distances below 2^24) and databases of up to 2^40 rows.
#define OH_HAMMING_MAX_CODE_BYTES 1048576ull
#define OH_HAMMING_MAX_ROWS 1099511627776ull
/// The Hamming search kernel this CPU runs: 3 AVX-512 with VPOPCNTDQ, 2 AVX2, 1 the POPCNT
/// instruction, 0 portable C.
int oh_hamming_level(void);
/// For each of the `nq` query codes (`code_bytes` bytes each, any bit layout the database shares),
/// the `k` database rows nearest by Hamming distance, ties by ascending row: `ids` and `distances`
/// (nq, k), ascending by (distance, row). `level` picks the kernel (at most oh_hamming_level()).
/// Returns 0, -1 for bad sizes (k of 0 or above the database, codes wider than
/// OH_HAMMING_MAX_CODE_BYTES, more rows than OH_HAMMING_MAX_ROWS), -2 when out of memory.
int oh_hamming_topk(const uint8_t *queries, size_t nq, const uint8_t *db, size_t ndb, size_t code_bytes, size_t k,
                    int64_t *ids, int32_t *distances, int level);

/// Where the relevant database rows fall in the full ranking of each of `nq` queries (all `ndb`
/// rows by Hamming distance, ties by ascending row), codes of `words` 64-bit words (at most
/// 16383; rows below 2^44): for query q, found[q] relevant rows, their 0-based positions
/// (ascending) at positions + q * capacity and their rows in the same order at rows + q * capacity.
/// Relevant: labels[x] == query_labels[q] when `labels` is given; else a class in common
/// (label_bits (ndb, label_words) and query_bits (nq, label_words)) when `label_bits` is given;
/// else marks[x] != 0 (one query only). `capacity`: the most relevant rows a query can have;
/// `scratch`: oh_hamming_relevant_scratch(nq, words, capacity) words. The queries meet the
/// database together, chunk by chunk. Returns 0, -1 for bad sizes, -3 when a query has more
/// relevant rows than `capacity`.
/// With `cutoffs` (ncut of them), the figures instead of the positions (`positions` and `rows`
/// unused): for query q and cutoff R_i, hits[q * ncut + i] relevant rows ranked above R_i and
/// ap_sums[q * ncut + i] the sum of their precisions (relevant rows at or above / position + 1).
long long oh_hamming_relevant_positions(const uint64_t *queries, size_t nq, const uint64_t *db, size_t ndb, size_t words, int level,
                                        const int32_t *labels, const int32_t *query_labels,
                                        const uint64_t *label_bits, size_t label_words, const uint64_t *query_bits,
                                        const uint8_t *marks, size_t capacity, uint64_t *scratch, int64_t *positions, int64_t *rows,
                                        int64_t *found, const int64_t *cutoffs, size_t ncut, double *ap_sums, int64_t *hits);
size_t oh_hamming_relevant_scratch(size_t nq, size_t words, size_t capacity);
/// For each of `nq` queries: all[q * B + d] database rows at Hamming distance d, relevant[q * B + d]
/// of them relevant (labels[x] == query_labels[q] when `labels` is given, else a class in common
/// through label_bits and query_bits as above), B = words * 64 + 1. Both are added to.
void oh_hamming_histograms(const uint64_t *queries, size_t nq, const uint64_t *db, size_t ndb, size_t words,
                           const int32_t *labels, const int32_t *query_labels, const uint64_t *label_bits, size_t label_words,
                           const uint64_t *query_bits, uint64_t *all, uint64_t *relevant);

/// Products with a codebook of signs by table lookups (signproducts.c): the fused head's two
/// GEMMs. R = rows, K = bits, C = classes, G = ceil(K / 4).
/// The kernel this CPU runs: 1 AVX-512 (vpermps), 0 the portable reference (same results).
int oh_sign_level(void);
/// Floats of oh_sign_tables' output for `rows` codes of `bits` (rows padded to a multiple of 6).
size_t oh_sign_tables_count(size_t rows, size_t bits);
/// Int32s of the cosines' patterns (classes padded to a multiple of 64).
size_t oh_sign_cosine_index_count(size_t classes, size_t bits);
/// Int32s of the gradient's patterns.
size_t oh_sign_gradient_index_count(size_t classes, size_t bits);
/// The patterns of a codebook `signs` (C, K) of +-1, laid out once, for the cosines.
void oh_sign_cosine_index(int32_t *index, const int8_t *signs, size_t classes, size_t bits);
/// The patterns of a codebook `signs` (C, K) of +-1, laid out once, for the gradient.
void oh_sign_gradient_index(int32_t *index, const int8_t *signs, size_t classes, size_t bits);
/// The tables of the codes vn (rows, K) for oh_sign_cosines: 16 signed sums per 4 bits.
void oh_sign_tables(float *tables, const float *vn, size_t rows, size_t bits);
/// u[r, c] = alpha sum_j vn[r, j] s[c0 + c, j] for c < cols, u (rows, ldu) with ldu >= cols;
/// `index` is the cosine index advanced to class c0 (a multiple of 64): index + c0 / 16 * G * 16.
void oh_sign_cosines(float *u, size_t ldu, const float *tables, size_t rows, size_t bits,
                     const int32_t *index, size_t cols, float alpha, int level);
/// acc[r, j] += sum_{c < cols} e[r, c] s[c0 + c, j], acc (rows, K), e (rows, lde); `index` is the
/// gradient index advanced to class c0 (a multiple of 4): index + c0 / 4 * oh_sign_gradient_index_count(4, K).
void oh_sign_accumulate(float *acc, size_t bits, const float *e, size_t lde, size_t rows, size_t cols,
                        const int32_t *index, int level);

#endif
