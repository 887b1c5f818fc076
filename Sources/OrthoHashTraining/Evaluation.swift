// Encoding whole splits, and the retrieval metrics of a model on its query and database splits.

import OrthoHashNumerics

extension HashModel {
    /// Codes v (BatchNorm in evaluation mode) of the rows `range` of `features`, read and encoded
    /// `batchSize` rows at a time: `body(start, rows, v)` with v (rows, K).
    public func forEachCodeChunk(of features: FeatureSource, rows range: Range<Int>,
                                 _ body: (Int, Int, UnsafePointer<Float>) throws -> Void) throws {
        let input = FloatBuffer(count: batchSize * features.dim), v = FloatBuffer(count: batchSize * config.nbit)
        try features.forEachChunk(range, chunk: batchSize, into: input) { start, n in
            encode(input.pointer, rows: n, into: v.pointer)
            try body(start, n, v.pointer)
        }
    }
}

/// An evaluation ended early because a stop was asked of some rank (`Evaluation.run`'s
/// `stopRequested`): every rank throws it together.
public struct EvaluationStopped: Error {}

public enum Evaluation {
    /// Packed codes of `features`, computed in chunks of the model's batch size. With several
    /// ranks each encodes a contiguous share and the codes are gathered on every rank. With
    /// `stopRequested`, each chunk first asks it, and the ranks agree (one sum) before the
    /// gather: EvaluationStopped when any rank was asked to stop.
    public static func encode(model: HashModel, features: FeatureSource, collective: Collective = SingleProcess(),
                              stopRequested: (() -> Bool)? = nil) throws -> PackedCodes {
        struct Asked: Error {}
        let K = model.config.nbit
        let W = (K + 63) / 64
        let rows = features.rows
        let lo = rows * collective.rank / collective.ranks, hi = rows * (collective.rank + 1) / collective.ranks
        var words: [UInt64] = []
        words.reserveCapacity((hi - lo) * W)
        var asked = false
        do {
            try model.forEachCodeChunk(of: features, rows: lo..<hi) { _, n, v in
                if let stopRequested, stopRequested() { throw Asked() }
                words += PackedCodes(values: v, count: n, bits: K).storage
            }
        } catch is Asked {
            asked = true
        }
        if stopRequested != nil {
            var votes: Double = asked ? 1 : 0
            collective.sum(&votes, count: 1)
            if votes > 0 { throw EvaluationStopped() }
        }
        if collective.ranks > 1 {
            let parts = collective.allGather(words.withUnsafeBytes { Array($0) })
            words = parts.flatMap { bytes in bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) } }
        }
        return PackedCodes(count: rows, bits: K, storage: words)
    }

    /// mAP@R and precision@k of `model` (docs/METHOD.md, "Evaluation"): every rank encodes its
    /// share of both splits and scores its share of the queries against the whole database; the
    /// per-query figures are gathered and every rank adds them in query order, so the result is
    /// the same for any number of ranks (and no rank waits while another works alone).
    /// With `stopRequested` the encoding may end early (EvaluationStopped, on every rank).
    public static func run(model: HashModel, data: DataSplits, mapAt: [MapCutoff], precisionAt: [Int],
                           collective: Collective = SingleProcess(), threads: Int = 1,
                           stopRequested: (() -> Bool)? = nil) throws -> RetrievalResult {
        let q = try encode(model: model, features: data.query.features, collective: collective, stopRequested: stopRequested)
        let db = try encode(model: model, features: data.database.features, collective: collective, stopRequested: stopRequested)
        let Q = q.count, r = collective.rank, n = collective.ranks
        var perQuery = retrievalFigures(query: q, queryLabels: data.query.labels, database: db, databaseLabels: data.database.labels,
                                        mapAt: mapAt, precisionAt: precisionAt, queries: (Q * r / n)..<(Q * (r + 1) / n), threads: threads)
        if n > 1 {
            let parts = collective.allGather(perQuery.withUnsafeBytes { Array($0) })
            perQuery = parts.flatMap { bytes in bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) } }
        }
        return meanRetrievalFigures(perQuery, mapAt: mapAt, precisionAt: precisionAt, databaseRows: db.count)
    }
}
