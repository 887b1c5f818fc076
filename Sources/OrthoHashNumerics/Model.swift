// The OrthoHash model: backbone, hash layer (Linear without bias + BatchNorm1d), cosine to a
// fixed codebook, and the loss; a training step is `forward` then `backward`, which adds the
// gradients into the ParameterStore.
//
// Dimensions: B = rows of the local batch, N = rows of the global batch (B x ranks), D = input
// features, H = hidden width, F = features out of the backbone (D for `linear`), K = bits,
// C = classes.

import CKernels

public struct ModelConfig: Codable, Equatable, Sendable {
    public var inputDim: Int
    public var backbone: BackboneKind
    public var hidden: [Int]
    public var nbit: Int
    public var classes: Int
    /// The rows as images (channels, height, width) for the convolutional backbones; nil for
    /// feature vectors (absent from the files of such models).
    public var inputShape: SampleShape?

    /// `hidden`: the mlp's widths; for the cnn its two convolutions' channels and its Linear
    /// layer's width (empty: the default 32, 64, 1024); ignored otherwise (AlexNet and VGG-16
    /// are torchvision's).
    public init(inputDim: Int, backbone: BackboneKind, hidden: [Int], nbit: Int, classes: Int, inputShape: SampleShape? = nil) {
        precondition(inputShape.map { $0.count == inputDim } ?? true, "input shape \(inputShape!) for \(inputDim)-d rows")
        self.inputDim = inputDim; self.backbone = backbone
        switch backbone {
        case .linear: self.hidden = []
        case .mlp: self.hidden = hidden
        case .cnn:
            precondition(hidden.isEmpty || hidden.count == 3, "cnn widths \(hidden): two convolutions' channels and a Linear layer's width")
            self.hidden = hidden.isEmpty ? BackboneKind.cnnWidths : hidden
        case .alexnet, .vgg16: self.hidden = []
        }
        self.nbit = nbit; self.classes = classes
        self.inputShape = backbone.takesImages ? inputShape : nil
    }

    /// Width of the backbone's output, the input of the hash layer.
    public var featureDim: Int { backboneLayers().last?.output.count ?? inputDim }

    /// The model's parameters (ParameterLayout's count), or nil when the count overflows: a
    /// flag or a file asked for a model no machine holds.
    public var parameterCount: Int? {
        var sizes: [Int?] = backboneLayers().flatMap { $0.tensors.map { checkedProduct($0.shape) } }
        sizes += [checkedProduct([nbit, featureDim]), 2 * nbit]       // hash weight (K, F), gamma and beta
        return checkedSum(sizes)
    }

    /// The floats of every buffer a training run of this model holds for a local batch of
    /// `batch` rows: parameters, gradients and `moments` moments, the backbone's layers'
    /// workspaces and the input gradients passed between them, the hash layer's (HashModel), the
    /// unit codebook with the fused head's two arrays of its sign patterns (as many 4-byte entries
    /// each, `SignPatterns`) and the batch itself; nil when the count overflows.
    public func floatsNeeded(batch B: Int, moments: Int, arcMargin: Bool) -> Int? {
        guard let P = parameterCount, let store = checkedProduct([P, 2 + moments]),
              let logits = checkedProduct([B, classes, arcMargin ? 2 : 1]), let codebook = checkedProduct([classes, nbit, 3]),
              let input = checkedProduct([B, inputDim]), let codes = checkedProduct([B, nbit, 6]) else { return nil }
        let layers = backboneLayers()
        let workspaces = layers.map { $0.workspaceFloats(batch: B) }
        let inputGradients = checkedProduct([B, HashModel.widestInputGradient(layers), 2])
        return checkedSum([store, logits, codebook, input, codes, inputGradients, B] + workspaces)
    }
}

/// `a + b + ...` or nil when a term is nil or the sum overflows.
func checkedSum(_ terms: [Int?]) -> Int? {
    var total = 0
    for term in terms {
        guard let term else { return nil }
        let (t, o) = total.addingReportingOverflow(term)
        if o { return nil }
        total = t
    }
    return total
}

