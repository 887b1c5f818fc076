import ArgumentParser
import Foundation
import OrthoHash
import OrthoHashMPI

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Training throughput on Fashion-MNIST (mlp 1024,1024, 64 bits, batch 256) with 1 and 2 BLAS threads, and the share of step time in GEMM.")
    @OptionGroup var data: DataOptions
    @Option(help: "Backbone.") var backbone: BackboneKind = .mlp
    @Option(help: "Hidden widths.") var hidden: String = "1024,1024"
    @Option(help: "Bits.") var nbit: Int = 64
    @Option(help: "Global batch size.") var batchSize: Int = 256
    @Option(help: "Timed steps per setting (after 5 warm-up steps).") var steps: Int = 100
    @Option(help: "Thread counts to compare.") var threads: String = "1,2"

    @Flag(help: "Also time each GEMM of the step.") var gemms = false

    func run() throws {
        try OrthoHashCommand.guarded {
            if gemms {
                let shapes: [(String, Bool, Bool, Int, Int, Int)] = [
                    ("fc0 fwd", false, true, 256, 1024, 784), ("fc1 fwd", false, true, 256, 1024, 1024),
                    ("hash fwd", false, true, 256, 64, 1024), ("hash dW", true, false, 64, 1024, 256),
                    ("hash dx", false, false, 256, 1024, 64), ("fc1 dW", true, false, 1024, 1024, 256),
                    ("fc1 dx", false, false, 256, 1024, 1024), ("fc0 dW", true, false, 1024, 784, 256)]
                for t in try intList(threads) {
                    BLAS.setThreads(t)
                    for (name, ta, tb, m, n, k) in shapes {
                        print(String(format: "threads %d  %-9@ (%4d x %4d x %4d)  %6.1f GFLOP/s", t, name, m, n, k,
                                     Benchmark.gemm(transA: ta, transB: tb, m: m, n: n, k: k)))
                    }
                }
            }
            var config = TrainConfig()
            data.apply(to: &config)
            config.backbone = backbone; config.hidden = try intList(hidden); config.nbit = nbit; config.batchSize = batchSize
            try config.validate()
            let splits = try config.loadData()
            // Under mpirun: data-parallel over the ranks, rank 0 prints, with the time in collectives.
            let mpi = MPICollective.launched ? MPICollective(timeoutSeconds: 300) : nil
            let collective: Collective = mpi ?? SingleProcess()
            let say = { (line: String) in if collective.isCoordinator { print(line) } }
            say("bench: \(splits.train.rows) rows, backbone \(backbone.rawValue)\(backbone == .mlp ? " \(config.hidden)" : ""), \(nbit) bits, batch \(batchSize), \(steps) steps, \(collective.size) rank(s)")
            say("ranks  threads  samples/s  ms/step  gemm share  all-reduce ms/step  bn-sync ms/step")
            for t in try intList(threads) {
                BLAS.setThreads(t)
                let r = try Benchmark.training(config: config, data: splits, steps: steps, threads: t, collective: collective)
                say(String(format: "%5d  %7d  %9.0f  %7.2f  %9.1f%%  %18.2f  %15.2f", collective.size, t, r.samplesPerSecond,
                           r.millisecondsPerStep, 100 * r.gemmShare, r.allReduceMilliseconds, r.batchNormSyncMilliseconds))
            }
            if collective.size > 1 { say("gradients summed by \(collective.gradientReduction)") }
            mpi?.finalize()
        }
    }
}
