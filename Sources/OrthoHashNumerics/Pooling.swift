// Pooling over NCHW rows: MaxPool2d (kernel, stride, padding; AlexNet's overlapping 3/2) and
// AdaptiveAvgPool2d (PyTorch's bins). No parameters; each keeps its output for the layer above,
// and max pooling the position of each maximum for its backward pass.
//
// Dimensions: B = rows, C = channels, H x W input, Ho x Wo output, P = Ho Wo.

import CKernels

/// `y = max over each window` (PyTorch's MaxPool2d with ceil_mode false: the first largest value
/// in row-major order is the one whose gradient flows; NaN propagates).
final class MaxPool2dLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])] = []
    let kernel: Int, stride: Int, padding: Int
    private var outputs = FloatBuffer(count: 0)          // (B, C, P)
    private var evaluation = FloatBuffer(count: 0)       // (B, C, P) for `infer`
    private var argmax = UnsafeMutablePointer<Int32>.allocate(capacity: 0)   // (B, C, P) index within the (H, W) plane
    private var evaluationArgmax = UnsafeMutablePointer<Int32>.allocate(capacity: 0)
    private(set) var outputBound: MagnitudeBound? = nil
    private var threads = LayerThreads()

    init(input: SampleShape, kernel k: Int, stride: Int? = nil, padding: Int = 0) {
        let s = stride ?? k
        precondition(k >= 1 && s >= 1 && padding >= 0 && 2 * padding <= k, "max pool: kernel \(k), stride \(s), padding \(padding)")
        let Ho = (input.height + 2 * padding - k) / s + 1, Wo = (input.width + 2 * padding - k) / s + 1
        precondition(Ho >= 1 && Wo >= 1, "max pool: a \(k)x\(k) window does not fit \(input)")
        self.input = input
        output = SampleShape(channels: input.channels, height: Ho, width: Wo)
        kernel = k; self.stride = s; self.padding = padding
    }
    deinit { argmax.deallocate(); evaluationArgmax.deallocate() }

    func workspaceFloats(batch B: Int) -> Int? { checkedProduct([B, output.count, 4]) }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        outputs = FloatBuffer(count: B * output.count)
        evaluation = FloatBuffer(count: B * output.count)
        argmax.deallocate(); evaluationArgmax.deallocate()
        argmax = .allocate(capacity: B * output.count)
        evaluationArgmax = .allocate(capacity: B * output.count)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {}

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        outputBound = MagnitudeBound(bits: pool(x, B: B, into: outputs.pointer, argmax: argmax))
        return UnsafePointer(outputs.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> {
        pool(x, B: B, into: evaluation.pointer, argmax: evaluationArgmax)
        return UnsafePointer(evaluation.pointer)
    }

    @discardableResult
    private func pool(_ x: UnsafePointer<Float>, B: Int, into y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) -> UInt32 {
        let (H, W, Ho, Wo, k, s, pad) = (input.height, input.width, output.height, output.width, kernel, stride, padding)
        return forEachPart(B * input.channels, threads: threads.count) { r in
            oh_maxpool_forward(y + r.lowerBound * Ho * Wo, argmax + r.lowerBound * Ho * Wo, x + r.lowerBound * H * W, r.count, H, W, k, s, pad, Ho, Wo)
        }
    }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness) {
        guard let dx else { return dy.update(repeating: 0, count: B * output.count) }
        let HW = input.height * input.width, P = output.height * output.width, argmax = argmax
        forEachPart(B * input.channels, threads: threads.count) { r in
            oh_maxpool_backward_clear(dx + r.lowerBound * HW, dy + r.lowerBound * P, argmax + r.lowerBound * P, r.count, HW, P)
            return 0
        }
    }
}

/// `y` = the mean of each of PyTorch's adaptive bins: output (i, j) averages input rows
/// [floor(i H / Ho), ceil((i + 1) H / Ho)) and the columns likewise (AlexNet's 6 x 6 from any
/// input size).
final class AdaptiveAvgPool2dLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])] = []
    private var outputs = FloatBuffer(count: 0)          // (B, C, P)
    private var evaluation = FloatBuffer(count: 0)
    private(set) var outputBound: MagnitudeBound? = nil
    private var threads = LayerThreads()

    init(input: SampleShape, height: Int, width: Int) {
        precondition(height >= 1 && width >= 1, "adaptive average pool to \(height)x\(width)")
        self.input = input
        output = SampleShape(channels: input.channels, height: height, width: width)
    }

    func workspaceFloats(batch B: Int) -> Int? { checkedProduct([B, output.count, 2]) }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        outputs = FloatBuffer(count: B * output.count)
        evaluation = FloatBuffer(count: B * output.count)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {}

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        oh_adaptive_avgpool_forward(outputs.pointer, x, B * input.channels, input.height, input.width, output.height, output.width)
        outputBound = nil     // not measured: the layer above reads its gradients to check them
        return UnsafePointer(outputs.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> {
        oh_adaptive_avgpool_forward(evaluation.pointer, x, B * input.channels, input.height, input.width, output.height, output.width)
        return UnsafePointer(evaluation.pointer)
    }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness) {
        guard let dx else { return dy.update(repeating: 0, count: B * output.count) }
        oh_adaptive_avgpool_backward_clear(dx, dy, B * input.channels, input.height, input.width, output.height, output.width)
    }
}
