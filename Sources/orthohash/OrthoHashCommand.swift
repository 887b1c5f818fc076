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
        version: orthohashVersion,
        subcommands: [Train.self, Eval.self, Encode.self, Search.self, Map.self, Revisited.self, Inspect.self, CodebookCommand.self, Export.self, Bench.self])

    /// Every error a user can cause ends in one line, `error: ...`, and exit status 1: a file or
    /// data problem (OrthoHashError, which names the file), a flag that does not parse or a rule
    /// between flags (`validate()`). Help and similar requests print as ArgumentParser prints them.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let first = arguments.first, !first.hasPrefix("-"), let unknown = unknownSubcommand(first) {
            standardError("error: " + unknown)
            Foundation.exit(1)
        }
        do {
            var command = try parseAsRoot(arguments)
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

/// The version `orthohash --version` prints.
let orthohashVersion = "0.9.0"

/// For a first argument that names no subcommand: one line saying so, with the nearest name.
func unknownSubcommand(_ name: String) -> String? {
    let names = OrthoHashCommand.configuration.subcommands.map { $0.configuration.commandName ?? "\($0)".lowercased() } + ["help"]
    guard !names.contains(name) else { return nil }
    let nearest = names.min { editDistance(name, $0) < editDistance(name, $1) }!
    let suggestion = editDistance(name, nearest) <= max(2, nearest.count / 3) ? " (did you mean '\(nearest)'?)" : ""
    return "'\(name)' is not an orthohash command\(suggestion); the commands are \(names.dropLast().joined(separator: ", ")) (orthohash --help)"
}

/// Levenshtein distance.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var previous = row[0]
        row[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            let substitution = previous + (a[i - 1] == b[j - 1] ? 0 : 1)
            previous = row[j]
            row[j] = min(substitution, row[j] + 1, row[j - 1] + 1)
        }
    }
    return a.isEmpty ? b.count : row[b.count]
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
        // An error every rank met together is said once; any other ends the job from here.
        guard error.everyRank else { mpi.abort("error: \(error)", code: 1) }
        if mpi.rank == 0 { standardError("error: \(error)") }
        mpi.finalize()
        throw ExitCode(1)
    }
}

/// Stop requests from now on: SIGTERM, SIGINT and SIGUSR1 ask the run to stop after the current
/// step with a checkpoint (on a terminal, rank 0 says so when the signal arrives: Ctrl-C).
func installStopHandlers(rank: Int) {
    oh_stop_install(rank == 0 && isatty(2) != 0 ? 1 : 0)
}

/// The signal that asked this process to stop since `installStopHandlers`, if one did.
func stopRequest() -> String? {
    let signal = oh_stop_signal()
    return signal == 0 ? nil : String(cString: oh_stop_signal_name(signal))
}
