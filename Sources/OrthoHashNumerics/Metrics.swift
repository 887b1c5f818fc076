// Hamming-ranking retrieval metrics: mAP@R (HashNet's and GLDv2's denominators) and
// precision@k. Dimensions: Q = queries, M = database rows, K = bits, W = 64-bit words per code.

import Dispatch

/// Labels in the form the metric reads: single class per row, or a bitset of classes per row.
public struct RelevanceLabels {
    let single: [Int32]?
    let multi: [UInt64]?      // (rows, ceil(C / 64))
    let multiWords: Int

    public init(_ labels: Labels) {
        switch labels {
        case .single(let l): single = l; multi = nil; multiWords = 0
        case .multi(let C, let m):
            let w = (C + 63) / 64
            let rows = C == 0 ? 0 : m.count / C
            var bits = [UInt64](repeating: 0, count: rows * w)
            for r in 0..<rows { for c in 0..<C where m[r * C + c] != 0 { bits[r * w + c >> 6] |= 1 << UInt64(c & 63) } }
            single = nil; multi = bits; multiWords = w
        }
    }
}

/// One mAP figure: the cutoff R and the denominator of each query's AP.
public struct MapCutoff: Equatable, Hashable, Sendable, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral {
    /// nil: the whole database.
    public var R: Int?
    /// false (HashNet, "1000"): AP divided by the relevant rows in the top R, 0 when there are
    /// none, and every query counts. true (GLDv2/DELG, "gt100"): AP divided by min(|GT|, R), |GT|
    /// being the relevant rows in the whole database; queries without any are left out of the mean.
    public var groundTruth: Bool

    public init(R: Int?, groundTruth: Bool = false) { self.R = R; self.groundTruth = groundTruth }
    public init(integerLiteral value: Int) { self.init(R: value) }
    public init(nilLiteral: ()) { self.init(R: nil) }

    /// "all" or R, behind "gt" for GLDv2's denominator: the name of the figure (mAP@<text>).
    public var text: String { (groundTruth ? "gt" : "") + (R.map(String.init) ?? "all") }

    /// Parses "all", a positive number, or either behind "gt" ("gt100", "gtall").
    public init?(_ text: String) {
        let gt = text.hasPrefix("gt")
        let rest = gt ? String(text.dropFirst(2)) : text
        if rest == "all" {
            self.init(R: nil, groundTruth: gt)
        } else if let n = Int(rest), n >= 1 {
            self.init(R: n, groundTruth: gt)
        } else {
            return nil
        }
    }
}

public struct RetrievalResult: Equatable {
    /// mAP@R for each requested R (R = nil means the whole database), in the order asked.
    public var meanAP: [Double]
    /// Precision@k for each requested k.
    public var precision: [Double]

    public init(meanAP: [Double], precision: [Double]) { self.meanAP = meanAP; self.precision = precision }
}

/// mAP@R and precision@k by Hamming ranking (docs/METHOD.md, "Evaluation"):
/// ```
/// d(q, x) = popcount(b_q xor b_x)                 (= (K - b_q . b_x) / 2 for +-1 codes)
/// ranking: by d, ties by database index (ascending)
/// AP@R(q) = sum_{k<=R} P@k rel_k / sum_{k<=R} rel_k      (0 if nothing relevant in the top R)
/// ```
/// relevant = shares at least one label with the query. Queries with nothing relevant in the top
/// R count as 0 in the mean. A `groundTruth` cutoff instead uses the GLDv2 metric:
/// `AP@R(q) = sum_{k<=R} P@k rel_k / min(|GT_q|, R)`, averaged over the queries with |GT_q| > 0.
/// Queries are spread over `threads` threads; the result does not depend on their number.
public func retrievalMetrics(query: PackedCodes, queryLabels: Labels, database: PackedCodes,
                             databaseLabels: Labels, mapAt: [MapCutoff], precisionAt: [Int],
                             threads: Int = 1) -> RetrievalResult {
    let perQuery = retrievalFigures(query: query, queryLabels: queryLabels, database: database, databaseLabels: databaseLabels,
                                    mapAt: mapAt, precisionAt: precisionAt, queries: 0..<query.count, threads: threads)
    return meanRetrievalFigures(perQuery, mapAt: mapAt, precisionAt: precisionAt, databaseRows: database.count)
}

