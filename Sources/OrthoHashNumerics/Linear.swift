// Linear layers (PyTorch layout: weight (O, I)), with and without bias and ReLU: each forward
// beside its backward. Backward adds into the input gradient `dx` and into the parameter
// gradients (or overwrites the latter, `GradientMode.overwrite`).
//
// The training step spends no pass on clearing buffers: every GEMM of the step adds into a
// buffer that holds zeros (beta = 1), because the last pass that reads each workspace buffer in
// a step clears it (ReLU backward clears the activations, the bias sum clears dy), and the
// optimizer clears the gradients as it reads them (ParameterStore).
//
// Dimensions: B = rows, I = input features of a layer, O = its outputs.

import CKernels

/// Whether a backward pass adds into the parameter gradients (the training loop: they start at
/// zero, ParameterStore) or overwrites them (whatever they held).
public enum GradientMode: Sendable {
    case accumulate, overwrite
    var beta: Float { self == .accumulate ? 1 : 0 }
}

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
    B: Int, I: Int, O: Int, yIsClear: Bool = false
) -> MagnitudeBound {
    BLAS.gemm(transA: false, transB: true, m: B, n: O, k: I, x, lda: I, weight, ldb: I, beta: yIsClear ? 1 : 0, y, ldc: O)
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
    B: Int, I: Int, O: Int, mode: GradientMode = .accumulate, split: Int = 1
) {
    BLAS.gemm(transA: true, transB: false, m: O, n: I, k: B, dy, lda: O, x, ldb: I, beta: mode.beta, dWeight, ldc: I, split: split)
    if let dx {
        BLAS.gemm(transA: false, transB: false, m: B, n: I, k: O, dy, lda: O, weight, ldb: I, beta: 1, dx, ldc: I, split: split)
    }
    if let dBias { oh_column_sums_clear(dBias, dy, B, O, mode == .accumulate ? 1 : 0) }
}

/// ReLU backward in place over `dy` (`dx = dy * (y > 0)`, y the forward output), then `y = 0`:
/// the step's last read of the activations. Returns the largest |dx|.
func reluBackwardClearing(_ dy: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) -> MagnitudeBound {
    MagnitudeBound(bits: oh_relu_backward_clear(dy, y, count))
}
