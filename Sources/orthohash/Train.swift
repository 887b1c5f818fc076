import ArgumentParser
import Foundation
import OrthoHash
import OrthoHashMPI

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model; writes a run directory.")

    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var evaluation: EvalOptions
    @OptionGroup var runtime: RuntimeOptions
    @Option(help: "Run directory (config, codebook, metrics, checkpoints, summary).") var runDir: String = "runs/latest"
    @Option(help: "Evaluate every N epochs (0: only at the end).") var evalEvery: Int = 0
    @Option(help: "Checkpoint every N epochs (0: only at the end).") var checkpointEvery: Int = 1
    @Option(help: "Also checkpoint every N steps (0: off), for long epochs.") var checkpointEverySteps: Int = 0
    @Option(help: "Step checkpoints to keep (the best is kept besides).") var keepCheckpoints: Int = 3
    @Flag(help: "Continue from the newest valid checkpoint in --run-dir.") var resume = false
    @Flag(help: "No progress output.") var quiet = false
    @Option(help: "Under MPI: seconds a collective may wait for the other ranks before the job is aborted, naming the ranks that did not arrive.")
    var collectiveTimeout: Double = 300
    @Flag(help: "Check after every step that all ranks hold bitwise identical parameters (slow; for tests).") var verify = false
    @Flag(help: "Append 'step,loss' of every step to RUN_DIR/steps.csv.") var logSteps = false

    func makeConfig() throws -> TrainConfig {
        var c = TrainConfig()
        data.apply(to: &c)
        try model.apply(to: &c)
        try evaluation.apply(to: &c)
        c.evalEvery = evalEvery; c.checkpointEvery = checkpointEvery
        c.checkpointEverySteps = checkpointEverySteps; c.keepCheckpoints = keepCheckpoints
        return c
    }

    /// The run's settings. With `--resume` and an existing RUN_DIR/config.json, the stored
    /// settings are the base and only the flags whose value differs from the default override
    /// them (a setting that shapes the run, such as --nbit, then fails the checkpoint's check and
    /// is named). Rank 0 reads the file and broadcasts the result, so ranks without the run
    /// directory on a shared file system agree.
    func resolvedConfig(collective: Collective) throws -> TrainConfig {
        let fromFlags = try makeConfig()
        guard resume else { return fromFlags }
        let path = runDir + "/config.json"
        var bytes: [UInt8] = []
        if collective.isCoordinator, let stored = FileManager.default.contents(atPath: path) {
            let merged = try mergeOverStored(stored: JSON.decode(TrainConfig.self, from: stored, file: path),
                                             flags: fromFlags, defaults: Train.parse([]).makeConfig(), file: path)
            bytes = [UInt8](JSON.encode(merged, pretty: false))
        }
        bytes = collective.broadcast(bytes, root: 0)
        return bytes.isEmpty ? fromFlags : try JSON.decode(TrainConfig.self, from: Data(bytes), file: path)
    }

    func run() throws {
        // Under an MPI launcher every rank runs this; a user error on any rank ends them all.
        let mpi = MPICollective.launched ? MPICollective(timeoutSeconds: collectiveTimeout) : nil
        let collective: Collective = mpi ?? SingleProcess()
        do {
            try train(collective: collective)
            mpi?.finalize()
        } catch let error as OrthoHashError {
            if let mpi { mpi.abort("error: \(error)", code: 1) }
            FileHandleOutput.stderr("error: \(error)")
            throw ExitCode(1)
        }
    }

    func train(collective: Collective) throws {
        let config = try resolvedConfig(collective: collective)
        try config.validate()
        let threads = runtime.resolvedThreads(ranks: collective.size)
        BLAS.setThreads(threads)
        let splits = try config.loadData()
        if collective.isCoordinator { try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true) }
        let trainer = try Trainer(config: config, data: splits, runDir: runDir, collective: collective, threads: threads,
                                  log: Log(rank: collective.rank, size: collective.size, quiet: quiet))
        trainer.verify = verify
        if logSteps { trainer.stepLogPath = runDir + "/steps.csv" }
        if let summary = try trainer.run(resume: resume), !quiet, collective.isCoordinator {
            let maps = config.mapAt.map { String(format: "mAP@%@ %.4f", $0, summary.map[$0] ?? .nan) }.joined(separator: "  ")
            print("done: \(maps)  \(String(format: "%.0f", summary.samples_per_second)) samples/s  \(runDir)/summary.json")
        }
    }
}

