// PyTorch's CPU random generator, as far as the reference code draws codebooks from it.
//
// The authors' training script calls `torch.manual_seed(seed)` and then, before anything else
// touches the generator, draws the codebook: `torch.bernoulli(torch.ones(C, K) * 0.5) * 2 - 1`
// (B), `torch.randn(C, K).sign()` (N), or rejection sampling over `torch.randn(K).sign()` followed
// by `torch.randperm(C)` (O). Reproducing those draws gives a seed the authors' codebook bit for
// bit, and the authors note that the codebook draw moves mAP noticeably.
//
// What is reproduced (PyTorch 2.x, CPU, float32; checked against torch 2.13 by
// bench/torch_codebook_check.py):
// - mt19937 seeded with the low 32 bits of the seed (ATen's `init_with_uint32`);
// - `random()` = one 32-bit output, `random64()` = (first << 32) | second;
// - float uniform = (random() & (2^24 - 1)) * 2^-24, double uniform = (random64() & (2^53 - 1)) * 2^-53;
// - bernoulli(p = 0.5) on a float tensor: one float uniform per element, 1 where it is < 0.5;
// - randn of a contiguous float tensor with at least 16 elements: one float uniform per element,
//   then Box-Muller over blocks of 16 (element j and j + 8 of a block share u1 = 1 - data[j] and
//   u2 = data[j + 8]: cos for the first, sin for the second); when the size is not a multiple of
//   16, the last 16 elements are drawn afresh and transformed again;
// - randn with fewer than 16 elements: per element, a double Box-Muller pair whose second value is
//   cached in the generator for the next call (u1 and u2 double uniforms, r = sqrt(-2 log1p(-u2)),
//   theta = 2 pi u1, value r cos(theta), cached r sin(theta));
// - randperm(n): for i in 0..<n-1, swap element i with element i + random() % (n - i).
// Only signs are needed, so Box-Muller reduces to the sign of cos or sin of theta. Where the
// reference would produce 0 (radius 0, i.e. a uniform of exactly 0, or theta exactly 0: chance
// 2^-24 per element), sign() gives 0 there, an invalid codeword entry; we write +1 instead.

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

struct TorchGenerator {
    private var mt = [UInt32](repeating: 0, count: 624)
    private var index = 624
    /// ATen's `next_double_normal_sample_`: the second value of the last scalar Box-Muller pair.
    private var cachedNormal: Double?
    /// Scratch for the uniforms of a vectorised randn.
    private var uniforms: [Float] = []

    init(seed: UInt64) {
        mt[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 { mt[i] = 1_812_433_253 &* (mt[i - 1] ^ (mt[i - 1] >> 30)) &+ UInt32(i) }
    }

    /// One 32-bit mt19937 output (`CPUGeneratorImpl::random`).
    mutating func random() -> UInt32 {
        if index >= 624 {
            for k in 0..<624 {
                let y = (mt[k] & 0x8000_0000) | (mt[(k + 1) % 624] & 0x7FFF_FFFF)
                mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (y & 1 == 1 ? 0x9908_B0DF : 0)
            }
            index = 0
        }
        var y = mt[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    mutating func random64() -> UInt64 {
        let high = UInt64(random())
        return high << 32 | UInt64(random())
    }

    mutating func uniformFloat() -> Float { Float(random() & 0xFF_FFFF) * 0x1p-24 }

    mutating func uniformDouble() -> Double { Double(random64() & ((1 << 53) - 1)) * 0x1p-53 }

    /// `(torch.bernoulli(torch.full((count,), 0.5)) * 2 - 1)` as +-1.
    mutating func bernoulliSigns(count: Int) -> [Int8] {
        (0..<count).map { _ in uniformFloat() < 0.5 ? 1 : -1 }
    }

    /// `torch.randn(count).sign()` (any shape with `count` elements, contiguous float32).
    mutating func normalSigns(count: Int) -> [Int8] {
        var out = [Int8](repeating: 1, count: count)
        fillNormalSigns(&out)
        return out
    }

    /// `torch.randn(out.count).sign()` into `out`, without allocating once `uniforms` is large
    /// enough (codebook O draws hundreds of thousands of candidates).
    mutating func fillNormalSigns(_ out: inout [Int8]) {
        let count = out.count
        guard count >= 16 else {
            for i in 0..<count { out[i] = Float(scalarNormal()) < 0 ? -1 : 1 }
            return
        }
        if uniforms.count < count { uniforms = [Float](repeating: 0, count: count) }
        for i in 0..<count { uniforms[i] = uniformFloat() }
        // The vectorised path (AVX2, which PyTorch uses on x86-64) computes theta = 2 pi u2 in
        // float32, in [0, 2.0000001 pi). Only the signs of cos and sin are needed: cos < 0 on
        // (pi/2, 3pi/2), sin < 0 on (pi, 2pi). No float32 lies within 1e-8 of those bounds, so
        // comparing with their double values decides every case as the exact functions would.
        let twoPi = Float(2 * Double.pi)
        func transform16(_ start: Int) {
            for j in 0..<8 {
                let u1 = 1 - uniforms[start + j]
                let theta = Double(twoPi * uniforms[start + j + 8])
                if u1 == 1 { out[start + j] = 1; out[start + j + 8] = 1; continue }  // radius 0
                out[start + j] = theta > Double.pi / 2 && theta < 3 * Double.pi / 2 ? -1 : 1
                out[start + j + 8] = theta > Double.pi && theta < 2 * Double.pi ? -1 : 1
            }
        }
        var start = 0
        while start + 16 <= count { transform16(start); start += 16 }
        if count % 16 != 0 {
            for j in (count - 16)..<count { uniforms[j] = uniformFloat() }
            transform16(count - 16)
        }
    }

    /// One value of ATen's scalar `normal_distribution<double>`.
    private mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let r = (-2 * _log1p(-u2)).squareRoot()
        let theta = 2 * Double.pi * u1
        cachedNormal = r * _sin(theta)
        return r * _cos(theta)
    }

    /// `torch.randperm(n)` for n below 2^32 / 20.
    mutating func permutation(_ n: Int) -> [Int] {
        precondition(n < Int(UInt32.max / 20), "randperm(\(n)): larger n takes another path in PyTorch")
        var p = Array(0..<n)
        if n > 1 {
            for i in 0..<(n - 1) {
                let z = Int(random() % UInt32(n - i))
                p.swapAt(i, i + z)
            }
        }
        return p
    }
}

@inline(__always) func _log1p(_ x: Double) -> Double { log1p(x) }
@inline(__always) func _sin(_ x: Double) -> Double { sin(x) }
