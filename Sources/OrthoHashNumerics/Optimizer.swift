// Optimizers over the flat parameter buffer, with two parameter groups (backbone, hash layer)
// that differ only in learning rate. Dimension: P = parameters.

import CKernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public enum OptimizerKind: String, Codable, CaseIterable, Sendable { case adam, sgd }
public enum SchedulerKind: String, Codable, CaseIterable, Sendable { case step, multistep, none }

public struct OptimizerConfig: Codable, Equatable, Sendable {
    public var kind: OptimizerKind = .adam
    /// Learning rate of the hash layer (W, BatchNorm).
    public var lr: Float = 1e-4
    /// The backbone's learning rate is this times `lr`.
    public var backboneLRScale: Float = 0.1
    /// Coupled L2: added to the gradient before the update (PyTorch's Adam/SGD, not AdamW).
    public var weightDecay: Float = 5e-4
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    public var momentum: Float = 0.9
    public var nesterov: Bool = false
    public var scheduler: SchedulerKind = .step
    /// StepLR: every `stepSize` epochs, lr *= gamma. nil: int(0.8 * epochs), as the reference.
    public var stepSize: Int? = nil
    /// MultiStepLR: at these epochs, lr *= gamma.
    public var milestones: [Int] = []
    public var gamma: Float = 0.1
    public init() {}

    /// Learning-rate factor of epoch `epoch` (0-based), stepped once per epoch.
    public func lrFactor(epoch: Int, epochs: Int) -> Float {
        switch scheduler {
        case .none: return 1
        case .step:
            let step = max(1, stepSize ?? Int(0.8 * Double(epochs)))
            return pow(gamma, Float(epoch / step))
        case .multistep:
            return pow(gamma, Float(milestones.filter { $0 <= epoch }.count))
        }
    }
}

/// Adam (PyTorch's update, L2 coupled) or SGD (momentum, dampening 0, optional Nesterov), over
/// the buffers of a ParameterStore. It holds only the configuration and the step count; the
/// moments live in the store.
public final class Optimizer {
    public let config: OptimizerConfig
    public var step: Int64 = 0

    public init(config: OptimizerConfig) { self.config = config }

    /// One update of the elements `range` of `store` with the hash layer's learning rate `lr`
    /// (the backbone's elements, [0, backboneCount), get lr x backboneLRScale):
    /// ```
    /// g = grad + wd * p
    /// Adam: m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    ///       p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    /// SGD:  buf = mu buf + g (buf = g at t = 1);  d = nesterov ? g + mu buf : buf;  p -= lr d
    /// ```
    /// The gradients of `range` are set to 0 in the same pass: the next backward pass adds into
    /// them (ParameterStore.update, which notes it).
    func update(_ store: ParameterStore, lr: Float, range r: Range<Int>, threads: Int = 1) {
        let count = store.count, backboneCount = store.layout.backboneCount
        precondition(store.moment1.count == count && store.moment2.count == (config.kind == .adam ? count : 0),
                     "optimizer \(config.kind) over a store of \(count) parameters with moments of \(store.moment1.count)/\(store.moment2.count)")
        precondition(r.lowerBound >= 0 && r.upperBound <= count, "update range \(r) outside 0..<\(count)")
        step += 1
        let c = config
        let t = Float(step)
        let bc1 = 1 - pow(c.beta1, t), bc2Sqrt = (1 - pow(c.beta2, t)).squareRoot()
        let p = store.parameters.pointer, g = store.gradients.pointer, mp = store.moment1.pointer, vp = store.moment2.pointer
        let firstStep = step == 1
        // Elementwise, so it splits across threads with no effect on the result.
        func run(_ lo: Int, _ hi: Int, _ lr: Float) {
            guard lo < hi else { return }
            switch c.kind {
            case .adam:
                oh_adam_zero_grad(p + lo, g + lo, mp + lo, vp + lo, hi - lo, lr / bc1, c.beta1, c.beta2, c.weightDecay, c.eps, bc2Sqrt)
            case .sgd:
                let mu = c.momentum, wd = c.weightDecay
                for i in lo..<hi {
                    let grad = g[i] + wd * p[i]
                    var d = grad
                    if mu != 0 {
                        let buf = firstStep ? grad : mu * mp[i] + grad
                        mp[i] = buf
                        d = c.nesterov ? grad + mu * buf : buf
                    }
                    p[i] -= lr * d
                    g[i] = 0
                }
            }
        }
        let backboneLR = lr * c.backboneLRScale
        let n = r.count
        let chunks = n > 200_000 ? max(1, threads) : 1
        parallel(chunks) { i in
            let lo = r.lowerBound + n * i / chunks, hi = r.lowerBound + n * (i + 1) / chunks
            run(lo, min(hi, backboneCount), backboneLR)
            run(max(lo, backboneCount), hi, lr)
        }
    }
}
