// This rank's rows of each global batch, in the manner of llm.c's data loader
// (`dataloader_init(&loader, ..., B, T, process_rank, num_processes, ...)`, then one batch per
// step). Dimensions: N = global batch, B = local batch (N / ranks), D = features, C = classes.

import Dispatch
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
///
/// With `prefetch` (images, whose rows are decoded when read), the rows of the next position are
/// gathered on a thread of their own while the step computes, into a second buffer; asking for
/// that position then only waits for what is left. An error there (a missing image) is thrown
/// when its batch is asked for, at the step that needs it.
public final class BatchLoader {
    public let split: Split
    public let classes: Int
    public let globalBatch: Int
    public let localBatch: Int
    public let rank: Int
    public let seed: UInt64
    public var stepsPerEpoch: Int { split.rows / globalBatch }

    var input: FloatBuffer                                 // (B, D)
    var indices: [Int32]                                   // (B) rows of the split
    /// Whether the next batch is gathered in the background (set for images).
    public let prefetch: Bool
    private var spare: FloatBuffer                         // (B, D) the prefetched rows
    private var spareIndices: [Int32]
    private var pending: (position: BatchPosition, group: DispatchGroup, failure: Failure)?
    private let queue = DispatchQueue(label: "orthohash.prefetch")
    /// A prefetch's error, set on its thread and read after waiting for it.
    final class Failure: @unchecked Sendable { var error: Error? }
    let singleTargets: UnsafeMutablePointer<Int32>         // (B)
    let multiTargets: FloatBuffer                          // (B, C) multi-label only
    /// The data order of the last two epochs asked for (a prefetch may look one epoch ahead).
    private var permutations: [(epoch: Int, order: [Int32])] = []

    public init(split: Split, classes: Int, globalBatch: Int, rank: Int, ranks: Int, seed: UInt64, prefetch: Bool = false) {
        precondition(globalBatch % ranks == 0 && globalBatch <= split.rows, "global batch \(globalBatch) over \(ranks) ranks and \(split.rows) rows")
        self.split = split; self.classes = classes; self.globalBatch = globalBatch
        self.rank = rank; self.seed = seed
        localBatch = globalBatch / ranks
        input = FloatBuffer(count: localBatch * split.features.dim)
        indices = [Int32](repeating: 0, count: localBatch)
        self.prefetch = prefetch
        spare = FloatBuffer(count: prefetch ? localBatch * split.features.dim : 0)
        spareIndices = indices
        singleTargets = .allocate(capacity: localBatch)
        singleTargets.initialize(repeating: 0, count: localBatch)
        multiTargets = FloatBuffer(count: split.labels.isMulti ? localBatch * classes : 0)
    }

    deinit {
        pending?.group.wait()
        singleTargets.deallocate()
    }

    /// Epoch `epoch`'s order of the rows.
    private func order(_ epoch: Int) -> [Int32] {
        if let p = permutations.first(where: { $0.epoch == epoch }) { return p.order }
        var rng = Xoshiro256(seed: seed, stream: RandomStream.epochPermutation.rawValue + UInt64(epoch))
        let order = rng.permutation(split.rows)
        permutations = Array(permutations.suffix(1)) + [(epoch, order)]
        return order
    }

    /// This rank's rows of the global batch at `position`.
    private func rows(at position: BatchPosition, into out: inout [Int32]) {
        let order = order(position.epoch), first = position.step * globalBatch + rank * localBatch
        for i in 0..<localBatch { out[i] = order[first + i] }
    }

    /// The position after `position`.
    func next(_ position: BatchPosition) -> BatchPosition {
        position.step + 1 < stepsPerEpoch ? BatchPosition(epoch: position.epoch, step: position.step + 1) : BatchPosition(epoch: position.epoch + 1, step: 0)
    }

    /// This rank's part of the global batch at `position`: gathered rows and their targets.
    public func batch(at position: BatchPosition) throws -> Batch {
        precondition(position.step < stepsPerEpoch, "step \(position.step) of an epoch of \(stepsPerEpoch)")
        let B = localBatch, C = classes
        if let p = pending, p.position == position {
            p.group.wait()
            pending = nil
            swap(&input, &spare)
            swap(&indices, &spareIndices)
            if let error = p.failure.error { throw error }
        } else {
            pending?.group.wait()
            pending = nil
            rows(at: position, into: &indices)
            try indices.withUnsafeBufferPointer { try split.features.gather($0, epoch: position.epoch, into: input.pointer) }
        }
        if prefetch {
            // The next position's rows into the spare buffer while this batch trains.
            let ahead = next(position), group = DispatchGroup(), failure = Failure()
            rows(at: ahead, into: &spareIndices)
            let rows = spareIndices, out = spare, features = split.features
            group.enter()
            queue.async {
                do { try rows.withUnsafeBufferPointer { try features.gather($0, epoch: ahead.epoch, into: out.pointer) } } catch { failure.error = error }
                group.leave()
            }
            pending = (ahead, group, failure)
        }
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
