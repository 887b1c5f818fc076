// This rank's rows of each global batch, in the manner of llm.c's data loader
// (`dataloader_init(&loader, ..., B, T, process_rank, num_processes, ...)`, then one batch per
// step). Dimensions: N = global batch, B = local batch (N / ranks), D = features, C = classes.

import OrthoHashNumerics

/// Where a batch is in the run: epoch (0-based) and step within it.
public struct BatchPosition: Equatable, Sendable {
    public var epoch: Int
    public var step: Int
    public init(epoch: Int, step: Int) { self.epoch = epoch; self.step = step }
}

/// One local batch: B rows of features and their targets, valid until the next `batch` call.
public struct Batch {
    public let input: UnsafePointer<Float>   // (B, D)
    public let targets: BatchTargets
}

/// Epoch e's data order is `Xoshiro256(seed, stream: epochPermutation + e).permutation(rows)`: a
/// function of the seed and the epoch alone. Step s of the epoch is the global batch at
/// [s N, (s + 1) N) of that order, and rank r's part of it the B rows from s N + r B. So every
/// number of ranks that divides N trains on the same global batches, and a run resumes at any
/// position by asking for it. The last partial batch of an epoch is dropped.
public final class BatchLoader {
    public let split: Split
    public let classes: Int
    public let globalBatch: Int
    public let localBatch: Int
    public let rank: Int
    public let seed: UInt64
    public var stepsPerEpoch: Int { split.rows / globalBatch }

    let input: FloatBuffer                                 // (B, D)
    var indices: [Int32]                                   // (B) rows of the split
    let singleTargets: UnsafeMutablePointer<Int32>         // (B)
    let multiTargets: FloatBuffer                          // (B, C) multi-label only
    private var permutation: [Int32] = []
    private var permutationEpoch = -1

    public init(split: Split, classes: Int, globalBatch: Int, rank: Int, ranks: Int, seed: UInt64) {
        precondition(globalBatch % ranks == 0 && globalBatch <= split.rows, "global batch \(globalBatch) over \(ranks) ranks and \(split.rows) rows")
        self.split = split; self.classes = classes; self.globalBatch = globalBatch
        self.rank = rank; self.seed = seed
        localBatch = globalBatch / ranks
        input = FloatBuffer(count: localBatch * split.features.dim)
        indices = [Int32](repeating: 0, count: localBatch)
        singleTargets = .allocate(capacity: localBatch)
        singleTargets.initialize(repeating: 0, count: localBatch)
        multiTargets = FloatBuffer(count: split.labels.isMulti ? localBatch * classes : 0)
    }

    deinit { singleTargets.deallocate() }

    /// This rank's part of the global batch at `position`: gathered rows and their targets.
    public func batch(at position: BatchPosition) throws -> Batch {
        precondition(position.step < stepsPerEpoch, "step \(position.step) of an epoch of \(stepsPerEpoch)")
        if position.epoch != permutationEpoch {
            var rng = Xoshiro256(seed: seed, stream: RandomStream.epochPermutation.rawValue + UInt64(position.epoch))
            permutation = rng.permutation(split.rows)
            permutationEpoch = position.epoch
        }
        let B = localBatch, C = classes
        let first = position.step * globalBatch + rank * B
        for i in 0..<B { indices[i] = permutation[first + i] }
        try indices.withUnsafeBufferPointer { try split.features.gather($0, epoch: position.epoch, into: input.pointer) }
        switch split.labels {
        case .single(let labels):
            for i in 0..<B { singleTargets[i] = labels[Int(indices[i])] }
            return Batch(input: input.pointer, targets: .single(singleTargets))
        case .multi(_, let labels):
            for i in 0..<B { for c in 0..<C { multiTargets[i * C + c] = Float(labels[Int(indices[i]) * C + c]) } }
            return Batch(input: input.pointer, targets: .multi(multiTargets.pointer))
        }
    }
}
