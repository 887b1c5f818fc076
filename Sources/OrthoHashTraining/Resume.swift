// Resuming a run and reading a model back: the settings a resumed run takes, the checkpoint it
// starts from, and the one check that a checkpoint fits the settings and the data.

import Foundation
import OrthoHashFormats
import OrthoHashNumerics

/// Which checkpoint of a run to read.
public enum CheckpointChoice: Equatable, Sendable {
    /// checkpoints/best.ohck: the best mAP (the first cutoff) at an evaluation.
    case best
    /// The newest step checkpoint.
    case last
    /// A file: a path, or the name of a file in the run's checkpoints/.
    case file(String)

    public init(_ text: String) {
        switch text {
        case "best": self = .best
        case "last": self = .last
        default: self = .file(text)
        }
    }
}

public enum Resume {
    /// The settings of a run: `flags` (the settings given on the command line, each applied only
    /// when given) over the defaults, or with `resume` over the stored config.json, so that a
    /// flag given is kept even when it names the default (a setting that shapes the run, such as
    /// --nbit, then fails the checkpoint's check and is named). Rank 0 reads the file and
    /// broadcasts it, so that ranks without the run directory on a shared file system agree.
    /// `stored`: whether the run directory held settings to resume.
    public static func settings(resume: Bool, runDir: RunDirectory, collective: Collective,
                                flags: (inout TrainConfig) -> Void) throws -> (config: TrainConfig, stored: Bool) {
        var config = TrainConfig(), stored = false
        if resume {
            let read = try collective.onCoordinator("reading \(runDir.configPath)") { () -> [UInt8] in
                try runDir.storedConfig().map { [UInt8](JSON.encode($0, pretty: false)) } ?? []
            }
            let bytes = collective.broadcast(read ?? [], root: 0)
            if !bytes.isEmpty {
                config = try JSON.decode(TrainConfig.self, from: Data(bytes), file: runDir.configPath)
                stored = true
            }
        }
        flags(&config)
        return (config, stored)
    }

    /// The newest checkpoint of `directory` that reads back intact (newer corrupt ones are
    /// reported through `warn` and skipped), chosen by rank 0 and sent to every rank, so all
    /// start from the same one. nil: there is no checkpoint yet. Checkpoints of which none reads
    /// back intact are an error naming each and why: starting afresh would overwrite them.
    public static func newestCheckpoint(in directory: CheckpointDirectory, collective: Collective,
                                        warn: (String) -> Void) throws -> (path: String, checkpoint: Checkpoint)? {
        let chosen = try collective.onCoordinator("reading checkpoints in \(directory.path)") { () -> [UInt8] in
            let (found, skipped) = directory.newestValid()
            if let (file, ck) = found {
                for reason in skipped { warn("skipping \(reason)") }
                return Array(file.utf8) + [0] + [UInt8](ck.serialized())
            } else if !skipped.isEmpty {
                throw OrthoHashError("no checkpoint reads back intact (\(skipped.joined(separator: "; ")))", file: directory.path,
                                     hint: "restore one, or move them away to start from scratch")
            }
            return []
        }
        let bytes = collective.broadcast(chosen ?? [], root: 0)
        guard let zero = bytes.firstIndex(of: 0) else { return nil }
        let file = String(decoding: bytes[..<zero], as: UTF8.self)
        return (file, try Checkpoint.parse(Data(bytes[(zero + 1)...]), path: file))
    }

    /// The one check that checkpoint `ck` (read from `file`) belongs to a run with `config` on
    /// data that makes `model`: the settings that shape the run are equal, the model is the
    /// data's, and the arrays have the model's sizes (with `optimizer`, the moments too).
    public static func check(_ ck: Checkpoint, file: String, config: TrainConfig, model: ModelConfig,
                             optimizer: OptimizerKind? = nil, runDir: String) throws {
        let differing = JSON.differingFields(ck.state.config.fixedPart, config.fixedPart)
        guard differing.isEmpty else {
            throw OrthoHashError("checkpoint does not match this run's settings (differs in: \(differing.joined(separator: ", ")))",
                                 file: file, hint: "leave these settings as the run has them in \(runDir)/config.json")
        }
        guard ck.state.model == model else {
            throw OrthoHashError("checkpoint's model (\(describe(ck.state.model))) does not match the data (\(describe(model)))", file: file)
        }
        guard let P = model.parameterCount else {
            throw OrthoHashError("corrupt checkpoint: its model (\(describe(ck.state.model))) has more parameters than can be counted", file: file)
        }
        let moments = optimizer.map { ($0 == .adam ? [P, P] : [P, 0]) } ?? [ck.momentum1.count, ck.momentum2.count]
        guard ck.parameters.count == P, [ck.momentum1.count, ck.momentum2.count] == moments else {
            throw OrthoHashError("checkpoint does not match the model (\(ck.parameters.count) parameters, expected \(P))", file: file)
        }
    }

    static func describe(_ m: ModelConfig) -> String {
        "\(m.inputDim)-d inputs, \(m.classes) classes, \(m.backbone.rawValue)\(m.backbone == .mlp ? " \(m.hidden)" : ""), \(m.nbit) bits"
    }

    /// A finished (or interrupted) run's settings and one of its checkpoints, checked against
    /// each other: what eval, encode, revisited and export read.
    public static func loadRun(_ runDir: String, checkpoint choice: CheckpointChoice) throws -> (config: TrainConfig, checkpoint: Checkpoint, path: String) {
        let run = RunDirectory(runDir)
        let config = try run.config()
        let directory = run.checkpoints
        let path: String
        switch choice {
        case .best: path = directory.bestPath
        case .last:
            guard let newest = directory.stepCheckpoints().first else { throw OrthoHashError("no checkpoints", file: directory.path) }
            path = newest
        case .file(let name):
            let inRun = directory.path + "/" + name
            path = !name.contains("/") && FileManager.default.fileExists(atPath: inRun) ? inRun : name
        }
        let ck = try Checkpoint.read(path)
        try check(ck, file: path, config: config, model: ck.state.model, runDir: runDir)
        return (config, ck, path)
    }

    /// A model (no optimizer state) with the checkpoint's parameters and BatchNorm statistics,
    /// its workspace sized for `batchSize` rows at a time, computing on `threads` threads.
    public static func model(from ck: Checkpoint, batchSize: Int = 256, threads: Int = 1) throws -> HashModel {
        try checkMemory(ck.state.model, batch: batchSize, moments: 0, arcMargin: ck.state.config.loss.marginType == .arc)
        let model = HashModel(config: ck.state.model, loss: ck.state.config.loss, codebook: ck.codebook, batchSize: batchSize, threads: threads)
        ck.restore(into: model)
        return model
    }
}
