// The run directory: every file a training run writes, and the one place that writes them.
//
//   config.json     the run's settings (TrainConfig)
//   codebook.npy    the codebook trained with, int8 (C, K)
//   metrics.jsonl   one line per epoch
//   steps.csv       step,loss of every step (--log-steps)
//   summary.json    the end-of-run figures (Summary)
//   checkpoints/    step-XXXXXXXXXX.ohck and best.ohck (CheckpointDirectory)
//   lock            held (flock) by the coordinator of the job that trains here; names it

import Foundation
import OrthoHashFormats
import OrthoHashNumerics

/// The figures of a finished run, as summary.json holds them.
public struct Summary: Codable, Equatable {
    public var map: [String: Double]
    public var precision: [String: Double]
    public var samples_per_second: Double
    public var train_seconds: Double
    public var epochs: Int
    public var world_size: Int
    /// How the ranks summed their gradients (`DataParallel.gradientReduction`).
    public var gradient_reduction: String
    public var nbit: Int
    public var final_loss: Double
    public var best_epoch: Int?
    public var best_map: Double?
}

public struct RunDirectory {
    public let path: String
    public var configPath: String { path + "/config.json" }
    public var codebookPath: String { path + "/codebook.npy" }
    public var metricsPath: String { path + "/metrics.jsonl" }
    public var stepsPath: String { path + "/steps.csv" }
    public var summaryPath: String { path + "/summary.json" }
    public var checkpoints: CheckpointDirectory { CheckpointDirectory(runDir: path) }
    public var lockPath: String { path + "/lock" }
    /// The files a run writes here (besides its checkpoints): what `clear` removes.
    var runFiles: [String] { [configPath, codebookPath, metricsPath, stepsPath, summaryPath] }
    /// The run's files and checkpoints, named for messages: what a command that reads the run
    /// must not write over (OutputFile.check(outputs:inputs:)).
    public var ownFiles: [(what: String, path: String)] {
        runFiles.map { ("a file of the run in \(path)", $0) }
            + (checkpoints.stepCheckpoints() + [checkpoints.bestPath]).map { ("a checkpoint of the run in \(path)", $0) }
    }

    public init(_ path: String) { self.path = path }

    /// Creates the directory and its checkpoints/ (and the directories above them), saying
    /// which path is in the way when one is not a directory.
    public func create() throws {
        var built = path.hasPrefix("/") ? "" : "."
        for component in checkpoints.path.split(separator: "/") {
            built += "/" + component
            var info = stat()
            if stat(built, &info) == 0 {
                guard info.st_mode & S_IFMT == S_IFDIR else {
                    throw OrthoHashError("cannot create the run directory: \(built) is \(built == path ? "there" : "in the way") and not a directory", file: path,
                                         hint: "choose another --run-dir")
                }
                continue
            }
            guard mkdir(built, 0o755) == 0 || errno == EEXIST else {
                throw OrthoHashError("cannot create the run directory: \(built): \(String(cString: strerror(errno)))", file: path)
            }
        }
    }

    /// Takes the directory for this job: an exclusive lock on `lock`, which the kernel releases
    /// when the process ends however it ends. A directory another job holds is refused, naming
    /// that job. Then the temporary files that writers killed mid-write left are removed.
    public func lock() throws -> RunLock {
        let lock = try RunLock(path: lockPath, runDir: path)
        AtomicFile.removeTemporaries(in: path)
        AtomicFile.removeTemporaries(in: checkpoints.path)
        return lock
    }

