// Values checked against numbers worked out by hand from the definitions in docs/METHOD.md.

import XCTest
@testable import OrthoHashNumerics
import CKernels

final class HandComputedTests: XCTestCase {
    let one = LocalStatistics()

    /// One channel, x = [1, 3]: mean 2, biased var 1, unbiased var 2.
    func testBatchNormPyTorchSemantics() {
        let x = FloatBuffer([1, 3]), y = FloatBuffer(count: 2), xhat = FloatBuffer(count: 2)
        let gamma = FloatBuffer([2]), beta = FloatBuffer([0.5])
        let rm = FloatBuffer([0]), rv = FloatBuffer([1])
        batchNormTrainForward(y.pointer, xhat.pointer, x.pointer, gamma.pointer, beta.pointer, rm.pointer, rv.pointer,
                              BatchNormState(K: 1), B: 2, statistics: one)
        let s = 1 / (1 + 1e-5).squareRoot()
        XCTAssertEqual(Double(y[0]), 2 * -s + 0.5, accuracy: 1e-6)
        XCTAssertEqual(Double(y[1]), 2 * s + 0.5, accuracy: 1e-6)
        XCTAssertEqual(rm[0], 0.2, accuracy: 1e-7)                 // 0.9 * 0 + 0.1 * 2
        XCTAssertEqual(rv[0], 0.9 + 0.1 * 2, accuracy: 1e-6)      // unbiased variance 2
    }

    /// Two classes, cosines (0.5, -0.5), target 0, s = 8, m = 0.2:
    /// z = (8 * 0.3, -4) = (2.4, -4); CE = log(1 + exp(-6.4)).
    func testCosineMarginCrossEntropy() {
        let u = FloatBuffer([0.5, -0.5])
        var config = LossConfig()
        config.scale = 8; config.margin = 0.2
        let t: [Int32] = [0]
        let result = t.withUnsafeBufferPointer {
            marginLoss(u.pointer, scratch: nil, targets: .single($0.baseAddress!), B: 1, C: 2, N: 1, config: config, statistics: one)
        }
        XCTAssertEqual(result.loss, log(1 + exp(-6.4)), accuracy: 1e-6)
        XCTAssertEqual(result.correct, 1)
        // dL/du_0 = s (p_0 - 1), p_0 = 1 / (1 + exp(-6.4))
        XCTAssertEqual(Double(u[0]), 8 * (1 / (1 + exp(-6.4)) - 1), accuracy: 1e-5)
    }


