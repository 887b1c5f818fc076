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
    public static func run(_ dataParallel: MPIDataParallel, path: Path, sizes: [Int], budget: Double = 0.2) -> [Point]? {
        let mpi = dataParallel.mpi
        let maxCount = sizes.map { $0 / 4 }.max() ?? 1
        var buffer: UnsafeMutablePointer<Float>
        var privateBuffer: UnsafeMutablePointer<Float>? = nil
        switch path {
        case .mpi:
            privateBuffer = .allocate(capacity: maxCount)
            buffer = privateBuffer!
        case .shared:
            guard let lent = dataParallel.window.lend(count: maxCount) else { return nil }
            buffer = lent.gradients
        }
        defer {
            privateBuffer?.deallocate()
            if path == .shared { dataParallel.window.giveBack() }
        }
        buffer.initialize(repeating: 1, count: maxCount)
        let what = "all-reduce sweep"
        // Each size's plan made before it is timed, as training makes its store's.
        func plan(_ count: Int) -> GradientSumPlan {
            GradientSumPlan(path: path == .shared ? .window : .allReduce, count: count, node: dataParallel.window.node)
        }
        func once(_ plan: GradientSumPlan) {
            plan.sumWhole(buffer, what: what)
            // The parameters' half of the window stands in for the updated shards.
            if plan.path == .window { plan.gatherParameters(what: what) }
        }
        var points: [Point] = []
        for bytes in sizes {
            let count = max(1, bytes / 4)
            let sizePlan = plan(count)
            // The first rank's estimate of one sum decides the repeats for all.
            ohmpi_barrier(what)
            var start = Timeline.now()
            once(sizePlan); once(sizePlan)
            var estimate = [Double(Timeline.now() - start) / 2e9]
            mpi.broadcastDouble(&estimate)
            let repeats = max(3, min(1000, Int(budget / max(estimate[0], 1e-7))))
            var trials: [Double] = []
            for _ in 0..<3 {
                ohmpi_barrier(what)
                start = Timeline.now()
                for _ in 0..<repeats { once(sizePlan) }
                var mean = Double(Timeline.now() - start) / 1e9 / Double(repeats)
                mpi.maxDouble(&mean)
                trials.append(mean)
            }
            points.append(Point(bytes: count * 4, seconds: trials.sorted()[1], repeats: repeats))
        }
        return points
    }
}
