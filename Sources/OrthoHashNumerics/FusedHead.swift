// The head for many classes without its logits: the single-label cosine-margin softmax
// cross-entropy over C classes, computed block by block of classes so that the (B, C) cosines
// never exist (GLDv2: 256 x 81,313 floats, 83 MB written and read twice per step otherwise).
//
// Dimensions: B = rows of the local batch, N = rows of the global batch, K = bits, C = classes.
//
// With u = vn cb^T (cb: the codebook's unit rows, fixed), z = s (u - m y) and p = softmax(z):
// ```
// L_r       = lse(z_r) - z_r,t
// dL/du_r,c = s (p_r,c - y_r,c)
// dL/dvn_r  = sum_c dL/du_r,c cb_c = s (sum_c p_r,c cb_c - cb_t)
// ```
// so the gradient w.r.t. the unit codes is a softmax-weighted sum of codebook rows (attention
// with the codebook as keys and values). Each block of Cb classes: u_blk = vn cb_blk^T (a GEMM
// of (B, K) x (K, Cb), in cache), e = exp(z - s) in place (one C pass: also the row sums, the
// largest cosine and the target's cosine), then acc += e cb_blk (a GEMM of (B, Cb) x (Cb, K)).
// The shift s bounds every z (|u| <= 1), so it is the same for all blocks and no rescaling
// (as an online softmax needs) is required; exp(z - s) >= exp(-s (2 + m)) does not underflow
// for s (2 + m) <= 80, and larger scales take the unfused path. The two GEMMs of the step keep
// their FLOPs; the blocks are split over the threads, each with its own accumulator, added in
// thread order. Numerics: the same function as `cosMarginSoftmaxCE`, summed in another order
// (tested against the definition in Double).
//
// The two products with the codebook run either as BLAS GEMMs of the unit rows (+-1/sqrt(K)) or,
// where the CPU has AVX-512, by table lookups over the codebook's signs (signproducts.c: 16 signed
// sums of 4 values per table, one permute for 16 columns): `HeadProducts`.

import CKernels
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Per-thread buffers of the fused head, allocated once for a batch size and thread count.
final class FusedHeadWorkspace {
    let B: Int, K: Int, blockClasses: Int, workers: Int
    let blocks: FloatBuffer        // (workers, B, Cb)
    let accumulators: FloatBuffer  // (workers, B, K)
    let rowSums: UnsafeMutablePointer<Double>     // (workers, B)
    let best: FloatBuffer          // (workers, B)
    let bestClass: UnsafeMutablePointer<Int64>    // (workers, B)
    let targetCosines: FloatBuffer // (B): each row's target lies in one block, written once
    let gemmNanoseconds: UnsafeMutablePointer<UInt64>  // (workers): benchmarks' GEMM time per worker
    let tables: FloatBuffer        // the codes' lookup tables (oh_sign_tables_count(B, K))

    init(B: Int, K: Int, blockClasses: Int, workers: Int) {
        self.B = B; self.K = K; self.blockClasses = blockClasses; self.workers = workers
        tables = FloatBuffer(count: oh_sign_tables_count(B, K))
        blocks = FloatBuffer(count: workers * B * blockClasses)
        accumulators = FloatBuffer(count: workers * B * K)
        rowSums = .allocate(capacity: workers * B)
        best = FloatBuffer(count: workers * B)
        bestClass = .allocate(capacity: workers * B)
        targetCosines = FloatBuffer(count: B)
        gemmNanoseconds = .allocate(capacity: workers)
    }
    deinit { rowSums.deallocate(); bestClass.deallocate(); gemmNanoseconds.deallocate() }
}

/// How the loss over many classes is computed (`--head`); the two differ only in the order of
/// float32 sums.
public enum HeadPath: String, CaseIterable, Codable, Sendable {
    /// Single-label cosine-margin losses over 256 classes or more (scale (2 + margin) <= 80)
    /// without materialising the cosines; everything else as `logits`.
    case fused
    /// The (B, C) cosines written, the loss over them, and a GEMM back: the path before the
    /// fused head (the committed reference models were trained with it).
    case logits
}

