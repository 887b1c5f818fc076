// Hamming-ranking retrieval metrics. Dimensions: Q = queries, M = database rows, K = bits,
// W = 64-bit words per code.

import Foundation

/// Binary codes packed into 64-bit words: bit k of a code is bit (k % 64) of word k / 64, set
/// where v > 0 (sign(v) = +1). sign(0) is treated as -1.
public struct PackedCodes {
    public let count: Int
    public let bits: Int
    public let words: Int
    public var storage: [UInt64]          // (count, W)

    public init(values: UnsafePointer<Float>, count: Int, bits: Int) {
        self.count = count; self.bits = bits
        words = (bits + 63) / 64
        var storage = [UInt64](repeating: 0, count: count * words)
        for n in 0..<count {
            let row = values + n * bits
            for k in 0..<bits where row[k] > 0 { storage[n * words + k >> 6] |= 1 << UInt64(k & 63) }
        }
        self.storage = storage
    }

    public init(count: Int, bits: Int, storage: [UInt64]) {
        self.count = count; self.bits = bits; words = (bits + 63) / 64; self.storage = storage
        precondition(storage.count == count * words, "packed codes: \(storage.count) words for \(count) x \(words)")
    }
}

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
public struct MapCutoff: Equatable, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral {
    /// nil: the whole database.
    public var R: Int?
    /// false (HashNet, "1000"): AP divided by the relevant rows in the top R, 0 when there are
    /// none, and every query counts. true (GLDv2/DELG, "gt100"): AP divided by min(|GT|, R), |GT|
    /// being the relevant rows in the whole database; queries without any are left out of the mean.
    public var groundTruth: Bool

    public init(R: Int?, groundTruth: Bool = false) { self.R = R; self.groundTruth = groundTruth }
    public init(integerLiteral value: Int) { self.init(R: value) }
    public init(nilLiteral: ()) { self.init(R: nil) }

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
}

