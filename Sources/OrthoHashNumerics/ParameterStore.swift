// The trainable state of a model: parameters, their gradients and the optimizer's moments, each
// one flat buffer with the same named layout. Dimension: P = parameters.

/// Where each named tensor of the model lives in the flat buffers, with PyTorch's names (as the
/// exported safetensors file and the reference code use them):
/// ```
/// the backbone's tensors (Backbone.swift), e.g. for the mlp
///   backbone.fc.{i}.weight (H_i, H_{i-1})   backbone.fc.{i}.bias (H_i)
/// hash_fc.0.weight (K, F)                  the hash layer's Linear, no bias
/// hash_fc.1.weight (K), hash_fc.1.bias (K)  its BatchNorm's gamma and beta
/// ```
/// in that order. [0, backboneCount) is the backbone's parameter group (its own learning rate).
public struct ParameterLayout: Equatable, Sendable {
    public struct Tensor: Equatable, Sendable {
        public let name: String
        public let offset: Int
        public let shape: [Int]
        public var count: Int { shape.reduce(1, *) }
        public var range: Range<Int> { offset..<(offset + count) }

        public init(name: String, offset: Int, shape: [Int]) { self.name = name; self.offset = offset; self.shape = shape }
    }

    public let tensors: [Tensor]
    public let backboneCount: Int
    public var count: Int { tensors.last.map { $0.range.upperBound } ?? 0 }

    /// Tensors laid out back to back in the order given.
    public init(tensors shapes: [(name: String, shape: [Int])], backboneTensors: Int) {
        var offset = 0, backbone = 0
        var tensors: [Tensor] = []
        for (i, t) in shapes.enumerated() {
            tensors.append(Tensor(name: t.name, offset: offset, shape: t.shape))
            offset += t.shape.reduce(1, *)
            if i < backboneTensors { backbone = offset }
        }
        self.tensors = tensors
        backboneCount = backbone
    }

    /// The layout of a model: its backbone's layers' tensors in order, then the hash layer's.
    public init(_ model: ModelConfig) {
        let backbone = model.backboneLayers().flatMap(\.tensors)
        let hash: [(name: String, shape: [Int])] = [("hash_fc.0.weight", [model.nbit, model.featureDim]),
                                                    ("hash_fc.1.weight", [model.nbit]), ("hash_fc.1.bias", [model.nbit])]
        self.init(tensors: backbone + hash, backboneTensors: backbone.count)
    }

    public subscript(name: String) -> Tensor {
        guard let t = tensors.first(where: { $0.name == name }) else { preconditionFailure("no tensor '\(name)' in the layout") }
        return t
    }
}

/// Parameters, gradients and optimizer moments in flat buffers of one layout (P elements each).
///
/// **The zero-gradient rule.** The backward pass adds into the gradients (its GEMMs run with
/// beta = 1, and no pass clears them first), so they must hold zeros when a step begins. This
/// store keeps that true and knows whether it holds:
/// - the buffers start at zero;
/// - once the gradients are summed over the ranks, the elements outside this rank's shard (the
///   ones it does not update, whose addends the other ranks have summed) are cleared:
///   `clearGradients(outside:)`;
/// - the update clears the shard's elements as it reads them, in the same pass (`update`).
/// `gradientsAreZero` says whether every element is known to be zero; the backward pass reads
/// it instead of being told, because zeros are what let it prove the new gradients finite
/// without reading them (MagnitudeBound).
///
/// The data-parallel back end allocates the store (the ranks of a node may keep parameters and
/// gradients in one shared-memory window); the moments are always this process's own.
public final class ParameterStore {
    public let layout: ParameterLayout
    public let parameters: FloatBuffer       // (P)
    public let gradients: FloatBuffer        // (P)
    /// Adam's first moment or SGD's momentum buffer; empty when the store trains nothing.
    public let moment1: FloatBuffer          // (P)
    /// Adam's second moment; empty for SGD.
    public let moment2: FloatBuffer          // (P)
    /// Elements of the gradients that may be nonzero; nil when all are zero.
    public private(set) var unclearedGradients: Range<Int>? = nil
    /// The elements of the moments the last update changed, when it changed only this rank's
    /// shard: the other ranks hold the rest, and a checkpoint needs them gathered first.
    public private(set) var momentShard: Range<Int>? = nil

    public var count: Int { layout.count }
    public var gradientsAreZero: Bool { unclearedGradients == nil }

    /// Zeroed buffers, or `parameters` and `gradients` given by the back end (zeroed, of the
    /// layout's size). `optimizer` sizes the moments (nil: none, for a model that only encodes).
    public init(layout: ParameterLayout, optimizer: OptimizerKind?, parameters: FloatBuffer? = nil, gradients: FloatBuffer? = nil) {
        let P = layout.count
        precondition(parameters.map { $0.count == P } ?? true && gradients.map { $0.count == P } ?? true,
                     "parameter store of \(P) elements given buffers of \(parameters?.count ?? -1) and \(gradients?.count ?? -1)")
        self.layout = layout
        self.parameters = parameters ?? FloatBuffer(count: P)
        self.gradients = gradients ?? FloatBuffer(count: P)
        moment1 = FloatBuffer(count: optimizer == nil ? 0 : P)
        moment2 = FloatBuffer(count: optimizer == .adam ? P : 0)
    }

    /// The backward pass wrote the gradients.
    func noteGradientsWritten() { unclearedGradients = 0..<count }

    /// After the sum over ranks: clears the elements outside `shard`, which this rank does not update.
    public func clearGradients(outside shard: Range<Int>) {
        precondition(shard.lowerBound >= 0 && shard.upperBound <= count, "shard \(shard) outside 0..<\(count)")
        guard let dirty = unclearedGradients else { return }
        let g = gradients.pointer
        if shard.lowerBound > dirty.lowerBound { (g + dirty.lowerBound).update(repeating: 0, count: shard.lowerBound - dirty.lowerBound) }
        if dirty.upperBound > shard.upperBound { (g + shard.upperBound).update(repeating: 0, count: dirty.upperBound - shard.upperBound) }
        let kept = dirty.clamped(to: shard)
        unclearedGradients = kept.isEmpty ? nil : kept
    }

    /// One optimizer step over the elements `shard` (all of them in one process) with the hash
    /// layer's learning rate `lr`, clearing their gradients in the same pass.
    public func update(with optimizer: Optimizer, lr: Float, shard: Range<Int>? = nil, threads: Int = 1) {
        let range = shard ?? 0..<count
        optimizer.update(self, lr: lr, range: range, threads: threads)
        if let dirty = unclearedGradients, range.lowerBound <= dirty.lowerBound && dirty.upperBound <= range.upperBound {
            unclearedGradients = nil
        }
        momentShard = range == 0..<count ? nil : range
    }

    /// The other ranks' shards of the moments were copied in.
    public func noteMomentsWhole() { momentShard = nil }
}