/// How the fused head multiplies by the codebook; the two differ only in the order of float32 sums.
public enum HeadProducts: String, CaseIterable, Codable, Sendable {
    /// Table lookups over the codebook's signs (AVX-512; else as `blas`).
    case lookup
    /// OpenBLAS GEMMs of the codebook's unit rows.
    case blas

    /// Lookups where the CPU has AVX-512 (one permute instruction looks up 16 columns), else BLAS.
    public static var available: HeadProducts { oh_sign_level() > 0 ? .lookup : .blas }
}

/// A codebook's sign patterns laid out for the lookup products (signproducts.c), made once per model.
public final class SignPatterns {
    public let classes: Int, bits: Int
    /// The kernel: 1 AVX-512, 0 the portable reference (tests compare the two).
    public let level: Int32
    let cosines: UnsafeMutablePointer<Int32>     // oh_sign_cosine_index_count(C, K)
    let gradient: UnsafeMutablePointer<Int32>    // oh_sign_gradient_index_count(C, K)
    /// Int32s of the cosines' patterns per 64 classes, and of the gradient's per 4 classes.
    let cosineTile: Int, gradientQuad: Int
    /// 1 / sqrt(K) as the codebook's unit rows have it: the cosines' factor.
    let alpha: Float

    public init(_ codebook: Codebook, level: Int32 = oh_sign_level()) {
        classes = codebook.classes; bits = codebook.bits; self.level = level
        cosines = .allocate(capacity: oh_sign_cosine_index_count(classes, bits))
        gradient = .allocate(capacity: oh_sign_gradient_index_count(classes, bits))
        cosineTile = oh_sign_cosine_index_count(64, bits)
        gradientQuad = oh_sign_gradient_index_count(4, bits)
        alpha = 1 / Float(bits).squareRoot()
        codebook.values.withUnsafeBufferPointer {
            oh_sign_cosine_index(cosines, $0.baseAddress!, classes, bits)
            oh_sign_gradient_index(gradient, $0.baseAddress!, classes, bits)
        }
    }
    deinit { cosines.deallocate(); gradient.deallocate() }
}

enum FusedHead {
    /// Classes per block: B x Cb floats of cosines stay within 256 KB (L2 on every CPU seen here).
    /// A multiple of 64 (the lookups' tiles of classes start at multiples of 64).
    nonisolated(unsafe) static var blockClassesOverride: Int? = nil
    static func blockClasses(B: Int, lookups: Bool) -> Int {
        if let b = blockClassesOverride { return lookups ? (b + 63) / 64 * 64 : b }
        return max(64, min(2048, (1 << 16) / max(B, 1) / 64 * 64))
    }

    /// Whether the fused path computes this loss (else `marginLoss` over materialised cosines).
    static func applies(_ config: LossConfig, classes C: Int) -> Bool {
        config.marginType == .cos && C >= manyClasses && config.scale > 0 && config.scale * (2 + max(config.margin, 0)) <= 80
    }

