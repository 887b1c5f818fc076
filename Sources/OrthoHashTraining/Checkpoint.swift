// Checkpoints: the whole training state at a step, in the checkpoint file format
// (OrthoHashFormats.CheckpointFile): the state as the JSON header, then six sections:
// parameters, BatchNorm's running mean and variance, the optimizer's two moments (float32
// arrays; the second is empty for SGD) and the codebook (int8, (C, K)).

import Foundation
import OrthoHashFormats
import OrthoHashNumerics

public struct CheckpointState: Codable, Equatable {
    public var config: TrainConfig
    public var model: ModelConfig
    /// Epoch in progress (0-based) and batches of it already done.
    public var epoch: Int
    public var stepInEpoch: Int
    public var globalStep: Int
    public var optimizerStep: Int64
    public var batchesTracked: Int64
    /// Running sums of the epoch in progress, so its metrics line is the same after a resume.
    public var epochLossSum: Double
    public var epochCorrect: Int
    public var epochSamples: Int
    public var epochSeconds: Double
    /// Totals of the training loop so far.
    public var trainSeconds: Double
    public var samplesSeen: Int
    public var bestMAP: Double?
    public var bestEpoch: Int?
    public var worldSize: Int
    /// The data order of epoch e is Xoshiro256(seed, stream: epochPermutation + e).permutation(n).
    public var permutationSeed: UInt64
    /// The last step's loss, in a checkpoint of an epoch whose steps are done but whose end
    /// (evaluation, metrics, at the last epoch the summary's final loss) is still to come;
    /// absent otherwise.
    public var lastStepLoss: Double? = nil
    /// The last step's loss in the checkpoint written when the run has trained all its epochs
    /// (absent otherwise): a summary written later (`Trainer.finishSummary`) reports it.
    public var finalLoss: Double? = nil
    /// The training split the run trains on (absent in checkpoints written before it was kept):
    /// a resume on other data (rows appended, files replaced) is refused.
    public var trainData: DataFingerprint? = nil
}

/// The training split's shape and a cheap check of its content: rows, width, classes, and a
/// hash of 16 rows spread over it (features and labels), so that a resume notices data changed
/// under a run without reading all of it.
public struct DataFingerprint: Codable, Equatable, Sendable {
    public var rows: Int
    public var dim: Int
    public var classes: Int
    public var sample: UInt64

    public init(_ split: Split, classes: Int) throws {
        let n = split.rows, dim = split.features.dim
        rows = n; self.dim = dim; self.classes = classes
        var hash = Checksum()
        let row = FloatBuffer(count: dim)
        let picks = n <= 16 ? Array(0..<n) : (0..<16).map { $0 * (n - 1) / 15 }
        for r in picks {
            try split.features.copyRow(r, into: row.pointer)
            hash.add(row)
            switch split.labels {
            case .single(let y): hash.add(UInt64(UInt32(bitPattern: y[r])))
            case .multi(let C, let y): for c in 0..<C { hash.add(UInt64(y[r * C + c])) }
            }
        }
        sample = hash.value
    }

    /// What differs from `other`, for the message.
    func differences(from other: DataFingerprint) -> String {
        var out: [String] = []
        if rows != other.rows { out.append("\(other.rows) training rows, now \(rows)") }
        if dim != other.dim { out.append("width \(other.dim), now \(dim)") }
        if classes != other.classes { out.append("\(other.classes) classes, now \(classes)") }
        if out.isEmpty && sample != other.sample { out.append("the same shape, other values in the rows sampled") }
        return out.joined(separator: "; ")
    }
}

public struct Checkpoint {
    public var state: CheckpointState
    public var parameters: [Float]
    public var runningMean: [Float]
    public var runningVar: [Float]
    public var momentum1: [Float]
    public var momentum2: [Float]
    public var codebook: Codebook

    public init(state: CheckpointState, parameters: [Float], runningMean: [Float], runningVar: [Float],
                momentum1: [Float], momentum2: [Float], codebook: Codebook) {
        self.state = state; self.parameters = parameters; self.runningMean = runningMean
        self.runningVar = runningVar; self.momentum1 = momentum1; self.momentum2 = momentum2; self.codebook = codebook
    }

