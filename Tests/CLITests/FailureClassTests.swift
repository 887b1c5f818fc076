// The failure classes an adversarial pass found (issue 22), one test per class: settings that
// change the bits kept by a resume, flags given with the default's value, runs whose summary was
// never written, outputs that are FIFOs, directories or the command's own inputs, writes that
// fail, and --resume where there is no run.

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashTraining
import TestSupport

final class FailureClassTests: XCTestCase {
    func readJSON(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    /// The step's path (--head, --head-products, --gradient-sum, --gradient-overlap,
    /// --gradient-bucket-mb) is stored
    /// with the run: a resume with no flags continues with it, and one that changes it is refused
    /// like the other settings that shape the run.
    func testStepPathIsStoredAndKept() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "3", "--head", "logits", "--head-products", "blas", "--gradient-sum", "bf16",
                                         "--gradient-bucket-mb", "4"]
        for run in ["a", "b"] {
            let cut = try orthohash(["train"] + args + ["--run-dir", "\(dir)/\(run)"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "10"])
            XCTAssertEqual(cut.status, 0, cut.stderr)
        }
        let stored = try readJSON(dir + "/a/config.json")
        XCTAssertEqual(stored["head"] as? String, "logits")
        XCTAssertEqual(stored["headProducts"] as? String, "blas")
        XCTAssertEqual(stored["gradientSum"] as? String, "bf16")
        XCTAssertEqual(stored["gradientOverlap"] as? String, "auto")
        XCTAssertEqual(stored["gradientBucketMB"] as? Double, 4)
        let resumed = try orthohash(["train", "--run-dir", dir + "/a", "--resume", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try readJSON(dir + "/a/config.json")["head"] as? String, "logits")
        assertFails(try orthohash(["train", "--run-dir", dir + "/b", "--resume", "--head", "fused"]), "differs in: head")
        assertFails(try orthohash(["train", "--run-dir", dir + "/b", "--resume", "--gradient-sum", "float32"]), "differs in: gradientSum")
        assertFails(try orthohash(["train", "--run-dir", dir + "/b", "--resume", "--gradient-bucket-mb", "25"]), "differs in: gradientBucketMB")
    }

