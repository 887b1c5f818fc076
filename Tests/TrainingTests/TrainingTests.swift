import XCTest
@testable import OrthoHashFormats
@testable import OrthoHashNumerics
@testable import OrthoHashTraining
import TestSupport

final class CheckpointTests: XCTestCase {
    func sample() -> Checkpoint {
        var c = TrainConfig()
        c.nbit = 4
        let state = CheckpointState(config: c, model: ModelConfig(inputDim: 3, backbone: .linear, hidden: [], nbit: 4, classes: 2),
                                    epoch: 1, stepInEpoch: 2, globalStep: 7, optimizerStep: 7, batchesTracked: 7,
                                    epochLossSum: 1.5, epochCorrect: 3, epochSamples: 20, epochSeconds: 0.1, trainSeconds: 0.5,
                                    samplesSeen: 70, bestMAP: 0.25, bestEpoch: 1, worldSize: 1, permutationSeed: 0)
        return Checkpoint(state: state, parameters: (0..<20).map { Float($0) / 3 }, runningMean: [1, 2, 3, 4], runningVar: [5, 6, 7, 8],
                          momentum1: (0..<20).map { Float($0) }, momentum2: (0..<20).map { Float($0) * 2 },
                          codebook: Codebook(classes: 2, bits: 4, values: [1, -1, 1, -1, -1, -1, 1, 1]))
    }

    func testRoundTrip() throws {
        let dir = temporaryDirectory()
        let ck = sample()
        try ck.write(to: dir + "/a.ohck")
        let back = try Checkpoint.read(dir + "/a.ohck")
        XCTAssertEqual(back.state, ck.state)
        XCTAssertEqual(back.parameters, ck.parameters)
        XCTAssertEqual(back.runningVar, ck.runningVar)
        XCTAssertEqual(back.momentum2, ck.momentum2)
        XCTAssertEqual(back.codebook, ck.codebook)
        // No temporary file is left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["a.ohck"])
    }

    func testCorruptionIsDetected() throws {
        let dir = temporaryDirectory()
        var data = [UInt8](sample().serialized())
        for (name, mutate) in [("flip", { (d: inout [UInt8]) in d[d.count / 2] ^= 0x10 }),
                               ("truncate", { (d: inout [UInt8]) in d.removeLast(30) }),
                               ("magic", { (d: inout [UInt8]) in d[0] = 0 })] as [(String, (inout [UInt8]) -> Void)] {
            var copy = data
            mutate(&copy)
            _ = FileManager.default.createFile(atPath: dir + "/\(name).ohck", contents: Data(copy))
            assertUserError("corrupt checkpoint", file: "\(name).ohck") { _ = try Checkpoint.read(dir + "/\(name).ohck") }
        }
        data[8] = 9   // version 9, checksum fixed up so only the version is wrong
        let body = data.count - 12
        let crc = data.withUnsafeBufferPointer { UInt32(crc32Bytes($0.baseAddress!, body)) }
        for i in 0..<4 { data[body + i] = UInt8(crc >> (8 * UInt32(i)) & 0xFF) }
        _ = FileManager.default.createFile(atPath: dir + "/v9.ohck", contents: Data(data))
        assertUserError("format version 9 is not supported", file: "v9.ohck") { _ = try Checkpoint.read(dir + "/v9.ohck") }
    }
}


final class TrainingTests: XCTestCase {
    /// --gradient-overlap auto: on only for AlexNet and VGG-16 on more than one node (where it was
    /// measured faster); on and off mean what they say everywhere.
    func testGradientOverlapAuto() {
        for backbone in BackboneKind.allCases {
            for nodes in [1, 2, 64] {
                XCTAssertEqual(GradientOverlap.auto.resolved(nodes: nodes, backbone: backbone), nodes > 1 && (backbone == .alexnet || backbone == .vgg16),
                               "\(backbone) on \(nodes) nodes")
                XCTAssertTrue(GradientOverlap.on.resolved(nodes: nodes, backbone: backbone))
                XCTAssertFalse(GradientOverlap.off.resolved(nodes: nodes, backbone: backbone))
            }
        }
        XCTAssertFalse(GradientOverlap.auto.applies(to: OneProcess(), backbone: .alexnet), "one process: nothing to overlap")
        XCTAssertEqual(TrainConfig().gradientOverlap, .auto, "the default of new runs")
    }

