// The one loss: margin logits over the cosines to the codebook, then softmax cross-entropy
// (single-label) or one of the multi-label losses, plus an optional quantization term.
//
// Dimensions: B = rows of the local batch, N = rows of the global batch, K = bits, C = classes.

import CKernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public enum MarginType: String, Codable, CaseIterable, Sendable { case cos, arc }
public enum MultiLabelLoss: String, Codable, CaseIterable, Sendable { case smooth, bce, imbalance }
public enum QuantizationType: String, Codable, CaseIterable, Sendable { case cs, l1, l2 }

/// Settings of the loss; defaults are the authors' reference code's (docs/METHOD.md).
public struct LossConfig: Codable, Equatable, Sendable {
    /// s: logits are scaled by it.
    public var scale: Float = 8
    /// m: subtracted from the target cosine (cos) or added to the target angle (arc).
    public var margin: Float = 0.2
    public var marginType: MarginType = .cos
    public var multiLabelLoss: MultiLabelLoss = .smooth
    /// Weight of the classification term.
    public var ce: Float = 1
    /// Weight of the quantization term (0: off).
    public var quan: Float = 0
    public var quanType: QuantizationType = .cs
    public init() {}
}

/// Targets of a local batch: class indices, or a multi-hot (B, C) matrix of 0/1.
public enum BatchTargets {
    case single(UnsafePointer<Int32>)
    case multi(UnsafePointer<Float>)
}

/// Clamp of the cosine before acos in the arc margin (reference value).
let arcClamp: Float = 0.99999

/// Margin, loss and its gradient, in place:
/// ```
/// cos margin: z = s (u - m y)
/// arc margin: z = s cos(acos(clamp(u, -0.99999, 0.99999)) + m y)
/// single-label:         L = mean_n CE(z_n, y_n)
/// label smoothing:      L = -mean_n sum_c y~ log_softmax(z_n),  y~ = y / sum_c y
/// bce:                  L = mean_{n,c} BCEWithLogits(z, y)
/// imbalance:            L = sum w BCE / (sum w + 1e-7), w = 1/C, 1 where y = 1 or (sigmoid(z) >= 0.7) != (y = 1)
/// ```
/// On entry `u` holds the cosines (B, C); on return it holds `ce * dL/du` for this rank's rows
/// of the global batch (means are over the N rows of the global batch, so summing the gradients
/// of all ranks gives the gradient of the global loss). `scratch` (B, C) is used by the arc margin.
/// Returns this rank's share of `ce * L` and the number of rows whose largest cosine is a target.
func marginLoss(
    _ u: UnsafeMutablePointer<Float>,        // (B, C) in: cosines, out: gradient
    scratch: UnsafeMutablePointer<Float>?,   // (B, C) needed for arc
    targets: BatchTargets, B: Int, C: Int, N: Int,
    config: LossConfig, statistics: StatisticsReducer, threads: Int = 1
) -> (loss: Double, correct: Int) {
    if case .single(let t) = targets, config.marginType == .cos, C >= manyClasses {
        return cosMarginSoftmaxCE(u, targets: t, B: B, C: C, N: N, config: config, threads: threads)
    }
    // Accuracy, on the cosines as the reference does.
    let correct = countCorrect(u, targets: targets, B: B, C: C)
    if config.marginType == .arc {
        guard let scratch else { preconditionFailure("arc margin needs a scratch buffer") }
        scratch.update(from: u, count: B * C)
    }
    applyMargin(u, targets: targets, B: B, C: C, config: config)
    let loss: Double
    switch targets {
    case .single(let t): loss = softmaxCrossEntropy(u, targets: t, B: B, C: C, N: N)
    case .multi(let y):
        switch config.multiLabelLoss {
        case .smooth: loss = labelSmoothingLoss(u, targets: y, B: B, C: C, N: N)
        case .bce: loss = bceLoss(u, targets: y, B: B, C: C, N: N)
        case .imbalance: loss = imbalanceLoss(u, targets: y, B: B, C: C, statistics: statistics)
        }
    }
    gradientThroughMargin(u, cosines: scratch, targets: targets, B: B, C: C, config: config)
    return (loss * Double(config.ce), correct)
}

