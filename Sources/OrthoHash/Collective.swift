/// What the trainer needs from the processes it runs in. The core never imports MPI: the MPI
/// implementation lives in its own module; `SingleProcess` is the one-process implementation.
public protocol Collective: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int)
    /// Rank `root`'s bytes on every rank.
    func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8]
    /// Every rank's bytes, in rank order, on every rank.
    func allGather(_ bytes: [UInt8]) -> [[UInt8]]
    func barrier()
    /// Ends every rank of the job now, printing `[rank r] message` on stderr.
    func abort(_ message: String, code: Int32) -> Never
    /// A zeroed buffer for the gradients, the one buffer summed every step. Every rank calls
    /// it. The MPI implementation may place it in memory shared by the ranks of a node.
    func makeGradientBuffer(count: Int) -> FloatBuffer
    /// How the gradients are summed, for the log.
    var gradientReduction: String { get }
}

public extension Collective {
    var isCoordinator: Bool { rank == 0 }

    /// Labels later collectives with the training step, for watchdog messages (MPI only).
    func setStep(_ step: Int) { (self as? StepLabelled)?.labelStep(step) }

    func makeGradientBuffer(count: Int) -> FloatBuffer { FloatBuffer(count: count) }
    var gradientReduction: String { size == 1 ? "none (one rank)" : "all-reduce" }

    func allReduceSum(_ values: inout [Double]) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { allReduceSum($0.baseAddress!, count: n) }
    }
}

/// Implementations that time their reductions (benchmarks): float32 all-reduces carry the
/// gradients, float64 ones the BatchNorm statistics and the control word.
public protocol TimedCollective: AnyObject {
    var floatReduceSeconds: Double { get }
    var doubleReduceSeconds: Double { get }
    func resetTimers()
}

/// Implementations that name the current step in their error messages.
public protocol StepLabelled { func labelStep(_ step: Int) }

/// One process, no launcher: every collective is the identity.
public final class SingleProcess: Collective {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {}
    public func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8] { bytes }
    public func allGather(_ bytes: [UInt8]) -> [[UInt8]] { [bytes] }
    public func barrier() {}
    public func abort(_ message: String, code: Int32) -> Never {
        FileHandleOutput.stderr("error: \(message)")
        exit(code)
    }
}

import Foundation

/// Line output that is not buffered behind the progress bar.
public enum FileHandleOutput {
    public static func stderr(_ line: String) {
        FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
    }
}
