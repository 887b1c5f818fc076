import Foundation

/// Throughput of the training loop (gather, forward, backward, update), as `orthohash bench` prints it.
public enum Benchmark {
    public struct Result { public var samplesPerSecond: Double; public var millisecondsPerStep: Double; public var gemmShare: Double }

    public static func training(config: TrainConfig, data: DataSplits, steps: Int, threads: Int, warmup: Int = 5) throws -> Result {
        let dir = NSTemporaryDirectory() + "orthohash-bench-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = config
        c.epochs = 1
        c.checkpointEvery = 0
        let trainer = try Trainer(config: c, data: data, runDir: dir, threads: threads, log: Log(quiet: true))
        trainer.progressBar = false
        trainer.stopAfterSteps = warmup
        try trainer.run()
        // Time the next `steps` steps of the same trainer.
        let before = trainer.trainSeconds
        BLAS.resetTimer(); BLAS.timing = true
        defer { BLAS.timing = false }
        trainer.stopAfterSteps = warmup + steps
        try trainer.continueRun()
        let seconds = trainer.trainSeconds - before
        return Result(samplesPerSecond: Double(steps * c.batchSize) / seconds, millisecondsPerStep: 1000 * seconds / Double(steps),
                      gemmShare: Double(BLAS.gemmNanoseconds) / 1e9 / seconds)
    }
}
