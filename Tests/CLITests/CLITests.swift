// The command-line tool, run as a user runs it: exit status, one-line errors naming the file,
// and the train -> eval -> encode -> export flow on a small generated data set.

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining
import TestSupport

struct Run { var status: Int32; var stdout: String; var stderr: String }

func orthohash(_ arguments: [String], environment: [String: String] = [:]) throws -> Run {
    try start(arguments, environment: environment).finish()
}

/// A running `orthohash` process, for tests that signal it.
struct Started {
    let process: Process
    let out: Pipe, err: Pipe
    func finish() -> Run {
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

func start(_ arguments: [String], environment: [String: String] = [:]) throws -> Started {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [here.appendingPathComponent("orthohash"), Bundle.main.bundleURL.appendingPathComponent("orthohash")]
    guard let binary = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw XCTSkip("orthohash binary not found next to the tests")
    }
    let p = Process()
    p.executableURL = binary
    p.arguments = arguments
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    return Started(process: p, out: out, err: err)
}

/// A fresh temporary directory for one test (removed when the test process exits).
func tempDir(_ name: String = #function) -> String { TestDirectories.make(name) }

/// Writes train/query/db features and labels: 3 Gaussian clusters in 8 dimensions.
func writeData(_ dir: String) throws -> [String] {
    var rng = Xoshiro256(seed: 3)
    let centres = (0..<24).map { _ in Float(rng.gaussian() * 3) }
    for (name, n) in [("train", 256), ("query", 30), ("db", 120)] {
        var x: [Float] = [], y: [Int64] = []
        for _ in 0..<n {
            let c = rng.nextInt(below: 3)
            y.append(Int64(c))
            for d in 0..<8 { x.append(centres[c * 8 + d] + Float(rng.gaussian())) }
        }
        try NPYWriter.write(path: "\(dir)/\(name)_x.npy", shape: [n, 8], floats: x)
        try NPYWriter.write(path: "\(dir)/\(name)_y.npy", shape: [n], int64: y)
    }
    return ["--dataset", "npy", "--train-features", "\(dir)/train_x.npy", "--train-labels", "\(dir)/train_y.npy",
            "--query-features", "\(dir)/query_x.npy", "--query-labels", "\(dir)/query_y.npy",
            "--db-features", "\(dir)/db_x.npy", "--db-labels", "\(dir)/db_y.npy",
            "--nbit", "12", "--batch-size", "32", "--lr", "0.01", "--map-at", "all,10", "--quiet"]
}

/// A failed command: status 1, one line on stderr that starts with "error:" and contains `fragments`, no trace.
func assertFails(_ r: Run, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, 1, "stderr: \(r.stderr)", file: file, line: line)
    let lines = r.stderr.split(separator: "\n")
    XCTAssertEqual(lines.count, 1, "expected one line, got: \(r.stderr)", file: file, line: line)
    XCTAssertTrue(r.stderr.hasPrefix("error: "), r.stderr, file: file, line: line)
    for f in fragments { XCTAssertTrue(r.stderr.contains(f), "'\(r.stderr)' lacks '\(f)'", file: file, line: line) }
    XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Stack dump"), file: file, line: line)
}

final class CLITests: XCTestCase {
    func testTrainEvalEncodeExport() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let run = dir + "/run"
        let train = try orthohash(["train"] + args + ["--epochs", "2", "--run-dir", run])
        XCTAssertEqual(train.status, 0, train.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as! [String: Any]
        for key in ["map", "samples_per_second", "train_seconds", "epochs", "world_size"] { XCTAssertNotNil(summary[key], key) }
        let map = summary["map"] as! [String: Double]
        XCTAssertGreaterThan(map["all"]!, 0.8, "3 separated clusters")

        let eval = try orthohash(["eval", "--run-dir", run, "--checkpoint", "best"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let e = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(e["mAP@all"] as! Double, map["all"]!, accuracy: 1e-6, "eval reproduces the run's figure")
        // GLDv2's denominator min(|GT|, R) is at least the hits in the top R, so (every query having
        // ground truth here) its mAP@10 cannot exceed HashNet's.
        let gt = try orthohash(["eval", "--run-dir", run, "--map-at", "10,gt10"])
        XCTAssertEqual(gt.status, 0, gt.stderr)
        let g = try JSONSerialization.jsonObject(with: Data(gt.stdout.utf8)) as! [String: Any]
        let hashNet = g["mAP@10"] as! Double, gldv2 = g["mAP@gt10"] as! Double
        XCTAssertGreaterThan(gldv2, 0.5, gt.stdout)
        XCTAssertLessThanOrEqual(gldv2, hashNet, gt.stdout)

        let enc = try orthohash(["encode", "--run-dir", run, "--features", dir + "/query_x.npy", "--out", dir + "/codes.npy", "--out-real", dir + "/v.npy"])
        XCTAssertEqual(enc.status, 0, enc.stderr)
        let codes = try NPYArray(path: dir + "/codes.npy"), v = try NPYArray(path: dir + "/v.npy")
        XCTAssertEqual(codes.shape, [30, 2]); XCTAssertEqual(codes.type, .uint8); XCTAssertEqual(v.shape, [30, 12])
        // Bit k of a row is bit 7 - k % 8 of byte k / 8, set where v > 0.
        for r in 0..<30 {
            for k in 0..<12 {
                let bit = (Int(codes.double(at: r * 2 + k / 8)) >> (7 - k % 8)) & 1
                XCTAssertEqual(bit == 1, v.double(at: r * 12 + k) > 0)
            }
        }
        // BatchNorm's mean re-estimated on the database, gamma 1, beta 0: the database's codes v
        // average to 0 in every bit (float32 over 90 rows of order 1: 1e-4).
        let shifted = try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/dbcodes.npy",
                                     "--out-real", dir + "/dbv.npy", "--bn-mean-from", dir + "/db_x.npy", "--bn-identity-affine"])
        XCTAssertEqual(shifted.status, 0, shifted.stderr)
        let dbv = try NPYArray(path: dir + "/dbv.npy")
        let dbRows = dbv.shape[0]
        for k in 0..<12 {
            let mean = (0..<dbRows).reduce(0.0) { $0 + dbv.double(at: $1 * 12 + k) } / Double(dbRows)
            XCTAssertEqual(mean, 0, accuracy: 1e-4, "bit \(k)")
        }
        assertFails(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/c.npy", "--bn-identity-affine"]),
                    "--bn-identity-affine needs --bn-mean-from")
        try NPYWriter.write(path: dir + "/wide.npy", shape: [3, 9], floats: [Float](repeating: 1, count: 27))
        assertFails(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/c.npy", "--bn-mean-from", dir + "/wide.npy"]),
                    "wide.npy", "9 columns")
        try NPYWriter.write(path: dir + "/empty.npy", shape: [0, 8], floats: [])
        assertFails(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/c.npy", "--bn-mean-from", dir + "/empty.npy"]),
                    "empty.npy", "no rows to estimate BatchNorm's mean from")

        // The revisited protocol on the run's own query/database split: same-cluster rows are the
        // positives (even rows easy, odd rows hard), the first row of the next cluster is junk.
        let qy = try NPYArray(path: dir + "/query_y.npy"), dy = try NPYArray(path: dir + "/db_y.npy")
        let qLabels = (0..<qy.shape[0]).map { Int(qy.double(at: $0)) }, dLabels = (0..<dy.shape[0]).map { Int(dy.double(at: $0)) }
        let gnd = qLabels.map { c -> [String: [Int]] in
            let same = dLabels.indices.filter { dLabels[$0] == c }
            return ["easy": same.filter { $0 % 2 == 0 }, "hard": same.filter { $0 % 2 == 1 },
                    "junk": [dLabels.firstIndex(of: (c + 1) % 3)!]]
        }
        try JSONSerialization.data(withJSONObject: gnd).write(to: URL(fileURLWithPath: dir + "/gnd.json"))
        for extra in [[], ["--bn-mean-from-db"], ["--bn-mean-from-db", "--bn-identity-affine"]] {
            let rev = try orthohash(["revisited", "--run-dir", run, "--query-features", dir + "/query_x.npy",
                                     "--db-features", dir + "/db_x.npy", "--ground-truth", dir + "/gnd.json"] + extra)
            XCTAssertEqual(rev.status, 0, rev.stderr)
            let m = try JSONSerialization.jsonObject(with: Data(rev.stdout.utf8)) as! [String: Double]
            for key in ["easy", "medium", "hard"] { XCTAssertGreaterThan(m[key]!, 0.8, "\(extra) \(rev.stdout)"); XCTAssertLessThanOrEqual(m[key]!, 1) }
        }
        try JSONSerialization.data(withJSONObject: Array(gnd.dropLast())).write(to: URL(fileURLWithPath: dir + "/short.json"))
        assertFails(try orthohash(["revisited", "--run-dir", run, "--query-features", dir + "/query_x.npy",
                                   "--db-features", dir + "/db_x.npy", "--ground-truth", dir + "/short.json"]),
                    "short.json", "ground truth for \(gnd.count - 1) queries, but there are \(gnd.count) query rows")
        assertFails(try orthohash(["revisited", "--run-dir", run, "--query-features", dir + "/query_x.npy",
                                   "--db-features", dir + "/wide.npy", "--ground-truth", dir + "/gnd.json"]),
                    "wide.npy", "9 columns")
        assertFails(try orthohash(["revisited", "--run-dir", run, "--query-features", dir + "/query_x.npy",
                                   "--db-features", dir + "/db_x.npy", "--ground-truth", dir + "/gnd.json", "--bn-identity-affine"]),
                    "--bn-identity-affine needs --bn-mean-from-db")

        let export = try orthohash(["export", "--run-dir", run, "--out", dir + "/model.safetensors"])
        XCTAssertEqual(export.status, 0, export.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/model.safetensors"))

        // Resume of a finished run with other settings: refused, naming the checkpoint.
        let other = try orthohash(["train"] + args + ["--epochs", "2", "--run-dir", run, "--resume", "--nbit", "16"])
        assertFails(other, "checkpoint does not match", "nbit", ".ohck")
        // A corrupt checkpoint on eval.
        let last = CheckpointDirectory(runDir: run).stepCheckpoints()[0]
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: last)))
        bytes[100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: last))
        assertFails(try orthohash(["eval", "--run-dir", run, "--checkpoint", "last"]), "corrupt checkpoint: checksum mismatch", last)
        // Encode features of the wrong width.
        try NPYWriter.write(path: dir + "/wide.npy", shape: [2, 9], floats: Array(repeating: 0, count: 18))
        assertFails(try orthohash(["encode", "--run-dir", run, "--checkpoint", "best", "--features", dir + "/wide.npy", "--out", dir + "/c.npy"]),
                    "wide.npy", "9 columns")
    }

    /// A signal stops the run after the current step with a checkpoint of that step, one line on
    /// stderr and exit status 75; --resume then ends exactly where the uninterrupted run ends.
    /// SIGINT through the fault hook at step 11, and SIGTERM and SIGUSR1 sent from outside.
    func testSignalStopsWithCheckpointAndResumeIsExact() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "4", "--threads", "1", "--log-steps"]
        XCTAssertEqual(try orthohash(["train"] + args + ["--run-dir", dir + "/whole"]).status, 0)
        func finalState(_ run: String) throws -> (losses: String, parameters: [Float]) {
            (try String(contentsOfFile: run + "/steps.csv", encoding: .utf8),
             try Checkpoint.read(CheckpointDirectory(runDir: run).stepCheckpoints()[0]).parameters)
        }
        func checkResume(_ run: String, stoppedAt step: Int, _ what: String) throws {
            XCTAssertEqual(try Checkpoint.read(CheckpointDirectory(runDir: run).stepCheckpoints()[0]).state.globalStep, step, what)
            let resumed = try orthohash(["train", "--run-dir", run, "--resume", "--threads", "1", "--quiet", "--log-steps"])
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            let (a, b) = (try finalState(run), try finalState(dir + "/whole"))
            XCTAssertEqual(a.losses, b.losses, "\(what): every step's loss, once")
            XCTAssertEqual(a.parameters, b.parameters, "\(what): byte-identical parameters")
        }
        let hooked = try orthohash(["train"] + args + ["--run-dir", dir + "/int"], environment: ["ORTHOHASH_TEST_SIGNAL": "11:INT"])
        XCTAssertEqual(hooked.status, Interruption.exitStatus, hooked.stderr)
        XCTAssertEqual(hooked.stderr.split(separator: "\n").count, 1, hooked.stderr)
        XCTAssertTrue(hooked.stderr.hasPrefix("stopped by SIGINT after step 11 (step 3 of 8 in epoch 2 of 4): checkpoint \(dir)/int/checkpoints/step-0000000011.ohck; run the same command with --resume"), hooked.stderr)
        try checkResume(dir + "/int", stoppedAt: 11, "SIGINT at step 11")
        for signal in [SIGTERM, SIGUSR1] {
            let run = dir + "/kill\(signal)"
            let job = try start(["train"] + args + ["--run-dir", run], environment: ["ORTHOHASH_TEST_STEP_SLEEP_MS": "40"])
            // Once a few steps are done, from outside.
            let started = Date()
            while ((try? String(contentsOfFile: run + "/steps.csv", encoding: .utf8))?.split(separator: "\n").count ?? 0) < 5
                    && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
            kill(job.process.processIdentifier, signal)
            let r = job.finish()
            XCTAssertEqual(r.status, Interruption.exitStatus, "signal \(signal): \(r.stderr)")
            let name = signal == SIGTERM ? "SIGTERM" : "SIGUSR1"
            XCTAssertTrue(r.stderr.hasPrefix("stopped by \(name) after step "), r.stderr)
            let done = try String(contentsOfFile: run + "/steps.csv", encoding: .utf8).split(separator: "\n").count
            XCTAssertLessThan(done, 32, "stopped before the end")
            try checkResume(run, stoppedAt: done, name)
        }
    }

    /// The end of a run writes its checkpoint before the evaluation: a job killed (kill -9) while
    /// it evaluates loses no training, and --resume evaluates and ends as the uninterrupted run.
    func testKilledDuringTheLastEvaluationLosesNoTraining() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "3", "--threads", "1"]
        XCTAssertEqual(try orthohash(["train"] + args + ["--run-dir", dir + "/whole"]).status, 0)
        let run = dir + "/run"
        let job = try start(["train"] + args + ["--run-dir", run], environment: ["ORTHOHASH_TEST_EVALUATION_PAUSE": "30"])
        let last = run + "/checkpoints/step-0000000024.ohck", started = Date()
        while !FileManager.default.fileExists(atPath: last) && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
        usleep(200_000)
        kill(job.process.processIdentifier, SIGKILL)
        _ = job.finish()
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/summary.json"))
        XCTAssertEqual(try Checkpoint.read(last).state.globalStep, 24, "all 24 steps are in the checkpoint")
        let resumed = try orthohash(["train", "--run-dir", run, "--resume", "--threads", "1", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        func summary(_ r: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: r + "/summary.json"))) as! [String: Any]
        }
        XCTAssertEqual(try summary(run)["map"] as! [String: Double], try summary(dir + "/whole")["map"] as! [String: Double])
        XCTAssertEqual(try summary(run)["final_loss"] as! Double, try summary(dir + "/whole")["final_loss"] as! Double)
        XCTAssertEqual(try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").count, 3)
        XCTAssertEqual(try Checkpoint.read(last).parameters, try Checkpoint.read(dir + "/whole/checkpoints/step-0000000024.ohck").parameters)
    }

    /// A second job on a run directory another job trains in stops at once, naming the holder;
    /// the first goes on to its end. A new run into a directory that holds a run is refused, and
    /// --overwrite starts afresh there.
    func testRunDirectoryIsOneJobsAndOneRuns() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "2"]
        let run = dir + "/run"
        let first = try start(["train"] + args + ["--run-dir", run], environment: ["ORTHOHASH_TEST_STEP_SLEEP_MS": "100"])
        let started = Date()
        while !FileManager.default.fileExists(atPath: run + "/config.json") && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
        let second = try orthohash(["train"] + args + ["--run-dir", run, "--resume"])
        assertFails(second, "\(run): is in use by another job (pid \(first.process.processIdentifier) on host ", "train into another --run-dir")
        let firstResult = first.finish()
        XCTAssertEqual(firstResult.status, 0, firstResult.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/summary.json"))
        assertFails(try orthohash(["train"] + args + ["--run-dir", run]), "\(run): holds a run already (config.json, codebook.npy, metrics.jsonl, summary.json, 2 step checkpoints, best.ohck)",
                    "--resume", "--overwrite")
        let again = try orthohash(["train"] + args + ["--run-dir", run, "--overwrite"])
        XCTAssertEqual(again.status, 0, again.stderr)
        assertFails(try orthohash(["train"] + args + ["--run-dir", run, "--overwrite", "--resume"]), "choose one")
        // Resuming the finished run says so and changes nothing.
        let finished = try orthohash(["train", "--run-dir", run, "--resume"])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        XCTAssertTrue(finished.stdout.contains("has finished all 2 epochs"), finished.stdout)
        XCTAssertFalse(finished.stdout.contains("done:"), finished.stdout)
    }

    /// `train --run-dir D --resume` with no other flag continues with the run's stored settings
    /// and ends exactly where the uninterrupted run ends; a setting given again with its stored
    /// value is accepted.
    func testResumeTakesTheStoredSettings() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "3"]
        XCTAssertEqual(try orthohash(["train"] + args + ["--run-dir", dir + "/whole"]).status, 0)
        // Interrupted in epoch 2 (8 steps per epoch); the last checkpoint is epoch 1's.
        let cut = try orthohash(["train"] + args + ["--run-dir", dir + "/cut"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "10"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/cut/summary.json"))
        let resumed = try orthohash(["train", "--run-dir", dir + "/cut", "--resume", "--nbit", "12", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        func summary(_ run: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as! [String: Any]
        }
        let whole = try summary(dir + "/whole"), again = try summary(dir + "/cut")
        XCTAssertEqual(whole["final_loss"] as! Double, again["final_loss"] as! Double)
        XCTAssertEqual(whole["map"] as! [String: Double], again["map"] as! [String: Double])
        XCTAssertEqual(again["epochs"] as! Int, 3)
    }

    func testBadInputIsOneLine() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        func replacing(_ flag: String, _ value: String) -> [String] {
            var a = args
            a[a.firstIndex(of: flag)! + 1] = value
            return a
        }
        assertFails(try orthohash(["train"] + replacing("--train-features", dir + "/missing.npy") + ["--run-dir", dir + "/r"]),
                    "missing.npy: no such file")
        assertFails(try orthohash(["train"] + replacing("--nbit", "0") + ["--run-dir", dir + "/r"]), "--nbit must be at least 1")
        assertFails(try orthohash(["train"] + args + ["--head", "both", "--run-dir", dir + "/r"]), "--head", "fused", "logits")
        assertFails(try orthohash(["train"] + args + ["--head-products", "fast", "--run-dir", dir + "/r"]), "--head-products", "lookup", "blas")
        assertFails(try orthohash(["bench"] + args + ["--head-products", "gemm"]), "--head-products", "lookup", "blas")
        assertFails(try orthohash(["train"] + replacing("--map-at", "all,top100") + ["--run-dir", dir + "/r"]),
                    "--map-at takes", "got 'top100'")
        assertFails(try orthohash(["train"] + replacing("--batch-size", "512") + ["--run-dir", dir + "/r"]),
                    "train_x.npy", "larger than the training set (256 rows)")
        _ = FileManager.default.createFile(atPath: dir + "/junk.npy", contents: Data("hello world, not numpy".utf8))
        assertFails(try orthohash(["train"] + replacing("--db-features", dir + "/junk.npy") + ["--run-dir", dir + "/r"]), "junk.npy", "wrong magic")
        assertFails(try orthohash(["train"] + args + ["--classes", "2", "--run-dir", dir + "/r"]), "out of range for 2 classes")
        try NPYWriter.write(path: dir + "/cb.npy", shape: [3, 4], int8: Array(repeating: 1, count: 12))
        assertFails(try orthohash(["train"] + args + ["--codebook-file", dir + "/cb.npy", "--run-dir", dir + "/r"]),
                    "cb.npy", "does not match 3 classes x 12 bits")
        assertFails(try orthohash(["train", "--data-dir", dir + "/nowhere", "--run-dir", dir + "/r"]),
                    "no such file", "apt-get install -y dataset-fashion-mnist")
        assertFails(try orthohash(["eval", "--run-dir", dir + "/not-a-run"]), "config.json: no such file")
        assertFails(try orthohash(["codebook", "--classes", "40", "--nbit", "4", "--method", "O"]), "cannot place 40 codewords")
        assertFails(try orthohash(["codebook", "--classes", "300000000", "--nbit", "4", "--method", "O"]), "use codebook B")
    }

    /// Every option is checked with a one-line error: non-finite numbers, out-of-range values,
    /// duplicate or empty cutoff lists, malformed lists, sizes that overflow or outgrow the
    /// machine, and flags that belong to a mode the run is not in.
    func testEveryOptionIsChecked() throws {
        let dir = tempDir()
        let args = try ["train"] + writeData(dir) + ["--run-dir", dir + "/r"]
        func replacing(_ flag: String, _ value: String) -> [String] {
            var a = args
            a[a.firstIndex(of: flag)! + 1] = value
            return a
        }
        let cases: [([String], String)] = [
            (args + ["--gamma", "nan"], "--gamma must be a finite number, got nan"),
            (args + ["--scale", "inf"], "--scale must be a finite number"),
            (args + ["--lr=-1"], "--lr must be positive"),
            (args + ["--betas", "1,0.5"], "--betas must both lie in [0, 1)"),
            (args + ["--betas", "0.9"], "--betas takes two numbers"),
            (args + ["--margin-type", "arc", "--margin", "2"], "--margin must be at most pi/2"),
            (args + ["--margin=-0.1"], "--margin must be at least 0"),
            (args + ["--ce", "0"], "--ce and --quan are both 0"),
            (args + ["--step-size", "0"], "--step-size must be at least 1 epoch"),
            (args + ["--scheduler", "multistep"], "--scheduler multistep needs --milestones"),
            (args + ["--scheduler", "multistep", "--milestones", "5,3"], "--milestones must rise"),
            (args + ["--eval-every=-1"], "--eval-every must be at least 0"),
            (args + ["--keep-checkpoints", "0"], "--keep-checkpoints must be at least 1"),
            (args + ["--train-limit", "0"], "--train-limit must be at least 1"),
            (replacing("--map-at", "100,100"), "--map-at lists a cutoff twice: 100,100"),
            (replacing("--map-at", ""), "--map-at needs at least one cutoff"),
            (args + ["--precision-at", "10,10"], "--precision-at lists a cutoff twice"),
            (args + ["--backbone", "mlp", "--hidden", "1024,,5"], "--hidden takes comma-separated positive integers, got ''"),
            (args + ["--backbone", "mlp", "--hidden", "100000,100000"], "more than this machine's"),
            (args + ["--backbone", "mlp", "--hidden", "9223372036854775807,9223372036854775807"], "more parameters than can be counted"),
            (replacing("--nbit", "100000"), "--nbit must be at most 65535"),
            (args + ["--threads", "0"], "--threads must be at least 1"),
            (args + ["--gradient-bucket-mb=-1"], "--gradient-bucket-mb must be between 0 and 1048576"),
            (args + ["--gradient-bucket-mb", "nan"], "--gradient-bucket-mb must be between 0 and 1048576"),
            (args + ["--weight-decay=-1"], "--weight-decay must be at least 0"),
            (args + ["--backbone-lr-scale=-1"], "--backbone-lr-scale must be at least 0"),
            (args + ["--adam-eps", "0"], "--adam-eps must be positive"),
            (args + ["--optimizer", "sgd", "--momentum", "1"], "--momentum must lie in [0, 1)"),
            (args + ["--gamma", "0"], "--gamma must be positive"),
            (args + ["--quan=-1"], "--ce and --quan must be at least 0"),
            (args + ["--checkpoint-every=-2"], "--checkpoint-every must be at least 0"),
            (args + ["--checkpoint-every-steps=-2"], "--checkpoint-every-steps must be at least 0"),
            (args + ["--classes", "0"], "--classes must be at least 1"),
            (args + ["--progress-every=-1"], "--progress-every must be at least 0"),
            (args + ["--io-timeout", "inf"], "--collective-timeout and --io-timeout must be at least 0"),
            (args + ["--collective-timeout=-1"], "--collective-timeout and --io-timeout must be at least 0"),
            (args + ["--hidden", "32"], "--hidden belongs to --backbone mlp"),
            (args + ["--momentum", "0.5"], "--momentum belongs to --optimizer sgd"),
            (args + ["--optimizer", "sgd", "--adam-eps", "1e-6"], "--adam-eps belongs to --optimizer adam"),
            (args + ["--scheduler", "none", "--step-size", "3"], "--step-size belongs to --scheduler step"),
            (args + ["--quan-type", "l2"], "--quan-type needs --quan above 0"),
            (args + ["--data-dir", "/tmp"], "--data-dir belongs to --dataset fashion-mnist"),
            (["train", "--train-features", dir + "/train_x.npy", "--run-dir", dir + "/r"], "--train-features belongs to --dataset npy"),
            // The numbers as given: 100,000,000,000 is not printed as its low 32 bits (1215752192).
            (["codebook", "--classes", "100000000000"], "a codebook of 100000000000 classes x 64 bits needs 12800.0 GB"),
            (["codebook", "--classes", "3000000000", "--nbit", "4096"], "more than this machine's"),
            (["codebook", "--classes", "0"], "--classes must be at least 1"),
            (args + ["--timeline", dir + "/nowhere/t.json"], "--timeline \(dir)/nowhere/t.json: the directory \(dir)/nowhere does not exist"),
            (["bench", "--label", "=x"], "--label takes KEY=VALUE"),
            (["bench", "--label", "a b=x"], "--label takes KEY=VALUE"),
            (["bench", "--label", "novalue"], "--label takes KEY=VALUE"),
            (["bench", "--allreduce", "--allreduce-max", "2"], "--allreduce-max must be at least 4 bytes"),
            (["bench", "--steps", "0"], "--steps must be at least 1, got 0"),
            (["bench", "--warmup", "0"], "--warmup must be at least 1, got 0"),
        ]
        for (arguments, fragment) in cases {
            assertFails(try orthohash(arguments), fragment)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r/config.json"), "nothing was written")
        // A run directory that cannot be one: what is in the way is named.
        _ = FileManager.default.createFile(atPath: dir + "/afile", contents: Data())
        let data = Array(args.dropLast(2))
        assertFails(try orthohash(data + ["--run-dir", dir + "/afile"]), "cannot create the run directory: \(dir)/afile is there and not a directory")
        assertFails(try orthohash(data + ["--run-dir", dir + "/afile/run"]), "cannot create the run directory: \(dir)/afile is in the way and not a directory")
    }

    /// `bench --csv` appends one row per thread count under one header, with the --label
    /// columns first; a file whose header has other columns is refused, naming it, and kept.
    /// `bench --gemms` times the GEMMs a step of this configuration asks for: the sizes follow
    /// --batch-size, --hidden and --nbit (the mlp 8 -> 16 -> 12 bits at batch 32 here).
    func testBenchGemmsFollowTheFlags() throws {
        let dir = tempDir()
        let data = Array(try writeData(dir).prefix(14))
        let r = try orthohash(["bench"] + data + ["--backbone", "mlp", "--hidden", "16", "--nbit", "12", "--batch-size", "32", "--steps", "1",
                                                 "--threads", "1", "--gemms"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for shape in ["NT (   32 x    16 x     8) x 1", "NT (   32 x    12 x    16) x 1", "TN (   16 x     8 x    32) x 1", "the step's GEMMs alone"] {
            XCTAssertTrue(r.stdout.contains(shape), "'\(shape)' missing from:\n\(r.stdout)")
        }
    }

    func testBenchCSV() throws {
        let dir = tempDir()
        let data = Array(try writeData(dir).prefix(14))
        let bench = data + ["--hidden", "16", "--batch-size", "32", "--steps", "2", "--threads", "1,2", "--csv", dir + "/b.csv"]
        let first = try orthohash(["bench"] + bench + ["--label", "workload=tiny", "--label", "note=a,b"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertEqual(try orthohash(["bench"] + bench + ["--label", "workload=tiny", "--label", "note=c"]).status, 0)
        let text = try String(contentsOfFile: dir + "/b.csv", encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 5, text)
        XCTAssertTrue(lines[0].hasPrefix("workload,note,nodes,ranks,ranks_per_node,threads,global_batch,rank_batch,steps,samples_per_s,ms_step,ms_step_p50,ms_step_p95,compute_ms,gradient_sum_ms,overlap,gradient_precision,background_sum_ms,bn_sync_ms,"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("tiny,\"a,b\",1,1,1,1,32,32,2,"), lines[1])
        XCTAssertTrue(lines[2].hasPrefix("tiny,\"a,b\",1,1,1,2,32,32,2,"), lines[2])
        XCTAssertTrue(lines[4].hasPrefix("tiny,c,1,1,1,2,"), lines[4])
        XCTAssertTrue(lines[1].hasSuffix(",none (one rank)"), lines[1])
        let refused = try orthohash(["bench"] + bench + ["--label", "other=x"])
        assertFails(refused, "\(dir)/b.csv", "its header is not this table's columns (it starts workload,note, this table other,nodes)")
        XCTAssertEqual(refused.stdout, "", "refused before the benchmark ran")
        XCTAssertEqual(try String(contentsOfFile: dir + "/b.csv", encoding: .utf8), text, "the file is as it was")
        assertFails(try orthohash(["bench"] + data + ["--hidden", "16", "--batch-size", "32", "--steps", "1", "--threads", "1", "--csv", dir + "/no/b.csv"]),
                    "--csv \(dir)/no/b.csv: the directory \(dir)/no does not exist")
    }

    /// The first things a new user types: a bare `orthohash` prints help, --version its version,
    /// a misspelt command the nearest one; OPENBLAS_NUM_THREADS is honoured and the log says which
    /// setting won; a run into a log gets progress lines within an epoch; `inspect` tells a run.
    func testWhatANewUserTypes() throws {
        let bare = try orthohash([])
        XCTAssertEqual(bare.status, 0)
        XCTAssertTrue(bare.stdout.contains("USAGE: orthohash <subcommand>"), bare.stdout)
        XCTAssertTrue(try orthohash(["--version"]).stdout.hasPrefix("0."))
        assertFails(try orthohash(["trian", "--epochs", "1"]), "'trian' is not an orthohash command (did you mean 'train'?)")
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "3"]
        let fromEnvironment = try orthohash(["train"] + args.filter { $0 != "--quiet" } + ["--run-dir", dir + "/env", "--progress-every", "0.05"],
                                            environment: ["OPENBLAS_NUM_THREADS": "1", "ORTHOHASH_TEST_STEP_SLEEP_MS": "20"])
        XCTAssertEqual(fromEnvironment.status, 0, fromEnvironment.stderr)
        XCTAssertTrue(fromEnvironment.stdout.contains("BLAS threads: 1 (OPENBLAS_NUM_THREADS)"), fromEnvironment.stdout)
        XCTAssertTrue(fromEnvironment.stdout.contains("1 BLAS thread\n"), fromEnvironment.stdout)
        XCTAssertTrue(fromEnvironment.stdout.split(separator: "\n").contains { $0.hasPrefix("epoch 2/3  step ") && $0.contains("/8  loss ") && $0.contains("samples/s  ETA ") },
                      fromEnvironment.stdout)
        let overridden = try orthohash(["train"] + args.filter { $0 != "--quiet" } + ["--run-dir", dir + "/flag", "--threads", "2"],
                                       environment: ["OPENBLAS_NUM_THREADS": "1"])
        XCTAssertTrue(overridden.stdout.contains("BLAS threads: 2 (--threads; OPENBLAS_NUM_THREADS=1 is overridden)"), overridden.stdout)
        // inspect: a finished run, and one stopped in its second epoch.
        let finished = try orthohash(["inspect", dir + "/env"])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        XCTAssertTrue(finished.stdout.contains("state: finished, mAP@all "), finished.stdout)
        XCTAssertTrue(finished.stdout.contains("step-0000000024.ohck    after epoch 3 of 3 (step 24)  best mAP@all "), finished.stdout)
        XCTAssertEqual(try orthohash(["train"] + args + ["--run-dir", dir + "/cut"], environment: ["ORTHOHASH_TEST_SIGNAL": "11:TERM"]).status, 75)
        let stopped = try orthohash(["inspect", dir + "/cut"])
        XCTAssertTrue(stopped.stdout.contains("state: stopped in epoch 2 of 3, 3 steps into it (step 11); continue with: orthohash train --run-dir \(dir)/cut --resume"),
                      stopped.stdout)
        assertFails(try orthohash(["inspect", dir + "/nothing"]), "config.json: no such file")
        // A checkpoint by its file name in the run's checkpoints/.
        let byName = try orthohash(["eval", "--run-dir", dir + "/env", "--checkpoint", "step-0000000016.ohck"])
        XCTAssertEqual(byName.status, 0, byName.stderr)
        XCTAssertTrue(byName.stdout.contains("\"checkpoint\": \"\(dir)/env/checkpoints/step-0000000016.ohck\", \"epoch\": 2"), byName.stdout)
    }

    /// Files whose sizes overflow: an npy shape of 2^62 x 2^62, an IDX file of 2^31-row, 2^31-wide images.
    func testSizesFromFilesAreChecked() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--run-dir", dir + "/r"]
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        _ = FileManager.default.createFile(atPath: dir + "/huge.npy", contents: Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count), 0] + Array(header.utf8)))
        var huge = args
        huge[huge.firstIndex(of: "--db-features")! + 1] = dir + "/huge.npy"
        assertFails(try orthohash(["train"] + huge), "huge.npy", "truncated: header promises shape [4611686018427387904, 4611686018427387904]")
        try FileManager.default.createDirectory(atPath: dir + "/fm", withIntermediateDirectories: true)
        func bigEndian(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        _ = FileManager.default.createFile(atPath: dir + "/fm/train-images-idx3-ubyte.gz",
                                           contents: Data(bigEndian(2051) + bigEndian(0x7fff_ffff) + bigEndian(0x7fff_ffff) + bigEndian(0x7fff_ffff)))
        assertFails(try orthohash(["train", "--data-dir", dir + "/fm", "--run-dir", dir + "/r2"]), "train-images-idx3-ubyte.gz", "truncated")
    }

    func testCodebookCommand() throws {
        let dir = tempDir()
        let r = try orthohash(["codebook", "--classes", "10", "--nbit", "16", "--method", "O", "--seed", "1", "--out", dir + "/cb.npy"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("min Hamming"), r.stdout)
        let cb = try loadCodebook(dir + "/cb.npy", classes: 10, bits: 16)
        XCTAssertTrue(r.stdout.contains("min Hamming \(cb.pairwiseHamming().minimum) "), r.stdout)
    }

    /// `orthohash search` writes the brute-force answer (int64 ids, int32 distances) for every
    /// kernel; files that are not packed codes, or do not match, get one line naming the file.
    func testSearch() throws {
        let dir = tempDir()
        var rng = Xoshiro256(seed: 11)
        let bytes = 9, M = 3000, Q = 7
        let db = (0..<(M * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let q = (0..<(Q * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        try NPYWriter.write(path: dir + "/db.npy", shape: [M, bytes], uint8: db)
        try NPYWriter.write(path: dir + "/q.npy", shape: [Q, bytes], uint8: q)
        var expected: [(Int32, Int64)] = []
        for i in 0..<Q {
            let d = (0..<M).map { x in (0..<bytes).reduce(0) { $0 + (q[i * bytes + $1] ^ db[x * bytes + $1]).nonzeroBitCount } }
            expected += (0..<M).sorted { (d[$0], $0) < (d[$1], $1) }.prefix(25).map { (Int32(d[$0]), Int64($0)) }
        }
        for kernel in ["auto", "portable"] {
            let r = try orthohash(["search", "--db", dir + "/db.npy", "--queries", dir + "/q.npy", "--k", "25", "--out", dir + "/ids.npy",
                                   "--distances", dir + "/d.npy", "--threads", "2", "--kernel", kernel])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("searched 7 queries in 3000 codes of 72 bits, k = 25"), r.stderr)
            let ids = try NPYArray(path: dir + "/ids.npy"), d = try NPYArray(path: dir + "/d.npy")
            XCTAssertEqual(ids.type, .int64); XCTAssertEqual(ids.shape, [Q, 25])
            XCTAssertEqual(d.type, .int32); XCTAssertEqual(d.shape, [Q, 25])
            let got = (0..<(Q * 25)).map { (Int32(d.double(at: $0)), Int64(ids.double(at: $0))) }
            XCTAssertTrue(got.elementsEqual(expected, by: ==), "kernel \(kernel)")
        }
        let base = ["search", "--db", dir + "/db.npy", "--queries", dir + "/q.npy", "--out", dir + "/o.npy"]
        try NPYWriter.write(path: dir + "/narrow.npy", shape: [Q, 8], uint8: Array(q.prefix(Q * 8)))
        assertFails(try orthohash(["search", "--db", dir + "/db.npy", "--queries", dir + "/narrow.npy", "--out", dir + "/o.npy"]),
                    "narrow.npy", "8 bytes wide but the database's are 9")
        assertFails(try orthohash(base + ["--k", "3001"]), "db.npy", "--k 3001 is more than the 3000 database codes")
        assertFails(try orthohash(base + ["--k", "0"]), "--k must be at least 1")
        try NPYWriter.write(path: dir + "/float.npy", shape: [4, 2], floats: Array(repeating: 1, count: 8))
        assertFails(try orthohash(["search", "--db", dir + "/float.npy", "--queries", dir + "/q.npy", "--out", dir + "/o.npy"]),
                    "float.npy", "expected packed codes, uint8 of shape (rows, bytes); found f4 of shape [4, 2]")
        try NPYWriter.write(path: dir + "/flat.npy", shape: [9], uint8: Array(q.prefix(9)))
        assertFails(try orthohash(["search", "--db", dir + "/db.npy", "--queries", dir + "/flat.npy", "--out", dir + "/o.npy"]),
                    "flat.npy", "found u1 of shape [9]")
        try NPYWriter.write(path: dir + "/none.npy", shape: [0, 9], uint8: [])
        assertFails(try orthohash(["search", "--db", dir + "/none.npy", "--queries", dir + "/q.npy", "--out", dir + "/o.npy"]),
                    "none.npy", "no codes")
        assertFails(try orthohash(["search", "--db", dir + "/missing.npy", "--queries", dir + "/q.npy", "--out", dir + "/o.npy"]),
                    "missing.npy: no such file")
        assertFails(try orthohash(base + ["--kernel", "sse"]), "--kernel")
        assertFails(try orthohash(base + ["--out", dir]), dir)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o.npy"))
    }

    /// `orthohash map` with labels: the figures `eval` computes, read from the JSON it prints.
    func testMapWithLabels() throws {
        let dir = tempDir()
        var rng = Xoshiro256(seed: 12)
        let bytes = 3, M = 700, Q = 23
        let db = (0..<(M * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let q = (0..<(Q * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let dl = (0..<M).map { _ in Int64(rng.nextInt(below: 6)) }, ql = (0..<Q).map { _ in Int64(rng.nextInt(below: 6)) }
        try NPYWriter.write(path: dir + "/db.npy", shape: [M, bytes], uint8: db)
        try NPYWriter.write(path: dir + "/q.npy", shape: [Q, bytes], uint8: q)
        try NPYWriter.write(path: dir + "/dl.npy", shape: [M], int64: dl)
        try NPYWriter.write(path: dir + "/ql.npy", shape: [Q], int64: ql)
        let r = try orthohash(["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy", "--query-labels", dir + "/ql.npy",
                               "--db-labels", dir + "/dl.npy", "--map-at", "all,100,gt100", "--precision-at", "1,50", "--out", dir + "/m.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("scored 23 queries against 700 codes of 24 bits"), r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/m.json")), Data((r.stdout.trimmingCharacters(in: .newlines) + "\n").utf8))
        func signs(_ b: [UInt8], _ n: Int) -> PackedCodes {
            PackedCodes(signs: (0..<(n * bytes * 8)).map { b[$0 / 8] >> ($0 % 8) & 1 == 1 ? Int8(1) : -1 }, count: n, bits: bytes * 8)
        }
        let expected = retrievalMetrics(query: signs(q, Q), queryLabels: .single(ql.map(Int32.init)), database: signs(db, M),
                                        databaseLabels: .single(dl.map(Int32.init)), mapAt: [nil, 100, MapCutoff(R: 100, groundTruth: true)],
                                        precisionAt: [1, 50])
        XCTAssertEqual(json["queries"] as? Int, Q)
        XCTAssertEqual(json["database"] as? Int, M)
        // Printed with 6 decimals.
        for (key, value) in zip(["mAP@all", "mAP@100", "mAP@gt100", "P@1", "P@50"], expected.meanAP + expected.precision) {
            XCTAssertEqual(try XCTUnwrap(json[key] as? Double, key), value, accuracy: 5e-7, key)
        }
        // The curves: the JSON and --curves' CSV carry hammingCurves' figures and P@N for the N
        // asked that the database holds (1000 is left out: 700 codes).
        let curves = hammingCurves(query: signs(q, Q), queryLabels: .single(ql.map(Int32.init)), database: signs(db, M),
                                   databaseLabels: .single(dl.map(Int32.init)))
        XCTAssertEqual(try XCTUnwrap(json["precision_within_radius_2"] as? Double), curves.precisionWithinRadius2, accuracy: 5e-7)
        let pr = try XCTUnwrap(json["pr_curve"] as? [String: Any])
        XCTAssertEqual(pr["radius"] as? [Int], Array(0...24))
        for (a, b) in zip(try XCTUnwrap(pr["precision"] as? [Double]), curves.precision) { XCTAssertEqual(a, b, accuracy: 5e-7) }
        for (a, b) in zip(try XCTUnwrap(pr["recall"] as? [Double]), curves.recall) { XCTAssertEqual(a, b, accuracy: 5e-7) }
        let curveRun = try orthohash(["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy", "--query-labels", dir + "/ql.npy",
                                      "--db-labels", dir + "/dl.npy", "--curve-n", "1,50,1000", "--curves", dir + "/c.csv"])
        XCTAssertEqual(curveRun.status, 0, curveRun.stderr)
        let csv = try String(contentsOfFile: dir + "/c.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.first, "curve,x,precision,recall")
        XCTAssertEqual(csv.count, 1 + 25 + 2)
        XCTAssertEqual(csv[3], Substring("hamming_radius,2," + String(format: "%.6f", curves.precision[2]) + "," + String(format: "%.6f", curves.recall[2])))
        XCTAssertEqual(csv.last, Substring("top_n,50," + String(format: "%.6f", expected.precision[1]) + ","))
        let base = ["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy"]
        assertFails(try orthohash(base + ["--solution", dir + "/s.csv", "--query-ids", dir + "/a", "--db-ids", dir + "/b", "--curves", dir + "/c2.csv"]),
                    "--curves and --curve-n belong to scoring with labels")
        try NPYWriter.write(path: dir + "/short.npy", shape: [M - 1], int64: Array(dl.prefix(M - 1)))
        assertFails(try orthohash(base + ["--query-labels", dir + "/ql.npy", "--db-labels", dir + "/short.npy"]), "short.npy", "699 labels for 700 database codes")
        try NPYWriter.write(path: dir + "/multi.npy", shape: [M, 6], uint8: (0..<(M * 6)).map { UInt8($0 % 6 == 0 ? 1 : 0) })
        assertFails(try orthohash(base + ["--query-labels", dir + "/ql.npy", "--db-labels", dir + "/multi.npy"]), "multi.npy", "different kinds")
        assertFails(try orthohash(base + ["--query-labels", dir + "/ql.npy"]), "labels need both --query-labels and --db-labels")
        assertFails(try orthohash(base), "give --query-labels and --db-labels, or --solution, --query-ids and --db-ids")
        assertFails(try orthohash(base + ["--query-labels", dir + "/ql.npy", "--db-labels", dir + "/dl.npy", "--solution", dir + "/s.csv"]),
                    "two ways to score; give one")
        assertFails(try orthohash(base + ["--query-labels", dir + "/ql.npy", "--db-labels", dir + "/dl.npy", "--map-at", "100,100"]),
                    "--map-at lists a cutoff twice")
        try NPYWriter.write(path: dir + "/wide.npy", shape: [Q, 4], uint8: Array(repeating: 0, count: Q * 4))
        assertFails(try orthohash(["map", "--queries", dir + "/wide.npy", "--db", dir + "/db.npy", "--query-labels", dir + "/ql.npy",
                                   "--db-labels", dir + "/dl.npy"]), "wide.npy", "4 bytes wide but the database's are 3")
    }

    /// `orthohash map` by GLDv2's official protocol on codes of 8 bits, worked out by hand.
    /// Index rows (id: code): i0: 00, i1: 01, i2: 03, i1 again: 01, i4: FF; 3 predictions read.
    /// - qa (00, Public, GT i1 i2): ranked i0 (0), i1 (1), i1 (1, the same image: skipped):
    ///   AP = (1/2) / 2 = 1/4; P@1 0, P@3 1/3; first 2.
    /// - qb (FF, Private, GT i1 i0): i4 (0), i2 (6), i1 (7): AP = (1/3) / 2 = 1/6; P@3 1/3; first 3.
    /// - qc (01, Public, GT i1 i2): i1 (0), i1 (0), then i0 and i2 tie at 1 and the lower row, i0,
    ///   comes first: AP = 1 / 2; P@1 1, P@3 1/3; first 1 (with the tie broken the other way AP
    ///   would be (1 + 2/3) / 2).
    /// - qd (Private, GT i4) has no codes: 0, no position. qe is Ignored. qx has codes but is not
    ///   in the solution.
    /// Public: mAP (1/4 + 1/2) / 2 = 0.375, P@1 0.5, P@3 1/3, positions 2, 1.
    /// Private: mAP (1/6) / 2 = 1/12, P@1 0, P@3 1/6, position 3.
    /// All: mAP (1/4 + 1/6 + 1/2) / 4 = 11/48, P@1 1/4, P@3 1/4, positions 2, 3, 1.
    func testMapOfficialGLDv2() throws {
        let dir = tempDir()
        try NPYWriter.write(path: dir + "/db.npy", shape: [5, 1], uint8: [0x00, 0x01, 0x03, 0x01, 0xFF])
        try NPYWriter.write(path: dir + "/q.npy", shape: [4, 1], uint8: [0x00, 0xFF, 0x01, 0x00])
        func write(_ name: String, _ text: String) -> String {
            _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(text.utf8))
            return dir + "/" + name
        }
        let solution = write("solution.csv", "id,images,Usage\nqa,i1 i2,Public\nqb,i1 i0,Private\nqc,i1 i2,Public\nqd,i4,Private\nqe,,Ignored\n")
        let queryIds = write("q.txt", "qa\nqb\nqc\nqx\n"), dbIds = write("db.txt", "i0\ni1\ni2\ni1\ni4\n")
        let base = ["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy", "--solution", solution]
        let r = try orthohash(base + ["--query-ids", queryIds, "--db-ids", dbIds, "--max-predictions", "3", "--precision-at", "1,3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning: 1 of the solution's 4 queries have no codes"), r.stderr)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(json["ignored"] as? Int, 1)
        XCTAssertEqual(json["queries_without_codes"] as? Int, 1)
        let expected: [(String, Int, Double, Double, Double, Double, Double)] = [
            ("Public", 2, 0.375, 0.5, 1.0 / 3, 1.5, 1.5), ("Private", 2, 1.0 / 12, 0, 1.0 / 6, 3, 3), ("All", 4, 11.0 / 48, 0.25, 0.25, 2, 2)]
        for (split, queries, mAP, p1, p3, mean, median) in expected {
            let f = try XCTUnwrap(json[split] as? [String: Any], split)
            XCTAssertEqual(f["queries"] as? Int, queries, split)
            // Printed with 6 decimals (3 for the mean position, 1 for the median).
            XCTAssertEqual(try XCTUnwrap(f["mAP@3"] as? Double), mAP, accuracy: 5e-7, split)
            XCTAssertEqual(try XCTUnwrap(f["P@1"] as? Double), p1, accuracy: 5e-7, split)
            XCTAssertEqual(try XCTUnwrap(f["P@3"] as? Double), p3, accuracy: 5e-7, split)
            XCTAssertEqual(try XCTUnwrap(f["mean_position"] as? Double), mean, accuracy: 5e-4, split)
            XCTAssertEqual(try XCTUnwrap(f["median_position"] as? Double), median, accuracy: 0.05, split)
        }
        let short = write("short.txt", "i0\ni1\n"), twice = write("twice.txt", "qa\nqb\nqa\nqx\n")
        assertFails(try orthohash(base + ["--query-ids", queryIds, "--db-ids", short]), "short.txt", "2 ids for 5 rows")
        assertFails(try orthohash(base + ["--query-ids", twice, "--db-ids", dbIds]), "twice.txt", "query id qa names two rows")
        assertFails(try orthohash(base + ["--query-ids", queryIds]), "the GLDv2 protocol needs --solution, --query-ids and --db-ids")
        assertFails(try orthohash(base + ["--query-ids", queryIds, "--db-ids", dbIds, "--max-predictions", "3", "--precision-at", "5"]),
                    "--precision-at 5 is beyond --max-predictions 3")
        assertFails(try orthohash(base + ["--query-ids", queryIds, "--db-ids", dbIds, "--max-predictions", "0"]), "--max-predictions must be at least 1, got 0")
        assertFails(try orthohash(base + ["--query-ids", queryIds, "--db-ids", dbIds, "--precision-at", "1,1"]), "--precision-at lists a cutoff twice: 1,1")
        let bad = write("bad.csv", "id,images,Usage\nqa,i1,Both\n")
        assertFails(try orthohash(["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy", "--solution", bad, "--query-ids", queryIds,
                                   "--db-ids", dbIds]), "bad.csv", "line 2: Usage is 'Both'")
    }

    /// The two modes are independent code paths that must agree: the official mAP@100 over the
    /// solution's queries (Ignored dropped) is the labels mode's mAP@gt100 (denominator
    /// min(|GT|, 100), queries without relevant rows left out) when the solution lists each
    /// query's class in the index.
    func testMapOfficialAgreesWithLabels() throws {
        let dir = tempDir()
        var rng = Xoshiro256(seed: 13)
        let bytes = 2, M = 1500, Q = 60, C = 40
        let db = (0..<(M * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let q = (0..<(Q * bytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let dl = (0..<M).map { _ in Int64(rng.nextInt(below: C)) }, ql = (0..<Q).map { _ in Int64(rng.nextInt(below: C + 5)) }
        try NPYWriter.write(path: dir + "/db.npy", shape: [M, bytes], uint8: db)
        try NPYWriter.write(path: dir + "/q.npy", shape: [Q, bytes], uint8: q)
        try NPYWriter.write(path: dir + "/dl.npy", shape: [M], int64: dl)
        try NPYWriter.write(path: dir + "/ql.npy", shape: [Q], int64: ql)
        var csv = "id,images,Usage\n"
        for i in 0..<Q {
            let images = (0..<M).filter { dl[$0] == ql[i] }.map { "d\($0)" }
            csv += "q\(i),\(images.joined(separator: " ")),\(images.isEmpty ? "Ignored" : i % 3 == 0 ? "Public" : "Private")\n"
        }
        _ = FileManager.default.createFile(atPath: dir + "/s.csv", contents: Data(csv.utf8))
        _ = FileManager.default.createFile(atPath: dir + "/q.txt", contents: Data((0..<Q).map { "q\($0)\n" }.joined().utf8))
        _ = FileManager.default.createFile(atPath: dir + "/d.txt", contents: Data((0..<M).map { "d\($0)\n" }.joined().utf8))
        let base = ["map", "--queries", dir + "/q.npy", "--db", dir + "/db.npy"]
        let official = try orthohash(base + ["--solution", dir + "/s.csv", "--query-ids", dir + "/q.txt", "--db-ids", dir + "/d.txt"])
        let labels = try orthohash(base + ["--query-labels", dir + "/ql.npy", "--db-labels", dir + "/dl.npy", "--map-at", "gt100", "--precision-at", "100"])
        XCTAssertEqual(official.status, 0, official.stderr)
        XCTAssertEqual(labels.status, 0, labels.stderr)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(official.stdout.utf8)) as? [String: Any])
        let l = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(labels.stdout.utf8)) as? [String: Any])
        let all = try XCTUnwrap(o["All"] as? [String: Any])
        XCTAssertGreaterThan(o["ignored"] as? Int ?? 0, 0, "some queries' classes are not in the index")
        // Both printed with 6 decimals from the same ranking.
        XCTAssertEqual(try XCTUnwrap(all["mAP@100"] as? Double), try XCTUnwrap(l["mAP@gt100"] as? Double), accuracy: 1.1e-6)
    }

    /// bench/fire_delg_to_npy.py on small files of cisip-FIRe's layout, read back by orthohash's
    /// own readers; a file that is not torch.save's is refused in one line. Skipped without torch.
    func testFIReConverterRoundTrip() throws {
        func python(_ script: String, _ arguments: [String] = []) throws -> Run {
            let p = Process(), out = Pipe(), err = Pipe()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3"] + (script.hasSuffix(".py") ? [script] : ["-c", script]) + arguments
            p.standardOutput = out; p.standardError = err
            try p.run(); p.waitUntilExit()
            return Run(status: p.terminationStatus, stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                       stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        guard (try? python("import torch, numpy"))?.status == 0 else { throw XCTSkip("torch is not installed") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let dir = tempDir(), fire = dir + "/gldv2delgembed", out = dir + "/out"
        let make = try python("""
            import os, sys, torch
            d = sys.argv[1]; os.makedirs(d)
            g = torch.Generator().manual_seed(0)
            torch.save({'codes': torch.randn(10, 8, generator=g), 'labels': torch.tensor([1, 2, 3, 1, 2, 3, 1, 2, 3, 3]), 'id': [f't{i}' for i in range(10)]}, d + '/train.txt')
            torch.save({'codes': torch.randn(3, 8, generator=g), 'id': ['qa', 'qb', 'qc']}, d + '/test.txt')
            torch.save({'codes': torch.randn(6, 8, generator=g), 'id': [f'd{i}' for i in range(6)]}, d + '/database.txt')
            open(d + '/ground_truth.csv', 'w').write('id,images\\nqa,d1 d3\\nqb,d0\\nqc,d2 d4 d5\\n')
            torch.save({'codes': torch.randn(10, 8, generator=g)}, d + '/reference.pt')
            """, [fire])
        XCTAssertEqual(make.status, 0, make.stderr)
        let r = try python(root + "/bench/fire_delg_to_npy.py", [fire, out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let train = try NPYArray(path: out + "/train_x.npy"), y = try NPYArray(path: out + "/train_y.npy")
        XCTAssertEqual(train.shape, [10, 8]); XCTAssertEqual(y.shape, [10])
        XCTAssertEqual((0..<10).map { Int(y.double(at: $0)) }, [0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
        // The float16 descriptors against the torch values rounded to float16 by torch itself.
        let expected = try python("import torch, sys; c = torch.load(sys.argv[1] + '/train.txt')['codes'].half().float(); print(' '.join(repr(v) for v in c.flatten().tolist()))", [fire])
        let values = expected.stdout.split(separator: " ").map { Double($0.trimmingCharacters(in: .whitespacesAndNewlines))! }
        XCTAssertEqual((0..<80).map { train.double(at: $0) }, values)
        XCTAssertEqual(try readIDs(out + "/query_ids.txt", rows: 3), ["qa", "qb", "qc"])
        XCTAssertEqual(try readIDs(out + "/db_ids.txt", rows: 6), (0..<6).map { "d\($0)" })
        XCTAssertEqual(try NPYArray(path: out + "/db_x.npy").shape, [6, 8])
        let solution = try GLDv2Solution(path: out + "/solution.csv")
        XCTAssertEqual(solution.queries.map(\.images), [["d1", "d3"], ["d0"], ["d2", "d4", "d5"]])
        XCTAssertTrue(solution.queries.allSatisfy(\.isPublic))
        // Bad inputs: one line naming the file.
        func refused(_ folder: String, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try python(root + "/bench/fire_delg_to_npy.py", [folder, dir + "/o"])
            XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
            XCTAssertTrue(r.stderr.hasPrefix("error: ") && r.stderr.contains(fragment), r.stderr, file: file, line: line)
        }
        try FileManager.default.createDirectory(atPath: dir + "/bad", withIntermediateDirectories: true)
        try "not torch".write(toFile: dir + "/bad/test.txt", atomically: false, encoding: .utf8)
        try refused(dir + "/bad", "bad/test.txt: not a torch.save file")
        try FileManager.default.removeItem(atPath: dir + "/bad/test.txt")
        try FileManager.default.moveItem(atPath: fire + "/reference.pt", toPath: dir + "/bad/database.txt")
        try refused(dir + "/bad", "bad/database.txt: no 'id'")
        try refused(dir + "/missing", "missing: none of train.txt, test.txt, database.txt is here")
        // Each of the other refusals, one bad file at a time.
        let cases: [(String, String, String)] = [
            ("train.txt", "{'codes': torch.zeros(3, 4), 'id': ['a', 'b', 'c']}", "train.txt has no 'labels'"),
            ("train.txt", "{'codes': torch.zeros(3, 4), 'labels': torch.tensor([0, 1, 2])}", "labels are 1-based in FIRe's files; found 0"),
            ("train.txt", "{'codes': torch.zeros(3, 4), 'labels': torch.tensor([1, 2])}", "2 labels for 3 rows of codes"),
            ("test.txt", "{'codes': torch.tensor([[1.0, float('nan')]]), 'id': ['a']}", "'codes' has non-finite values"),
            ("test.txt", "{'codes': torch.zeros(4), 'id': ['a']}", "'codes' has shape (4,), expected (rows, dim)"),
            ("test.txt", "{'codes': torch.zeros(2, 4), 'id': ['a']}", "1 ids for 2 rows of codes"),
            ("test.txt", "{'codes': torch.zeros(2, 4), 'id': ['a', 'b c']}", "id 'b c' is empty or has spaces"),
            ("test.txt", "{'codes': torch.zeros(2, 4), 'id': ['a', 'a']}", "a query id names two rows"),
            ("test.txt", "[1, 2]", "expected a dictionary with 'codes'"),
        ]
        // The files in one python process (importing torch is most of each run's time).
        let made = try python("import os, sys, torch\n" + cases.enumerated().map { n, c in
            "os.makedirs(sys.argv[1] + '/case\(n)'); torch.save(\(c.1), sys.argv[1] + '/case\(n)/\(c.0)')\n" }.joined(), [dir])
        XCTAssertEqual(made.status, 0, made.stderr)
        for (n, (name, _, fragment)) in cases.enumerated() { try refused(dir + "/case\(n)", "case\(n)/\(name): \(fragment)") }
    }
}
