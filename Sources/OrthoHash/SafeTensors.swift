// The safetensors format: 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
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

    public static func serialize(_ tensors: [Tensor], metadata: [String: String]) -> Data {
        var entries: [String] = []
        var offset = 0
        for t in tensors {
            entries.append("\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}")
            offset += t.bytes.count
        }
        let meta = metadata.keys.sorted().map { "\"\($0)\":\"\(metadata[$0]!)\"" }.joined(separator: ",")
        var header = "{\"__metadata__\":{\(meta)}," + entries.joined(separator: ",") + "}"
        // Pad with spaces to a multiple of 8 so the data is aligned.
        header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        var out = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(header.data(using: .utf8)!)
        for t in tensors { out.append(contentsOf: t.bytes) }
        return out
    }

    /// The tensors of a model with PyTorch-style names (see README, "export").
    public static func tensors(of model: HashModel) -> [Tensor] {
        func f32(_ p: UnsafePointer<Float>, _ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: p, count: n * 4)) }
        var out: [Tensor] = model.namedParameters.map { item in
            Tensor(name: item.name, dtype: "F32", shape: item.shape,
                   bytes: f32(model.parameters.pointer + item.offset, item.shape.reduce(1, *)))
        }
        let K = model.config.nbit
        out.append(Tensor(name: "hash_fc.1.running_mean", dtype: "F32", shape: [K], bytes: f32(model.runningMean.pointer, K)))
        out.append(Tensor(name: "hash_fc.1.running_var", dtype: "F32", shape: [K], bytes: f32(model.runningVar.pointer, K)))
        out.append(Tensor(name: "hash_fc.1.num_batches_tracked", dtype: "I64", shape: [],
                          bytes: withUnsafeBytes(of: model.batchesTracked.littleEndian) { Array($0) }))
        let centroids = model.codebook.values.map { Float($0) }
        out.append(Tensor(name: "ce_fc.centroids", dtype: "F32", shape: [model.codebook.classes, K],
                          bytes: centroids.withUnsafeBytes { Array($0) }))
        return out
    }
}
