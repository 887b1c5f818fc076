import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashNumerics

extension OrthoHashCommand {
    struct CodebookCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "codebook", abstract: "Generate a codebook and print its pairwise Hamming distances.")
        @Option(help: "Classes C.") var classes: Int
        @Option(help: "Bits K.") var nbit: Int = 64
        @Option(help: "B, N or O.") var method: CodebookMethod = .B
        @Option(help: "Seed.") var seed: UInt64 = 0
        @Option(help: "Output .npy (int8, (C, K), entries +-1).") var out: String?

        func validate() throws {
            guard classes >= 1 else { throw ValidationError("--classes must be at least 1, got \(classes)") }
            guard nbit >= 1 else { throw ValidationError("--nbit must be at least 1, got \(nbit)") }
            if let out { try OutputFile.check(out, flag: "--out") }
        }

        func run() throws {
            // One byte per entry, and as many again while drawing: refused before it is allocated.
            let bytes = 2 * Double(classes) * Double(nbit)
            guard bytes <= Double(ProcessInfo.processInfo.physicalMemory) else {
                throw OrthoHashError(String(format: "a codebook of %ld classes x %ld bits needs %.1f GB, more than this machine's %.1f GB",
                                            classes, nbit, bytes / 1e9, Double(ProcessInfo.processInfo.physicalMemory) / 1e9))
            }
            let cb = try Codebook.generate(method: method, classes: classes, bits: nbit, seed: seed)
            if let out { try NPYWriter.write(path: out, shape: [classes, nbit], int8: cb.values) }
            let (minimum, mean) = cb.pairwiseHamming()
            print(String(format: "codebook %@: %ld classes x %ld bits  min Hamming %ld (%.3f)  mean %.2f (%.3f)%@",
                         method.rawValue, classes, nbit, minimum, Double(minimum) / Double(nbit), mean, mean / Double(nbit),
                         out.map { "  -> \($0)" } ?? ""))
        }
    }
}
