// The safetensors format: 8-byte little-endian header length, a JSON header
// {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...},
// then the raw little-endian tensor bytes. https://github.com/huggingface/safetensors

import Foundation

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
