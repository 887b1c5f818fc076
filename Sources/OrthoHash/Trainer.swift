// The training loop: global batches from one permutation per epoch, this rank's slice of each,
// forward/backward, one all-reduce of the flat gradient, the update; evaluation, checkpoints,
// metrics and the summary. Dimensions: N = global batch, B = local batch (N / ranks), D, K, C.

import CKernels
import Foundation

/// Progress from rank 0; warnings and errors from any rank, prefixed with it when there are several.
public struct Log {
    public var rank: Int
    public var size: Int
    public var quiet: Bool = false
    public init(rank: Int = 0, size: Int = 1, quiet: Bool = false) { self.rank = rank; self.size = size; self.quiet = quiet }

    public func info(_ line: String) {
        guard rank == 0, !quiet else { return }
        print(line)
        fflush(stdout)
    }
    public func warn(_ line: String) {
        FileHandleOutput.stderr(size > 1 ? "[rank \(rank)] warning: \(line)" : "warning: \(line)")
    }
}

public struct Summary: Codable, Equatable {
    public var map: [String: Double]
    public var precision: [String: Double]
    public var samples_per_second: Double
    public var train_seconds: Double
    public var epochs: Int
    public var world_size: Int
    /// How the ranks summed their gradients (`Collective.gradientReduction`).
    public var gradient_reduction: String
    public var nbit: Int
    public var final_loss: Double
    public var best_epoch: Int?
    public var best_map: Double?
}

public final class Trainer {
    public let config: TrainConfig
    public let data: DataSplits
    public let runDir: String
    public let collective: Collective
    public let threads: Int
    public var log: Log
    /// Stop (as if interrupted) after this many global steps (tests, benchmarks).
    public var stopAfterSteps: Int? = nil
    /// Rank 0 appends `step,loss` of every global step to this file (full precision).
    public var stepLogPath: String? = nil
    /// Verify mode: after every step, check that the parameters are bitwise identical on all ranks.
    public var verify = false
    /// Fault-injection hooks for the tests (environment variables, read once).
    let hooks = TestHooks()
    /// Print a progress bar within an epoch (rank 0, terminal only). Not under an MPI launcher:
    /// Open MPI gives ranks a pseudo-terminal even when mpirun's own output goes to a file.
    public var progressBar: Bool = isatty(1) != 0 && ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil
        && ProcessInfo.processInfo.environment["PMIX_RANK"] == nil

    public private(set) var model: HashModel!
    public private(set) var optimizer: Optimizer!
    /// Loss of every global step, in order (for tests and equivalence checks).
    public private(set) var stepLosses: [Double] = []

    let checkpoints: CheckpointDirectory
    var state: CheckpointState!

    public init(config: TrainConfig, data: DataSplits, runDir: String, collective: Collective = SingleProcess(),
                threads: Int = 1, log: Log = Log()) throws {
        self.config = config; self.data = data; self.runDir = runDir; self.collective = collective
        self.threads = threads; self.log = log
        checkpoints = CheckpointDirectory(runDir: runDir)
        stopAfterSteps = hooks.stopAfterSteps
        try config.validate()
        guard config.batchSize <= data.train.rows else {
            throw OrthoHashError("--batch-size \(config.batchSize) is larger than the training set (\(data.train.rows) rows)", file: data.train.features.name)
        }
        guard config.batchSize % collective.size == 0 else {
            throw OrthoHashError("--batch-size \(config.batchSize) is not divisible by the \(collective.size) ranks",
                                 hint: "the global batch is split evenly; choose a multiple of \(collective.size)")
        }
    }

    var localBatch: Int { config.batchSize / collective.size }
    var stepsPerEpoch: Int { data.train.rows / config.batchSize }
    var modelConfig: ModelConfig {
        ModelConfig(inputDim: data.inputDim, backbone: config.backbone, hidden: config.hidden, nbit: config.nbit, classes: data.classes)
    }

    /// The codebook: from `--codebook-file`, or generated from the seed on rank 0 and broadcast.
    func makeCodebook() throws -> Codebook {
        if let file = config.codebookFile { return try loadCodebook(file, classes: data.classes, bits: config.nbit) }
        var bytes: [UInt8] = []
        if collective.isCoordinator {
            let cb = try Codebook.generate(method: config.codebook, classes: data.classes, bits: config.nbit, seed: config.seed)
            bytes = cb.values.map { UInt8(bitPattern: $0) }
        }
        bytes = collective.broadcast(bytes, root: 0)
        return Codebook(classes: data.classes, bits: config.nbit, values: bytes.map { Int8(bitPattern: $0) })
    }