extension BatchTargets {
    /// y[r, c]: 1 where class c is a target of row r, else 0.
    @inline(__always)
    func value(_ r: Int, _ c: Int, classes C: Int) -> Float {
        switch self {
        case .single(let t): return Int(t[r]) == c ? 1 : 0
        case .multi(let y): return y[r * C + c]
        }
    }
}

/// Rows whose largest cosine (the first on ties) is one of their targets.
func countCorrect(_ u: UnsafePointer<Float>, targets: BatchTargets, B: Int, C: Int) -> Int {
    var correct = 0
    for r in 0..<B {
        let row = u + r * C
        var best = 0
        for c in 1..<max(C, 1) where row[c] > row[best] { best = c }
        if targets.value(r, best, classes: C) > 0 { correct += 1 }
    }
    return correct
}

/// The margin logits z, in place over the cosines.
func applyMargin(_ u: UnsafeMutablePointer<Float>, targets: BatchTargets, B: Int, C: Int, config: LossConfig) {
    let s = config.scale, m = config.margin
    switch config.marginType {
    case .cos:
        for r in 0..<B {
            let row = u + r * C
            for c in 0..<C { row[c] = s * (row[c] - m * targets.value(r, c, classes: C)) }
        }
    case .arc:
        for r in 0..<B {
            let row = u + r * C
            for c in 0..<C {
                row[c] = s * cos(acos(min(max(row[c], -arcClamp), arcClamp)) + m * targets.value(r, c, classes: C))
            }
        }
    }
}

/// Single-label cross-entropy: `L = mean_n (lse(z_n) - z_n[t])`; z becomes dL/dz.
func softmaxCrossEntropy(_ u: UnsafeMutablePointer<Float>, targets t: UnsafePointer<Int32>, B: Int, C: Int, N: Int) -> Double {
    var loss = 0.0
    let invN = 1 / Float(N)
    for r in 0..<B {
        let row = u + r * C, tr = Int(t[r])
        let zTarget = row[tr]
        let lse = softmaxInPlace(row, C)     // row now holds softmax(z)
        loss += Double(lse - zTarget)        // -log_softmax(z)[t]
        row[tr] -= 1
        for c in 0..<C { row[c] *= invN }
    }
    return loss * Double(invN)
}

/// Label smoothing: `L = -mean_n sum_c y~ log_softmax(z_n)`, y~ = y / sum_c y; z becomes dL/dz.
func labelSmoothingLoss(_ u: UnsafeMutablePointer<Float>, targets y: UnsafePointer<Float>, B: Int, C: Int, N: Int) -> Double {
    var loss = 0.0
    let invN = 1 / Float(N)
    for r in 0..<B {
        let row = u + r * C, yr = y + r * C
        var positives: Float = 0, dot: Float = 0
        for c in 0..<C { positives += yr[c]; dot += yr[c] * row[c] }
        precondition(positives > 0, "multi-label row without a positive label reached the loss")
        let lse = softmaxInPlace(row, C)
        loss += Double(lse - dot / positives)   // -sum y~ (z - lse)
        for c in 0..<C { row[c] = (row[c] - yr[c] / positives) * invN }
    }
    return loss * Double(invN)
}

/// `L = mean_{n,c} BCEWithLogits(z, y)`; z becomes dL/dz.
func bceLoss(_ u: UnsafeMutablePointer<Float>, targets y: UnsafePointer<Float>, B: Int, C: Int, N: Int) -> Double {
    var loss = 0.0
    let invN = 1 / Float(N), scale = invN / Float(C)
    for i in 0..<(B * C) {
        let z = u[i], t = y[i]
        loss += Double(bceWithLogits(z, t)) * Double(scale)
        u[i] = (sigmoid(z) - t) * scale
    }
    return loss
}

