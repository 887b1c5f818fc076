import Foundation
import OrthoHashFormats
import OrthoHashNumerics

public enum DatasetKind: String, Codable, CaseIterable, Sendable {
    case fashionMNIST = "fashion-mnist"
    case npy
    /// Images made up from the seed (GeneratedImages): benchmarks and smoke tests of the image backbones.
    case generated
    /// JPEG and PNG images named by list files (Images.swift).
    case images
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
    /// `--dataset generated`: the images' side (default 224) and channels (default 3); `images`:
    /// the side of the crops the backbone takes (default 224).
    public var imageSize: Int? = nil
    public var imageChannels: Int? = nil
    /// `--dataset images`: the list files, the directory their relative paths start from
    /// (default: each list's own), and the test transform's resize of the shorter side (default
    /// the image size; 256 for NUS-WIDE's 256 -> 224).
    public var trainList: String? = nil
    public var queryList: String? = nil
    public var dbList: String? = nil
    public var imageRoot: String? = nil
    public var testResize: Int? = nil
    /// The training crop (default RandomResizedCrop; resize-random-crop for NUS-WIDE and MS-COCO).
    public var trainTransform: TrainTransform? = nil
    // Model
    public var backbone: BackboneKind = .linear
    public var hidden: [Int] = [1024, 1024]
    public var nbit: Int = 64
    public var loss = LossConfig()
    public var codebook: CodebookMethod = .B
    public var codebookFile: String? = nil
    /// A safetensors file of the backbone's weights (torchvision's names) to start from.
    public var pretrained: String? = nil
    // Optimisation
    public var optimizer = OptimizerConfig()
    public var epochs: Int = 100
    /// The global batch: split evenly over the ranks.
    public var batchSize: Int = 256
    public var seed: UInt64 = 0
    // How the step sums (the order of float32 sums, or bf16 rounding): stored so that a resumed
    // run continues as it began. nil in runs stored before they were: the defaults of the time
    // (fused, the CPU's products, overlap off, float32), which `stepPath` resolves.
    public var head: HeadPath? = .fused
    public var headProducts: HeadProducts? = HeadProducts.available
    public var gradientOverlap: GradientOverlap? = .auto
    public var gradientSum: GradientPrecision? = .float32
    /// The size of the buckets of the gradient sums with overlap (GradientBuckets), in MB; nil in
    /// runs stored before buckets had a size: one bucket per layer.
    public var gradientBucketMB: Double? = TrainConfig.defaultGradientBucketMB
    /// Chosen by measurement (docs/SCALING.md, AlexNet across hosts): 4 MB buckets sent without
    /// Open MPI's rendezvous (the shim's TCP eager limit) run at a 1 Gb/s link's rate, 25 MB
    /// ones (PyTorch DDP's) at half of it; at 10 Gb/s they are at least as fast.
    public static let defaultGradientBucketMB = 4.0
    /// The buckets' size in bytes (0: one per layer).
    public var gradientBucketBytes: Int { gradientBucketMB.map { Int(($0 * 1_048_576).rounded()) } ?? 0 }
    /// The step's path with the defaults of the time for runs stored before it was.
    public var stepPath: (head: HeadPath, products: HeadProducts, overlap: GradientOverlap, gradientSum: GradientPrecision) {
        (head ?? .fused, headProducts ?? HeadProducts.available, gradientOverlap ?? .off, gradientSum ?? .float32)
    }
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

