// Open MPI through the C shim: the collectives of a job.

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
