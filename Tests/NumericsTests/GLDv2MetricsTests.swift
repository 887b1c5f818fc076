import XCTest
@testable import OrthoHashNumerics

/// The official GLDv2 retrieval metrics (metrics.py) on cases worked out by hand.
final class GLDv2MetricsTests: XCTestCase {
    /// Four queries, 5 predictions read, P@1, P@2, P@5:
    /// - q0: GT {1,2,3}; predicted 1 9 1 2 3. Correct at 1, the repeated 1 skipped (it keeps its
    ///   place), correct at 4 and 5: AP = (1/1 + 2/4 + 3/5) / 3 = 2.1 / 3 = 0.7; P = 1, 1/2, 3/5; first 1.
    /// - q1: GT of 7 images (10...16), more than the 5 read: the denominator is min(7, 5) = 5.
    ///   Predicted 20 10 11 21 12: AP = (1/2 + 2/3 + 3/5) / 5 = 53/150; P = 0, 1/2, 3/5; first 2.
    /// - q2: left out of the submission: 0 everywhere, and no position.
    /// - q3: GT {5}; predicted 6 7 (fewer than 5): 0 everywhere, first 5 + 1 = 6.
    /// mAP = (0.7 + 53/150) / 4 = 79/300; P@1 = 1/4, P@2 = 1/4, P@5 = 1.2/4 = 0.3; positions 1, 2, 6.
    func testHandComputed() {
        let f = gldv2Figures(predictions: [[1, 9, 1, 2, 3], [20, 10, 11, 21, 12], nil, [6, 7]],
                             solution: [[1, 2, 3], Array(10...16), [4], [5]], maxPredictions: 5, precisionAt: [1, 2, 5])
        XCTAssertEqual(f.queries, 4)
        // Tolerance: a few float64 roundings of terms below 1.
        XCTAssertEqual(f.meanAP, 79.0 / 300, accuracy: 1e-15)
        XCTAssertEqual(f.precision[0], 0.25, accuracy: 1e-15)
        XCTAssertEqual(f.precision[1], 0.25, accuracy: 1e-15)
        XCTAssertEqual(f.precision[2], 0.3, accuracy: 1e-15)
        XCTAssertEqual(f.meanPosition, 3)
        XCTAssertEqual(f.medianPosition, 2)
    }

    /// Predictions beyond maxPredictions are not read, a duplicate never counts twice even when
    /// correct, and an even number of positions has the mean of the middle two as its median.
    func testCutAtMaxPredictionsAndDuplicates() {
        // q0: GT {1,2}; 1 1 1 2 read to 3: AP = (1/1) / 2 = 0.5, P@3 = 1/3, first 1.
        // q1: GT {7}; 8 9 10 7: nothing in the first 3, first = 4.
        let f = gldv2Figures(predictions: [[1, 1, 1, 2], [8, 9, 10, 7]], solution: [[1, 2], [7]], maxPredictions: 3, precisionAt: [3])
        XCTAssertEqual(f.meanAP, 0.25, accuracy: 1e-15)
        XCTAssertEqual(f.precision[0], 1.0 / 6, accuracy: 1e-15)
        XCTAssertEqual(f.meanPosition, 2.5)
        XCTAssertEqual(f.medianPosition, 2.5)
    }

    /// 150 relevant images and the official 100 predictions: the denominator is 100, not 150.
    /// All 100 correct gives AP 1; every other one correct (positions 1, 3, ..., 99) gives
    /// sum over c = 1...50 of c / (2c - 1), over 100.
    func testMoreThanAHundredRelevant() {
        let gt = Array(0..<150)
        let all = gldv2Figures(predictions: [Array(0..<100)], solution: [gt], precisionAt: [1, 100])
        XCTAssertEqual(all.meanAP, 1, accuracy: 1e-15)
        XCTAssertEqual(all.precision, [1, 1])
        let alternate: [Int] = (0..<100).map { (i: Int) -> Int in i % 2 == 0 ? i / 2 : 1000 + i }
        let half = gldv2Figures(predictions: [alternate], solution: [gt], precisionAt: [100])
        var expected = 0.0
        for c in 1...50 { expected += Double(c) / Double(2 * c - 1) }
        expected /= 100
        XCTAssertEqual(half.meanAP, expected, accuracy: 1e-14)
        XCTAssertEqual(half.precision, [0.5])
        XCTAssertEqual(half.medianPosition, 1)
    }

    /// No query with predictions: means over the solution are 0, positions undefined.
    func testNoPredictions() {
        let f = gldv2Figures(predictions: [nil, nil], solution: [[1], [2]], precisionAt: [1])
        XCTAssertEqual(f.meanAP, 0)
        XCTAssertEqual(f.precision, [0])
        XCTAssertTrue(f.meanPosition.isNaN && f.medianPosition.isNaN)
    }
}
