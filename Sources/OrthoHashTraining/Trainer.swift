// The trainer: the schedule of a run (epochs, learning rate, evaluation, checkpoints) around one
// step that reads as a straight line: this rank's batch, forward, backward, the sum over ranks,
// the update of this rank's shard, and every rank's parameters whole again.
//
// Dimensions: N = global batch, B = local batch (N / ranks), D = input features, C = classes.

import Foundation
import OrthoHashFormats
import OrthoHashNumerics

/// How a trainer runs, beside what the run computes (`TrainConfig`): given once to `Trainer.init`.
/// None of it changes the bits a run computes (the step's path does, and is in `TrainConfig`).
public struct TrainerOptions {
    /// BLAS threads of this process (the thread budget the command line resolved).
    public var threads = 1
    public var log = Log()
    /// Fault injection (tests); none by default.
    public var faults: FaultInjection = NoFaults()
    /// Stop (as if interrupted) after this many global steps (tests, benchmarks); nil: the
    /// faults' setting, if any.
    public var stopAfterSteps: Int? = nil
    /// Rank 0 appends `step,loss` of every global step to the run's steps.csv (full precision).
    public var logSteps = false
    /// Verify mode: after every step, check that the parameters are bitwise identical on all ranks.
    public var verify = false
    /// Draw a progress bar within an epoch (rank 0, on a terminal).
    public var progressBar = Progress.barWanted
    /// Seconds between progress lines within an epoch (rank 0; 0: none), for output that is not
    /// a terminal: a long epoch under mpirun shows signs of life.
    public var progressEvery: Double = 0
    /// Whether this process was asked to stop (the signal's name), read at every step: the
    /// command line installs signal handlers (CStop). A request on any rank stops every rank
    /// after the same step, with a checkpoint of it (`Interruption`).
    public var stopRequested: () -> String? = { nil }
    /// Where rank 0 writes every rank's spans as a Chrome trace at the end of the run or when it
    /// is interrupted (`--timeline`); recording starts when it is set.
    public var timelinePath: String? = nil
    /// A barrier before each gradient sum, so that the time waiting for the slowest rank is
    /// measured apart from the sum (bench, timelines); it costs one barrier's latency per step.
    public var measureWait = false

    public init() {}
}

public final class Trainer {
    public let config: TrainConfig
    public let data: DataSplits
    public let runDir: RunDirectory
    public let dataParallel: DataParallel
    public let options: TrainerOptions
    public var log: Log { options.log }
    var threads: Int { options.threads }
    var faults: FaultInjection { options.faults }
    /// Where the run stops as if interrupted (`TrainerOptions.stopAfterSteps`, `continueRun(until:)`).
    var stopAfterSteps: Int?
    /// Where this rank's time goes (per-phase totals always; spans when `timeline.recording`).
    public let timeline: Timeline
    /// Seconds of every step of this process, in order (benchmarks' percentiles).
    public private(set) var stepSeconds: [Double] = []

    public private(set) var model: HashModel!
    public private(set) var optimizer: Optimizer!
    /// Loss of every global step, in order (for tests and equivalence checks).
    public private(set) var stepLosses: [Double] = []

    var collective: Collective { dataParallel.collective }
    var loader: BatchLoader!
    /// Where the run is and its running sums: what a checkpoint saves.
    var state: CheckpointState!
    var stepLog: StepLog?
    var lastLoss = 0.0
    /// The global step of the newest step checkpoint this run wrote.
    var checkpointedStep = -1
    /// The run directory's lock (coordinator), held while `run` or `continueRun` runs.
    var lock: RunLock?

    public init(config: TrainConfig, data: DataSplits, runDir: String, dataParallel: DataParallel = OneProcess(),
                options: TrainerOptions = TrainerOptions()) throws {
        self.config = config; self.data = data; self.runDir = RunDirectory(runDir); self.dataParallel = dataParallel
        self.options = options
        stopAfterSteps = options.stopAfterSteps ?? options.faults.stopAfterSteps
        timeline = Timeline(recording: options.timelinePath != nil)
        try config.validate()
        try config.checkBackbone(for: data)
        guard config.batchSize <= data.train.rows else {
            throw OrthoHashError("--batch-size \(config.batchSize) is larger than the training set (\(data.train.rows) rows)", file: data.train.features.name)
        }
        guard config.batchSize % dataParallel.ranks == 0 else {
            throw OrthoHashError("--batch-size \(config.batchSize) is not divisible by the \(dataParallel.ranks) ranks",
                                 hint: "the global batch is split evenly; choose a multiple of \(dataParallel.ranks)")
        }
        // Before anything is allocated; said once where every rank's node is short alike.
        let (model, ranks) = (modelConfig, dataParallel.ranks)
        try dataParallel.collective.agree {
            try checkMemory(model, batch: config.batchSize / ranks, moments: config.optimizer.kind == .adam ? 2 : 1,
                            arcMargin: config.loss.marginType == .arc, ranksOnNode: dataParallel.ranksOnNode)
        }
    }

