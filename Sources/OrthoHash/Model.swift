// The OrthoHash model: backbone, hash layer (Linear without bias + BatchNorm1d), cosine to a
// fixed codebook, and the loss. One flat parameter buffer and one flat gradient buffer with named
// views: zeroing the gradients is one fill, synchronising them is one all-reduce.
//
// Dimensions: B = rows of the local batch, D = input features, H = hidden width,
// F = features out of the backbone (D for `linear`), K = bits, C = classes.

import CKernels
import Foundation

public enum BackboneKind: String, Codable, CaseIterable, Sendable {
    /// Identity: the input is a pre-extracted feature vector.
    case linear
    /// Fully connected layers with ReLU (`--hidden`).
    case mlp
}

public struct ModelConfig: Codable, Equatable, Sendable {
    public var inputDim: Int
    public var backbone: BackboneKind
    public var hidden: [Int]
    public var nbit: Int
    public var classes: Int

    public init(inputDim: Int, backbone: BackboneKind, hidden: [Int], nbit: Int, classes: Int) {
        self.inputDim = inputDim; self.backbone = backbone
        self.hidden = backbone == .linear ? [] : hidden
        self.nbit = nbit; self.classes = classes
    }

    /// Width of the backbone's output, the input of the hash layer.
    public var featureDim: Int { hidden.last ?? inputDim }
}

/// Offsets of one Linear layer's weight (O, I) and bias (O) in the flat parameter buffer.
struct LinearSlot { let weight: Int; let bias: Int; let inputs: Int; let outputs: Int }

public final class HashModel {
    public let config: ModelConfig
    public let loss: LossConfig
    public let collective: Collective
    /// Rows per local batch the workspace is sized for.
    public let batchSize: Int

    public let parameters: FloatBuffer       // (P) all trainable parameters
    public let gradients: FloatBuffer        // (P) same layout
    /// Parameters [0, backboneCount) are the backbone's group; the rest (W, gamma, beta) the hash layer's.
    public let backboneCount: Int
    public let runningMean: FloatBuffer      // (K)
    public let runningVar: FloatBuffer       // (K)
    public var batchesTracked: Int64 = 0
    public let codebook: Codebook
    let codebookUnit: FloatBuffer            // (C, K) codebook rows / sqrt(K)

    let backbone: [LinearSlot]
    let hashWeight: Int                      // (K, F)
    let bnGamma: Int                         // (K)
    let bnBeta: Int                          // (K)
    let bn: BatchNormState

    // Workspace, sized once for `batchSize` rows.
    // `activations`, `dActA` and `dActB` hold zeros between training steps: the last pass of a
    // step that reads each one clears it, so the next step's GEMMs add into them (beta = 1) and
    // no pass is spent clearing them. `encode` has its own buffers for that reason.
    let activations: [FloatBuffer]           // (B, H_i) per hidden layer, after ReLU
    var activationBounds: [MagnitudeBound]   // the largest |value| in each, this step
    let dActA: FloatBuffer, dActB: FloatBuffer  // (B, max H) ping-pong input gradients
    let encodeActivations: [FloatBuffer]     // (B, H_i) for `encode`
    let preNorm: FloatBuffer                 // (B, K) W f
    let xhat: FloatBuffer                    // (B, K)
    public let codes: FloatBuffer            // (B, K) v, the real-valued code
    let unitCodes: FloatBuffer               // (B, K) v / |v|
    let norms: FloatBuffer                   // (B)
    let dCodes: FloatBuffer                  // (B, K)
    let dScratch: FloatBuffer                // (B, K)
    let logits: FloatBuffer                  // (B, C) cosines, then their gradient
    let logitScratch: FloatBuffer?           // (B, C) arc margin only

