// Hamming-ranking retrieval metrics: mAP@R (HashNet's and GLDv2's denominators) and
// precision@k. Dimensions: Q = queries, M = database rows, K = bits, W = 64-bit words per code.

import CKernels
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
///
/// Two ways to the same figures, both on CKernels' Hamming kernels. When every cutoff is short
/// (at most `QueryFigures.shortList` ranks) the k nearest rows of each query are enough: the
/// exact top-k search ranks them, ties by row, and |GT| comes from the class sizes. Otherwise
/// (mAP@all, long cutoffs, or GLDv2's denominator with multi-label relevance) each query makes
/// one pass over the database that places its relevant rows in the full ranking without
/// ranking the rest (`oh_hamming_relevant_positions`).
public func retrievalFigures(query: PackedCodes, queryLabels: Labels, database: PackedCodes,
                             databaseLabels: Labels, mapAt: [MapCutoff], precisionAt: [Int],
                             queries: Range<Int>, threads: Int = 1) -> [Double] {
    precondition(query.bits == database.bits, "query codes \(query.bits) bits, database \(database.bits)")
    precondition(queries.lowerBound >= 0 && queries.upperBound <= query.count, "queries \(queries) of \(query.count)")
    let Q = queries.count, M = database.count
    let figures = QueryFigures(mapAt: mapAt, precisionAt: precisionAt, databaseRows: M)
    var perQuery = [Double](repeating: 0, count: Q * figures.count)    // (Q, figures)
    guard Q > 0, figures.count > 0 else { return perQuery }
    let relevance = Relevance(query: RelevanceLabels(queryLabels), database: RelevanceLabels(databaseLabels))
    let needsGroundTruth = mapAt.contains { $0.groundTruth }
    if figures.deepest == 0 {
        // An empty database: nothing is relevant, and every figure is that of no hits.
        perQuery.withUnsafeMutableBufferPointer { out in
            for i in 0..<Q { figures.write(positions: UnsafeBufferPointer(start: nil, count: 0), groundTruth: 0, into: out.baseAddress! + i * figures.count) }
        }
    } else if figures.deepest <= QueryFigures.shortList && (relevance.classSizes != nil || !needsGroundTruth) {
        shortListFigures(query: query, database: database, relevance: relevance, figures: figures, queries: queries,
                         threads: threads, into: &perQuery)
    } else {
        fullRankingFigures(query: query, database: database, relevance: relevance, figures: figures, queries: queries,
                           threads: threads, into: &perQuery)
    }
    return perQuery
}

/// The figures from each query's `figures.deepest` nearest rows (HammingSearch), queries in
/// blocks so that the neighbour lists stay small.
func shortListFigures(query: PackedCodes, database: PackedCodes, relevance: Relevance, figures: QueryFigures,
                      queries: Range<Int>, threads: Int, into perQuery: inout [Double]) {
    let k = figures.deepest, bytes = query.words * 8, block = 4096
    query.storage.withUnsafeBytes { qc in
        database.storage.withUnsafeBytes { dc in
            for lo in stride(from: queries.lowerBound, to: queries.upperBound, by: block) {
                let hi = min(lo + block, queries.upperBound)
                // The buffers of 4k candidates per query stay far inside the 64 MB per thread the kernel may take.
                let found = try! HammingSearch.nearest(queries: qc.baseAddress!.assumingMemoryBound(to: UInt8.self) + lo * bytes,
                                                       count: hi - lo, database: dc.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                       count: database.count, codeBytes: bytes, k: k, threads: threads)
                var positions: [Int64] = []
                perQuery.withUnsafeMutableBufferPointer { out in
                    for q in lo..<hi {
                        positions.removeAll(keepingCapacity: true)
                        for p in 0..<k where relevance.relevant(q, Int(found.ids[(q - lo) * k + p])) { positions.append(Int64(p)) }
                        let groundTruth = relevance.classSizes?[relevance.query.single![q]] ?? 0
                        positions.withUnsafeBufferPointer {
                            figures.write(positions: $0, groundTruth: groundTruth, into: out.baseAddress! + (q - queries.lowerBound) * figures.count)
                        }
                    }
                }
            }
        }
    }
}

