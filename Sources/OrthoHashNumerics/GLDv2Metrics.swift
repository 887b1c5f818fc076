// The Google Landmarks v2 retrieval metrics, as the official metrics.py defines them (DELF's
// google_landmarks_dataset/metrics.py: MeanAveragePrecision, MeanPrecisions, MeanMedianPosition).
// Images are integers here (the command line maps the ids files' strings to them); a prediction
// list is a query's retrieved index images, nearest first.

/// The figures of one solution (Public, Private, or both together).
public struct GLDv2Figures: Equatable, Sendable {
    /// Queries in the solution (Ignored rows already dropped): every mean divides by this.
    public var queries: Int
    /// mAP@maxPredictions: per query, the precision at each correct prediction (a prediction seen
    /// before in the list is skipped, but still takes its position), summed and divided by
    /// min(|GT|, maxPredictions); a query without predictions scores 0.
    public var meanAP: Double
    /// P@k for each k asked: correct predictions among the first k (duplicates skipped) over k.
    public var precision: [Double]
    /// The 1-based position of the first correct prediction, maxPredictions + 1 when there is
    /// none in the first maxPredictions: mean and median over the queries that have a prediction
    /// list (metrics.py's MeanMedianPosition loops over the predictions, not the solution); NaN
    /// when no query has one.
    public var meanPosition: Double, medianPosition: Double
}

/// `predictions[q]` and `solution[q]` for each query of the solution, in any order; a nil
/// prediction list is a query the submission leaves out.
/// Precondition: every k of `precisionAt` is at most `maxPredictions`.
public func gldv2Figures(predictions: [[Int]?], solution: [[Int]], maxPredictions: Int = 100, precisionAt: [Int]) -> GLDv2Figures {
    precondition(predictions.count == solution.count, "\(predictions.count) prediction lists for \(solution.count) queries")
    precondition(precisionAt.allSatisfy { $0 >= 1 && $0 <= maxPredictions }, "precision cutoffs \(precisionAt) beyond \(maxPredictions)")
    let Q = solution.count
    var apSum = 0.0, positions: [Int] = []
    var precisionSums = [Double](repeating: 0, count: precisionAt.count)
    for q in 0..<Q {
        guard let predicted = predictions[q] else { continue }     // adds 0 to every sum, no position
        let relevant = Set(solution[q])
        var seen = Set<Int>(), correct = 0, ap = 0.0, first: Int? = nil
        // correctAt[i]: correct predictions among the first i + 1.
        var correctAt = [Int](repeating: 0, count: maxPredictions)
        for i in 0..<maxPredictions {
            if i < predicted.count {
                let p = predicted[i]
                if seen.insert(p).inserted && relevant.contains(p) {
                    correct += 1
                    ap += Double(correct) / Double(i + 1)
                    if first == nil { first = i + 1 }
                }
            }
            correctAt[i] = correct
        }
        // |GT| counts the solution's list as given (the official len(), repeats included).
        if !solution[q].isEmpty { apSum += ap / Double(min(solution[q].count, maxPredictions)) }
        for (j, k) in precisionAt.enumerated() { precisionSums[j] += Double(correctAt[k - 1]) / Double(k) }
        positions.append(first ?? maxPredictions + 1)
    }
    let sorted = positions.sorted(), P = sorted.count
    let median = P == 0 ? .nan : P % 2 == 1 ? Double(sorted[P / 2]) : Double(sorted[P / 2 - 1] + sorted[P / 2]) / 2
    return GLDv2Figures(queries: Q, meanAP: Q == 0 ? 0 : apSum / Double(Q),
                        precision: precisionSums.map { Q == 0 ? 0 : $0 / Double(Q) },
                        meanPosition: P == 0 ? .nan : Double(sorted.reduce(0, +)) / Double(P), medianPosition: median)
}
