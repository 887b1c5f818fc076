// The data-parallel policy: which path a run's gradient sums take, which shard each rank
// updates, and how the buckets of an overlapped backward pass are summed. The C shim only runs
// what a plan describes (ohmpi_sum); read this file to know what a run does.

import CMPIShim
import Foundation
import OrthoHashTraining

/// This rank's place in the job, as the MPI library reports it.
public struct NodeLayout: Equatable, Sendable {
    /// This rank's rank on its node, the node's ranks, and the nodes (the ranks holding this node rank).
    public var nodeRank: Int, nodeSize: Int, nodes: Int
    /// Every node runs the same number of ranks.
    public var uniform: Bool

    static var current: NodeLayout {
        var rank: Int32 = 0, size: Int32 = 1, nodes: Int32 = 1, uniform: Int32 = 1
        ohmpi_node_layout(&rank, &size, &nodes, &uniform)
        return NodeLayout(nodeRank: Int(rank), nodeSize: Int(size), nodes: Int(nodes), uniform: uniform != 0)
    }
}

/// How the gradients of one store are summed over the ranks, chosen once when the store is made.
///
/// - `window`: every node runs the same number L > 1 of ranks and the store lives in the node's
///   shared-memory window. Node rank l owns shard l of L equal shards: after a barrier of the
///   node it adds that shard of every rank's gradients in node-rank order (the same order on every
///   run), sums the result across the nodes with MPI_Allreduce, updates that shard, and the others
///   copy it from the window.
/// - `allReduce`: one MPI_Allreduce of all the gradients; every rank updates all of them.
/// - `none`: one rank.
///
/// With `bf16`, the part of a sum that crosses the network (MPI_Allreduce) is in bfloat16; the
/// window's sums stay float32.
public struct GradientSumPlan: Equatable, Sendable {
    public enum Path: Equatable, Sendable {
        case none, allReduce, window
        /// The path of a job of `ranks` ranks whose store does or does not live in the node's window.
        public static func of(ranks: Int, window: Bool) -> Path { ranks == 1 ? .none : window ? .window : .allReduce }
    }
    public let path: Path
    public let count: Int
    public let node: NodeLayout
    /// Node rank k updates [bounds[k], bounds[k + 1]) (the window), or everything.
    public let bounds: [Int]
    public var precision = GradientPrecision.float32

    public init(path: Path, count: Int, node: NodeLayout) {
        self.path = path
        self.count = count
        self.node = node
        bounds = path == .window ? (0...node.nodeSize).map { count * $0 / node.nodeSize } : [0, count]
    }

    /// The elements this rank updates.
    public var shard: Range<Int> {
        path == .window ? bounds[node.nodeRank]..<bounds[node.nodeRank + 1] : 0..<count
    }

    /// This rank's part in summing `range` of `gradients` (the whole buffer after the backward
    /// pass, or one bucket during it): its intersection with the shard on the window path, all of
    /// it otherwise. With `window`, every rank of the node must run it, even with nothing to add.
    public func sum(of range: Range<Int>, in gradients: UnsafeMutablePointer<Float>) -> ohmpi_sum {
        switch path {
        case .none:
            return ohmpi_sum(buffer: gradients, lo: range.lowerBound, hi: range.lowerBound, window: 0, group: -1, bf16: 0)
        case .allReduce:
            return ohmpi_sum(buffer: gradients, lo: range.lowerBound, hi: range.upperBound, window: 0,
                             group: Int32(OHMPI_WORLD), bf16: precision == .bf16 ? 1 : 0)
        case .window:
            let part = range.clamped(to: shard)
            return ohmpi_sum(buffer: gradients, lo: part.lowerBound, hi: part.upperBound, window: 1,
                             group: node.nodes > 1 ? Int32(OHMPI_CROSS) : -1, bf16: precision == .bf16 ? 1 : 0)
        }
    }