/// The per-query figures of `retrievalMetrics` for the queries `queries` (an evaluation spread
/// over ranks gives each a share): (queries.count, mapAt.count + precisionAt.count), the APs
/// first (NaN where GLDv2's metric leaves a query out), then the precisions.
public func retrievalFigures(query: PackedCodes, queryLabels: Labels, database: PackedCodes,
                             databaseLabels: Labels, mapAt: [MapCutoff], precisionAt: [Int],
                             queries: Range<Int>, threads: Int = 1) -> [Double] {
    precondition(query.bits == database.bits, "query codes \(query.bits) bits, database \(database.bits)")
    precondition(queries.lowerBound >= 0 && queries.upperBound <= query.count, "queries \(queries) of \(query.count)")
    let Q = queries.count, M = database.count
    let figures = QueryFigures(mapAt: mapAt, precisionAt: precisionAt, databaseRows: M)
    var perQuery = [Double](repeating: 0, count: Q * figures.count)    // (Q, figures)
    let workers = max(1, min(threads, Q))
    let relevance = Relevance(query: RelevanceLabels(queryLabels), database: RelevanceLabels(databaseLabels))
    perQuery.withUnsafeMutableBufferPointer { out in
        query.storage.withUnsafeBufferPointer { qc in
            database.storage.withUnsafeBufferPointer { dc in
                DispatchQueue.concurrentPerform(iterations: workers) { worker in
                    var scorer = QueryScorer(figures: figures, databaseRows: M, bits: query.bits)
                    for i in stride(from: worker, to: Q, by: workers) {
                        let q = queries.lowerBound + i
                        scorer.score(query: qc.baseAddress! + q * query.words, database: dc.baseAddress!, words: query.words,
                                     relevant: { relevance.relevant(q, $0) }, into: out.baseAddress! + i * figures.count)
                    }
                }
            }
        }
    }
    return perQuery
}

/// The mean of each figure over the queries of `perQuery` (retrievalFigures of all queries, in
/// order), added in query order so that the result depends neither on the thread count nor on
/// how the queries were shared out.
public func meanRetrievalFigures(_ perQuery: [Double], mapAt: [MapCutoff], precisionAt: [Int], databaseRows: Int) -> RetrievalResult {
    let figures = QueryFigures(mapAt: mapAt, precisionAt: precisionAt, databaseRows: databaseRows)
    return figures.mean(perQuery, queries: figures.count == 0 ? 0 : perQuery.count / figures.count)
}

/// Whether database row x is relevant to query q: the same class, or a class in common.
struct Relevance {
    let query: RelevanceLabels, database: RelevanceLabels

    @inline(__always)
    func relevant(_ q: Int, _ x: Int) -> Bool {
        if let s = query.single, let t = database.single { return s[q] == t[x] }
        var any: UInt64 = 0
        for w in 0..<query.multiWords { any |= query.multi![q * query.multiWords + w] & database.multi![x * database.multiWords + w] }
        return any != 0
    }
}

/// The figures computed per query: one AP per mAP cutoff, then one precision per k.
struct QueryFigures {
    let mapAt: [MapCutoff]
    /// R of each mAP cutoff and k of each precision, at most the database size.
    let cutoffs: [Int], precisionCutoffs: [Int]
    var count: Int { cutoffs.count + precisionCutoffs.count }
    /// Ranks at and beyond this one contribute to no figure.
    let deepest: Int

    init(mapAt: [MapCutoff], precisionAt: [Int], databaseRows M: Int) {
        self.mapAt = mapAt
        cutoffs = mapAt.map { min($0.R ?? M, M) }
        precisionCutoffs = precisionAt.map { min($0, M) }
        deepest = max(cutoffs.max() ?? 0, precisionCutoffs.max() ?? 0)
    }

