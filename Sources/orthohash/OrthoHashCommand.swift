// The command-line tool: parsing and wiring. One file per subcommand (`extension
// OrthoHashCommand { struct Sub }`); shared option groups in Options.swift, argument types in
// Arguments.swift.

import ArgumentParser
import CStop
import Foundation
import OrthoHashMPI
import OrthoHashNumerics
import OrthoHashTraining

@main
struct OrthoHashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orthohash",
        abstract: "Train OrthoHash deep-hashing models on CPU, evaluate them by Hamming ranking, encode data to binary codes.",
        subcommands: [Train.self, Eval.self, Encode.self, Revisited.self, CodebookCommand.self, Export.self, Bench.self],
        defaultSubcommand: Train.self)

    /// Every error a user can cause ends in one line, `error: ...`, and exit status 1: a file or
    /// data problem (OrthoHashError, which names the file), a flag that does not parse or a rule
    /// between flags (`validate()`). Help and similar requests print as ArgumentParser prints them.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as OrthoHashError {
            standardError("error: \(error)")
            Foundation.exit(1)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            if let code = error as? ExitCode { Foundation.exit(code.rawValue) }
            let text = message(for: error).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            standardError("error: " + text)
            Foundation.exit(1)
        }
    }
}

/// Runs `body` on this process's ranks: under an MPI launcher (mpirun, srun --mpi=pmix) every
/// rank runs it with the MPI back end, and a user error on any rank ends them all with the rank
/// named; otherwise one process. A run that stopped on request (`Interruption`, which every
/// rank reaches together) prints one line from rank 0 and exits with `Interruption.exitStatus`.
func onRanks(collectiveTimeout: Double, ioTimeout: Double = 900, _ body: (DataParallel) throws -> Void) throws {
    let mpi = MPICollective.launched ? MPICollective(timeoutSeconds: collectiveTimeout, coordinatorTimeoutSeconds: ioTimeout) : nil
    let dataParallel: DataParallel = mpi.map { MPIDataParallel($0) } ?? OneProcess()
    do {
        try body(dataParallel)
        mpi?.finalize()
    } catch let stop as Interruption {
        if dataParallel.rank == 0 { standardError(stop.description) }
        mpi?.finalize()
        throw ExitCode(Interruption.exitStatus)
    } catch let error as OrthoHashError {
        guard let mpi else { throw error }
        mpi.abort("error: \(error)", code: 1)
    }
}

/// Stop requests from now on: SIGTERM, SIGINT and SIGUSR1 ask the run to stop after the current
/// step with a checkpoint (on a terminal, rank 0 says so when the signal arrives: Ctrl-C).
func installStopHandlers(rank: Int) -> () -> String? {
    oh_stop_install(rank == 0 && isatty(2) != 0 ? 1 : 0)
    return {
        let signal = oh_stop_signal()
        return signal == 0 ? nil : String(cString: oh_stop_signal_name(signal))
    }
}