    var modelConfig: ModelConfig {
        config.model(for: data)
    }

    /// Seconds spent in the training loop so far (this run and the runs it resumed).
    public var trainSeconds: Double { state?.trainSeconds ?? 0 }

    /// Trains to the end (or to `stopAfterSteps`) and returns the summary (nil if stopped early).
    /// The coordinator holds the run directory's lock for the run's life. Without `resume`, a
    /// directory that holds an earlier run is refused, unless `overwrite` clears it first.
    @discardableResult
    public func run(resume: Bool = false, overwrite: Bool = false) throws -> Summary? {
        defer { lock = nil }
        try collective.onCoordinator("preparing the run directory") {
            try runDir.create()
            lock = try runDir.lock()
            if !resume { try runDir.claimForNewRun(overwrite: overwrite) }
        }
        try prepare(resume: resume)
        guard state.epoch < config.epochs else { return try finishSummary() }     // a finished run, resumed
        try collective.onCoordinator("writing the run's settings") {
            try runDir.begin(config: config, codebook: model.codebook, epochsDone: state.epoch)
            if options.logSteps { stepLog = try runDir.openStepLog() }
        }
        return try train()
    }

    /// Goes on after `run` stopped at `stopAfterSteps`, to global step `until` (nil: the end).
    @discardableResult
    public func continueRun(until: Int?) throws -> Summary? {
        defer { lock = nil }
        stopAfterSteps = until
        if collective.isCoordinator { lock = try runDir.lock() }
        return try train()
    }

    /// Sets up the model, optimizer and data, from scratch or from the newest valid checkpoint.
    public func prepare(resume: Bool) throws {
        let resumed = resume ? try Resume.newestCheckpoint(in: runDir.checkpoints, collective: collective, warn: log.warn) : nil
        if resume && resumed == nil { log.info("no checkpoint in \(runDir.checkpoints.path): starting from scratch") }
        let fingerprint = try collective.agree { try DataFingerprint(data.train, classes: data.classes) }
        if let (file, ck) = resumed {
            try collective.agree {
                try Resume.check(ck, file: file, config: config, model: modelConfig, optimizer: config.optimizer.kind, runDir: runDir.path)
                if let stored = ck.state.trainData, stored != fingerprint {
                    throw OrthoHashError("the training data is not the data this run trained on (\(fingerprint.differences(from: stored)))",
                                         file: file, hint: "resume with the run's data, or start a new run (--overwrite) on this data")
                }
            }
        }
        let codebook = try resumed?.checkpoint.codebook ?? makeCodebook()
        let store = dataParallel.makeStore(layout: ParameterLayout(modelConfig), optimizer: config.optimizer.kind)
        model = HashModel(config: modelConfig, loss: config.loss, codebook: codebook, batchSize: config.batchSize / dataParallel.ranks,
                          store: store, statistics: TimedStatistics(collective, timeline: timeline),
                          head: config.stepPath.head, products: config.stepPath.products, threads: options.threads)
        optimizer = Optimizer(config: config.optimizer)
        // Images are decoded as they are read: the next batch's on a thread of their own meanwhile.
        loader = BatchLoader(split: data.train, classes: data.classes, globalBatch: config.batchSize, rank: dataParallel.rank,
                             ranks: dataParallel.ranks, seed: config.seed, prefetch: data.train.features is ImageFeatures)
        if let (file, ck) = resumed {
            ck.restore(into: model, optimizer: optimizer)
            state = ck.state
            state.trainData = fingerprint      // kept from here on in runs whose checkpoints lacked it
            state.config = config
            lastLoss = state.lastStepLoss ?? state.finalLoss ?? 0
            state.lastStepLoss = nil
            if ck.state.worldSize != dataParallel.ranks {
                log.info("resuming a \(ck.state.worldSize)-rank run with \(dataParallel.ranks) ranks: the global batch (\(config.batchSize)) and data order are unchanged")
            }
            state.worldSize = dataParallel.ranks
            if state.epoch >= config.epochs {
                log.info("the run in \(runDir.path) has finished all \(config.epochs) epochs (\(file))")
            } else {
                log.info("resumed from \(file) (epoch \(state.epoch + 1), step \(state.stepInEpoch) of \(loader.stepsPerEpoch))")
            }
        } else {
            model.resetParameters(seed: config.seed)
            if let file = config.pretrained {
                // Rank 0 reads the file; the broadcast below gives every rank its weights.
                let loaded = try collective.agree { try collective.isCoordinator ? Pretrained.load(file, into: model) : 0 }
                if collective.isCoordinator { log.info("backbone: \(loaded) tensors from \(file)") }
            }
            // Rank 0's initial parameters are everyone's (the seed makes them equal anyway;
            // broadcasting makes it true whatever the ranks' builds or libraries).
            broadcastParameters()
            state = CheckpointState(config: config, model: modelConfig, epoch: 0, stepInEpoch: 0, globalStep: 0,
                                    optimizerStep: 0, batchesTracked: 0, epochLossSum: 0, epochCorrect: 0,
                                    epochSamples: 0, epochSeconds: 0, trainSeconds: 0, samplesSeen: 0,
                                    bestMAP: nil, bestEpoch: nil, worldSize: dataParallel.ranks, permutationSeed: config.seed)
            state.trainData = fingerprint
        }
    }

