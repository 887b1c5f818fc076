// One training step against PyTorch directly, tensor by tensor, in the manner of llm.c's
// test_gpt2.c: bench/torch_one_step.py ran the authors' model, loss and optimizer on saved
// inputs and parameters (Tests/Fixtures/torch_one_step.json), and this step must give the same
// loss, accuracy, codes, BatchNorm statistics, gradients and updated parameters.
//
// Tolerances. Both compute in float32 but add in different orders (OpenBLAS's GEMMs and our
// sums against PyTorch's), so values differ by rounding: the loss and the codes by ~1e-7
// relative, the gradients (through several GEMMs and BatchNorm's batch sums) by ~1e-6 of their
// tensor's largest value. The bounds are 10-100x above what rounding gives and orders of
// magnitude below a wrong term (a missing term or factor is off by O(1)):
// - loss, codes, running statistics: 1e-5 relative (of the value, or of the tensor's largest);
// - gradients: 1e-4 of each tensor's largest magnitude;
// - parameters after the update: 1e-3 of the learning rate (Adam's first step moves every
//   parameter by about lr; SGD's by lr times the gradient).

import Foundation
import XCTest
@testable import OrthoHashNumerics

final class TorchStepTests: XCTestCase {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/torch_one_step.json")

    func testOneStepMatchesPyTorch() throws {
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixture)) as! [String: Any]
        let cases = root["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 7)
        for c in cases { try check(c) }
    }

    func check(_ c: [String: Any]) throws {
        let name = c["name"] as! String
        func floats(_ v: Any?) -> [Float] { (v as! [Double]).map { Float($0) } }
        let D = c["D"] as! Int, K = c["K"] as! Int, C = c["C"] as! Int, B = c["B"] as! Int
        let hidden = c["hidden"] as! [Int]
        let multi = c["multi"] as? String
        let L = c["loss"] as! [String: Any], O = c["optimizer"] as! [String: Any]
        var loss = LossConfig()
        loss.scale = Float(L["scale"] as! Double); loss.margin = Float(L["margin"] as! Double)
        loss.marginType = MarginType(rawValue: L["margin_type"] as! String)!
        loss.ce = Float(L["ce"] as! Double); loss.quan = Float(L["quan"] as! Double)
        loss.quanType = QuantizationType(rawValue: L["quan_type"] as! String)!
        if let multi { loss.multiLabelLoss = MultiLabelLoss(rawValue: multi)! }
        var opt = OptimizerConfig()
        opt.kind = OptimizerKind(rawValue: O["kind"] as! String)!
        opt.lr = Float(O["lr"] as! Double); opt.backboneLRScale = Float(O["backbone_lr_scale"] as! Double)
        opt.weightDecay = Float(O["weight_decay"] as! Double)
        if opt.kind == .adam {
            let betas = O["betas"] as! [Double]
            opt.beta1 = Float(betas[0]); opt.beta2 = Float(betas[1]); opt.eps = Float(O["eps"] as! Double)
        } else {
            opt.momentum = Float(O["momentum"] as! Double); opt.nesterov = O["nesterov"] as! Bool
        }
        let image = (c["image"] as? [Int]).map { SampleShape(channels: $0[0], height: $0[1], width: $0[2]) }
        let backbone: BackboneKind = image != nil ? .cnn : hidden.isEmpty ? .linear : .mlp
        let config = ModelConfig(inputDim: D, backbone: backbone, hidden: hidden, nbit: K, classes: C, inputShape: image)
        let codebook = Codebook(classes: C, bits: K, values: (c["codebook"] as! [Int]).map { Int8($0) })
        let store = ParameterStore(layout: ParameterLayout(config), optimizer: opt.kind)
        let model = HashModel(config: config, loss: loss, codebook: codebook, batchSize: B, store: store)
        let before = c["parameters"] as! [String: Any]
        for t in store.layout.tensors {
            let values = floats(before[t.name])
            XCTAssertEqual(values.count, t.count, "\(name): \(t.name)")
            for i in 0..<t.count { store.parameters[t.offset + i] = values[i] }
        }
        let x = FloatBuffer(floats(c["x"]))
        let step: (loss: Double, correct: Int, gradients: GradientReport)
        if multi != nil {
            let y = FloatBuffer(floats(c["labels"]))
            step = model.trainStep(x.pointer, targets: .multi(y.pointer))
        } else {
            let y = (c["labels"] as! [Int]).map { Int32($0) }
            step = y.withUnsafeBufferPointer { model.trainStep(x.pointer, targets: .single($0.baseAddress!)) }
        }
        XCTAssertTrue(step.gradients.finite, name)
        let torchLoss = c["loss_value"] as! Double
        XCTAssertEqual(step.loss, torchLoss, accuracy: 1e-5 * abs(torchLoss), "\(name): loss")
        XCTAssertEqual(step.correct, c["correct"] as! Int, "\(name): correct rows")
        assertClose(model.codes.array, floats(c["codes"]), 1e-5, "\(name): codes v")
        assertClose(model.runningMean.array, floats(c["running_mean"]), 1e-5, "\(name): running mean")
        assertClose(model.runningVar.array, floats(c["running_var"]), 1e-5, "\(name): running var")
        let gradients = c["gradients"] as! [String: Any]
        for t in store.layout.tensors {
            assertClose(Array(store.gradients.array[t.range]), floats(gradients[t.name]), 1e-4, "\(name): gradient of \(t.name)")
        }
        store.update(with: Optimizer(config: opt), lr: opt.lr)
        let after = c["after"] as! [String: Any]
        for t in store.layout.tensors {
            let got = Array(store.parameters.array[t.range]), want = floats(after[t.name])
            let worst = zip(got, want).map { abs(Double($0) - Double($1)) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-3 * Double(opt.lr), "\(name): \(t.name) after the update")
        }
    }

    /// max |a - b| within `tolerance` of max |b| (and the reference not all zero).
    func assertClose(_ a: [Float], _ b: [Float], _ tolerance: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = b.map { abs(Double($0)) }.max() ?? 0
        let worst = zip(a, b).map { abs(Double($0) - Double($1)) }.max() ?? 0
        XCTAssertGreaterThan(scale, 0, "\(what): the reference is all zero", file: file, line: line)
        XCTAssertLessThanOrEqual(worst, tolerance * scale, "\(what): max difference \(worst) of \(scale)", file: file, line: line)
    }
}
