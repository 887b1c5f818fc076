import CMPIShim
import Foundation
import OrthoHash

/// The MPI implementation of `Collective`, over the C shim. Every call is a non-blocking MPI
/// collective polled against `--collective-timeout`; a failure or a timeout ends the whole job.
public final class MPICollective: Collective, StepLabelled, TimedCollective {
    public let rank: Int
    public let size: Int

    /// True when an MPI launcher started this process; otherwise use `SingleProcess`.
    public static var launched: Bool { ohmpi_launched() != 0 }

    public init(timeoutSeconds: Double) {
        _ = ohmpi_init()
        rank = Int(ohmpi_rank())
        size = Int(ohmpi_size())
        ohmpi_set_timeout(timeoutSeconds)
    }

    public func finalize() { ohmpi_finalize() }

    public func labelStep(_ step: Int) { ohmpi_set_step(Int64(step)) }

    public private(set) var floatReduceSeconds = 0.0
    public private(set) var doubleReduceSeconds = 0.0
    public func resetTimers() { floatReduceSeconds = 0; doubleReduceSeconds = 0 }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        let start = DispatchTime.now().uptimeNanoseconds
        ohmpi_allreduce_sum_f32(buffer, count, "all-reduce of \(count) float32 (gradients)")
        floatReduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {
        let start = DispatchTime.now().uptimeNanoseconds
        ohmpi_allreduce_sum_f64(buffer, count, "all-reduce of \(count) float64 (BatchNorm statistics or control word)")
        doubleReduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

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
        var counts = [Int64](repeating: 0, count: size)
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

    public func barrier() { ohmpi_barrier("barrier") }

    /// In the node's shared-memory window when the ranks share nodes (see `ohmpi_shared_buffer`),
    /// so that the ranks of a node sum their gradients without copying them through MPI and
    /// each updates one shard of the parameters.
    public func makeTrainingBuffers(count: Int) -> (parameters: FloatBuffer, gradients: FloatBuffer) {
        let shared = ohmpi_shared_buffer(count)
        sharedGradients = shared != nil
        guard let shared else { return (FloatBuffer(count: count), FloatBuffer(count: count)) }
        // The window goes back when both buffers are gone.
        final class Lease { deinit { ohmpi_shared_release() } }
        let lease = Lease()
        return (FloatBuffer(borrowing: shared + count, count: count, release: { _ = lease }),
                FloatBuffer(borrowing: shared, count: count, release: { _ = lease }))
    }

    public func reduceGradientShard(_ gradients: FloatBuffer) -> Range<Int> {
        let start = DispatchTime.now().uptimeNanoseconds
        var lo = 0, hi = 0
        ohmpi_reduce_shard_f32(gradients.pointer, gradients.count, &lo, &hi, "all-reduce of \(gradients.count) float32 (gradients)")
        floatReduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return lo..<hi
    }

    public func gatherParameterShards(_ parameters: FloatBuffer, updated: Range<Int>) {
        guard updated != 0..<parameters.count else { return }
        let start = DispatchTime.now().uptimeNanoseconds
        ohmpi_gather_shards_f32(parameters.pointer, parameters.count, "gather of the updated parameter shards")
        floatReduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    public func gatherOptimizerShards(_ state: FloatBuffer, updated: Range<Int>) {
        guard state.count > 0, updated != 0..<state.count else { return }
        ohmpi_gather_node_shards_f32(state.pointer, state.count, "gather of the optimizer state shards")
    }

    /// Whether the newest gradient buffer is in shared memory (nil: none made yet).
    private var sharedGradients: Bool?

    /// What the newest gradient buffer's sums go through (before there is one: what it would).
    public var gradientReduction: String {
        var perNode: Int32 = 1, nodes: Int32 = 1
        if size == 1 { return "none (one rank)" }
        guard ohmpi_shared_layout(&perNode, &nodes) != 0, sharedGradients != false else { return "MPI_Allreduce" }
        return "shared memory within each node (\(perNode) ranks)" + (nodes > 1 ? ", then MPI_Allreduce across \(nodes) nodes" : "")
    }

    public func abort(_ message: String, code: Int32) -> Never {
        ohmpi_abort(message, code)
    }
}
