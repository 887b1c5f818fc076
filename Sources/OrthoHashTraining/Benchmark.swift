// Throughput of the training loop (gather, forward, backward, sum, update), as `orthohash bench`
// prints it.

import Foundation
import OrthoHashNumerics

public enum Benchmark {
    public struct Result {
        public var samplesPerSecond: Double
        public var millisecondsPerStep: Double
        public var gemmShare: Double
        /// Per step: the gradient sum (and parameter gather), and the sums of BatchNorm's
        /// statistics and the control word (MPI only).
        public var gradientSumMilliseconds: Double
        public var statisticsSumMilliseconds: Double
    }

    /// Times `steps` steps after `warmup` of a run with `config` on `data`, in a temporary run
    /// directory.
    public static func training(config: TrainConfig, data: DataSplits, steps: Int, threads: Int, warmup: Int = 5,
                                head: HeadPath = .fused, dataParallel: DataParallel = OneProcess()) throws -> Result {
        let dir = NSTemporaryDirectory() + "orthohash-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = config
        // Enough epochs that the timed steps never reach the end of training (whose evaluation
        // would run GEMMs outside the timed loop), and no evaluation or checkpoint on the way.
        c.epochs = (warmup + steps) / max(1, data.train.rows / c.batchSize) + 2
        c.evalEvery = 0
        c.checkpointEvery = 0
        let trainer = try Trainer(config: c, data: data, runDir: dir, dataParallel: dataParallel, threads: threads, log: Log(quiet: true))
        trainer.progressBar = false
        trainer.head = head
        trainer.stopAfterSteps = warmup
        try trainer.run()
        // Time the next `steps` steps of the same trainer.
        let before = trainer.trainSeconds
        BLAS.resetTimer()
        BLAS.clock = { DispatchTime.now().uptimeNanoseconds }
        defer { BLAS.clock = nil }
        let timed = dataParallel.collective as? TimedCollective
        timed?.resetTimers()
        trainer.stopAfterSteps = warmup + steps
        try trainer.continueRun()
        let seconds = trainer.trainSeconds - before
        return Result(samplesPerSecond: Double(steps * c.batchSize) / seconds, millisecondsPerStep: 1000 * seconds / Double(steps),
                      gemmShare: Double(BLAS.gemmNanoseconds) / 1e9 / seconds,
                      gradientSumMilliseconds: 1000 * (timed?.gradientSumSeconds ?? 0) / Double(steps),
                      statisticsSumMilliseconds: 1000 * (timed?.statisticsSumSeconds ?? 0) / Double(steps))
    }

    /// GFLOP/s of one GEMM shape (row-major), median of `repeats` timed calls after a warm-up.
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, repeats: Int = 30) -> Double {
        let a = FloatBuffer(count: m * k), b = FloatBuffer(count: k * n), c = FloatBuffer(count: m * n)
        var rng = Xoshiro256(seed: 1)
        for i in 0..<a.count { a[i] = Float(rng.nextDouble()) }
        for i in 0..<b.count { b[i] = Float(rng.nextDouble()) }
        var times: [Double] = []
        for r in 0..<(repeats + 3) {
            let t = DispatchTime.now().uptimeNanoseconds
            BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a.pointer, lda: transA ? m : k,
                      b.pointer, ldb: transB ? k : n, beta: 0, c.pointer, ldc: n)
            if r >= 3 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t)) }
        }
        times.sort()
        return 2 * Double(m) * Double(n) * Double(k) / times[times.count / 2]
    }
}
