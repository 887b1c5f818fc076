// The backbone's layers (Layer.swift) against finite differences of L = sum(y * r), and the rules
// every layer keeps: backward leaves dy at zero, adds into dx and into the parameter gradients
// (or overwrites them), and the same rows give the same output in training and evaluation.
// Tolerances as GradientTests (central differences in Float32, h = 1e-2, 2e-3 of the gradient's
// scale); the pooling rules are checked against hand-computed values of PyTorch's definitions.

import CKernels
import XCTest
@testable import OrthoHashNumerics

final class LayerTests: XCTestCase {
    /// A layer bound at offset 0 of its own parameter buffer, for B rows.
    struct Bench {
        let layer: Layer
        let B: Int
        let x: FloatBuffer, parameters: FloatBuffer, r: FloatBuffer
        init(_ layer: Layer, B: Int, seed: UInt64, threads: LayerThreads = LayerThreads()) {
            self.layer = layer; self.B = B
            layer.bind(offset: 0, batch: B, threads: threads)
            x = randomBuffer(B * layer.input.count, seed: seed)
            parameters = FloatBuffer(count: max(1, layer.parameterCount))
            var rng = Xoshiro256(seed: seed, stream: 7)
            layer.initialise(parameters.pointer, &rng)
            r = randomBuffer(B * layer.output.count, seed: seed + 1)
        }

        /// L = sum(y * r) by the evaluation pass (the same function as training's, tested
        /// below): a training forward pass must be followed by its backward pass, which clears
        /// what the next one adds into (LinearLayer).
        func loss() -> Double {
            let y = layer.infer(x.pointer, B: B, parameters: parameters.pointer)
            return (0..<(B * layer.output.count)).reduce(0.0) { $0 + Double(y[$1]) * Double(r[$1]) }
        }

        /// (dx, parameter gradients) of one backward pass, checking the rules on the way.
        func backward(into gradients: FloatBuffer? = nil) -> (dx: [Float], dp: [Float]) {
            _ = layer.forward(x.pointer, B: B, parameters: parameters.pointer, randomness: nil)
            let dy = FloatBuffer(r.array)
            let dx = FloatBuffer(count: B * layer.input.count)
            let g = gradients ?? FloatBuffer(count: max(1, layer.parameterCount))
            var check = GradientFiniteness(gradients: g.pointer, provable: true, rows: B, ranks: 1)
            layer.backward(dy.pointer, x: x.pointer, inputBound: MagnitudeBound(of: x.pointer, count: x.count), dx: dx.pointer, B: B,
                           parameters: parameters.pointer, gradients: g.pointer, check: &check)
            XCTAssertTrue(dy.array.allSatisfy { $0 == 0 }, "\(type(of: layer)): backward must leave dy at zero")
            XCTAssertTrue(check.report.finite)
            return (dx.array, Array(g.array.prefix(layer.parameterCount)))
        }

        /// h = 1e-2 where the layer is smooth; with ReLU a smaller step, which crosses fewer kinks.
        func assertGradients(_ name: String, h: Float = 1e-2, tolerance: Double = 2e-3, file: StaticString = #filePath, line: UInt = #line) {
            let (dx, dp) = backward()
            assertGradient("\(name) dx", x.pointer, count: x.count, analytic: dx, h: h, tolerance: tolerance, loss: loss, file: file, line: line)
            if layer.parameterCount > 0 {
                assertGradient("\(name) dparameters", parameters.pointer, count: layer.parameterCount, analytic: dp, h: h, tolerance: tolerance,
                               loss: loss, file: file, line: line)
            }
        }
    }

    func conv(_ input: SampleShape, outputs: Int, kernel: Int, stride: Int = 1, padding: Int = 0, relu: Bool) -> Conv2dLayer {
        Conv2dLayer(name: "conv", input: input, outputs: outputs, kernel: kernel, stride: stride, padding: padding, relu: relu)
    }

    func testConv2dGradients() {
        let cases: [(SampleShape, Int, Int, Int, Int, Bool)] = [
            (SampleShape(channels: 2, height: 5, width: 6), 3, 3, 1, 1, false),    // same size, padding
            (SampleShape(channels: 3, height: 9, width: 7), 4, 3, 2, 1, false),    // stride 2
            (SampleShape(channels: 3, height: 15, width: 15), 2, 11, 4, 2, false), // AlexNet's first layer's kernel, stride, padding
            (SampleShape(channels: 1, height: 6, width: 6), 3, 5, 1, 2, true),     // the cnn's, with ReLU
            (SampleShape(channels: 2, height: 4, width: 5), 2, 2, 1, 0, false),    // no padding, even kernel
        ]
        for (i, (input, O, k, s, p, relu)) in cases.enumerated() {
            // The direct kernels (forward, weight gradient and, at stride 1, input gradient), forward's
            // columns gathered from the images by orthohash's GEMM, and im2col + OpenBLAS (the first
            // two where the CPU has AVX-512).
            for path in ConvPath.allCases {
                path.set()
                defer { ConvPath.reset() }
                let bench = Bench(conv(input, outputs: O, kernel: k, stride: s, padding: p, relu: relu), B: 3, seed: UInt64(10 + i))
                bench.assertGradients("conv \(input) -> \(O), \(k)x\(k)/\(s) pad \(p)\(relu ? " relu" : ""), \(path)",
                                      h: relu ? 1e-3 : 1e-2, tolerance: relu ? 5e-3 : 2e-3)
            }
        }
    }

