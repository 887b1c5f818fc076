// Linear layers (PyTorch layout: weight (O, I)), with and without bias and ReLU: each forward
// beside its backward. Backward adds into the input gradient `dx` and into the parameter
// gradients.
//
// The training step spends no pass on clearing buffers: every GEMM of the step adds into a
// buffer that holds zeros (beta = 1), because the last pass that reads each workspace buffer in
// a step clears it (ReLU backward clears the activations, the bias sum clears dy), and the
// optimizer clears the gradients as it reads them (ParameterStore).
//
// Dimensions: B = rows, I = input features of a layer, O = its outputs.

import CKernels

/// `y = x W^T + b`.
func linearForward(
    _ y: UnsafeMutablePointer<Float>,        // (B, O)
    _ x: UnsafePointer<Float>,               // (B, I)
    _ weight: UnsafePointer<Float>,          // (O, I)
    _ bias: UnsafePointer<Float>?,           // (O)
    B: Int, I: Int, O: Int, split: Int = 1
) {
    if let bias {
        for r in 0..<B { (y + r * O).update(from: bias, count: O) }
    }
    BLAS.gemm(transA: false, transB: true, m: B, n: O, k: I, x, lda: I, weight, ldb: I,
              beta: bias == nil ? 0 : 1, y, ldc: O, split: split)
}

/// `y = relu(x W^T + b)`: the GEMM adds into `y`, which holds zeros (`yIsClear`, the training
/// step's activations) or is cleared first; then bias and ReLU in one pass over y. Returns the
/// largest |y|.
@discardableResult
func linearReluForward(
    _ y: UnsafeMutablePointer<Float>,        // (B, O)
    _ x: UnsafePointer<Float>,               // (B, I)
    _ weight: UnsafePointer<Float>,          // (O, I)
    _ bias: UnsafePointer<Float>,            // (O)
    B: Int, I: Int, O: Int, yIsClear: Bool = false, split: Int = 1
) -> MagnitudeBound {
    BLAS.gemm(transA: false, transB: true, m: B, n: O, k: I, x, lda: I, weight, ldb: I, beta: yIsClear ? 1 : 0, y, ldc: O, split: split)
    return MagnitudeBound(bits: oh_bias_relu(y, bias, B, O))
}

/// ```
/// dW (+)= dy^T x,   db (+)= sum_rows dy,   dx += dy W   (skipped when dx is nil: the first layer)
/// ```
/// With a bias, the bias sum is the last read of `dy` in the step and sets it to 0.
func linearBackward(
    _ dx: UnsafeMutablePointer<Float>?,      // (B, I) adds into it
    _ dWeight: UnsafeMutablePointer<Float>,  // (O, I)
    _ dBias: UnsafeMutablePointer<Float>?,   // (O)
    _ dy: UnsafeMutablePointer<Float>,       // (B, O) cleared when there is a bias
    _ x: UnsafePointer<Float>,               // (B, I)
    _ weight: UnsafePointer<Float>,          // (O, I)
    B: Int, I: Int, O: Int, split: Int = 1
) {
    BLAS.gemm(transA: true, transB: false, m: O, n: I, k: B, dy, lda: O, x, ldb: I, beta: 1, dWeight, ldc: I, split: split)
    if let dx {
        BLAS.gemm(transA: false, transB: false, m: B, n: I, k: O, dy, lda: O, weight, ldb: I, beta: 1, dx, ldc: I, split: split)
    }
    if let dBias { oh_column_sums_clear(dBias, dy, B, O) }
}

/// ReLU backward in place over `dy` (`dx = dy * (y > 0)`, y the forward output), then `y = 0`:
/// the step's last read of the activations. Returns the largest |dx|.
func reluBackwardClearing(_ dy: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) -> MagnitudeBound {
    MagnitudeBound(bits: oh_relu_backward_clear(dy, y, count))
}

/// A backbone's fully connected layer with ReLU, `relu(x W^T + b)` (the mlp's hidden layers, the
/// classifiers of the image backbones). Its output buffer holds zeros between steps (ReLU
/// backward clears it), so the forward GEMM adds into it without a clearing pass.
final class LinearLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])]
    private(set) var offset = 0
    private var activations = FloatBuffer(count: 0)       // (B, O) after ReLU
    private var evaluation = FloatBuffer(count: 0)        // (B, O) for `infer`
    private(set) var outputBound: MagnitudeBound? = nil
    private var threads = LayerThreads()

    /// `name`: the PyTorch module's name, e.g. "backbone.fc.0" or "classifier.1".
    init(name: String, inputs: Int, outputs: Int) {
        input = SampleShape(features: inputs); output = SampleShape(features: outputs)
        tensors = [("\(name).weight", [outputs, inputs]), ("\(name).bias", [outputs])]
    }

    var I: Int { input.count }
    var O: Int { output.count }

    func workspaceFloats(batch B: Int) -> Int? { checkedProduct([B, O, 2]) }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        self.offset = offset
        activations = FloatBuffer(count: B * O)
        evaluation = FloatBuffer(count: B * O)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {
        initialiseUniform(p + offset, weights: O * I, biases: O, fanIn: I, &rng)
    }

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        outputBound = linearReluForward(activations.pointer, x, p + offset, p + offset + O * I, B: B, I: I, O: O, yIsClear: true,
                                        split: threads.gemmSplit)
        return UnsafePointer(activations.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> {
        linearReluForward(evaluation.pointer, x, p + offset, p + offset + O * I, B: B, I: I, O: O, split: threads.gemmSplit)
        return UnsafePointer(evaluation.pointer)
    }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness) {
        // The activations are read for the last time here (the layer above used them as its input).
        let dyBound = reluBackwardClearing(dy, activations.pointer, count: B * O)
        linearBackward(dx, g + offset, g + offset + O * I, dy, x, p + offset, B: B, I: I, O: O, split: threads.gemmSplit)
        // Weight (O, I) then bias (O): one contiguous slice.
        let rows = check.rows
        check.slice(offset, count: O * (I + 1)) {
            inputBound.map { GradientFiniteness.proven(dy: dyBound, x: $0, bias: true, rows: rows) } ?? false
        }
    }
}