    @discardableResult
    func train(_ config: TrainConfig, dir: String, resume: Bool = false, stopAfter: Int? = nil) throws -> Trainer {
        var options = TrainerOptions.quiet
        options.stopAfterSteps = stopAfter
        let t = try Trainer(config: config, data: try config.loadData(), runDir: dir, options: options)
        try t.run(resume: resume)
        return t
    }

    /// AlexNet with dropout on generated images, stopped mid-epoch and resumed: byte-identical to
    /// the run that was not stopped (the masks are drawn from the step and the row, not a stream).
    func testResumeWithDropoutIsExact() throws {
        let dir = temporaryDirectory()
        var config = TrainConfig()
        config.dataset = .generated; config.backbone = .alexnet; config.imageSize = 63; config.trainLimit = 48; config.queryLimit = 8
        config.classes = 4; config.nbit = 16; config.batchSize = 16; config.epochs = 2; config.optimizer.lr = 1e-3
        config.checkpointEvery = 0; config.checkpointEverySteps = 4; config.keepCheckpoints = 1
        let full = try train(config, dir: dir + "/full")
        let cut = dir + "/cut"
        try train(config, dir: cut, stopAfter: 4)                 // 3 steps per epoch: mid-epoch 2
        let resumed = try train(config, dir: cut, resume: true)
        XCTAssertEqual(full.stepLosses.count, 6)
        XCTAssertEqual(Array(full.stepLosses.suffix(2)), resumed.stepLosses)
        XCTAssertEqual(resumed.model.parameters.array, full.model.parameters.array)
    }

