// Points where tests inject faults into a training run (hung or slow ranks, a writer killed
// mid-write, an interruption, gradients whose sum overflows). The implementation that reads
// them from the environment is the internal OrthoHashFaultInjection target, which only the
// command-line tool links; a library user's trainer has `NoFaults`.

import OrthoHashNumerics

public protocol FaultInjection {
    /// Before global step `step` (1-based) on `rank`.
    func beforeStep(rank: Int, step: Int)
    /// After the backward pass of `step`: may change the gradients; true if it did (the step
    /// then counts as one whose gradient sum no rank can vouch for).
    func afterBackward(_ gradients: FloatBuffer, step: Int) -> Bool
    /// Between writing a checkpoint's temporary file and renaming it into place.
    func beforeCheckpointRename()
    /// Before an evaluation (the checkpoint of the epoch it follows is written).
    func beforeEvaluation()
    /// Stop the run (as if interrupted: no summary) after this many global steps.
    var stopAfterSteps: Int? { get }
}

/// No faults.
public struct NoFaults: FaultInjection {
    public init() {}
    public func beforeStep(rank: Int, step: Int) {}
    public func afterBackward(_ gradients: FloatBuffer, step: Int) -> Bool { false }
    public func beforeCheckpointRename() {}
    public func beforeEvaluation() {}
    public var stopAfterSteps: Int? { nil }
}