    /// The many-classes kernel (C >= 256: vectorised exponentials) against the definition computed
    /// in Double: loss, dL/du and accuracy, with 1 and 2 threads (row blocks), targets that are
    /// and are not the largest cosine, and a scale large enough that most exponentials underflow
    /// to the clamp. Tolerance 2e-6 relative: the float exponential is within ~2 ulp (1.2e-7 each)
    /// and the softmax divides by a sum of many of them.
    func testManyClassesLossMatchesDefinition() {
        let B = 7, C = 3001
        let threadsBefore = BLAS.threads
        defer { BLAS.setThreads(threadsBefore) }
        for (scale, margin, ce) in [(Float(8), Float(0.2), Float(1)), (64, 0.5, 0.5)] {
            var rng = Xoshiro256(seed: 11)
            let cosines = (0..<(B * C)).map { _ in Float(rng.nextDouble() * 2 - 1) }
            var targets = (0..<B).map { _ in Int32(rng.nextInt(below: C)) }
            // Row 0's target is its largest cosine; row 1's the smallest.
            targets[0] = Int32(cosines[0..<C].indices.max { cosines[$0] < cosines[$1] }!)
            targets[1] = Int32(cosines[C..<(2 * C)].indices.min { cosines[$0] < cosines[$1] }! - C)
            var config = LossConfig()
            config.scale = scale; config.margin = margin; config.ce = ce
            let N = 2 * B   // as if another rank held the other half of the batch
            var expectedLoss = 0.0, expectedCorrect = 0
            var expectedGrad = [Double](repeating: 0, count: B * C)
            for r in 0..<B {
                let row = cosines[(r * C)..<((r + 1) * C)].map(Double.init), t = Int(targets[r])
                if row.indices.max(by: { row[$0] < row[$1] }) == t { expectedCorrect += 1 }
                let z = row.indices.map { Double(scale) * (row[$0] - ($0 == t ? Double(margin) : 0)) }
                let top = z.max()!, sum = z.reduce(0) { $0 + exp($1 - top) }
                expectedLoss += (top + log(sum) - z[t]) * Double(ce) / Double(N)
                for c in 0..<C {
                    expectedGrad[r * C + c] = Double(ce) * Double(scale) / Double(N) * (exp(z[c] - top) / sum - (c == t ? 1 : 0))
                }
            }
            for threads in [1, 2] {
                BLAS.setThreads(threads)
                let u = FloatBuffer(cosines)
                let result = targets.withUnsafeBufferPointer {
                    marginLoss(u.pointer, scratch: nil, targets: .single($0.baseAddress!), B: B, C: C, N: N, config: config, statistics: one)
                }
                XCTAssertEqual(result.loss, expectedLoss, accuracy: 2e-6 * expectedLoss, "s \(scale), \(threads) threads")
                XCTAssertEqual(result.correct, expectedCorrect)
                let bound = Double(ce * scale) / Double(N)
                var worst = 0.0
                for i in 0..<(B * C) { worst = max(worst, abs(Double(u[i]) - expectedGrad[i])) }
                XCTAssertLessThan(worst, 2e-6 * bound, "s \(scale), \(threads) threads")
            }
        }
    }
    /// Arc margin on the target: z = s cos(acos(0.5) + 0.2) = s cos(pi/3 + 0.2).
    func testArcMarginLogit() {
        let u = FloatBuffer([0.5, 0.1])
        var config = LossConfig()
        config.marginType = .arc; config.scale = 1
        let scratch = FloatBuffer(count: 2)
        let t: [Int32] = [0]
        let loss = t.withUnsafeBufferPointer {
            marginLoss(u.pointer, scratch: scratch.pointer, targets: .single($0.baseAddress!), B: 1, C: 2, N: 1, config: config, statistics: one).loss
        }
        let z0 = cos(Double.pi / 3 + 0.2), z1 = 0.1
        XCTAssertEqual(loss, log(exp(z0) + exp(z1)) - z0, accuracy: 1e-6)
    }

    /// Label smoothing with targets {0, 2} of 3: y~ = (1/2, 0, 1/2).
    func testLabelSmoothing() {
        let u = FloatBuffer([0.2, 0.0, -0.4])
        let y = FloatBuffer([1, 0, 1])
        var config = LossConfig()
        config.scale = 2; config.margin = 0.1
        let loss = marginLoss(u.pointer, scratch: nil, targets: .multi(y.pointer), B: 1, C: 3, N: 1, config: config, statistics: one).loss
        let z = [2 * (0.2 - 0.1), 0.0, 2 * (-0.4 - 0.1)]
        let lse = log(z.map { exp($0) }.reduce(0, +))
        XCTAssertEqual(loss, -(0.5 * (z[0] - lse) + 0.5 * (z[2] - lse)), accuracy: 1e-6)
    }

    /// Quantization cs for v = (2, -1): cos(v, sign v) = 3 / (sqrt(5) sqrt(2)).
    func testQuantizationCosine() {
        let v = FloatBuffer([2, -1])
        let loss = quantizationForward(v.pointer, B: 1, K: 2, N: 1, type: .cs, weight: 1)
        XCTAssertEqual(loss, 1 - 3 / (5.0.squareRoot() * 2.0.squareRoot()), accuracy: 1e-6)
        let l1 = quantizationForward(v.pointer, B: 1, K: 2, N: 1, type: .l1, weight: 1)
        XCTAssertEqual(l1, (1 + 0) / 2, accuracy: 1e-6)
        let l2 = quantizationForward(v.pointer, B: 1, K: 2, N: 1, type: .l2, weight: 1)
        XCTAssertEqual(l2, (1 + 0) / 2, accuracy: 1e-6)
    }

