import ArgumentParser
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Revisited: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "mAP under the revisited Oxford/Paris protocol (Easy, Medium, Hard) of a run's model on other data.",
            discussion: "Ground truth: a JSON list, one {\"easy\": [...], \"hard\": [...], \"junk\": [...]} object of 0-based database rows per query (bench/revisitop_gnd_to_json.py converts revisitop's gnd_*.pkl).")
        @OptionGroup var source: RunCheckpointOptions
        @Option(help: "Query features (.npy).") var queryFeatures: String
        @Option(help: "Database features (.npy).") var dbFeatures: String
        @Option(help: "Ground truth (.json).") var groundTruth: String
        @Flag(help: "Re-estimate BatchNorm's running mean on the database first (the paper does for a GLDv2 head on ROxf/RPar).")
        var bnMeanFromDb = false
        @Flag(help: "With --bn-mean-from-db: also set BatchNorm's gamma to 1 and beta to 0.") var bnIdentityAffine = false
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            if bnIdentityAffine && !bnMeanFromDb { throw ValidationError("--bn-identity-affine needs --bn-mean-from-db") }
        }

        func run() throws {
            let (_, ck, path) = try source.load()
            let threads = runtime.resolvedThreads(ranks: 1)
            BLAS.setThreads(threads)
            let model = try Resume.model(from: ck, threads: threads)
            let q = try openFeatures(queryFeatures, for: model, checkpoint: path)
            let db = try openFeatures(dbFeatures, for: model, checkpoint: path)
            let gt = try loadRevisitedGroundTruth(groundTruth, queries: q.rows, databaseRows: db.rows)
            if bnMeanFromDb { try reestimateBatchNormMean(model, from: db, identityAffine: bnIdentityAffine) }
            let r = revisitedMeanAP(query: try Evaluation.encode(model: model, features: q),
                                    database: try Evaluation.encode(model: model, features: db), groundTruth: gt)
            print(JSONValue.object([("easy", .fixed(r.easy, digits: 6)), ("medium", .fixed(r.medium, digits: 6)),
                                    ("hard", .fixed(r.hard, digits: 6))]).text())
        }
    }
}
