// The Google Landmarks v2 retrieval protocol as DELF's metrics.py scores it, on codes that exist:
// each solution query with codes gets its `maxPredictions` nearest index rows by Hamming
// distance (ties by row), named by the ids files, and the Public, Private and all queries are
// scored (gldv2Figures). `orthohash map --solution` prints what this returns.

import OrthoHashFormats
import OrthoHashNumerics

public struct GLDv2Scores {
    public var publicQueries: GLDv2Figures, privateQueries: GLDv2Figures, all: GLDv2Figures
    /// Solution rows marked Ignored.
    public var ignored: Int
    /// Solution queries with no row in the query ids: they score 0, as a query missing from a
    /// submission does.
    public var queriesWithoutCodes: Int
    /// Queries searched.
    public var scored: Int
}

public enum GLDv2Protocol {
    /// `queryIds` and `indexIds` name the rows of `query` and `database` (line i, row i; read by
    /// `readIDs`); `idsFile` names the query ids' file for messages.
    public static func score(query: PackedCodeFile, database: PackedCodeFile, solution: GLDv2Solution, queryIds: [String],
                             indexIds: [String], idsFile: String, maxPredictions: Int, precisionAt: [Int], threads: Int) throws -> GLDv2Scores {
        var queryRow: [String: Int] = [:]
        for (row, id) in queryIds.enumerated() {
            guard queryRow.updateValue(row, forKey: id) == nil else { throw OrthoHashError("query id \(id) names two rows", file: idsFile) }
        }
        // Index images as integers; an id on two rows is one image (as metrics.py sees it).
        var image: [String: Int] = [:]
        func number(_ id: String) -> Int {
            if let n = image[id] { return n }
            image[id] = image.count
            return image.count - 1
        }
        let rowImage = indexIds.map(number)
        let groundTruth = solution.queries.map { $0.images.map(number) }
        let rows = solution.queries.compactMap { queryRow[$0.id] }
        let k = min(maxPredictions, database.rows)
        var gathered = [UInt8](repeating: 0, count: max(1, rows.count * query.bytes))
        for (i, row) in rows.enumerated() {
            for b in 0..<query.bytes { gathered[i * query.bytes + b] = query.codes[row * query.bytes + b] }
        }
        let found = try gathered.withUnsafeBufferPointer {
            try HammingSearch.nearest(queries: $0.baseAddress!, count: rows.count, database: database.codes, count: database.rows,
                                      codeBytes: database.bytes, k: k, threads: threads)
        }
        var predictions: [[Int]?] = [], next = 0
        for q in solution.queries {
            if queryRow[q.id] != nil {
                predictions.append((0..<k).map { rowImage[Int(found.ids[next * k + $0])] })
                next += 1
            } else {
                predictions.append(nil)      // scores 0, as a query missing from a submission does
            }
        }
        func figures(_ keep: (GLDv2Solution.Query) -> Bool) -> GLDv2Figures {
            let picked = solution.queries.indices.filter { keep(solution.queries[$0]) }
            return gldv2Figures(predictions: picked.map { predictions[$0] }, solution: picked.map { groundTruth[$0] },
                                maxPredictions: maxPredictions, precisionAt: precisionAt)
        }
        return GLDv2Scores(publicQueries: figures { $0.isPublic }, privateQueries: figures { !$0.isPublic }, all: figures { _ in true },
                           ignored: solution.ignored, queriesWithoutCodes: solution.queries.count - rows.count, scored: rows.count)
    }
}