    /// Who holds the lock now (what it wrote there), or nil when no job does.
    public func lockHolder() -> String? {
        let fd = open(lockPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) != 0 else { flock(fd, LOCK_UN); return nil }
        return (try? String(contentsOfFile: lockPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "another job"
    }

    /// What an earlier run left here, for messages ("config.json, 2 step checkpoints"); nil if nothing.
    public func earlierRun() -> String? {
        var found = runFiles.filter { FileManager.default.fileExists(atPath: $0) }.map { URL(fileURLWithPath: $0).lastPathComponent }
        let steps = checkpoints.stepCheckpoints().count
        if steps > 0 { found.append("\(steps) step checkpoint\(steps > 1 ? "s" : "")") }
        if FileManager.default.fileExists(atPath: checkpoints.bestPath) { found.append("best.ohck") }
        return found.isEmpty ? nil : found.joined(separator: ", ")
    }

    /// A run starting afresh (`overwrite`: clear what an earlier run left first); refused when an
    /// earlier run is here and not to be overwritten.
    public func claimForNewRun(overwrite: Bool) throws {
        guard let earlier = earlierRun() else { return }
        guard overwrite else {
            throw OrthoHashError("holds a run already (\(earlier))", file: path,
                                 hint: "continue it with --resume, train into another --run-dir, or pass --overwrite to delete its files first")
        }
        for file in runFiles + checkpoints.stepCheckpoints() + [checkpoints.bestPath] where FileManager.default.fileExists(atPath: file) {
            do { try FileManager.default.removeItem(atPath: file) } catch {
                throw OrthoHashError("cannot delete the earlier run's file: \(ioReason(error))", file: file)
            }
        }
    }

    /// The settings stored by an earlier run here, or nil when there are none.
    public func storedConfig() throws -> TrainConfig? {
        guard FileManager.default.fileExists(atPath: configPath) else { return nil }
        try InputFile.check(configPath)
        guard let data = FileManager.default.contents(atPath: configPath) else { throw OrthoHashError("cannot read", file: configPath) }
        return try JSON.decode(TrainConfig.self, from: data, file: configPath)
    }

    /// The stored settings, which a run directory must have.
    public func config() throws -> TrainConfig {
        guard let stored = try storedConfig() else {
            throw OrthoHashError("no such file", file: configPath, hint: "is \(path) a run directory made by 'orthohash train'?")
        }
        return stored
    }

    /// A run starts (or resumes): its settings and codebook, and the metrics of the epochs done
    /// (`epochsDone`; lines past them were written after the checkpoint it resumes from).
    public func begin(config: TrainConfig, codebook: Codebook, epochsDone: Int) throws {
        // The files the run appends to or writes at its end, checked before it trains: a FIFO
        // or a directory in their place would block the run or fail it at the end.
        for file in [metricsPath, stepsPath, summaryPath] { try OutputFile.check(file, flag: "the run's file") }
        try AtomicFile.write(JSON.encode(config), to: configPath)
        try NPYWriter.write(path: codebookPath, shape: [codebook.classes, codebook.bits], int8: codebook.values)
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return }
        let kept = text.split(separator: "\n").prefix(epochsDone)
        try AtomicFile.write(Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8), to: metricsPath)
    }

    /// One epoch's line of metrics.jsonl.
    public func appendMetrics(_ line: JSONValue) throws {
        try append(line.text() + "\n", to: metricsPath, sync: true)
    }

    public func writeSummary(_ summary: Summary) throws {
        try AtomicFile.write(JSON.encode(summary), to: summaryPath)
    }

    /// steps.csv, opened for appending.
    public func openStepLog() throws -> StepLog { try StepLog(path: stepsPath) }

    func append(_ text: String, to file: String, sync: Bool) throws {
        try AppendFile.append(text, to: file, sync: sync)
    }
}

/// The lock of a run directory, held while this value lives (the kernel drops it if the process dies).
public final class RunLock {
    let fd: Int32

    init(path: String, runDir: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OrthoHashError("cannot open the run's lock: \(String(cString: strerror(errno)))", file: path) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw OrthoHashError("is in use by another job (\(holder.isEmpty ? "its lock holder did not say who it is" : holder))", file: runDir,
                                 hint: "wait for it to end, or train into another --run-dir")
        }
        let me = "pid \(getpid()) on host \(ProcessInfo.processInfo.hostName), since \(ISO8601DateFormatter().string(from: Date()))\n"
        _ = ftruncate(fd, 0)
        _ = me.withCString { Foundation.write(fd, $0, strlen($0)) }
    }

    deinit { close(fd) }
}

/// `step,loss` lines, the loss at full precision.
public final class StepLog {
    let file: AppendFile

    init(path: String) throws { file = try AppendFile(path) }

    public func write(step: Int, loss: Double) throws {
        try file.write(String(format: "%ld,%.17g\n", step, loss))
    }
}

/// What went wrong with a file operation, in a few words rather than Foundation's error text.
func ioReason(_ error: Error) -> String {
    let e = error as NSError
    if let underlying = e.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    switch e.code {
    case NSFileWriteNoPermissionError: return "permission denied"
    case NSFileWriteFileExistsError: return "a file is in the way"
    case NSFileWriteOutOfSpaceError: return "no space left on the device"
    default: return e.localizedDescription
    }
}
