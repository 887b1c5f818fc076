// Exact Hamming search: the k nearest database codes of each query (CKernels' hamming.c).
// Dimensions: Q = queries, M = database rows, k = neighbours, bytes = code length in bytes.

import CKernels
import Dispatch

public enum HammingSearch {
    /// The kernel this CPU runs: 3 AVX-512 with VPOPCNTDQ, 2 AVX2, 1 POPCNT, 0 portable.
    public static let level = Int(oh_hamming_level())

    public static let kernelNames = ["portable C", "POPCNT", "AVX2", "AVX-512 VPOPCNTDQ"]
    public static var kernelName: String { kernelNames[level] }

    /// The widest codes and the largest database the kernel takes (its keys pack both in 64 bits).
    public static let maxCodeBytes = Int(OH_HAMMING_MAX_CODE_BYTES)
    public static let maxRows = Int(OH_HAMMING_MAX_ROWS)

    /// For each of `queries` codes (Q, bytes) the `k` rows of `database` (M, bytes) nearest by
    /// Hamming distance, ties by ascending row (faiss's order): ids (Q, k) and distances (Q, k),
    /// ascending by (distance, row). Queries are spread over `threads` threads, each of which
    /// reads the database once per block of queries, in cache-sized chunks; the database is read
    /// where it lies (a memory-mapped file is not copied). `level` forces a slower kernel.
    /// Preconditions: 1 <= k <= M <= maxRows, 1 <= bytes <= maxCodeBytes. Throws when the
    /// candidate buffers (at most 64 MB per thread, or 4 queries' worth) cannot be allocated.
    public static func nearest(queries: UnsafePointer<UInt8>, count Q: Int, database: UnsafePointer<UInt8>, count M: Int,
                               codeBytes: Int, k: Int, threads: Int = 1, level: Int? = nil) throws -> (ids: [Int64], distances: [Int32]) {
        precondition(k >= 1 && k <= M && M <= maxRows && codeBytes >= 1 && codeBytes <= maxCodeBytes,
                     "search k \(k) of \(M) codes of \(codeBytes) bytes")
        var ids = [Int64](repeating: 0, count: Q * k)
        var distances = [Int32](repeating: 0, count: Q * k)
        let parts = max(1, min(threads, Q))
        let kernel = Int32(min(level ?? Self.level, Self.level))
        var failed = [Bool](repeating: false, count: parts)
        ids.withUnsafeMutableBufferPointer { idOut in
            distances.withUnsafeMutableBufferPointer { distanceOut in
                failed.withUnsafeMutableBufferPointer { failedOut in
                    let idBase = idOut.baseAddress!, distanceBase = distanceOut.baseAddress!, failedBase = failedOut.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: parts) { p in
                        let lo = Q * p / parts, hi = Q * (p + 1) / parts
                        guard hi > lo else { return }
                        let status = oh_hamming_topk(queries + lo * codeBytes, hi - lo, database, M, codeBytes, k,
                                                     idBase + lo * k, distanceBase + lo * k, kernel)
                        precondition(status != -1, "Hamming search: sizes the preconditions allow were refused")
                        failedBase[p] = status != 0
                    }
                }
            }
        }
        if failed.contains(true) {
            throw OrthoHashError("Hamming search: out of memory for the candidates of \(k) neighbours per query (\(threads) threads)",
                                 hint: "a smaller k or fewer threads")
        }
        return (ids, distances)
    }
}