    /// The codebook: from `--codebook-file`, or generated from the seed on rank 0 and broadcast.
    func makeCodebook() throws -> Codebook {
        if let file = config.codebookFile { return try collective.agree { try loadCodebook(file, classes: data.classes, bits: config.nbit) } }
        let drawn = try collective.onCoordinator("drawing the codebook") {
            try Codebook.generate(method: config.codebook, classes: data.classes, bits: config.nbit, seed: config.seed).values.map { UInt8(bitPattern: $0) }
        }
        let bytes = collective.broadcast(drawn ?? [], root: 0)
        return Codebook(classes: data.classes, bits: config.nbit, values: bytes.map { Int8(bitPattern: $0) })
    }

    func broadcastParameters() {
        guard dataParallel.ranks > 1 else { return }
        let p = model.parameters
        let bytes = collective.broadcast(Array(UnsafeRawBufferPointer(start: p.pointer, count: p.count * 4)), root: 0)
        bytes.withUnsafeBytes { p.pointer.update(from: $0.bindMemory(to: Float.self).baseAddress!, count: p.count) }
    }

    /// The schedule: epochs of steps, and at the end of each the metrics, evaluation and checkpoints.
    func train() throws -> Summary? {
        dataParallel.setGradientPrecision(config.stepPath.gradientSum)
        dataParallel.setGradientBuckets(bytes: config.gradientBucketBytes)
        log.info(Progress.start(rows: data.train.rows, stepsPerEpoch: loader.stepsPerEpoch, globalBatch: config.batchSize,
                                ranks: dataParallel.ranks, localBatch: loader.localBatch, nbit: config.nbit, classes: data.classes,
                                parameters: model.parameterCount, threads: threads))
        if dataParallel.ranks > 1 {
            let overlap = config.stepPath.overlap
            let on = overlap.applies(to: dataParallel, backbone: model.config.backbone)
            let why = overlap == .auto ? " (--gradient-overlap auto: \(on ? "on" : "off") for \(model.config.backbone.rawValue) on \(dataParallel.nodes) node\(dataParallel.nodes == 1 ? "" : "s"))" : ""
            log.info("gradients summed by \(dataParallel.gradientReduction), \(on ? "during the backward pass in buckets of \(config.gradientBucketMB ?? 0) MB" : "after the backward pass")\(why)")
            if let note = dataParallel.transportNote { log.info(note) }
        }
        if collective.isCoordinator { checkCheckpointSpace() }
        collective.setActivity("training")
        if timeline.recording {
            collective.barrier()
            timeline.align()
        }
        let summary = try trainEpochs()
        try writeTimeline()
        return summary
    }