/// `L = sum w BCE / (sum w + 1e-7)` over the global batch; z becomes dL/dz. The weights are
/// constants (no gradient flows through them); their sum is over all ranks' rows.
func imbalanceLoss(_ u: UnsafeMutablePointer<Float>, targets y: UnsafePointer<Float>, B: Int, C: Int,
                   statistics: StatisticsReducer) -> Double {
    var weightSum = [0.0]
    for i in 0..<(B * C) { weightSum[0] += Double(imbalanceWeight(u[i], y[i], C)) }
    statistics.sum(&weightSum)
    let denominator = Float(weightSum[0] + 1e-7)
    var loss = 0.0
    for i in 0..<(B * C) {
        let z = u[i], t = y[i], w = imbalanceWeight(z, t, C)
        loss += Double(w * bceWithLogits(z, t) / denominator)
        u[i] = w * (sigmoid(z) - t) / denominator
    }
    return loss
}

/// dL/dz to `ce * dL/du`, in place: the chain rule through the margin (dz/du), `cosines` holding
/// the cosines u for the arc margin.
func gradientThroughMargin(_ g: UnsafeMutablePointer<Float>, cosines: UnsafePointer<Float>?, targets: BatchTargets,
                           B: Int, C: Int, config: LossConfig) {
    let s = config.scale, m = config.margin, ce = config.ce
    switch config.marginType {
    case .cos:
        for i in 0..<(B * C) { g[i] *= s * ce }
    case .arc:
        let u = cosines!
        for r in 0..<B {
            for c in 0..<C {
                let i = r * C + c, x = u[i]
                if x < -arcClamp || x > arcClamp { g[i] = 0; continue }
                let y = targets.value(r, c, classes: C)
                if y == 0 {
                    g[i] *= s * ce
                } else {
                    // d/du cos(acos(u) + m y) = sin(theta + m y) / sin(theta), theta = acos(u)
                    let theta = acos(x)
                    g[i] *= s * ce * sin(theta + m * y) / sin(theta)
                }
            }
        }
    }
}

/// From this many classes on, single-label cosine-margin losses take `cosMarginSoftmaxCE`.
let manyClasses = 256

/// The single-label, cosine-margin case of `marginLoss` for many classes (GLDv2: 81,313): one C
/// kernel (vectorised exponentials, sums in double) over blocks of rows, the blocks spread over
/// `threads` (the model's budget). Results depend on the thread count only through the order in
/// which the blocks' losses are added.
func cosMarginSoftmaxCE(_ u: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>, B: Int, C: Int, N: Int,
                        config: LossConfig, threads: Int) -> (loss: Double, correct: Int) {
    let gradScale = config.ce * config.scale / Float(N)
    let parts = B * C >= 1 << 16 ? max(1, min(threads, B)) : 1
    // Per-block results on the stack: the training loop allocates nothing.
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: parts) { loss in
        withUnsafeTemporaryAllocation(of: Int64.self, capacity: parts) { correct in
            parallel(parts) { i in
                let lo = B * i / parts, hi = B * (i + 1) / parts
                loss[i] = oh_cos_margin_softmax_ce(u + lo * C, targets + lo, hi - lo, C, config.scale, config.margin,
                                                   gradScale, correct.baseAddress! + i)
            }
            return (loss.reduce(0, +) * Double(config.ce) / Double(N), Int(correct.reduce(0, +)))
        }
    }
}

/// Replaces `row` by softmax(row); returns log-sum-exp of the original row.
@inline(__always)
func softmaxInPlace(_ row: UnsafeMutablePointer<Float>, _ C: Int) -> Float {
    var maxZ = row[0]
    for c in 1..<C { maxZ = max(maxZ, row[c]) }
    var sum: Float = 0
    for c in 0..<C {
        let e = exp(row[c] - maxZ)
        row[c] = e
        sum += e
    }
    let inv = 1 / sum
    for c in 0..<C { row[c] *= inv }
    return maxZ + log(sum)
}

