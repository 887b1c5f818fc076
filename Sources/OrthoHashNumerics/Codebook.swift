// Fixed class codewords in {-1, +1}^(C, K). Dimensions: C = classes, K = bits.

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public enum CodebookMethod: String, Codable, CaseIterable, Sendable {
    /// Sign of a standard Gaussian draw.
    case N
    /// Bernoulli(0.5) * 2 - 1.
    case B
    /// Maximum Hamming distance by rejection sampling.
    case O
}

public struct Codebook: Equatable {
    public let classes: Int
    public let bits: Int
    /// (C, K), entries +-1, row-major.
    public var values: [Int8]

    public init(classes: Int, bits: Int, values: [Int8]) {
        precondition(values.count == classes * bits, "codebook values \(values.count) != \(classes) x \(bits)")
        self.classes = classes; self.bits = bits; self.values = values
    }

    /// Generates a codebook (docs/METHOD.md, "Codebooks") exactly as the authors' code does after
    /// `torch.manual_seed(seed)`, so a seed gives their codebook bit for bit (see TorchGenerator).
    ///
    /// `B`: `torch.bernoulli(torch.ones(C, K) * 0.5) * 2 - 1`. `N`: `torch.randn(C, K).sign()`.
    /// `O`: threshold t = 0.61; each class draws candidates `torch.randn(K).sign()` until one has
    /// normalised Hamming distance `(K - c.o_j) / (2K)` >= t to every earlier codeword (compared in
    /// float32, as the reference's tensors are); after 10,000 rejections t drops by 0.01 (and the
    /// count restarts); below 0.2 it fails. Rows are then permuted by `torch.randperm(C)`.
    /// Cost O(C^2 K): fine for thousands of classes, not for 81,313 (use B).
    public static func generate(method: CodebookMethod, classes: Int, bits: Int, seed: UInt64) throws -> Codebook {
        guard classes >= 1 else { throw OrthoHashError("classes must be at least 1, got \(classes)") }
        guard bits >= 1 else { throw OrthoHashError("nbit must be at least 1, got \(bits)") }
        guard let entries = checkedProduct([classes, bits]), entries <= 1 << 40 else {
            throw OrthoHashError("a codebook of \(classes) classes x \(bits) bits is more than 2^40 entries", hint: "fewer classes or bits")
        }
        var rng = TorchGenerator(seed: seed)
        switch method {
        case .B:
            return Codebook(classes: classes, bits: bits, values: rng.bernoulliSigns(count: classes * bits))
        case .N:
            return Codebook(classes: classes, bits: bits, values: rng.normalSigns(count: classes * bits))
        case .O:
            // Beyond this size PyTorch's randperm changes method; O's O(C^2 K) search is long out
            // of reach well before it anyway.
            guard classes < Int(UInt32.max / 20) else {
                throw OrthoHashError("codebook O: \(classes) classes is far beyond what its O(C^2 K) search can place", hint: "use codebook B")
            }
            var values = [Int8](repeating: 0, count: classes * bits)
            let words = (bits + 63) / 64
            var placed = [UInt64](repeating: 0, count: classes * words)    // (C, W) the rows kept so far
            var candidate = [Int8](repeating: 0, count: bits)
            var threshold = 0.61
            var tries = 0
            var i = 0
            while i < classes {
                rng.fillNormalSigns(&candidate)
                let packed = PackedCodes(signs: candidate, count: 1, bits: bits).storage
                let accepted = packed.withUnsafeBufferPointer { c in
                    placed.withUnsafeBufferPointer { p in
                        (0..<i).allSatisfy { j in
                            Float(hammingDistance(c.baseAddress!, p.baseAddress! + j * words, words: words)) / Float(bits) >= Float(threshold)
                        }
                    }
                }
                if accepted {
                    for k in 0..<bits { values[i * bits + k] = candidate[k] }
                    for w in 0..<words { placed[i * words + w] = packed[w] }
                    i += 1
                } else {
                    tries += 1
                    if tries >= 10_000 {
                        tries = 0
                        threshold -= 0.01
                        if threshold < 0.2 {
                            throw OrthoHashError(
                                "codebook O: cannot place \(classes) codewords of \(bits) bits at normalised Hamming distance >= 0.2",
                                hint: "use more bits or codebook B")
                        }
                    }
                }
            }
            let order = rng.permutation(classes)
            var permuted = values
            for (row, source) in order.enumerated() {
                for k in 0..<bits { permuted[row * bits + k] = values[source * bits + k] }
            }
            return Codebook(classes: classes, bits: bits, values: permuted)
        }
    }

    /// Rows scaled to unit length (entries +-1/sqrt(K)), as the cosine layer uses them.
    public func unitRows() -> FloatBuffer {
        let out = FloatBuffer(count: classes * bits)
        let scale = 1 / Float(bits).squareRoot()
        for i in values.indices { out[i] = Float(values[i]) * scale }
        return out
    }

    /// Minimum and mean Hamming distance over all pairs of rows (O(C^2 K / 64)).
    public func pairwiseHamming() -> (minimum: Int, mean: Double) {
        guard classes > 1 else { return (0, 0) }
        let codes = PackedCodes(signs: values, count: classes, bits: bits), words = codes.words
        var minimum = Int.max, total = 0.0
        codes.storage.withUnsafeBufferPointer { p in
            for i in 0..<classes {
                var rowTotal = 0
                for j in (i + 1)..<classes {
                    let d = hammingDistance(p.baseAddress! + i * words, p.baseAddress! + j * words, words: words)
                    rowTotal += d
                    if d < minimum { minimum = d }
                }
                total += Double(rowTotal)
            }
        }
        return (minimum, total / (Double(classes) * Double(classes - 1) / 2))
    }

    /// Checks a loaded codebook: entries must be exactly +-1.
    public static func validated(classes: Int, bits: Int, values: [Double], file: String) throws -> Codebook {
        var out = [Int8](repeating: 0, count: values.count)
        for (i, v) in values.enumerated() {
            guard v == 1 || v == -1 else {
                throw OrthoHashError("codebook entry (\(i / bits), \(i % bits)) is \(v), expected +1 or -1", file: file)
            }
            out[i] = v > 0 ? 1 : -1
        }
        return Codebook(classes: classes, bits: bits, values: out)
    }
}
