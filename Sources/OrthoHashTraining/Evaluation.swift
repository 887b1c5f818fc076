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
    /// share of both splits; rank 0 ranks and scores, and sends the figures to the others.
    public static func run(model: HashModel, data: DataSplits, mapAt: [MapCutoff], precisionAt: [Int],
                           collective: Collective = SingleProcess(), threads: Int = 1) throws -> RetrievalResult {
        let q = try encode(model: model, features: data.query.features, collective: collective)
        let db = try encode(model: model, features: data.database.features, collective: collective)
        var figures = [Double](repeating: 0, count: mapAt.count + precisionAt.count)
        if collective.isCoordinator {
            let r = retrievalMetrics(query: q, queryLabels: data.query.labels, database: db, databaseLabels: data.database.labels,
                                     mapAt: mapAt, precisionAt: precisionAt, threads: threads)
            figures = r.meanAP + r.precision
        }
        if collective.ranks > 1 {
            let bytes = collective.broadcast(figures.withUnsafeBytes { Array($0) }, root: 0)
            figures = bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        }
        return RetrievalResult(meanAP: Array(figures[..<mapAt.count]), precision: Array(figures[mapAt.count...]))
    }
}
