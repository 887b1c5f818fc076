// Open MPI through the C shim: the collectives of a job (MPICollective) and data-parallel
// training's gradient sums over them (MPIDataParallel).

import CMPIShim
import Foundation
import OrthoHashNumerics
import OrthoHashTraining

/// The MPI implementation of `Collective`. Every call is watched against `--collective-timeout`
/// (a helper thread watches Open MPI's blocking collectives when the library is thread-safe;
/// otherwise the shim polls non-blocking ones), or `--io-timeout` after work rank 0 does alone;
/// a failure or a timeout ends the whole job, naming the ranks that did not arrive and where
/// they are.
public final class MPICollective: Collective {
    public let rank: Int
    public let ranks: Int

    /// True when an MPI launcher started this process; otherwise use `SingleProcess`.
    public static var launched: Bool { ohmpi_launched() != 0 }

    /// How long the other ranks wait for work rank 0 does alone (`allowCoordinatorWork`).
    public let coordinatorTimeout: Double

    public init(timeoutSeconds: Double, coordinatorTimeoutSeconds: Double = 900) {
        _ = ohmpi_init()
        rank = Int(ohmpi_rank())
        ranks = Int(ohmpi_size())
        coordinatorTimeout = coordinatorTimeoutSeconds
        ohmpi_set_timeout(timeoutSeconds)
    }

    public func finalize() { ohmpi_finalize() }

    public func labelStep(_ step: Int) { ohmpi_set_step(Int64(step)) }
    public func setActivity(_ what: String) { ohmpi_set_activity(what) }
    public func allowCoordinatorWork() { ohmpi_allow_next_wait(coordinatorTimeout) }

    /// BatchNorm's statistics, the loss's weight sum and the control word.
    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {
        ohmpi_allreduce_sum_f64(values, count, "all-reduce of \(count) float64 (BatchNorm statistics or control word)")
    }

    public func barrier() { ohmpi_barrier("barrier before the gradient sum") }

    public func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8] {
        // The size first, so receivers can size their buffer.
        var count = [Double(bytes.count)]
        if rank != root { count[0] = 0 }
        count.withUnsafeMutableBufferPointer { ohmpi_allreduce_sum_f64($0.baseAddress!, 1, "broadcast size") }
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count[0]))
        if !out.isEmpty { out.withUnsafeMutableBytes { ohmpi_bcast_bytes($0.baseAddress!, $0.count, Int32(root), "broadcast") } }
        return out
    }

    public func allGather(_ bytes: [UInt8]) -> [[UInt8]] {
        var counts = [Int64](repeating: 0, count: ranks)
        counts.withUnsafeMutableBufferPointer { ohmpi_allgather_counts(Int64(bytes.count), $0.baseAddress!, "all-gather sizes") }
        let total = Int(counts.reduce(0, +))
        var all = [UInt8](repeating: 0, count: max(total, 1))
        bytes.withUnsafeBytes { send in
            all.withUnsafeMutableBytes { receive in
                counts.withUnsafeBufferPointer { c in
                    ohmpi_allgatherv_bytes(send.baseAddress, Int64(bytes.count), receive.baseAddress!, c.baseAddress!, "all-gather")
                }
            }
        }
        var out: [[UInt8]] = []
        var offset = 0
        for c in counts { out.append(Array(all[offset..<(offset + Int(c))])); offset += Int(c) }
        return out
    }

    public func abort(_ message: String, code: Int32) -> Never {
        ohmpi_abort(message, code)
    }
}

/// Data-parallel training over MPI. When every node runs the same number L > 1 of ranks, each
/// rank's parameters and gradients live in the node's shared-memory window: node rank l sums its
/// 1/L shard of the node's gradients (reading every rank's segment, in rank order) and then that
/// shard across the nodes with MPI_Allreduce, updates that shard, and copies the others' updated
/// shards from the window. Otherwise (one rank per node, uneven nodes, no room for the window,
/// or ORTHOHASH_SHARED_MEMORY_REDUCE=0 in rank 0's environment) one MPI_Allreduce of all of them.
public final class MPIDataParallel: DataParallel {
    let mpi: MPICollective
    public var collective: Collective { mpi }
    /// Whether the newest store's gradients are in shared memory (nil: no store made yet).
    private var sharedGradients: Bool?

