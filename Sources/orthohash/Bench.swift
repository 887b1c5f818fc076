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
        @Option(help: "The loss over many classes: fused or logits (as train --head).") var head: HeadPath = .fused

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
            let config = config()
            let splits = try config.loadData()
            if gemms { printGemms(inputs: splits.inputDim, classes: splits.classes) }
            // Under mpirun: data-parallel over the ranks, rank 0 prints, with the time in collectives.
            try onRanks(collectiveTimeout: 300) { dataParallel in
                let say = { (line: String) in if dataParallel.rank == 0 { print(line) } }
                say("bench: \(splits.train.rows) rows, backbone \(backbone.rawValue)\(backbone == .mlp ? " \(config.hidden)" : ""), \(nbit) bits, batch \(batchSize), \(steps) steps, \(dataParallel.ranks) rank(s)")
                say("ranks  threads  samples/s  ms/step  gemm share  all-reduce ms/step  bn-sync ms/step")
                for t in threads {
                    BLAS.setThreads(t)
                    let r = try Benchmark.training(config: config, data: splits, steps: steps, threads: t, head: head, dataParallel: dataParallel)
                    say(String(format: "%5d  %7d  %9.0f  %7.2f  %9.1f%%  %18.2f  %15.2f", dataParallel.ranks, t, r.samplesPerSecond,
                               r.millisecondsPerStep, 100 * r.gemmShare, r.gradientSumMilliseconds, r.statisticsSumMilliseconds))
                }
                if dataParallel.ranks > 1 { say("gradients summed by \(dataParallel.gradientReduction)") }
            }
        }

        /// GFLOP/s of each GEMM of the step at its shape (the MLP's, or the linear head's with
        /// the data's inputs and classes: the head's two GEMMs at their full (B, C) shapes), and
        /// the step's GEMMs alone in ms: the floor a step is measured against.
        func printGemms(inputs D: Int, classes C: Int) {
            let B = batchSize, K = nbit
            let shapes: [(String, Bool, Bool, Int, Int, Int)]
            if backbone == .linear {
                shapes = [("hash fwd", false, true, B, K, D), ("head fwd", false, true, B, C, K), ("head back", false, false, B, K, C),
                          ("hash dW", true, false, K, D, B)]
            } else {
                shapes = [
                    ("fc0 fwd", false, true, 256, 1024, 784), ("fc1 fwd", false, true, 256, 1024, 1024),
                    ("hash fwd", false, true, 256, 64, 1024), ("hash dW", true, false, 64, 1024, 256),
                    ("hash dx", false, false, 256, 1024, 64), ("fc1 dW", true, false, 1024, 1024, 256),
                    ("fc1 dx", false, false, 256, 1024, 1024), ("fc0 dW", true, false, 1024, 784, 256)]
            }
            for t in threads {
                BLAS.setThreads(t)
                var total = 0.0
                for (name, ta, tb, m, n, k) in shapes {
                    let rate = Benchmark.gemm(transA: ta, transB: tb, m: m, n: n, k: k, repeats: m * n * k > 100_000_000 ? 10 : 30)
                    let ms = 2 * Double(m) * Double(n) * Double(k) / rate / 1e6     // rate: FLOP per ns
                    total += ms
                    print(String(format: "threads %d  %-9@ (%5d x %5d x %5d)  %6.1f GFLOP/s  %7.2f ms", t, name, m, n, k, rate, ms))
                }
                print(String(format: "threads %d  the step's GEMMs alone: %.2f ms", t, total))
            }
        }
    }
}
