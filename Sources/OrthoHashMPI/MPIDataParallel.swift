// Data-parallel training over MPI: the store in the node's window or in private memory, and its
// gradient sums run as the store's GradientSumPlan says.

import CMPIShim
import Foundation
import OrthoHashNumerics
import OrthoHashTraining

/// Data-parallel training over MPI. Each store gets a `GradientSumPlan` when it is made: the
/// node's shared-memory window where the job can use one, one MPI_Allreduce otherwise.
public final class MPIDataParallel: DataParallel {
    let mpi: MPICollective
    public var collective: Collective { mpi }
    let window: NodeWindow
    /// The newest store's plan (nil: no store made yet), and that store's buffers: the sums and
    /// gathers are for them only.
    public private(set) var plan: GradientSumPlan?
    private var planned: (gradients: UnsafeMutablePointer<Float>, parameters: UnsafeMutablePointer<Float>)?
    private var precision = GradientPrecision.float32

    /// Every rank calls it.
    public init(_ mpi: MPICollective) {
        self.mpi = mpi
        window = NodeWindow(mpi)
    }

    public func makeStore(layout: ParameterLayout, optimizer: OptimizerKind) -> ParameterStore {
        let count = layout.count
        let lent = window.lend(count: count)
        var plan = GradientSumPlan(path: .of(ranks: mpi.ranks, window: lent != nil), count: count, node: window.node)
        plan.precision = precision
        self.plan = plan
        // The backward pass hands over at most one range per tensor (whole layers).
        rangesPerStep = layout.tensors.count
        reserveBuckets(count: count)
        let store: ParameterStore
        if let lent {
            // The window goes back when both buffers are gone.
            final class Lease {
                let window: NodeWindow
                init(_ window: NodeWindow) { self.window = window }
                deinit { window.giveBack() }
            }
            let lease = Lease(window)
            store = ParameterStore(layout: layout, optimizer: optimizer,
                                   parameters: FloatBuffer(borrowing: lent.parameters, count: count, release: { _ = lease }),
                                   gradients: FloatBuffer(borrowing: lent.gradients, count: count, release: { _ = lease }))
        } else {
            store = ParameterStore(layout: layout, optimizer: optimizer)
        }
        planned = (store.gradients.pointer, store.parameters.pointer)
        return store
    }

    /// The plan, for the newest store's gradients (or parameters) only.
    private func currentPlan(_ buffer: FloatBuffer, parameters: Bool = false) -> GradientSumPlan {
        guard let plan, let planned, buffer.pointer == (parameters ? planned.parameters : planned.gradients), buffer.count == plan.count else {
            preconditionFailure("a sum or gather of a buffer that is not the newest store's")
        }
        return plan
    }

    public func reduceGradients(_ gradients: FloatBuffer) -> Range<Int> {
        let plan = currentPlan(gradients)
        lastBuckets.removeAll(keepingCapacity: true)
        guard plan.path != .none else { return plan.shard }
        bucketPolicy.flush { begin(gradients, $0, plan: plan) }
        guard !buckets.isEmpty else {
            plan.sumWhole(gradients.pointer, what: "all-reduce of \(gradients.count) float32 (gradients)")
            return plan.shard
        }
        let what = "waiting for the gradient buckets' sums (\(gradients.count) float32)"
        do {
            let n = Int(ohmpi_worker_finish(&bucketStarts, &bucketEnds, Int32(bucketStarts.count), what))
            precondition(n == buckets.count, "the gradient worker summed \(n) buckets of \(buckets.count)")
            for (i, range) in buckets.enumerated() {
                lastBuckets.append((start: UInt64(bucketStarts[i] * 1e9), end: UInt64(bucketEnds[i] * 1e9), bytes: range.count * 4))
            }
            buckets.removeAll(keepingCapacity: true)
        }
        plan.finishSums(what: what)
        return plan.shard
    }

    /// The buckets begun this step, in order, and where the worker reports their times.
    private var buckets: [Range<Int>] = []
    private var bucketStarts: [Double] = [], bucketEnds: [Double] = []

    public var nodes: Int { window.node.nodes }
    public var ranksOnNode: Int { window.node.nodeSize }

    /// Across nodes: the largest message Open MPI's TCP transport sends without a rendezvous
    /// (the shim's default, 4 MB and headers, unless the job set it: ohmpi_init).
    public var transportNote: String? {
        let limit = ohmpi_tcp_eager_limit()
        guard nodes > 1, limit >= 0 else { return nil }
        return String(format: "Open MPI's TCP transport sends messages of up to %.2f MB without a rendezvous (btl_tcp_eager_limit; docs/SCALING.md)",
                      Double(limit) / 1_048_576)
    }

    /// Whether a background worker sums buckets while the backward pass runs (MPI_THREAD_MULTIPLE).
    public var overlapsBackward: Bool { mpi.ranks > 1 && ohmpi_worker_available() != 0 }

    public func setGradientPrecision(_ precision: GradientPrecision) {
        self.precision = precision
        plan?.precision = precision
    }
    public private(set) var lastBuckets: [(start: UInt64, end: UInt64, bytes: Int)] = []

    public func beginGradientBucket(_ gradients: FloatBuffer, _ range: Range<Int>) {
        let plan = currentPlan(gradients)
        guard plan.path != .none, !range.isEmpty else { return }
        bucketPolicy.add(range) { begin(gradients, $0, plan: plan) }
    }

    private func begin(_ gradients: FloatBuffer, _ bucket: Range<Int>, plan: GradientSumPlan) {
        precondition(buckets.count < bucketStarts.count, "more gradient buckets in a step than the policy allows")
        buckets.append(bucket)
        var sum = plan.sum(of: bucket, in: gradients.pointer)
        ohmpi_worker_begin(&sum)
    }

    /// How the backward pass's ranges become buckets (`--gradient-bucket-mb`); set before the store is made.
    private var bucketPolicy = GradientBuckets(bytes: 0)
    private var rangesPerStep = 0
    public func setGradientBuckets(bytes: Int) {
        precondition(buckets.isEmpty && bucketPolicy.pending == nil, "the bucket size changed during a step")
        bucketPolicy = GradientBuckets(bytes: bytes)
        if let plan { reserveBuckets(count: plan.count) }
    }

    /// Room for the most buckets a step of the newest store can have: nothing allocated per step.
    private func reserveBuckets(count: Int) {
        let most = bucketPolicy.maximumBuckets(count: count, ranges: rangesPerStep)
        buckets.reserveCapacity(most)
        bucketStarts = [Double](repeating: 0, count: most)
        bucketEnds = bucketStarts
        if overlapsBackward { ohmpi_worker_reserve(Int32(most)) }
    }

    public func gatherParameterShards(_ parameters: FloatBuffer) {
        currentPlan(parameters, parameters: true).gatherParameters(what: "gather of the updated parameter shards")
    }

    public func gatherMomentShards(_ moments: FloatBuffer) {
        guard moments.count > 0, let plan, plan.path == .window else { return }
        precondition(plan.count == moments.count, "optimizer moments of another store")
        plan.bounds.withUnsafeBufferPointer { ohmpi_node_allgatherv_f32(moments.pointer, $0.baseAddress!, "gather of the optimizer state shards") }
    }

    /// What the newest store's gradient sums go through (before there is one: what they would).
    public var gradientReduction: String {
        if let plan { return plan.description }
        var prospective = GradientSumPlan(path: .of(ranks: mpi.ranks, window: window.enabled), count: 0, node: window.node)
        prospective.precision = precision
        return prospective.description
    }
}