    /// Loss (this rank's share of `ce * L`), correct rows, and `ce * dL/dvn` written to `dvn` (B, K).
    /// With `patterns`, the products with the codebook are lookups over its signs; else GEMMs of `cb`.
    static func lossAndGradient(
        _ dvn: UnsafeMutablePointer<Float>,          // (B, K) out
        unitCodes vn: UnsafePointer<Float>,          // (B, K)
        codebookUnit cb: UnsafePointer<Float>,       // (C, K)
        patterns: SignPatterns?,
        targets: UnsafePointer<Int32>, B: Int, K: Int, C: Int, N: Int,
        config: LossConfig, threads: Int, workspace: inout FusedHeadWorkspace?
    ) -> (loss: Double, correct: Int) {
        if let patterns { precondition(patterns.classes == C && patterns.bits == K, "sign patterns (\(patterns.classes), \(patterns.bits)) for a head of (\(C), \(K))") }
        let Cb = blockClasses(B: B, lookups: patterns != nil)
        let blockCount = (C + Cb - 1) / Cb
        let workers = max(1, min(threads, blockCount))
        if workspace == nil || workspace!.B != B || workspace!.K != K || workspace!.blockClasses != Cb || workspace!.workers < workers {
            workspace = FusedHeadWorkspace(B: B, K: K, blockClasses: Cb, workers: workers)
        }
        let w = workspace!
        let s = config.scale, m = config.margin
        if patterns != nil { oh_sign_tables(w.tables.pointer, vn, B, K) }
        let level = patterns?.level ?? oh_sign_level()   // the exponentials' kernel (the same results on either)
        // Each worker's GEMMs run in its own thread: OpenBLAS at one thread meanwhile. A benchmark
        // timing GEMMs gets the slowest worker's GEMM time (wall time the GEMMs account for).
        let clock = BLAS.clock
        BLAS.withThreads(workers > 1 && patterns == nil ? 1 : threads) {
            parallel(workers) { i in
                let first = blockCount * i / workers, last = blockCount * (i + 1) / workers
                let block = w.blocks.pointer + i * B * Cb, acc = w.accumulators.pointer + i * B * K
                let sums = w.rowSums + i * B, best = w.best.pointer + i * B, bestClass = w.bestClass + i * B
                acc.update(repeating: 0, count: B * K)
                sums.update(repeating: 0, count: B)
                best.update(repeating: -.infinity, count: B)
                bestClass.update(repeating: 0, count: B)
                var spent: UInt64 = 0
                for b in first..<last {
                    let c0 = b * Cb, cols = min(Cb, C - c0)
                    if let patterns {
                        oh_sign_cosines(block, cols, w.tables.pointer, B, K, patterns.cosines + c0 / 64 * patterns.cosineTile,
                                        cols, patterns.alpha, patterns.level)
                        oh_head_block(block, B, cols, c0, targets, s, m, sums, w.targetCosines.pointer, best, bestClass, level)
                        oh_sign_accumulate(acc, K, block, cols, B, cols, patterns.gradient + c0 / 4 * patterns.gradientQuad, patterns.level)
                        continue
                    }
                    let t0 = clock?() ?? 0
                    BLAS.gemm(transA: false, transB: true, m: B, n: cols, k: K, vn, lda: K, cb + c0 * K, ldb: K,
                              beta: 0, block, ldc: cols, timed: false)
                    let t1 = clock?() ?? 0
                    oh_head_block(block, B, cols, c0, targets, s, m, sums, w.targetCosines.pointer, best, bestClass, level)
                    let t2 = clock?() ?? 0
                    BLAS.gemm(transA: false, transB: false, m: B, n: K, k: cols, block, lda: cols, cb + c0 * K, ldb: K,
                              beta: 1, acc, ldc: K, timed: false)
                    if let clock { spent &+= (t1 - t0) + (clock() - t2) }
                }
                w.gemmNanoseconds[i] = spent
            }
        }
        if clock != nil {
            var slowest: UInt64 = 0
            for i in 0..<workers { slowest = max(slowest, w.gemmNanoseconds[i]) }
            BLAS.gemmNanoseconds &+= slowest
        }
        // Add the workers' parts in worker order (blocks ascend with the worker: the first
        // largest cosine is the one of the lowest worker holding it).
        var loss = 0.0, correct = 0
        let gradScale = Double(config.ce * s) / Double(N)
        let accScale = Double(patterns?.alpha ?? 1)      // the lookups' sums are of signs, not unit rows
        for r in 0..<B {
            var sum = 0.0, top = -Float.infinity, at: Int64 = 0
            for i in 0..<workers {
                sum += w.rowSums[i * B + r]
                if w.best[i * B + r] > top { top = w.best[i * B + r]; at = w.bestClass[i * B + r] }
            }
            let t = Int(targets[r])
            if at == Int64(t) { correct += 1 }
            let zt = Double(s) * (Double(w.targetCosines[r]) - Double(m))
            loss += Double(s) + log(sum) - zt
            let k = gradScale / sum * accScale
            let out = dvn + r * K, target = cb + t * K
            for j in 0..<K {
                var a = 0.0
                for i in 0..<workers { a += Double(w.accumulators[(i * B + r) * K + j]) }
                out[j] = Float(a * k - gradScale * Double(target[j]))
            }
        }
        return (loss * Double(config.ce) / Double(N), correct)
    }
}
