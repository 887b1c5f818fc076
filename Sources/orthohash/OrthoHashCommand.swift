import ArgumentParser
import Foundation
import OrthoHash

@main
struct OrthoHashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "orthohash",
        abstract: "Train OrthoHash deep-hashing models on CPU, evaluate them by Hamming ranking, encode data to binary codes.",
        subcommands: [Train.self, Eval.self, Encode.self, Revisited.self, CodebookCommand.self, Export.self, Bench.self],
        defaultSubcommand: Train.self)

    /// Runs `body`, turning user-facing errors into one line on stderr and exit status 1.
    static func guarded(_ body: () throws -> Void) throws {
        do { try body() } catch let error as OrthoHashError {
            FileHandleOutput.stderr("error: \(error)")
            throw ExitCode(1)
        }
    }
}
