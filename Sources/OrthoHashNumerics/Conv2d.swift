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
//            dW += products columns^T                   (columns recomputed: cheaper than keeping them)
//            columns = W^T products,  dx += col2im(columns)
// ```
// Folding the chunk's images into one GEMM gives the late layers (13 x 13 in AlexNet, 7 x 7 here)
// a wide N instead of one narrow GEMM per image. The chunk is as many images as keep the columns
// within `columnBudget` floats.
//
// Dimensions: B = rows, C = input channels, H x W input, k = kernel, O = output channels,
// Ho x Wo output, P = Ho Wo.

import CKernels

final class Conv2dLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])]
    let kernel: Int, stride: Int, padding: Int, relu: Bool
    private(set) var offset = 0
    /// Images per GEMM.
    private(set) var chunk = 1
    private var columns = FloatBuffer(count: 0)       // (C k k, chunk P)
    private var products = FloatBuffer(count: 0)      // (O, chunk P)
    private var activations = FloatBuffer(count: 0)   // (B, O, P)
    private var evaluation = FloatBuffer(count: 0)    // (B, O, P) for `infer`
    private(set) var outputBound: MagnitudeBound? = nil

    /// Floats of im2col's columns per chunk (32 MB): large enough that the chunk's GEMMs are wide.
    static let columnBudget = 1 << 23
    /// Tests set smaller budgets to fold fewer images into each GEMM.
    nonisolated(unsafe) static var columnBudgetOverride: Int? = nil

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

    static func chunk(batch B: Int, fanIn: Int, positions P: Int) -> Int {
        max(1, min(B, (columnBudgetOverride ?? columnBudget) / max(1, fanIn * P)))
    }

    func workspaceFloats(batch B: Int) -> Int? {
        let n = Self.chunk(batch: B, fanIn: fanIn, positions: P)
        guard let c = checkedProduct([fanIn, n, P]), let y = checkedProduct([O, n, P]), let a = checkedProduct([B, O, P, 2]) else { return nil }
        return c + y + a
    }

    func bind(offset: Int, batch B: Int) {
        self.offset = offset
        chunk = Self.chunk(batch: B, fanIn: fanIn, positions: P)
        columns = FloatBuffer(count: fanIn * chunk * P)
        products = FloatBuffer(count: O * chunk * P)
        activations = FloatBuffer(count: B * O * P)
        evaluation = FloatBuffer(count: B * O * P)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {
        initialiseUniform(p + offset, weights: O * fanIn, biases: O, fanIn: fanIn, &rng)
    }

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        outputBound = MagnitudeBound(bits: run(x, B: B, parameters: p, into: activations.pointer))
        return UnsafePointer(activations.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> {
        run(x, B: B, parameters: p, into: evaluation.pointer)
        return UnsafePointer(evaluation.pointer)
    }

    /// The forward pass into `y` (B, O, P); returns the largest |y| as a magnitude's bits.
    @discardableResult
    private func run(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) -> UInt32 {
        let CHW = input.count, OP = output.count
        var top: UInt32 = 0
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            oh_im2col(columns.pointer, x + first * CHW, n, input.channels, input.height, input.width,
                      kernel, stride, padding, output.height, output.width)
            BLAS.gemm(transA: false, transB: false, m: O, n: n * P, k: fanIn, p + offset, lda: fanIn,
                      columns.pointer, ldb: n * P, beta: 0, products.pointer, ldc: n * P)
            top = max(top, oh_conv_output(y + first * OP, products.pointer, p + offset + O * fanIn, n, O, P, relu ? 1 : 0))
        }
        return top
    }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, mode: GradientMode, check: inout GradientFiniteness) {
        let CHW = input.count, OP = output.count
        let dWeight = g + offset, dBias = g + offset + O * fanIn
        if mode == .overwrite { dBias.update(repeating: 0, count: O) }
        var dyTop: UInt32 = 0
        for first in Swift.stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - first)
            dyTop = max(dyTop, oh_conv_gather_gradient(products.pointer, dy + first * OP, activations.pointer + first * OP, n, O, P, relu ? 1 : 0))
            oh_row_sums_add(dBias, products.pointer, O, n * P)
            oh_im2col(columns.pointer, x + first * CHW, n, input.channels, input.height, input.width,
                      kernel, stride, padding, output.height, output.width)
            let beta: Float = mode == .overwrite && first == 0 ? 0 : 1
            BLAS.gemm(transA: false, transB: true, m: O, n: fanIn, k: n * P, products.pointer, lda: n * P,
                      columns.pointer, ldb: n * P, beta: beta, dWeight, ldc: fanIn)
            if let dx {
                BLAS.gemm(transA: true, transB: false, m: fanIn, n: n * P, k: O, p + offset, lda: fanIn,
                          products.pointer, ldb: n * P, beta: 0, columns.pointer, ldc: n * P)
                oh_col2im_add(dx + first * CHW, columns.pointer, n, input.channels, input.height, input.width,
                              kernel, stride, padding, output.height, output.width)
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
