// A backbone is a sequence of layers. Each layer is a class with its forward and backward pass
// side by side, its tensors' names and shapes (PyTorch's), and its own workspace sized once for
// the batch. Rows (samples) are laid out as PyTorch's NCHW: a row of a convolutional layer is
// (channels, height, width), a vector is (F, 1, 1), and flattening costs nothing.
//
// The rules every layer keeps (so that the step spends no pass on clearing buffers):
// - forward writes its whole output into a buffer of its own and keeps it for backward;
// - backward reads dy, the gradient of its output, and leaves it all zeros (its last read);
//   it adds the gradient of its input into dx, which holds zeros on entry (nil for the first
//   layer: no input gradient is needed), and adds its parameter gradients into the store's;
// - backward checks its slice of the gradients for finiteness (GradientFiniteness), proving it
//   from magnitude bounds where it can.
//
// Dimensions: B = rows of the local batch, N = rows of the global batch.


/// The shape of one row as it flows through a backbone: (channels, height, width).
public struct SampleShape: Codable, Equatable, Sendable, CustomStringConvertible {
    public var channels: Int, height: Int, width: Int
    public init(channels: Int, height: Int, width: Int) { self.channels = channels; self.height = height; self.width = width }
    /// A feature vector of `features` values.
    public init(features: Int) { self.init(channels: features, height: 1, width: 1) }
    public var count: Int { channels * height * width }
    public var description: String { height == 1 && width == 1 ? "\(channels)" : "\(channels)x\(height)x\(width)" }
}

/// Where a training step is, for layers that draw random numbers (dropout): a mask is a function
/// of (seed, global step, global row, layer), never of a stream whose state depends on how many
/// ranks share the batch, so N ranks train the model one process trains and a resumed run
/// draws what an uninterrupted one draws.
public struct StepRandomness: Equatable, Sendable {
    public var seed: UInt64
    /// The global step being taken (1-based).
    public var step: Int
    /// The global row of this rank's first local row.
    public var firstRow: Int
    public init(seed: UInt64, step: Int, firstRow: Int) { self.seed = seed; self.step = step; self.firstRow = firstRow }
}

/// How a layer uses the step's threads (HashModel chooses once): `count` threads for the passes
/// around its GEMMs, and the GEMMs split over the same threads (OpenBLAS at one thread meanwhile)
/// or left to OpenBLAS's own threads.
struct LayerThreads: Equatable {
    var count = 1
    var splitGEMMs = false
    /// The GEMM wrapper's `split`.
    var gemmSplit: Int { splitGEMMs ? count : 1 }
}

/// One layer of a backbone.
protocol Layer: AnyObject {
    var input: SampleShape { get }
    var output: SampleShape { get }
    /// Its tensors with their full names and shapes, in layout order (none for pooling).
    var tensors: [(name: String, shape: [Int])] { get }
    /// Floats of the workspace `bind` allocates for B rows (the memory check), nil on overflow.
    func workspaceFloats(batch B: Int) -> Int?
    /// Where its tensors start in the flat buffers, the rows its workspace holds and how it uses
    /// the step's threads. Called once.
    func bind(offset: Int, batch B: Int, threads: LayerThreads)
    /// PyTorch's default initialisation of its tensors, drawn from `rng` in layout order.
    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256)
    /// Training forward of B rows: returns the output (B, output.count), kept for backward.
    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>,
                 randomness: StepRandomness?) -> UnsafePointer<Float>
    /// The largest |y| of the last `forward`, when the layer has it without a pass of its own.
    var outputBound: MagnitudeBound? { get }
    /// Evaluation forward of B rows into buffers apart from training's (dropout off).
    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float>
    /// Backward of the last `forward` (x its input, `inputBound` the largest |x| if known).
    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness)
}

extension Layer {
    /// Elements of its tensors.
    var parameterCount: Int { tensors.reduce(0) { $0 + $1.shape.reduce(1, *) } }
}

/// PyTorch's default initialisation of Linear and Conv2d (kaiming_uniform with a = sqrt(5)):
/// weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the weight's elements first.
func initialiseUniform(_ p: UnsafeMutablePointer<Float>, weights: Int, biases: Int, fanIn: Int, _ rng: inout Xoshiro256) {
    let bound = 1 / Double(fanIn).squareRoot()
    for i in 0..<weights { p[i] = Float((rng.nextDouble() * 2 - 1) * bound) }
    for i in 0..<biases { p[weights + i] = Float((rng.nextDouble() * 2 - 1) * bound) }
}

/// Runs `body` over `count` items split into contiguous ranges, one per thread (at most
/// `threads`, at least `minimum` items each), and returns the largest of its results (the passes
/// return magnitudes' bits): the memory-bound passes around a layer's GEMMs, which would
/// otherwise leave the other cores idle. Each item is computed as it would be on one thread.
@discardableResult
func forEachPart(_ count: Int, threads: Int, minimum: Int = 1, _ body: (Range<Int>) -> UInt32) -> UInt32 {
    let parts = max(1, min(threads, count / max(1, minimum)))
    if parts == 1 { return body(0..<count) }
    return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: parts) { tops in
        parallel(parts) { i in tops[i] = body((count * i / parts)..<(count * (i + 1) / parts)) }
        return tops.max() ?? 0
    }
}
