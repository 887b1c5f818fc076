// The safetensors format: 8-byte little-endian header length, a JSON header
// {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...},
// then the raw little-endian tensor bytes. https://github.com/huggingface/safetensors

import Foundation
import OrthoHashNumerics

public enum SafeTensors {
    public struct Tensor {
        public var name: String
        public var dtype: String          // "F32", "I64", "I8"
        public var shape: [Int]
        public var bytes: [UInt8]
        public init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    /// The file's bytes: header (metadata keys sorted, then the tensors in order, compact JSON),
    /// padded with spaces so the data starts on a multiple of 8 bytes, then the data.
    public static func serialize(_ tensors: [Tensor], metadata: [String: String]) -> Data {
        var members: [(String, JSONValue)] = [("__metadata__", .object(metadata.keys.sorted().map { ($0, .string(metadata[$0]!)) }))]
        var offset = 0
        for t in tensors {
            members.append((t.name, .object([("dtype", .string(t.dtype)), ("shape", .array(t.shape.map { .int($0) })),
                                             ("data_offsets", .array([.int(offset), .int(offset + t.bytes.count)]))])))
            offset += t.bytes.count
        }
        var header = JSONValue.object(members).text(spaced: false)
        header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        var out = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(Data(header.utf8))
        for t in tensors { out.append(contentsOf: t.bytes) }
        return out
    }
}

extension SafeTensors {
    /// A safetensors file read for its tensors (memory-mapped): names, dtypes, shapes and where
    /// each one's bytes lie.
    public struct File {
        public let path: String
        public struct Entry { public let dtype: String; public let shape: [Int]; let range: Range<Int> }
        public let entries: [String: Entry]
        let data: Data
        let dataStart: Int

        /// Reads the header; a file that is not safetensors, or whose tensors lie outside it, is
        /// refused in one line.
        public init(path: String) throws {
            try InputFile.check(path)
            guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
                throw OrthoHashError("cannot read", file: path)
            }
            self.path = path; self.data = data
            guard data.count >= 8 else { throw OrthoHashError("not a safetensors file: \(data.count) bytes", file: path) }
            let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            guard headerLength > 0, headerLength <= data.count - 8 else {
                throw OrthoHashError("not a safetensors file: a header of \(headerLength) bytes in \(data.count)", file: path)
            }
            dataStart = 8 + headerLength
            guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart)) as? [String: Any] else {
                throw OrthoHashError("not a safetensors file: the header is not a JSON object", file: path)
            }
            var entries: [String: Entry] = [:]
            for (name, value) in header where name != "__metadata__" {
                guard let t = value as? [String: Any], let dtype = t["dtype"] as? String, let shape = t["shape"] as? [Int],
                      let offsets = t["data_offsets"] as? [Int], offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1],
                      offsets[1] <= data.count - dataStart else {
                    throw OrthoHashError("tensor '\(name)' has a malformed entry or lies outside the file", file: path)
                }
                entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
            }
            self.entries = entries
        }

        /// Tensor `name` as float32 (stored as F32, F16 or BF16) into `out`, which holds its elements.
        public func copy(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
            guard let e = entries[name] else { throw OrthoHashError("no tensor '\(name)'", file: path) }
            let count = e.shape.reduce(1, *)
            let width = ["F32": 4, "F16": 2, "BF16": 2][e.dtype]
            guard let width else { throw OrthoHashError("tensor '\(name)' is \(e.dtype); F32, F16 or BF16 are read", file: path) }
            guard e.range.count == count * width else {
                throw OrthoHashError("tensor '\(name)' of shape \(e.shape) holds \(e.range.count) bytes, not \(count * width)", file: path)
            }
            data.withUnsafeBytes { raw in
                let bytes = raw.baseAddress! + dataStart + e.range.lowerBound
                switch e.dtype {
                case "F32":
                    for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case "F16":
                    for i in 0..<count { out[i] = Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
                default:
                    for i in 0..<count {
                        out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
                    }
                }
            }
        }
    }
}
