// Layers of the model, each a forward and a backward side by side. Backward *accumulates* into
// parameter gradients (`+=`) and overwrites input gradients.
//
// Dimensions: B = rows of the local batch, N = rows of the global batch (B x ranks),
// I = input features of a layer, O = its outputs, K = bits, C = classes.

import CKernels
import Foundation

// MARK: Linear (+ optional bias), PyTorch layout: weight (O, I)

/// `y = x W^T + b`.
func linearForward(
    _ y: UnsafeMutablePointer<Float>,        // (B, O)
    _ x: UnsafePointer<Float>,               // (B, I)
    _ weight: UnsafePointer<Float>,          // (O, I)
    _ bias: UnsafePointer<Float>?,           // (O)
    B: Int, I: Int, O: Int
) {
    if let bias {
        for r in 0..<B { (y + r * O).update(from: bias, count: O) }
    }
    BLAS.gemm(transA: false, transB: true, m: B, n: O, k: I, x, lda: I, weight, ldb: I,
              beta: bias == nil ? 0 : 1, y, ldc: O)
}

/// `dW += dy^T x`, `db += sum_rows dy`, `dx = dy W` (skipped when `dx` is nil: the first layer).
/// With `accumulate` false the parameter gradients are overwritten instead, which spares the
/// caller a pass to zero them. `dxIsClear` says `dx` holds zeros already (the GEMM then adds into
/// it instead of clearing it first); `clearDy` sets `dy` to 0 in the bias-sum pass (layers with a bias).
func linearBackward(
    _ dx: UnsafeMutablePointer<Float>?,      // (B, I)
    _ dWeight: UnsafeMutablePointer<Float>,  // (O, I)
    _ dBias: UnsafeMutablePointer<Float>?,   // (O)
    _ dy: UnsafeMutablePointer<Float>,       // (B, O)
    _ x: UnsafePointer<Float>,               // (B, I)
    _ weight: UnsafePointer<Float>,          // (O, I)
    B: Int, I: Int, O: Int, accumulate: Bool = true, dxIsClear: Bool = false, clearDy: Bool = false
) {
    BLAS.gemm(transA: true, transB: false, m: O, n: I, k: B, dy, lda: O, x, ldb: I,
              beta: accumulate ? 1 : 0, dWeight, ldc: I)
    if let dx {
        BLAS.gemm(transA: false, transB: false, m: B, n: I, k: O, dy, lda: O, weight, ldb: I,
                  beta: dxIsClear ? 1 : 0, dx, ldc: I)
    }
    precondition(!clearDy || dBias != nil, "clearDy needs a bias: its column sums are the pass that clears dy")
    if let dBias {
        if clearDy { oh_column_sums_clear(dBias, dy, B, O, accumulate ? 1 : 0) } else { oh_column_sums(dBias, dy, B, O, accumulate ? 1 : 0) }
    }
}

/// `y = relu(x W^T + b)`: the GEMM, then bias and ReLU in one pass over y. `yIsClear` says `y`
/// holds zeros already (the GEMM adds into it instead of clearing it first). Returns the largest
/// |y| as a `MagnitudeBound`.
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

// MARK: ReLU, in place

func reluForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    oh_relu(x, count)
}

/// `dx = dy * (y > 0)`, in place over `dy`; `y` is the forward output.
func reluBackward(_ dy: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
    oh_relu_backward(dy, y, count)
}

/// `reluBackward`, then `y = 0` (its last read in a training step). Returns the largest |dx|.
func reluBackwardClearing(_ dy: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) -> MagnitudeBound {
    MagnitudeBound(bits: oh_relu_backward_clear(dy, y, count))
}

// MARK: Finiteness of a GEMM's output without reading it

/// The largest magnitude in a buffer, kept as the bit pattern of a Float with the sign cleared
/// (what the kernels return): unsigned order is magnitude order, and NaN or Inf lie above every
/// finite value.
struct MagnitudeBound {
    var bits: UInt32

    init(bits: UInt32) { self.bits = bits }
    init(of x: UnsafePointer<Float>, count: Int) { bits = oh_max_magnitude_bits(x, count) }

    static let one = MagnitudeBound(bits: Float(1).bitPattern)

    var isFinite: Bool { bits < 0x7f80_0000 }
    var value: Double { Double(Float(bitPattern: bits)) }