/// What a backward pass knows of the gradients it left (`HashModel.backward`).
public struct GradientReport: Equatable, Sendable {
    /// Every gradient is finite.
    public var finite = true
    /// Their sum over all ranks is known to be finite too (false only for magnitudes near
    /// Float's limit; then the summed gradients must be read before the update).
    public var sumFinite = true
    /// Gradient slices read in full to know the above (0 in a normal step).
    public var slicesRead = 0
}

/// How the model takes the loss over the codebook, chosen once at `init` from `--head`,
/// `--head-products`, the loss and the classes.
public enum Head: Equatable, Sendable {
    /// The (B, C) cosines written, the loss over them, a GEMM back.
    case logits
    /// The fused head (FusedHead.swift): block by block of classes, the cosines never written;
    /// its products with the codebook as OpenBLAS GEMMs or as lookups over the codebook's signs.
    case fused(HeadProducts)

    /// The head for these settings: the fused one only where it computes this loss (single-label
    /// targets are checked per batch: multi-hot ones take the logits).
    public init(path: HeadPath, products: HeadProducts, loss: LossConfig, classes: Int) {
        self = path == .fused && FusedHead.applies(loss, classes: classes) ? .fused(products) : .logits
    }
}

public final class HashModel {
    public let config: ModelConfig
    public let loss: LossConfig
    public let codebook: Codebook
    /// The loss's path, chosen at `init`.
    public let head: Head
    /// Rows per local batch the workspace is sized for.
    public let batchSize: Int
    /// Parameters, gradients and optimizer moments.
    public let store: ParameterStore
    /// Sums BatchNorm's statistics (and the imbalance loss's weights) over the ranks.
    public let statistics: StatisticsReducer
    public let runningMean: FloatBuffer      // (K)
    public let runningVar: FloatBuffer       // (K)
    public var batchesTracked: Int64 = 0
    let codebookUnit: FloatBuffer            // (C, K) codebook rows / sqrt(K)

    /// The backbone, bound to the store's buffers and sized for `batchSize` rows.
    let layers: [Layer]
    /// Each layer's slice of the flat buffers (nil for layers without parameters): its gradient bucket.
    let layerRanges: [Range<Int>?]
    /// Each layer's output of the last forward pass (its own buffer).
    private var layerOutputs: [UnsafePointer<Float>]
    /// Nanoseconds each backbone layer's forward and backward took, added up while `BLAS.clock`
    /// is set (a benchmark timing the step: `orthohash bench --layers`).
    public private(set) var layerNanoseconds: [(forward: UInt64, backward: UInt64)]
    public func resetLayerTimes() { layerNanoseconds = layers.map { _ in (0, 0) } }
    /// Each backbone layer: what it is (a convolution's kernel, a pooling's window, ...) and the
    /// floating-point operations of its GEMMs in one row's forward pass.
    public var layerDescriptions: [(name: String, forwardFlops: Double)] {
        layers.map { layer in
            let shape = "\(layer.input.channels)x\(layer.input.height)x\(layer.input.width) -> \(layer.output.channels)x\(layer.output.height)x\(layer.output.width)"
            switch layer {
            case let c as Conv2dLayer:
                return ("\(c.tensors[0].name.dropLast(7)) conv \(c.kernel)x\(c.kernel)/\(c.stride) \(shape)", 2 * Double(c.O * c.P * c.fanIn))
            case let l as LinearLayer:
                return ("\(l.tensors[0].name.dropLast(7)) linear \(l.I) -> \(l.O)", 2 * Double(l.I * l.O))
            case is MaxPool2dLayer: return ("max pool \(shape)", 0)
            case is AdaptiveAvgPool2dLayer: return ("adaptive average pool \(shape)", 0)
            case is DropoutLayer: return ("dropout \(layer.input.count)", 0)
            default: return ("\(type(of: layer)) \(shape)", 0)
            }
        }
    }
    /// F: the backbone's output per row, the hash layer's input.
    let featureDim: Int
    let hashWeight: Int                      // (K, F)
    let bnGamma: Int                         // (K)
    let bnBeta: Int                          // (K)
    let bn: BatchNormState