/// The figures from the positions of every relevant row in each query's full ranking; each
/// thread takes a contiguous share of the queries, `RelevantRanks.group` at a time.
func fullRankingFigures(query: PackedCodes, database: PackedCodes, relevance: Relevance, figures: QueryFigures,
                        queries: Range<Int>, threads: Int, into perQuery: inout [Double]) {
    let Q = queries.count, M = database.count
    let workers = max(1, min(threads, Q))
    // Relevant rows of a query: at most its class's size (single labels) or the whole database.
    let capacity = relevance.classSizes.map { $0.values.max() ?? 0 } ?? M
    perQuery.withUnsafeMutableBufferPointer { out in
        query.storage.withUnsafeBufferPointer { qc in
            database.storage.withUnsafeBufferPointer { dc in
                DispatchQueue.concurrentPerform(iterations: workers) { worker in
                    var ranks = RelevantRanks(capacity: capacity, words: query.words, cutoffs: figures.allCutoffs)
                    let share = (Q * worker / workers)..<(Q * (worker + 1) / workers)
                    for lo in stride(from: share.lowerBound, to: share.upperBound, by: RelevantRanks.group) {
                        let n = min(RelevantRanks.group, share.upperBound - lo), q = queries.lowerBound + lo
                        ranks.place(queries: qc.baseAddress! + q * query.words, count: n, database: dc.baseAddress!, rows: M,
                                    words: query.words, relevance: relevance, firstQuery: q)
                        let c = ranks.cutoffs.count
                        ranks.apSums.withUnsafeBufferPointer { ap in
                            ranks.hits.withUnsafeBufferPointer { hits in
                                for j in 0..<n {
                                    figures.write(apSums: ap.baseAddress! + j * c, hits: hits.baseAddress! + j * c, groundTruth: Int(ranks.found[j]),
                                                  into: out.baseAddress! + (lo + j) * figures.count)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One worker's buffers for `oh_hamming_relevant_positions`: a group of queries at a time.
struct RelevantRanks {
    /// Queries that meet each chunk of the database together.
    static let group = 16
    let capacity: Int
    /// (group, capacity) each query's relevant rows' positions, ascending, and the rows.
    var positions: [Int64], rows: [Int64]
    /// (group) how many each query has.
    var found: [Int64]
    /// The kernel's histograms and notes, allocated once.
    var scratch: [UInt64]
    /// When given: the figures at these cutoffs instead of the positions, (group, cutoffs) each.
    let cutoffs: [Int64]
    var apSums: [Double], hits: [Int64]

    init(capacity: Int, words: Int, group: Int = RelevantRanks.group, cutoffs: [Int64] = []) {
        self.capacity = capacity
        self.cutoffs = cutoffs
        apSums = [Double](repeating: 0, count: max(1, group * cutoffs.count))
        hits = [Int64](repeating: 0, count: max(1, group * cutoffs.count))
        scratch = [UInt64](repeating: 0, count: oh_hamming_relevant_scratch(group, words, capacity))
        positions = [Int64](repeating: 0, count: cutoffs.isEmpty ? max(1, group * capacity) : 1)
        rows = [Int64](repeating: 0, count: cutoffs.isEmpty ? max(1, group * capacity) : 1)
        found = [Int64](repeating: 0, count: group)
    }

    /// Places the relevant rows of `count` consecutive queries (from `firstQuery` of
    /// `relevance`; or the rows `marks` picks, for one query) in their full rankings. `level`
    /// forces a slower kernel (tests).
    mutating func place(queries: UnsafePointer<UInt64>, count: Int, database: UnsafePointer<UInt64>, rows M: Int, words: Int,
                        relevance: Relevance? = nil, firstQuery q: Int = 0, marks: UnsafePointer<UInt8>? = nil, level: Int? = nil) {
        precondition(count <= found.count, "\(count) queries for a group of \(found.count)")
        let capacity = self.capacity, level = Int32(min(level ?? HammingSearch.level, HammingSearch.level))
        let cutoffs = self.cutoffs
        let status = apSums.withUnsafeMutableBufferPointer { ap in hits.withUnsafeMutableBufferPointer { hits in cutoffs.withUnsafeBufferPointer { c in
          scratch.withUnsafeMutableBufferPointer { scratch in positions.withUnsafeMutableBufferPointer { p in
            rows.withUnsafeMutableBufferPointer { r in
                found.withUnsafeMutableBufferPointer { f in
                    if let relevance, let single = relevance.database.single {
                        return single.withUnsafeBufferPointer { labels in
                            relevance.query.single!.withUnsafeBufferPointer { queryLabels in
                                oh_hamming_relevant_positions(queries, count, database, M, words, level, labels.baseAddress,
                                                              queryLabels.baseAddress! + q, nil, 0, nil, nil, capacity,
                                                              scratch.baseAddress!, p.baseAddress!, r.baseAddress!, f.baseAddress!,
                                                              cutoffs.isEmpty ? nil : c.baseAddress, c.count, ap.baseAddress!, hits.baseAddress!)
                            }
                        }
                    } else if let relevance {
                        let w = relevance.query.multiWords
                        return relevance.database.multi!.withUnsafeBufferPointer { bits in
                            relevance.query.multi!.withUnsafeBufferPointer { queryBits in
                                oh_hamming_relevant_positions(queries, count, database, M, words, level, nil, nil,
                                                              bits.baseAddress, w, queryBits.baseAddress! + q * w, nil, capacity,
                                                              scratch.baseAddress!, p.baseAddress!, r.baseAddress!, f.baseAddress!,
                                                              cutoffs.isEmpty ? nil : c.baseAddress, c.count, ap.baseAddress!, hits.baseAddress!)
                            }
                        }
                    } else {
                        return oh_hamming_relevant_positions(queries, count, database, M, words, level, nil, nil, nil, 0, nil,
                                                             marks, capacity, scratch.baseAddress!, p.baseAddress!, r.baseAddress!, f.baseAddress!,
                                                              cutoffs.isEmpty ? nil : c.baseAddress, c.count, ap.baseAddress!, hits.baseAddress!)
                    }
                }
            }
        } } } } }
        precondition(status == 0, "relevant positions: status \(status) (capacity \(capacity) for \(M) rows of \(words) words)")
    }
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
    /// Rows of each class in the database (single labels): a query's |GT|.
    let classSizes: [Int32: Int]?

    init(query: RelevanceLabels, database: RelevanceLabels) {
        self.query = query
        self.database = database
        if let labels = database.single, query.single != nil {
            var sizes: [Int32: Int] = [:]
            for l in labels { sizes[l, default: 0] += 1 }
            classSizes = sizes
        } else {
            classSizes = nil
        }
    }

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
    /// Cutoffs up to this many ranks are scored from each query's nearest rows alone.
    static let shortList = 2000

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

    /// Every cutoff R of the mAPs, then every k of the precisions.
    var allCutoffs: [Int64] { (cutoffs + precisionCutoffs).map(Int64.init) }

    /// One query's figures (this type's order) from the 0-based ranks of its relevant rows
    /// (ascending; those at ranks >= deepest may be left out) and its |GT| (relevant rows in the
    /// whole database; read only by GLDv2's cutoffs). The relevant row at rank p, j-th of them
    /// (from 1), adds its precision j / (p + 1) to every AP whose cutoff is beyond p.
    func write(positions: UnsafeBufferPointer<Int64>, groundTruth: Int, into out: UnsafeMutablePointer<Double>) {
        let all = allCutoffs
        var apSums = [Double](repeating: 0, count: all.count), hits = [Int64](repeating: 0, count: all.count)
        for i in all.indices {
            for p in positions {
                if p >= all[i] { break }
                hits[i] += 1
                apSums[i] += Double(hits[i]) / Double(p + 1)
            }
        }
        write(apSums: apSums, hits: hits, groundTruth: groundTruth, into: out)
    }

    /// One query's figures from, for each of `allCutoffs`, the relevant rows ranked above it and
    /// the sum of their precisions.
    func write(apSums: UnsafePointer<Double>, hits: UnsafePointer<Int64>, groundTruth: Int, into out: UnsafeMutablePointer<Double>) {
        for i in cutoffs.indices {
            if mapAt[i].groundTruth {
                // NaN marks a query without ground truth, left out of the mean.
                out[i] = groundTruth > 0 ? apSums[i] / Double(min(groundTruth, cutoffs[i])) : .nan
            } else {
                out[i] = hits[i] > 0 ? apSums[i] / Double(hits[i]) : 0
            }
        }
        for (j, k) in precisionCutoffs.enumerated() {
            out[cutoffs.count + j] = k > 0 ? Double(hits[cutoffs.count + j]) / Double(k) : 0
        }
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
