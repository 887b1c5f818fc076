// Exact Hamming search against a brute-force reference: every kernel this CPU runs, code lengths
// that are and are not multiples of 64 bits, databases of several chunks, ties, k up to the
// whole database, and query counts that are not multiples of four.

import XCTest
@testable import OrthoHashNumerics

/// The reference: every distance counted byte by byte, rows sorted by (distance, row).
func bruteForceNearest(queries: [UInt8], database: [UInt8], bytes: Int, k: Int) -> (ids: [Int64], distances: [Int32]) {
    let Q = queries.count / bytes, M = database.count / bytes
    var ids: [Int64] = [], distances: [Int32] = []
    for q in 0..<Q {
        let d = (0..<M).map { x in (0..<bytes).reduce(0) { $0 + (queries[q * bytes + $1] ^ database[x * bytes + $1]).nonzeroBitCount } }
        let order = (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }
        for x in order.prefix(k) { ids.append(Int64(x)); distances.append(Int32(d[x])) }
    }
    return (ids, distances)
}

func randomBytes(_ n: Int, seed: UInt64, bits: Int = 8) -> [UInt8] {
    var rng = Xoshiro256(seed: seed)
    return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) & UInt8(truncatingIfNeeded: (1 << bits) - 1) }
}

final class HammingSearchTests: XCTestCase {
    func search(_ queries: [UInt8], _ database: [UInt8], bytes: Int, k: Int, threads: Int = 1, level: Int) throws -> (ids: [Int64], distances: [Int32]) {
        try queries.withUnsafeBufferPointer { q in
            try database.withUnsafeBufferPointer { db in
                try HammingSearch.nearest(queries: q.baseAddress!, count: queries.count / bytes, database: db.baseAddress!,
                                          count: database.count / bytes, codeBytes: bytes, k: k, threads: threads, level: level)
            }
        }
    }

    /// Code lengths of 8 to 2000 bits, among them 24, 72, 136 and 200 (not multiples of 64) and
    /// 2000 (more words than the AVX2 kernel's byte counters hold); databases larger than one
    /// chunk (8192 codes of one word, 8192 / W of W words) and not a multiple of it or of the
    /// vector width; 13 queries (three blocks of four and one alone).
    func testEveryKernelAgreesWithBruteForce() throws {
        for (bytes, M) in [(1, 9000), (3, 17000), (8, 17001), (9, 5000), (16, 9001), (17, 2100), (25, 1500), (32, 2500), (64, 700), (250, 300)] {
            let queries = randomBytes(13 * bytes, seed: UInt64(bytes)), database = randomBytes(M * bytes, seed: UInt64(1000 + bytes))
            for k in [1, 10, 100] {
                let expected = bruteForceNearest(queries: queries, database: database, bytes: bytes, k: k)
                for level in 0...HammingSearch.level {
                    for threads in [1, 3] {
                        let got = try search(queries, database, bytes: bytes, k: k, threads: threads, level: level)
                        XCTAssertEqual(got.distances, expected.distances, "\(bytes) bytes, k \(k), kernel \(level), \(threads) threads")
                        XCTAssertEqual(got.ids, expected.ids, "\(bytes) bytes, k \(k), kernel \(level), \(threads) threads")
                    }
                }
            }
        }
    }

    /// Two bits of difference at most: nearly every row ties with thousands of others, and the
    /// k best must be the lowest rows of each distance (faiss's order). k = M returns the whole
    /// database ranked; identical codes return rows 0..<k.
    func testTiesGoToTheLowerRow() throws {
        let bytes = 1, M = 20000
        let queries = randomBytes(6, seed: 5, bits: 2), database = randomBytes(M, seed: 6, bits: 2)
        for k in [1, 50, 4999, M] {
            let expected = bruteForceNearest(queries: queries, database: database, bytes: bytes, k: k)
            for level in 0...HammingSearch.level {
                let got = try search(queries, database, bytes: bytes, k: k, threads: 2, level: level)
                XCTAssertEqual(got.ids, expected.ids, "k \(k), kernel \(level)")
                XCTAssertEqual(got.distances, expected.distances, "k \(k), kernel \(level)")
            }
        }
        let same = [UInt8](repeating: 0xA5, count: 8 * 3000)
        for level in 0...HammingSearch.level {
            let got = try search(Array(same.prefix(8 * 5)), same, bytes: 8, k: 40, level: level)
            XCTAssertEqual(got.ids, (0..<5).flatMap { _ in (0..<40).map(Int64.init) }, "kernel \(level)")
            XCTAssertEqual(got.distances, [Int32](repeating: 0, count: 200), "kernel \(level)")
        }
    }

    /// Distances are those of the definition: complement codes are at the full length.
    func testDistancesOfTheDefinition() throws {
        let bytes = 17, code = randomBytes(bytes, seed: 9)
        let database = code + code.map { ~$0 } + code.enumerated().map { $0.offset == 3 ? $0.element ^ 0x10 : $0.element }
        for level in 0...HammingSearch.level {
            let got = try search(code, database, bytes: bytes, k: 3, level: level)
            XCTAssertEqual(got.ids, [0, 2, 1], "kernel \(level)")
            XCTAssertEqual(got.distances, [0, 1, 136], "kernel \(level)")
        }
    }

    func testNoQueries() throws {
        let codes = randomBytes(80, seed: 1)
        let got = try codes.withUnsafeBufferPointer {
            try HammingSearch.nearest(queries: $0.baseAddress!, count: 0, database: $0.baseAddress!, count: 10, codeBytes: 8, k: 5, threads: 2)
        }
        XCTAssertEqual(got.ids, [])
        XCTAssertEqual(got.distances, [])
    }
}
