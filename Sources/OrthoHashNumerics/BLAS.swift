// The one caller of BLAS.

import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Row-major single-precision GEMM over OpenBLAS:
/// ```
/// C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C
/// ```
/// where op(X) is X or its transpose. Benchmarks can have it count the time spent inside
/// (`clock`), to report the share of a step that is GEMM; this module reads no clock itself.
public enum BLAS {
    /// Nanoseconds spent in `gemm` since the last `resetTimer()`, counted while `clock` is set
    /// (the training loop calls GEMMs from one thread; OpenBLAS's own threads are inside).
    public nonisolated(unsafe) static var gemmNanoseconds: UInt64 = 0
    /// A monotonic clock in nanoseconds, set by a benchmark to time the GEMMs (nil: no timing).
    public nonisolated(unsafe) static var clock: (() -> UInt64)? = nil

    public static func resetTimer() { gemmNanoseconds = 0 }

    /// Runs `body`, a GEMM made outside this wrapper (orthohash's own in CKernels, split over the
    /// step's threads by the caller), counting its time as the wrapper counts its own: called
    /// from the step's thread.
    @inline(__always)
    static func timed<T>(_ body: () -> T) -> T {
        guard let clock else { return body() }
        let start = clock()
        defer { gemmNanoseconds &+= clock() - start }
        return body()
    }

    /// One GEMM's shape as the wrapper was asked for it (before any split over threads).
    public struct Shape: Hashable, Sendable {
        public var transA: Bool, transB: Bool, m: Int, n: Int, k: Int
    }
    /// When set (a benchmark listing a step's GEMMs), told every GEMM the step asks for from its
    /// own thread (`timed`: the fused head's per-thread GEMMs are not among them).
    public nonisolated(unsafe) static var recorder: ((Shape) -> Void)? = nil

    /// Sets OpenBLAS's thread count (ranks x threads should not exceed the cores): the command
    /// line, once, for what runs outside a model.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Runs `body` with OpenBLAS at `n` threads, then restores the count: how the numerics use
    /// the budget they were given (a model's `threads`; 1 where the work is split over threads of
    /// their own), the only place besides `setThreads` that changes it.
    public static func withThreads<T>(_ n: Int, _ body: () throws -> T) rethrows -> T {
        let before = threads, wanted = max(1, n)
        if wanted != before { setThreads(wanted) }
        defer { if wanted != before { setThreads(before) } }
        return try body()
    }
    /// The kernel OpenBLAS chose for this CPU (OPENBLAS_CORETYPE overrides it), e.g. "Cooperlake".
    public static var kernel: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// A C narrower than this on both sides, over a depth of at least `kSplitDepth` per thread,
    /// is split along k instead (`gemmSplitK`).
    static let kSplitSide = 128, kSplitDepth = 8192
    /// Elements of op(B) from which a GEMM of at most 128 rows streams it (oh_gemm_small_rows):
    /// 1M, a weight of 4 MB; below, packing it costs little and OpenBLAS is as fast or faster.
    /// Tests lower it to reach that path with small matrices.
    nonisolated(unsafe) static var streamedMinimum = 1 << 20

