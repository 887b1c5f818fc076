// BatchNorm1d with PyTorch's semantics, its statistics summed over the global batch.
//
// Dimensions: B = rows of the local batch, N = rows of the global batch (B x ranks), K = channels.

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
    let sums: UnsafeMutablePointer<Double>  // (2K) the per-channel sums, summed over ranks in place

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
    _ state: BatchNormState, B: Int, statistics: StatisticsReducer
) {
    let K = state.K, s = state.sums
    let N = B * statistics.ranks
    precondition(N > 1, "BatchNorm in training mode needs more than one row in the global batch, got \(N)")
    s.update(repeating: 0, count: K)
    for r in 0..<B {
        let row = x + r * K
        for k in 0..<K { s[k] += Double(row[k]) }
    }
    statistics.sum(s, count: K)
    for k in 0..<K { s[k] /= Double(N) }
    (s + K).update(repeating: 0, count: K)
    for r in 0..<B {
        let row = x + r * K
        for k in 0..<K { let d = Double(row[k]) - s[k]; s[K + k] += d * d }
    }
    statistics.sum(s + K, count: K)
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
/// dgamma (+)= sum_rows dy * xhat,   dbeta (+)= sum_rows dy     (this rank's rows; summed over ranks with all gradients)
/// dx = gamma * invstd / N * (N dy - sum dy - xhat * sum(dy * xhat))   (sums over the global batch)
/// ```
func batchNormTrainBackward(
    _ dx: UnsafeMutablePointer<Float>,       // (B, K)
    _ dGamma: UnsafeMutablePointer<Float>, _ dBeta: UnsafeMutablePointer<Float>,  // (K)
    _ dy: UnsafePointer<Float>,              // (B, K)
    _ xhat: UnsafePointer<Float>,            // (B, K)
    _ gamma: UnsafePointer<Float>,           // (K)
    _ state: BatchNormState, B: Int, statistics: StatisticsReducer
) {
    let K = state.K, s = state.sums
    let N = B * statistics.ranks
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
    statistics.sum(s, count: 2 * K)
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

