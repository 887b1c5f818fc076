import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Map: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "map",
            abstract: "Score codes that already exist: mAP and precision by Hamming ranking, from labels or from GLDv2's official solution file.",
            discussion: """
                With --query-labels and --db-labels: the metrics `eval` computes (mAP@R as --map-at says, P@k), relevant meaning \
                a class in common. With --solution, --query-ids and --db-ids: the Google Landmarks v2 retrieval protocol as its \
                official metrics.py computes it, for the Public and Private queries and both together: mAP@100, precisions, and \
                the mean and median position of the first correct image. Codes are packed as `orthohash encode` writes them; ids \
                files hold one id per line, line i naming row i of the codes.
                """)
        @Option(help: "Query codes (.npy, uint8 (Q, bytes)).") var queries: String
        @Option(help: "Database (index) codes (.npy, uint8 (M, bytes)).") var db: String
        @Option(help: "Labels of the query codes (.npy: 1-D classes or 2-D multi-hot).") var queryLabels: String?
        @Option(help: "Labels of the database codes.") var dbLabels: String?
        @Option(help: "Cutoffs R of mAP@R with labels: all, a number, or either behind gt for GLDv2's denominator.", transform: Parse.cutoffs)
        var mapAt: [MapCutoff] = [nil, 1000]
        @Option(help: "Cutoffs k of precision@k (default: 100 with labels; 1,5,10,50,100 with --solution).",
                transform: Parse.positiveIntegers("--precision-at"))
        var precisionAt: [Int]?
        @Option(help: "GLDv2 retrieval solution (CSV: id,images,Usage).") var solution: String?
        @Option(help: "Ids of the query codes' rows (one per line).") var queryIds: String?
        @Option(help: "Ids of the database codes' rows (one per line).") var dbIds: String?
        @Option(help: "Predictions per query that the GLDv2 metrics read (the official 100).") var maxPredictions = 100
        @Option(help: "Also write the figures (JSON) to this file.") var out: String?
        @Option(help: "With labels: the list of N of the P@N curve (default: 1,10,20,50,100,200,500,1000, up to the database's size).",
                transform: Parse.positiveIntegers("--curve-n"))
        var curveN: [Int]?
        @Option(help: "With labels: write the curves for plotting to this CSV file: curve,x,precision,recall (hamming_radius rows for r = 0..K, top_n rows for each N).")
        var curves: String?
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            let labels = queryLabels != nil || dbLabels != nil, official = solution != nil || queryIds != nil || dbIds != nil
            if labels && official { throw ValidationError("--query-labels/--db-labels and --solution/--query-ids/--db-ids are two ways to score; give one") }
            if labels && (queryLabels == nil || dbLabels == nil) { throw ValidationError("labels need both --query-labels and --db-labels") }
            if official && (solution == nil || queryIds == nil || dbIds == nil) {
                throw ValidationError("the GLDv2 protocol needs --solution, --query-ids and --db-ids")
            }
            if !labels && !official { throw ValidationError("give --query-labels and --db-labels, or --solution, --query-ids and --db-ids") }
            guard maxPredictions >= 1 else { throw ValidationError("--max-predictions must be at least 1, got \(maxPredictions)") }
            if official, let precisionAt, let k = precisionAt.first(where: { $0 > maxPredictions }) {
                throw ValidationError("--precision-at \(k) is beyond --max-predictions \(maxPredictions)")
            }
            if mapAt.isEmpty { throw ValidationError("--map-at needs at least one cutoff") }
            if Set(mapAt).count != mapAt.count { throw ValidationError("--map-at lists a cutoff twice: \(mapAt.map(\.text).joined(separator: ","))") }
            if let precisionAt, Set(precisionAt).count != precisionAt.count {
                throw ValidationError("--precision-at lists a cutoff twice: \(precisionAt.map(String.init).joined(separator: ","))")
            }
            if official && (curves != nil || curveN != nil) { throw ValidationError("--curves and --curve-n belong to scoring with labels") }
            let outputs = [("--out", out), ("--curves", curves)].compactMap { flag, path in path.map { (flag: flag, path: $0) } }
            let inputs = [("--db", db), ("--queries", queries), ("--query-labels", queryLabels), ("--db-labels", dbLabels),
                          ("--solution", solution), ("--query-ids", queryIds), ("--db-ids", dbIds)]
            try OutputFile.check(outputs: outputs, inputs: inputs.compactMap { flag, path in path.map { ("the input of \(flag)", $0) } })
        }

        func run() throws {
            let database = try PackedCodeFile(db), query = try PackedCodeFile(queries)
            guard query.bytes == database.bytes else {
                throw OrthoHashError("query codes are \(query.bytes) bytes wide but the database's are \(database.bytes)", file: queries)
            }
            let threads = runtime.resolvedThreads(ranks: 1)
            let result: JSONValue
            let start = DispatchTime.now().uptimeNanoseconds
            var scored = query.rows
            if let solution, let queryIds, let dbIds {
                (result, scored) = try official(query: query, database: database, solution: solution, queryIds: queryIds, dbIds: dbIds, threads: threads)
            } else {
                result = try byLabels(query: query, database: database, threads: threads)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            print(result.text())
            if let out { try AtomicFile.write(Data((result.text() + "\n").utf8), to: out) }
            standardError(String(format: "scored %ld queries against %ld codes of %ld bits: %.3f s (%ld thread%@)", scored, database.rows,
                                 database.bytes * 8, seconds, threads, threads > 1 ? "s" : ""))
        }

        func byLabels(query: PackedCodeFile, database: PackedCodeFile, threads: Int) throws -> JSONValue {
            let ql = try Labels.load(path: queryLabels!), dl = try Labels.load(path: dbLabels!)
            guard ql.rows == query.rows else { throw OrthoHashError("\(ql.rows) labels for \(query.rows) query codes", file: queryLabels!) }
            guard dl.rows == database.rows else { throw OrthoHashError("\(dl.rows) labels for \(database.rows) database codes", file: dbLabels!) }
            switch (ql, dl) {
            case (.single, .single): break
            case (.multi(let a, _), .multi(let b, _)) where a == b: break
            default:
                throw OrthoHashError("query and database labels are of different kinds (class indices, or multi-hot of as many classes)", file: dbLabels!)
            }
            let precisionAt = self.precisionAt ?? [100]
            let q = query.packed(), d = database.packed()
            let r = retrievalMetrics(query: q, queryLabels: ql, database: d, databaseLabels: dl, mapAt: mapAt, precisionAt: precisionAt, threads: threads)
            var fields: [(String, JSONValue)] = [("queries", .int(query.rows)), ("database", .int(database.rows))]
            for (cutoff, v) in zip(mapAt, r.meanAP) { fields.append(("mAP@\(cutoff.text)", .fixed(v, digits: 6))) }
            for (k, v) in zip(precisionAt, r.precision) { fields.append(("P@\(k)", .fixed(v, digits: 6))) }
            fields += try curveFields(query: q, queryLabels: ql, database: d, databaseLabels: dl, n: curveN, csv: curves, threads: threads)
            return .object(fields)
        }

        /// GLDv2: the solution's queries (those with codes) searched for their nearest
        /// --max-predictions index rows, named by the ids files, then scored by metrics.py's
        /// rules (GLDv2Protocol).
        func official(query: PackedCodeFile, database: PackedCodeFile, solution path: String, queryIds: String, dbIds: String,
                      threads: Int) throws -> (JSONValue, Int) {
            let solution = try GLDv2Solution(path: path)
            let precisionAt = self.precisionAt ?? [1, 5, 10, 50, 100].filter { $0 <= maxPredictions }
            let s = try GLDv2Protocol.score(query: query, database: database, solution: solution,
                                            queryIds: try readIDs(queryIds, rows: query.rows), indexIds: try readIDs(dbIds, rows: database.rows),
                                            idsFile: queryIds, maxPredictions: maxPredictions, precisionAt: precisionAt, threads: threads)
            func json(_ f: GLDv2Figures) -> JSONValue {
                var fields: [(String, JSONValue)] = [("queries", .int(f.queries)), ("mAP@\(maxPredictions)", .fixed(f.meanAP, digits: 6))]
                for (k, v) in zip(precisionAt, f.precision) { fields.append(("P@\(k)", .fixed(v, digits: 6))) }
                fields.append(("mean_position", .fixed(f.meanPosition, digits: 3)))
                fields.append(("median_position", .fixed(f.medianPosition, digits: 1)))
                return .object(fields)
            }
            if s.queriesWithoutCodes > 0 {
                standardError("warning: \(s.queriesWithoutCodes) of the solution's \(solution.queries.count) queries have no codes (not in \(queryIds)); they score 0")
            }
            return (.object([("Public", json(s.publicQueries)), ("Private", json(s.privateQueries)), ("All", json(s.all)),
                             ("ignored", .int(s.ignored)), ("queries_without_codes", .int(s.queriesWithoutCodes))]), s.scored)
        }
    }
}

