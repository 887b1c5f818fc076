import ArgumentParser
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "mAP and precision of a run's checkpoint on the run's data.")
        @OptionGroup var source: RunCheckpointOptions
        @Option(help: "Cutoffs R of mAP@R (default: the run's).", transform: Parse.cutoffs) var mapAt: [MapCutoff]?
        @Option(help: "Cutoffs k of precision@k (default: the run's).", transform: Parse.positiveIntegers("--precision-at"))
        var precisionAt: [Int]?
        @Option(help: "Also the curves papers plot (the JSON gains them; see `map`): the list of N of the P@N curve.",
                transform: Parse.positiveIntegers("--curve-n"))
        var curveN: [Int]?
        @Option(help: "Write the curves for plotting to this CSV file (as `map --curves`): curve,x,precision,recall.") var curves: String?
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            if let curves { try source.checkOutputs([("--curves", curves)]) }
        }

        func run() throws {
            var (config, ck, path) = try source.load()
            if let mapAt { config.mapAt = mapAt }
            if let precisionAt { config.precisionAt = precisionAt }
            try config.validate()
            let threads = runtime.resolvedThreads(ranks: 1)
            BLAS.setThreads(threads)
            let data = try config.loadData(threads: threads)
            try Resume.check(ck, file: path, config: config, model: config.model(for: data),
                             runDir: source.runDir)
            let model = try Resume.model(from: ck, threads: threads)
            let result = try Evaluation.run(model: model, data: data, mapAt: config.mapAt, precisionAt: config.precisionAt, threads: threads)
            var fields: [(String, JSONValue)] = [("checkpoint", .string(path)), ("epoch", .int(ck.state.epoch))]
            for (cutoff, v) in zip(config.mapAt, result.meanAP) { fields.append(("mAP@\(cutoff.text)", .fixed(v, digits: 6))) }
            for (k, v) in zip(config.precisionAt, result.precision) { fields.append(("P@\(k)", .fixed(v, digits: 6))) }
            if curves != nil || curveN != nil {
                let q = try Evaluation.encode(model: model, features: data.query.features)
                let d = try Evaluation.encode(model: model, features: data.database.features)
                fields += try curveFields(query: q, queryLabels: data.query.labels, database: d, databaseLabels: data.database.labels,
                                          n: curveN, csv: curves, threads: threads)
            }
            print(JSONValue.object(fields).text())
        }
    }
}
