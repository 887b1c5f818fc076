// The backbones: each is a list of layers (Layer.swift) with PyTorch's module names, built from
// the model's settings. Adding an architecture adds a case here and nothing in the model.
//
// Dimensions: D = input values per row, F = features out of the backbone.

public enum BackboneKind: String, Codable, CaseIterable, Sendable {
    /// Identity: the input is a pre-extracted feature vector.
    case linear
    /// Fully connected layers with ReLU (`--hidden`).
    case mlp
    /// A small convolutional net for small images (Fashion-MNIST's 28 x 28 grey ones): conv C->32
    /// 5x5 pad 2, ReLU, max-pool 2; conv 32->64 5x5 pad 2, ReLU, max-pool 2; Linear (3136 for
    /// 28 x 28)->1024, ReLU.
    case cnn
}

extension BackboneKind {
    /// Whether the backbone takes rows as images (ModelConfig.inputShape).
    public var takesImages: Bool { self == .cnn }
    /// The cnn's two convolutions' channels and its Linear layer's width.
    public static let cnnWidths = [32, 64, 1024]
}

extension ModelConfig {
    /// The backbone's layers, not yet bound to buffers (cheap to make: shapes and names only).
    func backboneLayers() -> [Layer] {
        switch backbone {
        case .linear:
            return []
        case .mlp:
            var inputs = inputDim
            return hidden.enumerated().map { i, width in
                defer { inputs = width }
                return LinearLayer(name: "backbone.fc.\(i)", inputs: inputs, outputs: width)
            }
        case .cnn:
            // As PyTorch's nn.Sequential: features (0 conv, 1 ReLU, 2 pool, 3 conv, 4 ReLU, 5 pool), fc (0 Linear, 1 ReLU).
            guard let image = inputShape else { preconditionFailure("the cnn backbone needs the input's image shape") }
            let conv1 = Conv2dLayer(name: "features.0", input: image, outputs: hidden[0], kernel: 5, padding: 2, relu: true)
            let pool1 = MaxPool2dLayer(input: conv1.output, kernel: 2)
            let conv2 = Conv2dLayer(name: "features.3", input: pool1.output, outputs: hidden[1], kernel: 5, padding: 2, relu: true)
            let pool2 = MaxPool2dLayer(input: conv2.output, kernel: 2)
            let fc = LinearLayer(name: "fc.0", inputs: pool2.output.count, outputs: hidden[2])
            return [conv1, pool1, conv2, pool2, fc]
        }
    }
}
