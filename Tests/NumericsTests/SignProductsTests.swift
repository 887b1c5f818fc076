// The fused head's kernels in C: the products with the codebook by table lookups
// (signproducts.c) and the pass of exponentials over a block of classes (oh_head_block). The
// AVX-512 kernels against the portable ones bit for bit (where this CPU has AVX-512), and the
// portable ones against the definitions computed in Double, on shapes that are not multiples of
// the kernels' tiles (rows of 6, 3 and 5; 4 bits; 16 and 64 classes; 16 lanes).

import XCTest
import CKernels
@testable import OrthoHashNumerics

final class SignProductsTests: XCTestCase {
    /// The kernels to compare: the portable one, and the vector one where the CPU has it.
    let levels: [Int32] = oh_sign_level() > 0 ? [0, oh_sign_level()] : [0]

    func randomSigns(classes: Int, bits: Int, seed: UInt64) -> Codebook {
        var rng = Xoshiro256(seed: seed)
        return Codebook(classes: classes, bits: bits, values: (0..<(classes * bits)).map { _ in rng.next() & 1 == 1 ? 1 : -1 })
    }

    /// u = alpha vn s^T, block by block of classes, for every kernel: within float32 summation's
    /// bound of the definition, the same bits from every kernel, and nothing written past `cols`.
    /// Tolerance: a cosine adds K/4 table entries, each a sum of 4 terms, so its rounding error is
    /// below (K/4 + 4) 2^-24 sum_j |vn_j| (each addition errs by at most 2^-24 of a partial sum,
    /// and every partial sum is at most sum_j |vn_j|), times alpha, plus alpha's own rounding.
    func testCosinesMatchDefinition() {
        for (rows, K, C, block) in [(1, 1, 1, 64), (7, 5, 70, 64), (13, 64, 200, 128), (6, 128, 64, 64), (9, 130, 129, 64),
                                    (25, 13, 300, 192), (12, 64, 1000, 256)] {
            var rng = Xoshiro256(seed: UInt64(rows * 1000 + K))
            let vn = (0..<(rows * K)).map { _ in Float(rng.gaussian()) }
            let codebook = randomSigns(classes: C, bits: K, seed: UInt64(C))
            let alpha = 1 / Float(K).squareRoot()
            let tables = FloatBuffer(count: oh_sign_tables_count(rows, K))
            vn.withUnsafeBufferPointer { oh_sign_tables(tables.pointer, $0.baseAddress!, rows, K) }
            var outputs: [[Float]] = []
            for level in levels {
                let patterns = SignPatterns(codebook, level: level)
                var u = [Float](repeating: 0, count: rows * C)
                for c0 in stride(from: 0, to: C, by: block) {
                    let cols = min(block, C - c0)
                    var out = [Float](repeating: .nan, count: rows * (cols + 3))   // 3 columns past cols stay NaN
                    out.withUnsafeMutableBufferPointer {
                        oh_sign_cosines($0.baseAddress!, cols + 3, tables.pointer, rows, K, patterns.cosines + c0 / 64 * patterns.cosineTile,
                                        cols, alpha, level)
                    }
                    for r in 0..<rows {
                        for c in 0..<cols { u[r * C + c0 + c] = out[r * (cols + 3) + c] }
                        for c in cols..<(cols + 3) { XCTAssertTrue(out[r * (cols + 3) + c].isNaN, "written past the block: \(rows)x\(K)x\(C) level \(level)") }
                    }
                }
                for r in 0..<rows {
                    let magnitude = (0..<K).reduce(0.0) { $0 + Double(abs(vn[r * K + $1])) }
                    let bound = (Double(K / 4 + 4) * 0x1p-24 * magnitude + 1e-30) * Double(alpha) + 0x1p-23 * magnitude * Double(alpha)
                    for c in 0..<C {
                        let exact = Double(alpha) * (0..<K).reduce(0.0) { $0 + Double(vn[r * K + $1]) * Double(codebook.values[c * K + $1]) }
                        XCTAssertEqual(Double(u[r * C + c]), exact, accuracy: bound, "cosine (\(r), \(c)) of \(rows)x\(K)x\(C), level \(level)")
                    }
                }
                outputs.append(u)
            }
            if outputs.count == 2 { XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "\(rows)x\(K)x\(C): kernels differ") }
        }
    }

    /// acc += e s, e a block of classes (cols not a multiple of 4 included), into accumulators
    /// that hold values already: within float32 summation's bound of the definition (each step
    /// adds one table entry of 4 terms: (cols/4 + 4) 2^-24 (|acc| + sum_c |e_c|)), and the same
    /// bits from every kernel.
    func testGradientAccumulationMatchesDefinition() {
        for (rows, K, cols, first) in [(1, 1, 1, 0), (4, 5, 7, 4), (7, 64, 256, 64), (11, 128, 130, 0), (3, 130, 61, 8), (6, 16, 64, 0),
                                       (13, 48, 203, 96), (5, 200, 100, 0)] {
            let C = first + cols + 5
            var rng = Xoshiro256(seed: UInt64(rows * 100 + K + cols))
            let codebook = randomSigns(classes: C, bits: K, seed: UInt64(K))
            let lde = cols + 2
            let e = (0..<(rows * lde)).map { _ in Float(rng.nextDouble()) }
            let start = (0..<(rows * K)).map { _ in Float(rng.gaussian()) }
            var outputs: [[Float]] = []
            for level in levels {
                let patterns = SignPatterns(codebook, level: level)
                var acc = start
                acc.withUnsafeMutableBufferPointer { a in
                    e.withUnsafeBufferPointer {
                        oh_sign_accumulate(a.baseAddress!, K, $0.baseAddress!, lde, rows, cols, patterns.gradient + first / 4 * patterns.gradientQuad, level)
                    }
                }
                for r in 0..<rows {
                    let magnitude = (0..<cols).reduce(0.0) { $0 + Double(e[r * lde + $1]) }
                    for j in 0..<K {
                        let exact = Double(start[r * K + j]) + (0..<cols).reduce(0.0) { $0 + Double(e[r * lde + $1]) * Double(codebook.values[(first + $1) * K + j]) }
                        let bound = Double(cols / 4 + 4) * 0x1p-24 * (abs(Double(start[r * K + j])) + magnitude)
                        XCTAssertEqual(Double(acc[r * K + j]), exact, accuracy: bound, "(\(r), \(j)) of \(rows)x\(K), \(cols) classes, level \(level)")
                    }
                }
                outputs.append(acc)
            }
            if outputs.count == 2 { XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "\(rows)x\(K)x\(cols): kernels differ") }
        }
    }

    /// The pass of exponentials over a block: e = exp(s u - s) (the target's with its margin),
    /// the rows' sums added to, the target's cosine, and the first largest cosine kept across
    /// blocks. Blocks of 1 to 300 classes (runs of 16 and 8 and what is left), targets in the
    /// block's first, middle and last run and outside it, ties for the largest, a NaN row.
    /// Against the definition: e within 1.5e-6 relative (z = s u - s rounded once: half an ulp of
    /// |z| <= 16 is 9.5e-7 absolute, which exp turns into relative error; and the polynomial's
    /// 1-2 ulp), the sums within 2e-6 relative; the kernels bit for bit.
    func testHeadBlockMatchesDefinition() {
        let s: Float = 8, m: Float = 0.2
        for cols in [1, 7, 8, 9, 15, 16, 17, 24, 31, 81, 256, 300] {
            let rows = 6, first = 1000
            var rng = Xoshiro256(seed: UInt64(cols))
            var u = (0..<(rows * cols)).map { _ in Float(rng.nextDouble() * 2 - 1) }
            // Row 2: its largest value twice (the first is kept); row 5: a NaN.
            if cols > 3 { u[2 * cols + 1] = 0.999; u[2 * cols + cols - 1] = 0.999 }
            u[5 * cols + cols / 2] = .nan
            let targets: [Int32] = [Int32(first), Int32(first + cols - 1), Int32(first + cols / 2), Int32(first - 1), Int32(first + cols), Int32(first)]
            var results: [([Float], [Double], [Float], [Float], [Int64])] = []
            for level in levels {
                var e = u
                var sums = [Double](repeating: 0.5, count: rows), targetCosines = [Float](repeating: -7, count: rows)
                var best = [Float](repeating: 0.9, count: rows), bestClass = [Int64](repeating: -1, count: rows)
                best[1] = -.infinity
                e.withUnsafeMutableBufferPointer { ep in
                    targets.withUnsafeBufferPointer { tp in
                        oh_head_block(ep.baseAddress!, rows, cols, first, tp.baseAddress!, s, m, &sums, &targetCosines, &best, &bestClass, level)
                    }
                }
                for r in 0..<5 {
                    var sum = 0.5
                    for c in 0..<cols {
                        let inBlock = Int(targets[r]) == first + c
                        let z = Double(s) * (Double(u[r * cols + c]) - (inBlock ? Double(m) : 0)) - Double(s)
                        XCTAssertEqual(Double(e[r * cols + c]), exp(z), accuracy: 1.5e-6 * exp(z), "e (\(r), \(c)) of \(cols), level \(level)")
                        sum += exp(z)
                    }
                    XCTAssertEqual(sums[r], sum, accuracy: 2e-6 * sum, "sum \(r) of \(cols), level \(level)")
                    let t = Int(targets[r]) - first
                    XCTAssertEqual(targetCosines[r], t >= 0 && t < cols ? u[r * cols + t] : -7, "target cosine \(r) of \(cols)")
                    let top = (0..<cols).map { u[r * cols + $0] }.max()!
                    let at = (0..<cols).first { u[r * cols + $0] == top }!
                    XCTAssertEqual(best[r], max(top, r == 1 ? -.infinity : 0.9), "best \(r) of \(cols)")
                    XCTAssertEqual(bestClass[r], top > (r == 1 ? -.infinity : 0.9) ? Int64(first + at) : -1, "best class \(r) of \(cols)")
                }
                XCTAssertTrue(sums[5].isNaN, "a NaN cosine makes its row's sum NaN")
                results.append((e, sums, targetCosines, best, bestClass))
            }
            if results.count == 2 {
                XCTAssertEqual(results[0].0.map(\.bitPattern), results[1].0.map(\.bitPattern), "\(cols) classes: exponentials differ")
                XCTAssertEqual(results[0].1.prefix(5).map(\.bitPattern), results[1].1.prefix(5).map(\.bitPattern), "\(cols) classes: sums differ")
                XCTAssertEqual(results[0].2.map(\.bitPattern), results[1].2.map(\.bitPattern))
                XCTAssertEqual(results[0].3.prefix(5).map(\.bitPattern), results[1].3.prefix(5).map(\.bitPattern))
                XCTAssertEqual(results[0].4, results[1].4)
            }
        }
    }
}
