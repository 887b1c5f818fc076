// The training step's finiteness check of the gradients: a bound from the largest magnitudes of a
// GEMM's inputs where the gradients started at zero, the full read otherwise.

import CKernels
import XCTest
@testable import OrthoHashNumerics

final class FinitenessTests: XCTestCase {
    func testMagnitudeBoundsFromTheKernels() {
        var x: [Float] = [-3, 2, 0.5, -0.25]
        XCTAssertEqual(MagnitudeBound(of: x, count: 4).value, 3)
        XCTAssertEqual(MagnitudeBound(of: x, count: 0).bits, 0)
        x[2] = .nan
        XCTAssertFalse(MagnitudeBound(of: x, count: 4).isFinite)
        x[2] = -.infinity
        XCTAssertFalse(MagnitudeBound(of: x, count: 4).isFinite)
        XCTAssertEqual(MagnitudeBound(of: [Float.greatestFiniteMagnitude], count: 1).value, Double(Float.greatestFiniteMagnitude))

        // Bias + ReLU returns the largest output; ReLU backward the largest new dy (17 values:
        // the vector body and its tail).
        var y = (0..<17).map { Float($0) - 8 }           // -8 ... 8
        let bias = [Float](repeating: 0.5, count: 17)
        XCTAssertEqual(Float(bitPattern: oh_bias_relu(&y, bias, 1, 17)), 8.5)
        XCTAssertEqual(y[0], 0)
        var dy = (0..<17).map { Float($0) * -2 }         // 0 ... -32
        XCTAssertEqual(Float(bitPattern: oh_relu_backward_clear(&dy, &y, 17)), 32)  // y[16] = 8.5 > 0
        XCTAssertEqual(y, [Float](repeating: 0, count: 17))
        var dz: [Float] = [1, -5, 2]
        var z: [Float] = [1, 0, 1]                         // -5 is masked out
        XCTAssertEqual(Float(bitPattern: oh_relu_backward_clear(&dz, &z, 3)), 2)
    }

    func testProductSumBound() {
        let one = MagnitudeBound.one
        func bound(_ v: Float) -> MagnitudeBound { MagnitudeBound(bits: v.bitPattern) }
        XCTAssertTrue(MagnitudeBound.productSumsFinite(terms: 256, one, one))
        XCTAssertTrue(MagnitudeBound.productSumsFinite(terms: 256, bound(1e17), bound(1e18)))
        // 256 x 1e18 x 1e18 = 2.56e38: finite, but above half of 3.4e38, so not proven.
        XCTAssertFalse(MagnitudeBound.productSumsFinite(terms: 256, bound(1e18), bound(1e18)))
        // The limit is half of Float's largest value: 2 x (max / 4) passes, 3 x (max / 4) does not.
        let quarter = bound(Float.greatestFiniteMagnitude / 4)
        XCTAssertTrue(MagnitudeBound.productSumsFinite(terms: 2, quarter, one))
        XCTAssertFalse(MagnitudeBound.productSumsFinite(terms: 3, quarter, one))
        XCTAssertFalse(MagnitudeBound.productSumsFinite(terms: 1, bound(.infinity), bound(0)))
        XCTAssertFalse(MagnitudeBound.productSumsFinite(terms: 1, one, bound(.nan)))
        // Past 2^23 terms the rounding factor is no longer below 2: no claim.
        XCTAssertFalse(MagnitudeBound.productSumsFinite(terms: 1 << 23, bound(1e-10), bound(1e-10)))
        XCTAssertTrue(MagnitudeBound.productSumsFinite(terms: 0, bound(Float.greatestFiniteMagnitude), bound(Float.greatestFiniteMagnitude)))
    }

    private func model(backbone: BackboneKind, hidden: [Int], nbit: Int = 8) -> (HashModel, FloatBuffer, [Int32]) {
        let config = ModelConfig(inputDim: 12, backbone: backbone, hidden: hidden, nbit: nbit, classes: 4)
        let B = 16
        let model = HashModel(config: config, loss: LossConfig(), codebook: try! Codebook.generate(method: .B, classes: 4, bits: nbit, seed: 1),
                              batchSize: B)
        model.resetParameters(seed: 2)
        let x = randomBuffer(B * 12, seed: 3)
        return (model, x, (0..<B).map { Int32($0 % 4) })
    }

