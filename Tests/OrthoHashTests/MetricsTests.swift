import XCTest
@testable import OrthoHash

/// Codes from +-1 rows (1 -> bit set).
func codes(_ rows: [[Float]]) -> PackedCodes {
    let flat = rows.flatMap { $0 }
    return flat.withUnsafeBufferPointer { PackedCodes(values: $0.baseAddress!, count: rows.count, bits: rows.first?.count ?? 0) }
}

/// Reference: sort by (distance, index) and walk the list.
func referenceAP(distances: [Int], relevant: [Bool], R: Int) -> Double {
    let order = distances.indices.sorted { (distances[$0], $0) < (distances[$1], $1) }
    var hits = 0, sum = 0.0
    for (k, i) in order.prefix(R).enumerated() where relevant[i] {
        hits += 1
        sum += Double(hits) / Double(k + 1)
    }
    return hits == 0 ? 0 : sum / Double(hits)
}

final class MetricsTests: XCTestCase {
    /// Query 0000; database distances (1, 0, 1, 2), relevant (T, F, F, T).
    /// Ranking (ties by index): #1 (d0, F), #0 (d1, T), #2 (d1, F), #3 (d2, T).
    /// AP@all = (1/2 + 2/4) / 2 = 0.5; AP@1 = 0 (nothing relevant in the top 1); AP@2 = (1/2) / 1 = 0.5.
    /// P@2 = 1/2, P@4 = 2/4.
    func testHandComputedWithTies() {
        let q = codes([[-1, -1, -1, -1]])
        let db = codes([[1, -1, -1, -1], [-1, -1, -1, -1], [-1, 1, -1, -1], [1, 1, -1, -1]])
        let r = retrievalMetrics(query: q, queryLabels: .single([7]), database: db, databaseLabels: .single([7, 1, 2, 7]),
                                 mapAt: [nil, 1, 2], precisionAt: [2, 4])
        XCTAssertEqual(r.meanAP[0], 0.5, accuracy: 1e-12)
        XCTAssertEqual(r.meanAP[1], 0, accuracy: 1e-12)
        XCTAssertEqual(r.meanAP[2], 0.5, accuracy: 1e-12)
        XCTAssertEqual(r.precision, [0.5, 0.5])
    }

    /// Two queries, one with no relevant item at all: it counts as 0 in the mean.
    /// Multi-label relevance: shares at least one label.
    func testMultiLabelAndQueryWithoutRelevant() {
        let q = codes([[1, 1], [1, 1]])
        let db = codes([[1, 1], [-1, -1], [1, -1]])
        // classes: 3. query 0 has {0}, query 1 has {2}; db: {0,1}, {1}, {0}
        let ql = Labels.multi(classes: 3, [1, 0, 0, 0, 0, 1])
        let dl = Labels.multi(classes: 3, [1, 1, 0, 0, 1, 0, 1, 0, 0])
        let r = retrievalMetrics(query: q, queryLabels: ql, database: db, databaseLabels: dl, mapAt: [nil], precisionAt: [1])
        // Query 0: ranking #0 (d0, rel), #2 (d1, rel), #1 (d2, not): AP = (1 + 1) / 2 = 1. Query 1: 0.
        XCTAssertEqual(r.meanAP[0], 0.5, accuracy: 1e-12)
        XCTAssertEqual(r.precision[0], 0.5, accuracy: 1e-12)
    }

    /// Random codes against the sort-based reference, for several R, and thread-count independence.
    func testMatchesSortingReference() {
        var rng = Xoshiro256(seed: 21)
        let K = 70, Q = 15, M = 300        // K > 64: two words per code
        func randomCodes(_ n: Int) -> [[Float]] { (0..<n).map { _ in (0..<K).map { _ in rng.next() & 1 == 1 ? 1 : -1 } } }
        let qRows = randomCodes(Q), dRows = randomCodes(M)
        let ql = (0..<Q).map { _ in Int32(rng.nextInt(below: 5)) }, dl = (0..<M).map { _ in Int32(rng.nextInt(below: 5)) }
        let one = retrievalMetrics(query: codes(qRows), queryLabels: .single(ql), database: codes(dRows), databaseLabels: .single(dl),
                                   mapAt: [nil, 10, 100], precisionAt: [10], threads: 1)
        let two = retrievalMetrics(query: codes(qRows), queryLabels: .single(ql), database: codes(dRows), databaseLabels: .single(dl),
                                   mapAt: [nil, 10, 100], precisionAt: [10], threads: 2)
        XCTAssertEqual(one, two)
        for (i, R) in [M, 10, 100].enumerated() {
            var total = 0.0
            for q in 0..<Q {
                let d = dRows.map { row in zip(row, qRows[q]).filter { $0 != $1 }.count }
                total += referenceAP(distances: d, relevant: dl.map { $0 == ql[q] }, R: R)
            }
            XCTAssertEqual(one.meanAP[i], total / Double(Q), accuracy: 1e-12, "mAP@\(R)")
        }
    }
}

final class CodebookTests: XCTestCase {
    func testEntriesArePlusMinusOneAndSeeded() throws {
        for method in CodebookMethod.allCases {
            let a = try Codebook.generate(method: method, classes: 20, bits: 32, seed: 4)
            XCTAssertTrue(a.values.allSatisfy { $0 == 1 || $0 == -1 }, "\(method)")
            XCTAssertEqual(a, try Codebook.generate(method: method, classes: 20, bits: 32, seed: 4))
            XCTAssertNotEqual(a, try Codebook.generate(method: method, classes: 20, bits: 32, seed: 5))
            // Balanced-ish: about half the entries are +1.
            let plus = a.values.filter { $0 == 1 }.count
            XCTAssertTrue((200...440).contains(plus), "\(method): \(plus) of 640 are +1")
        }
    }

    func testOBeatsBOnMinimumDistance() throws {
        for seed: UInt64 in [0, 1, 2] {
            let b = try Codebook.generate(method: .B, classes: 100, bits: 16, seed: seed).pairwiseHamming()
            let o = try Codebook.generate(method: .O, classes: 100, bits: 16, seed: seed).pairwiseHamming()
            XCTAssertGreaterThan(o.minimum, b.minimum, "seed \(seed)")
        }
    }

    func testOThresholdScheduleAndFailure() throws {
        // 10 classes of 64 bits: distance >= 0.61 * 64 is reachable at once.
        let cb = try Codebook.generate(method: .O, classes: 10, bits: 64, seed: 0)
        XCTAssertGreaterThanOrEqual(Double(cb.pairwiseHamming().minimum) / 64, 0.2)
        // 40 classes of 4 bits cannot be placed at normalised distance >= 0.2 (only 16 codewords exist).
        XCTAssertThrowsError(try Codebook.generate(method: .O, classes: 40, bits: 4, seed: 0)) { error in
            XCTAssertTrue("\(error)".contains("cannot place 40 codewords"), "\(error)")
        }
    }

    func testPairwiseHammingByHand() {
        let cb = Codebook(classes: 3, bits: 4, values: [1, 1, 1, 1, -1, 1, 1, 1, -1, -1, -1, -1])
        let (minimum, mean) = cb.pairwiseHamming()
        XCTAssertEqual(minimum, 1)
        XCTAssertEqual(mean, Double(1 + 4 + 3) / 3, accuracy: 1e-12)
    }
}