    /// The forward pass against the definition, with chunks of 1, 2 and all images per GEMM
    /// (the batch folded into the GEMM must not change what each image gets).
    /// Also "same" padding with stride 1, whose im2col is a shifted copy of each plane, on planes
    /// smaller than the kernel too; and strides above 1 with kernels wider than the stride
    /// (AlexNet's 11/4), as wide, and narrower.
    func testConv2dAgainstDefinitionInChunks() {
        for (H, W, k, s, pad) in [(6, 5, 3, 2, 1), (6, 5, 3, 1, 1), (4, 7, 5, 1, 2), (2, 3, 5, 1, 2),
                                  (12, 13, 11, 4, 2), (13, 15, 5, 4, 2), (9, 11, 3, 3, 0), (7, 8, 2, 3, 1)] {
            let input = SampleShape(channels: 2, height: H, width: W)
            let O = 3, B = 5
            let reference: [Float] = {
                let bench = Bench(conv(input, outputs: O, kernel: k, stride: s, padding: pad, relu: false), B: B, seed: 3)
                let layer = bench.layer as! Conv2dLayer
                let w = bench.parameters, x = bench.x
                let Ho = layer.output.height, Wo = layer.output.width
                var out = [Float](repeating: 0, count: B * O * Ho * Wo)
                for n in 0..<B { for o in 0..<O { for oh in 0..<Ho { for ow in 0..<Wo {
                    var sum = Double(w[O * 2 * k * k + o])
                    for c in 0..<2 { for ki in 0..<k { for kj in 0..<k {
                        let ih = oh * s - pad + ki, iw = ow * s - pad + kj
                        guard ih >= 0, ih < input.height, iw >= 0, iw < input.width else { continue }
                        sum += Double(w[((o * 2 + c) * k + ki) * k + kj]) * Double(x[((n * 2 + c) * input.height + ih) * input.width + iw])
                    } } }
                    out[((n * O + o) * Ho + oh) * Wo + ow] = Float(sum)
                } } } }
                return out
            }()
            let perImage = 2 * k * k * ((H + 2 * pad - k) / s + 1) * ((W + 2 * pad - k) / s + 1)
            let padded = 2 * (H + 2 * pad) * (W + 2 * pad)
            for (budget, keep, path) in [(1, true, ConvPath.im2col), (2 * perImage + 1, true, .im2col), (2 * perImage + 1, false, .im2col),
                                         (1 << 20, true, .im2col), (1 << 20, false, .im2col), (1, false, .gathered), (2 * perImage + 1, false, .gathered),
                                         (1 << 20, false, .gathered), (1, false, .direct), (2 * padded + 1, false, .direct), (1 << 20, false, .direct)] {
                // 1 image, 2 images, all 5 per GEMM; forward's columns kept for backward, or made
                // again; or gathered from the images by orthohash's GEMM; or no columns, the direct
                // kernels (the last two where the CPU has AVX-512).
                Conv2dLayer.columnBudgetOverride = budget
                let keptBudget = Conv2dLayer.keptColumnsBudget
                Conv2dLayer.keptColumnsBudget = keep ? keptBudget : 0
                path.set()
                defer { Conv2dLayer.columnBudgetOverride = nil; Conv2dLayer.keptColumnsBudget = keptBudget; ConvPath.reset() }
                let bench = Bench(conv(input, outputs: O, kernel: k, stride: s, padding: pad, relu: false), B: B, seed: 3)
                let y = bench.layer.forward(bench.x.pointer, B: B, parameters: bench.parameters.pointer, randomness: nil)
                for i in 0..<reference.count { XCTAssertEqual(y[i], reference[i], accuracy: 1e-5, "budget \(budget), \(path), element \(i)") }
                bench.assertGradients("conv \(H)x\(W) \(k)/\(s) pad \(pad) with a budget of \(budget) floats, \(path)\(keep || path != .im2col ? "" : ", columns made again")")
            }
        }
    }

    /// Forward gathers its columns only where the gathered GEMM can take the layer: not for
    /// kernels wider than 32, nor for a chunk of images of 2^31 floats or more (32-bit offsets),
    /// which take im2col + OpenBLAS instead; and never where the CPU has no AVX-512.
    func testGatheredForwardOnlyWhereItFits() {
        let huge = conv(SampleShape(channels: 1, height: 65_536, width: 32_768), outputs: 2, kernel: 3, padding: 1, relu: false)
        XCTAssertFalse(huge.packsColumns, "2^31 input floats in one chunk")
        let wide = conv(SampleShape(channels: 1, height: 40, width: 40), outputs: 2, kernel: 33, relu: false)
        XCTAssertFalse(wide.packsColumns, "a 33 x 33 kernel")
        let usual = conv(SampleShape(channels: 64, height: 27, width: 27), outputs: 192, kernel: 5, padding: 2, relu: true)
        XCTAssertEqual(usual.packsColumns, oh_gemm_available() != 0, "AlexNet's conv2: gathered exactly where the CPU has AVX-512")
    }

