// 2-D convolution (PyTorch's Conv2d: weight (O, C, k, k), bias (O), zero padding), with an
// optional ReLU after it, over NCHW rows.
//
// Three ways through its products, each chosen per layer and pass by measurement (the README of
// this module gives the figures):
//
// Direct (AVX-512 CPUs; CKernels' directconv.c): no columns at all. Each chunk of images is copied
// with its padding (about the input's size, where im2col's columns are k^2 / stride^2 times it),
// and the kernels read the windows from the padded planes.
// ```
// forward    y (n, O, P)          = relu(conv(padded x) + b)       tiles of 8 positions x 32 outputs
// backward   products (O, n P)    = dy (y > 0)                     one pass: gather, ReLU's mask, dy = 0
//            db += row sums of products
//            dW^T += windows(padded x) products^T                  (products transposed to position-major)
//            dx += conv(padded products, flipped W)                (stride 1: the input gradient is a convolution)
// ```
// Through a GEMM per chunk of images, with the batch folded into the GEMM's N:
// ```
// forward    columns (C k k, n P) = im2col(x)          (n images of the chunk, P = Ho Wo)
//            products (O, n P)    = W (O, C k k) columns
//            y (n, O, P)          = relu(products + b)  one pass: bias, ReLU, back to NCHW
// backward   products (O, n P)    = dy (y > 0)          one pass: gather, ReLU's mask, dy = 0
//            db += row sums of products
//            dW += products columns^T                   (forward's columns, kept when they fit keptColumnsBudget,
//                                                        else made again)
//            columns = W^T products,  dx += col2im(columns)
// ```
// where forward's columns are gathered from the images by orthohash's own GEMM (`packsColumns`)
// or made by im2col for OpenBLAS. The last pass to read `products` in forward (bias and ReLU) and
// `columns` in backward (col2im) leaves zeros behind it, so that the next GEMM into them adds into
// zeros (beta = 1) instead of clearing them first: the rule Linear.swift states for the whole
// step. A buffer another pass filled (backward's gradient gather, im2col into the scratch columns)
// is cleared by the GEMM wrapper's memset once, before the next GEMM into it.
// Folding the chunk's images into one GEMM gives the late layers (13 x 13 in AlexNet, 7 x 7 here)
// a wide N instead of one narrow GEMM per image. The chunk is as many images as keep the columns
// within `columnBudget` floats.
//
// Dimensions: B = rows, C = input channels, H x W input, k = kernel, O = output channels,
// Ho x Wo output, P = Ho Wo.

import CKernels
#if canImport(Glibc)
import Glibc
#endif