    /// Checks the settings on their own (the data is checked when it is loaded; the memory the
    /// model needs once the data says its size, `checkSize`). Every rule names its flag.
    public func validate() throws {
        func need(_ ok: Bool, _ message: @autoclosure () -> String) throws { if !ok { throw OrthoHashError(message()) } }
        func finite(_ flag: String, _ v: Float) throws { try need(v.isFinite, "\(flag) must be a finite number, got \(v)") }
        try need(nbit >= 1, "--nbit must be at least 1, got \(nbit)")
        // Hamming distances are kept as 16-bit counts (the ranking's counting sort).
        try need(nbit <= 65_535, "--nbit must be at most 65535, got \(nbit)")
        try need(batchSize >= 2, "--batch-size must be at least 2 (BatchNorm needs two rows), got \(batchSize)")
        try need(epochs >= 1, "--epochs must be at least 1, got \(epochs)")
        if backbone == .mlp {
            try need(!hidden.isEmpty && hidden.allSatisfy { $0 >= 1 }, "--hidden must list positive widths for the mlp backbone, got \(hidden)")
        }
        try need(!mapAt.isEmpty, "--map-at needs at least one cutoff")
        try need(Set(mapAt).count == mapAt.count, "--map-at lists a cutoff twice: \(mapAt.map(\.text).joined(separator: ","))")
        try need(precisionAt.allSatisfy { $0 >= 1 }, "--precision-at takes positive numbers")
        try need(Set(precisionAt).count == precisionAt.count, "--precision-at lists a cutoff twice: \(precisionAt.map(String.init).joined(separator: ","))")
        for (flag, value) in [("--train-limit", trainLimit), ("--query-limit", queryLimit), ("--db-limit", dbLimit), ("--classes", classes),
                              ("--image-size", imageSize), ("--image-channels", imageChannels), ("--test-resize", testResize)] {
            if let value { try need(value >= 1, "\(flag) must be at least 1, got \(value)") }
        }
        // Loss.
        for (flag, v) in [("--scale", loss.scale), ("--margin", loss.margin), ("--ce", loss.ce), ("--quan", loss.quan)] { try finite(flag, v) }
        try need(loss.scale > 0, "--scale must be positive, got \(loss.scale)")
        try need(loss.margin >= 0, "--margin must be at least 0, got \(loss.margin)")
        // cos(theta + m) falls as the angle theta grows only while theta + m <= pi; a target's
        // angle is below pi/2 once it is trained, so m up to pi/2 keeps the margin a margin.
        try need(loss.marginType != .arc || loss.margin <= Float.pi / 2,
                 "--margin must be at most pi/2 (1.5708) for --margin-type arc, or cos(theta + m) stops falling with the angle; got \(loss.margin)")
        try need(loss.ce >= 0 && loss.quan >= 0, "--ce and --quan must be at least 0, got \(loss.ce) and \(loss.quan)")
        try need(loss.ce > 0 || loss.quan > 0, "--ce and --quan are both 0: there is nothing to train")
        // Optimisation.
        let o = optimizer
        for (flag, v) in [("--lr", o.lr), ("--backbone-lr-scale", o.backboneLRScale), ("--weight-decay", o.weightDecay),
                          ("--betas", o.beta1), ("--betas", o.beta2), ("--adam-eps", o.eps), ("--momentum", o.momentum), ("--gamma", o.gamma)] {
            try finite(flag, v)
        }
        try need(o.lr > 0, "--lr must be positive, got \(o.lr)")
        try need(o.backboneLRScale >= 0, "--backbone-lr-scale must be at least 0, got \(o.backboneLRScale)")
        try need(o.weightDecay >= 0, "--weight-decay must be at least 0, got \(o.weightDecay)")
        try need((0..<1).contains(o.beta1) && (0..<1).contains(o.beta2), "--betas must both lie in [0, 1), got \(o.beta1),\(o.beta2)")
        try need(o.eps > 0, "--adam-eps must be positive, got \(o.eps)")
        try need((0..<1).contains(o.momentum), "--momentum must lie in [0, 1), got \(o.momentum)")
        try need(o.gamma > 0, "--gamma must be positive, got \(o.gamma)")
        if let step = o.stepSize { try need(step >= 1, "--step-size must be at least 1 epoch, got \(step)") }
        try need(o.milestones.allSatisfy { $0 >= 1 }, "--milestones must be positive epochs, got \(o.milestones)")
        try need(zip(o.milestones, o.milestones.dropFirst()).allSatisfy { $0 < $1 }, "--milestones must rise, each once, got \(o.milestones)")
        try need(o.scheduler != .multistep || !o.milestones.isEmpty, "--scheduler multistep needs --milestones")
        // Evaluation and checkpoints.
        try need(evalEvery >= 0, "--eval-every must be at least 0 (0: only at the end), got \(evalEvery)")
        try need(checkpointEvery >= 0, "--checkpoint-every must be at least 0 (0: only at the end), got \(checkpointEvery)")
        try need(checkpointEverySteps >= 0, "--checkpoint-every-steps must be at least 0 (0: off), got \(checkpointEverySteps)")
        try need(keepCheckpoints >= 1, "--keep-checkpoints must be at least 1, got \(keepCheckpoints)")
        if dataset == .images {
            for (flag, value) in [("--train-list", trainList), ("--query-list", queryList), ("--db-list", dbList)] where value == nil {
                throw OrthoHashError("--dataset images needs \(flag)")
            }
            if let testResize { try need(testResize >= imageSize ?? 224, "--test-resize (\(testResize)) must be at least the image size (\(imageSize ?? 224)), the centre crop's side") }
        }
        if dataset == .npy {
            for (flag, value) in [("--train-features", trainFeatures), ("--train-labels", trainLabels),
                                  ("--query-features", queryFeatures), ("--query-labels", queryLabels),
                                  ("--db-features", dbFeatures), ("--db-labels", dbLabels)] where value == nil {
                throw OrthoHashError("--dataset npy needs \(flag)")
            }
        }
    }

