// The command-line tool: parsing and wiring. One file per subcommand (`extension
// OrthoHashCommand { struct Sub }`); shared option groups in Options.swift, argument types in
// Arguments.swift.

import ArgumentParser
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
/// named; otherwise one process.
func onRanks(collectiveTimeout: Double, _ body: (DataParallel) throws -> Void) throws {
    guard MPICollective.launched else { return try body(OneProcess()) }
    let mpi = MPICollective(timeoutSeconds: collectiveTimeout)
    do {
        try body(MPIDataParallel(mpi))
        mpi.finalize()
    } catch let error as OrthoHashError {
        mpi.abort("error: \(error)", code: 1)
    }
}