    /// Sets up the model and optimizer, from scratch or from the newest valid checkpoint.
    public func prepare(resume: Bool) throws {
        var checkpoint: (String, Checkpoint)? = nil
        if resume {
            // Rank 0 picks the checkpoint and broadcasts its bytes, so every rank starts from the same one.
            var bytes: [UInt8] = []
            if collective.isCoordinator, let (file, ck) = checkpoints.newestValid(warn: log.warn) {
                bytes = Array(file.utf8) + [0] + [UInt8](ck.serialized())
            }
            bytes = collective.broadcast(bytes, root: 0)
            if let zero = bytes.firstIndex(of: 0) {
                let file = String(decoding: bytes[..<zero], as: UTF8.self)
                checkpoint = (file, try Checkpoint.parse(Data(bytes[(zero + 1)...]), path: file))
            } else {
                log.info("no checkpoint in \(checkpoints.path): starting from scratch")
            }
        }
        let codebook: Codebook
        if let (file, ck) = checkpoint {
            try checkCompatible(ck, file: file)
            codebook = ck.codebook
        } else {
            codebook = try makeCodebook()
        }
        model = HashModel(config: modelConfig, loss: config.loss, codebook: codebook, batchSize: localBatch, collective: collective)
        optimizer = Optimizer(config: config.optimizer, count: model.parameterCount, backboneCount: model.backboneCount)
        if let (file, ck) = checkpoint {
            guard ck.parameters.count == model.parameterCount,
                  ck.momentum1.count == optimizer.m.count, ck.momentum2.count == optimizer.v.count else {
                throw OrthoHashError("checkpoint does not match the model (\(ck.parameters.count) parameters, expected \(model.parameterCount))", file: file)
            }
            load(ck)
            state = ck.state
            state.config = config
            if ck.state.worldSize != collective.size {
                log.info("resuming a \(ck.state.worldSize)-rank run with \(collective.size) ranks: the global batch (\(config.batchSize)) and data order are unchanged")
            }
            state.worldSize = collective.size
            log.info("resumed from \(file) (epoch \(state.epoch + 1), step \(state.stepInEpoch) of \(stepsPerEpoch))")
        } else {
            model.resetParameters(seed: config.seed)
            // Rank 0's initial parameters are everyone's (the seed makes them equal anyway;
            // broadcasting makes it true whatever the ranks' builds or libraries).
            broadcastParameters()
            state = CheckpointState(config: config, model: modelConfig, epoch: 0, stepInEpoch: 0, globalStep: 0,
                                    optimizerStep: 0, batchesTracked: 0, epochLossSum: 0, epochCorrect: 0,
                                    epochSamples: 0, epochSeconds: 0, trainSeconds: 0, samplesSeen: 0,
                                    bestMAP: nil, bestEpoch: nil, worldSize: collective.size, permutationSeed: config.seed)
        }
    }

    func checkCompatible(_ ck: Checkpoint, file: String) throws {
        let a = JSON.object(ck.state.config.fixedPart), b = JSON.object(config.fixedPart)
        if JSON.text(a) != JSON.text(b) {
            let differing = Set(a.keys).union(b.keys).sorted().filter { JSON.text(a[$0]) != JSON.text(b[$0]) }
            throw OrthoHashError("checkpoint does not match this run's settings (differs in: \(differing.joined(separator: ", ")))",
                                 file: file, hint: "leave these settings as the run has them in \(runDir)/config.json")
        }
        guard ck.state.model == modelConfig else {
            throw OrthoHashError("checkpoint model \(ck.state.model) does not match the data (\(modelConfig))", file: file)
        }
    }

