import XCTest
@testable import OrthoHashNumerics

/// The training step's own bookkeeping: the finiteness flag and the workspace it leaves clear.
final class TrainStepTests: XCTestCase {
    /// A 5-input model with `hidden` layers (none: linear backbone), 6 bits, 3 classes, and one
    /// batch of 4 rows; `step(accumulate)` runs a training step on it.
    struct Fixture {
        let model: HashModel
        let x: FloatBuffer
        let labels: [Int32] = [0, 1, 2, 1]

        init(hidden: [Int]) throws {
            let config = ModelConfig(inputDim: 5, backbone: hidden.isEmpty ? .linear : .mlp, hidden: hidden, nbit: 6, classes: 3)
            model = HashModel(config: config, loss: LossConfig(), codebook: try Codebook.generate(method: .B, classes: 3, bits: 6, seed: 1),
                              batchSize: 4)
            model.resetParameters(seed: 2)
            var rng = Xoshiro256(seed: 3)
            x = FloatBuffer((0..<20).map { _ in Float(rng.gaussian()) })
        }

        @discardableResult
        func step(accumulate: Bool) -> GradientReport {
            labels.withUnsafeBufferPointer {
                if !accumulate { model.store.clearGradients() }
                return model.trainStep(x.pointer, targets: .single($0.baseAddress!)).gradients
            }
        }
    }

    /// Re-estimating BatchNorm's mean on target data (docs/METHOD.md, "Evaluation"): the running mean
    /// becomes the mean of W f(x) over the target rows, computed here by hand from the weights,
    /// so with gamma = 1 and beta = 0 the target's codes v average to 0 in every bit. The data
    /// sit far from the origin (offset 5) and span several chunks of the model's batch (10 rows
    /// in chunks of 4), where an unadjusted mean would leave every bit biased by ~0.1. Tolerance
    /// 1e-5: float32 arithmetic on values of order 0.1 (W is N(0, 0.01^2)).
    func testBatchNormMeanReestimation() throws {
        let config = ModelConfig(inputDim: 5, backbone: .mlp, hidden: [7], nbit: 6, classes: 3)
        let model = HashModel(config: config, loss: LossConfig(), codebook: try Codebook.generate(method: .B, classes: 3, bits: 6, seed: 1),
                              batchSize: 4)
        model.resetParameters(seed: 2)
        var rng = Xoshiro256(seed: 5)
        let rows = 10
        let x = FloatBuffer((0..<(rows * 5)).map { _ in 5 + Float(rng.gaussian()) })
        var sums = [Double](repeating: 0, count: 6)
        model.addPreNormSums(x.pointer, rows: rows, into: &sums)
        // By hand: W f(x) with f = ReLU(A x + a), named views as exported.
        let views = Dictionary(uniqueKeysWithValues: model.store.layout.tensors.map { ($0.name, $0.offset) })
        let A = views["backbone.fc.0.weight"]!, a = views["backbone.fc.0.bias"]!, W = views["hash_fc.0.weight"]!
        let p = model.parameters
        var expected = [Double](repeating: 0, count: 6)
        for r in 0..<rows {
            let f = (0..<7).map { h in max(0, (0..<5).reduce(Double(p[a + h])) { $0 + Double(p[A + h * 5 + $1]) * Double(x[r * 5 + $1]) }) }
            for k in 0..<6 { expected[k] += (0..<7).reduce(0.0) { $0 + Double(p[W + k * 7 + $1]) * f[$1] } }
        }
        for k in 0..<6 { XCTAssertEqual(sums[k], expected[k], accuracy: 1e-4 * max(1, abs(expected[k])), "bit \(k)") }
        model.setBatchNormMean(sums.map { $0 / Double(rows) }, identityAffine: true)
        let v = FloatBuffer(count: rows * 6)
        model.encode(x.pointer, rows: rows, into: v.pointer)
        for k in 0..<6 {
            let mean = (0..<rows).reduce(0.0) { $0 + Double(v[$1 * 6 + k]) } / Double(rows)
            XCTAssertEqual(mean, 0, accuracy: 1e-5, "bit \(k)")
            XCTAssertEqual(p[views["hash_fc.1.weight"]! + k], 1)
            XCTAssertEqual(p[views["hash_fc.1.bias"]! + k], 0)
        }
    }

    /// The finiteness check inside the backward pass covers every parameter's gradient: a NaN
    /// planted at the first and last position of each named tensor's gradient (the step
    /// accumulates onto it) is reported, and a clean step is not.
    func testEveryGradientSliceIsChecked() throws {
        let f = try Fixture(hidden: [4, 3])
        let model = f.model
        // The NaN is written into the gradients behind the store's back, so it is told.
        func finite() -> Bool { model.store.noteGradientsWritten(); return f.step(accumulate: true).finite }
        model.store.clearGradients()
        XCTAssertTrue(finite())
        var positions = 0
        for t in model.store.layout.tensors {
            for i in Set([t.offset, t.offset + t.count - 1]) {
                model.store.clearGradients()
                model.gradients[i] = .nan
                XCTAssertFalse(finite(), "NaN in the gradient of \(t.name) at \(i) not reported")
                positions += 1
            }
        }
        XCTAssertEqual(positions, 2 * model.store.layout.tensors.count)
        model.store.clearGradients()
        model.gradients[model.parameterCount - 1] = .infinity
        XCTAssertFalse(finite())
    }

    /// The step leaves its workspace clear for the next one (whose GEMMs add into it): repeating
    /// a step, with an `encode` in between, gives bitwise the gradients of the first.
    func testRepeatedStepsGiveIdenticalGradients() throws {
        for hidden in [[], [4], [4, 3]] {
            let f = try Fixture(hidden: hidden)
            func gradients() -> [Float] { f.step(accumulate: false); return f.model.gradients.array }
            let first = gradients()
            XCTAssertEqual(gradients(), first, "\(hidden)")
            let out = FloatBuffer(count: 4 * 6)
            f.model.encode(f.x.pointer, rows: 4, into: out.pointer)
            XCTAssertEqual(gradients(), first, "\(hidden): after encode")
            XCTAssertTrue(out.array.allSatisfy { $0.isFinite })
        }
    }
}