    func testRunDirectoryAndDeterminism() throws {
        let dir = temporaryDirectory()
        let s = SyntheticNPY(dir: dir)
        let a = try train(s.config, dir: dir + "/a"), b = try train(s.config, dir: dir + "/b")
        XCTAssertEqual(a.model.parameters.array, b.model.parameters.array, "same seed, same threads: identical")
        XCTAssertEqual(a.stepLosses, b.stepLosses)
        for file in ["config.json", "codebook.npy", "metrics.jsonl", "summary.json", "checkpoints/best.ohck"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/a/" + file), file)
        }
        let lines = try String(contentsOfFile: dir + "/a/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        let summary = try JSONDecoder().decode(Summary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/a/summary.json")))
        XCTAssertEqual(summary.epochs, 3); XCTAssertEqual(summary.world_size, 1)
        XCTAssertEqual(summary.gradient_reduction, "none (one rank)")
        XCTAssertGreaterThan(summary.map["all"]!, 0.6, "4 separable clusters: well above chance (0.25)")
        XCTAssertNotNil(summary.map["10"])
        XCTAssertGreaterThan(summary.samples_per_second, 0)
        // The saved codebook is the one trained with.
        let cb = try loadCodebook(dir + "/a/codebook.npy", classes: 4, bits: 16)
        XCTAssertEqual(cb, a.model.codebook)
        let c = try train({ var c = s.config; c.seed = 1; return c }(), dir: dir + "/c")
        XCTAssertNotEqual(a.model.parameters.array, c.model.parameters.array)
    }

    /// Stopped mid-epoch and resumed: byte-identical to the run that was never interrupted,
    /// for both optimizers and with a step-based checkpoint.
    func testResumeIsExact() throws {
        for kind in OptimizerKind.allCases {
            let dir = temporaryDirectory()
            var config = SyntheticNPY(dir: dir).config
            config.optimizer.kind = kind
            config.checkpointEverySteps = 5
            config.evalEvery = 1
            let full = try train(config, dir: dir + "/full")
            // 8 steps per epoch; stop after 13 steps: the newest checkpoint is step 10 (mid-epoch 2).
            _ = try train(config, dir: dir + "/cut", stopAfter: 13)
            let resumed = try train(config, dir: dir + "/cut", resume: true)
            XCTAssertEqual(resumed.model.parameters.array, full.model.parameters.array, "\(kind)")
            XCTAssertEqual(resumed.model.runningVar.array, full.model.runningVar.array)
            XCTAssertEqual(resumed.stepLosses, Array(full.stepLosses.suffix(resumed.stepLosses.count)))
            XCTAssertEqual(resumed.stepLosses.count, 24 - 10)
            XCTAssertEqual(try String(contentsOfFile: dir + "/cut/metrics.jsonl", encoding: .utf8).split(separator: "\n").count, 3)
            let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/full/summary.json"))
            let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/cut/summary.json"))
            var sa = try JSONDecoder().decode(Summary.self, from: a), sb = try JSONDecoder().decode(Summary.self, from: b)
            sa.samples_per_second = 0; sa.train_seconds = 0; sb.samples_per_second = 0; sb.train_seconds = 0
            XCTAssertEqual(sa, sb)
        }
    }

    func testResumeSkipsCorruptNewestAndRejectsMismatch() throws {
        let dir = temporaryDirectory()
        var config = SyntheticNPY(dir: dir).config
        config.checkpointEverySteps = 4
        config.keepCheckpoints = 10
        let full = try train(config, dir: dir + "/full")
        _ = try train(config, dir: dir + "/cut", stopAfter: 13)
        let files = CheckpointDirectory(runDir: dir + "/cut").stepCheckpoints()
        XCTAssertEqual(files.first?.hasSuffix("step-0000000012.ohck"), true)
        // Flip a byte in the newest: resume falls back to step 8 and still ends identical.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: files[0])))
        bytes[bytes.count / 2] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: files[0]))
        // Truncate the second newest too: falls back further.
        let second = [UInt8](try Data(contentsOf: URL(fileURLWithPath: files[1])))
        try Data(second.prefix(second.count - 100)).write(to: URL(fileURLWithPath: files[1]))
        let resumed = try train(config, dir: dir + "/cut", resume: true)
        XCTAssertEqual(resumed.stepLosses.count, 24 - 4)
        XCTAssertEqual(resumed.model.parameters.array, full.model.parameters.array)
        // A different model: refused, naming the checkpoint.
        var other = config
        other.nbit = 32
        assertUserError("checkpoint does not match this run's settings (differs in: nbit)", file: "step-") {
            _ = try train(other, dir: dir + "/cut", resume: true)
        }
    }

    /// A stop request (what a signal sets) at step S, mid-epoch or at an epoch's last step:
    /// the run stops after step S with a checkpoint of exactly that step, and --resume from it
    /// ends byte-identical to the run that was never interrupted.
    func testStopRequestCheckpointsTheStepAndResumesExactly() throws {
        let dir = temporaryDirectory()
        var config = SyntheticNPY(dir: dir).config
        config.evalEvery = 1
        let full = try train(config, dir: dir + "/full")
        for stop in [11, 16] {                     // 8 steps per epoch: mid-epoch 2, end of epoch 2
            let run = dir + "/cut\(stop)"
            // The signal arrives during step `stop`: from then on the flag is up, however often
            // it is read (every step, and between an evaluation's chunks).
            let signal = SignalDuring(step: stop)
            var options = TrainerOptions.quiet
            options.faults = signal
            options.stopRequested = { signal.arrived ? "SIGTERM" : nil }
            let t = try Trainer(config: config, data: try config.loadData(), runDir: run, options: options)
            do {
                try t.run()
                XCTFail("the run was not stopped")
            } catch let interruption as Interruption {
                XCTAssertEqual(interruption.step, stop)
                XCTAssertEqual(interruption.reason, "SIGTERM")
                XCTAssertEqual(interruption.checkpoint, run + "/checkpoints/" + String(format: "step-%010d.ohck", stop))
                XCTAssertTrue(interruption.description.hasPrefix("stopped by SIGTERM after step \(stop) (step \(stop - 8) of 8 in epoch 2 of 3)"),
                              interruption.description)
            }
            XCTAssertEqual(try Checkpoint.read(CheckpointDirectory(runDir: run).stepCheckpoints()[0]).state.globalStep, stop)
            XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/summary.json"))
            let resumed = try train(config, dir: run, resume: true)
            XCTAssertEqual(resumed.model.parameters.array, full.model.parameters.array, "stopped at \(stop)")
            XCTAssertEqual(resumed.stepLosses, Array(full.stepLosses.suffix(24 - stop)))
            XCTAssertEqual(try metricsWithoutTiming(run), try metricsWithoutTiming(dir + "/full"), "every epoch's line, once")
        }
    }

    /// A run directory belongs to one run: a new run into one that holds a run is refused
    /// (unless it overwrites it), a directory another job holds is refused naming that job, and
    /// temporary files of a writer killed mid-write are removed by the next job.
    func testRunDirectoryBelongsToOneRun() throws {
        let dir = temporaryDirectory()
        let config = SyntheticNPY(dir: dir).config
        let run = dir + "/run"
        _ = try train(config, dir: run, stopAfter: 13)
        assertUserError("holds a run already (config.json, codebook.npy, metrics.jsonl, 1 step checkpoint)", file: run) {
            _ = try train(config, dir: run)
        }
        do { _ = try train(config, dir: run) } catch let error as OrthoHashError {
            XCTAssertEqual(error.hint, "continue it with --resume, train into another --run-dir, or pass --overwrite to delete its files first")
        }
        // Another job's lock (taken here through the same call a job makes).
        do {
            let held = try RunDirectory(run).lock()
            assertUserError("is in use by another job (pid \(getpid()) on host ", file: run) { _ = try train(config, dir: run, resume: true) }
            withExtendedLifetime(held) {}
        }
        // Leftovers of writers killed mid-write, in the run directory and in checkpoints/.
        for leftover in [run + "/.summary.json.tmp-4242", run + "/checkpoints/.step-0000000016.ohck.tmp-4242"] {
            _ = FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3]))
        }
        // Overwritten: the earlier run's files go, and the new run is a run from scratch.
        let fresh = try train(config, dir: dir + "/fresh")
        let t = try Trainer(config: config, data: try config.loadData(), runDir: run, options: .quiet)
        try t.run(overwrite: true)
        XCTAssertEqual(t.model.parameters.array, fresh.model.parameters.array)
        let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").sorted()
        XCTAssertEqual(names, try FileManager.default.contentsOfDirectory(atPath: dir + "/fresh/checkpoints").sorted(), "no step-13 left, no temporaries")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/.summary.json.tmp-4242"))
        // Resuming the finished run: nothing to do, nothing written.
        let before = try Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))
        let again = try Trainer(config: config, data: try config.loadData(), runDir: run, options: .quiet)
        XCTAssertNil(try again.run(resume: true))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/summary.json")), before)
        XCTAssertTrue(again.stepLosses.isEmpty)
    }

    /// --resume with checkpoints of which none reads back intact stops, naming each and why
    /// (starting afresh would overwrite them); with no checkpoint yet it starts from scratch.
    func testResumeRefusesWhenNoCheckpointIsIntact() throws {
        let dir = temporaryDirectory()
        var config = SyntheticNPY(dir: dir).config
        config.checkpointEverySteps = 4
        _ = try train(config, dir: dir + "/run", stopAfter: 9)
        let files = CheckpointDirectory(runDir: dir + "/run").stepCheckpoints()
        XCTAssertEqual(files.count, 2)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: files[0])))
        bytes[bytes.count / 2] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: files[0]))
        try Data(bytes.prefix(40)).write(to: URL(fileURLWithPath: files[1]))
        assertUserError("no checkpoint reads back intact (\(files[0]): corrupt checkpoint: checksum mismatch; \(files[1]): corrupt checkpoint: truncated",
                        file: dir + "/run/checkpoints") { _ = try train(config, dir: dir + "/run", resume: true) }
        XCTAssertEqual(CheckpointDirectory(runDir: dir + "/run").stepCheckpoints(), files, "nothing overwritten")
        let scratch = try train(config, dir: dir + "/empty", resume: true)
        XCTAssertEqual(scratch.stepLosses.count, 24)
    }

    /// metrics.jsonl's lines without the fields that measure time.
    func metricsWithoutTiming(_ run: String) throws -> [String] {
        try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            var object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            object["samples_per_second"] = nil
            object["train_seconds"] = nil
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        }
    }

    func testNonFiniteLossStopsWithStep() throws {
        let dir = temporaryDirectory()
        var config = SyntheticNPY(dir: dir).config
        config.optimizer.lr = .greatestFiniteMagnitude
        assertUserError("non-finite loss or gradient at step", file: nil) { _ = try train(config, dir: dir + "/run") }
    }

    func testMultiLabelTrainsAndArcMargin() throws {
        let dir = temporaryDirectory()
        let s = SyntheticNPY(dir: dir)
        // Multi-hot labels: the class and its successor.
        for name in ["train", "query", "db"] {
            let y = try Labels.load(path: "\(dir)/\(name)_y.npy")
            guard case .single(let l) = y else { return XCTFail() }
            var m = [UInt8](repeating: 0, count: l.count * 5)
            for (i, c) in l.enumerated() { m[i * 5 + Int(c)] = 1; m[i * 5 + Int(c) + 1] = 1 }
            writeNPY("\(dir)/\(name)_m.npy", descr: "|u1", shape: "(\(l.count), 5)", data: m)
        }
        for loss in MultiLabelLoss.allCases {
            var c = s.config
            c.trainLabels = dir + "/train_m.npy"; c.queryLabels = dir + "/query_m.npy"; c.dbLabels = dir + "/db_m.npy"
            c.loss.multiLabelLoss = loss
            c.loss.marginType = loss == .smooth ? .arc : .cos
            let t = try train(c, dir: dir + "/\(loss)")
            let summary = try JSONDecoder().decode(Summary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/\(loss)/summary.json")))
            XCTAssertGreaterThan(summary.map["all"]!, 0.6, "\(loss)")
            XCTAssertTrue(t.stepLosses.allSatisfy(\.isFinite))
        }
    }

    /// The real images: a subset, a few epochs, far above chance (mAP of random codes ~ 0.1).
    func testFashionMNISTSubsetBeatsChance() throws {
        var c = TrainConfig()
        c.trainLimit = 6000; c.queryLimit = 500; c.dbLimit = 6000
        c.backbone = .mlp; c.hidden = [128]; c.nbit = 32; c.epochs = 2; c.batchSize = 128
        c.optimizer.lr = 1e-3
        let t = try train(c, dir: temporaryDirectory())
        let result = try t.evaluate()
        XCTAssertGreaterThan(result.meanAP[0], 0.5, "mAP@all")
        XCTAssertGreaterThan(result.meanAP[1], 0.6, "mAP@1000")
    }
}