/// `stored` with every setting of `flags` that differs from `defaults` put over it, field by
/// field through the JSON form (nested groups such as the optimizer's merge per field).
func mergeOverStored(stored: TrainConfig, flags: TrainConfig, defaults: TrainConfig, file: String) throws -> TrainConfig {
    func merge(_ base: [String: Any], _ given: [String: Any], _ standard: [String: Any]) -> [String: Any] {
        var out = base
        for key in Set(given.keys).union(standard.keys) {
            if let g = given[key] as? [String: Any], let d = standard[key] as? [String: Any] {
                out[key] = merge(base[key] as? [String: Any] ?? [:], g, d)
            } else if JSON.text(given[key]) != JSON.text(standard[key]) {
                out[key] = given[key]
            }
        }
        return out
    }
    let merged = merge(JSON.object(stored), JSON.object(flags), JSON.object(defaults))
    let data = try JSONSerialization.data(withJSONObject: merged, options: [.sortedKeys])
    return try JSON.decode(TrainConfig.self, from: data, file: file)
}

/// The run's configuration and a model restored from one of its checkpoints.
func loadRun(_ runDir: String, checkpoint: String) throws -> (TrainConfig, Checkpoint, String) {
    let configPath = runDir + "/config.json"
    guard let data = FileManager.default.contents(atPath: configPath) else {
        throw OrthoHashError("no such file", file: configPath, hint: "is \(runDir) a run directory made by 'orthohash train'?")
    }
    let config = try JSON.decode(TrainConfig.self, from: data, file: configPath)
    let dir = CheckpointDirectory(runDir: runDir)
    let path: String
    switch checkpoint {
    case "best": path = dir.bestPath
    case "last":
        guard let newest = dir.stepCheckpoints().first else { throw OrthoHashError("no checkpoints", file: dir.path) }
        path = newest
    default: path = checkpoint
    }
    let ck = try Checkpoint.read(path)
    guard ck.state.config.fixedPart == config.fixedPart else {
        throw OrthoHashError("checkpoint was made by a different run than \(configPath)", file: path)
    }
    return (config, ck, path)
}

