// Throughput of the training loop (gather, forward, backward, sum, update), as `orthohash bench`
// prints it.

import CKernels
import Foundation
import OrthoHashNumerics

public enum Benchmark {
    public struct Result {
        public var samplesPerSecond: Double
        public var millisecondsPerStep: Double
        /// Percentiles of the timed steps' times (this rank's; the ranks meet every step).
        public var p50Milliseconds: Double, p95Milliseconds: Double
        public var gemmShare: Double
        /// Milliseconds per step in each phase of the timeline, averaged over the timed steps.
        /// BatchNorm's sync lies within the forward pass; waiting is a barrier before the sum.
        public var phaseMilliseconds: [Timeline.Phase: Double]
        /// BatchNorm's (and the loss's) sums over the ranks per step.
        public var bnSyncCalls: Double
        /// Each backbone layer (as HashModel.layerDescriptions names it) with its forward and
        /// backward milliseconds per step.
        public var layers: [(name: String, forwardFlops: Double, forwardMilliseconds: Double, backwardMilliseconds: Double)] = []

        public func ms(_ phase: Timeline.Phase) -> Double { phaseMilliseconds[phase] ?? 0 }
        /// The gradient sum with the step's control word and the gather of updated shards (with
        /// overlap: the wait for the background sums after the backward pass, what is not hidden).
        public var gradientSumMilliseconds: Double { ms(.gradientSum) + ms(.control) + ms(.parameterGather) }
        /// Computing: the step less its communication and waiting.
        public var computeMilliseconds: Double { ms(.data) + ms(.forward) - ms(.bnSync) + ms(.backward) + ms(.update) }
    }

    /// Times `steps` steps after `warmup` of a run with `config` on `data`, in a temporary run
    /// directory, with `options`' threads and `config`'s step path. With `measureWait`, a barrier before each
    /// gradient sum separates the time waiting for the slowest rank from the sum (it adds a
    /// barrier's latency to each step).
    public static func training(config: TrainConfig, data: DataSplits, steps: Int, warmup: Int = 5,
                                dataParallel: DataParallel = OneProcess(), options: TrainerOptions) throws -> Result {
        let dir = NSTemporaryDirectory() + "orthohash-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = config
        // Enough epochs that the timed steps never reach the end of training (whose evaluation
        // would run GEMMs outside the timed loop), and no evaluation or checkpoint on the way.
        c.epochs = (warmup + steps) / max(1, data.train.rows / c.batchSize) + 2
        c.evalEvery = 0
        c.checkpointEvery = 0
        var options = options
        options.log = Log(quiet: true)
        options.progressBar = false
        options.stopAfterSteps = warmup
        let trainer = try Trainer(config: c, data: data, runDir: dir, dataParallel: dataParallel, options: options)
        try trainer.run()
        // Time the next `steps` steps of the same trainer.
        let before = trainer.trainSeconds
        BLAS.resetTimer()
        BLAS.clock = { DispatchTime.now().uptimeNanoseconds }
        defer { BLAS.clock = nil }
        trainer.timeline.resetTotals()
        trainer.model.resetLayerTimes()
        try trainer.continueRun(until: warmup + steps)
        let seconds = trainer.trainSeconds - before
        let timed = trainer.stepSeconds.suffix(steps).map { 1000 * $0 }.sorted()
        func percentile(_ p: Double) -> Double { timed[min(timed.count - 1, Int((p * Double(timed.count - 1)).rounded()))] }
        var phases: [Timeline.Phase: Double] = [:]
        for phase in Timeline.Phase.allCases { phases[phase] = 1000 * trainer.timeline.seconds(phase) / Double(steps) }
        let layers = zip(trainer.model.layerDescriptions, trainer.model.layerNanoseconds).map { d, t in
            (d.name, d.forwardFlops, Double(t.forward) / 1e6 / Double(steps), Double(t.backward) / 1e6 / Double(steps))
        }
        return Result(samplesPerSecond: Double(steps * c.batchSize) / seconds, millisecondsPerStep: 1000 * seconds / Double(steps),
                      p50Milliseconds: percentile(0.5), p95Milliseconds: percentile(0.95),
                      gemmShare: Double(BLAS.gemmNanoseconds) / 1e9 / seconds, phaseMilliseconds: phases,
                      bnSyncCalls: Double(trainer.timeline.count(.bnSync)) / Double(steps), layers: layers)
    }

    /// Rows per second of the data loader alone: `batches` local batches of `batch` rows of the
    /// training split gathered one after another (images decoded and transformed on the split's
    /// threads), with no training beside them and no prefetch; after one batch of warm-up.
    public static func loader(split: Split, classes: Int, batch: Int, batches: Int, seed: UInt64 = 0) throws -> Double {
        let loader = BatchLoader(split: split, classes: classes, globalBatch: batch, rank: 0, ranks: 1, seed: seed)
        let steps = loader.stepsPerEpoch
        _ = try loader.batch(at: BatchPosition(epoch: 0, step: 0))
        let t = DispatchTime.now().uptimeNanoseconds
        for i in 1...batches { _ = try loader.batch(at: BatchPosition(epoch: i / steps, step: i % steps)) }
        return Double(batches * batch) * 1e9 / Double(DispatchTime.now().uptimeNanoseconds - t)
    }

    /// The core's floating-point peak in GFLOP/s: independent chains of fused multiply-adds on the
    /// widest vectors the CPU has, the best of 5 runs of ~0.1 s, on `threads` threads at once (the
    /// slowest thread's rate: a core's peak while the run's other cores are busy too, which may
    /// be lower than alone).
    public static func fmaPeak(threads: Int = 1) -> Double {
        let n = max(1, threads), iterations = 2_000_000
        var best = 0.0
        var sinks = [Float](repeating: 0, count: n), rates = [Double](repeating: 0, count: n)
        sinks.withUnsafeMutableBufferPointer { sink in
            rates.withUnsafeMutableBufferPointer { rate in
                let sink = sink.baseAddress!, rate = rate.baseAddress!
                DispatchQueue.concurrentPerform(iterations: n) { i in oh_fma_loop(sink + i, 100_000) }
                for _ in 0..<5 {
                    DispatchQueue.concurrentPerform(iterations: n) { i in
                        let t = DispatchTime.now().uptimeNanoseconds
                        oh_fma_loop(sink + i, iterations)
                        rate[i] = Double(iterations) * 384 / Double(DispatchTime.now().uptimeNanoseconds - t)
                    }
                    best = max(best, (0..<n).map { rate[$0] }.min() ?? 0)
                }
            }
        }
        return sinks.contains { $0.isNaN } ? 0 : best
    }

    /// GFLOP/s of one GEMM shape (row-major), median of `repeats` timed calls after a warm-up.
    /// The GEMMs one training step of `config` on `data` asks for (BLAS.recorder over two
    /// steps, which ask for the same), each shape with how many times a step calls it, in the
    /// order of their first call: what `bench --gemms` times, for any backbone and the sizes
    /// the flags give.
    public static func stepGemms(config: TrainConfig, data: DataSplits, options: TrainerOptions) throws -> [(shape: BLAS.Shape, calls: Int)] {
        var order: [BLAS.Shape] = [], calls: [BLAS.Shape: Int] = [:]
        BLAS.recorder = { shape in
            if calls[shape] == nil { order.append(shape) }
            calls[shape, default: 0] += 1
        }
        defer { BLAS.recorder = nil }
        _ = try training(config: config, data: data, steps: 1, warmup: 1, options: options)
        return order.map { ($0, calls[$0]! / 2) }
    }

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
