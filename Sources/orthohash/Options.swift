// Option groups shared by the subcommands.

import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

/// Where the data comes from; shared by train and bench.
struct DataOptions: ParsableArguments {
    @Option(help: "fashion-mnist (the Debian package's images), npy (feature and label files), images (JPEG and PNG files named by --train-list, --query-list and --db-list) or generated (images made up from the seed, for benchmarks and smoke tests of the image backbones: class r mod --classes (default 10), --train-limit rows (default 2560, also the database), --query-limit queries (default 256)).")
    var dataset: DatasetKind?
    @Option(help: "Directory of the Fashion-MNIST IDX files (default: \(FashionMNIST.defaultDirectory)).")
    var dataDir: String?
    @Option(help: "Training features (.npy, float32/float16, (N, D)).") var trainFeatures: String?
    @Option(help: "Training labels (.npy: int32/int64 (N,) or 0/1 (N, C) for multi-label).") var trainLabels: String?
    @Option(help: "Query features (.npy).") var queryFeatures: String?
    @Option(help: "Query labels (.npy).") var queryLabels: String?
    @Option(help: "Database features (.npy).") var dbFeatures: String?
    @Option(help: "Database labels (.npy).") var dbLabels: String?
    @Option(help: "Number of classes (default: largest training label + 1).") var classes: Int?
    @Option(help: "Use only the first N training rows.") var trainLimit: Int?
    @Option(help: "Use only the first N query rows.") var queryLimit: Int?
    @Option(help: "Use only the first N database rows.") var dbLimit: Int?
    @Option(help: "--dataset images: the training list: one image per line, a path (relative to --image-root) then one class index or C values 0/1.")
    var trainList: String?
    @Option(help: "--dataset images: the query list (as --train-list).") var queryList: String?
    @Option(help: "--dataset images: the database list (as --train-list).") var dbList: String?
    @Option(help: "--dataset images: the directory the lists' relative paths start from (default: each list's own directory).")
    var imageRoot: String?
    @Option(help: "--dataset images: the test transform resizes the shorter side to this before the centre crop (default: --image-size; 256 for NUS-WIDE).")
    var testResize: Int?
    @Option(help: "--dataset images: the training crop: random-resized-crop (RandomResizedCrop, ImageNet100's; the default) or resize-random-crop (Resize(--test-resize) then RandomCrop(--image-size): NUS-WIDE's, MS-COCO's); a horizontal flip after either.")
    var trainTransform: TrainTransform?
    @Option(help: "--dataset images: the side of the square crops the backbone takes (default 224); --dataset generated: the images' side (default 224).") var imageSize: Int?
    @Option(help: "--dataset generated: the images' channels (default 3).") var imageChannels: Int?

    /// The flags given, over `c`.
    func apply(to c: inout TrainConfig) {
        if let dataset { c.dataset = dataset }
        if let dataDir { c.dataDir = dataDir }
        if let trainFeatures { c.trainFeatures = trainFeatures }
        if let trainLabels { c.trainLabels = trainLabels }
        if let queryFeatures { c.queryFeatures = queryFeatures }
        if let queryLabels { c.queryLabels = queryLabels }
        if let dbFeatures { c.dbFeatures = dbFeatures }
        if let dbLabels { c.dbLabels = dbLabels }
        if let classes { c.classes = classes }
        if let trainLimit { c.trainLimit = trainLimit }
        if let queryLimit { c.queryLimit = queryLimit }
        if let dbLimit { c.dbLimit = dbLimit }
        if let imageSize { c.imageSize = imageSize }
        if let imageChannels { c.imageChannels = imageChannels }
        if let trainList { c.trainList = trainList }
        if let queryList { c.queryList = queryList }
        if let dbList { c.dbList = dbList }
        if let imageRoot { c.imageRoot = imageRoot }
        if let testResize { c.testResize = testResize }
        if let trainTransform { c.trainTransform = trainTransform }
    }

    /// Flags given that the run's settings (`c`, after a resume merged them) do not use.
    func unused(by c: TrainConfig) -> [String] {
        var out: [String] = []
        if c.dataset != .npy {
            let npy = [("--train-features", trainFeatures), ("--train-labels", trainLabels), ("--query-features", queryFeatures),
                       ("--query-labels", queryLabels), ("--db-features", dbFeatures), ("--db-labels", dbLabels)]
            out += npy.filter { $0.1 != nil }.map { "\($0.0) belongs to --dataset npy" }
        }
        if c.dataset != .fashionMNIST && dataDir != nil { out.append("--data-dir belongs to --dataset fashion-mnist") }
        if c.dataset != .generated && c.dataset != .images && imageSize != nil { out.append("--image-size belongs to --dataset images or generated") }
        if c.dataset != .generated && imageChannels != nil { out.append("--image-channels belongs to --dataset generated") }
        if c.dataset != .images {
            let lists = [("--train-list", trainList), ("--query-list", queryList), ("--db-list", dbList), ("--image-root", imageRoot),
                         ("--test-resize", testResize.map(String.init)), ("--train-transform", trainTransform?.rawValue)]
            out += lists.filter { $0.1 != nil }.map { "\($0.0) belongs to --dataset images" }
        }
        if c.dataset == .generated && dbLimit != nil { out.append("--db-limit does not apply to --dataset generated (its database is the training rows)") }
        return out
    }
}

