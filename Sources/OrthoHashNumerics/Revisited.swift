// The revisited Oxford/Paris retrieval protocol (ROxford5k, RParis6k) over Hamming ranking.
// Dimensions: Q = queries, M = database rows, K = bits, W = 64-bit words per code.

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// One query's ground truth: database rows (0-based) that are easy or hard positives, or junk.
public struct RevisitedQuery: Codable, Equatable {
    public var easy: [Int]
    public var hard: [Int]
    public var junk: [Int]

    public init(easy: [Int], hard: [Int], junk: [Int]) { self.easy = easy; self.hard = hard; self.junk = junk }
}

/// mAP under the three settings of the revisited protocol.
public struct RevisitedResult: Equatable {
    public var easy: Double, medium: Double, hard: Double
}

/// Average precision by the trapezoid rule over a ranking from which ignored rows were removed,
/// as revisitop's `compute_ap`: `ranks` are the 0-based positions of the positives (ascending;
/// every positive is somewhere in the full ranking, so there are ranks.count of them), and
/// ```
/// AP = sum_j (P0_j + P1_j) / 2 / positives,  P0_j = j / r_j (1 when r_j = 0),  P1_j = (j + 1) / (r_j + 1)
/// ```
public func trapezoidAP(ranks: [Int]) -> Double {
    var ap = 0.0
    for (j, r) in ranks.enumerated() {
        let p0 = r == 0 ? 1.0 : Double(j) / Double(r)
        let p1 = Double(j + 1) / Double(r + 1)
        ap += (p0 + p1) / 2
    }
    return ap / Double(ranks.count)
}

/// The revisited protocol (docs/METHOD.md, "Evaluation") by Hamming ranking, ties by database
/// index, over the full ranking:
/// - Easy: positives = easy; hard and junk are removed from the ranking.
/// - Medium: positives = easy + hard; junk removed.
/// - Hard: positives = hard; easy and junk removed.
/// A query without positives in a setting is left out of that setting's mean (as revisitop does).
public func revisitedMeanAP(query: PackedCodes, database: PackedCodes, groundTruth: [RevisitedQuery]) -> RevisitedResult {
    precondition(query.bits == database.bits, "query codes \(query.bits) bits, database \(database.bits)")
    precondition(groundTruth.count == query.count, "ground truth for \(groundTruth.count) queries, \(query.count) query codes")
    let M = database.count, W = query.words
    var sums = [0.0, 0.0, 0.0], counted = [0, 0, 0]
    var kind = [UInt8](repeating: 0, count: M)       // 0 other, 1 easy, 2 hard, 3 junk
    // (positive kinds, ignored kinds) of Easy, Medium, Hard.
    let settings: [(Set<UInt8>, Set<UInt8>)] = [([1], [2, 3]), ([1, 2], [3]), ([2], [1, 3])]
    // The rows that matter (positives and junk) are placed in each query's full ranking by one
    // pass over the database (ties by row), the rest of the ranking never formed.
    var ranks = RelevantRanks(capacity: groundTruth.map { $0.easy.count + $0.hard.count + $0.junk.count }.max() ?? 0, words: W, group: 1)
    query.storage.withUnsafeBufferPointer { q in
        database.storage.withUnsafeBufferPointer { db in
            for i in 0..<query.count {
                let g = groundTruth[i]
                for row in g.junk { kind[row] = 3 }
                for row in g.hard { kind[row] = 2 }
                for row in g.easy { kind[row] = 1 }
                kind.withUnsafeBufferPointer { marks in
                    ranks.place(queries: q.baseAddress! + i * W, count: 1, database: db.baseAddress!, rows: M, words: W, marks: marks.baseAddress!)
                }
                let n = Int(ranks.found[0])
                let placed = (0..<n).map { (position: Int(ranks.positions[$0]), kind: kind[Int(ranks.rows[$0])]) }
                for (s, (positive, ignored)) in settings.enumerated() {
                    let ranks = positiveRanks(placed, positive: positive, ignored: ignored)
                    guard !ranks.isEmpty else { continue }
                    sums[s] += trapezoidAP(ranks: ranks)
                    counted[s] += 1
                }
                for row in g.easy + g.hard + g.junk { kind[row] = 0 }
            }
        }
    }
    // No query with positives in a setting: undefined (revisitop's compute_map gives NaN), not 0.
    func mean(_ s: Int) -> Double { counted[s] > 0 ? sums[s] / Double(counted[s]) : .nan }
    return RevisitedResult(easy: mean(0), medium: mean(1), hard: mean(2))
}

/// 0-based positions of the positives in the ranking once the ignored rows are removed, from the
/// positions in the full ranking of the rows that are positive or ignored (ascending): a row's
/// position falls by the ignored rows ranked above it.
func positiveRanks(_ placed: [(position: Int, kind: UInt8)], positive: Set<UInt8>, ignored: Set<UInt8>) -> [Int] {
    var ranks: [Int] = []
    var removed = 0
    for (position, k) in placed {
        if ignored.contains(k) { removed += 1 } else if positive.contains(k) { ranks.append(position - removed) }
    }
    return ranks
}
