// Fault injection for the tests, read from the environment once. Never set in normal use.

import Foundation
import OrthoHashNumerics
import OrthoHashTraining

/// - `ORTHOHASH_TEST_HANG_RANK` + `ORTHOHASH_TEST_HANG_STEP`: that rank stops (sleeps forever,
///   outside MPI) before that step, so its peers' watchdog must fire. With
///   `ORTHOHASH_TEST_HANG_AT=backward`: at the end of that step's backward pass instead, while
///   the peers' background workers wait in the buckets' sums.
/// - `ORTHOHASH_TEST_STEP_SLEEP_MS`: every step sleeps this long (slows a run so a test can kill it).
/// - `ORTHOHASH_TEST_CHECKPOINT_PAUSE`: seconds between writing a checkpoint's temporary file and
///   renaming it (so a test can kill the writer mid-write).
/// - `ORTHOHASH_TEST_EVALUATION_PAUSE`: seconds before each evaluation (so a test can kill a job
///   while it evaluates).
/// - `ORTHOHASH_TEST_STOP_AFTER_STEPS`: end the run (exit 0, no summary) after that many global
///   steps, as if interrupted, so a test can resume it.
/// - `ORTHOHASH_TEST_SIGNAL=STEP:SIGNAL[:RANK]`: before that step, that rank (default 0) sends
///   itself the signal (TERM, INT or USR1), through the real handlers.
/// - `ORTHOHASH_TEST_GRADIENT_SPIKE=STEP:VALUE`: at that step every rank sets its first gradient
///   to VALUE after the backward pass (finite on each rank, so that the sum over ranks can
///   overflow), and counts as a rank that could not show their sum finite.
public struct EnvironmentFaults: FaultInjection {
    let hangRank: Int?, hangStep: Int?, hangInBackward: Bool, worldRank: Int, stepSleep: UInt32, checkpointPause: Double, evaluationPause: Double
    public let stopAfterSteps: Int?
    let spike: (step: Int, value: Float)?
    let signal: (step: Int, signal: Int32, rank: Int)?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        hangRank = environment["ORTHOHASH_TEST_HANG_RANK"].flatMap(Int.init)
        hangStep = environment["ORTHOHASH_TEST_HANG_STEP"].flatMap(Int.init)
        hangInBackward = environment["ORTHOHASH_TEST_HANG_AT"] == "backward"
        worldRank = environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0
        stepSleep = environment["ORTHOHASH_TEST_STEP_SLEEP_MS"].flatMap(UInt32.init) ?? 0
        checkpointPause = environment["ORTHOHASH_TEST_CHECKPOINT_PAUSE"].flatMap(Double.init) ?? 0
        evaluationPause = environment["ORTHOHASH_TEST_EVALUATION_PAUSE"].flatMap(Double.init) ?? 0
        stopAfterSteps = environment["ORTHOHASH_TEST_STOP_AFTER_STEPS"].flatMap(Int.init)
        let parts = environment["ORTHOHASH_TEST_GRADIENT_SPIKE"]?.split(separator: ":") ?? []
        if parts.count == 2, let step = Int(parts[0]), let value = Float(parts[1]) { spike = (step, value) } else { spike = nil }
        let signalParts = environment["ORTHOHASH_TEST_SIGNAL"]?.split(separator: ":").map(String.init) ?? []
        let numbers: [String: Int32] = ["TERM": SIGTERM, "INT": SIGINT, "USR1": SIGUSR1]
        if signalParts.count >= 2, let step = Int(signalParts[0]), let number = numbers[signalParts[1]] {
            signal = (step, number, signalParts.count > 2 ? Int(signalParts[2]) ?? 0 : 0)
        } else {
            signal = nil
        }
    }

    public func beforeStep(rank: Int, step: Int) {
        if stepSleep > 0 { usleep(stepSleep * 1000) }
        if let signal, signal.step == step, signal.rank == rank { raise(signal.signal) }
        if rank == hangRank && step == hangStep && !hangInBackward { while true { sleep(1000) } }
    }

    public func afterBackward(_ gradients: FloatBuffer, step: Int) -> Bool {
        if hangInBackward && worldRank == hangRank && step == hangStep { while true { sleep(1000) } }
        guard let spike, spike.step == step else { return false }
        gradients[0] = spike.value
        return true
    }

    public func beforeCheckpointRename() {
        if checkpointPause > 0 { usleep(UInt32(checkpointPause * 1e6)) }
    }

    public func beforeEvaluation() {
        if evaluationPause > 0 { usleep(UInt32(evaluationPause * 1e6)) }
    }
}
