// What a run prints: progress from rank 0, warnings and errors from any rank.

import Foundation
import OrthoHashNumerics

/// Progress from rank 0; warnings from any rank, prefixed with it when there are several.
public struct Log {
    public var rank: Int
    public var ranks: Int
    public var quiet: Bool = false
    public init(rank: Int = 0, ranks: Int = 1, quiet: Bool = false) { self.rank = rank; self.ranks = ranks; self.quiet = quiet }

    public func info(_ line: String) {
        guard rank == 0, !quiet else { return }
        print(line)
        fflush(stdout)
    }
    public func warn(_ line: String) {
        standardError(ranks > 1 ? "[rank \(rank)] warning: \(line)" : "warning: \(line)")
    }
}

/// The lines a training run prints.
public enum Progress {
    /// Whether to draw a progress bar within an epoch: rank 0 on a terminal, not under an MPI
    /// launcher (Open MPI gives ranks a pseudo-terminal even when mpirun's output goes to a file).
    public static var barWanted: Bool {
        let environment = ProcessInfo.processInfo.environment
        return isatty(1) != 0 && environment["OMPI_COMM_WORLD_SIZE"] == nil && environment["PMIX_RANK"] == nil
    }

    /// `epoch 3/10 [=========       ] 100/234`, redrawn in place.
    public static func drawBar(epoch: Int, epochs: Int, step: Int, of steps: Int) {
        let width = 30, filled = width * step / max(steps, 1)
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        print("\repoch \(epoch + 1)/\(epochs) [\(bar)] \(step)/\(steps)", terminator: "")
        fflush(stdout)
    }

    public static func clearBar() { print("\r\u{1B}[K", terminator: "") }

    /// The training run's first lines.
    public static func start(rows: Int, stepsPerEpoch: Int, globalBatch: Int, ranks: Int, localBatch: Int, nbit: Int,
                             classes: Int, parameters: Int, threads: Int) -> String {
        "training: \(rows) rows, \(stepsPerEpoch) steps/epoch of \(globalBatch) (\(ranks) rank\(ranks > 1 ? "s" : "") x \(localBatch)), "
            + "\(nbit) bits, \(classes) classes, \(parameters) parameters, \(threads) BLAS thread\(threads > 1 ? "s" : "")"
    }

    /// `epoch 1/3  loss 1.1177  acc 0.8047  lr 1.0e-04  11477 samples/s  ETA 0:10`, then the mAPs evaluated.
    public static func epochLine(epoch: Int, epochs: Int, loss: Double, accuracy: Double, lr: Float, samplesPerSecond: Double,
                                 remainingSeconds: Double, maps: [(MapCutoff, Double)]) -> String {
        var text = String(format: "epoch %ld/%ld  loss %.4f  acc %.4f  lr %.1e  %.0f samples/s", epoch, epochs, loss, accuracy,
                          Double(lr), samplesPerSecond)
        text += "  ETA " + formatDuration(remainingSeconds)
        for (cutoff, value) in maps { text += String(format: "  mAP@%@ %.4f", cutoff.text, value) }
        return text
    }

    /// `epoch 2/10  step 1200/6173  loss 4.1234  2017 samples/s  ETA 1:02:03`: within an epoch,
    /// its mean loss so far.
    public static func stepLine(epoch: Int, epochs: Int, step: Int, of steps: Int, loss: Double, samplesPerSecond: Double,
                                remainingSeconds: Double) -> String {
        String(format: "epoch %ld/%ld  step %ld/%ld  loss %.4f  %.0f samples/s  ETA ", epoch, epochs, step, steps, loss, samplesPerSecond)
            + formatDuration(remainingSeconds)
    }

    /// `done: mAP@all 0.7859  mAP@1000 0.8292  11313 samples/s  runs/x/summary.json`
    public static func doneLine(_ summary: Summary, mapAt: [MapCutoff], summaryPath: String) -> String {
        let maps = mapAt.map { String(format: "mAP@%@ %.4f", $0.text, summary.map[$0.text] ?? .nan) }.joined(separator: "  ")
        return "done: \(maps)  \(String(format: "%.0f", summary.samples_per_second)) samples/s  \(summaryPath)"
    }
}

/// `m:ss`, or `h:mm:ss` from an hour.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0, seconds < 1e9 else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60) : String(format: "%ld:%02ld", s / 60, s % 60)
}