    /// Sums all of `gradients` on this thread, watched: afterwards this rank's shard holds the
    /// total. Every rank calls it.
    public func sumWhole(_ gradients: UnsafeMutablePointer<Float>, what: String) {
        guard path != .none else { return }
        var part = sum(of: 0..<count, in: gradients)
        ohmpi_sum_f32(&part, what)
        finishSums(what: what)
    }

    /// After the sums of all the buckets: on the window path, a barrier, after which every shard
    /// holds its total and nobody reads the addends any more.
    public func finishSums(what: String) {
        if path == .window { ohmpi_window_barrier(what) }
    }

    /// After every rank updated its shard in the window: the others' shards copied into this
    /// rank's parameters. No barrier after: the owners change their shards again only in the
    /// next update, after the next step's sum, whose first barrier every rank reaches only once
    /// it has copied.
    public func gatherParameters(what: String) {
        precondition(path == .window, "a parameter gather outside the shared window")
        ohmpi_window_barrier(what)  // every shard is updated
        for k in 0..<node.nodeSize where k != node.nodeRank {
            ohmpi_window_copy_parameters(Int32(k), bounds[k], bounds[k + 1])
        }
    }

    /// For the log and summary.json.
    public var description: String {
        let bf16 = precision == .bf16 ? " in bfloat16" : ""
        switch path {
        case .none: return "none (one rank)"
        case .allReduce: return "MPI_Allreduce" + bf16
        case .window:
            return "shared memory within each node (\(node.nodeSize) ranks)"
                + (node.nodes > 1 ? ", then MPI_Allreduce\(bf16) across \(node.nodes) nodes" : "")
        }
    }
}

/// How the ranges the backward pass finishes become the gradient worker's buckets (with
/// overlap). The pass hands over whole layers, from the last to the first, each range just below
/// the one before; a bucket gathers them until it holds at least `floats` elements, and a range
/// larger than that (AlexNet's fc6: 151 MB) is split into near-equal pieces of at most `floats`,
/// begun from the top down. The pass's last range (the one starting at element 0) ends the last
/// bucket. `floats` 0: one bucket per range, as handed over (runs stored before buckets had a size).
/// Each element is summed in one bucket, so with 2 ranks (one addition per element) every
/// bucket size gives the same bits.
public struct GradientBuckets: Equatable, Sendable {
    public let floats: Int
    /// The ranges handed over and not yet begun: one range, just above the next one's.
    public private(set) var pending: Range<Int>? = nil

    public init(bytes: Int) { floats = max(0, bytes / 4) }

    /// At most the buckets of a buffer of `count` elements whose pass hands over `ranges` ranges.
    public func maximumBuckets(count: Int, ranges: Int) -> Int { floats == 0 ? ranges : ranges + count / floats + 1 }

    /// Takes the pass's next `range`; `begin` gets each bucket that is complete, in order.
    public mutating func add(_ range: Range<Int>, begin: (Range<Int>) -> Void) {
        guard !range.isEmpty else { return }
        if let p = pending, p.lowerBound != range.upperBound { flush(begin: begin) }
        pending = range.lowerBound..<(pending?.upperBound ?? range.upperBound)
        if floats == 0 || pending!.count >= floats || range.lowerBound == 0 { flush(begin: begin) }
    }

    /// Begins what is pending: in near-equal pieces of at most `floats`, from the top down.
    public mutating func flush(begin: (Range<Int>) -> Void) {
        guard let p = pending else { return }
        pending = nil
        let pieces = floats == 0 ? 1 : (p.count + floats - 1) / floats
        for i in stride(from: pieces - 1, through: 0, by: -1) {
            begin((p.lowerBound + p.count * i / pieces)..<(p.lowerBound + p.count * (i + 1) / pieces))
        }
    }
}

