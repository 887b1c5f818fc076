// 2-D convolution (PyTorch's Conv2d: weight (O, C, k, k), bias (O), zero padding), with an
// optional ReLU after it, over NCHW rows.
//
// Through the one GEMM wrapper, with the batch folded into the GEMM in chunks of images:
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
// The last pass to read `products` in forward (bias and ReLU) and `columns` in backward (col2im)
// leaves zeros behind it, so that the next GEMM into them adds into zeros (beta = 1) instead of
// clearing them first: the rule Linear.swift states for the whole step. A buffer another pass
// filled (backward's gradient gather, im2col into the scratch columns) is cleared by the GEMM
// wrapper's memset once, before the next GEMM into it.
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
    /// The weights packed for oh_conv_gemm_forward (when `packsColumns`), packed by each forward.
    private var packedWeights = FloatBuffer(count: 0)

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

    /// body(range) over [0, total) in ranges of whole panels of `panel` (orthohash's GEMM's 32
    /// columns or 8 rows), about 4 per thread (so that a slowed thread leaves little to wait for)
    /// and at least 2 panels each, taken by the step's threads in turn (`parallelUnits`), timed
    /// as a GEMM.
    func parallelPanels(_ total: Int, panel: Int, _ body: (Range<Int>) -> Void) {
        let panels = (total + panel - 1) / panel, width = panel * max(2, panels / max(1, 4 * threads.count))
        BLAS.timed {
            parallelUnits((total + width - 1) / width, threads: threads.count) { unit in
                body((unit * width)..<min(total, (unit + 1) * width))
            }
        }
    }

    /// Images of `floats` each that fit the budget of a chunk's columns or products (at least 1).
    static func imagesWithin(_ floats: Int) -> Int { max(1, (columnBudgetOverride ?? columnBudget) / max(1, floats)) }

    static func chunk(batch B: Int, fanIn: Int, positions P: Int) -> Int { max(1, min(B, imagesWithin(fanIn * P))) }

    func forwardChunk(batch B: Int) -> Int {
        packsColumns ? max(1, min(B, Self.imagesWithin(O * P))) : Self.chunk(batch: B, fanIn: fanIn, positions: P)
    }

    /// Floats of the packed weights: W for forward's GEMM, W^T for backward's, in turn.
    var packedWeightsFloats: Int { packsColumns ? max(oh_gemm_packed_a_floats(O, fanIn), oh_gemm_packed_a_floats(fanIn, O)) : 0 }

    func workspaceFloats(batch B: Int) -> Int? {
        let n = Self.chunk(batch: B, fanIn: fanIn, positions: P), nf = forwardChunk(batch: B)
        guard let c = checkedProduct([fanIn, n, P]), let y = checkedProduct([O, max(n, nf), P]), let a = checkedProduct([B, O, P, 2]),
              let k = checkedProduct([B, fanIn, P]) else { return nil }
        return c + y + a + (keeps(batch: B) ? k : 0) + packedWeightsFloats
    }

    /// Whether training's forward keeps its columns for backward: when they fit the budget, and
    /// forward makes them (not when it packs them straight from the images).
    func keeps(batch B: Int) -> Bool { !packsColumns && B * fanIn * P <= Self.keptColumnsBudget }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        self.offset = offset
        chunk = Self.chunk(batch: B, fanIn: fanIn, positions: P)
        forwardChunk = forwardChunk(batch: B)
        columns = FloatBuffer(count: fanIn * chunk * P)
        productsDirty = 0; columnsDirty = 0
        kept = FloatBuffer(count: keeps(batch: B) ? B * fanIn * P : 0)
        packedWeights = FloatBuffer(count: packedWeightsFloats)
        products = FloatBuffer(count: O * max(chunk, forwardChunk) * P)
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
        let packs = packedWeights.count > 0
        var geometry = oh_conv_geometry(C: C, H: H, W: W, k: k, stride: s, pad: pad, Ho: Ho, Wo: Wo)
        if packs { oh_gemm_pack_a(0, O, fanIn, p + offset, fanIn, packedWeights.pointer) }
        let chunk = packs ? forwardChunk : chunk
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            if packs {
                if productsDirty > 0 { memset(prods, 0, O * n * P * MemoryLayout<Float>.stride) }
                let columns = n * P, packed = UnsafePointer(packedWeights.pointer), images = x + first * CHW
                parallelPanels(columns, panel: 32) { r in
                    let done = oh_conv_gemm_forward(prods, columns, packed, O, images, &geometry, n, r.lowerBound, r.count)
                    precondition(done == 1, "conv: oh_conv_gemm_forward refused a layer packsColumns chose")
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
        // The input gradient's GEMM by orthohash's where forward's is (W^T packed once here, each
        // chunk's columns overwritten: no clearing pass), else OpenBLAS's.
        let packs = packedWeights.count > 0 && dx != nil
        if packs { oh_gemm_pack_a(1, fanIn, O, p + offset, fanIn, packedWeights.pointer) }
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            // The gradient's rows gathered, then their sums, by the thread that gathered them.
            dyTop = max(dyTop, forEachPart(O, threads: threads) { r in
                let top = oh_conv_gather_gradient(prods, n * P, dy + first * OP, y + first * OP, n, O, P, relu, r.lowerBound, r.count)
                oh_row_sums_add(dBias + r.lowerBound, prods + r.lowerBound * n * P, r.count, n * P)
                return top
            })
            productsDirty = max(productsDirty, O * n * P)
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
            if let dx {
                if packs {
                    // Units of C's longer side: the columns (whole panels), or the rows (whole
                    // 8-row panels of W^T: AlexNet's conv4-5, one 13 x 13 image per chunk).
                    let columns = n * P, packed = UnsafePointer(packedWeights.pointer), byColumns = columns >= fanIn
                    parallelPanels(byColumns ? columns : fanIn, panel: byColumns ? 32 : oh_gemm_row_block) { r in
                        let done = byColumns
                            ? oh_gemm_packed(packed, fanIn, 0, fanIn, r.count, O, 0, prods + r.lowerBound, columns, cols + r.lowerBound, columns, 0)
                            : oh_gemm_packed(packed, fanIn, r.lowerBound, r.count, columns, O, 0, prods, columns, cols, columns, 0)
                        precondition(done == 1, "conv: oh_gemm_packed refused a layer packsColumns chose")
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
        // Each weight gradient sums N P products of dy and x (every rank's rows, every position),
        // each bias gradient N P values of dy.
        let terms = check.rows * P, dyBound = MagnitudeBound(bits: dyTop)
        check.slice(offset, count: O * (fanIn + 1)) {
            inputBound.map { GradientFiniteness.proven(dy: dyBound, x: $0, bias: true, rows: terms) } ?? false
        }
    }
}
