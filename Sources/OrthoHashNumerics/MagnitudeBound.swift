// The largest magnitude of a buffer, and when sums of products bounded by it cannot overflow:
// how the training step knows that gradients are finite without reading them.

import CKernels

/// The largest magnitude in a buffer, kept as the bit pattern of a Float with the sign cleared
/// (what the kernels return): unsigned order is magnitude order, and NaN or Inf lie above every
/// finite value.
struct MagnitudeBound {
    var bits: UInt32

    init(bits: UInt32) { self.bits = bits }
    init(of x: UnsafePointer<Float>, count: Int) { bits = oh_max_magnitude_bits(x, count) }

    static let one = MagnitudeBound(bits: Float(1).bitPattern)

    var isFinite: Bool { bits < 0x7f80_0000 }
    var value: Double { Double(Float(bitPattern: bits)) }

    /// Whether every sum of `terms` products `a * b`, with |a| <= `a` and |b| <= `b`, is finite
    /// in float32, whatever the order of the additions and roundings. Exact arithmetic bounds
    /// such a sum by terms x a x b; rounding adds at most a factor (1 + 2^-24)^terms < 2 for
    /// terms < 2^23, hence the half of Float's largest value. `terms` should count every product
    /// that reaches the result, over all ranks when their gradients are summed.
    static func productSumsFinite(terms: Int, _ a: MagnitudeBound, _ b: MagnitudeBound) -> Bool {
        guard a.isFinite, b.isFinite, terms < 1 << 23 else { return false }
        return Double(terms) * a.value * b.value <= Double(Float.greatestFiniteMagnitude) / 2
    }
}


/// The finiteness check of the gradients one backward pass leaves, slice by slice, without a
/// pass over them where it can be helped.
///
/// A layer's weight gradient `dy^T x` is a sum of N products (N rows of the global batch), and
/// its bias gradient a sum of N values of dy. The passes that write x (bias + ReLU) and dy (ReLU
/// backward) also return their largest magnitude, so when N x max|dy| x max|x| is below half of
/// Float's largest value, no sum can overflow and the slice is finite without reading it (that
/// pass over the gradients was 1.3% of a step). N counts every rank's rows, so the bound also
/// covers the gradients summed over the ranks. Where the bound proves nothing, or the gradients
/// did not start at zero, the slice is read in full, and its largest magnitude times the ranks
/// is checked the same way for the sum.
struct GradientFiniteness {
    let gradients: UnsafePointer<Float>
    /// The gradients started at zero (or are overwritten), so bounds on a GEMM's inputs bound them.
    let provable: Bool
    /// Rows of the global batch: the products in each weight-gradient element, over all ranks.
    let rows: Int
    let ranks: Int
    private var state = GradientReport()

    init(gradients: UnsafePointer<Float>, provable: Bool, rows: Int, ranks: Int) {
        self.gradients = gradients; self.provable = provable; self.rows = rows; self.ranks = ranks
    }

    var report: GradientReport {
        var r = state
        r.sumFinite = r.finite && r.sumFinite
        return r
    }

    /// Reads the slice (not counted in `slicesRead`: gamma and beta, which are always read).
    mutating func read(_ start: Int, count: Int) { state.finite = readSlice(start, count: count) }

    /// A layer's slice: finite if `proof()` shows it (only asked when the gradients started at
    /// zero), else read. Nothing more is checked once a slice is not finite.
    mutating func slice(_ start: Int, count: Int, proof: () -> Bool) {
        guard state.finite else { return }
        if provable && proof() { return }
        state.slicesRead += 1
        state.finite = readSlice(start, count: count)
    }

    /// Whether `dy^T x` (and, with `bias`, the column sums of dy) over `rows` rows is finite.
    static func proven(dy: MagnitudeBound, x: MagnitudeBound, bias: Bool, rows: Int) -> Bool {
        MagnitudeBound.productSumsFinite(terms: rows, dy, x) && (!bias || MagnitudeBound.productSumsFinite(terms: rows, dy, .one))
    }

    private mutating func readSlice(_ start: Int, count: Int) -> Bool {
        let top = MagnitudeBound(of: gradients + start, count: count)
        if !MagnitudeBound.productSumsFinite(terms: ranks, top, .one) { state.sumFinite = false }
        return top.isFinite
    }
}