    /// PyTorch's Adam with coupled weight decay, one parameter, two steps, worked by hand.
    func testAdamMatchesPyTorchUpdate() {
        var c = OptimizerConfig()
        c.lr = 0.1; c.weightDecay = 0.5; c.backboneLRScale = 1
        let opt = Optimizer(config: c)
        let s = store([1], gradients: [0.2], backbone: 0, optimizer: .adam), p = s.parameters
        opt.update(s, lr: 0.1, range: 0..<1)
        // g' = 0.2 + 0.5 * 1 = 0.7; m = 0.07, v = 0.00049; mhat = 0.7, vhat = 0.49 -> step = 0.1 * 0.7 / (0.7 + 1e-8)
        XCTAssertEqual(Double(p[0]), 1 - 0.1 * 0.7 / (0.7 + 1e-8), accuracy: 1e-6)
        let p1 = Double(p[0])
        XCTAssertEqual(s.gradients[0], 0, "the update clears the gradient it read")
        s.gradients[0] = 0.2
        opt.update(s, lr: 0.1, range: 0..<1)
        let g2 = 0.2 + 0.5 * p1
        let m = 0.9 * 0.07 + 0.1 * g2, v = 0.999 * 0.00049 + 0.001 * g2 * g2
        let expected = p1 - 0.1 / (1 - 0.81) * m / ((v).squareRoot() / (1 - 0.999 * 0.999).squareRoot() + 1e-8)
        XCTAssertEqual(Double(p[0]), expected, accuracy: 1e-6)
    }

    func testSGDNesterovAndGroups() {
        var c = OptimizerConfig()
        c.kind = .sgd; c.momentum = 0.5; c.nesterov = true; c.weightDecay = 0; c.backboneLRScale = 0.1
        let opt = Optimizer(config: c)
        let s = store([0, 0], gradients: [1, 1], backbone: 1, optimizer: .sgd), p = s.parameters   // [backbone, hash]
        opt.update(s, lr: 1, range: 0..<2)
        // buf = g = 1; d = g + 0.5 * buf = 1.5; backbone lr 0.1
        XCTAssertEqual(p[0], -0.15, accuracy: 1e-7)
        XCTAssertEqual(p[1], -1.5, accuracy: 1e-7)
        XCTAssertEqual(s.gradients.array, [0, 0], "the update clears the gradients it read")
        s.gradients[0] = 1; s.gradients[1] = 1
        opt.update(s, lr: 1, range: 0..<2)
        // buf = 0.5 + 1 = 1.5; d = 1 + 0.75 = 1.75
        XCTAssertEqual(p[1], -3.25, accuracy: 1e-6)
    }

    /// The update (vectorised, threaded, clearing the gradients in the same pass) gives bitwise
    /// the parameters and moments of its formula evaluated element by element in the same float
    /// operations, and leaves every gradient at 0, for Adam and SGD, over a buffer long enough to
    /// take the vectorised and the threaded paths, with the backbone's learning-rate group.
    func testUpdateMatchesItsFormulaAndClearsGradients() {
        for kind in [OptimizerKind.adam, .sgd] {
            var c = OptimizerConfig()
            c.kind = kind; c.lr = 0.01; c.weightDecay = 1e-4
            let n = 300_001, backbone = 123_457
            var rng = Xoshiro256(seed: 7)
            var p = (0..<n).map { _ in Float(rng.gaussian()) }
            let grads = (0..<n).map { _ in Float(rng.gaussian()) }
            var m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
            let optimizer = Optimizer(config: c)
            let s = store(p, gradients: grads, backbone: backbone, optimizer: kind)
            for t in 1...3 {
                grads.withUnsafeBufferPointer { s.gradients.pointer.update(from: $0.baseAddress!, count: n) }
                s.noteGradientsWritten()
                s.update(with: optimizer, lr: 0.01, threads: 2)
                XCTAssertTrue(s.gradients.array.allSatisfy { $0 == 0 }, "\(kind): gradients not cleared")
                XCTAssertTrue(s.gradientsAreZero, "\(kind): the store knows")
                let bc1 = 1 - pow(c.beta1, Float(t)), invBC2 = 1 / (1 - pow(c.beta2, Float(t))).squareRoot()
                for i in 0..<n {
                    let lr: Float = i < backbone ? 0.01 * c.backboneLRScale : 0.01
                    let g = grads[i] + c.weightDecay * p[i]
                    switch kind {
                    case .adam:
                        m[i] = c.beta1 * m[i] + (1 - c.beta1) * g
                        v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g
                        p[i] -= lr / bc1 * m[i] / (v[i].squareRoot() * invBC2 + c.eps)
                    case .sgd:
                        m[i] = t == 1 ? g : c.momentum * m[i] + g
                        p[i] -= lr * (c.nesterov ? g + c.momentum * m[i] : m[i])
                    }
                }
            }
            XCTAssertEqual(s.parameters.array, p, "\(kind)")
            XCTAssertEqual(s.moment1.array, m, "\(kind)")
            XCTAssertEqual(s.moment2.array, kind == .adam ? v : [], "\(kind)")
        }
    }

