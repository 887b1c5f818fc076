// Finite-difference checks of every layer, loss variant and the whole model.
//
// Central differences in Float32 with step h = 1e-2 (1e-3 for the whole model, whose ReLU and
// sign(v) kinks a step of 1e-2 can cross) on small shapes and a fixed seed. Round-off
// in the loss is about 1e-7 x |L| / h ~ 1e-5 of the gradient scale, truncation O(h^2) ~ 1e-4,
// so a relative error of 2e-3 (max |numeric - analytic| / max |analytic|) separates a correct
// gradient from a wrong one (a missing term gives errors of order 1).

import CKernels
import XCTest
@testable import OrthoHashNumerics

func randomBuffer(_ n: Int, seed: UInt64, scale: Double = 1) -> FloatBuffer {
    var rng = Xoshiro256(seed: seed, stream: 99)
    let b = FloatBuffer(count: n)
    for i in 0..<n { b[i] = Float(rng.gaussian() * scale) }
    return b
}

/// Compares `analytic` with central differences of `loss` with respect to `x[0..<count]`.
func assertGradient(_ name: String, _ x: UnsafeMutablePointer<Float>, count: Int, analytic: [Float],
                    h: Float = 1e-2, tolerance: Double = 2e-3, loss: () -> Double,
                    file: StaticString = #filePath, line: UInt = #line) {
    var worst = 0.0, scale = 0.0
    for i in 0..<count {
        let saved = x[i]
        x[i] = saved + h; let plus = loss()
        x[i] = saved - h; let minus = loss()
        x[i] = saved
        let numeric = (plus - minus) / Double(2 * h)
        worst = max(worst, abs(numeric - Double(analytic[i])))
        scale = max(scale, abs(Double(analytic[i])), abs(numeric))
    }
    XCTAssertGreaterThan(scale, 1e-6, "\(name): gradient is zero, the check would prove nothing", file: file, line: line)
    XCTAssertLessThan(worst / scale, tolerance, "\(name): max error \(worst) vs scale \(scale)", file: file, line: line)
}

final class GradientTests: XCTestCase {
    let one = LocalStatistics()

    func testLinearWithBias() {
        let B = 4, I = 5, O = 3
        let x = randomBuffer(B * I, seed: 1), w = randomBuffer(O * I, seed: 2), b = randomBuffer(O, seed: 3)
        let r = randomBuffer(B * O, seed: 4)           // L = sum(y * r), so dL/dy = r
        let y = FloatBuffer(count: B * O)
        func loss() -> Double {
            linearForward(y.pointer, x.pointer, w.pointer, b.pointer, B: B, I: I, O: O)
            return (0..<(B * O)).reduce(0.0) { $0 + Double(y[$1] * r[$1]) }
        }
        _ = loss()
        // The bias sum clears dy (its last read in a training step): each call gets a copy of r.
        let dx = FloatBuffer(count: B * I), dw = FloatBuffer(count: O * I), db = FloatBuffer(count: O)
        let dy1 = FloatBuffer(r.array), dy2 = FloatBuffer(r.array)
        linearBackward(dx.pointer, dw.pointer, db.pointer, dy1.pointer, x.pointer, w.pointer, B: B, I: I, O: O)
        assertGradient("linear dx", x.pointer, count: B * I, analytic: dx.array, loss: loss)
        assertGradient("linear dW", w.pointer, count: O * I, analytic: dw.array, loss: loss)
        assertGradient("linear db", b.pointer, count: O, analytic: db.array, loss: loss)
        // Backward accumulates into parameter gradients.
        linearBackward(nil, dw.pointer, db.pointer, dy2.pointer, x.pointer, w.pointer, B: B, I: I, O: O)
        XCTAssertEqual(Double(db[0]), 2 * Double((0..<B).reduce(Float(0)) { $0 + r[$1 * O] }), accuracy: 1e-5)
    }