    // Workspace, sized once for `batchSize` rows. `dActA` and `dActB` take turns as the gradient
    // of a layer's output and of its input; they hold zeros between steps (each layer's backward
    // pass clears its dy and adds into zeros), so no pass is spent clearing them.
    let dActA: FloatBuffer, dActB: FloatBuffer  // (B, widest input gradient)
    let preNorm: FloatBuffer                 // (B, K) W f
    let xhat: FloatBuffer                    // (B, K)
    public let codes: FloatBuffer            // (B, K) v, the real-valued code
    let unitCodes: FloatBuffer               // (B, K) v / |v|
    let norms: FloatBuffer                   // (B)
    let dCodes: FloatBuffer                  // (B, K)
    let dScratch: FloatBuffer                // (B, K)
    /// (B, C) cosines, then their gradient; made at the first step that needs it (the fused
    /// head for many classes does not).
    var logitsBuffer: FloatBuffer?
    var logits: FloatBuffer {
        if let b = logitsBuffer { return b }
        let b = FloatBuffer(count: batchSize * config.classes)
        logitsBuffer = b
        return b
    }
    var headWorkspace: FusedHeadWorkspace?
    /// The codebook's sign patterns for the lookups (laid out at `init` when the head uses them).
    let signPatterns: SignPatterns?
    /// The threads a step may use (the run's budget, OpenBLAS's count when the model was made).
    public let threads: Int
    /// Whether the backbone convolves: its step's threads are then ours throughout (below).
    let convolutional: Bool
    /// Threads of the step's own (1: OpenBLAS's threads, as set). With a linear backbone and the
    /// lookup head, nearly all of a step is the head's lookups on threads of ours; with a
    /// convolutional backbone, a third of it is the passes around the GEMMs (im2col, col2im,
    /// pooling) on threads of ours. The GEMMs are then split over the same threads with OpenBLAS
    /// at one thread, so that no idle OpenBLAS thread spins beside them (2 threads ran 1.26-1.38x
    /// slower than 2 ranks before for the linear head; the cnn 0.86x slower than with its GEMMs split).
    var ownThreads = 1

    /// Runs `body` with OpenBLAS at the model's thread budget, or at one thread when the step's
    /// threads are ours (`own` > 1).
    private func withOwnThreads(_ own: Int, _ body: () -> Void) {
        BLAS.withThreads(own > 1 ? 1 : threads, body)
    }
    var lastForwardFused = false
    let logitScratch: FloatBuffer?           // (B, C) arc margin only

    /// Floats of the widest gradient passed from one layer down to the next: the hash layer's
    /// input F and every layer's input but the first's (the first needs none).
    static func widestInputGradient(_ layers: [Layer]) -> Int {
        (layers.dropFirst().map { $0.input.count } + [layers.last?.output.count ?? 0]).max() ?? 0
    }

    /// A model with its parameters at PyTorch's initialisation for seed 0 (`resetParameters`).
    /// `store` (made by the data-parallel back end when training) defaults to one of this
    /// process's own with no optimizer moments. `head` and `products` choose the loss's path
    /// (`Head`).
    public init(config: ModelConfig, loss: LossConfig, codebook: Codebook, batchSize: Int,
                store: ParameterStore? = nil, statistics: StatisticsReducer = LocalStatistics(),
                head: HeadPath = .fused, products: HeadProducts = .available, threads: Int = 1) {
        precondition(codebook.classes == config.classes && codebook.bits == config.nbit,
                     "codebook (\(codebook.classes), \(codebook.bits)) does not match model (\(config.classes), \(config.nbit))")
        let layout = ParameterLayout(config)
        precondition(store.map { $0.layout == layout } ?? true, "parameter store of another layout")
        self.config = config; self.loss = loss; self.codebook = codebook
        self.statistics = statistics; self.batchSize = batchSize
        self.head = Head(path: head, products: products, loss: loss, classes: config.classes)
        self.store = store ?? ParameterStore(layout: layout, optimizer: nil)
        let K = config.nbit, B = batchSize, C = config.classes
        self.threads = max(1, threads)
        layers = config.backboneLayers()
        convolutional = layers.contains { $0 is Conv2dLayer }
        let layerThreads = LayerThreads(count: self.threads, splitGEMMs: convolutional && self.threads > 1)
        layerRanges = layers.map { layer in layer.tensors.first.map { layout[$0.name].offset }.map { $0..<($0 + layer.parameterCount) } }
        for (layer, range) in zip(layers, layerRanges) {
            layer.bind(offset: range?.lowerBound ?? 0, batch: B, threads: layerThreads)
        }
        layerOutputs = layers.map { _ in UnsafePointer(bitPattern: 1)! }
        layerNanoseconds = layers.map { _ in (0, 0) }
        featureDim = layers.last?.output.count ?? config.inputDim
        hashWeight = layout["hash_fc.0.weight"].offset
        bnGamma = layout["hash_fc.1.weight"].offset
        bnBeta = layout["hash_fc.1.bias"].offset
        runningMean = FloatBuffer(count: K)
        runningVar = FloatBuffer(count: K)
        bn = BatchNormState(K: K)
        codebookUnit = codebook.unitRows()
        signPatterns = self.head == .fused(.lookup) ? SignPatterns(codebook) : nil

        let widest = Self.widestInputGradient(layers)
        dActA = FloatBuffer(count: B * widest)
        dActB = FloatBuffer(count: B * widest)
        preNorm = FloatBuffer(count: B * K)
        xhat = FloatBuffer(count: B * K)
        codes = FloatBuffer(count: B * K)
        unitCodes = FloatBuffer(count: B * K)
        norms = FloatBuffer(count: B)
        dCodes = FloatBuffer(count: B * K)
        dScratch = FloatBuffer(count: B * K)
        logitScratch = loss.marginType == .arc ? FloatBuffer(count: B * C) : nil
        resetParameters(seed: 0)
    }