    /// Whether every sum of `terms` products `a * b`, with |a| <= `a` and |b| <= `b`, is finite
    /// in float32, whatever the order of the additions and roundings. Exact arithmetic bounds
    /// such a sum by terms x a x b; rounding adds at most a factor (1 + 2^-24)^terms < 2 for
    /// terms < 2^23, hence the half of Float's largest value. `terms` should count every product
    /// that reaches the result, over all ranks when their gradients are summed.
    static func productSumsFinite(terms: Int, _ a: MagnitudeBound, _ b: MagnitudeBound) -> Bool {
        guard a.isFinite, b.isFinite, terms < 1 << 23 else { return false }
        return Double(terms) * a.value * b.value <= Double(Float.greatestFiniteMagnitude) / 2
    }
}

// MARK: BatchNorm1d, PyTorch semantics, synchronised over ranks

/// Batch normalisation over the rows of the *global* batch:
/// ```
/// mean = sum x / N,   var = sum (x - mean)^2 / N          (biased, used to normalise)
/// xhat = (x - mean) / sqrt(var + eps),   y = gamma * xhat + beta
/// running_mean = (1 - momentum) running_mean + momentum * mean
/// running_var  = (1 - momentum) running_var  + momentum * var * N / (N - 1)   (unbiased)
/// ```
/// The per-channel sums are reduced over ranks in Float64, two passes (mean, then centred
/// squares) as PyTorch does, so N ranks normalise exactly as one process with the global batch.
final class BatchNormState {
    let K: Int
    var eps: Float = 1e-5
    var momentum: Float = 0.1
    let mean: FloatBuffer          // (K) batch mean of the last forward
    let invStd: FloatBuffer        // (K) 1 / sqrt(var + eps)
    let sums: UnsafeMutablePointer<Double>  // (2K) scratch for the collectives

    init(K: Int) {
        self.K = K
        mean = FloatBuffer(count: K)
        invStd = FloatBuffer(count: K)
        sums = .allocate(capacity: 2 * K)
    }

    deinit { sums.deallocate() }
}

func batchNormTrainForward(
    _ y: UnsafeMutablePointer<Float>,        // (B, K)
    _ xhat: UnsafeMutablePointer<Float>,     // (B, K) cached for backward
    _ x: UnsafePointer<Float>,               // (B, K)
    _ gamma: UnsafePointer<Float>, _ beta: UnsafePointer<Float>,   // (K)
    _ runningMean: UnsafeMutablePointer<Float>, _ runningVar: UnsafeMutablePointer<Float>,  // (K)
    _ state: BatchNormState, B: Int, collective: Collective
) {
    let K = state.K, s = state.sums
    let N = B * collective.size
    precondition(N > 1, "BatchNorm in training mode needs more than one row in the global batch, got \(N)")
    s.update(repeating: 0, count: K)
    for r in 0..<B {
        let row = x + r * K
        for k in 0..<K { s[k] += Double(row[k]) }
    }
    collective.allReduceSum(s, count: K)
    for k in 0..<K { s[k] /= Double(N) }
    (s + K).update(repeating: 0, count: K)
    for r in 0..<B {
        let row = x + r * K
        for k in 0..<K { let d = Double(row[k]) - s[k]; s[K + k] += d * d }
    }
    collective.allReduceSum(s + K, count: K)
    let m = state.momentum
    for k in 0..<K {
        let variance = s[K + k] / Double(N)
        state.mean[k] = Float(s[k])
        state.invStd[k] = Float(1.0 / (variance + Double(state.eps)).squareRoot())
        runningMean[k] = (1 - m) * runningMean[k] + m * Float(s[k])
        runningVar[k] = (1 - m) * runningVar[k] + m * Float(variance * Double(N) / Double(N - 1))
    }
    let mean = state.mean.pointer, invStd = state.invStd.pointer
    for r in 0..<B {
        let xr = x + r * K, hr = xhat + r * K, yr = y + r * K
        for k in 0..<K {
            let h = (xr[k] - mean[k]) * invStd[k]
            hr[k] = h
            yr[k] = gamma[k] * h + beta[k]
        }
    }
}

