// Dropout (PyTorch's nn.Dropout in training mode): each value kept with probability 1 - p and
// scaled by 1 / (1 - p), else 0; the identity in evaluation.
//
// The mask is a function of (seed, global step, layer, global row, column) (a counter-based hash,
// conv.c), never of a random stream's state: every rank draws the masks of its own rows of the
// global batch as one process would draw them, and a resumed run draws what an uninterrupted
// one draws. It is recomputed in the backward pass rather than kept.
//
// Dimensions: B = rows, F = values per row.

import CKernels

final class DropoutLayer: Layer {
    let input: SampleShape, output: SampleShape
    let tensors: [(name: String, shape: [Int])] = []
    /// The probability of dropping a value.
    let p: Float
    /// The layer's number in the backbone: part of each mask's key.
    let index: Int
    private var outputs = FloatBuffer(count: 0)       // (B, F)
    private var threads = LayerThreads()
    private(set) var outputBound: MagnitudeBound? = nil
    /// The step the last forward pass drew its masks for.
    private var randomness = StepRandomness(seed: 0, step: 0, firstRow: 0)

    init(input: SampleShape, p: Float = 0.5, index: Int) {
        precondition(p >= 0 && p < 1, "dropout probability \(p)")
        self.input = input; output = input; self.p = p; self.index = index
    }

    var threshold: UInt32 { UInt32((Double(p) * Double(1 << 24)).rounded()) }
    var scale: Float { 1 / (1 - p) }

    func workspaceFloats(batch B: Int) -> Int? { checkedProduct([B, input.count]) }

    func bind(offset: Int, batch B: Int, threads: LayerThreads) {
        self.threads = threads
        outputs = FloatBuffer(count: B * input.count)
    }

    func initialise(_ p: UnsafeMutablePointer<Float>, _ rng: inout Xoshiro256) {}

    func forward(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>, randomness: StepRandomness?) -> UnsafePointer<Float> {
        // Without a step (a test's single step), the masks of step 0.
        self.randomness = randomness ?? StepRandomness(seed: 0, step: 0, firstRow: 0)
        let r = self.randomness, F = input.count, y = outputs.pointer, (threshold, scale, index) = (threshold, scale, index)
        outputBound = MagnitudeBound(bits: forEachPart(B, threads: threads.count) { rows in
            oh_dropout_forward(y + rows.lowerBound * F, x + rows.lowerBound * F, rows.count, F, r.seed, UInt64(r.step), UInt64(index),
                               UInt64(r.firstRow + rows.lowerBound), threshold, scale)
        })
        return UnsafePointer(outputs.pointer)
    }

    func infer(_ x: UnsafePointer<Float>, B: Int, parameters p: UnsafePointer<Float>) -> UnsafePointer<Float> { x }

    func backward(_ dy: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, inputBound: MagnitudeBound?,
                  dx: UnsafeMutablePointer<Float>?, B: Int, parameters p: UnsafePointer<Float>,
                  gradients g: UnsafeMutablePointer<Float>, check: inout GradientFiniteness) {
        let F = input.count
        guard let dx else { return dy.update(repeating: 0, count: B * F) }
        let r = randomness, (threshold, scale, index) = (threshold, scale, index)
        forEachPart(B, threads: threads.count) { rows in
            oh_dropout_backward_clear(dx + rows.lowerBound * F, dy + rows.lowerBound * F, rows.count, F, r.seed, UInt64(r.step), UInt64(index),
                                      UInt64(r.firstRow + rows.lowerBound), threshold, scale)
            return 0
        }
    }
}