    public var parameters: FloatBuffer { store.parameters }
    public var gradients: FloatBuffer { store.gradients }
    public var parameterCount: Int { store.count }

    /// PyTorch's initialisation: the backbone's Linear and Conv2d layers U(-1/sqrt(fan_in),
    /// 1/sqrt(fan_in)) for weight and bias (kaiming_uniform with a = sqrt(5)), in layer order; the
    /// hash layer's weight N(0, 0.01^2);
    /// BatchNorm gamma = 1, beta = 0, running mean 0 and variance 1.
    public func resetParameters(seed: UInt64) {
        var rng = Xoshiro256(seed: seed, stream: RandomStream.initialWeights.rawValue)
        let p = parameters.pointer
        for layer in layers { layer.initialise(p, &rng) }
        for i in 0..<(config.nbit * config.featureDim) { p[hashWeight + i] = Float(rng.gaussian() * 0.01) }
        for k in 0..<config.nbit { p[bnGamma + k] = 1; p[bnBeta + k] = 0 }
        runningMean.zero()
        for k in 0..<config.nbit { runningVar[k] = 1 }
        batchesTracked = 0
    }

    /// Backbone, hash layer (BatchNorm's statistics over the global batch, running statistics
    /// updated), cosines to the codebook, and the loss, whose gradient w.r.t. the cosines it
    /// leaves in `logits` for `backward`. Returns this rank's share of the loss (with the
    /// quantization term) and its count of correct rows.
    public func forward(_ x: UnsafePointer<Float>,   // (B, D)
                        targets: BatchTargets, randomness: StepRandomness? = nil) -> (loss: Double, correct: Int) {
        let B = batchSize, K = config.nbit, C = config.classes, F = featureDim
        let N = B * statistics.ranks
        let p = parameters.pointer
        var fused = false, patterns: SignPatterns? = nil
        if case .fused = head, case .single = targets { fused = true; patterns = signPatterns }
        // A convolutional backbone, or a linear one with the lookup head: the step's threads are ours.
        ownThreads = convolutional || (patterns != nil && layers.isEmpty) ? threads : 1
        var input = x
        withOwnThreads(ownThreads) {
            let clock = BLAS.clock
            for (i, layer) in layers.enumerated() {
                let start = clock?() ?? 0
                input = layer.forward(input, B: B, parameters: p, randomness: randomness)
                layerOutputs[i] = input
                if let clock { layerNanoseconds[i].forward &+= clock() - start }
            }
            linearForward(preNorm.pointer, input, p + hashWeight, nil, B: B, I: F, O: K, split: ownThreads)
        }
        batchNormTrainForward(codes.pointer, xhat.pointer, preNorm.pointer, p + bnGamma, p + bnBeta,
                              runningMean.pointer, runningVar.pointer, bn, B: B, statistics: statistics)
        batchesTracked += 1
        var lossValue: Double, correct: Int
        if fused, case .single(let t) = targets {
            // The loss's gradient w.r.t. the unit codes goes to dScratch, which `backward` reads.
            unitRows(unitCodes.pointer, norms.pointer, codes.pointer, B: B, K: K)
            (lossValue, correct) = FusedHead.lossAndGradient(dScratch.pointer, unitCodes: unitCodes.pointer, codebookUnit: codebookUnit.pointer, patterns: patterns,
                                                             targets: t, B: B, K: K, C: C, N: N, config: loss, threads: threads, workspace: &headWorkspace)
            lastForwardFused = true
        } else {
            cosineForward(logits.pointer, unitCodes.pointer, norms.pointer, codes.pointer, codebookUnit.pointer, B: B, K: K, C: C)
            (lossValue, correct) = marginLoss(logits.pointer, scratch: logitScratch?.pointer, targets: targets,
                                              B: B, C: C, N: N, config: loss, statistics: statistics, threads: threads)
            lastForwardFused = false
        }
        if loss.quan != 0 {
            lossValue += quantizationForward(codes.pointer, B: B, K: K, N: N, type: loss.quanType, weight: loss.quan)
        }
        return (lossValue, correct)
    }

