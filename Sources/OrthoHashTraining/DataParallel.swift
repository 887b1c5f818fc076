// Data-parallel training as one rank sees it: every rank computes the gradients of its slice of
// the global batch, then
// ```
// let summed = dataParallel.sumGradients(store, local)       // over the ranks, where this rank needs them
// dataParallel.update(store, optimizer, lr: lr, shard: summed.shard)
// dataParallel.gatherParameters(store, shard: summed.shard)  // every rank's parameters whole again
// ```
// In one process the sum is the identity and the shard is everything. Under MPI the ranks of a
// node may share the update: each sums and updates one shard and copies the others' (OrthoHashMPI).

import CKernels
import OrthoHashNumerics

/// The back end of data-parallel training: where the parameters and gradients live, and the
/// three collective operations on them. Training uses the calls of the extension below.
public protocol DataParallel: AnyObject {
    /// The other communication (broadcasts, gathers, BatchNorm's statistics, aborting the job).
    var collective: Collective { get }
    /// How the gradients are summed, for the log and summary.json.
    var gradientReduction: String { get }
    /// A zeroed store for a model of `layout`, with moments for `optimizer`; every rank calls it.
    /// Its parameters and gradients may live in memory the ranks of a node share.
    func makeStore(layout: ParameterLayout, optimizer: OptimizerKind) -> ParameterStore
    /// Sums the gradients over all ranks where this rank needs them, the elements it updates,
    /// and returns that range (all of them unless the ranks of a node share the update). The
    /// other elements are left as they were. After `beginGradientBucket`: waits for the buckets.
    func reduceGradients(_ gradients: FloatBuffer) -> Range<Int>
    /// Whether buckets of the gradients can be summed while the backward pass still runs.
    var overlapsBackward: Bool { get }
    /// The nodes the job spans (hosts; 1 in one process).
    var nodes: Int { get }
    /// The ranks on this rank's node (1 in one process): they share its memory.
    var ranksOnNode: Int { get }
    /// A line for the log on how the network transport is set up (nil: nothing to say).
    var transportNote: String? { get }
    /// The precision of gradient sums that cross the network (`--gradient-sum`); every rank sets the same.
    func setGradientPrecision(_ precision: GradientPrecision)
    /// The size of the buckets the backward pass's ranges are merged and split into with overlap
    /// (`--gradient-bucket-mb`; 0: one per layer); every rank sets the same, between steps.
    func setGradientBuckets(bytes: Int)
    /// Starts summing `range` of `gradients` in the background: the backward pass has finished
    /// those elements. Every rank begins the same ranges in the same order (the backward's:
    /// hash layer first), and together they cover the buffer; `reduceGradients` then waits.
    func beginGradientBucket(_ gradients: FloatBuffer, _ range: Range<Int>)
    /// The buckets the last `reduceGradients` waited for: when each was summed (the timeline's
    /// clock) and its bytes.
    var lastBuckets: [(start: UInt64, end: UInt64, bytes: Int)] { get }
    /// After every rank updated its shard: the other ranks' shards of `parameters` copied in.
    func gatherParameterShards(_ parameters: FloatBuffer)
    /// The same for optimizer moments, which only checkpoints need whole.
    func gatherMomentShards(_ moments: FloatBuffer)
}

/// The precision of gradient sums over the network (`--gradient-sum`), like Horovod's
/// compression: bf16 halves the bytes on slow links at the cost of rounding each partial sum to
/// 8 significant bits. The node's shared-memory sums stay float32.
public enum GradientPrecision: String, CaseIterable, Codable, Sendable {
    case float32, bf16
}

/// Whether the gradients are summed while the backward pass runs (`--gradient-overlap`). `auto`
/// (the default) follows the measurements (docs/SCALING.md, README): on for AlexNet and VGG-16
/// when the job spans nodes, where a step computes for a second or more and the large fully
/// connected layers' gradients (most of the bytes) are final first, so their sum runs behind the
/// convolutions' backward pass (AlexNet on 2 namespace hosts at 10 and 25 Gb/s: 0.90-0.95x one
/// host against 0.86-0.93x without); off otherwise: on one node (the window's sums are memory
/// copies), and for the small models, whose sums cost the cores more than they hide (the MLP
/// across hosts: 0.87-0.98x of no overlap).
public enum GradientOverlap: String, CaseIterable, Codable, Sendable {
    case on, off, auto

    /// Whether a step on `dataParallel` with `backbone` overlaps.
    public func applies(to dataParallel: DataParallel, backbone: BackboneKind) -> Bool {
        dataParallel.overlapsBackward && resolved(nodes: dataParallel.nodes, backbone: backbone)
    }

    /// What `auto` means for a job of `nodes` nodes training `backbone`; on and off as they say.
    public func resolved(nodes: Int, backbone: BackboneKind) -> Bool {
        switch self {
        case .on: return true
        case .off: return false
        case .auto: return nodes > 1 && [.alexnet, .vgg16].contains(backbone)
        }
    }
}

