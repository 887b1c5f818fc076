// FloatBuffer's allocation and the GEMM wrapper against a plain triple loop.

import XCTest
@testable import OrthoHashNumerics

final class BufferTests: XCTestCase {
    /// Buffers of 2 MB or more start on a 2 MB boundary (so transparent huge pages can back them);
    /// every buffer starts zeroed and on a 64-byte boundary.
    func testAllocation() {
        for count in [1, 17, 1 << 19 - 1, 1 << 19, 3 << 19 + 5] {
            let b = FloatBuffer(count: count)
            let address = UInt(bitPattern: b.pointer)
            XCTAssertEqual(address % 64, 0, "\(count)")
            if count * 4 >= 1 << 21 { XCTAssertEqual(address % (1 << 21), 0, "\(count)") }
            XCTAssertTrue(UnsafeBufferPointer(start: b.pointer, count: count).allSatisfy { $0 == 0 }, "\(count)")
            b[count - 1] = 7
            XCTAssertEqual(b[count - 1], 7)
        }
    }

    /// Every transpose combination, beta 0 over old content and beta 1, and a C wider than n
    /// (ldc > n: only the n columns of each row are touched); in one call and split in 2 and 3
    /// parts on our own threads, along the columns (m < n), along the rows (m > n), and along k
    /// (a small C over a long k: BLAS.kSplitDepth per part or more).
    func testGemmAgainstTripleLoop() {
      let longK = BLAS.kSplitDepth
      for (m, n, split, k) in [(5, 7, 1, 9), (5, 7, 2, 9), (5, 7, 3, 9), (8, 3, 2, 9), (8, 3, 3, 9),
                               (5, 7, 2, 2 * longK + 5), (8, 3, 3, 3 * longK + 7)] {
        let ldc = n + 3
        for transA in [false, true] {
            for transB in [false, true] {
                let a = randomBuffer(m * k, seed: 1), b = randomBuffer(k * n, seed: 2)
                func aAt(_ i: Int, _ l: Int) -> Double { Double(transA ? a[l * m + i] : a[i * k + l]) }
                func bAt(_ l: Int, _ j: Int) -> Double { Double(transB ? b[j * k + l] : b[l * n + j]) }
                for beta in [Float(0), 1] {
                    let c = FloatBuffer(count: m * ldc)
                    for i in 0..<c.count { c[i] = beta == 0 ? .nan : Float(i % 5) }
                    let old = c.array
                    BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                              a.pointer, lda: transA ? m : k, b.pointer, ldb: transB ? k : n, beta: beta, c.pointer, ldc: ldc, split: split)
                    for i in 0..<m {
                        for j in 0..<ldc {
                            let got = c[i * ldc + j]
                            if j >= n {
                                XCTAssertEqual(got.bitPattern, old[i * ldc + j].bitPattern, "padding column touched")
                                continue
                            }
                            var want = 0.0
                            for l in 0..<k { want += aAt(i, l) * bAt(l, j) }
                            want = 0.5 * want + (beta == 0 ? 0 : Double(old[i * ldc + j]))
                            // float32 sums of 9 products of N(0, 1) values: 1e-5 is well above
                            // their rounding error (~1e-6) and far below any indexing mistake.
                            // Of 16-25 thousand: sums of magnitude ~150, whose float32 rounding
                            // (a few 1e-4 in blocked sums) stays far below 5e-3; a wrong slice of
                            // k moves them by whole units.
                            XCTAssertEqual(Double(got), want, accuracy: k > 9 ? 5e-3 : 1e-5,
                                           "\(m)x\(n)x\(k) in \(split), transA \(transA) transB \(transB) beta \(beta) (\(i), \(j))")
                        }
                    }
                }
            }
        }
      }
    }
}