    /// Epochs of steps to the end, or to `stopAfterSteps`.
    func trainEpochs() throws -> Summary? {
        let steps = loader.stepsPerEpoch
        while state.epoch < config.epochs {
            let lr = config.optimizer.lr * config.optimizer.lrFactor(epoch: state.epoch, epochs: config.epochs)
            var lastBar = Date.distantPast, lastLine = Date()
            while state.stepInEpoch < steps {
                let summed = try step(lr: lr)
                if options.progressBar && collective.isCoordinator && !log.quiet && Date().timeIntervalSince(lastBar) > 0.2 {
                    lastBar = Date()
                    Progress.drawBar(epoch: state.epoch, epochs: config.epochs, step: state.stepInEpoch, of: steps)
                }
                if options.progressEvery > 0 && Date().timeIntervalSince(lastLine) >= options.progressEvery && state.stepInEpoch < steps {
                    lastLine = Date()
                    let rate = Double(state.samplesSeen) / max(state.trainSeconds, 1e-9)
                    let stepsLeft = (config.epochs - state.epoch) * steps - state.stepInEpoch
                    log.info(Progress.stepLine(epoch: state.epoch + 1, epochs: config.epochs, step: state.stepInEpoch, of: steps,
                                               loss: state.epochLossSum / Double(state.stepInEpoch),
                                               samplesPerSecond: Double(state.epochSamples) / max(state.epochSeconds, 1e-9),
                                               remainingSeconds: Double(stepsLeft * config.batchSize) / max(rate, 1e-9)))
                }
                if config.checkpointEverySteps > 0 && state.globalStep % config.checkpointEverySteps == 0 && state.stepInEpoch < steps {
                    try writeCheckpoint()
                }
                if summed.stopRequests > 0 { try interrupt(requests: summed.stopRequests) }
                if let stop = stopAfterSteps, state.globalStep >= stop { return nil }
            }
            if let summary = try endEpoch(lr: lr) { return summary }
        }
        return nil
    }

