import XCTest
@testable import OrthoHashNumerics

/// Codes from +-1 rows (1 -> bit set).
func codes(_ rows: [[Float]]) -> PackedCodes {
    let flat = rows.flatMap { $0 }
    return flat.withUnsafeBufferPointer { PackedCodes(values: $0.baseAddress!, count: rows.count, bits: rows.first?.count ?? 0) }
}

/// Reference: sort by (distance, index) and walk the list. `groundTruth`: divide by
/// min(|GT|, R) instead of the hits in the top R (nil when the query has no ground truth).
func referenceAP(distances: [Int], relevant: [Bool], R: Int, groundTruth: Bool = false) -> Double? {
    let order = distances.indices.sorted { (distances[$0], $0) < (distances[$1], $1) }
    var hits = 0, sum = 0.0
    for (k, i) in order.prefix(R).enumerated() where relevant[i] {
        hits += 1
        sum += Double(hits) / Double(k + 1)
    }
    if groundTruth {
        let gt = relevant.filter { $0 }.count
        return gt == 0 ? nil : sum / Double(min(gt, R))
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

    /// GLDv2's mAP@R divides by min(|GT|, R) and leaves out queries without ground truth.
    /// Query 0 is the query of testHandComputedWithTies: relevant at ranks 2 and 4, |GT| = 2.
    ///   gt@all = (1/2 + 2/4) / 2 = 0.5; gt@1 = 0 / min(2, 1) = 0; gt@3 = (1/2) / min(2, 3) = 0.25
    ///   (HashNet's AP@3 would be (1/2) / 1 = 0.5).
    /// Query 1 (label 9) has no relevant row: HashNet's AP counts it as 0, the GLDv2 metric skips it.
    /// Query 2 (label 1, code 1111): ranking #3 (d2), #0 (d3), #2 (d3), #1 (d4); relevant #1 at
    ///   rank 4, |GT| = 1: gt@all = (1/4) / 1 = 0.25, gt@3 = 0, gt@1 = 0.
    func testGroundTruthDenominatorHandComputed() {
        let q = codes([[-1, -1, -1, -1], [-1, -1, -1, -1], [1, 1, 1, 1]])
        let db = codes([[1, -1, -1, -1], [-1, -1, -1, -1], [-1, 1, -1, -1], [1, 1, -1, -1]])
        let cutoffs = [MapCutoff("gtall")!, MapCutoff("gt1")!, MapCutoff("gt3")!, MapCutoff("3")!]
        let r = retrievalMetrics(query: q, queryLabels: .single([7, 9, 1]), database: db, databaseLabels: .single([7, 1, 2, 7]),
                                 mapAt: cutoffs, precisionAt: [])
        XCTAssertEqual(r.meanAP[0], (0.5 + 0.25) / 2, accuracy: 1e-12)
        XCTAssertEqual(r.meanAP[1], 0, accuracy: 1e-12)
        XCTAssertEqual(r.meanAP[2], (0.25 + 0) / 2, accuracy: 1e-12)
        // HashNet AP@3: query 0 0.5, query 1 0 (counted), query 2 0.
        XCTAssertEqual(r.meanAP[3], 0.5 / 3, accuracy: 1e-12)
        XCTAssertEqual(MapCutoff("gt100"), MapCutoff(R: 100, groundTruth: true))
        XCTAssertEqual(MapCutoff("all"), MapCutoff(R: nil, groundTruth: false))
        for bad in ["gt", "gt0", "0", "-5", "gtx", "top100"] { XCTAssertNil(MapCutoff(bad), bad) }
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
        // Query labels 0-5, database labels 0-4: queries of label 5 have no ground truth.
        let ql = (0..<Q).map { _ in Int32(rng.nextInt(below: 6)) }, dl = (0..<M).map { _ in Int32(rng.nextInt(below: 5)) }
        let cutoffs: [MapCutoff] = [nil, 10, 100, MapCutoff(R: 100, groundTruth: true), MapCutoff(R: nil, groundTruth: true)]
        let one = retrievalMetrics(query: codes(qRows), queryLabels: .single(ql), database: codes(dRows), databaseLabels: .single(dl),
                                   mapAt: cutoffs, precisionAt: [10], threads: 1)
        let two = retrievalMetrics(query: codes(qRows), queryLabels: .single(ql), database: codes(dRows), databaseLabels: .single(dl),
                                   mapAt: cutoffs, precisionAt: [10], threads: 2)
        XCTAssertEqual(one, two)
        for (i, cutoff) in cutoffs.enumerated() {
            let R = cutoff.R ?? M
            var aps: [Double] = []
            for q in 0..<Q {
                let d = dRows.map { row in zip(row, qRows[q]).filter { $0 != $1 }.count }
                if let ap = referenceAP(distances: d, relevant: dl.map { $0 == ql[q] }, R: R, groundTruth: cutoff.groundTruth) { aps.append(ap) }
            }
            XCTAssertEqual(one.meanAP[i], aps.reduce(0, +) / Double(aps.count), accuracy: 1e-12, "\(cutoff)")
        }
    }
}

/// The two ways to the figures (each query's nearest rows, or its relevant rows placed in the
/// full ranking) against each other and the sorting reference, on codes of 10 bits (every
/// distance shared by hundreds of rows, so the ties decide): single labels of few and of many
/// classes (relevant rows common and rare: the kernel's two loops), and multi-label.
final class MetricsPathTests: XCTestCase {
    func testShortListAndFullRankingAgree() {
        var rng = Xoshiro256(seed: 31)
        let K = 10, Q = 21, M = 3003, C = 7
        func randomCodes(_ n: Int) -> [[Float]] { (0..<n).map { _ in (0..<K).map { _ in rng.next() & 1 == 1 ? 1 : -1 } } }
        let qRows = randomCodes(Q), dRows = randomCodes(M)
        let ql = (0..<Q).map { _ in Int32(rng.nextInt(below: C + 1)) }, dl = (0..<M).map { _ in Int32(rng.nextInt(below: C)) }
        let qm = (0..<(Q * C)).map { _ in UInt8(rng.nextInt(below: 5) == 0 ? 1 : 0) }, dm = (0..<(M * C)).map { _ in UInt8(rng.nextInt(below: 6) == 0 ? 1 : 0) }
        let mapAt: [MapCutoff] = [10, 100, 1000, MapCutoff(R: 100, groundTruth: true), MapCutoff(R: 7, groundTruth: true)]
        let precisionAt = [1, 5, 100]
        // Many classes: relevant rows are rare, and the kernel takes its branch for sparse relevance.
        let qMany = (0..<Q).map { _ in Int32(rng.nextInt(below: 300)) }, dMany = (0..<M).map { _ in Int32(rng.nextInt(below: 300)) }
        let q = codes(qRows), db = codes(dRows)
        for (queryLabels, databaseLabels) in [(Labels.single(ql), Labels.single(dl)), (.multi(classes: C, qm), .multi(classes: C, dm)),
                                               (.single(qMany), .single(dMany))] {
            let relevance = Relevance(query: RelevanceLabels(queryLabels), database: RelevanceLabels(databaseLabels))
            let figures = QueryFigures(mapAt: mapAt, precisionAt: precisionAt, databaseRows: M)
            var short = [Double](repeating: 0, count: Q * figures.count), full = short
            shortListFigures(query: q, database: db, relevance: relevance, figures: figures, queries: 0..<Q, threads: 2, into: &short)
            fullRankingFigures(query: q, database: db, relevance: relevance, figures: figures, queries: 0..<Q, threads: 3, into: &full)
            // The full ranking adds each query's precisions in row order, the short list and the
            // reference in ranking order: sums of at most 3003 terms below 1 differ by a few ulps
            // (bound 1e-12, far above 3003 x 2^-53 and far below any real difference).
            func close(_ a: Double, _ b: Double?, _ what: String) {
                guard let b else { return XCTAssertTrue(a.isNaN, "\(what): \(a), expected no ground truth") }
                XCTAssertEqual(a, b, accuracy: 1e-12, what)
            }
            // Without class sizes the short list knows no |GT|: compare the cutoffs that do not read it.
            let compared = relevance.classSizes != nil ? Array(0..<figures.count) : [0, 1, 2, 5, 6, 7]
            for i in 0..<Q { for f in compared { close(short[i * figures.count + f], full[i * figures.count + f].isNaN ? nil : full[i * figures.count + f], "query \(i) figure \(f)") } }
            for i in 0..<Q {
                let d = dRows.map { row in zip(row, qRows[i]).filter { $0 != $1 }.count }
                let relevant = (0..<M).map { relevance.relevant(i, $0) }
                for (f, cutoff) in mapAt.enumerated() {
                    close(full[i * figures.count + f], referenceAP(distances: d, relevant: relevant, R: cutoff.R!, groundTruth: cutoff.groundTruth),
                          "query \(i) \(cutoff)")
                }
                let order = (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }
                for (f, k) in precisionAt.enumerated() {
                    XCTAssertEqual(full[i * figures.count + mapAt.count + f], Double(order.prefix(k).filter { relevant[$0] }.count) / Double(k))
                }
            }
        }
    }

    /// The pass that places the relevant rows in each full ranking (oh_hamming_relevant_positions)
    /// on every kernel this CPU runs: the same positions, rows and figures as the portable one,
    /// and the positions those of a sort of the database. Relevant rows common (the AVX-512 pass,
    /// rows 64 at a time) and rare; codes of 1 to 4 words; databases spanning several chunks and
    /// ending inside a group of 64; single labels, multi-label bits, and marks.
    func testEveryPlacementKernelAgrees() {
        for (bits, M, classes, multi) in [(13, 9001, 5, false), (64, 5000, 3, false), (100, 4099, 4, false), (150, 2001, 6, false),
                                          (256, 700, 2, false), (64, 5000, 500, false), (64, 3000, 4, true), (128, 1500, 3, true)] {
            var rng = Xoshiro256(seed: UInt64(bits * 7 + M))
            let Q = 6
            func randomCodes(_ n: Int) -> [[Float]] { (0..<n).map { _ in (0..<bits).map { _ in rng.next() & 1 == 1 ? 1 : -1 } } }
            let qRows = randomCodes(Q), dRows = randomCodes(M)
            let q = codes(qRows), db = codes(dRows), W = q.words
            let labels: (Labels, Labels)
            if multi {
                labels = (.multi(classes: classes, (0..<(Q * classes)).map { _ in UInt8(rng.nextInt(below: 3) == 0 ? 1 : 0) }),
                          .multi(classes: classes, (0..<(M * classes)).map { _ in UInt8(rng.nextInt(below: 3) == 0 ? 1 : 0) }))
            } else {
                labels = (.single((0..<Q).map { _ in Int32(rng.nextInt(below: classes)) }), .single((0..<M).map { _ in Int32(rng.nextInt(below: classes)) }))
            }
            let relevance = Relevance(query: RelevanceLabels(labels.0), database: RelevanceLabels(labels.1))
            let capacity = relevance.classSizes.map { $0.values.max() ?? 0 } ?? M
            var outputs: [[Int64]] = [], figures: [[Double]] = []
            for level in Set([0, 1, 2, HammingSearch.level]).sorted() where level <= HammingSearch.level {
                var ranks = RelevantRanks(capacity: capacity, words: W)
                var scored = RelevantRanks(capacity: capacity, words: W, cutoffs: [Int64(M), 100, 7])
                q.storage.withUnsafeBufferPointer { qc in
                    db.storage.withUnsafeBufferPointer { dc in
                        ranks.place(queries: qc.baseAddress!, count: Q, database: dc.baseAddress!, rows: M, words: W, relevance: relevance, level: level)
                        scored.place(queries: qc.baseAddress!, count: Q, database: dc.baseAddress!, rows: M, words: W, relevance: relevance, level: level)
                    }
                }
                var out: [Int64] = []
                for i in 0..<Q {
                    let n = Int(ranks.found[i])
                    out += [Int64(n)] + ranks.positions[(i * capacity)..<(i * capacity + n)] + ranks.rows[(i * capacity)..<(i * capacity + n)]
                    if level == 0 {
                        let d = dRows.map { row in zip(row, qRows[i]).filter { $0 != $1 }.count }
                        let order = (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }
                        let expected = order.indices.filter { relevance.relevant(i, order[$0]) }
                        XCTAssertEqual(ranks.positions[(i * capacity)..<(i * capacity + n)].map(Int.init), expected, "\(bits) bits, \(M) rows, query \(i)")
                        XCTAssertEqual(ranks.rows[(i * capacity)..<(i * capacity + n)].map(Int.init), expected.map { order[$0] })
                    }
                }
                outputs.append(out + scored.hits.prefix(Q * 3))
                figures.append(Array(scored.apSums.prefix(Q * 3)))
            }
            for (i, out) in outputs.enumerated().dropFirst() {
                XCTAssertEqual(out, outputs[0], "\(bits) bits, \(M) rows, \(classes) classes: kernel \(i) places rows elsewhere")
                XCTAssertEqual(figures[i].map(\.bitPattern), figures[0].map(\.bitPattern), "\(bits) bits, \(M) rows: kernel \(i)'s figures")
            }
        }
        // Marks: one query, the rows it marks relevant (every third row: common).
        let bits = 64, M = 4500
        var rng = Xoshiro256(seed: 77)
        let rowsOf = { (n: Int) in (0..<n).map { _ in (0..<bits).map { _ in Float(rng.next() & 1 == 1 ? 1 : -1) } } }
        let qRows = rowsOf(1), dRows = rowsOf(M)
        let q = codes(qRows), db = codes(dRows)
        let marks = (0..<M).map { UInt8($0 % 3 == 0 ? 1 : 0) }
        var placed: [[Int64]] = []
        for level in Set([0, HammingSearch.level]).sorted() {
            var ranks = RelevantRanks(capacity: M, words: 1, group: 1)
            q.storage.withUnsafeBufferPointer { qc in
                db.storage.withUnsafeBufferPointer { dc in
                    marks.withUnsafeBufferPointer { ranks.place(queries: qc.baseAddress!, count: 1, database: dc.baseAddress!, rows: M, words: 1, marks: $0.baseAddress!, level: level) }
                }
            }
            placed.append(Array(ranks.positions.prefix(Int(ranks.found[0]))))
        }
        let d = dRows.map { row in zip(row, qRows[0]).filter { $0 != $1 }.count }
        let order = (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }
        XCTAssertEqual(placed[0].map(Int.init), order.indices.filter { order[$0] % 3 == 0 })
        XCTAssertEqual(placed.last, placed[0])
    }

    /// The revisited protocol on random codes of 6 bits against a reference that ranks the whole
    /// database by sorting and then removes the ignored rows.
    func testRevisitedAgainstSorting() {
        var rng = Xoshiro256(seed: 41)
        let K = 6, Q = 9, M = 400
        func randomCodes(_ n: Int) -> [[Float]] { (0..<n).map { _ in (0..<K).map { _ in rng.next() & 1 == 1 ? 1 : -1 } } }
        let qRows = randomCodes(Q), dRows = randomCodes(M)
        var gt: [RevisitedQuery] = []
        for _ in 0..<Q {
            var rows = Array(0..<M)
            for j in stride(from: M - 1, to: 0, by: -1) { rows.swapAt(j, rng.nextInt(below: j + 1)) }
            gt.append(RevisitedQuery(easy: Array(rows[0..<rng.nextInt(below: 20)]), hard: Array(rows[20..<(20 + rng.nextInt(below: 20))]),
                                     junk: Array(rows[40..<(40 + rng.nextInt(below: 30))])))
        }
        let got = revisitedMeanAP(query: codes(qRows), database: codes(dRows), groundTruth: gt)
        var sums = [0.0, 0.0, 0.0], counted = [0, 0, 0]
        for i in 0..<Q {
            let d = dRows.map { row in zip(row, qRows[i]).filter { $0 != $1 }.count }
            let order = (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }
            let g = gt[i]
            for (s, (positive, ignored)) in [(Set(g.easy), Set(g.hard + g.junk)), (Set(g.easy + g.hard), Set(g.junk)), (Set(g.hard), Set(g.easy + g.junk))].enumerated() {
                let kept = order.filter { !ignored.contains($0) }
                let ranks = kept.indices.filter { positive.contains(kept[$0]) }
                guard !ranks.isEmpty else { continue }
                sums[s] += trapezoidAP(ranks: ranks); counted[s] += 1
            }
        }
        XCTAssertEqual(got.easy, sums[0] / Double(counted[0]), accuracy: 1e-12)
        XCTAssertEqual(got.medium, sums[1] / Double(counted[1]), accuracy: 1e-12)
        XCTAssertEqual(got.hard, sums[2] / Double(counted[2]), accuracy: 1e-12)
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

    /// Known answers from PyTorch 2.13: `torch.manual_seed(S)` and then the draw of the authors'
    /// code (bench/torch_codebook_check.py's `reference`), rows written as bits (1 for +1). They
    /// cover the Bernoulli draw, randn's 16-element Box-Muller blocks with a redrawn tail (7 x 9),
    /// the scalar path with its cached second value (3 x 5), and O's rejections and randperm.
    func testSeedGivesTheReferenceCodebook() throws {
        let cases: [(CodebookMethod, Int, Int, UInt64, [String])] = [
            (.B, 10, 64, 0, ["1011101010111110001100101001111011111000010111001100000101110010",
                             "0100001100000101100101110100001100110011111110101001100000101111",
                             "1110110101000001110111111001011111111010110100101101010000111000",
                             "1011101100111010001101101101100010111100000101100010010101100111",
                             "1011100001100011101101100110001011100111010110100100011101001000",
                             "0010000001110010000011001000101010001010111000011110111100000100",
                             "0000100111100110001001001011001111000100011110100011010111101010",
                             "0100001000111101000111000101101011101000011001011100100001001010",
                             "1100100101011101110011111110101100101011010111001110101100001110",
                             "1100111011000011100010001110110111110100000010011101110000011110"]),
            (.N, 3, 5, 0, ["10010", "01100", "01010"]),
            (.N, 7, 9, 2, ["010001000", "100100000", "011011101", "111110100", "000011000", "001100001", "001010011"]),
            (.O, 10, 16, 1, ["0110001010100000", "0000111011111100", "0000000001000111", "1100110110101111",
                             "1101011000111001", "1111101111110110", "1010001110011101", "1010011101101010",
                             "1110100000011010", "0011110110001000"]),
        ]
        for (method, classes, bits, seed, rows) in cases {
            let cb = try Codebook.generate(method: method, classes: classes, bits: bits, seed: seed)
            let got = (0..<classes).map { c in
                String(cb.values[(c * bits)..<((c + 1) * bits)].map { $0 > 0 ? "1" : "0" })
            }
            XCTAssertEqual(got, rows, "\(method) \(classes)x\(bits) seed \(seed)")
        }
        // torch.manual_seed keeps only the low 32 bits of the seed for mt19937.
        XCTAssertEqual(try Codebook.generate(method: .B, classes: 10, bits: 64, seed: 1 << 32),
                       try Codebook.generate(method: .B, classes: 10, bits: 64, seed: 0))
    }

    /// The generator under the codebooks is mt19937: the standard's check value is the 10,000th
    /// output for seed 5489 (C++ [rand.predef]).
    func testMersenneTwisterCheckValue() {
        var g = TorchGenerator(seed: 5489)
        for _ in 1..<10_000 { _ = g.random() }
        XCTAssertEqual(g.random(), 4_123_659_995)
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

final class RevisitedTests: XCTestCase {
    /// Query 0000 against six rows at distances 2, 0, 1, 1, 3, 4: ranking #1, #2, #3, #0, #4, #5.
    /// Ground truth easy {2}, hard {0, 5}, junk {3}. With ranks r_j in the filtered ranking,
    /// AP = sum_j ((j / r_j or 1) + (j + 1) / (r_j + 1)) / 2 / positives:
    /// - Easy (hard, junk removed): #1 #2 #4, ranks [1]: (0 + 1/2) / 2 = 0.25.
    /// - Medium (junk removed): #1 #2 #0 #4 #5, ranks [1, 2, 4]:
    ///   ((0 + 1/2) + (1/2 + 2/3) + (2/4 + 3/5)) / 2 / 3 = 0.461111...
    /// - Hard (easy, junk removed): #1 #0 #4 #5, ranks [1, 3]: ((0 + 1/2) + (1/3 + 2/4)) / 2 / 2 = 0.333...
    /// Query 1111 (ranking #5 first) has easy {5} only: AP 1 for Easy and Medium; it has no hard
    /// positive, so Hard averages over the first query alone.
    func testHandComputed() {
        let db = codes([[1, 1, -1, -1], [-1, -1, -1, -1], [1, -1, -1, -1], [-1, 1, -1, -1], [1, 1, 1, -1], [1, 1, 1, 1]])
        let q = codes([[-1, -1, -1, -1], [1, 1, 1, 1]])
        let gt = [RevisitedQuery(easy: [2], hard: [0, 5], junk: [3]), RevisitedQuery(easy: [5], hard: [], junk: [])]
        let r = revisitedMeanAP(query: q, database: db, groundTruth: gt)
        XCTAssertEqual(r.easy, (0.25 + 1) / 2, accuracy: 1e-12)
        XCTAssertEqual(r.medium, ((0.5 + (0.5 + 2.0 / 3) + (0.5 + 0.6)) / 6 + 1) / 2, accuracy: 1e-12)
        XCTAssertEqual(r.hard, (0.5 + (1.0 / 3 + 0.5)) / 4, accuracy: 1e-12)
        XCTAssertEqual(trapezoidAP(ranks: [0, 1, 2]), 1, accuracy: 1e-12)
        // Only the second query: no hard positive anywhere, so Hard is undefined (revisitop: NaN).
        let one = revisitedMeanAP(query: codes([[1, 1, 1, 1]]), database: db, groundTruth: [gt[1]])
        XCTAssertEqual(one.easy, 1)
        XCTAssertTrue(one.hard.isNaN)
    }

}
