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

public enum Evaluation {
    /// Packed codes of `features`, computed in chunks of the model's batch size. With several
    /// ranks each encodes a contiguous share and the codes are gathered on every rank.
    public static func encode(model: HashModel, features: FeatureSource, collective: Collective = SingleProcess()) throws -> PackedCodes {
        let K = model.config.nbit
        let W = (K + 63) / 64
        let rows = features.rows
        let lo = rows * collective.rank / collective.ranks, hi = rows * (collective.rank + 1) / collective.ranks
        var words: [UInt64] = []
        words.reserveCapacity((hi - lo) * W)
        try model.forEachCodeChunk(of: features, rows: lo..<hi) { _, n, v in
            words += PackedCodes(values: v, count: n, bits: K).storage
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
    public static func run(model: HashModel, data: DataSplits, mapAt: [MapCutoff], precisionAt: [Int],
                           collective: Collective = SingleProcess(), threads: Int = 1) throws -> RetrievalResult {
        let q = try encode(model: model, features: data.query.features, collective: collective)
        let db = try encode(model: model, features: data.database.features, collective: collective)
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