    /// ReLU as the training step runs it: the bias + ReLU pass (zero bias here) and the ReLU
    /// backward that clears the activations.
    func testReLU() {
        let n = 12
        let x = randomBuffer(n, seed: 5), r = randomBuffer(n, seed: 6), y = FloatBuffer(count: n)
        let zeroBias = FloatBuffer(count: n)
        for i in 0..<n where abs(x[i]) < 0.05 { x[i] = 0.5 }   // keep away from the kink
        func loss() -> Double {
            y.pointer.update(from: x.pointer, count: n)
            _ = oh_bias_relu(y.pointer, zeroBias.pointer, 1, n)
            return (0..<n).reduce(0.0) { $0 + Double(y[$1] * r[$1]) }
        }
        _ = loss()
        let d = FloatBuffer(r.array)
        _ = reluBackwardClearing(d.pointer, y.pointer, count: n)
        assertGradient("relu", x.pointer, count: n, analytic: d.array, loss: loss)
    }

    func testBatchNormTrainingMode() {
        let B = 6, K = 4
        let x = randomBuffer(B * K, seed: 7, scale: 2), gamma = randomBuffer(K, seed: 8), beta = randomBuffer(K, seed: 9)
        let r = randomBuffer(B * K, seed: 10)
        let y = FloatBuffer(count: B * K), xhat = FloatBuffer(count: B * K)
        let rm = FloatBuffer(count: K), rv = FloatBuffer(count: K)
        let state = BatchNormState(K: K)
        func loss() -> Double {
            batchNormTrainForward(y.pointer, xhat.pointer, x.pointer, gamma.pointer, beta.pointer, rm.pointer, rv.pointer,
                                  state, B: B, statistics: one)
            return (0..<(B * K)).reduce(0.0) { $0 + Double(y[$1] * r[$1]) }
        }
        _ = loss()
        let dx = FloatBuffer(count: B * K), dg = FloatBuffer(count: K), db = FloatBuffer(count: K)
        batchNormTrainBackward(dx.pointer, dg.pointer, db.pointer, r.pointer, xhat.pointer, gamma.pointer, state, B: B, statistics: one)
        assertGradient("bn dx", x.pointer, count: B * K, analytic: dx.array, loss: loss)
        assertGradient("bn dgamma", gamma.pointer, count: K, analytic: dg.array, loss: loss)
        assertGradient("bn dbeta", beta.pointer, count: K, analytic: db.array, loss: loss)
    }

    func testCosineLayer() {
        let B = 3, K = 8, C = 5
        let v = randomBuffer(B * K, seed: 11)
        let cb = try! Codebook.generate(method: .B, classes: C, bits: K, seed: 1).unitRows()
        let r = randomBuffer(B * C, seed: 12)
        let u = FloatBuffer(count: B * C), vn = FloatBuffer(count: B * K), norms = FloatBuffer(count: B)
        func loss() -> Double {
            cosineForward(u.pointer, vn.pointer, norms.pointer, v.pointer, cb.pointer, B: B, K: K, C: C)
            return (0..<(B * C)).reduce(0.0) { $0 + Double(u[$1] * r[$1]) }
        }
        _ = loss()
        let dv = FloatBuffer(count: B * K), scratch = FloatBuffer(count: B * K)
        cosineBackward(dv.pointer, scratch.pointer, r.pointer, vn.pointer, norms.pointer, cb.pointer, B: B, K: K, C: C)
        assertGradient("cosine", v.pointer, count: B * K, analytic: dv.array, loss: loss)
        for i in 0..<(B * C) { XCTAssertLessThanOrEqual(abs(u[i]), 1.0001) }
    }

    /// Cosines in (-0.9, 0.9) and targets for the margin-loss checks.
    func cosines(_ B: Int, _ C: Int, seed: UInt64) -> FloatBuffer {
        var rng = Xoshiro256(seed: seed)
        let u = FloatBuffer(count: B * C)
        for i in 0..<(B * C) { u[i] = Float(rng.nextDouble() * 1.8 - 0.9) }
        return u
    }

