import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Search: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exact k-nearest search by Hamming distance over packed codes (as `orthohash encode` writes them).",
            discussion: "Ties are broken by ascending database row, as faiss's IndexBinaryFlat returns them. The database is memory-mapped and read in cache-sized chunks; queries are spread over the threads.")
        @Option(help: "Database codes (.npy, uint8 (M, bytes)).") var db: String
        @Option(help: "Query codes (.npy, uint8 (Q, bytes), the database's width).") var queries: String
        @Option(help: "Neighbours per query.") var k: Int = 100
        @Option(help: "Output: database rows, int64 (Q, k), nearest first.") var out: String
        @Option(help: "Also write their Hamming distances, int32 (Q, k).") var distances: String?
        @Option(help: "The distance kernel: auto (the fastest this CPU runs), avx512, avx2, popcnt or portable (benchmarks).")
        var kernel: SearchKernel = .auto
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            guard k >= 1 else { throw ValidationError("--k must be at least 1, got \(k)") }
            if let level = kernel.level, level > HammingSearch.level {
                throw ValidationError("--kernel \(kernel.rawValue) needs a CPU this one is not (it runs \(HammingSearch.kernelName))")
            }
            let outputs = [("--out", out)] + (distances.map { [("--distances", $0)] } ?? [])
            try OutputFile.check(outputs: outputs, inputs: [("the database (--db)", db), ("the queries (--queries)", queries)])
        }

        func run() throws {
            let database = try PackedCodeFile(db), query = try PackedCodeFile(queries)
            guard query.bytes == database.bytes else {
                throw OrthoHashError("query codes are \(query.bytes) bytes wide but the database's are \(database.bytes)", file: queries)
            }
            guard k <= database.rows else { throw OrthoHashError("--k \(k) is more than the \(database.rows) database codes", file: db) }
            guard database.rows <= HammingSearch.maxRows else {
                throw OrthoHashError("\(database.rows) codes is more than the \(HammingSearch.maxRows) one search takes", file: db)
            }
            guard database.bytes <= HammingSearch.maxCodeBytes else {
                throw OrthoHashError("codes of \(database.bytes) bytes are wider than the \(HammingSearch.maxCodeBytes) one search takes", file: db)
            }
            // The answer is held in memory before it is written: 12 bytes per (query, neighbour).
            let physical = Double(ProcessInfo.processInfo.physicalMemory), answer = 12 * Double(query.rows) * Double(k)
            guard answer <= physical / 2 else {
                throw OrthoHashError(String(format: "%ld queries x --k %ld needs %.1f GB for the answer, more than half this machine's %.1f GB",
                                            query.rows, k, answer / 1e9, physical / 1e9), file: queries, hint: "search the queries in parts")
            }
            let threads = runtime.resolvedThreads(ranks: 1)
            let start = DispatchTime.now().uptimeNanoseconds
            let (ids, d) = try HammingSearch.nearest(queries: query.codes, count: query.rows, database: database.codes, count: database.rows,
                                                 codeBytes: database.bytes, k: k, threads: threads, level: kernel.level)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            try NPYWriter.write(path: out, shape: [query.rows, k], int64: ids)
            if let distances { try NPYWriter.write(path: distances, shape: [query.rows, k], int32: d) }
            let name = HammingSearch.kernelNames[kernel.level ?? HammingSearch.level]
            standardError(String(format: "searched %ld queries in %ld codes of %ld bits, k = %ld: %.3f s (%ld thread%@, %@)", query.rows, database.rows,
                                 database.bytes * 8, k, seconds, threads, threads > 1 ? "s" : "", name))
        }
    }
}

enum SearchKernel: String, ExpressibleByArgument, CaseIterable {
    case auto, avx512, avx2, popcnt, portable
    var level: Int? {
        switch self { case .auto: return nil; case .avx512: return 3; case .avx2: return 2; case .popcnt: return 1; case .portable: return 0 }
    }
}
