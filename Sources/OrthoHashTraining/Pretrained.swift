// Pretrained backbones: a safetensors file with torchvision's names (`features.N.weight`,
// `classifier.N.bias`, ...), as bench/torchvision_to_safetensors.py converts a torchvision state
// dict, loaded into the backbone's tensors. The authors' AlexNet names its classifier `fc.N`, and
// `orthohash export` writes those names: either is read.

import OrthoHashFormats
import OrthoHashNumerics

public enum Pretrained {
    /// The names tensor `name` of `backbone` may have in a file, the first found is read.
    static func names(of name: String, backbone: BackboneKind) -> [String] {
        if backbone == .alexnet && name.hasPrefix("classifier.") { return [name, "fc." + name.dropFirst("classifier.".count)] }
        return [name]
    }

    /// Copies every backbone tensor of `model` from the file at `path`; a tensor missing or of
    /// another shape is refused in one line naming it. Tensors the backbone lacks (the ImageNet
    /// classifier's `classifier.6.*`) are ignored. Returns the number of tensors read.
    @discardableResult
    public static func load(_ path: String, into model: HashModel) throws -> Int {
        let file = try SafeTensors.File(path: path)
        let layout = model.store.layout
        let backbone = layout.tensors.filter { $0.offset < layout.backboneCount }
        guard !backbone.isEmpty else {
            throw OrthoHashError("--pretrained loads a backbone's weights, and the \(model.config.backbone.rawValue) backbone has none", file: path)
        }
        let kind = model.config.backbone
        for t in backbone {
            let candidates = names(of: t.name, backbone: kind)
            guard let name = candidates.first(where: { file.entries[$0] != nil }) else {
                throw OrthoHashError("no tensor '\(t.name)' for the \(kind.rawValue) backbone", file: path,
                                     hint: "a torchvision state dict converted by bench/torchvision_to_safetensors.py has it")
            }
            guard file.entries[name]!.shape == t.shape else {
                throw OrthoHashError("tensor '\(name)' has shape \(file.entries[name]!.shape), the \(kind.rawValue) backbone needs \(t.shape)", file: path)
            }
            try file.copy(name, into: model.parameters.pointer + t.offset)
        }
        return backbone.count
    }
}
