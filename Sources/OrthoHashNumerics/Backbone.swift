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
    /// torchvision's AlexNet (the authors' backbone): features, average pool to 6 x 6,
    /// classifier[0:6] (dropout 0.5, Linear 9216->4096, ReLU, dropout, Linear 4096->4096, ReLU);
    /// fc7's 4096 features feed the hash layer. RGB images of at least 63 x 63 (224 x 224 in the paper).
    case alexnet
    /// torchvision's VGG-16 (configuration D): 13 convolutions 3x3, average pool to 7 x 7,
    /// classifier[0:6] (Linear 25088->4096, ReLU, dropout 0.5, Linear 4096->4096, ReLU, dropout).
    case vgg16
}

extension BackboneKind {
    /// Whether the backbone takes rows as images (ModelConfig.inputShape).
    public var takesImages: Bool { self != .linear && self != .mlp }
    /// The image channels the backbone takes (nil: any).
    public var imageChannels: Int? { self == .alexnet || self == .vgg16 ? 3 : nil }
    /// The smallest image side the backbone's layers fit.
    public var smallestImage: Int {
        switch self {
        case .linear, .mlp: return 1
        case .cnn: return 4            // two 2x2 poolings
        case .alexnet: return 63       // conv 11/4 and three 3/2 poolings
        case .vgg16: return 32         // five 2x2 poolings
        }
    }
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
        case .alexnet:
            guard let image = inputShape else { preconditionFailure("alexnet needs the input's image shape") }
            var layers: [Layer] = []
            var shape = image
            func conv(_ index: Int, _ outputs: Int, _ k: Int, stride: Int = 1, padding: Int) {
                let c = Conv2dLayer(name: "features.\(index)", input: shape, outputs: outputs, kernel: k, stride: stride, padding: padding, relu: true)
                layers.append(c); shape = c.output
            }
            func pool() { let p = MaxPool2dLayer(input: shape, kernel: 3, stride: 2); layers.append(p); shape = p.output }
            conv(0, 64, 11, stride: 4, padding: 2); pool()
            conv(3, 192, 5, padding: 2); pool()
            conv(6, 384, 3, padding: 1); conv(8, 256, 3, padding: 1); conv(10, 256, 3, padding: 1); pool()
            layers += Self.classifier(after: &shape, layers: layers, pool: (6, 6), dropoutFirst: true)
            return layers
        case .vgg16:
            guard let image = inputShape else { preconditionFailure("vgg16 needs the input's image shape") }
            var layers: [Layer] = []
            var shape = image, index = 0
            for block in [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]] {
                for width in block {
                    let c = Conv2dLayer(name: "features.\(index)", input: shape, outputs: width, kernel: 3, padding: 1, relu: true)
                    layers.append(c); shape = c.output; index += 2
                }
                let p = MaxPool2dLayer(input: shape, kernel: 2, stride: 2)
                layers.append(p); shape = p.output; index += 1
            }
            layers += Self.classifier(after: &shape, layers: layers, pool: (7, 7), dropoutFirst: false)
            return layers
        }
    }

    /// torchvision's average pool and classifier[0:6] of AlexNet (dropout first: Dropout, Linear
    /// `classifier.1`, ReLU, Dropout, Linear `classifier.4`, ReLU) or VGG (Linear `classifier.0`,
    /// ReLU, Dropout, Linear `classifier.3`, ReLU, Dropout). The pool is left out where it is the
    /// identity (AlexNet's 6 x 6 at 224 x 224).
    private static func classifier(after shape: inout SampleShape, layers: [Layer], pool: (Int, Int), dropoutFirst: Bool) -> [Layer] {
        var out: [Layer] = []
        if shape.height != pool.0 || shape.width != pool.1 {
            let a = AdaptiveAvgPool2dLayer(input: shape, height: pool.0, width: pool.1)
            out.append(a); shape = a.output
        }
        var features = shape.count
        func dropout() { out.append(DropoutLayer(input: SampleShape(features: features), index: layers.count + out.count)) }
        for name in dropoutFirst ? [1, 4] : [0, 3] {
            if dropoutFirst { dropout() }
            out.append(LinearLayer(name: "classifier.\(name)", inputs: features, outputs: 4096))
            features = 4096
            if !dropoutFirst { dropout() }
        }
        return out
    }
}

extension ModelConfig {
    /// Floating-point operations of one row's forward pass through the backbone, the hash layer and
    /// the cosines (2 per multiply-add of every GEMM: convolutions and Linear layers; the passes
    /// between them are not counted), and of a training step's row: forward, and backward's two
    /// GEMMs per layer but the first layer's input gradient, which is not computed.
    public var flopsPerRow: (forward: Double, training: Double) {
        var forward = 0.0, firstInputGradient = 0.0
        for (i, layer) in backboneLayers().enumerated() {
            var f = 0.0
            if let c = layer as? Conv2dLayer { f = 2 * Double(c.O) * Double(c.P) * Double(c.fanIn) }
            if let l = layer as? LinearLayer { f = 2 * Double(l.I) * Double(l.O) }
            forward += f
            if i == 0 { firstInputGradient = f }
        }
        let head = 2 * Double(featureDim) * Double(nbit) + 2 * Double(nbit) * Double(classes)
        forward += head
        return (forward, 3 * forward - firstInputGradient)
    }
}