@inline(__always) func sigmoid(_ z: Float) -> Float { 1 / (1 + exp(-z)) }

/// max(z, 0) - z t + log(1 + exp(-|z|)), the stable form PyTorch uses.
@inline(__always) func bceWithLogits(_ z: Float, _ t: Float) -> Float {
    max(z, 0) - z * t + log1p(exp(-abs(z)))
}

@inline(__always) func imbalanceWeight(_ z: Float, _ t: Float, _ C: Int) -> Float {
    let positive = t == 1
    return positive || ((sigmoid(z) >= 0.7) != positive) ? 1 : 1 / Float(C)
}

/// The quantization term, sign(v) a constant (sign(0) = 0, as torch.sign):
/// ```
/// cs: mean_n (1 - cos(v_n, sign(v_n)))     l1: mean_{n,k} |v - sign v|     l2: mean_{n,k} (v - sign v)^2
/// ```
/// Returns this rank's share of `weight * Lq` (means over the N rows of the global batch).
func quantizationForward(
    _ v: UnsafePointer<Float>,               // (B, K)
    B: Int, K: Int, N: Int, type: QuantizationType, weight: Float
) -> Double {
    var loss = 0.0
    switch type {
    case .cs:
        let scale = weight / Float(N)
        for r in 0..<B { loss += Double(1 - signCosine(v + r * K, K).cosine) * Double(scale) }
    case .l1:
        let scale = weight / Float(N * K)
        for i in 0..<(B * K) { loss += Double(abs(v[i] - sgn(v[i]))) * Double(scale) }
    case .l2:
        let scale = weight / Float(N * K)
        for i in 0..<(B * K) {
            let d = v[i] - sgn(v[i])
            loss += Double(d * d) * Double(scale)
        }
    }
    return loss
}

/// The quantization term's gradient, added into `dv`.
func quantizationBackward(
    _ dv: UnsafeMutablePointer<Float>,       // (B, K) adds into it
    _ v: UnsafePointer<Float>,               // (B, K)
    B: Int, K: Int, N: Int, type: QuantizationType, weight: Float
) {
    switch type {
    case .cs:
        let scale = weight / Float(N)
        for r in 0..<B {
            let vr = v + r * K, g = dv + r * K
            let (cosine, vv, product, denominator) = signCosine(vr, K)
            if product > 1e-8 {
                for k in 0..<K {
                    // d cos / dv = b / (|v||b|) - cos v / |v|^2
                    let dcos = sgn(vr[k]) / denominator - cosine * vr[k] / vv
                    g[k] -= scale * dcos
                }
            } else {
                for k in 0..<K { g[k] -= scale * sgn(vr[k]) / denominator }
            }
        }
    case .l1:
        let scale = weight / Float(N * K)
        for i in 0..<(B * K) { dv[i] += scale * sgn(v[i] - sgn(v[i])) }
    case .l2:
        let scale = weight / Float(N * K)
        for i in 0..<(B * K) { dv[i] += scale * 2 * (v[i] - sgn(v[i])) }
    }
}

/// torch.sign.
@inline(__always) func sgn(_ x: Float) -> Float { x > 0 ? 1 : (x < 0 ? -1 : 0) }

/// cos(v, sign v) of one row as torch.cosine_similarity computes it (dividing by
/// max(|v| |b|, 1e-8)), with |v|^2, |v| |b| and that divisor.
@inline(__always)
func signCosine(_ v: UnsafePointer<Float>, _ K: Int) -> (cosine: Float, vv: Float, product: Float, denominator: Float) {
    var vv: Float = 0, bb: Float = 0, vb: Float = 0
    for k in 0..<K {
        let b = sgn(v[k])
        vv += v[k] * v[k]; bb += b * b; vb += v[k] * b
    }
    let product = vv.squareRoot() * bb.squareRoot()
    let denominator = max(product, 1e-8)
    return (vb / denominator, vv, product, denominator)
}
