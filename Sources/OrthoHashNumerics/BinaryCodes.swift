// Binary codes: packing and the Hamming distance of two codes. The one place for each; the
// codebooks and the encode output use these. Ranking by distance (search, the metrics, the
// revisited protocol) is CKernels' hamming.c, through HammingSearch and RelevantRanks.
//
// Dimensions: N = codes, K = bits, W = 64-bit words per code, M = database rows.

/// Binary codes packed into 64-bit words: bit k of a code is bit (k % 64) of word k / 64, set
/// where the value is positive (sign +1); 0 and negative values are -1.
public struct PackedCodes: Equatable {
    public let count: Int
    public let bits: Int
    public let words: Int
    public var storage: [UInt64]          // (N, W)

    /// Codes of real values v (N, K): bit set where v > 0.
    public init(values: UnsafePointer<Float>, count: Int, bits: Int) {
        let words = (bits + 63) / 64
        var storage = [UInt64](repeating: 0, count: count * words)
        for n in 0..<count {
            let row = values + n * bits
            for k in 0..<bits where row[k] > 0 { storage[n * words + k >> 6] |= 1 << UInt64(k & 63) }
        }
        self.init(count: count, bits: bits, storage: storage)
    }

    /// Codes of +-1 entries (N, K), such as codebook rows.
    public init<S: Collection>(signs: S, count: Int, bits: Int) where S.Element == Int8 {
        precondition(signs.count == count * bits, "packing \(signs.count) signs as \(count) x \(bits)")
        let words = (bits + 63) / 64
        var storage = [UInt64](repeating: 0, count: count * words)
        for (i, v) in signs.enumerated() where v > 0 {
            let n = i / bits, k = i % bits
            storage[n * words + k >> 6] |= 1 << UInt64(k & 63)
        }
        self.init(count: count, bits: bits, storage: storage)
    }

    public init(count: Int, bits: Int, storage: [UInt64]) {
        self.count = count; self.bits = bits; words = (bits + 63) / 64; self.storage = storage
        precondition(storage.count == count * words, "packed codes: \(storage.count) words for \(count) x \(words)")
    }

    /// Hamming distance between code `i` of these codes and code `j` of `other`.
    public func distance(_ i: Int, to j: Int, of other: PackedCodes) -> Int {
        storage.withUnsafeBufferPointer { a in
            other.storage.withUnsafeBufferPointer { b in
                hammingDistance(a.baseAddress! + i * words, b.baseAddress! + j * words, words: words)
            }
        }
    }

    /// The codes as `numpy.packbits(v > 0, axis=1)` writes them, uint8 (N, ceil(K/8)): bit k of a
    /// code is bit 7 - k % 8 (most significant first) of byte k / 8.
    public func numpyBytes() -> [UInt8] {
        let bytesPerCode = (bits + 7) / 8
        var out = [UInt8](repeating: 0, count: count * bytesPerCode)
        for n in 0..<count {
            for k in 0..<bits where storage[n * words + k >> 6] >> UInt64(k & 63) & 1 == 1 {
                out[n * bytesPerCode + k / 8] |= UInt8(0x80) >> UInt8(k % 8)
            }
        }
        return out
    }
}

/// Hamming distance of two packed codes of `words` words.
@inline(__always)
public func hammingDistance(_ a: UnsafePointer<UInt64>, _ b: UnsafePointer<UInt64>, words: Int) -> Int {
    var d = 0
    for w in 0..<words { d += (a[w] ^ b[w]).nonzeroBitCount }
    return d
}
