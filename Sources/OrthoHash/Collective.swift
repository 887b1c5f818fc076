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
    /// Zeroed buffers for the parameters and the gradients of a model. Every rank calls it. The
    /// MPI implementation may place them in memory shared by the ranks of a node.
    func makeTrainingBuffers(count: Int) -> (parameters: FloatBuffer, gradients: FloatBuffer)
    /// Sums the gradients over all ranks where this rank needs them: the elements it updates,
    /// which it returns (all of them, unless the ranks of a node share the update).
    func reduceGradientShard(_ gradients: FloatBuffer) -> Range<Int>
    /// After each rank updated the shard `reduceGradientShard` gave it: every rank's parameters
    /// are whole again.
    func gatherParameterShards(_ parameters: FloatBuffer, updated: Range<Int>)
    /// The same for optimizer state, which only checkpoints need whole.
    func gatherOptimizerShards(_ state: FloatBuffer, updated: Range<Int>)
    /// How the gradients are summed, for the log.
    var gradientReduction: String { get }
}

public extension Collective {
    var isCoordinator: Bool { rank == 0 }

    /// Labels later collectives with the training step, for watchdog messages (MPI only).
    func setStep(_ step: Int) { (self as? StepLabelled)?.labelStep(step) }

    func makeTrainingBuffers(count: Int) -> (parameters: FloatBuffer, gradients: FloatBuffer) {
        (FloatBuffer(count: count), FloatBuffer(count: count))
    }

    func reduceGradientShard(_ gradients: FloatBuffer) -> Range<Int> {
        allReduceSum(gradients.pointer, count: gradients.count)
        return 0..<gradients.count
    }

    func gatherParameterShards(_ parameters: FloatBuffer, updated: Range<Int>) {
        precondition(updated == 0..<parameters.count, "this collective does not shard the update")
    }

    func gatherOptimizerShards(_ state: FloatBuffer, updated: Range<Int>) {
        precondition(state.count == 0 || updated == 0..<state.count, "this collective does not shard the update")
    }
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