    func load(_ ck: Checkpoint) {
        ck.parameters.withUnsafeBufferPointer { model.parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        ck.runningMean.withUnsafeBufferPointer { model.runningMean.pointer.update(from: $0.baseAddress!, count: $0.count) }
        ck.runningVar.withUnsafeBufferPointer { model.runningVar.pointer.update(from: $0.baseAddress!, count: $0.count) }
        if !ck.momentum1.isEmpty { ck.momentum1.withUnsafeBufferPointer { optimizer.m.pointer.update(from: $0.baseAddress!, count: $0.count) } }
        if !ck.momentum2.isEmpty { ck.momentum2.withUnsafeBufferPointer { optimizer.v.pointer.update(from: $0.baseAddress!, count: $0.count) } }
        optimizer.step = ck.state.optimizerStep
        model.batchesTracked = ck.state.batchesTracked
    }

    func broadcastParameters() {
        guard collective.size > 1 else { return }
        let p = model.parameters
        let bytes = collective.broadcast(Array(UnsafeRawBufferPointer(start: p.pointer, count: p.count * 4)), root: 0)
        bytes.withUnsafeBytes { p.pointer.update(from: $0.bindMemory(to: Float.self).baseAddress!, count: p.count) }
    }

    /// The elements of the optimizer state this rank updated last (all, unless the update is
    /// sharded over the ranks of a node).
    var optimizerShard: Range<Int>? = nil

    /// Makes every rank's optimizer state whole (all ranks call it before a checkpoint).
    func gatherOptimizerState() {
        guard let shard = optimizerShard else { return }
        collective.gatherOptimizerShards(optimizer.m, updated: shard)
        collective.gatherOptimizerShards(optimizer.v, updated: shard)
        optimizerShard = nil
    }

    func snapshot() -> Checkpoint {
        var s = state!
        s.optimizerStep = optimizer.step
        s.batchesTracked = model.batchesTracked
        return Checkpoint(state: s, parameters: model.parameters.array, runningMean: model.runningMean.array,
                          runningVar: model.runningVar.array, momentum1: optimizer.m.array, momentum2: optimizer.v.array,
                          codebook: model.codebook)
    }

    /// Rank 0 writes a step checkpoint and prunes old ones.
    func writeCheckpoint() throws {
        gatherOptimizerState()
        guard collective.isCoordinator else { return }
        try snapshot().write(to: checkpoints.stepPath(state.globalStep), pauseBeforeRename: hooks.checkpointPause)
        checkpoints.prune(keep: config.keepCheckpoints)
    }

    /// Trains to the end (or to `stopAfterSteps`) and returns the summary (nil if stopped early).
    @discardableResult
    public func run(resume: Bool = false) throws -> Summary? {
        if collective.isCoordinator {
            try FileManager.default.createDirectory(atPath: checkpoints.path, withIntermediateDirectories: true)
            checkpoints.removeStaleTemporaries()
        }
        try prepare(resume: resume)
        if collective.isCoordinator {
            try AtomicFile.write(JSON.encode(config), to: runDir + "/config.json")
            try NPYWriter.write(path: runDir + "/codebook.npy", shape: [model.codebook.classes, model.codebook.bits], int8: model.codebook.values)
            try truncateMetrics(runDir + "/metrics.jsonl", keepingEpochs: state.epoch)
        }
        return try trainLoop()
    }

    /// Seconds spent in the training loop so far (this run and the runs it resumed).
    public var trainSeconds: Double { state?.trainSeconds ?? 0 }

    /// Goes on after `run` stopped at `stopAfterSteps` (benchmarks).
    @discardableResult
    public func continueRun() throws -> Summary? { try trainLoop() }

    func trainLoop() throws -> Summary? {
        let metricsPath = runDir + "/metrics.jsonl"
        let N = config.batchSize, B = localBatch, D = data.inputDim, C = data.classes
        let rank = collective.rank
        let input = FloatBuffer(count: B * D)                            // (B, D)
        var indices = [Int32](repeating: 0, count: B)
        // Targets of the local batch, in buffers made once (pointers must outlive the step).
        let singleTargets = UnsafeMutablePointer<Int32>.allocate(capacity: B)
        defer { singleTargets.deallocate() }
        let multiTargets = FloatBuffer(count: data.isMultiLabel ? B * C : 0)   // (B, C)
        // Control word, reduced once per step: loss, correct count, one non-finite flag per rank,
        // and the count of ranks that could not show that the sum of the gradients is finite.
        var control = [Double](repeating: 0, count: 3 + collective.size)
        var sumCheck = [0.0]
        let steps = stepsPerEpoch
        log.info("training: \(data.train.rows) rows, \(steps) steps/epoch of \(N) (\(collective.size) rank\(collective.size > 1 ? "s" : "") x \(B)), \(config.nbit) bits, \(C) classes, \(model.parameterCount) parameters, \(threads) BLAS thread\(threads > 1 ? "s" : "")")
        if collective.size > 1 { log.info("gradients summed by \(collective.gradientReduction)") }
        var lastLoss = 0.0
        let stepLog: FileHandle? = collective.isCoordinator ? stepLogPath.flatMap { path in
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            let h = FileHandle(forWritingAtPath: path)
            h?.seekToEndOfFile()
            return h
        } : nil
        defer { try? stepLog?.close() }

        while state.epoch < config.epochs {
            let epoch = state.epoch
            let lr = config.optimizer.lr * config.optimizer.lrFactor(epoch: epoch, epochs: config.epochs)
            var rng = Xoshiro256(seed: state.permutationSeed, stream: RandomStream.epochPermutation.rawValue + UInt64(epoch))
            let permutation = rng.permutation(data.train.rows)
            var lastBar = Date.distantPast
            while state.stepInEpoch < steps {
                let started = DispatchTime.now().uptimeNanoseconds
                collective.setStep(state.globalStep + 1)
                hooks.beforeStep(rank: rank, step: state.globalStep + 1)
                let first = state.stepInEpoch * N + rank * B
                for i in 0..<B { indices[i] = permutation[first + i] }
                try indices.withUnsafeBufferPointer { try data.train.features.gather($0, into: input.pointer) }
                let targets: BatchTargets
                switch data.train.labels {
                case .single(let labels):
                    for i in 0..<B { singleTargets[i] = labels[Int(indices[i])] }
                    targets = .single(UnsafePointer(singleTargets))
                case .multi(_, let labels):
                    for i in 0..<B { for c in 0..<C { multiTargets[i * C + c] = Float(labels[Int(indices[i]) * C + c]) } }
                    targets = .multi(UnsafePointer(multiTargets.pointer))
                }
                // The gradients are zero here (initially, and the optimizer clears them as it
                // reads them), so the backward pass accumulates: its GEMMs run with beta = 1.
                let (localLoss, correct) = model.trainStep(input.pointer, targets: targets, accumulate: true, gradientsClear: true)
                let spiked = hooks.spikeGradients(model.gradients, step: state.globalStep + 1)
                // All of the sum, or (ranks sharing a node) the shard of it this rank updates.
                let shard = collective.reduceGradientShard(model.gradients)
                for i in control.indices { control[i] = 0 }
                control[0] = localLoss; control[1] = Double(correct)
                control[2 + rank] = localLoss.isFinite && model.gradientsFinite ? 0 : 1
                control[2 + collective.size] = model.gradientSumFinite && !spiked ? 0 : 1
                collective.allReduceSum(&control)
                if let bad = control[2..<(2 + collective.size)].firstIndex(where: { $0 != 0 }) {
                    let who = collective.size > 1 ? " on rank \(bad - 2)" : ""
                    throw OrthoHashError("non-finite loss or gradient\(who) at step \(state.globalStep + 1) (epoch \(epoch + 1)); stopped before the update, the last checkpoint is intact",
                                         hint: "lower --lr or check the features for extreme values")
                }
                // Finite gradients on every rank can still overflow when summed. Each rank's bounds
                // cover the sum (`gradientSumFinite`); where one rank's do not, each rank reads its
                // part of the sum.
                if collective.size > 1 && control[2 + collective.size] != 0 {
                    sumCheck[0] = oh_all_finite(model.gradients.pointer + shard.lowerBound, shard.count) != 0 ? 0 : 1
                    collective.allReduceSum(&sumCheck)
                    if sumCheck[0] != 0 {
                        throw OrthoHashError("the gradients summed over the ranks overflow at step \(state.globalStep + 1) (epoch \(epoch + 1)), though each rank's own are finite; stopped before the update, the last checkpoint is intact",
                                             hint: "lower --lr or check the features for extreme values")
                    }
                }
                optimizer.update(parameters: model.parameters, gradients: model.gradients, lr: lr, threads: threads,
                                 zeroGradients: true, range: shard)
                collective.gatherParameterShards(model.parameters, updated: shard)
                optimizerShard = shard
                if verify { try verifyIdentical() }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                lastLoss = control[0]
                stepLosses.append(control[0])
                stepLog?.write(String(format: "%d,%.17g\n", state.globalStep + 1, control[0]).data(using: .utf8)!)
                state.epochLossSum += control[0]
                state.epochCorrect += Int(control[1])
                state.epochSamples += N
                state.epochSeconds += seconds
                state.trainSeconds += seconds
                state.samplesSeen += N
                state.stepInEpoch += 1
                state.globalStep += 1
                if progressBar && collective.isCoordinator && !log.quiet && Date().timeIntervalSince(lastBar) > 0.2 {
                    lastBar = Date()
                    drawBar(epoch: epoch, step: state.stepInEpoch, of: steps)
                }
                if config.checkpointEverySteps > 0 && state.globalStep % config.checkpointEverySteps == 0 && state.stepInEpoch < steps {
                    try writeCheckpoint()
                }
                if let stop = stopAfterSteps, state.globalStep >= stop { return nil }
            }
            // End of epoch.
            if progressBar && collective.isCoordinator && !log.quiet { print("\r\u{1B}[K", terminator: "") }
            let epochsDone = epoch + 1
            var line: [String: JSONValue] = [
                "epoch": .int(epochsDone),
                "loss": .double(state.epochLossSum / Double(steps)),
                "accuracy": .double(Double(state.epochCorrect) / Double(max(1, state.epochSamples))),
                "lr": .double(Double(lr)),
                "samples_per_second": .double(Double(state.epochSamples) / max(state.epochSeconds, 1e-9)),
                "step": .int(state.globalStep),
            ]
            var text = String(format: "epoch %d/%d  loss %.4f  acc %.4f  lr %.1e  %.0f samples/s", epochsDone, config.epochs,
                              state.epochLossSum / Double(steps), Double(state.epochCorrect) / Double(max(1, state.epochSamples)),
                              Double(lr), Double(state.epochSamples) / max(state.epochSeconds, 1e-9))
            let remaining = Double(config.epochs - epochsDone) * Double(steps * N) / max(Double(state.samplesSeen) / state.trainSeconds, 1e-9)
            text += "  ETA " + formatDuration(remaining)
            state.epoch += 1
            state.stepInEpoch = 0
            state.epochLossSum = 0; state.epochCorrect = 0; state.epochSamples = 0; state.epochSeconds = 0
            let isLast = state.epoch == config.epochs
            var evaluated: RetrievalResult? = nil
            if isLast || (config.evalEvery > 0 && epochsDone % config.evalEvery == 0) {
                let result = try evaluate()
                evaluated = result
                var maps: [String: JSONValue] = [:]
                for (name, value) in zip(config.mapAt, result.meanAP) { maps[name] = .double(value); text += String(format: "  mAP@%@ %.4f", name, value) }
                line["map"] = .object(maps)
                if let first = result.meanAP.first, first > (state.bestMAP ?? -1) {
                    state.bestMAP = first; state.bestEpoch = epochsDone
                    gatherOptimizerState()
                    if collective.isCoordinator { try snapshot().write(to: checkpoints.bestPath) }
                }
            }
            log.info(text)
            if collective.isCoordinator {
                try appendLine(metricsPath, JSONValue.object(line).serialized)
            }
            if isLast || (config.checkpointEvery > 0 && epochsDone % config.checkpointEvery == 0) {
                try writeCheckpoint()
            }
            if isLast, let result = evaluated {
                let summary = Summary(
                    map: Dictionary(uniqueKeysWithValues: zip(config.mapAt, result.meanAP)),
                    precision: Dictionary(uniqueKeysWithValues: zip(config.precisionAt.map(String.init), result.precision)),
                    samples_per_second: Double(state.samplesSeen) / max(state.trainSeconds, 1e-9),
                    train_seconds: state.trainSeconds, epochs: config.epochs, world_size: collective.size,
                    gradient_reduction: collective.gradientReduction, nbit: config.nbit, final_loss: lastLoss, best_epoch: state.bestEpoch, best_map: state.bestMAP)
                if collective.isCoordinator { try AtomicFile.write(JSON.encode(summary), to: runDir + "/summary.json") }
                return summary
            }
        }
        return nil
    }

    /// Checks that every rank holds bitwise the same parameters and BN statistics (verify mode).
    func verifyIdentical() throws {
        var checksum = Checksum()
        checksum.add(model.parameters); checksum.add(model.runningMean); checksum.add(model.runningVar)
        let all = collective.allGather(withUnsafeBytes(of: checksum.value) { Array($0) })
        if let other = all.firstIndex(where: { $0 != all[0] }) {
            throw OrthoHashError("verify: parameters on rank \(other) differ from rank 0's after step \(state.globalStep + 1)")
        }
    }

    func drawBar(epoch: Int, step: Int, of steps: Int) {
        let width = 30, filled = width * step / max(steps, 1)
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        print("\repoch \(epoch + 1)/\(config.epochs) [\(bar)] \(step)/\(steps)", terminator: "")
        fflush(stdout)
    }

    /// mAP and precision of the current model on the query and database splits.
    public func evaluate() throws -> RetrievalResult {
        try Evaluation.run(model: model, data: data, mapAt: config.mapCutoffs, precisionAt: config.precisionAt,
                           collective: collective, threads: threads)
    }

    func truncateMetrics(_ path: String, keepingEpochs epochs: Int) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").prefix(epochs)
        try AtomicFile.write((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).data(using: .utf8)!, to: path)
    }