    /// A flag given on resume replaces the stored setting even when it names the default: a run
    /// stored with --eval-every 1, resumed with --eval-every 0, evaluates only at its end.
    func testExplicitDefaultReplacesStoredSetting() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "3", "--eval-every", "1"]
        let cut = try orthohash(["train"] + args + ["--run-dir", dir + "/r"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "10"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        let resumed = try orthohash(["train", "--run-dir", dir + "/r", "--resume", "--eval-every", "0", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let lines = try String(contentsOfFile: dir + "/r/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(lines.map { $0.contains("\"map\"") }, [true, false, true], "epoch 1 before the cut, then only the end")
        XCTAssertEqual(try readJSON(dir + "/r/config.json")["evalEvery"] as? Int, 0)
    }

    /// --resume needs a run, or the settings to start one (the job scripts always pass it).
    func testResumeWithoutARunIsRefused() throws {
        let dir = tempDir()
        assertFails(try orthohash(["train", "--run-dir", dir + "/typo", "--resume"]), "\(dir)/typo: no run to resume here", "check --run-dir")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/typo/config.json"))
        let started = try orthohash(["train"] + (try writeData(dir)) + ["--epochs", "1", "--run-dir", dir + "/new", "--resume"])
        XCTAssertEqual(started.status, 0, started.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/new/summary.json"))
    }

    /// A run that trained all its epochs but has no summary.json (stopped between its last
    /// checkpoint and the summary, or the file deleted) is finished by --resume: the last
    /// checkpoint is evaluated and the summary written, with the figures the run had.
    func testRunWithoutSummaryIsFinished() throws {
        let dir = tempDir()
        let run = dir + "/r"
        XCTAssertEqual(try orthohash(["train"] + (try writeData(dir)) + ["--epochs", "2", "--run-dir", run]).status, 0)
        let before = try readJSON(run + "/summary.json")
        try FileManager.default.removeItem(atPath: run + "/summary.json")
        let finished = try orthohash(["train", "--run-dir", run, "--resume"])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        XCTAssertTrue(finished.stdout.contains("summary.json is missing: evaluating the last checkpoint"), finished.stdout)
        let after = try readJSON(run + "/summary.json")
        XCTAssertEqual(after["map"] as? [String: Double], before["map"] as? [String: Double])
        XCTAssertEqual(after["final_loss"] as? Double, before["final_loss"] as? Double)
        // Once written, a resume changes nothing.
        let again = try orthohash(["train", "--run-dir", run, "--resume"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertFalse(again.stdout.contains("evaluating the last checkpoint"), again.stdout)
    }

    /// What a command writes is checked before it works: a FIFO where the run appends (which
    /// blocked the process for good), a directory as --timeline, a FIFO as bench's --csv.
    func testOutputsThatCannotBeWrittenAreRefusedFirst() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "2"]
        let cut = try orthohash(["train"] + args + ["--run-dir", dir + "/r"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "3"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        try? FileManager.default.removeItem(atPath: dir + "/r/metrics.jsonl")
        XCTAssertEqual(mkfifo(dir + "/r/metrics.jsonl", 0o644), 0)
        assertFails(try orthohash(["train", "--run-dir", dir + "/r", "--resume"]), "metrics.jsonl: exists and is a FIFO, not a regular file")
        XCTAssertEqual(mkfifo(dir + "/fifo.csv", 0o644), 0)
        assertFails(try orthohash(["bench", "--steps", "1", "--csv", dir + "/fifo.csv"]), "fifo.csv: exists and is a FIFO")
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: true)
        assertFails(try orthohash(["train"] + args + ["--run-dir", dir + "/t", "--timeline", dir + "/adir"]), "adir: exists and is a directory")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/t/config.json"), "refused before the run began")
    }

    /// An output that is one of the command's inputs, a file or checkpoint of the run it reads,
    /// or another of its outputs is refused before anything is written.
    func testOutputsNeverReplaceInputs() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let run = dir + "/r"
        XCTAssertEqual(try orthohash(["train"] + args + ["--epochs", "1", "--run-dir", run]).status, 0)
        let best = try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/best.ohck"))
        assertFails(try orthohash(["export", "--run-dir", run, "--out", run + "/checkpoints/best.ohck"]), "is a checkpoint of the run")
        assertFails(try orthohash(["export", "--run-dir", run, "--out", run + "/config.json"]), "is a file of the run")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/best.ohck")), best)
        assertFails(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/db_x.npy"]),
                    "--out \(dir)/db_x.npy is the input of --features")
        assertFails(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/c.npy", "--out-real", dir + "/c.npy"]),
                    "--out-real and --out name the same file")
        let encoded = try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/db.npy"])
        XCTAssertEqual(encoded.status, 0, encoded.stderr)
        assertFails(try orthohash(["search", "--db", dir + "/db.npy", "--queries", dir + "/db.npy", "--k", "3", "--out", dir + "/o.npy",
                                   "--distances", dir + "/o.npy"]), "--distances and --out name the same file")
        assertFails(try orthohash(["search", "--db", dir + "/db.npy", "--queries", dir + "/db.npy", "--k", "3", "--out", dir + "/db.npy"]),
                    "is the database (--db)")
        assertFails(try orthohash(["map", "--db", dir + "/db.npy", "--queries", dir + "/db.npy", "--query-labels", dir + "/db_y.npy",
                                   "--db-labels", dir + "/db_y.npy", "--out", dir + "/db_y.npy"]), "is the input of --query-labels")
    }

    /// A stop asked during the last evaluation (a preemption's signal) ends it, with the epoch's
    /// checkpoint written before it, and status 75; the resumed run evaluates and ends as an
    /// uninterrupted one.
    func testStopDuringTheLastEvaluation() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "2"]
        XCTAssertEqual(try orthohash(["train"] + args + ["--run-dir", dir + "/whole"]).status, 0)
        let job = try start(["train"] + args + ["--run-dir", dir + "/r"], environment: ["ORTHOHASH_TEST_EVALUATION_PAUSE": "3"])
        let last = dir + "/r/checkpoints/step-0000000016.ohck", started = Date()
        while !FileManager.default.fileExists(atPath: last) && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
        usleep(300_000)
        kill(job.process.processIdentifier, SIGTERM)
        let stopped = job.finish()
        XCTAssertEqual(stopped.status, 75, stopped.stderr)
        XCTAssertTrue(stopped.stderr.hasPrefix("stopped by SIGTERM after step 16 (step 8 of 8 in epoch 2 of 2): checkpoint \(last)"), stopped.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r/summary.json"))
        let resumed = try orthohash(["train", "--run-dir", dir + "/r", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let whole = try readJSON(dir + "/whole/summary.json"), again = try readJSON(dir + "/r/summary.json")
        XCTAssertEqual(again["map"] as? [String: Double], whole["map"] as? [String: Double])
        XCTAssertEqual(again["final_loss"] as? Double, whole["final_loss"] as? Double)
    }

    /// Training data changed between a stop and the resume (rows appended, or values replaced
    /// in the same shape) is refused, naming what changed: the run would continue mid-epoch
    /// under another permutation.
    func testChangedTrainingDataIsRefusedOnResume() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "2"]
        // Stopped in epoch 2: epoch 1's checkpoint (8 steps) is the one resumed.
        let cut = try orthohash(["train"] + args + ["--run-dir", dir + "/r"], environment: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "10"])
        XCTAssertEqual(cut.status, 0, cut.stderr)
        let ck = try Checkpoint.read(CheckpointDirectory(runDir: dir + "/r").stepCheckpoints()[0])
        XCTAssertEqual(ck.state.trainData?.rows, 256)
        try NPYWriter.write(path: dir + "/train_x.npy", shape: [288, 8], floats: (0..<(288 * 8)).map { Float($0 % 7) })
        try NPYWriter.write(path: dir + "/train_y.npy", shape: [288], int64: (0..<288).map { Int64($0 % 3) })
        assertFails(try orthohash(["train", "--run-dir", dir + "/r", "--resume"]), "the training data is not the data this run trained on (256 training rows, now 288)")
        try NPYWriter.write(path: dir + "/train_x.npy", shape: [256, 8], floats: (0..<(256 * 8)).map { Float($0 % 5) })
        try NPYWriter.write(path: dir + "/train_y.npy", shape: [256], int64: (0..<256).map { Int64($0 % 3) })
        assertFails(try orthohash(["train", "--run-dir", dir + "/r", "--resume"]), "other values in the rows sampled")
    }

    /// A write that fails ends the command with one line naming the file, never a crash: stderr
    /// on a full device (the search itself succeeds), and steps.csv past the file-size limit
    /// (EFBIG, as a full disk gives ENOSPC) with the checkpoints left intact.
    func testFailedWritesEndCleanly() throws {
        let dir = tempDir()
        let run = dir + "/r"
        XCTAssertEqual(try orthohash(["train"] + (try writeData(dir)) + ["--epochs", "1", "--run-dir", run]).status, 0)
        XCTAssertEqual(try orthohash(["encode", "--run-dir", run, "--features", dir + "/db_x.npy", "--out", dir + "/db.npy"]).status, 0)
        let search = try shell("exec \"$0\" search --db \(dir)/db.npy --queries \(dir)/db.npy --k 3 --out \(dir)/o.npy 2>/dev/full")
        XCTAssertEqual(search.status, 0, search.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/o.npy"))
        // 60 epochs of 8 steps: steps.csv (about 24 bytes a step) passes 8 KB near epoch 43, before
        // metrics.jsonl (about 150 bytes an epoch) does; a checkpoint is about 4 KB.
        let args = (try writeData(dir)).map { "'\($0)'" }.joined(separator: " ")
        let limited = try shell("trap '' XFSZ; ulimit -f 8; exec \"$0\" train \(args) --epochs 60 --log-steps --run-dir \(dir)/full")
        XCTAssertEqual(limited.status, 1, limited.stderr)
        XCTAssertTrue(limited.stderr.hasPrefix("error: \(dir)/full/steps.csv: cannot write: File too large"), limited.stderr)
        XCTAssertEqual(limited.stderr.split(separator: "\n").count, 1, limited.stderr)
        let inspect = try orthohash(["inspect", dir + "/full"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdout.contains("state: stopped"), inspect.stdout)
        XCTAssertTrue(inspect.stdout.contains("checkpoints (newest first"), inspect.stdout)
    }

    /// A run directory on a file system with less room than its checkpoints can take (3 kept, the
    /// best, one being written: 5 x 3.3 MB here, on a 10 MB tmpfs) is warned of at the start; the
    /// run goes on (it needs 2 files at most) and ends well.
    func testCheckpointSpaceWarning() throws {
        guard getuid() == 0 else { throw XCTSkip("mounting a small tmpfs needs root") }
        let dir = tempDir(), small = tempDir()
        guard try shell("mount -t tmpfs -o size=10m tmpfs '\(small)'", program: "/bin/true").status == 0 else { throw XCTSkip("no tmpfs mount here") }
        defer { _ = try? shell("umount '\(small)'", program: "/bin/true") }
        let run = try orthohash(["train"] + (try writeData(dir)) + ["--backbone", "mlp", "--hidden", "512,512", "--epochs", "1", "--run-dir", small + "/r"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let warnings = run.stderr.split(separator: "\n").filter { $0.hasPrefix("warning: ") }
        XCTAssertEqual(warnings.count, 1, run.stderr)
        XCTAssertTrue(warnings.first?.contains("\(small)/r has ") == true, run.stderr)
        XCTAssertTrue(warnings.first?.contains(" MB its checkpoints can take (3 kept by --keep-checkpoints, the best, one being written; about 3.") == true, run.stderr)
    }

    /// The launch scripts check their arguments (launch.sh --nodes 0 printed 0 ranks and
    /// started 2); an OPENBLAS_NUM_THREADS that is not a positive integer is said, not ignored;
    /// a temporary file a killed writer left beside an output goes with the next write of it.
    func testScriptsEnvironmentAndLeftovers() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        for (script, environment, arguments, message) in [
            ("launch.sh", "", ["--nodes", "0", "--", "--epochs", "1"], "launch: --nodes must be a positive integer, got '0'"),
            ("launch.sh", "", ["--ranks-per-node"], "launch: --ranks-per-node needs a value"),
            ("launch.sh", "", ["--hostfile", "/nonexistent", "--"], "launch: --hostfile /nonexistent: no such readable file"),
            ("scaling.sh", "", ["--grid"], "scaling: --grid needs a value"),
            ("scaling.sh", "WORKLOADS='fmnist resnet'", [], "scaling: WORKLOADS: unknown workload 'resnet' (fmnist, gldv2head, cnn, alexnet)")] {
            let r = try shell("exec env \(environment) \"$0\" " + arguments.joined(separator: " "), program: root + "/deploy/" + script)
            XCTAssertEqual(r.status, 2, "\(script) \(arguments): \(r.stderr)")
            XCTAssertEqual(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines), message)
        }
        let dir = tempDir()
        let run = try orthohash(["train"] + (try writeData(dir)).filter { $0 != "--quiet" } + ["--epochs", "1", "--run-dir", dir + "/r"],
                                environment: ["OPENBLAS_NUM_THREADS": "abc"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("OPENBLAS_NUM_THREADS=abc is not a positive integer and is ignored"), run.stdout)
        // A dead writer's temporary (pid 2^22 + 1 is above Linux's largest) beside export's output.
        let leftover = dir + "/.model.safetensors.tmp-4194305"
        XCTAssertTrue(FileManager.default.createFile(atPath: leftover, contents: Data("partial".utf8)))
        let exported = try orthohash(["export", "--run-dir", dir + "/r", "--out", dir + "/model.safetensors"])
        XCTAssertEqual(exported.status, 0, exported.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: leftover))
    }

    /// scripts/plots.py draws a run and a curves file as PNG (skipped without Debian's
    /// matplotlib), and names a missing input in one line.
    func testPlotsFromARunAndItsCurves() throws {
        let dir = tempDir()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        guard try shell("exec /usr/bin/python3 -c 'import matplotlib'", program: "/bin/true").status == 0 else {
            throw XCTSkip("no matplotlib for /usr/bin/python3 (scripts/setup.sh --scaling installs it)")
        }
        XCTAssertEqual(try orthohash(["train"] + (try writeData(dir)) + ["--epochs", "2", "--eval-every", "1", "--run-dir", dir + "/r"]).status, 0)
        let eval = try orthohash(["eval", "--run-dir", dir + "/r", "--curves", dir + "/r/curves.csv"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        XCTAssertTrue(eval.stdout.contains("\"precision_within_radius_2\""), eval.stdout)
        let plots = root + "/scripts/plots.py"
        let drawn = try shell("exec /usr/bin/python3 \"$0\" --runs \(dir)/r --curves \(dir)/r/curves.csv --out \(dir)", program: plots)
        XCTAssertEqual(drawn.status, 0, drawn.stderr)
        for png in ["training.png", "curves.png"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + png))
            XCTAssertEqual(Array(bytes.prefix(4)), [0x89, 0x50, 0x4E, 0x47], png)
        }
        let missing = try shell("exec /usr/bin/python3 \"$0\" --curves \(dir)/none.csv --out \(dir)", program: plots)
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "plots: \(dir)/none.csv: no such file\n")
    }

    /// Runs `script` in bash with the orthohash binary as $0.
    func shell(_ script: String, program: String? = nil) throws -> Run {
        let binary = program ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("orthohash").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw XCTSkip("\(binary) not found") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", script, binary]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}