    /// One training step.
    @discardableResult
    func step(lr: Float) throws -> SummedStep {
        let started = DispatchTime.now().uptimeNanoseconds
        let step = state.globalStep + 1
        collective.labelStep(step)
        faults.beforeStep(rank: dataParallel.rank, step: step)
        let t = timeline
        t.step = step
        let position = BatchPosition(epoch: state.epoch, step: state.stepInEpoch)
        let batch = try t.measure(.data) { try loader.batch(at: position) }                 // this rank's rows
        let randomness = StepRandomness(seed: config.seed, step: step, firstRow: dataParallel.rank * loader.localBatch)
        let (loss, correct) = t.measure(.forward) {                                          // BatchNorm over the global batch
            model.forward(batch.input, targets: batch.targets, randomness: randomness)
        }
        // Into the store's zeroed gradients; with overlap, each layer's are summed over the ranks
        // in the background as soon as they are final. The injected fault (tests) changes the
        // first element, which the last bucket holds, before that bucket is handed over.
        spikedThisStep = false
        let overlap = config.stepPath.overlap.applies(to: dataParallel, backbone: model.config.backbone)
        let gradients = t.measure(.backward) { model.backward(batch.input, bucketReady: overlap ? handBucketOver : nil) }
        if !overlap { spikedThisStep = faults.afterBackward(model.gradients, step: step) }
        if options.measureWait { t.measure(.wait) { collective.barrier() } }
        let summed = dataParallel.sumGradients(model.store, loss: loss, correct: correct, finite: gradients.finite,
                                               sumVouched: gradients.sumFinite && !spikedThisStep, stopRequested: options.stopRequested() != nil,
                                               timeline: t)
        try stopUnlessFinite(summed.verdict, step: step)
        t.measure(.update) { dataParallel.update(model.store, optimizer, lr: lr, shard: summed.shard, threads: threads) }
        t.measure(.parameterGather) { dataParallel.gatherParameters(model.store, shard: summed.shard) }
        if options.verify { try verifyIdentical(after: step) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        stepSeconds.append(seconds)
        try record(summed, seconds: seconds)
        return summed
    }

    /// Whether the injected fault (tests) changed this step's gradients.
    var spikedThisStep = false
    /// With overlap: hands each range the backward pass finishes to the back end, the injected
    /// fault applied first to the range holding element 0 (the last one). Made once, so a step
    /// allocates nothing for it.
    lazy var handBucketOver: (Range<Int>) -> Void = { [unowned self] range in
        let gradients = self.model.store.gradients
        if range.lowerBound == 0 { self.spikedThisStep = self.faults.afterBackward(gradients, step: self.state.globalStep + 1) }
        self.dataParallel.beginGradientBucket(gradients, range)
    }

    /// A stop was asked of some rank before this step's sum, so every rank knows it now: the
    /// step is done, rank 0 writes its checkpoint (unless it just did), and the run stops.
    func interrupt(requests: Int) throws -> Never {
        if checkpointedStep != state.globalStep { try writeCheckpoint() }
        try writeTimeline()
        let reason = options.stopRequested() ?? "a stop request on \(requests) other rank\(requests > 1 ? "s" : "")"
        throw Interruption(reason: reason, step: state.globalStep, epoch: state.epoch + 1, epochs: config.epochs,
                           stepInEpoch: state.stepInEpoch, stepsPerEpoch: loader.stepsPerEpoch,
                           checkpoint: runDir.checkpoints.stepPath(state.globalStep))
    }

    /// A step whose loss or gradients are not finite stops the run before the update, so the
    /// newest checkpoint holds the last good state.
    func stopUnlessFinite(_ verdict: SummedStep.Verdict, step: Int) throws {
        let hint = "lower --lr or check the features for extreme values"
        // Every rank reads the same verdict from the control word: one error, said once.
        var error: OrthoHashError
        switch verdict {
        case .finite: return
        case .nonFinite(let rank):
            let who = dataParallel.ranks > 1 ? " on rank \(rank)" : ""
            error = OrthoHashError("non-finite loss or gradient\(who) at step \(step) (epoch \(state.epoch + 1)); stopped before the update, the last checkpoint is intact",
                                   hint: hint)
        case .sumOverflows:
            error = OrthoHashError("the gradients summed over the ranks overflow at step \(step) (epoch \(state.epoch + 1)), though each rank's own are finite; stopped before the update, the last checkpoint is intact",
                                   hint: hint)
        }
        error.everyRank = true
        throw error
    }

    /// The step's figures into the running sums, the step log and the position. A step log that
    /// cannot be written (a full disk) stops the run on rank 0, which ends the job; the
    /// checkpoints stay as they were.
    func record(_ summed: SummedStep, seconds: Double) throws {
        let N = config.batchSize
        lastLoss = summed.loss
        stepLosses.append(summed.loss)
        try stepLog?.write(step: state.globalStep + 1, loss: summed.loss)
        state.epochLossSum += summed.loss
        state.epochCorrect += summed.correct
        state.epochSamples += N
        state.epochSeconds += seconds
        state.trainSeconds += seconds
        state.samplesSeen += N
        state.stepInEpoch += 1
        state.globalStep += 1
    }

    /// The end of an epoch: its metrics line, an evaluation when one is due (and a new best
    /// checkpoint when it is the best), a checkpoint when one is due, and at the last epoch the
    /// summary, which it returns.
    func endEpoch(lr: Float) throws -> Summary? {
        if options.progressBar && collective.isCoordinator && !log.quiet { Progress.clearBar() }
        let steps = loader.stepsPerEpoch, N = config.batchSize
        let epochsDone = state.epoch + 1
        let isLast = epochsDone == config.epochs
        let checkpointDue = isLast || (config.checkpointEvery > 0 && epochsDone % config.checkpointEvery == 0)
        let evaluationDue = isLast || (config.evalEvery > 0 && epochsDone % config.evalEvery == 0)
        // The epoch's training is saved before its evaluation, so a failure there loses none of
        // it (a run resumed from this checkpoint starts with this end of epoch); the checkpoint
        // is written again below, with the evaluation's result.
        if checkpointDue && evaluationDue { try writeCheckpoint() }
        let loss = state.epochLossSum / Double(steps)
        let accuracy = Double(state.epochCorrect) / Double(max(1, state.epochSamples))
        let samplesPerSecond = Double(state.epochSamples) / max(state.epochSeconds, 1e-9)
        let remaining = Double(config.epochs - epochsDone) * Double(steps * N) / max(Double(state.samplesSeen) / state.trainSeconds, 1e-9)
        state.epoch += 1
        state.stepInEpoch = 0
        state.epochLossSum = 0; state.epochCorrect = 0; state.epochSamples = 0; state.epochSeconds = 0
        var evaluated: RetrievalResult? = nil
        if evaluationDue {
            faults.beforeEvaluation()
            let result: RetrievalResult
            do {
                // With this epoch's checkpoint written above, a stop asked during the evaluation
                // ends it (the last epoch's would otherwise run on past a preemption's deadline):
                // the resumed run evaluates again. Other evaluations finish, and the next step stops.
                result = try evaluate(stoppable: checkpointDue)
            } catch is EvaluationStopped {
                try writeTimeline()
                throw Interruption(reason: options.stopRequested() ?? "a stop request on another rank", step: state.globalStep,
                                   epoch: epochsDone, epochs: config.epochs, stepInEpoch: steps, stepsPerEpoch: steps,
                                   checkpoint: runDir.checkpoints.stepPath(state.globalStep))
            }
            evaluated = result
            if let first = result.meanAP.first, first > (state.bestMAP ?? -1) {
                state.bestMAP = first; state.bestEpoch = epochsDone
                try writeCheckpoint(to: runDir.checkpoints.bestPath)
            }
        }
        let maps = evaluated.map { Array(zip(config.mapAt, $0.meanAP)) } ?? []
        log.info(Progress.epochLine(epoch: epochsDone, epochs: config.epochs, loss: loss, accuracy: accuracy, lr: lr,
                                    samplesPerSecond: samplesPerSecond, remainingSeconds: remaining, maps: maps))
        try collective.onCoordinator("writing metrics.jsonl") {
            // Keys sorted, as metrics.jsonl has always had them.
            var line: [(String, JSONValue)] = [("accuracy", .double(accuracy)), ("epoch", .int(epochsDone)), ("loss", .double(loss)),
                                               ("lr", .double(Double(lr)))]
            if !maps.isEmpty {
                line.append(("map", .object(maps.map { ($0.0.text, JSONValue.double($0.1)) }.sorted { $0.0 < $1.0 })))
            }
            line += [("samples_per_second", .double(samplesPerSecond)), ("step", .int(state.globalStep)),
                     ("train_seconds", .double(state.trainSeconds))]
            try runDir.appendMetrics(.object(line))
        }
        if checkpointDue { try writeCheckpoint() }
        guard isLast, let result = evaluated else { return nil }
        return try writeSummary(result)
    }

    /// summary.json from the last evaluation's `result` (rank 0 writes; every rank calls it).
    func writeSummary(_ result: RetrievalResult) throws -> Summary {
        let summary = Summary(
            map: Dictionary(uniqueKeysWithValues: zip(config.mapAt.map(\.text), result.meanAP)),
            precision: Dictionary(uniqueKeysWithValues: zip(config.precisionAt.map(String.init), result.precision)),
            samples_per_second: Double(state.samplesSeen) / max(state.trainSeconds, 1e-9),
            train_seconds: state.trainSeconds, epochs: config.epochs, world_size: dataParallel.ranks,
            gradient_reduction: dataParallel.gradientReduction, nbit: config.nbit, final_loss: lastLoss,
            best_epoch: state.bestEpoch, best_map: state.bestMAP)
        try collective.onCoordinator("writing summary.json") { try runDir.writeSummary(summary) }
        return summary
    }

    /// A resumed run that has trained all its epochs: nothing to do if its summary.json is there;
    /// else (stopped after its last checkpoint, before the summary was written, or the summary
    /// deleted) the last checkpoint is evaluated, as the end of training does, and the summary
    /// written, so that every run can be finished.
    func finishSummary() throws -> Summary? {
        let written = collective.broadcast([collective.isCoordinator && FileManager.default.fileExists(atPath: runDir.summaryPath) ? 1 : 0], root: 0)
        guard written.first == 0 else { return nil }
        log.info("the run has trained all \(config.epochs) epochs but \(runDir.summaryPath) is missing: evaluating the last checkpoint to write it")
        return try writeSummary(try evaluate())
    }

    /// What the checkpoints take on disk, said where each is large (100 MB or more: an image
    /// backbone's, AlexNet's 0.68 GB with Adam), and a warning where the run directory's file
    /// system has less room than the step checkpoints kept, the best and one being written
    /// (before its rename replaces the oldest) can take. A warning, not an error: room may be
    /// made before it is needed, and a write that finds none fails cleanly anyway.
    func checkCheckpointSpace() {
        let moments = config.optimizer.kind == .adam ? 2 : 1
        let each = 4 * Double(model.parameterCount) * Double(1 + moments)
        let dir = runDir.checkpoints.path
        let most = config.keepCheckpoints > 0 ? Double(config.keepCheckpoints + 2) * each : nil
        if each >= 100e6 {
            log.info(String(format: "checkpoints: about %.2f GB each (parameters and %ld optimizer moment%@); ", each / 1e9, moments, moments == 1 ? "" : "s")
                     + (most.map { String(format: "--keep-checkpoints %ld, the best and one being written take up to %.2f GB in %@", config.keepCheckpoints, $0 / 1e9, dir) }
                        ?? "--keep-checkpoints 0 keeps every one"))
        }
        var fs = statvfs()
        guard let most, statvfs(runDir.path, &fs) == 0 else { return }
        let free = Double(fs.f_bavail) * Double(fs.f_frsize)
        // Checkpoints already there (a resumed run) are replaced, not added to.
        let existing = (runDir.checkpoints.stepCheckpoints() + [runDir.checkpoints.bestPath]).reduce(0.0) { sum, file in
            sum + ((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int).flatMap { $0 }.map(Double.init) ?? 0)
        }
        if free + existing < most {
            let size = { (bytes: Double) in bytes >= 1e9 ? String(format: "%.2f GB", bytes / 1e9) : String(format: "%.1f MB", bytes / 1e6) }
            log.warn("\(runDir.path) has \(size(free)) free, less than the \(size(most)) its checkpoints can take (\(config.keepCheckpoints) kept by "
                     + "--keep-checkpoints, the best, one being written; about \(size(each)) each)")
        }
    }

    /// Rank 0 writes the training state (every rank calls it: the optimizer's moments may have
    /// to be gathered first). Without a path: a step checkpoint, and old ones pruned.
    func writeCheckpoint(to path: String? = nil) throws {
        let started = Timeline.now()
        defer { timeline.end(.checkpoint, since: started) }
        dataParallel.gatherOptimizerState(model.store)
        let target = path ?? runDir.checkpoints.stepPath(state.globalStep)
        if path == nil { checkpointedStep = state.globalStep }
        var saved = state!
        saved.lastStepLoss = state.stepInEpoch == loader.stepsPerEpoch ? lastLoss : nil
        saved.finalLoss = state.epoch >= config.epochs ? lastLoss : nil
        try collective.onCoordinator("writing \(target)") {
            try Checkpoint(state: saved, model: model, optimizer: optimizer).write(to: target, beforeRename: faults.beforeCheckpointRename)
            if path == nil { runDir.checkpoints.prune(keep: config.keepCheckpoints) }
        }
        collective.setActivity("training")
    }

    /// Checks that every rank holds bitwise the same parameters and BN statistics (verify mode).
    func verifyIdentical(after step: Int) throws {
        var checksum = Checksum()
        checksum.add(model.parameters); checksum.add(model.runningMean); checksum.add(model.runningVar)
        let all = collective.allGather(withUnsafeBytes(of: checksum.value) { Array($0) })
        if let other = all.firstIndex(where: { $0 != all[0] }) {
            throw OrthoHashError("verify: parameters on rank \(other) differ from rank 0's after step \(step)")
        }
    }

    /// mAP and precision of the current model on the query and database splits. `stoppable`: a
    /// stop request ends the encoding early (EvaluationStopped on every rank).
    public func evaluate(stoppable: Bool = false) throws -> RetrievalResult {
        collective.setActivity("evaluating")
        defer { collective.setActivity("training") }
        let stop = options.stopRequested
        return try timeline.measure(.evaluation) {
            try Evaluation.run(model: model, data: data, mapAt: config.mapAt, precisionAt: config.precisionAt,
                               collective: collective, threads: threads, stopRequested: stoppable ? { stop() != nil } : nil)
        }
    }

    /// Every rank's spans to `timelinePath` (rank 0 writes; every rank calls it).
    func writeTimeline() throws {
        guard let path = options.timelinePath else { return }
        try timeline.write(to: path, collective: collective, host: ProcessInfo.processInfo.hostName)
        if collective.isCoordinator { log.info("timeline: \(path) (open it in https://ui.perfetto.dev or chrome://tracing)") }
    }
}

/// A run stopped before its end because a process was asked to (SIGTERM, SIGINT, SIGUSR1): every
/// rank stopped after the same step, and rank 0 wrote a checkpoint of it, from which `--resume`
/// continues to the result an uninterrupted run gives.
public struct Interruption: Error, CustomStringConvertible, Equatable {
    public var reason: String
    /// The global step done last, and where it is: epoch (1-based) of epochs, step of the epoch's steps.
    public var step: Int
    public var epoch: Int, epochs: Int
    public var stepInEpoch: Int, stepsPerEpoch: Int
    public var checkpoint: String
    /// The exit status of an interrupted run: EX_TEMPFAIL, "try again" (deploy/slurm.sbatch requeues on it).
    public static let exitStatus: Int32 = 75