final class ExportTests: XCTestCase {
    func testSafetensorsLayout() throws {
        let model = HashModel(config: ModelConfig(inputDim: 3, backbone: .mlp, hidden: [2], nbit: 4, classes: 2), loss: LossConfig(),
                              codebook: try Codebook.generate(method: .B, classes: 2, bits: 4, seed: 0), batchSize: 2)
        let data = [UInt8](SafeTensors.serialize(SafeTensors.tensors(of: model), metadata: ["format": "pt"]))
        let n = Int(data[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        XCTAssertEqual((8 + n) % 8, 0)
        let header = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + n)])) as! [String: Any]
        let w = header["hash_fc.0.weight"] as! [String: Any]
        XCTAssertEqual(w["shape"] as! [Int], [4, 2])
        XCTAssertEqual(w["dtype"] as! String, "F32")
        for name in ["backbone.fc.0.weight", "backbone.fc.0.bias", "hash_fc.1.weight", "hash_fc.1.bias", "hash_fc.1.running_mean",
                     "hash_fc.1.running_var", "hash_fc.1.num_batches_tracked", "ce_fc.centroids"] {
            XCTAssertNotNil(header[name], name)
        }
        // The last tensor ends at the end of the file.
        let end = ((header["ce_fc.centroids"] as! [String: Any])["data_offsets"] as! [Int])[1]
        XCTAssertEqual(8 + n + end, data.count)
        let offsets = w["data_offsets"] as! [Int]
        let values = data[(8 + n + offsets[0])..<(8 + n + offsets[1])].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(values, Array(model.parameters.array[model.hashWeight..<(model.hashWeight + 8)]))
    }
}