    /// From the loss gradient `forward` left back to the parameters: adds their gradients into
    /// the store. `x` is the batch `forward` saw. The slices of the gradients are checked for
    /// finiteness on the way (GradientFiniteness): proven from the largest magnitudes of each
    /// GEMM's inputs where the gradients started at zero, read where not.
    ///
    /// `bucketReady` is told each range of the gradients as soon as it is final (and checked),
    /// in the order the pass finishes them: the hash layer with its BatchNorm, then the backbone's
    /// layers from the last to the first. The ranges are contiguous and cover the buffer, so the
    /// sum over the ranks can start on each while the pass goes on (overlap).
    @discardableResult
    public func backward(_ x: UnsafePointer<Float>,   // (B, D)
                         bucketReady: ((Range<Int>) -> Void)? = nil) -> GradientReport {
        let B = batchSize, K = config.nbit, C = config.classes, F = featureDim, D = config.inputDim
        let N = B * statistics.ranks
        let p = parameters.pointer, g = gradients.pointer
        var check = GradientFiniteness(gradients: g, provable: store.gradientsAreZero, rows: N, ranks: statistics.ranks)
        store.noteGradientsWritten()
        if lastForwardFused {
            unitRowsBackward(dCodes.pointer, dScratch.pointer, unitCodes.pointer, norms.pointer, B: B, K: K)
        } else {
            cosineBackward(dCodes.pointer, dScratch.pointer, logits.pointer, unitCodes.pointer, norms.pointer,
                           codebookUnit.pointer, B: B, K: K, C: C)
        }
        if loss.quan != 0 {
            quantizationBackward(dCodes.pointer, codes.pointer, B: B, K: K, N: N, type: loss.quanType, weight: loss.quan)
        }
        batchNormTrainBackward(dScratch.pointer, g + bnGamma, g + bnBeta, dCodes.pointer, xhat.pointer,
                               p + bnGamma, bn, B: B, statistics: statistics)
        check.read(bnGamma, count: 2 * K)     // gamma and beta: adjacent, few, always read
        // max|x| of the input rows costs a pass over B x D values: taken only where it spares
        // reading a larger slice (the first layer's parameters, or the hash layer's weight for the
        // linear backbone; GLDv2's 2048-d inputs with 64 bits read the 64 x 2048 slice).
        let firstSlice = layers.first?.parameterCount ?? K * D
        let inputBound = check.provable && B * D < firstSlice ? MagnitudeBound(of: x, count: B * D) : nil
        let features = layers.isEmpty ? x : layerOutputs[layers.count - 1]
        let featureBound = layers.isEmpty ? inputBound : layers[layers.count - 1].outputBound
        var dOut = dActA.pointer, dSpare = dActB.pointer
        withOwnThreads(ownThreads) {
            linearBackward(layers.isEmpty ? nil : dOut, g + hashWeight, nil, dScratch.pointer, features,
                           p + hashWeight, B: B, I: F, O: K, split: ownThreads)
        }
        check.slice(hashWeight, count: K * F) {
            featureBound.map { GradientFiniteness.proven(dy: MagnitudeBound(of: dScratch.pointer, count: B * K), x: $0, bias: false, rows: N) } ?? false
        }
        bucketReady?(hashWeight..<store.count)     // the hash layer's weight, then BatchNorm's gamma and beta
        withOwnThreads(convolutional ? threads : 1) {
            let clock = BLAS.clock
            for i in stride(from: layers.count - 1, through: 0, by: -1) {
                let layer = layers[i], start = clock?() ?? 0
                defer { if let clock { layerNanoseconds[i].backward &+= clock() - start } }
                layer.backward(dOut, x: i == 0 ? x : layerOutputs[i - 1], inputBound: i == 0 ? inputBound : layers[i - 1].outputBound,
                               dx: i == 0 ? nil : dSpare, B: B, parameters: p, gradients: g, check: &check)
                if let range = layerRanges[i] { bucketReady?(range) }
                swap(&dOut, &dSpare)
            }
        }
        return check.report
    }