    /// The training state of `model` (its store's moments included: gather them first when the
    /// update is sharded) and `optimizer`.
    public init(state: CheckpointState, model: HashModel, optimizer: Optimizer) {
        var s = state
        s.optimizerStep = optimizer.step
        s.batchesTracked = model.batchesTracked
        self.init(state: s, parameters: model.parameters.array, runningMean: model.runningMean.array,
                  runningVar: model.runningVar.array, momentum1: model.store.moment1.array, momentum2: model.store.moment2.array,
                  codebook: model.codebook)
    }

    /// Puts this checkpoint's parameters and BatchNorm statistics into `model`, and with an
    /// `optimizer` its moments and step count: the one restore, for resuming and for reading a
    /// model back. The shapes have been checked (`Resume.check`).
    public func restore(into model: HashModel, optimizer: Optimizer? = nil) {
        func copy(_ values: [Float], _ buffer: FloatBuffer) {
            precondition(values.count == buffer.count, "restoring \(values.count) values into \(buffer.count)")
            values.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: $0.count) }
        }
        copy(parameters, model.parameters)
        copy(runningMean, model.runningMean)
        copy(runningVar, model.runningVar)
        model.batchesTracked = state.batchesTracked
        if let optimizer {
            copy(momentum1, model.store.moment1)
            copy(momentum2, model.store.moment2)
            optimizer.step = state.optimizerStep
        }
    }

    public func serialized() -> Data {
        let header = JSON.encode(state, pretty: false)
        return parameters.withUnsafeBytes { p in
            runningMean.withUnsafeBytes { rm in
                runningVar.withUnsafeBytes { rv in
                    momentum1.withUnsafeBytes { m1 in
                        momentum2.withUnsafeBytes { m2 in
                            codebook.values.withUnsafeBytes { cb in
                                CheckpointFile.serialize(header: header, sections: [p, rm, rv, m1, m2, cb])
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes atomically (`beforeRename`: see AtomicFile).
    public func write(to path: String, beforeRename: (() -> Void)? = nil) throws {
        try AtomicFile.write(serialized(), to: path, beforeRename: beforeRename)
    }

    public static func read(_ path: String) throws -> Checkpoint {
        try InputFile.check(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw OrthoHashError(FileManager.default.fileExists(atPath: path) ? "cannot read checkpoint" : "no such file", file: path)
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> Checkpoint {
        let (header, sections) = try CheckpointFile.parse([UInt8](data), sections: 6, path: path)
        let state = try JSON.decode(CheckpointState.self, from: header, file: path)
        func floats(_ s: ArraySlice<UInt8>) -> [Float] {
            s.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
        }
        let cb = sections[5].map { Int8(bitPattern: $0) }
        let K = state.model.nbit, C = state.model.classes
        let (codebookSize, overflow) = C.multipliedReportingOverflow(by: K)
        guard K >= 1, C >= 1, !overflow, cb.count == codebookSize, sections[1].count == 4 * K, sections[2].count == 4 * K else {
            throw OrthoHashError("corrupt checkpoint: sections do not match the model's shape", file: path)
        }
        return Checkpoint(state: state, parameters: floats(sections[0]), runningMean: floats(sections[1]), runningVar: floats(sections[2]),
                          momentum1: floats(sections[3]), momentum2: floats(sections[4]), codebook: Codebook(classes: C, bits: K, values: cb))
    }
}

/// The checkpoints of a run directory: `checkpoints/step-XXXXXXXXXX.ohck`, plus `best.ohck`.
public struct CheckpointDirectory {
    public let path: String
    public init(runDir: String) { path = runDir + "/checkpoints" }

    public func stepPath(_ step: Int) -> String { path + String(format: "/step-%010ld.ohck", step) }
    public var bestPath: String { path + "/best.ohck" }

    /// Step checkpoints, newest first.
    public func stepCheckpoints() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".ohck") }.sorted(by: >).map { path + "/" + $0 }
    }

    /// The newest step checkpoint that reads back intact, and why each newer one did not.
    public func newestValid() -> (found: (path: String, checkpoint: Checkpoint)?, skipped: [String]) {
        var skipped: [String] = []
        for file in stepCheckpoints() {
            do { return ((file, try Checkpoint.read(file)), skipped) } catch { skipped.append("\(error)") }
        }
        return (nil, skipped)
    }

    /// Deletes all but the newest `keep` step checkpoints.
    public func prune(keep: Int) {
        guard keep > 0 else { return }
        for file in stepCheckpoints().dropFirst(keep) { try? FileManager.default.removeItem(atPath: file) }
    }
}