    func testSchedules() {
        var c = OptimizerConfig()
        XCTAssertEqual(c.lrFactor(epoch: 79, epochs: 100), 1)
        XCTAssertEqual(c.lrFactor(epoch: 80, epochs: 100), 0.1, accuracy: 1e-7)   // step = int(0.8 * 100)
        XCTAssertEqual(c.lrFactor(epoch: 7, epochs: 10), 1)                        // step = 8
        XCTAssertEqual(c.lrFactor(epoch: 8, epochs: 10), 0.1, accuracy: 1e-7)
        c.scheduler = .multistep; c.milestones = [4, 7]
        XCTAssertEqual(c.lrFactor(epoch: 3, epochs: 10), 1)
        XCTAssertEqual(c.lrFactor(epoch: 4, epochs: 10), 0.1, accuracy: 1e-7)
        XCTAssertEqual(c.lrFactor(epoch: 9, epochs: 10), 0.01, accuracy: 1e-8)
    }

    /// A store of one backbone tensor of `backbone` elements and one hash-layer tensor of the rest.
    func store(_ parameters: [Float], gradients: [Float], backbone: Int, optimizer: OptimizerKind) -> ParameterStore {
        let shapes: [(name: String, shape: [Int])] = backbone > 0 ? [("b", [backbone]), ("h", [parameters.count - backbone])] : [("h", [parameters.count])]
        let s = ParameterStore(layout: ParameterLayout(tensors: shapes, backboneTensors: backbone > 0 ? 1 : 0), optimizer: optimizer)
        parameters.withUnsafeBufferPointer { s.parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        gradients.withUnsafeBufferPointer { s.gradients.pointer.update(from: $0.baseAddress!, count: $0.count) }
        return s
    }
}

/// The fused head (FusedHead.swift: the cosines never materialised) against the definition
/// computed in Double, and against the materialised path inside the whole model.
final class FusedHeadTests: XCTestCase {
    /// Loss, accuracy and dL/dvn for 3001 classes (not a multiple of any block), blocks of 64,
    /// 1000 and the default, 1 and 2 threads; a row whose target is its largest cosine, one whose
    /// target is the smallest. Tolerances: the cosines come from float32 GEMMs of K = 64 terms
    /// (error up to ~K x 2^-24 of a unit product, 4e-6) and are scaled by s = 8 before the
    /// exponential, so p carries ~3e-5 relative error at worst; dvn's bound is 5e-5 of its scale
    /// ce s / N, the loss's 1e-5 relative.
    func testMatchesDefinition() {
        let B = 9, K = 64, C = 3001, N = 2 * B
        let threadsBefore = BLAS.threads
        defer { BLAS.setThreads(threadsBefore); FusedHead.blockClassesOverride = nil }
        var rng = Xoshiro256(seed: 5)
        var vn = (0..<(B * K)).map { _ in Float(rng.gaussian()) }
        for r in 0..<B {
            let n = (0..<K).reduce(Float(0)) { $0 + vn[r * K + $1] * vn[r * K + $1] }.squareRoot()
            for k in 0..<K { vn[r * K + k] /= n }
        }
        let cb = (0..<(C * K)).map { _ in rng.next() & 1 == 1 ? Float(0.125) : -0.125 }    // +-1 / sqrt(64)
        let u = (0..<(B * C)).map { i in (0..<K).reduce(0.0) { $0 + Double(vn[i / C * K + $1]) * Double(cb[i % C * K + $1]) } }
        var targets = (0..<B).map { _ in Int32(rng.nextInt(below: C)) }
        targets[0] = Int32((0..<C).max { u[$0] < u[$1] }!)
        targets[1] = Int32((0..<C).min { u[C + $0] < u[C + $1] }!)
        var config = LossConfig()
        config.ce = 0.5
        let s = Double(config.scale), m = Double(config.margin), gs = Double(config.ce) * s / Double(N)
        var loss = 0.0, correct = 0, dvn = [Double](repeating: 0, count: B * K)
        for r in 0..<B {
            let t = Int(targets[r])
            if (0..<C).max(by: { u[r * C + $0] < u[r * C + $1] }) == t { correct += 1 }
            let z = (0..<C).map { s * (u[r * C + $0] - ($0 == t ? m : 0)) }
            let top = z.max()!, sum = z.reduce(0) { $0 + exp($1 - top) }
            loss += (top + log(sum) - z[t]) * Double(config.ce) / Double(N)
            for c in 0..<C {
                let g = gs * (exp(z[c] - top) / sum - (c == t ? 1 : 0))
                for k in 0..<K { dvn[r * K + k] += g * Double(cb[c * K + k]) }
            }
        }
        let vnBuffer = FloatBuffer(vn), cbBuffer = FloatBuffer(cb), out = FloatBuffer(count: B * K)
        let codebook = Codebook(classes: C, bits: K, values: cb.map { $0 > 0 ? 1 : -1 })
        // The products as GEMMs (nil), and as lookups on the portable kernel and on this CPU's.
        let products: [SignPatterns?] = [nil, SignPatterns(codebook, level: 0)] + (oh_sign_level() > 0 ? [SignPatterns(codebook)] : [])
        for patterns in products {
          for block in [64, 1000, nil] as [Int?] {
            for threads in [1, 2] {
                BLAS.setThreads(threads)
                FusedHead.blockClassesOverride = block
                var workspace: FusedHeadWorkspace? = nil
                let result = targets.withUnsafeBufferPointer {
                    FusedHead.lossAndGradient(out.pointer, unitCodes: vnBuffer.pointer, codebookUnit: cbBuffer.pointer, patterns: patterns,
                                              targets: $0.baseAddress!, B: B, K: K, C: C, N: N, config: config, threads: threads, workspace: &workspace)
                }
                let what = "block \(block.map(String.init) ?? "default"), \(threads) threads, products \(patterns.map { "lookup level \($0.level)" } ?? "blas")"
                XCTAssertEqual(result.loss, loss, accuracy: 1e-5 * loss, what)
                XCTAssertEqual(result.correct, correct, what)
                var worst = 0.0
                for i in 0..<(B * K) { worst = max(worst, abs(Double(out[i]) - dvn[i])) }
                XCTAssertLessThan(worst, 5e-5 * gs, what)
            }
          }
        }
    }