/// mAP@R and precision@k by Hamming ranking (ORTHOHASH.md section 5):
/// ```
/// d(q, x) = popcount(b_q xor b_x)                 (= (K - b_q . b_x) / 2 for +-1 codes)
/// ranking: by d, ties by database index (ascending)
/// AP@R(q) = sum_{k<=R} P@k rel_k / sum_{k<=R} rel_k      (0 if nothing relevant in the top R)
/// ```
/// relevant = shares at least one label with the query. Queries with nothing relevant in the top
/// R count as 0 in the mean. A `groundTruth` cutoff instead uses the GLDv2 metric (section 5):
/// `AP@R(q) = sum_{k<=R} P@k rel_k / min(|GT_q|, R)`, averaged over the queries with |GT_q| > 0.
///
/// No sort is needed: per query, one pass counts rows and relevant rows per distance (K + 1
/// bins); their prefix sums give where each bin starts; a second pass in database order then
/// knows every row's rank and, for a relevant row, how many relevant rows rank at or above it.
public func retrievalMetrics(query: PackedCodes, queryLabels: Labels, database: PackedCodes,
                             databaseLabels: Labels, mapAt: [MapCutoff], precisionAt: [Int],
                             threads: Int = 1) -> RetrievalResult {
    precondition(query.bits == database.bits, "query codes \(query.bits) bits, database \(database.bits)")
    let Q = query.count, M = database.count, W = query.words, K = query.bits
    let qRel = RelevanceLabels(queryLabels), dRel = RelevanceLabels(databaseLabels)
    let cutoffs = mapAt.map { min($0.R ?? M, M) }
    let pCut = precisionAt.map { min($0, M) }
    let perQueryStride = cutoffs.count + pCut.count
    var perQuery = [Double](repeating: 0, count: Q * perQueryStride)
    let workers = max(1, min(threads, Q))

    perQuery.withUnsafeMutableBufferPointer { out in
        let outBase = out.baseAddress!
        query.storage.withUnsafeBufferPointer { qc in
            database.storage.withUnsafeBufferPointer { dc in
                DispatchQueue.concurrentPerform(iterations: workers) { worker in
                    var distance = [UInt16](repeating: 0, count: M)
                    var relevant = [Bool](repeating: false, count: M)
                    var binCount = [Int](repeating: 0, count: K + 2)
                    var binRelevant = [Int](repeating: 0, count: K + 2)
                    var apSum = [Double](repeating: 0, count: cutoffs.count)
                    var relTop = [Int](repeating: 0, count: cutoffs.count)
                    var hits = [Int](repeating: 0, count: pCut.count)
                    var q = worker
                    while q < Q {
                        for i in binCount.indices { binCount[i] = 0; binRelevant[i] = 0 }
                        let qw = qc.baseAddress! + q * W
                        for x in 0..<M {
                            let dw = dc.baseAddress! + x * W
                            var d = 0
                            for w in 0..<W { d += (qw[w] ^ dw[w]).nonzeroBitCount }
                            distance[x] = UInt16(d)
                            let rel: Bool
                            if let s = qRel.single, let t = dRel.single {
                                rel = s[q] == t[x]
                            } else {
                                var any: UInt64 = 0
                                for w in 0..<qRel.multiWords { any |= qRel.multi![q * qRel.multiWords + w] & dRel.multi![x * dRel.multiWords + w] }
                                rel = any != 0
                            }
                            relevant[x] = rel
                            binCount[d + 1] += 1
                            if rel { binRelevant[d + 1] += 1 }
                        }
                        // Prefix sums: binCount[d] = rows ranked before distance d, likewise relevant.
                        for d in 1...(K + 1) { binCount[d] += binCount[d - 1]; binRelevant[d] += binRelevant[d - 1] }
                        let groundTruth = binRelevant[K + 1]
                        for i in apSum.indices { apSum[i] = 0; relTop[i] = 0 }
                        for i in hits.indices { hits[i] = 0 }
                        let maxCut = max(cutoffs.max() ?? 0, pCut.max() ?? 0)
                        for x in 0..<M {
                            let d = Int(distance[x])
                            let position = binCount[d]          // 0-based rank
                            binCount[d] += 1
                            guard relevant[x] else { continue }
                            binRelevant[d] += 1
                            if position >= maxCut { continue }
                            let relevantSoFar = Double(binRelevant[d])   // relevant rows at ranks <= position
                            for (i, R) in cutoffs.enumerated() where position < R {
                                apSum[i] += relevantSoFar / Double(position + 1)
                                relTop[i] += 1
                            }
                            for (i, k) in pCut.enumerated() where position < k { hits[i] += 1 }
                        }
                        let o = outBase + q * perQueryStride
                        for i in cutoffs.indices {
                            if mapAt[i].groundTruth {
                                // NaN marks a query without ground truth, left out of the mean.
                                o[i] = groundTruth > 0 ? apSum[i] / Double(min(groundTruth, cutoffs[i])) : .nan
                            } else {
                                o[i] = relTop[i] > 0 ? apSum[i] / Double(relTop[i]) : 0
                            }
                        }
                        for i in pCut.indices { o[cutoffs.count + i] = pCut[i] > 0 ? Double(hits[i]) / Double(pCut[i]) : 0 }
                        q += workers
                    }
                }
            }
        }
    }
    // Sum in query order so the figure does not depend on the thread count.
    var result = RetrievalResult(meanAP: Array(repeating: 0, count: cutoffs.count), precision: Array(repeating: 0, count: pCut.count))
    var counted = [Int](repeating: 0, count: cutoffs.count)
    for q in 0..<Q {
        for i in cutoffs.indices {
            let ap = perQuery[q * perQueryStride + i]
            if ap.isNaN { continue }
            result.meanAP[i] += ap
            counted[i] += 1
        }
        for i in pCut.indices { result.precision[i] += perQuery[q * perQueryStride + cutoffs.count + i] }
    }
    for i in result.meanAP.indices where counted[i] > 0 { result.meanAP[i] /= Double(counted[i]) }
    if Q > 0 {
        for i in result.precision.indices { result.precision[i] /= Double(Q) }
    }
    return result
}
