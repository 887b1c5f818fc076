import ArgumentParser
import Foundation
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Training throughput on Fashion-MNIST (mlp 1024,1024, 64 bits, batch 256) with 1 and 2 BLAS threads, and the share of step time in GEMM.")
        @OptionGroup var data: DataOptions
        @Option(help: "Backbone.") var backbone: BackboneKind = .mlp
        @Option(help: "Hidden widths (default: 1024,1024).", transform: Parse.positiveIntegers("--hidden")) var hidden: [Int] = [1024, 1024]
        @Option(help: "Bits.") var nbit: Int = 64
        @Option(help: "Global batch size.") var batchSize: Int = 256
        @Option(help: "Timed steps per setting (after 5 warm-up steps).") var steps: Int = 100
        @Option(help: "Thread counts to compare (default: 1,2).", transform: Parse.positiveIntegers("--threads")) var threads: [Int] = [1, 2]
        @Flag(help: "Also time each GEMM of the step.") var gemms = false

        func config() -> TrainConfig {
            var config = TrainConfig()
            data.apply(to: &config)
            config.backbone = backbone; config.hidden = hidden; config.nbit = nbit; config.batchSize = batchSize
            return config
        }

        func validate() throws {
            if let unused = data.unused(by: config()).first { throw ValidationError(unused) }
            try config().validate()
        }

        func run() throws {
            if gemms { printGemms() }
            let config = config()
            let splits = try config.loadData()
            // Under mpirun: data-parallel over the ranks, rank 0 prints, with the time in collectives.
            try onRanks(collectiveTimeout: 300) { dataParallel in
                let say = { (line: String) in if dataParallel.rank == 0 { print(line) } }
                say("bench: \(splits.train.rows) rows, backbone \(backbone.rawValue)\(backbone == .mlp ? " \(config.hidden)" : ""), \(nbit) bits, batch \(batchSize), \(steps) steps, \(dataParallel.ranks) rank(s)")
                say("ranks  threads  samples/s  ms/step  gemm share  all-reduce ms/step  bn-sync ms/step")
                for t in threads {
                    BLAS.setThreads(t)
                    let r = try Benchmark.training(config: config, data: splits, steps: steps, threads: t, dataParallel: dataParallel)
                    say(String(format: "%5d  %7d  %9.0f  %7.2f  %9.1f%%  %18.2f  %15.2f", dataParallel.ranks, t, r.samplesPerSecond,
                               r.millisecondsPerStep, 100 * r.gemmShare, r.gradientSumMilliseconds, r.statisticsSumMilliseconds))
                }
                if dataParallel.ranks > 1 { say("gradients summed by \(dataParallel.gradientReduction)") }
            }
        }

        /// GFLOP/s of each GEMM of the MLP step at its shape.
        func printGemms() {
            let shapes: [(String, Bool, Bool, Int, Int, Int)] = [
                ("fc0 fwd", false, true, 256, 1024, 784), ("fc1 fwd", false, true, 256, 1024, 1024),
                ("hash fwd", false, true, 256, 64, 1024), ("hash dW", true, false, 64, 1024, 256),
                ("hash dx", false, false, 256, 1024, 64), ("fc1 dW", true, false, 1024, 1024, 256),
                ("fc1 dx", false, false, 256, 1024, 1024), ("fc0 dW", true, false, 1024, 784, 256)]
            for t in threads {
                BLAS.setThreads(t)
                for (name, ta, tb, m, n, k) in shapes {
                    print(String(format: "threads %d  %-9@ (%4d x %4d x %4d)  %6.1f GFLOP/s", t, name, m, n, k,
                                 Benchmark.gemm(transA: ta, transB: tb, m: m, n: n, k: k)))
                }
            }
        }
    }
}