    public init(config: ModelConfig, loss: LossConfig, codebook: Codebook, batchSize: Int,
                collective: Collective = SingleProcess()) {
        precondition(codebook.classes == config.classes && codebook.bits == config.nbit,
                     "codebook (\(codebook.classes), \(codebook.bits)) does not match model (\(config.classes), \(config.nbit))")
        self.config = config; self.loss = loss; self.codebook = codebook
        self.collective = collective; self.batchSize = batchSize
        let K = config.nbit, B = batchSize, C = config.classes
        var offset = 0
        var slots: [LinearSlot] = []
        var inputs = config.inputDim
        for width in config.hidden {
            slots.append(LinearSlot(weight: offset, bias: offset + width * inputs, inputs: inputs, outputs: width))
            offset += width * inputs + width
            inputs = width
        }
        backbone = slots
        backboneCount = offset
        hashWeight = offset; offset += K * inputs
        bnGamma = offset; offset += K
        bnBeta = offset; offset += K
        (parameters, gradients) = collective.makeTrainingBuffers(count: offset)
        runningMean = FloatBuffer(count: K)
        runningVar = FloatBuffer(count: K)
        bn = BatchNormState(K: K)
        codebookUnit = codebook.unitRows()

        activations = config.hidden.map { FloatBuffer(count: B * $0) }
        activationBounds = config.hidden.map { _ in MagnitudeBound(bits: 0) }
        encodeActivations = config.hidden.map { FloatBuffer(count: B * $0) }
        let widest = config.hidden.max() ?? 0
        dActA = FloatBuffer(count: B * widest)
        dActB = FloatBuffer(count: B * widest)
        preNorm = FloatBuffer(count: B * K)
        xhat = FloatBuffer(count: B * K)
        codes = FloatBuffer(count: B * K)
        unitCodes = FloatBuffer(count: B * K)
        norms = FloatBuffer(count: B)
        dCodes = FloatBuffer(count: B * K)
        dScratch = FloatBuffer(count: B * K)
        logits = FloatBuffer(count: B * C)
        logitScratch = loss.marginType == .arc ? FloatBuffer(count: B * C) : nil
        resetParameters(seed: 0)
    }

    public var parameterCount: Int { parameters.count }

    /// Whether every gradient the last `trainStep` left in `gradients` is finite.
    ///
    /// A layer's weight gradient `dy^T x` is a sum of B products, and its bias gradient a sum of
    /// B values of dy. The passes that write x (bias + ReLU) and dy (ReLU backward) also return
    /// their largest magnitude, so when B x max|dy| x max|x| (times the ranks, whose gradients
    /// are summed) is below half of Float's largest value, no sum can overflow and the gradient is
    /// finite without reading it: that pass over the gradients was 1.3% of a step. Otherwise, or
    /// when the gradients did not start at zero, the slice is read in full.
    public private(set) var gradientsFinite = true
    /// How many gradient slices the last `trainStep` had to read in full to know they are finite
    /// (0 in a normal step; tests check both ways).
    public private(set) var gradientSlicesRead = 0
    /// Whether the gradients summed over all ranks are known to be finite too: each bound counts
    /// every rank's products, and a slice read in full has its largest magnitude times the ranks
    /// checked the same way. False only for magnitudes near Float's limit (then the trainer reads
    /// the summed gradients before the update).
    public private(set) var gradientSumFinite = true

    /// PyTorch's initialisation: Linear layers of the backbone U(-1/sqrt(I), 1/sqrt(I)) for weight
    /// and bias (kaiming_uniform with a = sqrt(5)); the hash layer's weight N(0, 0.01^2);
    /// BatchNorm gamma = 1, beta = 0, running mean 0 and variance 1.
    public func resetParameters(seed: UInt64) {
        var rng = Xoshiro256(seed: seed, stream: RandomStream.initialWeights.rawValue)
        let p = parameters.pointer
        for slot in backbone {
            let bound = 1 / Double(slot.inputs).squareRoot()
            for i in 0..<(slot.outputs * slot.inputs) { p[slot.weight + i] = Float((rng.nextDouble() * 2 - 1) * bound) }
            for i in 0..<slot.outputs { p[slot.bias + i] = Float((rng.nextDouble() * 2 - 1) * bound) }
        }
        for i in 0..<(config.nbit * config.featureDim) { p[hashWeight + i] = Float(rng.gaussian() * 0.01) }
        for k in 0..<config.nbit { p[bnGamma + k] = 1; p[bnBeta + k] = 0 }
        runningMean.zero()
        for k in 0..<config.nbit { runningVar[k] = 1 }
        batchesTracked = 0
    }

