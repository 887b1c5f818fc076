// `--dataset images` end to end with the built binary: list files of the fixture images (JPEG,
// CMYK JPEG, PNG with grey, alpha and palettes), the cnn over 3-channel crops, encode --images;
// a missing or corrupt image stops the run in one line naming the file and its place in the
// list, the checkpoints intact; malformed lists are refused before training starts.

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashTraining

final class ImageCLITests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images").path
    static let kinds = ["rgb.jpg", "cmyk.jpg", "grey.jpg", "rgb.png", "grey.png", "greyalpha.png", "rgba.png", "palette.png"]

    /// A list of `n` lines over the fixture images (paths relative to the fixtures directory).
    func list(_ dir: String, _ name: String, rows n: Int, classes: Int = 4, replace: [Int: String] = [:]) throws -> String {
        let lines = (0..<n).map { i in "\(replace[i] ?? Self.kinds[i % Self.kinds.count]) \(i % classes)" }
        let path = "\(dir)/\(name)"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func args(_ dir: String, train: String, query: String, db: String) -> [String] {
        ["train", "--dataset", "images", "--train-list", train, "--query-list", query, "--db-list", db, "--image-root", Self.fixtures,
         "--backbone", "cnn", "--image-size", "20", "--test-resize", "24", "--nbit", "16", "--batch-size", "8", "--epochs", "2",
         "--lr", "1e-3", "--quiet", "--threads", "2"]
    }

    func testTrainAndEncodeImages() throws {
        let dir = tempDir()
        let train = try list(dir, "train.txt", rows: 32), query = try list(dir, "query.txt", rows: 8), db = try list(dir, "db.txt", rows: 16)
        let run = try orthohash(args(dir, train: train, query: query, db: db) + ["--run-dir", dir + "/run"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/run/summary.json"))) as! [String: Any]
        XCTAssertNotNil((summary["map"] as? [String: Double])?["all"])
        let encoded = try orthohash(["encode", "--run-dir", dir + "/run", "--images", db, "--image-root", Self.fixtures, "--out", dir + "/codes.npy"])
        XCTAssertEqual(encoded.status, 0, encoded.stderr)
        XCTAssertEqual(try NPYArray(path: dir + "/codes.npy").shape, [16, 2])
        // The same run again: the same bits (the crops are drawn from the seed, epoch and row).
        let again = try orthohash(args(dir, train: train, query: query, db: db) + ["--run-dir", dir + "/again"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try Checkpoint.read(dir + "/run/checkpoints/best.ohck").parameters,
                       try Checkpoint.read(dir + "/again/checkpoints/best.ohck").parameters)
        // NUS-WIDE's and MS-COCO's training crop, stored with the run.
        let crop = try orthohash(args(dir, train: train, query: query, db: db) + ["--run-dir", dir + "/crop", "--train-transform", "resize-random-crop"])
        XCTAssertEqual(crop.status, 0, crop.stderr)
        XCTAssertTrue(try String(contentsOfFile: dir + "/crop/config.json", encoding: .utf8).contains("resize-random-crop"))
        XCTAssertNotEqual(try Checkpoint.read(dir + "/crop/checkpoints/best.ohck").parameters,
                          try Checkpoint.read(dir + "/run/checkpoints/best.ohck").parameters)
    }

    /// Random crops and flips drawn from (seed, epoch, row): a run stopped mid-epoch and resumed
    /// (its next batch already being decoded when it stopped) ends byte-identical.
    func testResumeWithAugmentationIsExact() throws {
        let dir = tempDir()
        let train = try list(dir, "train.txt", rows: 32), query = try list(dir, "query.txt", rows: 8), db = try list(dir, "db.txt", rows: 16)
        let base = args(dir, train: train, query: query, db: db) + ["--checkpoint-every-steps", "3", "--log-steps"]
        let full = try orthohash(base + ["--run-dir", dir + "/full"])
        XCTAssertEqual(full.status, 0, full.stderr)
        let cut = try orthohash(base + ["--run-dir", dir + "/cut"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "6"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        let resumed = try orthohash(base + ["--run-dir", dir + "/cut", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try Checkpoint.read(dir + "/cut/checkpoints/best.ohck").parameters,
                       try Checkpoint.read(dir + "/full/checkpoints/best.ohck").parameters)
        XCTAssertEqual(try String(contentsOfFile: dir + "/cut/steps.csv", encoding: .utf8),
                       try String(contentsOfFile: dir + "/full/steps.csv", encoding: .utf8))
    }

    func testBadImagesAndListsStopTheRun() throws {
        let dir = tempDir()
        let query = try list(dir, "query.txt", rows: 8), db = try list(dir, "db.txt", rows: 16)
        // Row 21 of the training list is missing or corrupt: met in epoch 1 (every row is).
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: dir + "/corrupt.jpg"))
        for (name, file, message) in [("missing", "nowhere.jpg", "no such file"), ("corrupt", dir + "/corrupt.jpg", "neither a JPEG nor a PNG")] {
            let train = try list(dir, "\(name).txt", rows: 32, replace: [21: file])
            let run = try orthohash(args(dir, train: train, query: query, db: db) + ["--run-dir", "\(dir)/\(name)"])
            XCTAssertEqual(run.status, 1, run.stderr)
            let lines = run.stderr.split(separator: "\n").filter { $0.hasPrefix("error") }
            XCTAssertEqual(lines.count, 1, run.stderr)
            XCTAssertTrue(run.stderr.contains(message) && run.stderr.contains("image 22 of \(train)"), run.stderr)
            XCTAssertTrue(run.stderr.contains(file.hasPrefix("/") ? file : Self.fixtures + "/" + file), run.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/\(name)/summary.json"))
        }
        // A malformed list is refused before anything is trained, naming its line.
        let bad = dir + "/bad.txt"
        try "rgb.jpg 1\ncmyk.jpg\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try orthohash(args(dir, train: bad, query: query, db: db) + ["--run-dir", dir + "/bad"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("\(bad): line 2: a path without a label"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad/checkpoints"))
        // Flags of another dataset are refused.
        let stray = try orthohash(["train", "--train-list", bad, "--run-dir", dir + "/stray"])
        XCTAssertEqual(stray.status, 1)
        XCTAssertTrue(stray.stderr.contains("--train-list belongs to --dataset images"), stray.stderr)
    }

    /// The refusals of image backbones and image data, each one line before any training.
    func testImageRefusals() throws {
        let dir = tempDir()
        let list = try list(dir, "l.txt", rows: 8)
        try NPYWriter.write(path: dir + "/x.npy", shape: [8, 4], floats: [Float](repeating: 1, count: 32))
        try NPYWriter.write(path: dir + "/y.npy", shape: [8], int64: [0, 1, 0, 1, 0, 1, 0, 1])
        let npy = ["--dataset", "npy", "--train-features", dir + "/x.npy", "--train-labels", dir + "/y.npy", "--query-features", dir + "/x.npy",
                   "--query-labels", dir + "/y.npy", "--db-features", dir + "/x.npy", "--db-labels", dir + "/y.npy"]
        let cases: [([String], String)] = [
            (["train", "--dataset", "images", "--train-list", list], "--dataset images needs --query-list"),
            (["train", "--dataset", "images", "--train-list", list, "--query-list", list, "--db-list", list, "--test-resize", "100"],
             "--test-resize (100) must be at least the image size (224)"),
            (["train", "--backbone", "alexnet"], "--backbone alexnet takes 3-channel images, the data's have 1"),
            (["train", "--backbone", "cnn"] + npy, "--backbone cnn takes images, and the npy data are feature vectors"),
            (["train", "--dataset", "generated", "--backbone", "alexnet", "--image-size", "40"], "--backbone alexnet needs images of at least 63x63 pixels"),
            (["train", "--image-size", "32"], "--image-size belongs to --dataset images or generated"),
            (["train", "--dataset", "generated", "--db-limit", "5"], "--db-limit does not apply to --dataset generated"),
            (["encode", "--run-dir", dir + "/none", "--out", dir + "/c.npy"], "give --features or --images"),
        ]
        for (arguments, message) in cases {
            let r = try orthohash(arguments + (arguments[0] == "train" ? ["--run-dir", dir + "/run", "--epochs", "1"] : []))
            XCTAssertEqual(r.status, 1, "\(arguments): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(arguments): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").filter { !$0.isEmpty }.count, 1, r.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run/checkpoints"))
    }
}
