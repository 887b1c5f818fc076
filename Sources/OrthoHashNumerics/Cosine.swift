// Cosine similarity of each code to each row of the fixed codebook.
//
// Dimensions: B = rows, K = bits, C = classes.

/// Smallest norm used to divide by. The reference divides by |v| with no epsilon; a row of v
/// that is exactly zero would give NaN there. We divide by max(|v|, 1e-12) instead, which changes
/// nothing for any row with |v| > 1e-12 (after BatchNorm |v| is about sqrt(K)).
let minimumNorm: Float = 1e-12

/// ```
/// vn = v / max(|v|, 1e-12)
/// u  = vn codebookUnit^T         codebookUnit = codebook / sqrt(K): rows of unit length
/// ```
func cosineForward(
    _ u: UnsafeMutablePointer<Float>,        // (B, C)
    _ vn: UnsafeMutablePointer<Float>,       // (B, K) cached
    _ norms: UnsafeMutablePointer<Float>,    // (B)    cached
    _ v: UnsafePointer<Float>,               // (B, K)
    _ codebookUnit: UnsafePointer<Float>,    // (C, K)
    B: Int, K: Int, C: Int
) {
    unitRows(vn, norms, v, B: B, K: K)
    BLAS.gemm(transA: false, transB: true, m: B, n: C, k: K, vn, lda: K, codebookUnit, ldb: K,
              beta: 0, u, ldc: C)
}

/// vn = v / max(|v|, 1e-12), row by row; the norms cached.
func unitRows(_ vn: UnsafeMutablePointer<Float>, _ norms: UnsafeMutablePointer<Float>, _ v: UnsafePointer<Float>, B: Int, K: Int) {
    for r in 0..<B {
        let vr = v + r * K, nr = vn + r * K
        var sq: Float = 0
        for k in 0..<K { sq += vr[k] * vr[k] }
        let norm = max(sq.squareRoot(), minimumNorm)
        norms[r] = norm
        let inv = 1 / norm
        for k in 0..<K { nr[k] = vr[k] * inv }
    }
}

/// ```
/// dvn = du codebookUnit
/// dv  = (dvn - vn (vn . dvn)) / |v|         (dv = dvn / 1e-12 where the norm was clamped)
/// ```
/// `dv` is overwritten; `dvn` is scratch.
func cosineBackward(
    _ dv: UnsafeMutablePointer<Float>,       // (B, K)
    _ dvn: UnsafeMutablePointer<Float>,      // (B, K) scratch
    _ du: UnsafePointer<Float>,              // (B, C)
    _ vn: UnsafePointer<Float>, _ norms: UnsafePointer<Float>,
    _ codebookUnit: UnsafePointer<Float>,    // (C, K)
    B: Int, K: Int, C: Int
) {
    BLAS.gemm(transA: false, transB: false, m: B, n: K, k: C, du, lda: C, codebookUnit, ldb: K,
              beta: 0, dvn, ldc: K)
    unitRowsBackward(dv, dvn, vn, norms, B: B, K: K)
}

/// dv = (dvn - vn (vn . dvn)) / |v|, row by row (dv = dvn / 1e-12 where the norm was clamped).
func unitRowsBackward(_ dv: UnsafeMutablePointer<Float>, _ dvn: UnsafePointer<Float>, _ vn: UnsafePointer<Float>,
                      _ norms: UnsafePointer<Float>, B: Int, K: Int) {
    for r in 0..<B {
        let g = dvn + r * K, n = vn + r * K, out = dv + r * K
        let inv = 1 / norms[r]
        if norms[r] <= minimumNorm {
            for k in 0..<K { out[k] = g[k] * inv }
            continue
        }
        var dot: Float = 0
        for k in 0..<K { dot += n[k] * g[k] }
        for k in 0..<K { out[k] = (g[k] - n[k] * dot) * inv }
    }
}
