import ArgumentParser
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Binary codes of a feature matrix, or of images (--images LIST) through the test transform.",
            discussion: "Codes are packed like numpy.packbits(v > 0, axis=1) (bitorder 'big'): bit k of a code is bit 7 - k % 8 of byte k / 8; a set bit means v > 0 (sign +1).")
        @OptionGroup var source: RunCheckpointOptions
        @Option(help: "Features (.npy, (N, D) float32/float16).") var features: String?
        @Option(help: "Images instead: a list file in --train-list's format (its labels are read, not used), decoded and transformed as the test split is (Resize, then CenterCrop).")
        var images: String?
        @Option(help: "With --images: the directory the list's relative paths start from (default: the list's directory).") var imageRoot: String?
        @Option(help: "With --images: the shorter side before the centre crop (default: the run's --test-resize, else its image size).") var testResize: Int?
        @Option(help: "Output: packed codes, uint8 (N, ceil(K/8)).") var out: String
        @Option(help: "Also write the real-valued codes v, float32 (N, K).") var outReal: String?
        @Option(help: "Re-estimate BatchNorm's running mean on these features (.npy) first: the target database when the model was trained on another domain.")
        var bnMeanFrom: String?
        @Flag(help: "With --bn-mean-from: also set BatchNorm's gamma to 1 and beta to 0.") var bnIdentityAffine = false
        @OptionGroup var runtime: RuntimeOptions

        func validate() throws {
            if bnIdentityAffine && bnMeanFrom == nil { throw ValidationError("--bn-identity-affine needs --bn-mean-from") }
            guard (features == nil) != (images == nil) else { throw ValidationError("give --features or --images (one of them)") }
            if images == nil && (imageRoot != nil || testResize != nil) { throw ValidationError("--image-root and --test-resize belong to --images") }
            if let testResize, testResize < 1 { throw ValidationError("--test-resize must be at least 1, got \(testResize)") }
            let inputs = [("--features", features), ("--images", images), ("--bn-mean-from", bnMeanFrom)].compactMap { what, path in
                path.map { (what: "the input of \(what)", path: $0) }
            }
            try source.checkOutputs([("--out", out)] + (outReal.map { [("--out-real", $0)] } ?? []), inputs: inputs)
        }

        func run() throws {
            let (config, ck, path) = try source.load()
            let threads = runtime.resolvedThreads(ranks: 1)
            BLAS.setThreads(threads)
            let model = try Resume.model(from: ck, threads: threads)
            let x: FeatureSource
            if let images {
                guard let shape = model.config.inputShape, shape.channels == 3 else {
                    throw OrthoHashError("--images encodes through an RGB image backbone; the model in \(path) is \(model.config.backbone.rawValue)", file: images)
                }
                let size = shape.height, resize = testResize ?? config.testResize ?? size
                guard resize >= size else { throw OrthoHashError("--test-resize \(resize) is smaller than the model's \(size)-pixel crops") }
                x = ImageFeatures(list: try ImageList.read(images, root: imageRoot),
                                  transform: ImageTransform(kind: .test, size: size, testResize: resize, seed: 0), threads: threads)
            } else {
                x = try openFeatures(features!, for: model, checkpoint: path)
            }
            if let bnMeanFrom {
                try reestimateBatchNormMean(model, from: try openFeatures(bnMeanFrom, for: model, checkpoint: path), identityAffine: bnIdentityAffine)
            }
            let K = ck.state.model.nbit
            var words: [UInt64] = []                 // the packed codes, (N, ceil(K / 64))
            var real = outReal == nil ? [] : [Float](repeating: 0, count: x.rows * K)
            try model.forEachCodeChunk(of: x, rows: 0..<x.rows) { start, n, v in
                words += PackedCodes(values: v, count: n, bits: K).storage
                if !real.isEmpty { for i in 0..<(n * K) { real[start * K + i] = v[i] } }
            }
            let codes = PackedCodes(count: x.rows, bits: K, storage: words)
            try NPYWriter.write(path: out, shape: [x.rows, (K + 7) / 8], uint8: codes.numpyBytes())
            if let outReal { try NPYWriter.write(path: outReal, shape: [x.rows, K], floats: real) }
            print("encoded \(x.rows) rows to \(K)-bit codes: \(out)")
        }
    }
}