/// The model, loss and optimisation settings. Defaults are the paper's (TrainConfig's). Every
/// option is optional: with --resume, a flag given replaces the stored setting, even when it
/// names the default, and a flag not given leaves it.
struct ModelOptions: ParsableArguments {
    @Option(help: "linear (the input is a feature vector; the default), mlp (Linear+ReLU layers of --hidden widths) or cnn (a small convolutional net for small images: conv 32 5x5, max-pool 2, conv 64 5x5, max-pool 2, Linear 1024; Fashion-MNIST as 28x28 images).")
    var backbone: BackboneKind?
    @Option(help: "Hidden widths of the mlp backbone (default: 1024,1024).", transform: Parse.positiveIntegers("--hidden"))
    var hidden: [Int]?
    @Option(help: "Bits K of the hash code (default: 64).") var nbit: Int?
    @Option(help: "Logit scale s (default: 8).") var scale: Float?
    @Option(help: "Margin m (default: 0.2).") var margin: Float?
    @Option(help: "cos (OrthoCos; the default) or arc (OrthoArc).") var marginType: MarginType?
    @Option(help: "Multi-label loss: smooth (label smoothing; the default), bce or imbalance.") var multiLabelLoss: MultiLabelLoss?
    @Option(help: "Weight of the classification term (default: 1).") var ce: Float?
    @Option(help: "Weight of the quantization term (default: 0, off).") var quan: Float?
    @Option(help: "Quantization term: cs, l1 or l2 (default: cs).") var quanType: QuantizationType?
    @Option(help: "Codebook: B (Bernoulli), N (Gaussian sign) or O (max Hamming distance); default B.") var codebook: CodebookMethod?
    @Option(help: "Load the codebook from a .npy (C, K) of +-1 instead.") var codebookFile: String?
    @Option(help: "Start the backbone from this safetensors file of torchvision's names (features.N.weight, classifier.N.bias, ...; the authors' fc.N for AlexNet's classifier), e.g. ImageNet weights converted by bench/torchvision_to_safetensors.py.")
    var pretrained: String?
    @Option(help: "adam (the default) or sgd.") var optimizer: OptimizerKind?
    @Option(help: "Learning rate of the hash layer (default: 1e-4).") var lr: Float?
    @Option(help: "The backbone's learning rate is this times --lr (default: 0.1).") var backboneLrScale: Float?
    @Option(help: "Coupled L2 weight decay (default: 5e-4).") var weightDecay: Float?
    @Option(help: "Adam betas (default: 0.9,0.999).", transform: Parse.betas) var betas: Betas?
    @Option(help: "Adam epsilon (default: 1e-8).") var adamEps: Float?
    @Option(help: "SGD momentum (default: 0.9).") var momentum: Float?
    @Flag(inversion: .prefixedNo, help: "SGD with Nesterov momentum (default: off).") var nesterov: Bool?
    @Option(help: "step (StepLR; the default), multistep (MultiStepLR) or none; stepped per epoch.") var scheduler: SchedulerKind?
    @Option(help: "StepLR step in epochs (default: int(0.8 x epochs)).") var stepSize: Int?
    @Option(help: "MultiStepLR milestones (epochs), e.g. 4,7.", transform: Parse.positiveIntegers("--milestones"))
    var milestones: [Int]?
    @Option(help: "LR decay factor (default: 0.1).") var gamma: Float?
    @Option(help: "Epochs (default: 100).") var epochs: Int?
    @Option(help: "Global batch size, split over the ranks (default: 256).") var batchSize: Int?
    @Option(help: "Seed of the codebook, initial weights and data order (default: 0).") var seed: UInt64?