    /// Forward, loss and backward for one local batch of `batchSize` rows in training mode.
    /// Gradients are *accumulated* into `gradients`, or overwrite them when `accumulate` is false.
    /// `gradientsClear` says they hold zeros already (the training loop: the optimizer clears
    /// them as it reads them, and the step accumulates), which lets the finiteness check bound
    /// them instead of reading them (see `gradientsFinite`). They are this rank's share of the
    /// gradient of the global-batch loss: summing over ranks gives it.
    /// Returns this rank's share of the global loss and its count of correct rows.
    @discardableResult
    public func trainStep(_ x: UnsafePointer<Float>,   // (B, D)
                          targets: BatchTargets, accumulate: Bool = true,
                          gradientsClear: Bool = false) -> (loss: Double, correct: Int) {
        let B = batchSize, K = config.nbit, C = config.classes, F = config.featureDim, D = config.inputDim
        let N = B * collective.size
        let p = parameters.pointer, g = gradients.pointer
        // Backbone forward.
        var input = x
        for (i, slot) in backbone.enumerated() {
            let out = activations[i].pointer
            activationBounds[i] = linearReluForward(out, input, p + slot.weight, p + slot.bias,
                                                    B: B, I: slot.inputs, O: slot.outputs, yIsClear: true)
            input = UnsafePointer(out)
        }
        let features = input
        // Hash layer, cosine, loss.
        linearForward(preNorm.pointer, features, p + hashWeight, nil, B: B, I: F, O: K)
        batchNormTrainForward(codes.pointer, xhat.pointer, preNorm.pointer, p + bnGamma, p + bnBeta,
                              runningMean.pointer, runningVar.pointer, bn, B: B, collective: collective)
        batchesTracked += 1
        cosineForward(logits.pointer, unitCodes.pointer, norms.pointer, codes.pointer, codebookUnit.pointer, B: B, K: K, C: C)
        var (lossValue, correct) = marginLoss(logits.pointer, scratch: logitScratch?.pointer, targets: targets,
                                              B: B, C: C, N: N, config: loss, collective: collective)
        // Backward.
        cosineBackward(dCodes.pointer, dScratch.pointer, logits.pointer, unitCodes.pointer, norms.pointer,
                       codebookUnit.pointer, B: B, K: K, C: C)
        if loss.quan != 0 {
            lossValue += quantizationLoss(dCodes.pointer, codes.pointer, B: B, K: K, N: N,
                                          type: loss.quanType, weight: loss.quan)
        }
        batchNormTrainBackward(dScratch.pointer, g + bnGamma, g + bnBeta, dCodes.pointer, xhat.pointer,
                               p + bnGamma, bn, B: B, collective: collective, accumulate: accumulate)
        // Bounds hold only for gradients that started at zero.
        let boundable = gradientsClear || !accumulate
        var slicesRead = 0, sumFinite = true
        func read(_ start: Int, count: Int) -> Bool {
            let top = MagnitudeBound(of: g + start, count: count)
            if !MagnitudeBound.productSumsFinite(terms: collective.size, top, .one) { sumFinite = false }
            return top.isFinite
        }
        func sliceFinite(_ start: Int, count: Int, provenBy bounded: Bool) -> Bool {
            if boundable && bounded { return true }
            slicesRead += 1
            return read(start, count: count)
        }
        var finite = read(bnGamma, count: 2 * K)     // gamma and beta: adjacent, few, always read
        func proven(_ dy: MagnitudeBound, _ x: MagnitudeBound?, bias: Bool) -> Bool {
            guard let x else { return false }
            return MagnitudeBound.productSumsFinite(terms: N, dy, x)
                && (!bias || MagnitudeBound.productSumsFinite(terms: N, dy, .one))
        }
        // max|x| of the input rows costs a pass over B x D values: taken only where it spares
        // reading a larger slice (the first layer's weight and bias, or the hash layer's weight
        // for the linear backbone; GLDv2's 2048-d inputs with 64 bits read the 64 x 2048 slice).
        let firstSlice = backbone.isEmpty ? K * D : backbone[0].outputs * (D + 1)
        let inputBound = boundable && B * D < firstSlice ? MagnitudeBound(of: x, count: B * D) : nil
        let featureBound = backbone.isEmpty ? inputBound : activationBounds[backbone.count - 1]
        var dOut = dActA.pointer, dSpare = dActB.pointer
        linearBackward(backbone.isEmpty ? nil : dOut, g + hashWeight, nil, dScratch.pointer, features,
                       p + hashWeight, B: B, I: F, O: K, accumulate: accumulate, dxIsClear: true)
        finite = finite && sliceFinite(hashWeight, count: K * F, provenBy: boundable && featureBound != nil
            && proven(MagnitudeBound(of: dScratch.pointer, count: B * K), featureBound, bias: false))
        for i in stride(from: backbone.count - 1, through: 0, by: -1) {
            let slot = backbone[i]
            // activations[i] is read for the last time here (the layer above used it as its input).
            let dyBound = reluBackwardClearing(dOut, activations[i].pointer, count: B * slot.outputs)
            let layerInput = i == 0 ? x : UnsafePointer(activations[i - 1].pointer)
            linearBackward(i == 0 ? nil : dSpare, g + slot.weight, g + slot.bias, dOut, layerInput,
                           p + slot.weight, B: B, I: slot.inputs, O: slot.outputs, accumulate: accumulate,
                           dxIsClear: true, clearDy: true)
            // Weight (O, I) then bias (O): one contiguous slice.
            let xBound = i == 0 ? inputBound : activationBounds[i - 1]
            finite = finite && sliceFinite(slot.weight, count: slot.outputs * (slot.inputs + 1),
                                           provenBy: proven(dyBound, xBound, bias: true))
            swap(&dOut, &dSpare)
        }
        gradientsFinite = finite
        gradientSlicesRead = slicesRead
        gradientSumFinite = finite && sumFinite
        return (lossValue, correct)
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

    /// BatchNorm's running mean re-estimated on a target domain (ORTHOHASH.md section 5: a head
    /// trained on GLDv2 encoding ROxford/RParis): `runningMean = mean` of `W f(x)` over the target
    /// data; with `identityAffine` also gamma = 1, beta = 0, so the codes are centred on it. The
    /// running variance is kept.
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
        let K = config.nbit, D = config.inputDim, F = config.featureDim
        let p = parameters.pointer
        var start = 0
        while start < rows {
            let B = min(batchSize, rows - start)
            var input = x + start * D
            for (i, slot) in backbone.enumerated() {
                let a = encodeActivations[i].pointer
                linearReluForward(a, input, p + slot.weight, p + slot.bias, B: B, I: slot.inputs, O: slot.outputs)
                input = UnsafePointer(a)
            }
            linearForward(preNorm.pointer, input, p + hashWeight, nil, B: B, I: F, O: K)
            body(start, B)
            start += B
        }
    }

    /// Named views of the parameters, PyTorch-style names (see README, "export").
    public var namedParameters: [(name: String, offset: Int, shape: [Int])] {
        var out: [(String, Int, [Int])] = []
        for (i, slot) in backbone.enumerated() {
            out.append(("backbone.fc.\(i).weight", slot.weight, [slot.outputs, slot.inputs]))
            out.append(("backbone.fc.\(i).bias", slot.bias, [slot.outputs]))
        }
        out.append(("hash_fc.0.weight", hashWeight, [config.nbit, config.featureDim]))
        out.append(("hash_fc.1.weight", bnGamma, [config.nbit]))
        out.append(("hash_fc.1.bias", bnBeta, [config.nbit]))
        return out
    }
}
