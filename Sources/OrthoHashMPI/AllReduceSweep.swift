// The time of a float32 sum over the ranks against its size (4 B to 64 MB), as `orthohash bench
// --allreduce` measures it for the scaling model: Open MPI's MPI_Allreduce (its shared-memory
// transport within a host, TCP between hosts), and the path training's gradients take (each node
// rank sums its shard of the node's shared window, then that shard across the nodes, and the
// updated shards are copied back).

import CMPIShim
import Foundation
import OrthoHashTraining

public enum AllReduceSweep {
    public enum Path: String, CaseIterable, Sendable {
        /// MPI_Allreduce of a private buffer.
        case mpi
        /// The gradients' path: the node's shared window, then MPI_Allreduce of the shards across nodes.
        case shared
    }

    public struct Point: Sendable {
        public var bytes: Int
        /// Seconds per sum: the slowest rank's mean over `repeats` back-to-back sums, the median of three trials.
        public var seconds: Double
        public var repeats: Int
    }

    /// Sizes 4, 16, 64, ... bytes up to `maxBytes`.
    public static func sizes(upTo maxBytes: Int) -> [Int] {
        var out: [Int] = [], b = 4
        while b <= maxBytes { out.append(b); b *= 4 }
        return out
    }

    /// Times every size on `path`; every rank calls it. Each size runs enough back-to-back sums to
    /// fill about `budget` seconds (at least 3, at most 1000), after a barrier and two untimed sums.
    /// Nil when `path` is `shared` and the ranks cannot share a window (one rank per node, uneven nodes).
    public static func run(_ mpi: MPICollective, path: Path, sizes: [Int], budget: Double = 0.2) -> [Point]? {
        let maxCount = sizes.map { $0 / 4 }.max() ?? 1
        var buffer: UnsafeMutablePointer<Float>
        var privateBuffer: UnsafeMutablePointer<Float>? = nil
        switch path {
        case .mpi:
            privateBuffer = .allocate(capacity: maxCount)
            buffer = privateBuffer!
        case .shared:
            guard let shared = ohmpi_shared_buffer(maxCount) else { return nil }
            buffer = shared
        }
        defer {
            privateBuffer?.deallocate()
            if path == .shared { ohmpi_shared_release() }
        }
        buffer.initialize(repeating: 1, count: maxCount)
        let what = "all-reduce sweep"
        func once(_ count: Int) {
            switch path {
            case .mpi: ohmpi_allreduce_sum_f32(buffer, count, what)
            case .shared:
                var lo = 0, hi = 0
                ohmpi_reduce_shard_f32(buffer, count, &lo, &hi, what)
                // The parameters' half of the window stands in for the updated shards.
                ohmpi_gather_shards_f32(buffer + maxCount, count, what)
            }
        }
        var points: [Point] = []
        for bytes in sizes {
            let count = max(1, bytes / 4)
            // The first rank's estimate of one sum decides the repeats for all.
            ohmpi_barrier(what)
            var start = Timeline.now()
            once(count); once(count)
            var estimate = [Double(Timeline.now() - start) / 2e9]
            mpi.broadcastDouble(&estimate)
            let repeats = max(3, min(1000, Int(budget / max(estimate[0], 1e-7))))
            var trials: [Double] = []
            for _ in 0..<3 {
                ohmpi_barrier(what)
                start = Timeline.now()
                for _ in 0..<repeats { once(count) }
                var mean = Double(Timeline.now() - start) / 1e9 / Double(repeats)
                mpi.maxDouble(&mean)
                trials.append(mean)
            }
            points.append(Point(bytes: count * 4, seconds: trials.sorted()[1], repeats: repeats))
        }
        return points
    }
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
