// Models trained by the code as it stood before the core was restructured (issue 10), committed
// under Tests/Fixtures/reference: the same seed and settings must give them again, byte for byte,
// as the exported safetensors file and as the last checkpoint (whose only fields that may differ
// are the seconds it measured and the paths of the data).
//
// OpenBLAS is pinned to one thread and to its Haswell kernel (AVX2 + FMA, which every machine
// this runs on has): another CPU's kernel adds the products of a GEMM in another order, and the
// results would differ in the last bits for that reason alone. The other arithmetic (Swift code,
// the C kernels, whose sums run in a fixed order in every CPU variant) is the same everywhere.
//
// ORTHOHASH_RECORD_REFERENCE=1 writes the files instead of comparing (done once, with the old code).

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining
import TestSupport

final class ReferenceTests: XCTestCase {
    /// The default data (real Fashion-MNIST images, a subset), MLP backbone, the scalar loss path.
    func testFashionMNISTReference() throws {
        let dir = tempDir()
        let run = dir + "/run"
        let train = try orthohash(["train", "--backbone", "mlp", "--hidden", "16", "--nbit", "16", "--epochs", "2",
                                   "--train-limit", "2048", "--query-limit", "256", "--db-limit", "2048", "--batch-size", "128",
                                   "--eval-every", "1", "--threads", "1", "--quiet", "--run-dir", run], environment: reproducibleBLAS)
        XCTAssertEqual(train.status, 0, train.stderr)
        try matchesReference("fashion-mnist-mlp", run: run)
    }

    /// Many classes (300: the C kernel of the single-label loss), a linear backbone on float16
    /// features, SGD with Nesterov momentum and a multistep schedule, checkpoints every 7 steps.
    /// The reference predates the fused head, so this run takes `--head logits`; the fused head
    /// is checked against the definition and against this path in FusedHeadTests.
    func testManyClassesReference() throws {
        let dir = tempDir()
        let run = dir + "/run"
        let train = try orthohash(try manyClassesRun(dir) + ["--head", "logits", "--run-dir", run], environment: reproducibleBLAS)
        XCTAssertEqual(train.status, 0, train.stderr)
        try matchesReference("many-classes-linear", run: run)
    }

    /// The same run with the fused head, its products by lookups and by BLAS GEMMs: the loss
    /// and mAP of the reference's materialised head, to float32 summation order over 72 steps
    /// (the final loss within 1e-4 relative, mAP within 0.002: a few of 100 queries' lists may
    /// swap two rows at equal distance).
    func testFusedHeadProductsMatchTheReferenceRun() throws {
        let dir = tempDir()
        let args = try manyClassesRun(dir)
        var summaries: [[String: Any]] = []
        for head in [["--head", "logits"], ["--head", "fused", "--head-products", "lookup"], ["--head", "fused", "--head-products", "blas"]] {
            let run = dir + "/run-" + head.joined(separator: "-")
            let train = try orthohash(args + head + ["--run-dir", run], environment: reproducibleBLAS)
            XCTAssertEqual(train.status, 0, train.stderr)
            summaries.append(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as! [String: Any])
        }
        let loss = summaries[0]["final_loss"] as! Double, map = summaries[0]["map"] as! [String: Double]
        for s in summaries.dropFirst() {
            XCTAssertEqual(s["final_loss"] as! Double, loss, accuracy: 1e-4 * loss)
            for (cutoff, value) in s["map"] as! [String: Double] { XCTAssertEqual(value, map[cutoff]!, accuracy: 0.002, cutoff) }
        }
    }

    /// Writes the many-classes data (300 classes, 48-d float16) to `dir`; the train command's
    /// arguments without the head and the run directory.
    func manyClassesRun(_ dir: String) throws -> [String] {
        var rng = Xoshiro256(seed: 21)
        let C = 300, D = 48
        let centres = (0..<(C * D)).map { _ in Float(rng.gaussian()) }
        for (split, n) in [("train", 1536), ("query", 100), ("db", 600)] {
            var x: [Float16] = [], y: [Int64] = []
            for i in 0..<n {
                let c = split == "train" && i < C ? i : rng.nextInt(below: C)
                y.append(Int64(c))
                for d in 0..<D { x.append(Float16(centres[c * D + d] + Float(rng.gaussian() * 0.5))) }
            }
            try x.withUnsafeBytes { try NPYWriter.write(path: "\(dir)/\(split)_x.npy", type: .float16, shape: [n, D], bytes: $0) }
            try NPYWriter.write(path: "\(dir)/\(split)_y.npy", shape: [n], int64: y)
        }
        return ["train", "--dataset", "npy", "--train-features", dir + "/train_x.npy", "--train-labels", dir + "/train_y.npy",
                "--query-features", dir + "/query_x.npy", "--query-labels", dir + "/query_y.npy",
                "--db-features", dir + "/db_x.npy", "--db-labels", dir + "/db_y.npy",
                "--nbit", "32", "--epochs", "3", "--batch-size", "64", "--optimizer", "sgd", "--nesterov",
                "--lr", "0.05", "--scheduler", "multistep", "--milestones", "1,2", "--checkpoint-every-steps", "7",
                "--map-at", "100,gt100", "--threads", "1", "--quiet"]
    }

    /// The run's newest checkpoint and its export against the reference `name`.
    func matchesReference(_ name: String, run: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try assertMatchesReference(name, runDir: run, export: { out in
            let r = try orthohash(["export", "--run-dir", run, "--out", out])
            XCTAssertEqual(r.status, 0, r.stderr)
        }, file: file, line: line)
    }
}
