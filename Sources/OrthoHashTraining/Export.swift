// A trained model as a safetensors file, with PyTorch's names (the reference code's state dict).

import OrthoHashFormats
import OrthoHashNumerics

extension SafeTensors {
    /// The model's tensors: its parameters by their layout names (ParameterLayout; AlexNet's
    /// classifier as the authors' class names it, `fc.1` and `fc.4`), then BatchNorm's
    /// `hash_fc.1.running_mean`, `running_var` and `num_batches_tracked`, and the codebook as
    /// `ce_fc.centroids` (float32 +-1, (C, K)): the authors' code loads it.
    public static func tensors(of model: HashModel) -> [Tensor] {
        func f32(_ p: UnsafePointer<Float>, _ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: p, count: n * 4)) }
        let alexnet = model.config.backbone == .alexnet
        var out: [Tensor] = model.store.layout.tensors.map { t in
            let name = alexnet && t.name.hasPrefix("classifier.") ? "fc." + t.name.dropFirst("classifier.".count) : t.name
            return Tensor(name: name, dtype: "F32", shape: t.shape, bytes: f32(model.parameters.pointer + t.offset, t.count))
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