/// ```
/// dgamma += sum_rows dy * xhat,   dbeta += sum_rows dy         (local; reduced with all gradients)
/// dx = gamma * invstd / N * (N dy - sum dy - xhat * sum(dy * xhat))   (sums over the global batch)
/// ```
func batchNormTrainBackward(
    _ dx: UnsafeMutablePointer<Float>,       // (B, K)
    _ dGamma: UnsafeMutablePointer<Float>, _ dBeta: UnsafeMutablePointer<Float>,  // (K)
    _ dy: UnsafePointer<Float>,              // (B, K)
    _ xhat: UnsafePointer<Float>,            // (B, K)
    _ gamma: UnsafePointer<Float>,           // (K)
    _ state: BatchNormState, B: Int, collective: Collective, accumulate: Bool = true
) {
    let K = state.K, s = state.sums
    let N = B * collective.size
    if !accumulate {
        dGamma.update(repeating: 0, count: K)
        dBeta.update(repeating: 0, count: K)
    }
    s.update(repeating: 0, count: 2 * K)
    for r in 0..<B {
        let dr = dy + r * K, hr = xhat + r * K
        for k in 0..<K {
            s[k] += Double(dr[k])
            s[K + k] += Double(dr[k] * hr[k])
        }
    }
    for k in 0..<K {
        dBeta[k] += Float(s[k])
        dGamma[k] += Float(s[K + k])
    }
    collective.allReduceSum(s, count: 2 * K)
    let invN = 1 / Float(N)
    for r in 0..<B {
        let dr = dy + r * K, hr = xhat + r * K, out = dx + r * K
        for k in 0..<K {
            let c = gamma[k] * state.invStd[k]
            out[k] = c * (dr[k] - invN * Float(s[k]) - hr[k] * invN * Float(s[K + k]))
        }
    }
}

/// Evaluation mode: `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`.
func batchNormEvalForward(
    _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,      // (B, K)
    _ gamma: UnsafePointer<Float>, _ beta: UnsafePointer<Float>,
    _ runningMean: UnsafePointer<Float>, _ runningVar: UnsafePointer<Float>,
    eps: Float, B: Int, K: Int
) {
    for r in 0..<B {
        let xr = x + r * K, yr = y + r * K
        for k in 0..<K {
            yr[k] = gamma[k] * (xr[k] - runningMean[k]) / (runningVar[k] + eps).squareRoot() + beta[k]
        }
    }
}

// MARK: Cosine to the codebook

/// Smallest norm used to divide by. The reference divides by |v| with no epsilon; a row of v
/// that is exactly zero would give NaN there. We divide by max(|v|, 1e-12) instead, which changes
/// nothing for any row with |v| > 1e-12 (after BatchNorm |v| is about sqrt(K)).
let minimumNorm: Float = 1e-12

/// ```
/// vn = v / max(|v|, 1e-12)
/// u  = vn codebookUnit^T         codebookUnit = codebook / sqrt(K): rows of unit length
/// ```
func cosineForward(
    _ u: UnsafeMutablePointer<Float>,        // (B, C)
    _ vn: UnsafeMutablePointer<Float>,       // (B, K) cached
    _ norms: UnsafeMutablePointer<Float>,    // (B)    cached
    _ v: UnsafePointer<Float>,               // (B, K)
    _ codebookUnit: UnsafePointer<Float>,    // (C, K)
    B: Int, K: Int, C: Int
) {
    for r in 0..<B {
        let vr = v + r * K, nr = vn + r * K
        var sq: Float = 0
        for k in 0..<K { sq += vr[k] * vr[k] }
        let norm = max(sq.squareRoot(), minimumNorm)
        norms[r] = norm
        let inv = 1 / norm
        for k in 0..<K { nr[k] = vr[k] * inv }
    }
    BLAS.gemm(transA: false, transB: true, m: B, n: C, k: K, vn, lda: K, codebookUnit, ldb: K,
              beta: 0, u, ldc: C)
}

/// ```
/// dvn = du codebookUnit
/// dv  = (dvn - vn (vn . dvn)) / |v|         (dv = dvn / 1e-12 where the norm was clamped)
/// ```
/// `dv` is overwritten; `dvn` is scratch.
func cosineBackward(
    _ dv: UnsafeMutablePointer<Float>,       // (B, K)
    _ dvn: UnsafeMutablePointer<Float>,      // (B, K) scratch
    _ du: UnsafePointer<Float>,              // (B, C)
    _ vn: UnsafePointer<Float>, _ norms: UnsafePointer<Float>,
    _ codebookUnit: UnsafePointer<Float>,    // (C, K)
    B: Int, K: Int, C: Int
) {
    BLAS.gemm(transA: false, transB: false, m: B, n: K, k: C, du, lda: C, codebookUnit, ldb: K,
              beta: 0, dvn, ldc: K)
    for r in 0..<B {
        let g = dvn + r * K, n = vn + r * K, out = dv + r * K
        let inv = 1 / norms[r]
        if norms[r] <= minimumNorm {
            for k in 0..<K { out[k] = g[k] * inv }
            continue
        }
        var dot: Float = 0
        for k in 0..<K { dot += n[k] * g[k] }
        for k in 0..<K { out[k] = (g[k] - n[k] * dot) * inv }
    }
}