    /// A step that accumulates (or first clears the gradients); `clear` says the gradients hold
    /// zeros, which the store must know (otherwise they count as written, as after a step).
    @discardableResult
    private func step(_ model: HashModel, _ x: FloatBuffer, _ labels: [Int32], accumulate: Bool, clear: Bool) -> GradientReport {
        if clear { XCTAssertTrue(model.store.gradientsAreZero, "the test means gradients that are zero") } else { model.store.noteGradientsWritten() }
        if !accumulate { model.store.clearGradients() }
        return labels.withUnsafeBufferPointer { model.trainStep(x.pointer, targets: .single($0.baseAddress!)).gradients }
    }

    /// Gradients that start at zero are proven finite without reading them; otherwise every
    /// slice (the hash layer's weight and each backbone layer's weight and bias) is read.
    /// Batch 16 of 12-d inputs: max|x| of the input (192 values) is taken only where it spares a
    /// larger slice, the first layer's 40 x 13 or the linear backbone's 32 x 12, not its 8 x 12.
    func testBoundReplacesTheReadOnlyWhenGradientsStartAtZero() {
        for (backbone, hidden, nbit, readWhenClear) in [(BackboneKind.mlp, [40, 6], 8, 0), (.linear, [], 32, 0),
                                                       (.linear, [], 8, 1), (.mlp, [10, 6], 8, 1)] {
            let (m, x, labels) = model(backbone: backbone, hidden: hidden, nbit: nbit)
            let what = "\(backbone) \(hidden) \(nbit) bits"
            var r = step(m, x, labels, accumulate: true, clear: true)
            XCTAssertTrue(r.finite)
            XCTAssertTrue(r.sumFinite)
            XCTAssertEqual(r.slicesRead, readWhenClear, what)
            let proven = m.gradients.array
            // Accumulating onto gradients not known to be zero: read in full.
            r = step(m, x, labels, accumulate: true, clear: false)
            XCTAssertTrue(r.finite)
            XCTAssertEqual(r.slicesRead, 1 + hidden.count, what)
            // Cleared (as the optimizer's update clears them): whatever was there does not
            // matter, so the bound suffices again.
            for i in 0..<m.parameterCount { m.gradients[i] = .nan }
            r = step(m, x, labels, accumulate: false, clear: false)
            XCTAssertTrue(r.finite)
            XCTAssertEqual(r.slicesRead, readWhenClear, what)
            XCTAssertEqual(m.gradients.array, proven, "the check does not change the gradients")
        }
    }

    /// A NaN in the input reaches the gradients, although they started at zero: found.
    func testNaNInputIsFound() {
        for backbone in [BackboneKind.mlp, .linear] {
            let (m, x, labels) = model(backbone: backbone, hidden: backbone == .mlp ? [10, 6] : [])
            m.store.clearGradients()
            x[5] = .nan
            XCTAssertFalse(step(m, x, labels, accumulate: true, clear: true).finite, "\(backbone)")
        }
    }

    /// Old gradients holding Inf, accumulated onto: only the full read can see it, and it does.
    /// Old gradients holding 2e38: finite, but a sum of such values over ranks could overflow,
    /// so the sum is not vouched for; 1e38 is (below half of Float's largest value).
    func testOldGradientsReadInFull() {
        let (m, x, labels) = model(backbone: .mlp, hidden: [10, 6])
        m.store.clearGradients()
        let r = step(m, x, labels, accumulate: true, clear: false)
        XCTAssertTrue(r.finite)
        XCTAssertTrue(r.sumFinite)
        for (old, finite, sumFinite) in [(Float.infinity, false, false), (2e38, true, false), (1e38, true, true)] {
            m.store.clearGradients()
            m.gradients[3] = old                          // first backbone layer's weight
            let r = step(m, x, labels, accumulate: true, clear: false)
            XCTAssertEqual(r.finite, finite, "\(old)")
            XCTAssertEqual(r.sumFinite, sumFinite, "\(old)")
        }
    }
}