    /// The direct kernels where they were measured faster, and where the layer allows them: forward
    /// wherever the CPU has AVX-512 and an image's padded planes take 32-bit offsets; the weight
    /// gradient for up to 128 outputs and 64 rows of C k k (AlexNet's conv1, the cnn's conv2, not
    /// AlexNet's conv2-5 nor the cnn's conv1); the input gradient at stride 1 for up to 64 input
    /// channels (AlexNet's conv2, the cnn's conv2, not AlexNet's conv3).
    func testDirectKernelsWhereMeasuredFaster() {
        let avx512 = oh_gemm_available() != 0
        let alexnet1 = conv(SampleShape(channels: 3, height: 224, width: 224), outputs: 64, kernel: 11, stride: 4, padding: 2, relu: true)
        let alexnet2 = conv(SampleShape(channels: 64, height: 27, width: 27), outputs: 192, kernel: 5, padding: 2, relu: true)
        let alexnet3 = conv(SampleShape(channels: 192, height: 13, width: 13), outputs: 384, kernel: 3, padding: 1, relu: true)
        let cnn1 = conv(SampleShape(channels: 1, height: 28, width: 28), outputs: 32, kernel: 5, padding: 2, relu: true)
        let cnn2 = conv(SampleShape(channels: 32, height: 14, width: 14), outputs: 64, kernel: 5, padding: 2, relu: true)
        for layer in [alexnet1, alexnet2, alexnet3, cnn1, cnn2] { XCTAssertEqual(layer.directForward, avx512) }
        XCTAssertEqual([alexnet1, alexnet2, alexnet3, cnn1, cnn2].map(\.directWeightGradient), [avx512, false, false, false, avx512])
        XCTAssertEqual([alexnet1, alexnet2, alexnet3, cnn1, cnn2].map(\.directInputGradient), [false, avx512, false, avx512, avx512])
        let huge = conv(SampleShape(channels: 1, height: 65_536, width: 16_384), outputs: 2, kernel: 3, padding: 1, relu: false)
        XCTAssertFalse(huge.directForward, "2^30 floats in one padded image: no 32-bit offsets for two")
        Conv2dLayer.directOverride = true
        defer { Conv2dLayer.directOverride = nil }
        XCTAssertEqual(alexnet3.directWeightGradient, avx512, "forced")
        XCTAssertFalse(alexnet1.directInputGradient, "stride 4: never")
        XCTAssertFalse(conv(SampleShape(channels: 2, height: 9, width: 9), outputs: 3, kernel: 3, padding: 3, relu: false).directInputGradient,
                       "padding over k - 1: never")
    }

    /// The passes split over threads (and the GEMMs over the same threads) give what one thread
    /// gives: each element is computed the same way (the GEMMs' parts may add in another order).
    func testThreadsGiveTheSameResults() {
        for layer in [{ self.conv(SampleShape(channels: 3, height: 9, width: 8), outputs: 5, kernel: 3, stride: 2, padding: 1, relu: true) as Layer },
                      // 50 rows of columns in parts of 16, 17 and 17: parts that start and end inside a kernel row
                      { self.conv(SampleShape(channels: 2, height: 11, width: 13), outputs: 4, kernel: 5, stride: 4, padding: 2, relu: true) },
                      // stride 1, "same": forward gathers its columns (orthohash's GEMM, where the CPU has it), in parts of whole panels
                      { self.conv(SampleShape(channels: 3, height: 7, width: 9), outputs: 10, kernel: 3, stride: 1, padding: 1, relu: true) },
                      { MaxPool2dLayer(input: SampleShape(channels: 3, height: 9, width: 8), kernel: 3, stride: 2) },
                      { LinearLayer(name: "fc", inputs: 30, outputs: 20) }] {
            // Each convolution by the direct kernels everywhere (where the CPU has AVX-512), and by
            // the measured choice.
            for direct in [true, nil] as [Bool?] {
            var results: [([Float], [Float], [Float])] = []
            for threads in [LayerThreads(), LayerThreads(count: 3, splitGEMMs: true)] {
                Conv2dLayer.columnBudgetOverride = 3 * 27 * 20    // chunks of 3 images of 7; 27 rows, 5 and 3 channels in unequal parts
                Conv2dLayer.directOverride = direct
                defer { Conv2dLayer.columnBudgetOverride = nil; Conv2dLayer.directOverride = nil }
                let bench = Bench(layer(), B: 7, seed: 60, threads: threads)
                let y = bench.layer.infer(bench.x.pointer, B: 7, parameters: bench.parameters.pointer)
                let out = Array(UnsafeBufferPointer(start: y, count: 7 * bench.layer.output.count))
                let (dx, dp) = bench.backward()
                results.append((out, dx, dp))
            }
            for (a, b) in zip([results[0].0, results[0].1, results[0].2], [results[1].0, results[1].1, results[1].2]) {
                XCTAssertEqual(a.count, b.count)
                for i in 0..<a.count { XCTAssertEqual(a[i], b[i], accuracy: 1e-5 * max(1, abs(a[i]))) }
            }
            }
        }
    }

