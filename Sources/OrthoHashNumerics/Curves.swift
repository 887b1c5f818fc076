// What deep-hashing papers plot beside mAP (HashNet, DPSH, DeepHash-pytorch): precision and
// recall of Hamming-radius retrieval at every radius 0...K (the PR curve of Hamming ranking), of
// which precision within radius 2 is one point. P@N for a list of N comes from
// `retrievalMetrics` (ties by database row).
//
// For query q and radius r, with retrieved(q, r) the database rows within distance r and
// relevant(q) those sharing a class with q:
// ```
// precision(q, r) = |retrieved ∩ relevant| / |retrieved|    0 when nothing is within r
// recall(q, r)    = |retrieved ∩ relevant| / |relevant|     queries with nothing relevant left out
// ```
// each averaged over the queries, as HashNet's get_precision_recall_by_Hamming_Radius does
// (a query that retrieves nothing counts 0: the rule its code and the papers that cite
// "precision within Hamming radius 2" follow). How many queries retrieve nothing is kept too.

import CKernels
import Dispatch

public struct HammingCurves: Equatable {
    /// Radii 0...K.
    public var radius: [Int]
    /// Mean over the queries of each radius's precision (nothing retrieved counts 0).
    public var precision: [Double]
    /// Mean over the queries that have relevant rows of each radius's recall.
    public var recall: [Double]
    /// Queries that retrieve nothing within each radius.
    public var emptyQueries: [Int]
    /// Queries with at least one relevant database row (recall's denominator).
    public var queriesWithRelevant: Int
    public var queries: Int

    /// Precision within Hamming radius 2 (HashNet's figure), or within K where K < 2.
    public var precisionWithinRadius2: Double { precision[min(2, precision.count - 1)] }
}

/// The Hamming-radius curves of `query` against `database` (see the file's comment); the result
/// does not depend on `threads` (per-query figures, added in query order).
public func hammingCurves(query: PackedCodes, queryLabels: Labels, database: PackedCodes, databaseLabels: Labels,
                          threads: Int = 1) -> HammingCurves {
    precondition(query.bits == database.bits && query.words == database.words, "query codes \(query.bits) bits, database \(database.bits)")
    let Q = query.count, M = database.count, K = query.bits, W = query.words, bins = W * 64 + 1
    let labels = (query: RelevanceLabels(queryLabels), database: RelevanceLabels(databaseLabels))
    var all = [UInt64](repeating: 0, count: Q * bins), relevant = [UInt64](repeating: 0, count: Q * bins)
    let parts = max(1, min(threads, Q))
    all.withUnsafeMutableBufferPointer { a in
        relevant.withUnsafeMutableBufferPointer { r in
            query.storage.withUnsafeBufferPointer { qc in
                database.storage.withUnsafeBufferPointer { dc in
                    DispatchQueue.concurrentPerform(iterations: parts) { part in
                        let lo = Q * part / parts, hi = Q * (part + 1) / parts
                        guard hi > lo, M > 0 else { return }
                        if let s = labels.query.single, let t = labels.database.single {
                            s.withUnsafeBufferPointer { sq in
                                t.withUnsafeBufferPointer { td in
                                    oh_hamming_histograms(qc.baseAddress! + lo * W, hi - lo, dc.baseAddress!, M, W, td.baseAddress!,
                                                          sq.baseAddress! + lo, nil, 0, nil, a.baseAddress! + lo * bins, r.baseAddress! + lo * bins)
                                }
                            }
                        } else {
                            let w = labels.query.multiWords
                            labels.query.multi!.withUnsafeBufferPointer { bq in
                                labels.database.multi!.withUnsafeBufferPointer { bd in
                                    oh_hamming_histograms(qc.baseAddress! + lo * W, hi - lo, dc.baseAddress!, M, W, nil, nil,
                                                          bd.baseAddress!, w, bq.baseAddress! + lo * w,
                                                          a.baseAddress! + lo * bins, r.baseAddress! + lo * bins)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    var precision = [Double](repeating: 0, count: K + 1), recall = [Double](repeating: 0, count: K + 1)
    var empty = [Int](repeating: 0, count: K + 1), withRelevant = 0
    for q in 0..<Q {
        let total = (0..<bins).reduce(UInt64(0)) { $0 + relevant[q * bins + $1] }
        if total > 0 { withRelevant += 1 }
        var retrieved: UInt64 = 0, hits: UInt64 = 0
        for d in 0...K {
            retrieved += all[q * bins + d]; hits += relevant[q * bins + d]
            if retrieved == 0 { empty[d] += 1 } else { precision[d] += Double(hits) / Double(retrieved) }
            if total > 0 { recall[d] += Double(hits) / Double(total) }
        }
    }
    return HammingCurves(radius: Array(0...K), precision: precision.map { Q > 0 ? $0 / Double(Q) : .nan },
                         recall: recall.map { withRelevant > 0 ? $0 / Double(withRelevant) : .nan },
                         emptyQueries: empty, queriesWithRelevant: withRelevant, queries: Q)
}
