import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashTraining

extension OrthoHashCommand {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the trained weights, BN statistics and codebook as safetensors.")
        @OptionGroup var source: RunCheckpointOptions
        @Option(help: "Output .safetensors file.") var out: String

        func validate() throws {
            try source.checkOutputs([("--out", out)])
        }

        func run() throws {
            let (config, ck, path) = try source.load()
            let model = try Resume.model(from: ck, batchSize: 2)
            let data = SafeTensors.serialize(SafeTensors.tensors(of: model), metadata: [
                "format": "pt", "source": "orthohash", "checkpoint": URL(fileURLWithPath: path).lastPathComponent,
                "backbone": config.backbone.rawValue, "nbit": String(config.nbit), "scale": String(config.loss.scale),
                "margin": String(config.loss.margin), "margin_type": config.loss.marginType.rawValue,
            ])
            try AtomicFile.write(data, to: out)
            print("exported \(model.parameterCount) parameters, BN statistics and the \(ck.codebook.classes)x\(ck.codebook.bits) codebook to \(out)")
        }
    }
}