    /// Real-valued codes v (BatchNorm in evaluation mode) for `rows` rows of `x`, in chunks of
    /// `batchSize` rows; `out` is (rows, K). Hash codes are sign(v).
    public func encode(_ x: UnsafePointer<Float>,       // (rows, D)
                       rows: Int, into out: UnsafeMutablePointer<Float>) {
        let K = config.nbit
        let p = parameters.pointer
        forEachPreNormChunk(x, rows: rows) { start, B in
            batchNormEvalForward(out + start * K, preNorm.pointer, p + bnGamma, p + bnBeta,
                                 runningMean.pointer, runningVar.pointer, eps: bn.eps, B: B, K: K)
        }
    }

    /// Adds the column sums of the hash layer's pre-BatchNorm output `W f(x)` over `rows` rows of
    /// `x` to `sums` (K, in double), to re-estimate BatchNorm's running mean on other data.
    public func addPreNormSums(_ x: UnsafePointer<Float>,  // (rows, D)
                               rows: Int, into sums: inout [Double]) {
        let K = config.nbit
        precondition(sums.count == K, "pre-norm sums: \(sums.count) for \(K) bits")
        forEachPreNormChunk(x, rows: rows) { _, B in
            for r in 0..<B { for k in 0..<K { sums[k] += Double(preNorm[r * K + k]) } }
        }
    }

    /// BatchNorm's running mean re-estimated on a target domain (a head trained on GLDv2
    /// encoding ROxford/RParis; the paper reports ROxf-Hard at 128 bits falling from 0.184 to
    /// 0.015 mAP without it): `runningMean = mean` of `W f(x)` over the target data; with
    /// `identityAffine` also gamma = 1, beta = 0, so the codes are centred on it. The running
    /// variance is kept.
    public func setBatchNormMean(_ mean: [Double], identityAffine: Bool) {
        let K = config.nbit
        precondition(mean.count == K, "BatchNorm mean: \(mean.count) for \(K) bits")
        for k in 0..<K { runningMean[k] = Float(mean[k]) }
        if identityAffine {
            for k in 0..<K { parameters[bnGamma + k] = 1; parameters[bnBeta + k] = 0 }
        }
    }

    /// Runs the backbone and the hash layer's linear map over `x` in chunks of `batchSize` rows,
    /// leaving each chunk's `W f` in `preNorm` for `body(start, rows)`.
    private func forEachPreNormChunk(_ x: UnsafePointer<Float>, rows: Int, _ body: (Int, Int) -> Void) {
        let K = config.nbit, D = config.inputDim, F = featureDim
        let p = parameters.pointer
        var start = 0
        while start < rows {
            let B = min(batchSize, rows - start)
            var input = x + start * D
            withOwnThreads(convolutional ? threads : 1) {
                for layer in layers { input = layer.infer(input, B: B, parameters: p) }
                linearForward(preNorm.pointer, input, p + hashWeight, nil, B: B, I: F, O: K, split: convolutional ? threads : 1)
            }
            body(start, B)
            start += B
        }
    }
}
