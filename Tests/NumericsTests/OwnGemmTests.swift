// orthohash's own GEMM (CKernels/gemm.c) against a triple loop in double, and its convolution
// whose columns are gathered from the images against im2col's definition. Both run on AVX-512
// CPUs only; elsewhere they are skipped (the product uses OpenBLAS there).

import CKernels
import XCTest
@testable import OrthoHashNumerics

final class OwnGemmTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(oh_gemm_available() == 0, "this CPU has no AVX-512: orthohash's own GEMM is not used here")
    }

    /// Every transpose (op(A) by oh_gemm_pack_a, op(B) by oh_gemm_packed), leading dimensions
    /// wider than the matrices, beta 1 (C added to) and 0 (C overwritten, NaN before), sizes on
    /// both sides of the kernel's 8 x 32 tile and of the blocks (192 rows of A, 256 columns of
    /// B, 256 of k), C's rows in two calls.
    func testGemmAgainstTripleLoop() {
        for (m, n, k) in [(1, 1, 1), (7, 33, 5), (8, 32, 256), (9, 31, 257), (17, 16, 3), (200, 300, 520), (37, 17, 600)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 2, ldc = n + 5
                    let a = randomBuffer((transA ? k : m) * lda, seed: 1), b = randomBuffer((transB ? n : k) * ldb, seed: 2)
                    func aAt(_ i: Int, _ l: Int) -> Double { Double(transA ? a[l * lda + i] : a[i * lda + l]) }
                    func bAt(_ l: Int, _ j: Int) -> Double { Double(transB ? b[j * ldb + l] : b[l * ldb + j]) }
                    let packed = FloatBuffer(count: oh_gemm_packed_a_floats(m, k))
                    oh_gemm_pack_a(transA ? 1 : 0, m, k, a.pointer, lda, packed.pointer)
                    for beta in [1, 0] {
                        let c = FloatBuffer(count: m * ldc)
                        for i in 0..<c.count { c[i] = beta == 0 && i % ldc < n ? .nan : Float(i % 7) - 3 }
                        let old = c.array
                        // In two calls of rows [0, cut) and [cut, m), cut a multiple of the panels' 8 rows.
                        let cut = min(m, (m / 2) / oh_gemm_row_block * oh_gemm_row_block)
                        for (lo, hi) in [(0, cut), (cut, m)] where hi > lo {
                            XCTAssertEqual(oh_gemm_packed(packed.pointer, m, lo, hi - lo, n, k, transB ? 1 : 0, b.pointer, ldb, c.pointer, ldc, Int32(beta)), 1)
                        }
                        var worst = 0.0
                        for i in 0..<m {
                            for j in 0..<ldc {
                                if j >= n {
                                    XCTAssertEqual(c[i * ldc + j].bitPattern, old[i * ldc + j].bitPattern, "column past n touched")
                                    continue
                                }
                                var want = beta == 0 ? 0 : Double(old[i * ldc + j])
                                for l in 0..<k { want += aAt(i, l) * bAt(l, j) }
                                worst = max(worst, abs(Double(c[i * ldc + j]) - want))
                            }
                        }
                        // Sums of up to 600 products of N(0, 1) values (magnitude ~25) in float32:
                        // rounding stays below 1e-4 x sqrt(k); a wrong index moves them by units.
                        XCTAssertLessThan(worst, 1e-4 * Double(k).squareRoot() + 1e-5,
                                          "\(m)x\(n)x\(k) transA \(transA) transB \(transB) beta \(beta)")
                    }
                }
            }
        }
    }

    /// The GEMM of few rows that reads B where it lies (a fully connected layer's weight, x W^T):
    /// n not a multiple of the kernel's 8 rows, k past the 256 of a block, C added to; and
    /// through BLAS.gemm (its route), beta 0 and 1, split over 2 threads.
    func testSmallRowsGemmAgainstTripleLoop() {
        for (m, n, k) in [(1, 8, 1), (5, 3, 7), (37, 53, 29), (64, 203, 300), (128, 16, 513)] {
            let lda = k + 1, ldb = k + 3, ldc = n + 2
            let a = randomBuffer(m * lda, seed: 11), b = randomBuffer(n * ldb, seed: 12)
            let c = FloatBuffer(count: m * ldc)
            for i in 0..<c.count { c[i] = Float(i % 5) - 2 }
            let old = c.array
            XCTAssertEqual(oh_gemm_small_rows(m, n, k, a.pointer, lda, b.pointer, ldb, c.pointer, ldc), 1)
            var worst = 0.0
            for i in 0..<m {
                for j in 0..<ldc {
                    if j >= n { XCTAssertEqual(c[i * ldc + j].bitPattern, old[i * ldc + j].bitPattern); continue }
                    var want = Double(old[i * ldc + j])
                    for l in 0..<k { want += Double(a[i * lda + l]) * Double(b[j * ldb + l]) }
                    worst = max(worst, abs(Double(c[i * ldc + j]) - want))
                }
            }
            XCTAssertLessThan(worst, 1e-4 * Double(k).squareRoot() + 1e-5, "\(m)x\(n)x\(k)")
        }
        let big = FloatBuffer(count: 129 * 8)
        XCTAssertEqual(oh_gemm_small_rows(129, 8, 8, big.pointer, 8, big.pointer, 8, big.pointer, 8), 0, "more than 128 rows: refused")
        let minimum = BLAS.streamedMinimum
        BLAS.streamedMinimum = 1
        defer { BLAS.streamedMinimum = minimum }
        let (m, n, k) = (9, 70, 40)
        let x = randomBuffer(m * k, seed: 13), w = randomBuffer(n * k, seed: 14)
        for (beta, split) in [(Float(0), 1), (1, 1), (0, 2), (1, 2)] {
            let y = FloatBuffer(count: m * n)
            for i in 0..<y.count { y[i] = beta == 0 ? .nan : 1 }
            BLAS.gemm(transA: false, transB: true, m: m, n: n, k: k, x.pointer, lda: k, w.pointer, ldb: k, beta: beta, y.pointer, ldc: n, split: split)
            for i in 0..<m {
                for j in 0..<n {
                    var want = beta == 0 ? 0.0 : 1.0
                    for l in 0..<k { want += Double(x[i * k + l]) * Double(w[j * k + l]) }
                    XCTAssertEqual(Double(y[i * n + j]), want, accuracy: 1e-4, "beta \(beta) split \(split) (\(i), \(j))")
                }
            }
        }
    }

    /// The convolution GEMM whose columns come from the images: stride 1 with an output as large
    /// as the input (masked loads; planes of fewer than 16 positions, whose 16-column groups span
    /// three images, gather instead), and other strides and paddings (gathers); the columns in
    /// ranges that start and end anywhere; O not a multiple of the kernel's 8 rows.
    func testConvolutionGemmAgainstDefinition() {
        for (C, H, W, k, s, pad) in [(3, 13, 13, 3, 1, 1), (2, 5, 6, 5, 1, 2), (2, 2, 3, 5, 1, 2), (5, 27, 27, 5, 1, 2),
                                     (3, 23, 23, 11, 4, 2), (2, 9, 7, 3, 2, 1), (2, 6, 6, 3, 1, 0), (40, 7, 7, 3, 1, 1)] {
            let O = 11, n = 3
            let Ho = (H + 2 * pad - k) / s + 1, Wo = (W + 2 * pad - k) / s + 1, P = Ho * Wo, K = C * k * k
            let x = randomBuffer(n * C * H * W, seed: 5), w = randomBuffer(O * K, seed: 6)
            let packed = FloatBuffer(count: oh_gemm_packed_a_floats(O, K))
            oh_gemm_pack_a(0, O, K, w.pointer, K, packed.pointer)
            var g = oh_conv_geometry(C: C, H: H, W: W, k: k, stride: s, pad: pad, Ho: Ho, Wo: Wo)
            let columns = n * P
            for cuts in [[0, columns], [0, min(5, columns), min(37, columns), columns], [0, columns / 2, columns]] {
                let c = FloatBuffer(count: O * columns)
                for (lo, hi) in zip(cuts, cuts.dropFirst()) where hi > lo {
                    XCTAssertEqual(oh_conv_gemm_forward(c.pointer, columns, packed.pointer, O, x.pointer, &g, n, lo, hi - lo), 1)
                }
                var worst = 0.0
                for o in 0..<O {
                    for col in 0..<columns {
                        let img = col / P, oh = col % P / Wo, ow = col % Wo
                        var want = 0.0
                        for ch in 0..<C { for ki in 0..<k { for kj in 0..<k {
                            let ih = oh * s - pad + ki, iw = ow * s - pad + kj
                            guard ih >= 0, ih < H, iw >= 0, iw < W else { continue }
                            want += Double(w[o * K + (ch * k + ki) * k + kj]) * Double(x[((img * C + ch) * H + ih) * W + iw])
                        } } }
                        worst = max(worst, abs(Double(c[o * columns + col]) - want))
                    }
                }
                // Sums of up to 360 products of N(0, 1) values in float32 (see above).
                XCTAssertLessThan(worst, 1e-4 * Double(K).squareRoot(), "\(C)x\(H)x\(W) k \(k) stride \(s) pad \(pad), cuts \(cuts)")
            }
        }
    }
}
