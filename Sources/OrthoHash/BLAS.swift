import COpenBLAS
import Foundation

/// The only caller of BLAS. Row-major single-precision GEMM:
/// ```
/// C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C
/// ```
/// where op(X) is X or its transpose. It also counts the time spent inside, so benchmarks can
/// report the share of a step that is GEMM.
public enum BLAS {
    /// Nanoseconds spent in `gemm` since the last `resetTimer()` (this process, all threads of
    /// the caller; the training loop is single-threaded at this level).
    public nonisolated(unsafe) static var gemmNanoseconds: UInt64 = 0
    public nonisolated(unsafe) static var timing = false

    public static func resetTimer() { gemmNanoseconds = 0 }

    /// Sets OpenBLAS's thread count (ranks x threads should not exceed the cores).
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }

    @inline(__always)
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
        _ b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm shapes m=\(m) n=\(n) k=\(k)")
        if m == 0 || n == 0 { return }
        let start = timing ? DispatchTime.now().uptimeNanoseconds : 0
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
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), effectiveBeta, c, Int32(ldc))
        if timing { gemmNanoseconds &+= DispatchTime.now().uptimeNanoseconds - start }
    }
}

/// A fixed-size Float buffer, allocated once and freed with its owner. Training-loop code works
/// on its pointer; nothing in the loop allocates.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// What deinit does: free the memory, or hand borrowed memory (such as MPI's shared-memory
    /// window) back to its owner.
    private let release: (() -> Void)?

    public init(count: Int) {
        self.count = count
        pointer = FloatBuffer.allocate(count: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        release = nil
    }

    /// `count` zeroed floats at `pointer` that someone else owns; `release` returns them.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, release: @escaping () -> Void) {
        self.pointer = pointer
        self.count = count
        self.release = release
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { if let release { release() } else { free(pointer) } }

    /// Buffers of 2 MB or more are aligned to 2 MB and offered to the kernel for transparent huge
    /// pages (MADV_HUGEPAGE; a no-op where THP is off).
    private static func allocate(count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = count * MemoryLayout<Float>.stride
        let huge = 1 << 21
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, bytes >= huge ? huge : 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        if bytes >= huge { _ = madvise(raw, bytes, 14 /* MADV_HUGEPAGE */) }
        return raw.bindMemory(to: Float.self, capacity: count)
    }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}
