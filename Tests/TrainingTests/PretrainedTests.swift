// Pretrained backbones (`--pretrained`): torchvision's AlexNet weights converted by
// bench/torchvision_to_safetensors.py give, in orthohash's AlexNet, the fc7 features PyTorch
// computes (skipped without torch); refusals of missing and misshapen tensors; `export` writes
// the authors' names, which load back.
//
// Tolerance of the features: both sides compute in float32 through five convolutions and two
// Linear layers whose sums are added in different orders (OpenBLAS's GEMMs against oneDNN's), so
// they differ by rounding, about 1e-6 of the largest feature; the bound is 1e-4 of it, far below
// what a wrong weight, layout or padding gives (order 1).

import Foundation
import XCTest
import OrthoHashFormats
import TestSupport
@testable import OrthoHashNumerics
@testable import OrthoHashTraining

final class PretrainedTests: XCTestCase {
    func model(_ backbone: BackboneKind, image: SampleShape, batch: Int = 2) throws -> HashModel {
        let config = ModelConfig(inputDim: image.count, backbone: backbone, hidden: [], nbit: 8, classes: 4, inputShape: image)
        return HashModel(config: config, loss: LossConfig(), codebook: try Codebook.generate(method: .B, classes: 4, bits: 8, seed: 1), batchSize: batch)
    }

    func python(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let p = Process(), err = Pipe()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + arguments
        p.standardOutput = FileHandle.nullDevice; p.standardError = err
        try p.run(); p.waitUntilExit()
        return (p.terminationStatus, String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func testTorchvisionAlexNetGivesPyTorchsFeatures() throws {
        guard (try? python(["-c", "import torch, numpy"]))?.status == 0 else { throw XCTSkip("torch is not installed") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let dir = temporaryDirectory()
        let made = try python([root + "/bench/torchvision_to_safetensors.py", "--check-random-alexnet", dir, "--image-size", "63"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let m = try model(.alexnet, image: SampleShape(channels: 3, height: 63, width: 63))
        XCTAssertEqual(try Pretrained.load(dir + "/alexnet.safetensors", into: m), 14)
        let x = try NPYArray(path: dir + "/x.npy"), want = try NPYArray(path: dir + "/features.npy")
        let input = FloatBuffer(count: 2 * x.rowLength)
        for r in 0..<2 { XCTAssertTrue(x.copyRow(r, into: input.pointer + r * x.rowLength)) }
        var out = UnsafePointer(input.pointer)
        for layer in m.layers { out = layer.infer(out, B: 2, parameters: m.parameters.pointer) }
        let expected = (0..<(2 * 4096)).map { Float(want.double(at: $0)) }
        let scale = expected.map(abs).max()!
        let worst = (0..<(2 * 4096)).map { abs(out[$0] - expected[$0]) }.max()!
        XCTAssertGreaterThan(scale, 0)
        XCTAssertLessThan(worst, 1e-4 * scale, "fc7 features: max difference \(worst) of \(scale)")
    }

    func testRefusals() throws {
        let dir = temporaryDirectory()
        let cnn = try model(.cnn, image: SampleShape(channels: 1, height: 8, width: 8))
        let layout = cnn.store.layout
        func write(_ tensors: [(String, [Int])], to name: String) throws -> String {
            let t = tensors.map { SafeTensors.Tensor(name: $0.0, dtype: "F32", shape: $0.1, bytes: [UInt8](repeating: 0, count: 4 * $0.1.reduce(1, *))) }
            let path = dir + "/" + name
            try SafeTensors.serialize(t, metadata: [:]).write(to: URL(fileURLWithPath: path))
            return path
        }
        let backbone = layout.tensors.filter { $0.offset < layout.backboneCount }.map { ($0.name, $0.shape) }
        let missing = try write(backbone.filter { $0.0 != "features.3.bias" }, to: "missing.safetensors")
        assertUserError("no tensor 'features.3.bias' for the cnn backbone", file: missing) { try Pretrained.load(missing, into: cnn) }
        let misshapen = try write(backbone.map { $0.0 == "fc.0.weight" ? ($0.0, [3, 3]) : $0 }, to: "shape.safetensors")
        assertUserError("tensor 'fc.0.weight' has shape [3, 3], the cnn backbone needs \(layout["fc.0.weight"].shape)", file: misshapen) {
            try Pretrained.load(misshapen, into: cnn)
        }
        let garbage = dir + "/garbage.safetensors"
        try Data("not a safetensors file at all".utf8).write(to: URL(fileURLWithPath: garbage))
        assertUserError("not a safetensors file", file: garbage) { try Pretrained.load(garbage, into: cnn) }
        let linear = HashModel(config: ModelConfig(inputDim: 5, backbone: .linear, hidden: [], nbit: 8, classes: 4), loss: LossConfig(),
                               codebook: try Codebook.generate(method: .B, classes: 4, bits: 8, seed: 1), batchSize: 2)
        assertUserError("the linear backbone has none", file: missing) { try Pretrained.load(missing, into: linear) }
        // Every tensor there (and one more, as torchvision's classifier.6): loaded.
        let whole = try write(backbone + [("classifier.6.weight", [2, 2])], to: "whole.safetensors")
        XCTAssertEqual(try Pretrained.load(whole, into: cnn), 6)
    }

    /// `export` names AlexNet's classifier `fc.1` and `fc.4`, as the authors' class does; such a
    /// file loads back as a pretrained backbone, tensor for tensor.
    func testExportedAlexNetLoadsBack() throws {
        let dir = temporaryDirectory()
        let image = SampleShape(channels: 3, height: 63, width: 63)
        let a = try model(.alexnet, image: image)
        a.resetParameters(seed: 4)
        let tensors = SafeTensors.tensors(of: a)
        XCTAssertEqual(Array(tensors.map(\.name).prefix(14).suffix(4)), ["fc.1.weight", "fc.1.bias", "fc.4.weight", "fc.4.bias"])
        XCTAssertTrue(tensors.map(\.name).contains("ce_fc.centroids"))
        try SafeTensors.serialize(tensors, metadata: [:]).write(to: URL(fileURLWithPath: dir + "/a.safetensors"))
        let b = try model(.alexnet, image: image)
        try Pretrained.load(dir + "/a.safetensors", into: b)
        let n = b.store.layout.backboneCount
        XCTAssertEqual(Array(b.parameters.array.prefix(n)), Array(a.parameters.array.prefix(n)))
    }
}
