// Binary codes: packing, Hamming distance, and ranking by distance. The one place for each;
// the metrics, the revisited protocol, the codebooks and the encode output all use these.
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

/// The ranking of a database by Hamming distance to one query, ties by database row, without a
/// sort: a counting sort over the K + 1 possible distances. `count` records every row's distance
/// and how many rows (and how many marked rows) fall at each distance; the prefix sums then say
/// where each distance's rows start in the ranking, and a pass in database order places them.
struct HammingHistogram {
    let bits: Int
    /// (M) each row's distance to the query.
    var distance: [UInt16]
    /// (K + 2) after `count`: rows ranked before distance d, at `start[d]`.
    var start: [Int]
    /// (K + 2) the same for the marked rows only.
    var markedStart: [Int]
    /// Marked rows in all.
    var marked = 0

    init(rows: Int, bits: Int) {
        self.bits = bits
        distance = [UInt16](repeating: 0, count: rows)
        start = [Int](repeating: 0, count: bits + 2)
        markedStart = [Int](repeating: 0, count: bits + 2)
    }

    /// Distances from `query` to the `rows` codes at `database`, and the bin starts; `mark(x)`
    /// picks rows whose own starts are counted too (the relevant ones, for the metrics).
    @inline(__always)
    mutating func count(query: UnsafePointer<UInt64>, database: UnsafePointer<UInt64>, rows: Int, words: Int,
                        mark: (Int) -> Bool) {
        for i in start.indices { start[i] = 0; markedStart[i] = 0 }
        for x in 0..<rows {
            let d = hammingDistance(query, database + x * words, words: words)
            distance[x] = UInt16(d)
            start[d + 1] += 1
            if mark(x) { markedStart[d + 1] += 1 }
        }
        for d in 1...(bits + 1) { start[d] += start[d - 1]; markedStart[d] += markedStart[d - 1] }
        marked = markedStart[bits + 1]
    }

    /// The database rows in ranking order (by distance, then row), written into `order` (M);
    /// leaves `start` as it found it.
    mutating func ranking(into order: inout [Int32]) {
        var next = start
        for x in 0..<distance.count {
            let d = Int(distance[x])
            order[next[d]] = Int32(x)
            next[d] += 1
        }
    }
}