/// One step's figures over all ranks, and what this rank updates.
public struct SummedStep: Equatable {
    public enum Verdict: Equatable {
        /// Every rank's loss and gradients, and their sum, are finite.
        case finite
        /// This rank (the lowest such) had a non-finite loss or gradient.
        case nonFinite(rank: Int)
        /// Each rank's gradients are finite, but their sum over the ranks overflows.
        case sumOverflows
    }
    /// The loss of the global batch.
    public var loss: Double
    /// Correct rows of the global batch.
    public var correct: Int
    public var verdict: Verdict
    /// The elements of the summed gradients this rank holds and updates.
    public var shard: Range<Int>
    /// Ranks asked to stop (a signal) before this step's sum: all stop after it.
    public var stopRequests: Int = 0
}

public extension DataParallel {
    var overlapsBackward: Bool { false }
    var nodes: Int { 1 }
    var ranksOnNode: Int { 1 }
    var transportNote: String? { nil }
    func setGradientPrecision(_ precision: GradientPrecision) {}
    func setGradientBuckets(bytes: Int) {}
    func beginGradientBucket(_ gradients: FloatBuffer, _ range: Range<Int>) {}
    var lastBuckets: [(start: UInt64, end: UInt64, bytes: Int)] { [] }
    var rank: Int { collective.rank }
    var ranks: Int { collective.ranks }

    /// Sums the gradients over the ranks (this rank's shard of them; the rest cleared, which
    /// keeps the store's zero-gradient rule) and, in one control word, the loss, the correct
    /// rows, every rank's finiteness verdict and whether it was asked to stop. `sumVouched` says
    /// this rank's gradient report covers their sum (GradientReport.sumFinite). Where some
    /// rank's does not, each rank reads its shard of the sum, with one more reduction of one number.
    func sumGradients(_ store: ParameterStore, loss: Double, correct: Int, finite: Bool, sumVouched: Bool,
                      stopRequested: Bool = false, timeline: Timeline? = nil) -> SummedStep {
        let started = Timeline.now()
        let shard = reduceGradients(store.gradients)
        timeline?.end(.gradientSum, since: started, bytes: ranks > 1 ? 4 * store.count : 0)
        for b in lastBuckets { timeline?.add(.bucketSum, start: b.start, end: b.end, bytes: b.bytes, track: 1) }
        store.clearGradients(outside: shard)
        let controlStarted = Timeline.now()
        defer { timeline?.end(.control, since: controlStarted) }
        let n = ranks
        // Loss, correct count, one non-finite flag per rank, the count of ranks that could not
        // show that the sum of the gradients is finite, and the count of ranks asked to stop.
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: 4 + n) { control in
            control.initialize(repeating: 0)
            control[0] = loss; control[1] = Double(correct)
            control[2 + rank] = loss.isFinite && finite ? 0 : 1
            control[2 + n] = sumVouched ? 0 : 1
            control[3 + n] = stopRequested ? 1 : 0
            collective.sum(control.baseAddress!, count: 4 + n)
            var summed = SummedStep(loss: control[0], correct: Int(control[1]), verdict: .finite, shard: shard,
                                    stopRequests: Int(control[3 + n]))
            if let bad = (0..<n).first(where: { control[2 + $0] != 0 }) {
                summed.verdict = .nonFinite(rank: bad)
            } else if n > 1 && control[2 + n] != 0 {
                var overflow = oh_all_finite(store.gradients.pointer + shard.lowerBound, shard.count) != 0 ? 0.0 : 1.0
                collective.sum(&overflow, count: 1)
                if overflow != 0 { summed.verdict = .sumOverflows }
            }
            return summed
        }
    }

    /// This rank's shard of the parameters updated with the summed gradients, whose elements
    /// are cleared in the same pass.
    func update(_ store: ParameterStore, _ optimizer: Optimizer, lr: Float, shard: Range<Int>, threads: Int) {
        store.update(with: optimizer, lr: lr, shard: shard, threads: threads)
    }

    /// Every rank's parameters whole again after a sharded update.
    func gatherParameters(_ store: ParameterStore, shard: Range<Int>) {
        guard shard != 0..<store.count else { return }
        gatherParameterShards(store.parameters)
    }

    /// Every rank's optimizer moments whole (before a checkpoint); all ranks call it.
    func gatherOptimizerState(_ store: ParameterStore) {
        guard store.momentShard != nil else { return }
        gatherMomentShards(store.moment1)
        gatherMomentShards(store.moment2)
        store.noteMomentsWhole()
    }
}

/// One process: nothing to sum or gather.
public final class OneProcess: DataParallel {
    public let collective: Collective = SingleProcess()
    public init() {}
    public var gradientReduction: String { "none (one rank)" }
    public func makeStore(layout: ParameterLayout, optimizer: OptimizerKind) -> ParameterStore {
        ParameterStore(layout: layout, optimizer: optimizer)
    }
    public func reduceGradients(_ gradients: FloatBuffer) -> Range<Int> { 0..<gradients.count }
    public func gatherParameterShards(_ parameters: FloatBuffer) {
        preconditionFailure("one process does not shard the update")
    }
    public func gatherMomentShards(_ moments: FloatBuffer) {
        preconditionFailure("one process does not shard the update")
    }
}