    public init(_ mpi: MPICollective) { self.mpi = mpi }

    public func makeStore(layout: ParameterLayout, optimizer: OptimizerKind) -> ParameterStore {
        let count = layout.count
        let shared = ohmpi_shared_buffer(count)
        sharedGradients = shared != nil
        guard let shared else { return ParameterStore(layout: layout, optimizer: optimizer) }
        // The window goes back when both buffers are gone.
        final class Lease { deinit { ohmpi_shared_release() } }
        let lease = Lease()
        return ParameterStore(layout: layout, optimizer: optimizer,
                              parameters: FloatBuffer(borrowing: shared + count, count: count, release: { _ = lease }),
                              gradients: FloatBuffer(borrowing: shared, count: count, release: { _ = lease }))
    }

    public func reduceGradients(_ gradients: FloatBuffer) -> Range<Int> {
        var lo = 0, hi = 0
        lastBuckets.removeAll(keepingCapacity: true)
        guard bucketsBegun else {
            ohmpi_reduce_shard_f32(gradients.pointer, gradients.count, &lo, &hi, "all-reduce of \(gradients.count) float32 (gradients)")
            return lo..<hi
        }
        bucketsBegun = false
        let n = Int(ohmpi_buckets_finish(gradients.pointer, gradients.count, &lo, &hi, &bucketStarts, &bucketEnds, &bucketBytes,
                                         Int32(bucketBytes.count), "waiting for the gradient buckets' sums (\(gradients.count) float32)"))
        for i in 0..<min(n, bucketBytes.count) {
            lastBuckets.append((start: UInt64(bucketStarts[i] * 1e9), end: UInt64(bucketEnds[i] * 1e9), bytes: bucketBytes[i]))
        }
        return lo..<hi
    }

    /// Where the shim reports each bucket's times and bytes (the worker takes at most 256 a step).
    private var bucketStarts = [Double](repeating: 0, count: 256), bucketEnds = [Double](repeating: 0, count: 256)
    private var bucketBytes = [Int](repeating: 0, count: 256)

    /// Whether a background worker sums buckets while the backward pass runs (MPI_THREAD_MULTIPLE).
    public var overlapsBackward: Bool { mpi.ranks > 1 && ohmpi_overlap_available() != 0 }
    private var precision = GradientPrecision.float32
    public func setGradientPrecision(_ precision: GradientPrecision) {
        self.precision = precision
        ohmpi_set_gradient_bf16(precision == .bf16 ? 1 : 0)
    }
    private var bucketsBegun = false
    public private(set) var lastBuckets: [(start: UInt64, end: UInt64, bytes: Int)] = []

    public func beginGradientBucket(_ gradients: FloatBuffer, _ range: Range<Int>) {
        bucketsBegun = true
        ohmpi_bucket_begin(gradients.pointer, gradients.count, range.lowerBound, range.upperBound)
    }

    public func gatherParameterShards(_ parameters: FloatBuffer, updated: Range<Int>) {
        ohmpi_gather_shards_f32(parameters.pointer, parameters.count, "gather of the updated parameter shards")
    }

    public func gatherMomentShards(_ moments: FloatBuffer, updated: Range<Int>) {
        guard moments.count > 0 else { return }
        ohmpi_gather_node_shards_f32(moments.pointer, moments.count, "gather of the optimizer state shards")
    }

    /// What the newest store's gradient sums go through (before there is one: what they would).
    public var gradientReduction: String {
        var perNode: Int32 = 1, nodes: Int32 = 1
        if mpi.ranks == 1 { return "none (one rank)" }
        let bf16 = precision == .bf16 ? " in bfloat16" : ""
        guard ohmpi_shared_layout(&perNode, &nodes) != 0, sharedGradients != false else { return "MPI_Allreduce" + bf16 }
        return "shared memory within each node (\(perNode) ranks)" + (nodes > 1 ? ", then MPI_Allreduce\(bf16) across \(nodes) nodes" : "")
    }
}