final class Conv2dLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])]
    let kernel: Int, stride: Int, padding: Int, relu: Bool
    private(set) var offset = 0
    /// Images per GEMM.
    private(set) var chunk = 1
    /// Images per GEMM in forward: `chunk`, or where forward gathers its columns (no column
    /// buffer), as many as keep the products within `columnBudget` floats: wider GEMMs, fewer
    /// passes, parts of the columns that balance over the threads.
    private(set) var forwardChunk = 1
    private var columns = FloatBuffer(count: 0)       // (C k k, chunk P)
    /// Training's columns of every chunk, kept for backward when they fit `keptColumnsBudget`.
    private var kept = FloatBuffer(count: 0)          // (B / chunk) x (C k k, chunk P)
    private var products = FloatBuffer(count: 0)      // (O, max(chunk, forwardChunk) P)
    private var activations = FloatBuffer(count: 0)   // (B, O, P)
    private var evaluation = FloatBuffer(count: 0)    // (B, O, P) for `infer`
    private(set) var outputBound: MagnitudeBound? = nil
    /// Floats at the start of `products` and `columns` that may not be zero (0: all zeros): what
    /// the next GEMM into them must clear first.
    private var productsDirty = 0, columnsDirty = 0
    private var threads = LayerThreads()
    /// The weights packed for oh_conv_gemm_forward (when `packsColumns`) or the direct kernels,
    /// packed by each forward, and for backward's input gradient by each backward.
    private var packedWeights = FloatBuffer(count: 0)
    /// The direct kernels' padded planes: a chunk's images (forward, and backward's weight
    /// gradient), or its padded output gradient (backward's input gradient).
    private var padded = FloatBuffer(count: 0)
    /// The direct weight gradient's output gradient, position-major in panels of 32 outputs, a chunk's.
    private var positionMajor = FloatBuffer(count: 0)
    /// The direct weight gradient's sums, transposed (C k k, O): zeros between backward passes.
    private var weightGradientT = FloatBuffer(count: 0)
    /// Images per chunk of the direct kernels, and per chunk of backward.
    private(set) var directChunk = 1, backwardChunk = 1

    /// Floats of im2col's columns per chunk (4 MB): small enough that the columns im2col writes are
    /// still in the cache when the GEMM packs them, large enough that the late layers' GEMMs are
    /// wide. Measured against 32 MB (the budget before): the cnn 1.18x, AlexNet 1.06x at 1 thread.
    static let columnBudget = 1 << 20
    /// Tests set smaller budgets to fold fewer images into each GEMM.
    nonisolated(unsafe) static var columnBudgetOverride: Int? = nil
    /// Floats of a batch's columns kept from forward for backward (256 MB): backward then skips
    /// its im2col (the cnn's 40M at 256 images are kept; AlexNet's first two layers at 64 images,
    /// 70M and 75M, are made again). Tests set 0 to take the other path.
    nonisolated(unsafe) static var keptColumnsBudget = 1 << 26
    /// Tests set it to take one forward path or the other (nil: `packsColumns`'s own choice).
    nonisolated(unsafe) static var packColumnsOverride: Bool? = nil
    /// Tests set it to take the direct kernels wherever the layer allows them (true) or nowhere
    /// (false); nil: the measured choice (`directForward`, `directWeightGradient`,
    /// `directInputGradient`).
    nonisolated(unsafe) static var directOverride: Bool? = nil

    /// Whether forward is direct (oh_direct_conv_forward: the products from the padded images, no
    /// columns): where the CPU has orthohash's GEMM (AVX-512) and an image's padded planes are
    /// addressed with 32-bit offsets. Measured on one thread against the gathered GEMM (then the
    /// default) at batch 16, /tmp harness, alternated: AlexNet's conv1 1.55x, conv2 1.12x, conv3-5
    /// 1.15-1.20x; the cnn's conv1 1.25x, conv2 1.40x.
    var directForward: Bool {
        oh_gemm_available() != 0 && Self.directOverride != false && checkedProduct([input.channels, paddedPlane, 2]).map { $0 < 1 << 31 } == true
    }
    /// Whether backward's weight gradient is direct (oh_direct_conv_weight_gradient: no im2col, no
    /// OpenBLAS; the output gradient transposed to position-major first): where forward is, for
    /// up to 128 output channels and at least 64 rows of C k k. Measured as above against im2col +
    /// OpenBLAS: AlexNet's conv1 (64 outputs) 1.63x, the cnn's conv2 (64) 1.35x; AlexNet's conv2-5
    /// (192-384) 0.89-1.08x before the transposition's cost, so they stay on OpenBLAS, as does
    /// the cnn's conv1 (25 rows: 1.1x alone, slower in the step, where its transposition and its
    /// 4 row tiles of 8, the last 1/8 full, cost more).
    var directWeightGradient: Bool { directForward && (Self.directOverride ?? (O <= 128 && fanIn >= 64)) }
    /// Whether backward's input gradient is direct: the convolution of the padded output gradient
    /// with the flipped kernel (stride 1 only, padding at most k - 1), where forward is, for up to
    /// 64 input channels. Measured as above against orthohash's GEMM + col2im: the cnn's conv2 (32
    /// input channels) 1.42x, AlexNet's conv2 (64) 1.05x; conv3-5 (192-384) 0.92-1.12x, mixed, so
    /// they keep the GEMM.
    var directInputGradient: Bool {
        directForward && stride == 1 && padding <= kernel - 1
            && checkedProduct([O, gradientPlane, 2]).map { $0 < 1 << 31 } == true && (Self.directOverride ?? (input.channels <= 64))
    }
    /// Floats of an image's planes padded for forward, and of its output gradient padded for the
    /// input gradient's convolution (by k - 1 - padding).
    var paddedPlane: Int { (input.height + 2 * padding) * (input.width + 2 * padding) }
    var gradientPlane: Int { (output.height + 2 * (kernel - 1 - padding)) * (output.width + 2 * (kernel - 1 - padding)) }
    /// Panels of 32 outputs of the direct kernels.
    static func directPanels(_ outputs: Int) -> Int { (outputs + 31) / 32 }

    /// Whether forward's GEMM gathers its columns from the images (oh_conv_gemm_forward: no im2col
    /// pass, no copy of the columns, the weights packed once per forward instead of once per
    /// chunk, chunks as large as the products allow) rather than im2col then OpenBLAS: where the
    /// CPU has orthohash's own GEMM (AVX-512) and the stride is at most 4, which its packing reads
    /// with masked loads and permutes instead of gathers. Measured on one thread against im2col +
    /// OpenBLAS at batch 64 (/tmp harness, alternated): AlexNet's conv1 0.98x (1.0x in the step,
    /// where its larger chunks split better over 2 threads), conv2-5 1.00-1.11x.
    var packsColumns: Bool {
        // A forward chunk's images (as many as fit the products' budget) are addressed with
        // 32-bit offsets.
        let fits = kernel <= 32 && checkedProduct([input.count, Self.imagesWithin(O * P)]).map { $0 < 1 << 31 } == true
        if let forced = Self.packColumnsOverride { return forced && fits && oh_gemm_available() != 0 }
        return fits && oh_gemm_available() != 0 && stride <= 4
    }

    /// `name`: the PyTorch module's name, e.g. "features.0".
    init(name: String, input: SampleShape, outputs O: Int, kernel k: Int, stride: Int = 1, padding: Int = 0, relu: Bool) {
        precondition(k >= 1 && stride >= 1 && padding >= 0, "conv \(name): kernel \(k), stride \(stride), padding \(padding)")
        let Ho = (input.height + 2 * padding - k) / stride + 1, Wo = (input.width + 2 * padding - k) / stride + 1
        precondition(Ho >= 1 && Wo >= 1, "conv \(name): a \(k)x\(k) kernel does not fit \(input)")
        self.input = input
        output = SampleShape(channels: O, height: Ho, width: Wo)
        kernel = k; self.stride = stride; self.padding = padding; self.relu = relu
        tensors = [("\(name).weight", [O, input.channels, k, k]), ("\(name).bias", [O])]
    }

    var O: Int { output.channels }
    var P: Int { output.height * output.width }
    /// C k k: a weight row, a column of im2col.
    var fanIn: Int { input.channels * kernel * kernel }

    /// body(range) over [0, total) in ranges of whole granules (orthohash's GEMM's panels of 32
    /// columns or 8 rows; the direct kernels' tiles: 1), about 4 per thread (so that a slowed
    /// thread leaves little to wait for) and at least `minimum` granules each, taken by the step's
    /// threads in turn (`parallelUnits`), timed as a GEMM; returns the largest of body's results
    /// (magnitudes' bits).
    @discardableResult
    func parallelRanges(_ total: Int, granule: Int = 1, minimum: Int = 1, _ body: (Range<Int>) -> UInt32) -> UInt32 {
        let granules = (total + granule - 1) / granule, width = granule * max(minimum, granules / max(1, 4 * threads.count))
        let count = (total + width - 1) / width
        return BLAS.timed {
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: max(1, count)) { tops in
                tops.initialize(repeating: 0)
                parallelUnits(count, threads: threads.count) { unit in
                    tops[unit] = body((unit * width)..<min(total, (unit + 1) * width))
                }
                return tops.max() ?? 0
            }
        }
    }

    /// Packs W into the direct kernels' panels (`flipped`: for the input gradient), a panel per unit.
    private func packDirect(_ w: UnsafePointer<Float>, flipped: Bool) {
        let panels = Self.directPanels(flipped ? input.channels : O), out = packedWeights.pointer
        let (O, C, k) = (O, input.channels, kernel)
        parallelUnits(panels, threads: threads.count) { panel in oh_direct_pack_weights(out, w, O, C, k, flipped ? 1 : 0, panel, 1) }
    }

    /// Images of `floats` each that fit the budget of a chunk's columns or products (at least 1).
    static func imagesWithin(_ floats: Int) -> Int { max(1, (columnBudgetOverride ?? columnBudget) / max(1, floats)) }

    static func chunk(batch B: Int, fanIn: Int, positions P: Int) -> Int { max(1, min(B, imagesWithin(fanIn * P))) }

    func forwardChunk(batch B: Int) -> Int {
        packsColumns ? max(1, min(B, Self.imagesWithin(O * P))) : Self.chunk(batch: B, fanIn: fanIn, positions: P)
    }

    /// Images per chunk of the direct kernels: as many as keep the largest of their buffers per
    /// image (padded images, padded output gradient, the position-major output gradient and the
    /// gradient's gathered products) within the budget.
    func directChunk(batch B: Int) -> Int {
        let perImage = max(input.channels * paddedPlane, directWeightGradient ? O * P : 0, directInputGradient ? O * gradientPlane : 0)
        return max(1, min(B, Self.imagesWithin(perImage)))
    }

    /// Images per chunk of backward: the columns' chunk, or the direct kernels' where backward
    /// makes no columns (both of its GEMMs direct), else the smaller.
    func backwardChunk(batch B: Int) -> Int {
        let columns = Self.chunk(batch: B, fanIn: fanIn, positions: P)
        if directWeightGradient && directInputGradient { return directChunk(batch: B) }
        return directWeightGradient || directInputGradient ? min(columns, directChunk(batch: B)) : columns
    }

    /// Floats of the packed weights: W for forward's GEMM, W^T for backward's, in turn (or the
    /// direct kernels' panels).
    var packedWeightsFloats: Int {
        max(packsColumns || directForward ? max(oh_gemm_packed_a_floats(O, fanIn), oh_gemm_packed_a_floats(fanIn, O)) : 0,
            directForward ? oh_direct_packed_floats(O, fanIn) : 0,
            directInputGradient ? oh_direct_packed_floats(input.channels, O * kernel * kernel) : 0)
    }

    /// Floats of the direct kernels' buffers: padded planes, the position-major gradient, the
    /// transposed weight gradient.
    func directFloats(batch B: Int) -> Int? {
        guard directForward else { return 0 }
        let nf = directChunk(batch: B), nb = backwardChunk(batch: B)
        guard let x = checkedProduct([max(nf, nb), input.channels, paddedPlane]), let g = checkedProduct([nb, O, gradientPlane]),
              let t = checkedProduct([nb, P, Self.directPanels(O) * 32]) else { return nil }
        return max(x, directInputGradient ? g : 0) + (directWeightGradient ? t + fanIn * O : 0)
    }

    func workspaceFloats(batch B: Int) -> Int? {
        let n = Self.chunk(batch: B, fanIn: fanIn, positions: P), nf = forwardChunk(batch: B), nb = backwardChunk(batch: B)
        guard let c = checkedProduct([fanIn, n, P]), let y = checkedProduct([O, max(n, nf, nb), P]), let a = checkedProduct([B, O, P, 2]),
              let k = checkedProduct([B, fanIn, P]), let d = directFloats(batch: B) else { return nil }
        return c + y + a + (keeps(batch: B) ? k : 0) + packedWeightsFloats + d
    }

    /// Whether training's forward keeps its columns for backward: when they fit the budget, and
    /// forward makes them (not when it packs them straight from the images).
    func keeps(batch B: Int) -> Bool { !packsColumns && !directForward && B * fanIn * P <= Self.keptColumnsBudget }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        self.offset = offset
        chunk = Self.chunk(batch: B, fanIn: fanIn, positions: P)
        forwardChunk = forwardChunk(batch: B)
        directChunk = directChunk(batch: B)
        backwardChunk = backwardChunk(batch: B)
        columns = FloatBuffer(count: fanIn * chunk * P)
        productsDirty = 0; columnsDirty = 0
        kept = FloatBuffer(count: keeps(batch: B) ? B * fanIn * P : 0)
        packedWeights = FloatBuffer(count: packedWeightsFloats)
        let direct = directForward
        padded = FloatBuffer(count: direct ? max(max(directChunk, backwardChunk) * input.channels * paddedPlane,
                                                 directInputGradient ? backwardChunk * O * gradientPlane : 0) : 0)
        positionMajor = FloatBuffer(count: directWeightGradient ? backwardChunk * P * Self.directPanels(O) * 32 : 0)
        weightGradientT = FloatBuffer(count: directWeightGradient ? fanIn * O : 0)
        products = FloatBuffer(count: O * max(chunk, forwardChunk, backwardChunk) * P)
        activations = FloatBuffer(count: B * O * P)
        evaluation = FloatBuffer(count: B * O * P)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {
        initialiseUniform(p + offset, weights: O * fanIn, biases: O, fanIn: fanIn, &rng)
    }

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        outputBound = MagnitudeBound(bits: run(x, B: B, parameters: p, into: activations.pointer, keeping: kept.count > 0))
        return UnsafePointer(activations.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> {
        run(x, B: B, parameters: p, into: evaluation.pointer, keeping: false)
        return UnsafePointer(evaluation.pointer)
    }

    /// The forward pass into `y` (B, O, P); returns the largest |y| as a magnitude's bits.
    @discardableResult
    private func run(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                     keeping: Bool) -> UInt32 {
        let CHW = input.count, OP = output.count, threads = self.threads.count, split = self.threads.gemmSplit
        let (C, H, W, Ho, Wo, k, s, pad) = (input.channels, input.height, input.width, output.height, output.width, kernel, stride, padding)
        let scratch = columns.pointer, prods = products.pointer, bias = p + offset + O * fanIn, P = P, O = O, relu: Int32 = relu ? 1 : 0
        var top: UInt32 = 0
        var geometry = oh_conv_geometry(C: C, H: H, W: W, k: k, stride: s, pad: pad, Ho: Ho, Wo: Wo)
        if directForward {
            packDirect(p + offset, flipped: false)
            let panels = Self.directPanels(O), packed = UnsafePointer(packedWeights.pointer), planes = padded.pointer
            for first in Swift.stride(from: 0, to: B, by: directChunk) {
                let n = min(directChunk, B - first)
                forEachPart(n * C, threads: threads) { r in
                    oh_pad_planes(planes, x + first * CHW, C, CHW, H * W, H, W, pad, r.lowerBound, r.count)
                    return 0
                }
                top = max(top, parallelRanges(panels * ((n * P + 7) / 8)) { r in
                    var largest: UInt32 = 0
                    let done = oh_direct_conv_forward(y + first * OP, planes, packed, bias, O, &geometry, n, relu, 0, r.lowerBound, r.count, &largest)
                    precondition(done == 1, "conv: oh_direct_conv_forward refused a layer directForward chose")
                    return largest
                })
            }
            return top
        }
        let packs = packsColumns
        if packs { oh_gemm_pack_a(0, O, fanIn, p + offset, fanIn, packedWeights.pointer) }
        let chunk = packs ? forwardChunk : chunk
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            if packs {
                if productsDirty > 0 { memset(prods, 0, O * n * P * MemoryLayout<Float>.stride) }
                let columns = n * P, packed = UnsafePointer(packedWeights.pointer), images = x + first * CHW
                parallelRanges(columns, granule: 32, minimum: 2) { r in
                    let done = oh_conv_gemm_forward(prods, columns, packed, O, images, &geometry, n, r.lowerBound, r.count)
                    precondition(done == 1, "conv: oh_conv_gemm_forward refused a layer packsColumns chose")
                    return 0
                }
            } else {
                // Training keeps each chunk's columns at its first image's place, for backward.
                let cols = keeping ? kept.pointer + first * fanIn * P : scratch
                forEachPart(fanIn, threads: threads) { r in
                    oh_im2col(cols, n * P, x + first * CHW, n, C, H, W, k, s, pad, Ho, Wo, r.lowerBound, r.count)
                    return 0
                }
                if !keeping { columnsDirty = max(columnsDirty, fanIn * n * P) }
                BLAS.gemm(transA: false, transB: false, m: O, n: n * P, k: fanIn, p + offset, lda: fanIn,
                          cols, ldb: n * P, beta: productsDirty == 0 ? 1 : 0, prods, ldc: n * P, split: split)
            }
            top = max(top, forEachPart(O, threads: threads) { r in
                oh_conv_output_clear(y + first * OP, prods, n * P, bias, n, O, P, relu, r.lowerBound, r.count)
            })
            if O * n * P >= productsDirty { productsDirty = 0 }
        }
        return top
    }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness) {
        let CHW = input.count, OP = output.count, threads = self.threads.count, split = self.threads.gemmSplit
        let (C, H, W, Ho, Wo, k, s, pad) = (input.channels, input.height, input.width, output.height, output.width, kernel, stride, padding)
        let cols = columns.pointer, prods = products.pointer, y = activations.pointer, P = P, O = O, relu: Int32 = relu ? 1 : 0
        let dWeight = g + offset, dBias = g + offset + O * fanIn
        var dyTop: UInt32 = 0
        var geometry = oh_conv_geometry(C: C, H: H, W: W, k: k, stride: s, pad: pad, Ho: Ho, Wo: Wo)
        let directW = directWeightGradient, directX = directInputGradient && dx != nil
        // The input gradient: direct (the flipped kernel packed here), or orthohash's GEMM where
        // the CPU has it (W^T packed once here, each chunk's columns overwritten: no clearing
        // pass), else OpenBLAS's.
        let packs = !directX && packedWeights.count > 0 && dx != nil
        if directX { packDirect(p + offset, flipped: true) }
        if packs { oh_gemm_pack_a(1, fanIn, O, p + offset, fanIn, packedWeights.pointer) }
        let chunk = backwardChunk, planes = padded.pointer, dyT = positionMajor.pointer, dWT = weightGradientT.pointer
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            // The gradient's rows gathered, then their sums, by the thread that gathered them.
            dyTop = max(dyTop, forEachPart(O, threads: threads) { r in
                let top = oh_conv_gather_gradient(prods, n * P, dy + first * OP, y + first * OP, n, O, P, relu, r.lowerBound, r.count)
                oh_row_sums_add(dBias + r.lowerBound, prods + r.lowerBound * n * P, r.count, n * P)
                return top
            })
            productsDirty = max(productsDirty, O * n * P)
            if directW {
                // dW^T (C k k, O) += the padded images' windows times the gradient, position-major.
                forEachPart(n * C, threads: threads) { r in
                    oh_pad_planes(planes, x + first * CHW, C, CHW, H * W, H, W, pad, r.lowerBound, r.count)
                    return 0
                }
                forEachPart(n * P, threads: threads) { r in
                    oh_transpose_panels(dyT, prods, n * P, O, n * P, r.lowerBound, r.count)
                    return 0
                }
                parallelRanges((fanIn + 7) / 8 * Self.directPanels(O)) { r in
                    let done = oh_direct_conv_weight_gradient(dWT, planes, dyT, O, &geometry, n, r.lowerBound, r.count)
                    precondition(done == 1, "conv: oh_direct_conv_weight_gradient refused a layer directWeightGradient chose")
                    return 0
                }
            } else {
                let forwardColumns = kept.count > 0 ? UnsafePointer(kept.pointer + first * fanIn * P) : UnsafePointer(cols)
                if kept.count == 0 {
                    forEachPart(fanIn, threads: threads) { r in
                        oh_im2col(cols, n * P, x + first * CHW, n, C, H, W, k, s, pad, Ho, Wo, r.lowerBound, r.count)
                        return 0
                    }
                    columnsDirty = max(columnsDirty, fanIn * n * P)
                }
                BLAS.gemm(transA: false, transB: true, m: O, n: fanIn, k: n * P, prods, lda: n * P,
                          forwardColumns, ldb: n * P, beta: 1, dWeight, ldc: fanIn, split: split)
            }
            if let dx {
                if directX {
                    // dx += the padded gradient (the gathered products, (O, n P)) convolved with
                    // the flipped kernel: stride 1, padding k - 1 - pad, C outputs.
                    let gp = k - 1 - pad
                    forEachPart(n * O, threads: threads) { r in
                        oh_pad_planes(planes, prods, O, P, n * P, Ho, Wo, gp, r.lowerBound, r.count)
                        return 0
                    }
                    var flipped = oh_conv_geometry(C: O, H: Ho, W: Wo, k: k, stride: 1, pad: gp, Ho: H, Wo: W)
                    let packed = UnsafePointer(packedWeights.pointer)
                    parallelRanges(Self.directPanels(C) * ((n * H * W + 7) / 8)) { r in
                        var largest: UInt32 = 0
                        let done = oh_direct_conv_forward(dx + first * CHW, planes, packed, nil, C, &flipped, n, 0, 1, r.lowerBound, r.count, &largest)
                        precondition(done == 1, "conv: oh_direct_conv_forward refused a layer directInputGradient chose")
                        return 0
                    }
                    continue
                }
                if packs {
                    // Units of C's longer side: the columns (whole panels), or the rows (whole
                    // 8-row panels of W^T: AlexNet's conv4-5, one 13 x 13 image per chunk).
                    let columns = n * P, packed = UnsafePointer(packedWeights.pointer), byColumns = columns >= fanIn
                    parallelRanges(byColumns ? columns : fanIn, granule: byColumns ? 32 : oh_gemm_row_block, minimum: 2) { r in
                        let done = byColumns
                            ? oh_gemm_packed(packed, fanIn, 0, fanIn, r.count, O, 0, prods + r.lowerBound, columns, cols + r.lowerBound, columns, 0)
                            : oh_gemm_packed(packed, fanIn, r.lowerBound, r.count, columns, O, 0, prods, columns, cols, columns, 0)
                        precondition(done == 1, "conv: oh_gemm_packed refused a layer packsColumns chose")
                        return 0
                    }
                } else {
                    BLAS.gemm(transA: true, transB: false, m: fanIn, n: n * P, k: O, p + offset, lda: fanIn,
                              prods, ldb: n * P, beta: columnsDirty == 0 ? 1 : 0, cols, ldc: n * P, split: split)
                }
                forEachPart(C, threads: threads) { r in
                    oh_col2im_add_clear(dx + first * CHW, cols, n * P, n, C, H, W, k, s, pad, Ho, Wo, r.lowerBound, r.count)
                    return 0
                }
                if fanIn * n * P >= columnsDirty { columnsDirty = 0 }
            }
        }
        if directW {
            // dW += (dW^T)^T, dW^T back to zeros.
            let fanIn = fanIn
            forEachPart(O, threads: threads) { r in
                oh_transpose_add_clear(dWeight, fanIn, dWT, O, fanIn, r.lowerBound, r.count)
                return 0
            }
        }
        // Each weight gradient sums N P products of dy and x (every rank's rows, every position),
        // each bias gradient N P values of dy.
        let terms = check.rows * P, dyBound = MagnitudeBound(bits: dyTop)
        check.slice(offset, count: O * (fanIn + 1)) {
            inputBound.map { GradientFiniteness.proven(dy: dyBound, x: $0, bias: true, rows: terms) } ?? false
        }
    }
}