/// Rank 0 of a job of three, the other two ranks' answers to allGather scripted.
final class ScriptedRanks: Collective {
    let others: [[UInt8]]
    init(others: [[UInt8]]) { self.others = others }
    var rank: Int { 0 }
    var ranks: Int { 3 }
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {}
    func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8] { bytes }
    func allGather(_ bytes: [UInt8]) -> [[UInt8]] { [bytes] + others }
    func abort(_ message: String, code: Int32) -> Never { fatalError(message) }
}

final class AgreementTests: XCTestCase {
    /// The ranks agree on how work that has no collectives inside went: one error, for every
    /// rank, saying what each failing rank met (and once when all met the same).
    func testErrorsAreAgreedOn() throws {
        let missing = OrthoHashError("no such file", file: "x.npy")
        func agreed(_ others: [String], mine: OrthoHashError?) -> OrthoHashError? {
            do {
                try ScriptedRanks(others: others.map { Array($0.utf8) }).agree { if let mine { throw mine } }
                return nil
            } catch let error as OrthoHashError { return error } catch { XCTFail("\(error)"); return nil }
        }
        XCTAssertNil(agreed(["", ""], mine: nil), "nobody failed")
        let all = agreed(["x.npy: no such file", "x.npy: no such file"], mine: missing)
        XCTAssertEqual(all?.description, "x.npy: no such file")
        XCTAssertEqual(all?.everyRank, true)
        let one = agreed(["", "x.npy: no such file"], mine: nil)
        XCTAssertEqual(one?.description, "rank 2: x.npy: no such file", "a rank that did not fail stops too, told why")
        XCTAssertEqual(one?.everyRank, true)
        let mixed = agreed(["y.npy: cannot read", "x.npy: no such file"], mine: missing)
        XCTAssertEqual(mixed?.description, "ranks 0, 2: x.npy: no such file; rank 1: y.npy: cannot read")
    }

