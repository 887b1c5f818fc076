// The Hamming-radius curves (precision and recall at every radius, precision within radius 2)
// against values worked out by hand.

import XCTest
@testable import OrthoHashNumerics

final class CurvesTests: XCTestCase {
    /// 4-bit codes. Query 0 (1111, class 0) meets x0 at distance 0 (relevant), x1 and x4 at 1
    /// (x4 relevant), x2 at 2 (relevant), x3 at 4 (relevant): retrieved 1, 3, 4, 4, 5 and hits
    /// 1, 2, 3, 3, 4 of 4 relevant at radii 0...4. Query 1 (-1-1-1-1, class 1) has one relevant
    /// row, x1, at distance 3: retrieved 1, 1, 2, 4, 5, hits 0, 0, 0, 1, 1. Query 2 (1111,
    /// class 2) has nothing relevant: precision 0 at every radius, left out of recall.
    func testHandComputed() {
        let db = codes([[1, 1, 1, 1], [1, 1, 1, -1], [1, 1, -1, -1], [-1, -1, -1, -1], [1, -1, 1, 1]])
        let q = codes([[1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, 1]])
        let dbLabels: [Int32] = [0, 1, 0, 0, 0], queryLabels: [Int32] = [0, 1, 2]
        let expectedPrecision = [(1.0 + 0 + 0) / 3, (2.0 / 3) / 3, (3.0 / 4) / 3, (3.0 / 4 + 1.0 / 4) / 3, (4.0 / 5 + 1.0 / 5) / 3]
        let expectedRecall = [(1.0 / 4) / 2, (2.0 / 4) / 2, (3.0 / 4) / 2, (3.0 / 4 + 1) / 2, 1]
        for threads in [1, 2] {
            let c = hammingCurves(query: q, queryLabels: .single(queryLabels), database: db, databaseLabels: .single(dbLabels), threads: threads)
            XCTAssertEqual(c.radius, [0, 1, 2, 3, 4])
            for r in 0...4 {
                XCTAssertEqual(c.precision[r], expectedPrecision[r], accuracy: 1e-12, "precision at radius \(r)")
                XCTAssertEqual(c.recall[r], expectedRecall[r], accuracy: 1e-12, "recall at radius \(r)")
            }
            XCTAssertEqual(c.precisionWithinRadius2, 0.25, accuracy: 1e-12)
            XCTAssertEqual(c.emptyQueries, [0, 0, 0, 0, 0])
            XCTAssertEqual(c.queriesWithRelevant, 2)
        }
        // The same classes as multi-hot rows: relevance is a class in common, the same figures.
        func hot(_ labels: [Int32]) -> Labels { .multi(classes: 3, labels.flatMap { l in (0..<3).map { $0 == l ? UInt8(1) : 0 } }) }
        let multi = hammingCurves(query: q, queryLabels: hot(queryLabels), database: db, databaseLabels: hot(dbLabels))
        XCTAssertEqual(multi.precision, hammingCurves(query: q, queryLabels: .single(queryLabels), database: db, databaseLabels: .single(dbLabels)).precision)
    }

    /// A query that retrieves nothing within a radius counts 0 there (HashNet's rule) and is
    /// counted among the empty ones.
    func testNothingWithinTheRadiusCountsZero() {
        let c = hammingCurves(query: codes([[-1, -1, -1, -1]]), queryLabels: .single([0]), database: codes([[1, 1, 1, 1]]),
                              databaseLabels: .single([0]))
        XCTAssertEqual(c.precision, [0, 0, 0, 0, 1])
        XCTAssertEqual(c.recall, [0, 0, 0, 0, 1])
        XCTAssertEqual(c.emptyQueries, [1, 1, 1, 1, 0])
        XCTAssertEqual(c.precisionWithinRadius2, 0)
    }
}