    func checkMarginLoss(_ name: String, config: LossConfig, multi: Bool) {
        let B = 4, C = 6
        let u = cosines(B, C, seed: 13)
        let single: [Int32] = [0, 3, 5, 2]
        let y = FloatBuffer(count: B * C)
        for r in 0..<B { y[r * C + Int(single[r])] = 1; if multi { y[r * C + (Int(single[r]) + 2) % C] = 1 } }
        let work = FloatBuffer(count: B * C), scratch = FloatBuffer(count: B * C)
        func run() -> Double {
            work.pointer.update(from: u.pointer, count: B * C)
            return single.withUnsafeBufferPointer { t in
                marginLoss(work.pointer, scratch: scratch.pointer, targets: multi ? .multi(y.pointer) : .single(t.baseAddress!),
                           B: B, C: C, N: B, config: config, statistics: one).loss
            }
        }
        _ = run()
        let analytic = work.array
        assertGradient(name, u.pointer, count: B * C, analytic: analytic, h: 1e-3, tolerance: 5e-3, loss: run)
    }

    func testMarginLossesSingleLabel() {
        var c = LossConfig()
        checkMarginLoss("cos margin, CE", config: c, multi: false)
        c.marginType = .arc
        checkMarginLoss("arc margin, CE", config: c, multi: false)
    }

    func testMarginLossesMultiLabel() {
        for kind in MultiLabelLoss.allCases {
            for margin in MarginType.allCases {
                var c = LossConfig()
                c.multiLabelLoss = kind; c.marginType = margin; c.ce = 0.7
                // imbalance: keep sigmoid(z) away from its 0.7 threshold so the constant weights do not flip under h.
                checkMarginLoss("\(margin) margin, \(kind)", config: c, multi: true)
            }
        }
    }

    func testQuantizationTerms() {
        let B = 3, K = 5
        let v = randomBuffer(B * K, seed: 14)
        for i in 0..<(B * K) where abs(v[i]) < 0.05 || abs(abs(v[i]) - 1) < 0.05 { v[i] = 0.4 }  // away from kinks
        for type in QuantizationType.allCases {
            func loss() -> Double { quantizationForward(v.pointer, B: B, K: K, N: B, type: type, weight: 0.3) }
            let dv = FloatBuffer(count: B * K)
            quantizationBackward(dv.pointer, v.pointer, B: B, K: K, N: B, type: type, weight: 0.3)
            assertGradient("quantization \(type)", v.pointer, count: B * K, analytic: dv.array, h: 1e-3, tolerance: 5e-3, loss: loss)
        }
    }

    /// The whole model (mlp backbone, hash layer, BN in training mode, cosine, loss with a
    /// quantization term), against finite differences of its own loss.
    func testWholeModel() {
        for (margin, quan, backbone) in [(MarginType.cos, QuantizationType.cs, BackboneKind.linear), (.cos, .cs, .mlp), (.arc, .l2, .mlp)] {
            let config = ModelConfig(inputDim: 5, backbone: backbone, hidden: [6, 4], nbit: 6, classes: 4)
            var loss = LossConfig()
            loss.marginType = margin; loss.quan = 0.5; loss.quanType = quan; loss.scale = 3
            let B = 8
            let model = HashModel(config: config, loss: loss, codebook: try! Codebook.generate(method: .B, classes: 4, bits: 6, seed: 3),
                                  batchSize: B)
            model.resetParameters(seed: 5)
            // Larger hash weights than N(0, 0.01^2) so every term matters at this scale.
            for i in model.hashWeight..<(model.hashWeight + 6 * config.featureDim) { model.parameters[i] *= 30 }
            let x = randomBuffer(B * 5, seed: 15)
            let labels: [Int32] = [0, 1, 2, 3, 0, 1, 2, 3]
            func run() -> Double {
                labels.withUnsafeBufferPointer { model.trainStep(x.pointer, targets: .single($0.baseAddress!)).loss }
            }
            model.store.clearGradients()
            _ = run()
            let analytic = model.gradients.array
            // Cleared then stepped: the same gradients over any old content.
            for i in 0..<model.parameterCount { model.gradients[i] = .nan }
            model.store.clearGradients()
            _ = run()
            XCTAssertEqual(model.gradients.array, analytic)
            assertGradient("model (\(backbone), \(margin), \(quan))", model.parameters.pointer, count: model.parameterCount,
                           analytic: analytic, h: 1e-3, tolerance: 5e-3, loss: run)
        }
    }
}