    public var description: String {
        "stopped by \(reason) after step \(step) (step \(stepInEpoch) of \(stepsPerEpoch) in epoch \(epoch) of \(epochs)): "
            + "checkpoint \(checkpoint); run the same command with --resume to continue"
    }
}

/// FNV-1a over the bytes of float buffers: equal values give equal checksums, bit for bit.
struct Checksum {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add(_ buffer: FloatBuffer) {
        let bytes = UnsafeRawBufferPointer(start: buffer.pointer, count: buffer.count * 4)
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
    }
    mutating func add(_ word: UInt64) {
        for i in 0..<8 { value = (value ^ ((word >> (8 * UInt64(i))) & 0xff)) &* 0x100_0000_01b3 }
    }
}

/// Refuses a model whose buffers cannot fit in this machine's memory (a flag such as --hidden or
/// --nbit, or the data's classes, asked for more), before anything is allocated.
///
/// The ranks of a node (`ranksOnNode`) each hold these buffers in the node's memory: with the
/// node's shared-memory window, each rank's parameters and gradients are its segment of the
/// window (in /dev/shm, which is memory too), which the estimate already counts once per rank;
/// the pages of the other ranks' segments a rank reads show in its resident size but are not
/// more memory. So the node needs `ranksOnNode` times one rank's buffers.
public func checkMemory(_ model: ModelConfig, batch: Int, moments: Int, arcMargin: Bool, ranksOnNode: Int = 1) throws {
    let physical = Double(ProcessInfo.processInfo.physicalMemory)
    let what = "\(model.backbone.rawValue)\(model.backbone == .mlp ? " \(model.hidden)" : ""), \(model.inputDim)-d inputs, "
        + "\(model.nbit) bits, \(model.classes) classes, \(batch) rows per batch"
    var hint = "fewer or narrower --hidden layers, fewer --nbit, or a smaller --batch-size"
    guard let floats = model.floatsNeeded(batch: batch, moments: moments, arcMargin: arcMargin) else {
        throw OrthoHashError("the model (\(what)) has more parameters than can be counted", hint: hint)
    }
    let bytes = 4 * Double(floats)
    guard bytes <= physical else {
        throw OrthoHashError(String(format: "the model (%@) needs %.1f GB for its buffers, more than this machine's %.1f GB",
                                    what, bytes / 1e9, physical / 1e9), hint: hint)
    }
    hint += ", or fewer ranks per node (mpirun's --map-by ppr:N:node, deploy/launch.sh --ranks-per-node)"
    guard bytes * Double(ranksOnNode) <= physical else {
        throw OrthoHashError(String(format: "the model (%@) needs %.1f GB for its buffers on each of this node's %ld ranks, %.1f GB in all, more than the node's %.1f GB",
                                    what, bytes / 1e9, ranksOnNode, bytes * Double(ranksOnNode) / 1e9, physical / 1e9), hint: hint)
    }
}

/// The collective's sums for BatchNorm's statistics and the loss's weights, timed as the
/// timeline's BatchNorm sync.
final class TimedStatistics: StatisticsReducer {
    let collective: Collective
    let timeline: Timeline
    init(_ collective: Collective, timeline: Timeline) { self.collective = collective; self.timeline = timeline }
    var ranks: Int { collective.ranks }
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {
        timeline.measure(.bnSync, bytes: collective.ranks > 1 ? 8 * count : 0) { collective.sum(values, count: count) }
    }
}