    /// The model these settings train on `data`.
    public func model(for data: DataSplits) -> ModelConfig {
        ModelConfig(inputDim: data.inputDim, backbone: backbone, hidden: backbone == .mlp ? hidden : [], nbit: nbit,
                    classes: data.classes, inputShape: backbone.takesImages ? data.imageShape : nil)
    }

    /// Checks that `data` suits the backbone: images for the convolutional ones, of the channels
    /// and at least the size their layers take.
    public func checkBackbone(for data: DataSplits) throws {
        guard backbone.takesImages else { return }
        guard let image = data.imageShape else {
            throw OrthoHashError("--backbone \(backbone.rawValue) takes images, and the \(dataset.rawValue) data are feature vectors", file: data.train.features.name,
                                 hint: "train on Fashion-MNIST (--dataset fashion-mnist) with --backbone cnn, or use --backbone linear or mlp")
        }
        if let channels = backbone.imageChannels, channels != image.channels {
            throw OrthoHashError("--backbone \(backbone.rawValue) takes \(channels)-channel images, the data's have \(image.channels)",
                                 file: data.train.features.name, hint: image.channels == 1 ? "--backbone cnn takes grey images" : nil)
        }
        let side = backbone.smallestImage
        guard image.height >= side && image.width >= side else {
            throw OrthoHashError("--backbone \(backbone.rawValue) needs images of at least \(side)x\(side) pixels, got \(image.height)x\(image.width)",
                                 file: data.train.features.name)
        }
    }

    /// Loads the three splits this configuration names; images are decoded on `threads` threads.
    public func loadData(threads: Int = 1) throws -> DataSplits {
        switch dataset {
        case .images:
            let size = imageSize ?? 224
            func split(_ list: String?, _ limit: Int?, _ kind: ImageTransform.Kind) throws -> Split {
                let full = try ImageList.read(list!, root: imageRoot)
                let n = min(limit ?? full.images.count, full.images.count)
                let l = ImageList(path: full.path, images: Array(full.images.prefix(n)), labels: full.labels.prefix(n))
                var transform = ImageTransform(kind: kind, size: size, testResize: testResize ?? size, seed: seed)
                transform.training = trainTransform ?? .randomResizedCrop
                return Split(features: ImageFeatures(list: l, transform: transform, threads: threads), labels: l.labels)
            }
            var splits = try DataSplits(train: split(trainList, trainLimit, .train), query: split(queryList, queryLimit, .test),
                                        database: split(dbList, dbLimit, .test), classes: classes, labelFiles: [trainList!, queryList!, dbList!])
            splits.imageShape = SampleShape(channels: 3, height: size, width: size)
            return splits
        case .fashionMNIST:
            return try FashionMNIST.load(directory: dataDir, trainLimit: trainLimit, queryLimit: queryLimit, databaseLimit: dbLimit)
        case .generated:
            let shape = SampleShape(channels: imageChannels ?? 3, height: imageSize ?? 224, width: imageSize ?? 224)
            return try GeneratedImages.splits(shape: shape, classes: classes ?? 10, train: trainLimit ?? 2560, queries: queryLimit ?? 256, seed: seed)
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
