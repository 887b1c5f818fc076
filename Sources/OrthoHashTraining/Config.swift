import Foundation
import OrthoHashFormats
import OrthoHashNumerics

public enum DatasetKind: String, Codable, CaseIterable, Sendable {
    case fashionMNIST = "fashion-mnist"
    case npy
}

/// Everything that defines a training run. Saved as `config.json` in the run directory and in
/// every checkpoint. Defaults are the paper's reference code's (docs/METHOD.md).
public struct TrainConfig: Codable, Equatable, Sendable {
    // Data
    public var dataset: DatasetKind = .fashionMNIST
    public var dataDir: String = FashionMNIST.defaultDirectory
    public var trainFeatures: String? = nil
    public var trainLabels: String? = nil
    public var queryFeatures: String? = nil
    public var queryLabels: String? = nil
    public var dbFeatures: String? = nil
    public var dbLabels: String? = nil
    public var classes: Int? = nil
    /// Use only the first rows of a split (quick runs, tests).
    public var trainLimit: Int? = nil
    public var queryLimit: Int? = nil
    public var dbLimit: Int? = nil
    // Model
    public var backbone: BackboneKind = .linear
    public var hidden: [Int] = [1024, 1024]
    public var nbit: Int = 64
    public var loss = LossConfig()
    public var codebook: CodebookMethod = .B
    public var codebookFile: String? = nil
    // Optimisation
    public var optimizer = OptimizerConfig()
    public var epochs: Int = 100
    /// The global batch: split evenly over the ranks.
    public var batchSize: Int = 256
    public var seed: UInt64 = 0
    // Evaluation and checkpoints (may change on resume)
    public var evalEvery: Int = 0
    /// Cutoffs R of mAP@R: "all" or a number; "gt" in front for GLDv2's denominator.
    public var mapAt: [MapCutoff] = [nil, 1000]
    public var precisionAt: [Int] = [100]
    public var checkpointEvery: Int = 1
    public var checkpointEverySteps: Int = 0
    public var keepCheckpoints: Int = 3

    public init() {}

    /// The part that must not change when a run is resumed.
    public var fixedPart: TrainConfig {
        var c = self
        c.evalEvery = 0; c.mapAt = []; c.precisionAt = []
        c.checkpointEvery = 0; c.checkpointEverySteps = 0; c.keepCheckpoints = 0
        return c
    }

    /// Checks the flags on their own (the data is checked when it is loaded).
    public func validate() throws {
        guard nbit >= 1 else { throw OrthoHashError("--nbit must be at least 1, got \(nbit)") }
        guard batchSize >= 2 else { throw OrthoHashError("--batch-size must be at least 2 (BatchNorm needs two rows), got \(batchSize)") }
        guard epochs >= 1 else { throw OrthoHashError("--epochs must be at least 1, got \(epochs)") }
        if backbone == .mlp {
            guard !hidden.isEmpty, hidden.allSatisfy({ $0 >= 1 }) else {
                throw OrthoHashError("--hidden must list positive widths for the mlp backbone, got \(hidden)")
            }
        }
        guard precisionAt.allSatisfy({ $0 >= 1 }) else { throw OrthoHashError("--precision-at takes positive numbers") }
        guard optimizer.lr > 0, optimizer.lr.isFinite else { throw OrthoHashError("--lr must be positive, got \(optimizer.lr)") }
        guard loss.scale > 0 else { throw OrthoHashError("--scale must be positive, got \(loss.scale)") }
        if dataset == .npy {
            for (flag, value) in [("--train-features", trainFeatures), ("--train-labels", trainLabels),
                                  ("--query-features", queryFeatures), ("--query-labels", queryLabels),
                                  ("--db-features", dbFeatures), ("--db-labels", dbLabels)] where value == nil {
                throw OrthoHashError("--dataset npy needs \(flag)")
            }
        }
    }

    /// Loads the three splits this configuration names.
    public func loadData() throws -> DataSplits {
        switch dataset {
        case .fashionMNIST:
            return try FashionMNIST.load(directory: dataDir, trainLimit: trainLimit, queryLimit: queryLimit, databaseLimit: dbLimit)
        case .npy:
            func split(_ x: String?, _ y: String?, _ limit: Int?) throws -> Split {
                Split(features: try NPYFeatures(path: x!, limit: limit), labels: try Labels.load(path: y!, limit: limit))
            }
            return try DataSplits(train: split(trainFeatures, trainLabels, trainLimit),
                                  query: split(queryFeatures, queryLabels, queryLimit),
                                  database: split(dbFeatures, dbLabels, dbLimit),
                                  classes: classes, labelFiles: [trainLabels!, queryLabels!, dbLabels!])
        }
    }
}