func restoredModel(_ ck: Checkpoint, batchSize: Int = 256) -> HashModel {
    let model = HashModel(config: ck.state.model, loss: ck.state.config.loss, codebook: ck.codebook, batchSize: batchSize)
    ck.parameters.withUnsafeBufferPointer { model.parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
    ck.runningMean.withUnsafeBufferPointer { model.runningMean.pointer.update(from: $0.baseAddress!, count: $0.count) }
    ck.runningVar.withUnsafeBufferPointer { model.runningVar.pointer.update(from: $0.baseAddress!, count: $0.count) }
    model.batchesTracked = ck.state.batchesTracked
    return model
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "mAP and precision of a run's checkpoint on the run's data.")
    @OptionGroup var source: RunCheckpointOptions
    @Option(help: "Cutoffs R of mAP@R (default: the run's).") var mapAt: String?
    @Option(help: "Cutoffs k of precision@k (default: the run's).") var precisionAt: String?
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        try OrthoHashCommand.guarded {
            var (config, ck, path) = try source.load()
            if let mapAt { config.mapAt = mapAt.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            if let precisionAt { config.precisionAt = try intList(precisionAt) }
            try config.validate()
            let threads = runtime.resolvedThreads(ranks: 1)
            BLAS.setThreads(threads)
            let data = try config.loadData()
            guard data.inputDim == ck.state.model.inputDim, data.classes == ck.state.model.classes else {
                throw OrthoHashError("checkpoint expects \(ck.state.model.inputDim)-d inputs and \(ck.state.model.classes) classes, the data has \(data.inputDim) and \(data.classes)", file: path)
            }
            let model = restoredModel(ck)
            let result = try Evaluation.run(model: model, data: data, mapAt: config.mapCutoffs, precisionAt: config.precisionAt, threads: threads)
            var fields: [String] = []
            for (name, v) in zip(config.mapAt, result.meanAP) { fields.append(String(format: "\"mAP@%@\": %.6f", name, v)) }
            for (k, v) in zip(config.precisionAt, result.precision) { fields.append(String(format: "\"P@%d\": %.6f", k, v)) }
            print("{\"checkpoint\": \"\(path)\", \"epoch\": \(ck.state.epoch), " + fields.joined(separator: ", ") + "}")
        }
    }
}

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Binary codes of a feature matrix.",
        discussion: "Codes are packed like numpy.packbits(v > 0, axis=1) (bitorder 'big'): bit k of a code is bit 7 - k % 8 of byte k / 8; a set bit means v > 0 (sign +1).")
    @OptionGroup var source: RunCheckpointOptions
    @Option(help: "Features (.npy, (N, D) float32/float16).") var features: String
    @Option(help: "Output: packed codes, uint8 (N, ceil(K/8)).") var out: String
    @Option(help: "Also write the real-valued codes v, float32 (N, K).") var outReal: String?
    @Option(help: "Re-estimate BatchNorm's running mean on these features (.npy) first: the target database when the model was trained on another domain.")
    var bnMeanFrom: String?
    @Flag(help: "With --bn-mean-from: also set BatchNorm's gamma to 1 and beta to 0.") var bnIdentityAffine = false
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        try OrthoHashCommand.guarded {
            let (_, ck, path) = try source.load()
            BLAS.setThreads(runtime.resolvedThreads(ranks: 1))
            if bnIdentityAffine && bnMeanFrom == nil { throw OrthoHashError("--bn-identity-affine needs --bn-mean-from") }
            let model = restoredModel(ck)
            let x = try openFeatures(features, for: model, checkpoint: path)
            if let bnMeanFrom {
                try reestimateBatchNormMean(model, from: try openFeatures(bnMeanFrom, for: model, checkpoint: path), identityAffine: bnIdentityAffine)
            }
            let K = ck.state.model.nbit, bytesPerCode = (K + 7) / 8
            var packed = [UInt8](repeating: 0, count: x.rows * bytesPerCode)
            var real = outReal == nil ? [] : [Float](repeating: 0, count: x.rows * K)
            try model.forEachCodeChunk(of: x, rows: 0..<x.rows) { start, n, v in
                for r in 0..<n {
                    for k in 0..<K where v[r * K + k] > 0 { packed[(start + r) * bytesPerCode + k / 8] |= UInt8(0x80) >> UInt8(k % 8) }
                    if !real.isEmpty { for k in 0..<K { real[(start + r) * K + k] = v[r * K + k] } }
                }
            }
            try NPYWriter.write(path: out, shape: [x.rows, bytesPerCode], uint8: packed)
            if let outReal { try NPYWriter.write(path: outReal, shape: [x.rows, K], floats: real) }
            print("encoded \(x.rows) rows to \(K)-bit codes: \(out)")
        }
    }
}

/// A feature file whose width matches the model's input.
func openFeatures(_ path: String, for model: HashModel, checkpoint: String) throws -> NPYFeatures {
    let x = try NPYFeatures(path: path)
    guard x.dim == model.config.inputDim else {
        throw OrthoHashError("features have \(x.dim) columns but the model in \(checkpoint) expects \(model.config.inputDim)", file: path)
    }
    return x
}

/// BatchNorm's running mean re-estimated on the rows of `target` (HashModel.setBatchNormMean).
func reestimateBatchNormMean(_ model: HashModel, from target: NPYFeatures, identityAffine: Bool) throws {
    guard target.rows > 0 else { throw OrthoHashError("no rows to estimate BatchNorm's mean from", file: target.name) }
    let chunk = model.batchSize
    let input = FloatBuffer(count: chunk * target.dim)
    var sums = [Double](repeating: 0, count: model.config.nbit)
    try target.forEachChunk(0..<target.rows, chunk: chunk, into: input) { _, n in
        model.addPreNormSums(input.pointer, rows: n, into: &sums)
    }
    model.setBatchNormMean(sums.map { $0 / Double(target.rows) }, identityAffine: identityAffine)
}