    /// A training step of a linear head over 1000 classes: the fused path (with lookup and with
    /// BLAS products) and the materialised one give the same loss, accuracy and parameter
    /// gradients (float32 sums in other orders: 1e-4 of each gradient's largest magnitude), and the
    /// fused one never makes the (B, C) cosines.
    func testModelStepAgreesWithLogitsPath() {
        let B = 32, D = 40, K = 32, C = 1000
        var rng = Xoshiro256(seed: 8)
        let x = (0..<(B * D)).map { _ in Float(rng.gaussian()) }
        let targets = (0..<B).map { _ in Int32(rng.nextInt(below: C)) }
        let codebook = try! Codebook.generate(method: .B, classes: C, bits: K, seed: 3)
        let config = ModelConfig(inputDim: D, backbone: .linear, hidden: [], nbit: K, classes: C)
        var results: [(Double, Int, [Float])] = []
        for (fused, products) in [(true, HeadProducts.lookup), (true, .blas), (false, .blas)] {
            let model = HashModel(config: config, loss: LossConfig(), codebook: codebook, batchSize: B,
                                  head: fused ? .fused : .logits, products: products)
            XCTAssertEqual(model.head, fused ? .fused(products) : .logits)
            let step = x.withUnsafeBufferPointer { xs in
                targets.withUnsafeBufferPointer { model.trainStep(xs.baseAddress!, targets: .single($0.baseAddress!)) }
            }
            XCTAssertEqual(model.logitsBuffer == nil, fused)
            results.append((step.loss, step.correct, Array(UnsafeBufferPointer(start: model.gradients.pointer, count: model.parameterCount))))
        }
        let reference = results[2]
        let largest = reference.2.map(abs).max()!
        XCTAssertGreaterThan(largest, 0)
        for fused in results.prefix(2) {
            XCTAssertEqual(fused.0, reference.0, accuracy: 1e-5 * reference.0)
            XCTAssertEqual(fused.1, reference.1)
            for (a, b) in zip(fused.2, reference.2) { XCTAssertEqual(a, b, accuracy: 1e-4 * largest) }
        }
    }
}