    /// C (m, n) small and k long (a first convolution's weight gradient: 32 x 25 over 41,552
    /// positions of the cnn's chunk): split along C, each thread would pack all of the long
    /// operand and the parts ran slower than one thread (0.86 against 0.79 ms). Instead each
    /// part takes a slice of k: the first adds into C, the others into zeroed scratch, which is
    /// then added into C in part order. The sum's order depends on the number of parts only.
    static func gemmSplitK(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                           _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                           beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int, parts: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: m * n * (parts - 1)) { scratch in
            let s = scratch.baseAddress!
            parallel(parts) { i in
                let lo = k * i / parts, count = k * (i + 1) / parts - lo
                // op(A)'s columns lo..<lo+count: A's rows when transposed; op(B)'s rows likewise.
                let ai = transA ? a + lo * lda : a + lo, bi = transB ? b + lo : b + lo * ldb
                if i == 0 {
                    gemm(transA: transA, transB: transB, m: m, n: n, k: count, alpha: alpha, ai, lda: lda, bi, ldb: ldb,
                         beta: beta, c, ldc: ldc, timed: false)
                } else {
                    gemm(transA: transA, transB: transB, m: m, n: n, k: count, alpha: alpha, ai, lda: lda, bi, ldb: ldb,
                         beta: 0, s + (i - 1) * m * n, ldc: n, timed: false)
                }
            }
            for i in 1..<parts {
                let part = s + (i - 1) * m * n
                for r in 0..<m {
                    let row = c + r * ldc, from = part + r * n
                    for j in 0..<n { row[j] += from[j] }
                }
            }
        }
    }

    @inline(__always)
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
        _ b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int,
        timed: Bool = true, split: Int = 1
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm shapes m=\(m) n=\(n) k=\(k)")
        if m == 0 || n == 0 { return }
        if timed, let recorder { recorder(Shape(transA: transA, transB: transB, m: m, n: n, k: k)) }
        if split > 1 {
            // C in `split` parts along its longer side, one GEMM each on our own threads (OpenBLAS
            // at one thread, set by the caller): for steps whose other work runs on those threads,
            // so that no idle OpenBLAS thread spins beside them.
            let clock = timed ? BLAS.clock : nil
            let start = clock?() ?? 0
            if max(m, n) < kSplitSide && k >= kSplitDepth * split {
                gemmSplitK(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a, lda: lda, b, ldb: ldb,
                           beta: beta, c, ldc: ldc, parts: split)
                if let clock { gemmNanoseconds &+= clock() - start }
                return
            }
            let rows = m >= n, total = rows ? m : n, parts = min(split, total)
            parallel(parts) { i in
                let lo = total * i / parts, count = total * (i + 1) / parts - lo
                if rows {
                    gemm(transA: transA, transB: transB, m: count, n: n, k: k, alpha: alpha, a + (transA ? lo : lo * lda), lda: lda,
                         b, ldb: ldb, beta: beta, c + lo * ldc, ldc: ldc, timed: false)
                } else {
                    gemm(transA: transA, transB: transB, m: m, n: count, k: k, alpha: alpha, a, lda: lda,
                         b + (transB ? lo * ldb : lo), ldb: ldb, beta: beta, c + lo, ldc: ldc, timed: false)
                }
            }
            if let clock { gemmNanoseconds &+= clock() - start }
            return
        }
        // Callers that run GEMMs on several threads at once (the fused head) pass timed: false and
        // add their own time once, from one thread: the counter is not atomic.
        let clock = timed ? BLAS.clock : nil
        let start = clock?() ?? 0
        // beta = 0: clear C with memset and let BLAS accumulate (beta = 1). OpenBLAS's own pass to
        // clear C (sgemm_beta) was 3-5% of step time, slower than memset on every shape of the step.
        var effectiveBeta = beta
        if beta == 0 {
            if ldc == n {
                memset(c, 0, m * n * MemoryLayout<Float>.stride)
            } else {
                for r in 0..<m { memset(c + r * ldc, 0, n * MemoryLayout<Float>.stride) }
            }
            effectiveBeta = 1
        }
        // A batch through a large fully connected layer's forward (x W^T): orthohash's GEMM reads
        // the weight where it lies, where OpenBLAS copies all of it into its packed panels first
        // (151 MB for AlexNet's fc6). Measured on one thread, AlexNet's fc6 and fc7 at batch 64:
        // 1.47-1.54x OpenBLAS; in the step at 2 threads fc6's forward 15-18 -> 10-12 ms. Not for
        // backward's dy W (the weight's columns, 32 bytes from each row): 1.18-1.27x alone, but
        // slower than OpenBLAS in the step at 2 threads.
        if !transA && transB && alpha == 1 && m <= 128 && n * k >= Self.streamedMinimum && effectiveBeta == 1,
           oh_gemm_small_rows(m, n, k, a, lda, b, ldb, c, ldc) == 1 {
            if let clock { gemmNanoseconds &+= clock() - start }
            return
        }
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), effectiveBeta, c, Int32(ldc))
        if let clock { gemmNanoseconds &+= clock() - start }
    }
}
