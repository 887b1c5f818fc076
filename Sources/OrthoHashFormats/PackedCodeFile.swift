// Packed binary codes as `orthohash encode` writes them and search and map read them.

import Foundation
import OrthoHashNumerics

/// Packed codes in a .npy file: uint8, 2-D (rows, bytes), memory-mapped.
public struct PackedCodeFile {
    public let array: NPYArray
    public var rows: Int { array.shape[0] }
    public var bytes: Int { array.shape[1] }
    public var codes: UnsafePointer<UInt8> { array.data.assumingMemoryBound(to: UInt8.self) }

    public init(_ path: String) throws {
        array = try NPYArray(path: path)
        guard array.type == .uint8, array.shape.count == 2, array.shape[1] >= 1 else {
            throw OrthoHashError("expected packed codes, uint8 of shape (rows, bytes); found \(array.type.rawValue) of shape \(array.shape)", file: path,
                                 hint: "orthohash encode writes them")
        }
        guard array.shape[0] >= 1 else { throw OrthoHashError("no codes", file: path) }
    }

    /// The codes in 64-bit words (each code's bytes in order, the last word zero-padded), for the
    /// metrics: a distance does not depend on where the bits sit.
    public func packed() -> PackedCodes {
        let W = (bytes + 7) / 8
        var storage = [UInt64](repeating: 0, count: rows * W)
        storage.withUnsafeMutableBytes { out in
            for r in 0..<rows { memcpy(out.baseAddress! + r * W * 8, codes + r * bytes, bytes) }
        }
        return PackedCodes(count: rows, bits: bytes * 8, storage: storage)
    }
}