    /// A checkpoint whose header asks for a model of more parameters than can be counted is an
    /// error naming it, not a trap.
    func testAbsurdModelInACheckpointIsRefused() throws {
        let dir = temporaryDirectory()
        let config = SyntheticNPY(dir: dir).config
        let t = try Trainer(config: config, data: try config.loadData(), runDir: dir + "/run", options: .quiet)
        try t.run()
        let path = CheckpointDirectory(runDir: dir + "/run").stepCheckpoints()[0]
        var ck = try Checkpoint.read(path)
        ck.state.model = ModelConfig(inputDim: Int.max / 2, backbone: .mlp, hidden: [Int.max / 2], nbit: 16, classes: 4)
        ck.state.config.backbone = .mlp; ck.state.config.hidden = [Int.max / 2]
        try ck.write(to: path)
        var stored = try RunDirectory(dir + "/run").config()
        stored.backbone = .mlp; stored.hidden = [Int.max / 2]
        try AtomicFile.write(JSON.encode(stored), to: dir + "/run/config.json")
        assertUserError("has more parameters than can be counted", file: path) { _ = try Resume.loadRun(dir + "/run", checkpoint: .last) }
    }
}

/// A stop signal that arrives during global step `step` (set before it starts).
final class SignalDuring: FaultInjection {
    let step: Int
    private(set) var arrived = false
    init(step: Int) { self.step = step }
    func beforeStep(rank: Int, step: Int) { if step == self.step { arrived = true } }
    func afterBackward(_ gradients: FloatBuffer, step: Int) -> Bool { false }
    func beforeCheckpointRename() {}
    func beforeEvaluation() {}
    var stopAfterSteps: Int? { nil }
}