    /// Backward adds into the parameter gradients: a second pass doubles them, and a pass into
    /// cleared gradients gives the first pass's again.
    func testConv2dAccumulates() {
        let bench = Bench(conv(SampleShape(channels: 2, height: 5, width: 5), outputs: 3, kernel: 3, padding: 1, relu: true), B: 2, seed: 4)
        let g = FloatBuffer(count: bench.layer.parameterCount)
        let once = bench.backward(into: g).dp
        let twice = bench.backward(into: g).dp
        for i in 0..<once.count { XCTAssertEqual(twice[i], 2 * once[i], accuracy: 1e-5 * max(1, abs(once[i]))) }
        for i in 0..<g.count { g[i] = .nan }
        g.zero()
        XCTAssertEqual(bench.backward(into: g).dp, once)
    }

    func testMaxPoolGradients() {
        for (i, (input, k, s, p)) in [(SampleShape(channels: 2, height: 6, width: 6), 2, 2, 0),     // the cnn's
                                      (SampleShape(channels: 2, height: 7, width: 9), 3, 2, 0),     // AlexNet's overlapping 3/2
                                      (SampleShape(channels: 1, height: 5, width: 5), 3, 2, 1)].enumerated() {
            Bench(MaxPool2dLayer(input: input, kernel: k, stride: s, padding: p), B: 2, seed: UInt64(30 + i))
                .assertGradients("max pool \(input) \(k)/\(s) pad \(p)")
        }
    }