struct Revisited: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "mAP under the revisited Oxford/Paris protocol (Easy, Medium, Hard) of a run's model on other data.",
        discussion: "Ground truth: a JSON list, one {\"easy\": [...], \"hard\": [...], \"junk\": [...]} object of 0-based database rows per query (bench/revisitop_gnd_to_json.py converts revisitop's gnd_*.pkl).")
    @OptionGroup var source: RunCheckpointOptions
    @Option(help: "Query features (.npy).") var queryFeatures: String
    @Option(help: "Database features (.npy).") var dbFeatures: String
    @Option(help: "Ground truth (.json).") var groundTruth: String
    @Flag(help: "Re-estimate BatchNorm's running mean on the database first (the paper does for a GLDv2 head on ROxf/RPar).")
    var bnMeanFromDb = false
    @Flag(help: "With --bn-mean-from-db: also set BatchNorm's gamma to 1 and beta to 0.") var bnIdentityAffine = false
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        try OrthoHashCommand.guarded {
            let (_, ck, path) = try source.load()
            BLAS.setThreads(runtime.resolvedThreads(ranks: 1))
            if bnIdentityAffine && !bnMeanFromDb { throw OrthoHashError("--bn-identity-affine needs --bn-mean-from-db") }
            let model = restoredModel(ck)
            let q = try openFeatures(queryFeatures, for: model, checkpoint: path)
            let db = try openFeatures(dbFeatures, for: model, checkpoint: path)
            let gt = try loadRevisitedGroundTruth(groundTruth, queries: q.rows, databaseRows: db.rows)
            if bnMeanFromDb { try reestimateBatchNormMean(model, from: db, identityAffine: bnIdentityAffine) }
            let r = revisitedMeanAP(query: try Evaluation.encode(model: model, features: q),
                                    database: try Evaluation.encode(model: model, features: db), groundTruth: gt)
            print(String(format: "{\"easy\": %.6f, \"medium\": %.6f, \"hard\": %.6f}", r.easy, r.medium, r.hard))
        }
    }
}

struct CodebookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "codebook", abstract: "Generate a codebook and print its pairwise Hamming distances.")
    @Option(help: "Classes C.") var classes: Int
    @Option(help: "Bits K.") var nbit: Int = 64
    @Option(help: "B, N or O.") var method: CodebookMethod = .B
    @Option(help: "Seed.") var seed: UInt64 = 0
    @Option(help: "Output .npy (int8, (C, K), entries +-1).") var out: String?

    func run() throws {
        try OrthoHashCommand.guarded {
            let cb = try Codebook.generate(method: method, classes: classes, bits: nbit, seed: seed)
            if let out { try NPYWriter.write(path: out, shape: [classes, nbit], int8: cb.values) }
            let (minimum, mean) = cb.pairwiseHamming()
            print(String(format: "codebook %@: %d classes x %d bits  min Hamming %d (%.3f)  mean %.2f (%.3f)%@",
                         method.rawValue, classes, nbit, minimum, Double(minimum) / Double(nbit), mean, mean / Double(nbit),
                         out.map { "  -> \($0)" } ?? ""))
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the trained weights, BN statistics and codebook as safetensors.")
    @OptionGroup var source: RunCheckpointOptions
    @Option(help: "Output .safetensors file.") var out: String

    func run() throws {
        try OrthoHashCommand.guarded {
            let (config, ck, path) = try source.load()
            let model = restoredModel(ck, batchSize: 2)
            let data = SafeTensors.serialize(SafeTensors.tensors(of: model), metadata: [
                "format": "pt", "source": "orthohash", "checkpoint": URL(fileURLWithPath: path).lastPathComponent,
                "backbone": config.backbone.rawValue, "nbit": String(config.nbit), "scale": String(config.loss.scale),
                "margin": String(config.loss.margin), "margin_type": config.loss.marginType.rawValue,
            ])
            try AtomicFile.write(data, to: out)
            print("exported \(model.parameterCount) parameters, BN statistics and the \(ck.codebook.classes)x\(ck.codebook.bits) codebook to \(out)")
        }
    }
}
