import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashFaultInjection
import OrthoHashMPI
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Train a model; writes a run directory.")

        @OptionGroup var data: DataOptions
        @OptionGroup var model: ModelOptions
        @OptionGroup var evaluation: EvalOptions
        @OptionGroup var runtime: RuntimeOptions
        @OptionGroup var path: StepPathOptions
        @Option(help: "Run directory (config, codebook, metrics, checkpoints, summary).") var runDir: String = "runs/latest"
        @Option(help: "Evaluate every N epochs (0: only at the end; the default).") var evalEvery: Int?
        @Option(help: "Checkpoint every N epochs (0: only at the end; default 1).") var checkpointEvery: Int?
        @Option(help: "Also checkpoint every N steps (0: off; the default), for long epochs.") var checkpointEverySteps: Int?
        @Option(help: "Step checkpoints to keep, the best kept besides (default: 3).") var keepCheckpoints: Int?
        @Flag(help: "Continue from the newest valid checkpoint in --run-dir, with the run's stored settings.") var resume = false
        @Flag(help: "Delete the files of an earlier run in --run-dir first (without it, such a directory is refused).") var overwrite = false
        @Flag(help: "No progress output.") var quiet = false
        @Option(help: "Under MPI: seconds a collective may wait for the other ranks before the job is aborted, naming the ranks that did not arrive and where they are; the abort comes at this time.")
        var collectiveTimeout: Double = 300
        @Option(help: "Under MPI: seconds the other ranks wait while rank 0 alone reads or writes the run directory (settings, checkpoints, metrics).")
        var ioTimeout: Double = 900
        @Flag(help: "Check after every step that all ranks hold bitwise identical parameters (slow; for tests).") var verify = false
        @Flag(help: "Append 'step,loss' of every step to RUN_DIR/steps.csv.") var logSteps = false
        @Option(help: "When the output is not a terminal (mpirun, a log file): a progress line every this many seconds within an epoch (0: none).")
        var progressEvery: Double = 60
        @Option(help: "Write a Chrome trace of every rank's steps (data gather, forward, backward, waiting, gradient sum, BatchNorm sync, update, checkpoints, evaluation) to this JSON file at the end of the run or when it is interrupted; open it in https://ui.perfetto.dev or chrome://tracing.")
        var timeline: String?

        /// The flags given, over `c` (the defaults, or a resumed run's stored settings): a flag
        /// not given leaves the setting as it is.
        func apply(to c: inout TrainConfig) {
            data.apply(to: &c)
            model.apply(to: &c)
            evaluation.apply(to: &c)
            path.apply(to: &c)
            if let evalEvery { c.evalEvery = evalEvery }
            if let checkpointEvery { c.checkpointEvery = checkpointEvery }
            if let checkpointEverySteps { c.checkpointEverySteps = checkpointEverySteps }
            if let keepCheckpoints { c.keepCheckpoints = keepCheckpoints }
        }

        /// The settings of a new run: the defaults with the flags over them.
        func makeConfig() -> TrainConfig {
            var c = TrainConfig()
            apply(to: &c)
            return c
        }

        /// The flags' settings are checked here; with --resume the stored ones fill in what the
        /// flags leave out, so the merged settings are checked once merged.
        func validate() throws {
            guard progressEvery >= 0, progressEvery.isFinite else { throw ValidationError("--progress-every must be at least 0, got \(progressEvery)") }
            guard collectiveTimeout >= 0, ioTimeout >= 0, collectiveTimeout.isFinite, ioTimeout.isFinite else {
                throw ValidationError("--collective-timeout and --io-timeout must be at least 0 (0: wait forever)")
            }
            if let timeline { try OutputFile.check(timeline, flag: "--timeline") }
            if resume && overwrite { throw ValidationError("--resume continues the run in --run-dir and --overwrite deletes it: choose one") }
            if !resume { try makeConfig().validate() }
        }

        func run() throws {
            try onRanks(collectiveTimeout: collectiveTimeout, ioTimeout: ioTimeout) { dataParallel in
                let collective = dataParallel.collective
                let (config, stored) = try Resume.settings(resume: resume, runDir: RunDirectory(runDir), collective: collective, flags: apply(to:))
                // The job scripts always pass --resume, with the run's settings: a first start
                // then begins the run. With no settings and no run, --run-dir is likely mistyped.
                if resume && !stored && makeConfig() == TrainConfig() {
                    throw OrthoHashError("no run to resume here (no config.json), and no settings to start one with",
                                         file: runDir, hint: "check --run-dir, or give the run's settings (--dataset, --epochs, ...) to start it")
                }
                let (threads, threadNote) = runtime.resolved(ranks: dataParallel.ranks)
                // What every rank checks and loads on its own: an error is said once, and one that
                // only some ranks meet (a file missing on one node) still stops every rank.
                var options = TrainerOptions()
                options.threads = threads
                options.log = Log(rank: collective.rank, ranks: collective.ranks, quiet: quiet)
                options.faults = EnvironmentFaults()
                // Under a launcher or into a log, a line now and then within an epoch (no bar there).
                if isatty(1) == 0 || MPICollective.launched { options.progressEvery = progressEvery }
                options.stopRequested = stopRequest
                options.verify = verify
                options.logSteps = logSteps
                if let timeline {
                    options.timelinePath = timeline
                    options.measureWait = true
                }
                // What every rank checks and loads on its own: an error is said once, and one that
                // only some ranks meet (a file missing on one node) still stops every rank.
                let trainer = try collective.agree { () -> Trainer in
                    if let unused = (data.unused(by: config) + model.unused(by: config)).first {
                        throw OrthoHashError(unused + (resume ? " (the run's stored settings say otherwise)" : ""))
                    }
                    try config.validate()
                    BLAS.setThreads(threads)
                    return try Trainer(config: config, data: try config.loadData(threads: threads), runDir: runDir, dataParallel: dataParallel, options: options)
                }
                if let threadNote { trainer.log.info(threadNote) }
                // The handlers go in once the run is set up: a signal before then ends the process as usual.
                installStopHandlers(rank: collective.rank)
                if let summary = try trainer.run(resume: resume, overwrite: overwrite), !quiet, collective.isCoordinator {
                    print(Progress.doneLine(summary, mapAt: config.mapAt, summaryPath: RunDirectory(runDir).summaryPath))
                }
            }
        }
    }
}
