import ArgumentParser
import Foundation
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

extension OrthoHashCommand {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What a run directory holds: the run's settings, whether it finished or where it stopped, and its checkpoints.")
        @Argument(help: "Run directory.") var runDir: String

        func run() throws {
            let run = RunDirectory(runDir)
            let config = try run.config()
            print("\(runDir): \(Inspect.describe(config))")
            let steps = run.checkpoints.stepCheckpoints()
            var newest: CheckpointState? = nil
            var lines: [String] = []
            for path in steps + [run.checkpoints.bestPath] where FileManager.default.fileExists(atPath: path) {
                let name = URL(fileURLWithPath: path).lastPathComponent
                do {
                    let ck = try Checkpoint.read(path)
                    if newest == nil && path != run.checkpoints.bestPath { newest = ck.state }
                    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                    lines.append("  " + [name.padding(toLength: 22, withPad: " ", startingAt: 0), Inspect.position(ck.state, config),
                                         Inspect.best(ck.state, config), String(format: "%.1f MB", Double(size) / 1e6)].joined(separator: "  "))
                } catch {
                    lines.append("  \(name.padding(toLength: 22, withPad: " ", startingAt: 0))  \(error)")
                }
            }
            if let holder = run.lockHolder() {
                print("state: in use now, by \(holder)")
            } else if FileManager.default.fileExists(atPath: run.summaryPath) {
                try InputFile.check(run.summaryPath)
                let summary = try JSON.decode(Summary.self, from: FileManager.default.contents(atPath: run.summaryPath) ?? Data(), file: run.summaryPath)
                let maps = config.mapAt.map { String(format: "mAP@%@ %.4f", $0.text, summary.map[$0.text] ?? .nan) }.joined(separator: ", ")
                print("state: finished, \(maps) (summary.json; \(String(format: "%.0f", summary.samples_per_second)) samples/s on \(summary.world_size) rank\(summary.world_size > 1 ? "s" : ""))")
            } else if let newest {
                print("state: stopped \(Inspect.position(newest, config)); continue with: orthohash train --run-dir \(runDir) --resume")
            } else {
                print("state: not started (no checkpoint yet)")
            }
            print(lines.isEmpty ? "checkpoints: none" : "checkpoints (newest first, then the best):\n" + lines.joined(separator: "\n"))
        }

        static func describe(_ c: TrainConfig) -> String {
            let data = c.dataset == .npy ? "npy (\(c.trainFeatures ?? "?"))" : "fashion-mnist"
            let model = c.backbone == .mlp ? "mlp \(c.hidden.map(String.init).joined(separator: ","))" : "linear"
            let o = c.optimizer
            return "\(data), \(model), \(c.nbit) bits, codebook \(c.codebookFile ?? c.codebook.rawValue), seed \(c.seed); "
                + "\(c.epochs) epochs, batch \(c.batchSize), \(o.kind.rawValue) lr \(o.lr)"
        }

        /// Where a checkpoint is in its run.
        static func position(_ s: CheckpointState, _ c: TrainConfig) -> String {
            s.stepInEpoch == 0 ? "after epoch \(s.epoch) of \(c.epochs) (step \(s.globalStep))"
                : "in epoch \(s.epoch + 1) of \(c.epochs), \(s.stepInEpoch) steps into it (step \(s.globalStep))"
        }

        static func best(_ s: CheckpointState, _ c: TrainConfig) -> String {
            guard let map = s.bestMAP, let epoch = s.bestEpoch else { return "not evaluated yet" }
            return String(format: "best mAP@%@ %.4f (epoch %ld)", c.mapAt.first?.text ?? "?", map, epoch)
        }
    }
}
