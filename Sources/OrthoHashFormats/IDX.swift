// IDX files (the MNIST format), gzip-compressed or not, read through zlib.
// Images: magic 2051, then rows, height, width (big-endian UInt32), then uint8 pixels.
// Labels: magic 2049, then rows, then uint8 labels.

import CZlib
import Foundation
import OrthoHashNumerics

public enum IDX {
    /// The whole (decompressed) content of `path`.
    static func readAll(_ path: String, missingHint: String?) throws -> [UInt8] {
        try InputFile.check(path, missingHint: missingHint)
        guard let gz = gzopen(path, "rb") else { throw OrthoHashError("cannot open", file: path) }
        defer { gzclose(gz) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
            if n < 0 { throw OrthoHashError("corrupt gzip stream", file: path) }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
        }
        return out
    }

    static func bigEndian(_ b: [UInt8], _ at: Int) -> Int {
        Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
    }

    /// Images as (rows, height * width) bytes.
    public static func readImages(_ path: String, missingHint: String? = nil) throws -> (rows: Int, height: Int, width: Int, dim: Int, pixels: [UInt8]) {
        let b = try readAll(path, missingHint: missingHint)
        guard b.count >= 16 else { throw OrthoHashError("truncated IDX header (\(b.count) bytes)", file: path) }
        let magic = bigEndian(b, 0)
        guard magic == 2051 else { throw OrthoHashError("wrong magic \(magic) for an IDX image file, expected 2051", file: path) }
        let rows = bigEndian(b, 4), h = bigEndian(b, 8), w = bigEndian(b, 12)
        // Each is below 2^32, so rows x h x w could overflow: the product is checked.
        guard let pixels = checkedProduct([rows, h, w]), pixels <= b.count - 16 else {
            throw OrthoHashError("truncated: \(rows)x\(h)x\(w) images need \(checkedProduct([rows, h, w]).map { "\($0 + 16)" } ?? "more than 2^63") bytes, found \(b.count)", file: path)
        }
        let needed = 16 + pixels
        guard b.count >= needed else {
            throw OrthoHashError("truncated: \(rows)x\(h)x\(w) images need \(needed) bytes, found \(b.count)", file: path)
        }
        return (rows, h, w, h * w, Array(b[16..<needed]))
    }

    public static func readLabels(_ path: String, missingHint: String? = nil) throws -> [UInt8] {
        let b = try readAll(path, missingHint: missingHint)
        guard b.count >= 8 else { throw OrthoHashError("truncated IDX header (\(b.count) bytes)", file: path) }
        let magic = bigEndian(b, 0)
        guard magic == 2049 else { throw OrthoHashError("wrong magic \(magic) for an IDX label file, expected 2049", file: path) }
        let rows = bigEndian(b, 4)
        guard b.count >= 8 + rows else {
            throw OrthoHashError("truncated: \(rows) labels need \(8 + rows) bytes, found \(b.count)", file: path)
        }
        return Array(b[8..<(8 + rows)])
    }
}