    func appendLine(_ path: String, _ line: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) ?? {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            return FileHandle(forWritingAtPath: path)
        }() else { throw OrthoHashError("cannot write", file: path) }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write((line + "\n").data(using: .utf8)!)
        try? handle.synchronize()
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}

/// Encoding of whole splits and the retrieval metrics.
public enum Evaluation {
    /// Packed codes of `features`, computed in chunks of the model's batch size. With several
    /// ranks each encodes a contiguous share and the codes are gathered on every rank.
    public static func encode(model: HashModel, features: FeatureSource, collective: Collective = SingleProcess()) throws -> PackedCodes {
        let K = model.config.nbit
        let W = (K + 63) / 64
        let rows = features.rows
        let lo = rows * collective.rank / collective.size, hi = rows * (collective.rank + 1) / collective.size
        var words: [UInt64] = []
        words.reserveCapacity((hi - lo) * W)
        try model.forEachCodeChunk(of: features, rows: lo..<hi) { _, n, v in
            words += PackedCodes(values: v, count: n, bits: K).storage
        }
        if collective.size > 1 {
            let parts = collective.allGather(words.withUnsafeBytes { Array($0) })
            words = parts.flatMap { bytes in bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) } }
        }
        return PackedCodes(count: rows, bits: K, storage: words)
    }

    public static func run(model: HashModel, data: DataSplits, mapAt: [MapCutoff], precisionAt: [Int],
                           collective: Collective = SingleProcess(), threads: Int = 1) throws -> RetrievalResult {
        let q = try encode(model: model, features: data.query.features, collective: collective)
        let db = try encode(model: model, features: data.database.features, collective: collective)
        // Rank 0 computes the figures once and hands them to the others.
        var figures = [Double](repeating: 0, count: mapAt.count + precisionAt.count)
        if collective.isCoordinator {
            let r = retrievalMetrics(query: q, queryLabels: data.query.labels, database: db, databaseLabels: data.database.labels,
                                     mapAt: mapAt, precisionAt: precisionAt, threads: threads)
            figures = r.meanAP + r.precision
        }
        if collective.size > 1 {
            let bytes = collective.broadcast(figures.withUnsafeBytes { Array($0) }, root: 0)
            figures = bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        }
        return RetrievalResult(meanAP: Array(figures[..<mapAt.count]), precision: Array(figures[mapAt.count...]))
    }
}

/// A small JSON value for metrics lines (Foundation's JSONSerialization prints Doubles with noise).
public enum JSONValue {
    case int(Int), double(Double), string(String), object([String: JSONValue])

    public var serialized: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v): return v.isFinite ? "\(v)" : "null"
        case .string(let s): return "\"\(s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\""
        case .object(let o): return "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!.serialized)" }.joined(separator: ", ") + "}"
        }
    }
}

/// Reads a codebook .npy (any numeric dtype, entries +-1) of shape (C, K).
public func loadCodebook(_ path: String, classes: Int, bits: Int) throws -> Codebook {
    let a = try NPYArray(path: path)
    guard a.shape == [classes, bits] else {
        throw OrthoHashError("codebook shape \(a.shape) does not match \(classes) classes x \(bits) bits", file: path)
    }
    return try Codebook.validated(classes: classes, bits: bits, values: (0..<(classes * bits)).map { a.double(at: $0) }, file: path)
}
