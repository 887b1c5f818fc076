import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashMPI
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Training throughput on Fashion-MNIST (mlp 1024,1024, 64 bits, batch 256; --backbone alexnet and vgg16 on generated 224x224 images) with 1 and 2 BLAS threads, and the share of step time in GEMM.")
        @OptionGroup var data: DataOptions
        @Option(help: "Backbone.") var backbone: BackboneKind = .mlp
        @Option(help: "Hidden widths (default: 1024,1024).", transform: Parse.positiveIntegers("--hidden")) var hidden: [Int] = [1024, 1024]
        @Option(help: "Bits.") var nbit: Int = 64
        @Option(help: "Global batch size.") var batchSize: Int = 256
        @Option(help: "Timed steps per setting (after --warmup untimed ones).") var steps: Int = 100
        @Option(help: "Untimed steps before the timed ones (default 5; deploy/scaling.sh runs AlexNet with 2).") var warmup: Int = 5
        @Option(help: "Thread counts to compare (default: 1,2).", transform: Parse.positiveIntegers("--threads")) var threads: [Int] = [1, 2]
        @Flag(help: "Also time each GEMM of the step.") var gemms = false
        @Flag(help: "Also print each backbone layer's forward and backward time per step (and GFLOP/s per core where it has GEMMs).")
        var layers = false
        @OptionGroup var path: StepPathOptions
        @Option(help: "Append one row per thread count (or, with --allreduce, per size) to this CSV file (header when new).")
        var csv: String?
        @Option(name: .customLong("label"), help: "KEY=VALUE: an extra column of the CSV rows (repeatable; deploy/scaling.sh names the workload, link and repetition).",
                transform: Parse.label)
        var labels: [Label] = []
        @Flag(help: "Time a barrier before each gradient sum, apart from it: the wait for the slowest rank (costs one barrier per step; on with --csv).")
        var measureWait = false
        @Flag(help: "Time float32 sums over the ranks from 4 B to --allreduce-max bytes instead of training (under mpirun).")
        var allreduce = false
        @Option(help: "The largest sum of --allreduce, in bytes.") var allreduceMax: Int = 64 << 20
        @Flag(help: "Time the data loader alone (training batches gathered, images decoded and transformed, no training) at each thread count, in rows/s beside the training's.")
        var loader = false

        func config() -> TrainConfig {
            var config = TrainConfig()
            data.apply(to: &config)
            // AlexNet and VGG-16 take RGB images: generated ones (224 x 224) unless data is named.
            if data.dataset == nil && backbone.imageChannels == 3 { config.dataset = .generated }
            config.backbone = backbone; config.hidden = hidden; config.nbit = nbit; config.batchSize = batchSize
            path.apply(to: &config)
            return config
        }

        func validate() throws {
            guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
            guard warmup >= 1 else { throw ValidationError("--warmup must be at least 1, got \(warmup)") }
            if let csv {
                try OutputFile.check(csv, flag: "--csv")
                // Rows go under the file's header: one whose first columns are not this table's
                // (other --label keys, the other table) is refused now, not after the run.
                let leading = labels.map(\.key) + [allreduce ? "path" : "nodes"]
                if let header = try CSVRows.header(of: csv), Array(header.prefix(leading.count)) != leading {
                    throw OrthoHashError("its header is not this table's columns (it starts \(header.prefix(leading.count).joined(separator: ",")), "
                                         + "this table \(leading.joined(separator: ",")))", file: csv,
                                         hint: "write this table to a new file, or pass the same --label keys as its other rows")
                }
            }
            if allreduce {
                guard allreduceMax >= 4 else { throw ValidationError("--allreduce-max must be at least 4 bytes") }
                return
            }
            if let unused = data.unused(by: config()).first { throw ValidationError(unused) }
            try config().validate()
        }

        func run() throws {
            if allreduce { return try sweep() }
            let config = config()
            let splits = try config.loadData(threads: threads.max() ?? 1)
            if gemms { try printGemms(config: config, data: splits) }
            if loader {
                // Alone: which side a run waits for is the slower of this and the training's rate.
                for t in threads {
                    let data = t == (threads.max() ?? 1) ? splits : try config.loadData(threads: t)
                    let rate = try Benchmark.loader(split: data.train, classes: data.classes, batch: batchSize, batches: max(3, min(steps, 20)))
                    print(String(format: "loader alone, %ld thread(s): %.0f rows/s", t, rate))
                }
            }
            // Under mpirun: data-parallel over the ranks, rank 0 prints, with the time in collectives.
            try onRanks(collectiveTimeout: 300) { dataParallel in
                let say = { (line: String) in if dataParallel.rank == 0 { print(line) } }
                say("bench: \(splits.train.rows) rows, backbone \(backbone.rawValue)\(backbone == .mlp ? " \(config.hidden)" : ""), \(nbit) bits, batch \(batchSize), \(steps) steps, \(dataParallel.ranks) rank(s), OpenBLAS kernel \(BLAS.kernel)")
                say("ranks  threads  samples/s  ms/step  gemm share  all-reduce ms/step  bn-sync ms/step" + (waits ? "  wait ms/step" : ""))
                let hosts = hostCount(dataParallel.collective)
                // Each run's images/s and the core's FMA peak measured right after it on as many threads
                // (the machine's speed can drift between runs: the share compares like with like).
                var achieved: [(Int, Double, Double)] = []
                for t in threads {
                    BLAS.setThreads(t)
                    var options = TrainerOptions()
                    options.threads = t
                    options.measureWait = waits
                    let r = try Benchmark.training(config: config, data: splits, steps: steps, warmup: warmup, dataParallel: dataParallel, options: options)
                    achieved.append((t, r.samplesPerSecond, backbone.takesImages && dataParallel.rank == 0 ? Benchmark.fmaPeak(threads: t) : 0))
                    say(String(format: "%5ld  %7ld  %9.0f  %7.2f  %9.1f%%  %18.2f  %15.2f", dataParallel.ranks, t, r.samplesPerSecond,
                               r.millisecondsPerStep, 100 * r.gemmShare, r.gradientSumMilliseconds, r.ms(.bnSync))
                        + (waits ? String(format: "  %12.2f", r.ms(.wait)) : ""))
                    if layers {
                        // Per core: the layer's GEMM work over its time and the threads (backward: twice forward's).
                        let rows = Double(batchSize / dataParallel.ranks)
                        for l in r.layers {
                            let rate = { (flops: Double, ms: Double) in l.forwardFlops > 0 && ms > 0 ? String(format: "%6.0f", flops * rows / ms / 1e6 / Double(t)) : "     -" }
                            say("    " + l.name.padding(toLength: max(52, l.name.count), withPad: " ", startingAt: 0)
                                + String(format: "  forward %8.2f ms %@ GFLOP/s  backward %8.2f ms %@ GFLOP/s", l.forwardMilliseconds,
                                         rate(l.forwardFlops, l.forwardMilliseconds), l.backwardMilliseconds, rate(2 * l.forwardFlops, l.backwardMilliseconds)))
                        }
                        say(String(format: "    the rest of the step (hash layer, loss, update, data): %.2f ms",
                                   r.millisecondsPerStep - r.layers.reduce(0) { $0 + $1.forwardMilliseconds + $1.backwardMilliseconds }))
                    }
                    if let csv, dataParallel.rank == 0 {
                        let n = dataParallel.ranks
                        try CSVRows.append(to: csv, labels.map { ($0.key, $0.value) } + [
                            ("nodes", "\(hosts)"), ("ranks", "\(n)"), ("ranks_per_node", n % hosts == 0 ? "\(n / hosts)" : "uneven"),
                            ("threads", "\(t)"), ("global_batch", "\(batchSize)"), ("rank_batch", "\(batchSize / n)"), ("steps", "\(steps)"),
                            ("samples_per_s", fixed(r.samplesPerSecond, 1)), ("ms_step", fixed(r.millisecondsPerStep)),
                            ("ms_step_p50", fixed(r.p50Milliseconds)), ("ms_step_p95", fixed(r.p95Milliseconds)),
                            ("compute_ms", fixed(r.computeMilliseconds)), ("gradient_sum_ms", fixed(r.gradientSumMilliseconds)),
                            ("overlap", config.stepPath.overlap.applies(to: dataParallel, backbone: config.model(for: splits).backbone) ? "yes" : "no"), ("gradient_precision", config.stepPath.gradientSum.rawValue), ("background_sum_ms", fixed(r.ms(.bucketSum))),
                            ("bn_sync_ms", fixed(r.ms(.bnSync))), ("bn_sync_calls", fixed(r.bnSyncCalls, 1)), ("wait_ms", fixed(r.ms(.wait))),
                            ("forward_ms", fixed(r.ms(.forward) - r.ms(.bnSync))), ("backward_ms", fixed(r.ms(.backward))),
                            ("update_ms", fixed(r.ms(.update))), ("data_ms", fixed(r.ms(.data))), ("gemm_share", fixed(r.gemmShare, 3)),
                            ("gradient_bytes", "\(4 * ParameterLayout(config.model(for: splits)).count)"),
                            ("gradient_path", dataParallel.gradientReduction)])
                    }
                }
                if dataParallel.ranks > 1 { say("gradients summed by \(dataParallel.gradientReduction)") }
                if backbone.takesImages && dataParallel.rank == 0 {
                    // The share of the core's peak the step's GEMMs' work reaches: FLOPs per image from the model's shapes.
                    let flops = config.model(for: splits).flopsPerRow
                    say(String(format: "model: %.2f GFLOP per training image (%.2f forward)", flops.training / 1e9, flops.forward / 1e9))
                    for (t, rate, peak) in achieved {
                        let perCore = rate * flops.training / 1e9 / Double(t * dataParallel.ranks)
                        say(String(format: "  %ld thread(s): %.0f GFLOP/s per core, %.0f%% of the core's FMA peak measured right after on %ld thread(s) at once, %.0f GFLOP/s",
                                   t, perCore, 100 * perCore / peak, t, peak))
                    }
                    // The memory check's estimate (every buffer of the model and its step) beside what the process used.
                    let estimate = config.model(for: splits).floatsNeeded(batch: batchSize / dataParallel.ranks, moments: 2, arcMargin: false).map { 4 * Double($0) } ?? 0
                    var usage = rusage()
                    getrusage(RUSAGE_SELF.rawValue, &usage)
                    say(String(format: "memory per rank: the model's estimate %.2f GB, peak resident %.2f GB (the data's pages, the libraries and the runtime included)",
                               estimate / 1e9, Double(usage.ru_maxrss) * 1024 / 1e9))
                }
            }
        }

        var waits: Bool { measureWait || csv != nil }

        /// `--allreduce`: the sweep on both paths (the shared window where the ranks can share one).
        func sweep() throws {
            try onRanks(collectiveTimeout: 300) { dataParallel in
                guard let mpiDataParallel = dataParallel as? MPIDataParallel, let mpi = dataParallel.collective as? MPICollective, mpi.ranks > 1 else {
                    throw OrthoHashError("bench --allreduce needs at least 2 ranks under mpirun", hint: "mpirun -np 2 orthohash bench --allreduce")
                }
                let hosts = hostCount(mpi)
                let sizes = AllReduceSweep.sizes(upTo: allreduceMax)
                if mpi.rank == 0 { print("all-reduce of float32 over \(mpi.ranks) ranks on \(hosts) host(s): seconds per sum (slowest rank's mean, median of 3 trials)") }
                for path in AllReduceSweep.Path.allCases {
                    guard let points = AllReduceSweep.run(mpiDataParallel, path: path, sizes: sizes) else {
                        if mpi.rank == 0 { print("path \(path.rawValue): not available (the ranks do not share nodes evenly)") }
                        continue
                    }
                    guard mpi.rank == 0 else { continue }
                    for p in points {
                        print(String(format: "path %-6@ %11ld B  %12.3f us  %8.3f GB/s", path.rawValue, p.bytes, 1e6 * p.seconds, Double(p.bytes) / p.seconds / 1e9))
                        if let csv {
                            try CSVRows.append(to: csv, labels.map { ($0.key, $0.value) } + [("path", path.rawValue), ("nodes", "\(hosts)"), ("ranks", "\(mpi.ranks)"),
                                                                         ("bytes", "\(p.bytes)"), ("seconds", String(format: "%.9f", p.seconds)),
                                                                         ("repeats", "\(p.repeats)")])
                        }
                    }
                }
            }
        }

        /// GFLOP/s of each GEMM of the step at its shape (the MLP's, or the linear head's with
        /// the data's inputs and classes: the head's two GEMMs at their full (B, C) shapes), and
        /// the step's GEMMs alone in ms: the floor a step is measured against.
        /// Each GEMM one step of this configuration asks for, timed alone (the sizes the flags give).
        func printGemms(config: TrainConfig, data: DataSplits) throws {
            var options = TrainerOptions()
            options.threads = threads.max() ?? 1
            let shapes = try Benchmark.stepGemms(config: config, data: data, options: options)
            for t in threads {
                BLAS.setThreads(t)
                var total = 0.0
                for (s, calls) in shapes {
                    let rate = Benchmark.gemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, repeats: s.m * s.n * s.k > 100_000_000 ? 10 : 30)
                    let ms = 2 * Double(s.m) * Double(s.n) * Double(s.k) / rate / 1e6     // rate: FLOP per ns
                    total += ms * Double(calls)
                    print(String(format: "threads %ld  %@%@ (%5ld x %5ld x %5ld) x %ld  %6.1f GFLOP/s  %7.2f ms each", t, s.transA ? "T" : "N",
                                 s.transB ? "T" : "N", s.m, s.n, s.k, calls, rate, ms))
                }
                print(String(format: "threads %ld  the step's GEMMs alone (OpenBLAS's threads; the step splits some over its own): %.2f ms", t, total))
            }
        }
    }
}

/// The distinct host names of the ranks (every rank calls it).
func hostCount(_ collective: Collective) -> Int { Set(collective.allGather(Array(ProcessInfo.processInfo.hostName.utf8))).count }

func fixed(_ x: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", x) }

/// `--label KEY=VALUE`.
struct Label: Equatable {
    var key: String, value: String
}