    /// PyTorch's rule: the first largest value in row-major order takes the gradient (ties after
    /// a ReLU are common), NaN propagates (the window's last NaN), and overlapping windows add
    /// their gradients.
    func testMaxPoolTiesAndOverlap() {
        let layer = MaxPool2dLayer(input: SampleShape(channels: 1, height: 3, width: 5), kernel: 3, stride: 2)
        layer.bind(offset: 0, batch: 1, threads: LayerThreads())
        let x = FloatBuffer([0, 0, 2, 0, 0,
                             0, 0, 0, 0, 0,
                             0, 0, 0, 0, .nan])
        let none = FloatBuffer(count: 1)
        let y = layer.forward(x.pointer, B: 1, parameters: none.pointer, randomness: nil)
        XCTAssertEqual(y[0], 2)
        XCTAssertTrue(y[1].isNaN)
        let dy = FloatBuffer([1, 10]), dx = FloatBuffer(count: 15)
        var check = GradientFiniteness(gradients: none.pointer, provable: true, rows: 1, ranks: 1)
        layer.backward(dy.pointer, x: x.pointer, inputBound: nil, dx: dx.pointer, B: 1, parameters: none.pointer,
                       gradients: none.pointer, check: &check)
        XCTAssertEqual(dx.array, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10])
        // All zeros: each window's first element.
        let zeros = FloatBuffer(count: 15)
        _ = layer.forward(zeros.pointer, B: 1, parameters: none.pointer, randomness: nil)
        let dy2 = FloatBuffer([1, 10]), dx2 = FloatBuffer(count: 15)
        layer.backward(dy2.pointer, x: zeros.pointer, inputBound: nil, dx: dx2.pointer, B: 1, parameters: none.pointer,
                       gradients: none.pointer, check: &check)
        XCTAssertEqual(dx2.array, [1, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        // The largest value in the column both windows share: both gradients add there.
        zeros[7] = 5
        _ = layer.forward(zeros.pointer, B: 1, parameters: none.pointer, randomness: nil)
        let dy3 = FloatBuffer([1, 10]), dx3 = FloatBuffer(count: 15)
        layer.backward(dy3.pointer, x: zeros.pointer, inputBound: nil, dx: dx3.pointer, B: 1, parameters: none.pointer,
                       gradients: none.pointer, check: &check)
        XCTAssertEqual(dx3[7], 11)
        XCTAssertEqual(dx3.array.reduce(0, +), 11)
    }

    /// Max pooling against PyTorch's definition on values with many ties (small integers), for
    /// the 2 x 2 / 2 kernel (a path of its own) and others, with NaN in some windows; rows of
    /// more than 256 outputs are pooled in pieces.
    func testMaxPoolAgainstDefinition() {
        // 3/2 without padding (AlexNet's) has its own AVX-512 path: 16 outputs at a time, so rows
        // of more than 16 outputs, a last group of a few, and windows of -inf only.
        for (k, s, pad, H, W) in [(2, 2, 0, 7, 6), (3, 2, 0, 7, 6), (3, 2, 1, 7, 6), (2, 1, 0, 7, 6), (3, 1, 1, 3, 600),
                                  (3, 2, 0, 5, 55), (3, 2, 0, 9, 40), (3, 2, 0, 3, 9)] {
            let input = SampleShape(channels: 2, height: H, width: W)
            let layer = MaxPool2dLayer(input: input, kernel: k, stride: s, padding: pad)
            layer.bind(offset: 0, batch: 2, threads: LayerThreads())
            var rng = Xoshiro256(seed: 70)
            let x = FloatBuffer((0..<(2 * input.count)).map { _ in Float(rng.nextInt(below: 3)) })
            x[5] = .nan; x[40] = .nan; x[41] = .nan    // two NaNs in some windows: the last is taken
            for ih in 0..<min(3, H) { for iw in 0..<min(3, W) { x[H * W + ih * W + iw] = -.infinity } }   // windows of -inf only
            let none = FloatBuffer(count: 1)
            let y = layer.forward(x.pointer, B: 2, parameters: none.pointer, randomness: nil)
            let (Ho, Wo) = (layer.output.height, layer.output.width)
            let dy = FloatBuffer((0..<(2 * layer.output.count)).map { Float($0 + 1) }), dx = FloatBuffer(count: x.count)
            var expected = [Float](repeating: 0, count: x.count)
            for plane in 0..<4 { for oh in 0..<Ho { for ow in 0..<Wo {
                var best = -Float.infinity, at = -1
                for ih in max(0, oh * s - pad)..<min(input.height, oh * s - pad + k) {
                    for iw in max(0, ow * s - pad)..<min(input.width, ow * s - pad + k) {
                        let i = plane * H * W + ih * W + iw, v = x[i]
                        // PyTorch's CPU kernel: `if ((val > maxval) || std::isnan(val))`, from -inf.
                        if at < 0 { at = i }
                        if v > best || v.isNaN { best = v; at = i }
                    }
                }
                let o = (plane * Ho + oh) * Wo + ow
                XCTAssertTrue(y[o] == best || (y[o].isNaN && best.isNaN), "\(k)/\(s) pad \(pad): output \(o)")
                expected[at] += dy[o]
            } } }
            var check = GradientFiniteness(gradients: none.pointer, provable: true, rows: 2, ranks: 1)
            layer.backward(dy.pointer, x: x.pointer, inputBound: nil, dx: dx.pointer, B: 2, parameters: none.pointer,
                           gradients: none.pointer, check: &check)
            XCTAssertEqual(dx.array, expected, "\(k)/\(s) pad \(pad): the gradient goes to the first largest value")
        }
    }

    func testAdaptiveAveragePool() {
        // PyTorch's bins for 5 -> 3: [0, 2), [1, 4), [3, 5); for 7 -> 3: [0, 3), [2, 5), [4, 7).
        let layer = AdaptiveAvgPool2dLayer(input: SampleShape(channels: 1, height: 5, width: 7), height: 3, width: 3)
        layer.bind(offset: 0, batch: 1, threads: LayerThreads())
        let x = FloatBuffer((0..<35).map { Float($0) })
        let none = FloatBuffer(count: 1)
        let y = layer.forward(x.pointer, B: 1, parameters: none.pointer, randomness: nil)
        func mean(_ rows: Range<Int>, _ cols: Range<Int>) -> Float {
            var s: Float = 0
            for r in rows { for c in cols { s += Float(r * 7 + c) } }
            return s / Float(rows.count * cols.count)
        }
        let rows = [0..<2, 1..<4, 3..<5], cols = [0..<3, 2..<5, 4..<7]
        for i in 0..<3 { for j in 0..<3 { XCTAssertEqual(y[i * 3 + j], mean(rows[i], cols[j]), accuracy: 1e-5) } }
        Bench(AdaptiveAvgPool2dLayer(input: SampleShape(channels: 2, height: 5, width: 7), height: 3, width: 3), B: 2, seed: 40)
            .assertGradients("adaptive average pool")
        // Identity when the sizes match (AlexNet's 6 x 6 at 224 x 224).
        let same = AdaptiveAvgPool2dLayer(input: SampleShape(channels: 2, height: 3, width: 3), height: 3, width: 3)
        same.bind(offset: 0, batch: 1, threads: LayerThreads())
        let z = randomBuffer(18, seed: 41)
        let out = same.forward(z.pointer, B: 1, parameters: none.pointer, randomness: nil)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: out, count: 18)), z.array)
    }

    func testLinearLayerGradients() {
        Bench(LinearLayer(name: "fc", inputs: 7, outputs: 5), B: 4, seed: 50).assertGradients("linear + relu", h: 1e-3, tolerance: 5e-3)
    }

    /// Evaluation's forward gives the training forward's output, in buffers of its own.
    func testInferEqualsForward() {
        let config = ModelConfig(inputDim: 64, backbone: .cnn, hidden: [3, 4, 8], nbit: 6, classes: 3,
                                 inputShape: SampleShape(channels: 1, height: 8, width: 8))
        let layers = config.backboneLayers()
        let layout = ParameterLayout(config)
        let p = FloatBuffer(count: layout.count)
        var rng = Xoshiro256(seed: 1)
        for layer in layers {
            layer.bind(offset: layer.tensors.first.map { layout[$0.name].offset } ?? 0, batch: 4, threads: LayerThreads())
            layer.initialise(p.pointer, &rng)
        }
        let x = randomBuffer(4 * 64, seed: 2)
        var train = UnsafePointer(x.pointer), eval = UnsafePointer(x.pointer)
        for layer in layers {
            train = layer.forward(train, B: 4, parameters: p.pointer, randomness: nil)
            eval = layer.infer(eval, B: 4, parameters: p.pointer)
            XCTAssertNotEqual(train, eval)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: train, count: 4 * layer.output.count)),
                           Array(UnsafeBufferPointer(start: eval, count: 4 * layer.output.count)))
        }
        XCTAssertEqual(layout.tensors.map(\.name), ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
                                                   "fc.0.weight", "fc.0.bias", "hash_fc.0.weight", "hash_fc.1.weight", "hash_fc.1.bias"])
        XCTAssertEqual(layout["fc.0.weight"].shape, [8, 4 * 2 * 2])
        XCTAssertEqual(config.featureDim, 8)
    }

    /// The whole model with the cnn backbone against finite differences of its own loss, and the
    /// buckets it hands over: contiguous, from the hash layer down, covering every parameter.
    func testWholeModelWithConvolutions() {
        let config = ModelConfig(inputDim: 2 * 8 * 8, backbone: .cnn, hidden: [3, 4, 6], nbit: 6, classes: 4,
                                 inputShape: SampleShape(channels: 2, height: 8, width: 8))
        var loss = LossConfig()
        loss.scale = 3
        let B = 6
        let model = HashModel(config: config, loss: loss, codebook: try! Codebook.generate(method: .B, classes: 4, bits: 6, seed: 3), batchSize: B)
        model.resetParameters(seed: 5)
        for i in model.hashWeight..<(model.hashWeight + 6 * config.featureDim) { model.parameters[i] *= 30 }
        let x = randomBuffer(B * config.inputDim, seed: 16)
        let labels: [Int32] = [0, 1, 2, 3, 0, 1]
        func run() -> Double { labels.withUnsafeBufferPointer { model.trainStep(x.pointer, targets: .single($0.baseAddress!)).loss } }
        model.store.clearGradients()
        var buckets: [Range<Int>] = []
        _ = labels.withUnsafeBufferPointer { model.forward(x.pointer, targets: .single($0.baseAddress!)) }
        let report = model.backward(x.pointer, bucketReady: { buckets.append($0) })
        XCTAssertTrue(report.finite)
        let layout = model.store.layout
        XCTAssertEqual(buckets, [layout["hash_fc.0.weight"].offset..<layout.count,
                                 layout["fc.0.weight"].offset..<layout["hash_fc.0.weight"].offset,
                                 layout["features.3.weight"].offset..<layout["fc.0.weight"].offset,
                                 0..<layout["features.3.weight"].offset])
        let analytic = model.gradients.array
        model.store.clearGradients()
        let first = run()
        model.store.clearGradients()
        XCTAssertEqual(run(), first, "the same batch gives the same loss")
        XCTAssertEqual(model.gradients.array, analytic, "and the same gradients")
        assertGradient("model (cnn)", model.parameters.pointer, count: model.parameterCount, analytic: analytic, h: 2e-4, tolerance: 5e-3,
                       loss: { model.store.clearGradients(); return run() })
    }

    /// The passes that read a convolution's products and columns last leave zeros for the next
    /// GEMM to add into; buffers other passes filled are cleared before it. Steps repeated with
    /// evaluations of fewer rows between them (a shorter last chunk), in chunks of 4 and 2 images
    /// or all 6, with forward's columns kept or made again, give bitwise the first step's loss
    /// and gradients.
    func testConvolutionBuffersClearedBetweenPasses() {
        let config = ModelConfig(inputDim: 2 * 8 * 8, backbone: .cnn, hidden: [3, 4, 6], nbit: 6, classes: 4,
                                 inputShape: SampleShape(channels: 2, height: 8, width: 8))
        let B = 6
        let x = randomBuffer(B * config.inputDim, seed: 17)
        let labels: [Int32] = [0, 1, 2, 3, 0, 1]
        for (budget, keep, path) in [(nil, true, ConvPath.im2col), (nil, false, .im2col), (4 * 50 * 64, true, .im2col), (4 * 50 * 64, false, .im2col),
                                     (nil, false, .gathered), (4 * 50 * 64, false, .gathered), (nil, false, .direct), (4 * 100, false, .direct)]
                as [(Int?, Bool, ConvPath)] {
            Conv2dLayer.columnBudgetOverride = budget
            let keptBudget = Conv2dLayer.keptColumnsBudget
            Conv2dLayer.keptColumnsBudget = keep ? keptBudget : 0
            path.set()
            defer { Conv2dLayer.columnBudgetOverride = nil; Conv2dLayer.keptColumnsBudget = keptBudget; ConvPath.reset() }
            let model = HashModel(config: config, loss: LossConfig(), codebook: try! Codebook.generate(method: .B, classes: 4, bits: 6, seed: 3),
                                  batchSize: B)
            model.resetParameters(seed: 5)
            func step() -> (Double, [Float]) {
                model.store.clearGradients()
                let loss = labels.withUnsafeBufferPointer { model.trainStep(x.pointer, targets: .single($0.baseAddress!)).loss }
                return (loss, model.gradients.array)
            }
            let first = step()
            let what = "budget \(budget.map(String.init) ?? "default"), \(path)\(path != .im2col ? "" : keep ? ", columns kept" : ", columns made again")"
            for rows in [5, 1, 6] {
                let codes = FloatBuffer(count: rows * 6)
                model.encode(x.pointer, rows: rows, into: codes.pointer)
                let again = step()
                XCTAssertEqual(again.0, first.0, "\(what), after encoding \(rows) rows")
                XCTAssertEqual(again.1, first.1, "\(what), after encoding \(rows) rows")
            }
            XCTAssertEqual(step().1, first.1, what)
        }
    }

    /// Dropout's masks depend on (seed, step, layer, global row) only: rows split between two
    /// "ranks" get the masks one process draws; about half the values are kept, scaled by 2;
    /// backward applies the forward pass's mask; evaluation is the identity.
    func testDropoutMasks() {
        let F = 300, B = 8
        let x = randomBuffer(B * F, seed: 80)
        let whole = DropoutLayer(input: SampleShape(features: F), index: 3)
        whole.bind(offset: 0, batch: B, threads: LayerThreads(count: 3))
        let none = FloatBuffer(count: 1)
        let step = StepRandomness(seed: 7, step: 12, firstRow: 0)
        let y = Array(UnsafeBufferPointer(start: whole.forward(x.pointer, B: B, parameters: none.pointer, randomness: step), count: B * F))
        var split: [Float] = []
        for rank in 0..<2 {
            let half = DropoutLayer(input: SampleShape(features: F), index: 3)
            half.bind(offset: 0, batch: B / 2, threads: LayerThreads())
            let out = half.forward(x.pointer + rank * (B / 2) * F, B: B / 2, parameters: none.pointer,
                                   randomness: StepRandomness(seed: 7, step: 12, firstRow: rank * B / 2))
            split += Array(UnsafeBufferPointer(start: out, count: B / 2 * F))
        }
        XCTAssertEqual(y, split, "the masks of rows split over ranks are the masks of one process")
        let kept = (0..<(B * F)).filter { y[$0] != 0 }
        XCTAssertEqual(Double(kept.count), Double(B * F) / 2, accuracy: 3 * (Double(B * F) / 4).squareRoot())
        for i in kept { XCTAssertEqual(y[i], 2 * x[i]) }
        // Another step, seed or layer draws other masks.
        for other in [StepRandomness(seed: 7, step: 13, firstRow: 0), StepRandomness(seed: 8, step: 12, firstRow: 0)] {
            let z = Array(UnsafeBufferPointer(start: whole.forward(x.pointer, B: B, parameters: none.pointer, randomness: other), count: B * F))
            XCTAssertNotEqual(z.map { $0 == 0 }, y.map { $0 == 0 })
        }
        let layer5 = DropoutLayer(input: SampleShape(features: F), index: 5)
        layer5.bind(offset: 0, batch: B, threads: LayerThreads())
        let w = Array(UnsafeBufferPointer(start: layer5.forward(x.pointer, B: B, parameters: none.pointer, randomness: step), count: B * F))
        XCTAssertNotEqual(w.map { $0 == 0 }, y.map { $0 == 0 })
        // Backward: the gradient of sum(y r) is r times the mask's scale where kept.
        _ = whole.forward(x.pointer, B: B, parameters: none.pointer, randomness: step)
        let r = randomBuffer(B * F, seed: 81), dy = FloatBuffer(r.array), dx = FloatBuffer(count: B * F)
        var check = GradientFiniteness(gradients: none.pointer, provable: true, rows: B, ranks: 1)
        whole.backward(dy.pointer, x: x.pointer, inputBound: nil, dx: dx.pointer, B: B, parameters: none.pointer,
                       gradients: none.pointer, check: &check)
        for i in 0..<(B * F) { XCTAssertEqual(dx[i], y[i] == 0 ? 0 : 2 * r[i]) }
        XCTAssertTrue(dy.array.allSatisfy { $0 == 0 })
        XCTAssertEqual(whole.infer(x.pointer, B: B, parameters: none.pointer), UnsafePointer(x.pointer))
    }

    /// AlexNet and VGG-16 in torchvision's layout: names, shapes and counts (57,003,840 and
    /// 134,260,544 parameters without the ImageNet classifier), and the layers' output shapes.
    func testTorchvisionLayouts() {
        let image = SampleShape(channels: 3, height: 224, width: 224)
        let alexnet = ModelConfig(inputDim: image.count, backbone: .alexnet, hidden: [], nbit: 64, classes: 100, inputShape: image)
        let a = ParameterLayout(alexnet)
        XCTAssertEqual(a.tensors.map(\.name), ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
                                               "features.6.weight", "features.6.bias", "features.8.weight", "features.8.bias",
                                               "features.10.weight", "features.10.bias", "classifier.1.weight", "classifier.1.bias",
                                               "classifier.4.weight", "classifier.4.bias", "hash_fc.0.weight", "hash_fc.1.weight", "hash_fc.1.bias"])
        XCTAssertEqual(a["features.0.weight"].shape, [64, 3, 11, 11])
        XCTAssertEqual(a["features.3.weight"].shape, [192, 64, 5, 5])
        XCTAssertEqual(a["classifier.1.weight"].shape, [4096, 9216])
        XCTAssertEqual(a.backboneCount, 57_003_840)
        XCTAssertEqual(a.count, 57_003_840 + 64 * 4096 + 128)
        let layers = alexnet.backboneLayers()
        XCTAssertEqual(layers.map { $0.output.description }, ["64x55x55", "64x27x27", "192x27x27", "192x13x13", "384x13x13", "256x13x13",
                                                              "256x13x13", "256x6x6", "9216", "4096", "4096", "4096"])
        XCTAssertFalse(layers.contains { $0 is AdaptiveAvgPool2dLayer }, "6 x 6 already: the average pool is the identity and left out")
        XCTAssertEqual(layers.filter { $0 is DropoutLayer }.count, 2)
        // 710,092,480 multiply-adds in the backbone (torchvision's 0.71 GMACs), the hash layer's and
        // the cosines' besides; training: three times forward but the first layer's input gradient.
        let macs = 710_092_480.0 + 4096 * 64 + 64 * 100
        XCTAssertEqual(alexnet.flopsPerRow.forward, 2 * macs)
        XCTAssertEqual(alexnet.flopsPerRow.training, 6 * macs - 2 * 64 * 55 * 55 * 363)
        let vgg = ModelConfig(inputDim: image.count, backbone: .vgg16, hidden: [], nbit: 64, classes: 100, inputShape: image)
        let v = ParameterLayout(vgg)
        XCTAssertEqual(v.backboneCount, 134_260_544)
        XCTAssertEqual(v.tensors.filter { $0.name.hasPrefix("features.") }.map(\.name).filter { $0.hasSuffix(".weight") },
                       [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28].map { "features.\($0).weight" })
        XCTAssertEqual(v["classifier.0.weight"].shape, [4096, 25088])
        XCTAssertEqual(v["classifier.3.weight"].shape, [4096, 4096])
        // A smaller image: AlexNet's average pool makes its 6 x 6 from what the features leave.
        let small = SampleShape(channels: 3, height: 63, width: 71)
        let smallLayers = ModelConfig(inputDim: small.count, backbone: .alexnet, hidden: [], nbit: 8, classes: 4, inputShape: small).backboneLayers()
        XCTAssertTrue(smallLayers.contains { $0 is AdaptiveAvgPool2dLayer })
        XCTAssertEqual(ParameterLayout(ModelConfig(inputDim: small.count, backbone: .alexnet, hidden: [], nbit: 8, classes: 4, inputShape: small)).backboneCount,
                       57_003_840)
    }

    /// AlexNet on small images trains: a few steps of Adam on one batch lower its loss, every
    /// gradient finite, the buckets cover the parameters; dropout's masks follow the step.
    func testAlexNetTrainsOnSmallImages() {
        let image = SampleShape(channels: 3, height: 63, width: 63)
        let config = ModelConfig(inputDim: image.count, backbone: .alexnet, hidden: [], nbit: 16, classes: 4, inputShape: image)
        let B = 4
        var opt = OptimizerConfig()
        opt.lr = 1e-3
        let store = ParameterStore(layout: ParameterLayout(config), optimizer: .adam)
        let model = HashModel(config: config, loss: LossConfig(), codebook: try! Codebook.generate(method: .B, classes: 4, bits: 16, seed: 1),
                              batchSize: B, store: store, threads: 2)
        model.resetParameters(seed: 3)
        let x = randomBuffer(B * image.count, seed: 90)
        let labels: [Int32] = [0, 1, 2, 3]
        let optimizer = Optimizer(config: opt)
        var losses: [Double] = []
        for step in 1...4 {
            var covered = 0
            let r = labels.withUnsafeBufferPointer { t -> (Double, GradientReport) in
                let (loss, _) = model.forward(x.pointer, targets: .single(t.baseAddress!), randomness: StepRandomness(seed: 0, step: step, firstRow: 0))
                return (loss, model.backward(x.pointer, bucketReady: { covered += $0.count }))
            }
            XCTAssertTrue(r.1.finite)
            XCTAssertEqual(covered, store.count)
            losses.append(r.0)
            store.update(with: optimizer, lr: opt.lr)
        }
        XCTAssertLessThan(losses.last!, losses.first!, "\(losses)")
    }
}

/// A convolution's way through its GEMMs, as tests force it: im2col + OpenBLAS; forward's columns
/// gathered from the images by orthohash's GEMM; the direct kernels, no columns (the last two
/// where the CPU has AVX-512; elsewhere they fall back to the first).
enum ConvPath: CaseIterable, CustomStringConvertible {
    case im2col, gathered, direct

    func set() {
        Conv2dLayer.directOverride = self == .direct
        Conv2dLayer.packColumnsOverride = self == .gathered
    }

    static func reset() {
        Conv2dLayer.directOverride = nil
        Conv2dLayer.packColumnsOverride = nil
    }

    var description: String {
        switch self {
        case .im2col: "im2col + OpenBLAS"
        case .gathered: "columns gathered"
        case .direct: "direct kernels"
        }
    }
}