    /// The flags given, over `c`.
    func apply(to c: inout TrainConfig) {
        if let backbone { c.backbone = backbone }
        if let nbit { c.nbit = nbit }
        if let hidden { c.hidden = hidden }
        if let scale { c.loss.scale = scale }
        if let margin { c.loss.margin = margin }
        if let marginType { c.loss.marginType = marginType }
        if let multiLabelLoss { c.loss.multiLabelLoss = multiLabelLoss }
        if let ce { c.loss.ce = ce }
        if let quan { c.loss.quan = quan }
        if let quanType { c.loss.quanType = quanType }
        if let codebook { c.codebook = codebook }
        if let codebookFile { c.codebookFile = codebookFile }
        if let pretrained { c.pretrained = pretrained }
        if let optimizer { c.optimizer.kind = optimizer }
        if let lr { c.optimizer.lr = lr }
        if let backboneLrScale { c.optimizer.backboneLRScale = backboneLrScale }
        if let weightDecay { c.optimizer.weightDecay = weightDecay }
        if let betas { c.optimizer.beta1 = betas.beta1; c.optimizer.beta2 = betas.beta2 }
        if let adamEps { c.optimizer.eps = adamEps }
        if let momentum { c.optimizer.momentum = momentum }
        if let nesterov { c.optimizer.nesterov = nesterov }
        if let scheduler { c.optimizer.scheduler = scheduler }
        if let stepSize { c.optimizer.stepSize = stepSize }
        if let milestones { c.optimizer.milestones = milestones }
        if let gamma { c.optimizer.gamma = gamma }
        if let epochs { c.epochs = epochs }
        if let batchSize { c.batchSize = batchSize }
        if let seed { c.seed = seed }
    }

    /// Flags given that the run's settings (`c`, after a resume merged them) do not use.
    func unused(by c: TrainConfig) -> [String] {
        var out: [String] = []
        if c.backbone != .mlp && hidden != nil { out.append("--hidden belongs to --backbone mlp") }
        if c.optimizer.kind != .sgd {
            if momentum != nil { out.append("--momentum belongs to --optimizer sgd") }
            if nesterov != nil { out.append("--nesterov belongs to --optimizer sgd") }
        }
        if c.optimizer.kind != .adam {
            if betas != nil { out.append("--betas belongs to --optimizer adam") }
            if adamEps != nil { out.append("--adam-eps belongs to --optimizer adam") }
        }
        if c.optimizer.scheduler != .step && stepSize != nil { out.append("--step-size belongs to --scheduler step") }
        if c.optimizer.scheduler != .multistep && milestones != nil { out.append("--milestones belongs to --scheduler multistep") }
        if codebook != nil && c.codebookFile != nil { out.append("--codebook draws a codebook and --codebook-file reads one: give one of them") }
        if quanType != nil && c.loss.quan == 0 { out.append("--quan-type needs --quan above 0") }
        return out
    }
}

struct EvalOptions: ParsableArguments {
    @Option(help: "Cutoffs R of mAP@R, 'all' or numbers; 'gt100' is GLDv2's mAP@100 (AP over min(|GT|, 100), queries with ground truth). Default: all,1000.",
            transform: Parse.cutoffs)
    var mapAt: [MapCutoff]?
    @Option(help: "Cutoffs k of precision@k (default: 100).", transform: Parse.positiveIntegers("--precision-at"))
    var precisionAt: [Int]?

    func apply(to c: inout TrainConfig) {
        if let mapAt { c.mapAt = mapAt }
        if let precisionAt { c.precisionAt = precisionAt }
    }
}

/// A run directory and which of its checkpoints to read (eval, encode, revisited, export).
struct RunCheckpointOptions: ParsableArguments {
    @Option(help: "Run directory.") var runDir: String
    @Option(help: "best, last, or a checkpoint: a path or a file name in the run's checkpoints/.") var checkpoint: CheckpointChoice = .last

    /// The run's settings, the checkpoint and its path.
    func load() throws -> (config: TrainConfig, checkpoint: Checkpoint, path: String) {
        try Resume.loadRun(runDir, checkpoint: checkpoint)
    }

    /// Checks the command's outputs before any work: each writable, none a file of the run (its
    /// checkpoints included) or one of `inputs`, no two the same file.
    func checkOutputs(_ outputs: [(flag: String, path: String)], inputs: [(what: String, path: String)] = []) throws {
        let checkpointFile: [(what: String, path: String)]
        if case .file(let name) = checkpoint { checkpointFile = [("the checkpoint read (--checkpoint)", name)] } else { checkpointFile = [] }
        try OutputFile.check(outputs: outputs, inputs: RunDirectory(runDir).ownFiles + checkpointFile + inputs)
    }
}