/// The node's shared-memory window as the job uses it: allocated the first time a store asks
/// for it, then lent to one store at a time. Open MPI backs it with a file in
/// osc_sm_backing_directory (/dev/shm); a container's small /dev/shm (Docker's default is 64 MB)
/// would fail the allocation or, worse, fault when the pages are touched, so without room for
/// the node's segments the ranks sum through MPI instead, with a warning.
final class NodeWindow {
    let mpi: MPICollective
    let node: NodeLayout
    /// Whether this job may use a window: nodes of the same number of ranks, more than one, and
    /// no ORTHOHASH_SHARED_MEMORY_REDUCE=0 in rank 0's environment (which decides for the job).
    let enabled: Bool
    private var segment: UnsafeMutablePointer<Float>?
    private var capacity = 0
    private var lent = false

    /// Every rank calls it (a broadcast of rank 0's setting).
    init(_ mpi: MPICollective) {
        self.mpi = mpi
        node = .current
        var wanted = [ProcessInfo.processInfo.environment["ORTHOHASH_SHARED_MEMORY_REDUCE"] == "0" ? 0.0 : 1.0]
        mpi.broadcastDouble(&wanted)
        enabled = wanted[0] != 0 && node.uniform && node.nodeSize > 1
    }

    /// This rank's gradients and parameters in the window, zeroed, for `count` elements; nil
    /// (on every rank alike) when the job does not use a window, the window is lent, it is smaller
    /// than `count`, or there is no room for it. Every rank calls it.
    func lend(count: Int) -> (gradients: UnsafeMutablePointer<Float>, parameters: UnsafeMutablePointer<Float>)? {
        guard enabled, count > 0 else { return nil }
        let usable = !lent && (segment == nil || count <= capacity)
        // Bytes of the node's segments (gradients and parameters of every node rank), with margin.
        let needed = Double(node.nodeSize) * 2 * Double(count) * 4 * 1.25 + Double(16 << 20)
        var free: Double? = nil
        let directory = ProcessInfo.processInfo.environment["OMPI_MCA_osc_sm_backing_directory"].flatMap { $0.isEmpty ? nil : $0 } ?? "/dev/shm"
        if usable && segment == nil {
            var fs = statvfs()
            if statvfs(directory, &fs) == 0 { free = Double(fs.f_bavail) * Double(fs.f_frsize) }
        }
        let cramped = free.map { $0 < needed } ?? false
        var votes = [usable ? 0.0 : 1.0, cramped ? 1.0 : 0.0]
        votes.withUnsafeMutableBufferPointer { mpi.sum($0.baseAddress!, count: 2) }
        if votes[1] > 0 {
            // The least room among the cramped ranks, for the warning.
            var least = cramped ? -free! : -Double.infinity
            mpi.maxDouble(&least)
            if mpi.rank == 0 {
                standardError(String(format: "[rank 0] warning: %@ has %ld MB free on a node; the shared-memory gradient window needs about %.0f MB per node, so gradients are summed with MPI_Allreduce (enlarge it, e.g. docker --shm-size, or set OMPI_MCA_osc_sm_backing_directory)",
                                     directory, Int(-least / 1048576), needed / 1048576))
            }
        }
        guard votes[0] == 0, votes[1] == 0 else { return nil }
        if let segment {
            segment.update(repeating: 0, count: 2 * capacity)
        } else {
            segment = ohmpi_window_allocate(count)
            capacity = count
        }
        lent = true
        return (segment!, segment! + capacity)
    }

    func giveBack() { lent = false }
}

extension MPICollective {
    /// Rank 0's value on every rank.
    func broadcastDouble(_ value: inout [Double]) {
        if rank != 0 { value[0] = 0 }
        value.withUnsafeMutableBufferPointer { ohmpi_allreduce_sum_f64($0.baseAddress!, 1, "broadcast of one float64") }
    }

    /// The largest of the ranks' values, on every rank.
    func maxDouble(_ value: inout Double) {
        let all = allGather(withUnsafeBytes(of: value) { Array($0) })
        value = all.map { $0.withUnsafeBytes { $0.loadUnaligned(as: Double.self) } }.max()!
    }
}