    /// The mean of each figure over the queries, in query order (so the figure does not depend on
    /// the thread count); a NaN (a query without ground truth under GLDv2's metric) is left out.
    func mean(_ perQuery: [Double], queries Q: Int) -> RetrievalResult {
        var result = RetrievalResult(meanAP: Array(repeating: 0, count: cutoffs.count),
                                     precision: Array(repeating: 0, count: precisionCutoffs.count))
        var counted = [Int](repeating: 0, count: cutoffs.count)
        for q in 0..<Q {
            for i in cutoffs.indices {
                let ap = perQuery[q * count + i]
                if ap.isNaN { continue }
                result.meanAP[i] += ap
                counted[i] += 1
            }
            for i in precisionCutoffs.indices { result.precision[i] += perQuery[q * count + cutoffs.count + i] }
        }
        for i in result.meanAP.indices where counted[i] > 0 { result.meanAP[i] /= Double(counted[i]) }
        if Q > 0 {
            for i in result.precision.indices { result.precision[i] /= Double(Q) }
        }
        return result
    }
}

/// One worker's state for scoring queries: the ranking of the database by distance (a counting
/// sort, HammingHistogram), then one pass in database order that knows every row's rank and, for
/// a relevant row, how many relevant rows rank at or above it.
struct QueryScorer {
    let figures: QueryFigures
    var histogram: HammingHistogram
    var apSum: [Double], relevantInTop: [Int], hits: [Int]

    init(figures: QueryFigures, databaseRows M: Int, bits: Int) {
        self.figures = figures
        histogram = HammingHistogram(rows: M, bits: bits)
        apSum = [Double](repeating: 0, count: figures.cutoffs.count)
        relevantInTop = [Int](repeating: 0, count: figures.cutoffs.count)
        hits = [Int](repeating: 0, count: figures.precisionCutoffs.count)
    }

    /// Writes the query's figures (QueryFigures order) to `out`.
    @inline(__always)
    mutating func score(query: UnsafePointer<UInt64>, database: UnsafePointer<UInt64>, words: Int,
                        relevant: (Int) -> Bool, into out: UnsafeMutablePointer<Double>) {
        let M = histogram.distance.count
        histogram.count(query: query, database: database, rows: M, words: words, mark: relevant)
        for i in apSum.indices { apSum[i] = 0; relevantInTop[i] = 0 }
        for i in hits.indices { hits[i] = 0 }
        for x in 0..<M {
            let d = Int(histogram.distance[x])
            let position = histogram.start[d]          // 0-based rank
            histogram.start[d] += 1
            guard relevant(x) else { continue }
            histogram.markedStart[d] += 1
            if position >= figures.deepest { continue }
            let relevantSoFar = Double(histogram.markedStart[d])   // relevant rows at ranks <= position
            for (i, R) in figures.cutoffs.enumerated() where position < R {
                apSum[i] += relevantSoFar / Double(position + 1)
                relevantInTop[i] += 1
            }
            for (i, k) in figures.precisionCutoffs.enumerated() where position < k { hits[i] += 1 }
        }
        let groundTruth = histogram.marked
        for i in figures.cutoffs.indices {
            if figures.mapAt[i].groundTruth {
                // NaN marks a query without ground truth, left out of the mean.
                out[i] = groundTruth > 0 ? apSum[i] / Double(min(groundTruth, figures.cutoffs[i])) : .nan
            } else {
                out[i] = relevantInTop[i] > 0 ? apSum[i] / Double(relevantInTop[i]) : 0
            }
        }
        for i in figures.precisionCutoffs.indices {
            let k = figures.precisionCutoffs[i]
            out[figures.cutoffs.count + i] = k > 0 ? Double(hits[i]) / Double(k) : 0
        }
    }
}

/// Stored as its text ("all", "1000", "gt100"), as configurations have always written it.
extension MapCutoff: Codable {
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let cutoff = MapCutoff(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an mAP cutoff: '\(text)'"))
        }
        self = cutoff
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}