struct RuntimeOptions: ParsableArguments {
    @Option(help: "BLAS threads of this process (default: OPENBLAS_NUM_THREADS if set, else cores / ranks).") var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// --threads, else OPENBLAS_NUM_THREADS, else the cores shared by the ranks; and a line for
    /// the log when the two settings disagree or the environment decided.
    func resolved(ranks: Int) -> (threads: Int, note: String?) {
        let variable = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"]
        let fromEnvironment = variable.flatMap(Int.init).flatMap { $0 >= 1 ? $0 : nil }
        if let threads {
            if let variable, fromEnvironment != threads { return (threads, "BLAS threads: \(threads) (--threads; OPENBLAS_NUM_THREADS=\(variable) is overridden)") }
            return (threads, nil)
        }
        if let fromEnvironment { return (fromEnvironment, "BLAS threads: \(fromEnvironment) (OPENBLAS_NUM_THREADS)") }
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount / max(1, ranks))
        // Set but not a positive integer (0, "abc"): said, not silently passed over.
        if let variable, !variable.isEmpty {
            return (cores, "BLAS threads: \(cores) (cores / ranks; OPENBLAS_NUM_THREADS=\(variable) is not a positive integer and is ignored)")
        }
        return (cores, nil)
    }

    /// The thread count for commands without a run log: an OPENBLAS_NUM_THREADS that is set but
    /// ignored is said on stderr.
    func resolvedThreads(ranks: Int) -> Int {
        let (count, note) = resolved(ranks: ranks)
        if let note, note.hasSuffix("is ignored)") { standardError("note: " + note) }
        return count
    }
}

/// A feature file whose width matches the model's input.
func openFeatures(_ path: String, for model: HashModel, checkpoint: String) throws -> NPYFeatures {
    let x = try NPYFeatures(path: path)
    guard x.dim == model.config.inputDim else {
        throw OrthoHashError("features have \(x.dim) columns but the model in \(checkpoint) expects \(model.config.inputDim)", file: path)
    }
    return x
}

/// BatchNorm's running mean re-estimated on the rows of `target` (HashModel.setBatchNormMean).
func reestimateBatchNormMean(_ model: HashModel, from target: NPYFeatures, identityAffine: Bool) throws {
    guard target.rows > 0 else { throw OrthoHashError("no rows to estimate BatchNorm's mean from", file: target.name) }
    let chunk = model.batchSize
    let input = FloatBuffer(count: chunk * target.dim)
    var sums = [Double](repeating: 0, count: model.config.nbit)
    try target.forEachChunk(0..<target.rows, chunk: chunk, into: input) { _, n in
        model.addPreNormSums(input.pointer, rows: n, into: &sums)
    }
    model.setBatchNormMean(sums.map { $0 / Double(target.rows) }, identityAffine: identityAffine)
}

/// How a step computes its sums (the order of float32 sums, or bf16 rounding; not what it
/// computes): the head's path and products, and how gradients are summed over the ranks; shared
/// by train and bench. Stored with a run, and kept by a resume (changing one is refused).
struct StepPathOptions: ParsableArguments {
    @Option(help: "The loss over many classes: fused (single-label cosine margin from 256 classes on: the batch's cosines to the codebook never written; the default) or logits (written, as before the fused head). They differ only in the order of float32 sums.")
    var head: HeadPath?
    @Option(help: "How the fused head multiplies by the codebook: lookup (table lookups over its signs; the default where the CPU has AVX-512) or blas (OpenBLAS GEMMs of its unit rows; the default elsewhere). They differ only in the order of float32 sums.")
    var headProducts: HeadProducts?
    @Option(help: "Under MPI: on sums the gradients over the ranks in buckets while the backward pass computes the layers below them (a background thread; the same bits on the shared-memory path); off sums them once after the backward pass; auto (the default) is on for AlexNet and VGG-16 across nodes and off otherwise, as measured (docs/SCALING.md). The log says which.")
    var gradientOverlap: GradientOverlap?
    @Option(help: "Under MPI: float32 (the default), or bf16 to round gradient sums that cross the network to bfloat16 (half the bytes, for slow links; sums within a node stay float32). Its accuracy cost: README.")
    var gradientSum: GradientPrecision?
    @Option(help: "Under MPI with --gradient-overlap on: the size in MB of the buckets the backward pass's layers are merged into, large layers split (default 4; 0: one bucket per layer). With more than 2 ranks across nodes it can change the order of the sums.")
    var gradientBucketMB: Double?

    func validate() throws {
        if let mb = gradientBucketMB, !(mb >= 0 && mb <= 1_048_576) {
            throw ValidationError("--gradient-bucket-mb must be between 0 and 1048576 (1 TB), got \(mb)")
        }
    }

    func apply(to c: inout TrainConfig) {
        if let head { c.head = head }
        if let headProducts { c.headProducts = headProducts }
        if let gradientOverlap { c.gradientOverlap = gradientOverlap }
        if let gradientSum { c.gradientSum = gradientSum }
        if let gradientBucketMB { c.gradientBucketMB = gradientBucketMB }
    }
}