/// What papers plot beside mAP (Curves.swift says how each counts): precision within Hamming
/// radius 2, the PR curve over every radius and the P@N curve for `n` (default 1..1000, those the
/// database holds), as JSON fields; with `csv`, the curves written there for plotting
/// (scripts/plots.py): curve,x,precision,recall.
func curveFields(query q: PackedCodes, queryLabels ql: Labels, database d: PackedCodes, databaseLabels dl: Labels, n: [Int]?,
                 csv: String?, threads: Int) throws -> [(String, JSONValue)] {
    let pr = hammingCurves(query: q, queryLabels: ql, database: d, databaseLabels: dl, threads: threads)
    let ns = (n ?? [1, 10, 20, 50, 100, 200, 500, 1000]).filter { $0 <= d.count }
    let pAtN = ns.isEmpty ? [] : retrievalMetrics(query: q, queryLabels: ql, database: d, databaseLabels: dl, mapAt: [nil],
                                                  precisionAt: ns, threads: threads).precision
    let numbers = { (values: [Double]) in JSONValue.array(values.map { .fixed($0, digits: 6) }) }
    if let csv {
        var text = "curve,x,precision,recall\n"
        for (i, radius) in pr.radius.enumerated() {
            text += "hamming_radius,\(radius),\(String(format: "%.6f", pr.precision[i])),\(String(format: "%.6f", pr.recall[i]))\n"
        }
        for (n, p) in zip(ns, pAtN) { text += "top_n,\(n),\(String(format: "%.6f", p)),\n" }
        try AtomicFile.write(Data(text.utf8), to: csv)
    }
    return [("precision_within_radius_2", .fixed(pr.precisionWithinRadius2, digits: 6)),
            ("queries_with_nothing_within_radius_2", .int(pr.emptyQueries[min(2, pr.emptyQueries.count - 1)])),
            ("pr_curve", .object([("radius", .array(pr.radius.map { .int($0) })), ("precision", numbers(pr.precision)),
                                  ("recall", numbers(pr.recall)), ("queries_with_nothing_within", .array(pr.emptyQueries.map { .int($0) }))])),
            ("p_at_n", .object([("n", .array(ns.map { .int($0) })), ("precision", numbers(pAtN))]))]
}
