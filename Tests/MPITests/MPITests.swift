// Data-parallel training over real Open MPI: `mpirun` runs the built `orthohash` binary.
//
// Tolerances: N ranks sum the same gradients in a different order (per-rank partial sums, then
// the all-reduce), so float32 results differ from one process by rounding, which Adam's
// normalisation can amplify over steps. Over 24 steps of this small problem that stays below
// 1e-4 relative in the loss and 1e-3 of the parameter scale; a wrong data split or a missing
// BatchNorm synchronisation gives differences of order 1e-1 (checked by hand while writing this).

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining
import TestSupport

struct Job { var status: Int32; var stdout: String; var stderr: String; var seconds: Double }

func binary() throws -> String {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for url in [here.appendingPathComponent("orthohash"), Bundle.main.bundleURL.appendingPathComponent("orthohash")]
    where FileManager.default.isExecutableFile(atPath: url.path) { return url.path }
    throw XCTSkip("orthohash binary not found")
}

/// Environment for mpirun as root on one machine, one BLAS thread per rank.
func mpiEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["OMPI_MCA_mpi_yield_when_idle"] = "1"
    for (k, v) in extra { env[k] = v }
    return env
}

/// Starts `mpirun -np N orthohash ARGS` (or the binary alone for np = 0).
func launch(np: Int, _ args: [String], env: [String: String] = [:]) throws -> (Process, Pipe, Pipe) {
    let p = Process()
    let exe = try binary()
    if np == 0 {
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
    } else {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun", "-np", String(np), "--oversubscribe", "--bind-to", "none",
                       "-x", "OPENBLAS_NUM_THREADS"] + env.keys.filter { $0.hasPrefix("ORTHOHASH_TEST") || $0 == "OPENBLAS_CORETYPE" }.flatMap { ["-x", $0] } + [exe] + args
    }
    p.environment = mpiEnvironment(env)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    return (p, out, err)
}

func finish(_ job: (Process, Pipe, Pipe), started: Date = Date()) -> Job {
    let (p, out, err) = job
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Job(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self),
               seconds: Date().timeIntervalSince(started))
}

func mpirun(np: Int, _ args: [String], env: [String: String] = [:]) throws -> Job {
    let start = Date()
    return finish(try launch(np: np, args, env: env), started: start)
}

/// A fresh temporary directory for one test (removed when the test process exits).
func tempDir(_ name: String = #function) -> String { TestDirectories.make(name) }

/// 4 Gaussian clusters, 512 training rows of 16 features; batch 64 -> 8 steps per epoch.
func writeData(_ dir: String) throws -> [String] {
    var rng = Xoshiro256(seed: 9)
    let centres = (0..<64).map { _ in Float(rng.gaussian() * 1.5) }
    for (name, n) in [("train", 512), ("query", 64), ("db", 256)] {
        var x: [Float] = [], y: [Int64] = []
        for _ in 0..<n {
            let c = rng.nextInt(below: 4)
            y.append(Int64(c))
            for d in 0..<16 { x.append(centres[c * 16 + d] + Float(rng.gaussian())) }
        }
        try NPYWriter.write(path: "\(dir)/\(name)_x.npy", shape: [n, 16], floats: x)
        try NPYWriter.write(path: "\(dir)/\(name)_y.npy", shape: [n], int64: y)
    }
    return ["train", "--dataset", "npy", "--train-features", "\(dir)/train_x.npy", "--train-labels", "\(dir)/train_y.npy",
            "--query-features", "\(dir)/query_x.npy", "--query-labels", "\(dir)/query_y.npy",
            "--db-features", "\(dir)/db_x.npy", "--db-labels", "\(dir)/db_y.npy",
            "--backbone", "mlp", "--hidden", "32", "--nbit", "16", "--batch-size", "64", "--lr", "0.003",
            "--epochs", "3", "--map-at", "all,20", "--threads", "1", "--quiet", "--log-steps"]
}

func stepLosses(_ runDir: String) throws -> [Double] {
    try String(contentsOfFile: runDir + "/steps.csv", encoding: .utf8).split(separator: "\n").map { Double($0.split(separator: ",")[1])! }
}

func finalParameters(_ runDir: String) throws -> [Float] {
    try Checkpoint.read(CheckpointDirectory(runDir: runDir).stepCheckpoints()[0]).parameters
}

func summary(_ runDir: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: runDir + "/summary.json"))) as! [String: Any]
}

func summaryMAP(_ runDir: String) throws -> Double { (try summary(runDir)["map"] as! [String: Double])["all"]! }

/// How the run's ranks summed their gradients (summary.json).
func gradientReduction(_ runDir: String) throws -> String? { try summary(runDir)["gradient_reduction"] as? String }

/// A job the watchdog ended promptly at a 3 s --collective-timeout, naming `rank` and the step.
func assertWatchdogAborted(_ job: Job, naming rank: Int, atStep step: Int, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertNotEqual(job.status, 0, file: file, line: line)
    XCTAssertLessThan(job.seconds, 30, "aborted promptly", file: file, line: line)
    XCTAssertTrue(job.stderr.contains("waited more than 3 s (--collective-timeout); ranks that did not arrive: \(rank)"), job.stderr, file: file, line: line)
    XCTAssertTrue(job.stderr.contains("at step \(step)"), job.stderr, file: file, line: line)
}

func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    let scale = a.map { abs($0) }.max() ?? 1
    let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
    XCTAssertLessThan(worst / scale, 1e-3, "\(what): max difference \(worst) vs scale \(scale)", file: file, line: line)
}

final class MPITests: XCTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") else { throw XCTSkip("mpirun is not installed") }
    }

    /// 1, 2 and 4 ranks train the same model as one process with the same global batch; verify
    /// mode checks after every step that all ranks hold bitwise identical parameters.
    func testRanksTrainTheSameModel() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let single = try mpirun(np: 0, args + ["--run-dir", dir + "/np0"])
        XCTAssertEqual(single.status, 0, single.stderr)
        let reference = try stepLosses(dir + "/np0"), referenceParameters = try finalParameters(dir + "/np0")
        XCTAssertEqual(reference.count, 24)
        for np in [1, 2, 4] {
            let run = dir + "/np\(np)"
            let job = try mpirun(np: np, args + ["--run-dir", run, "--verify"])
            XCTAssertEqual(job.status, 0, "np \(np): \(job.stderr)")
            let losses = try stepLosses(run)
            XCTAssertEqual(losses.count, 24)
            for (a, b) in zip(losses, reference) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b), "np \(np)") }
            assertClose(try finalParameters(run), referenceParameters, "np \(np) parameters")
            XCTAssertEqual(try summaryMAP(run), try summaryMAP(dir + "/np0"), accuracy: 0.005, "np \(np) mAP")
            XCTAssertEqual(try summary(run)["world_size"] as? Int, np)
        }
        // Evaluation is sharded over ranks and gathered: the same figure as evaluating that model in one process.
        let eval = try mpirun(np: 0, ["eval", "--run-dir", dir + "/np2", "--checkpoint", "last"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let e = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(e["mAP@all"] as! Double, try summaryMAP(dir + "/np2"), accuracy: 1e-6)
        // A batch the ranks cannot split evenly is refused, by every rank, before any work.
        let odd = try mpirun(np: 4, args + ["--run-dir", dir + "/odd", "--batch-size", "66"])
        XCTAssertNotEqual(odd.status, 0)
        XCTAssertTrue(odd.stderr.contains("--batch-size 66 is not divisible by the 4 ranks"), odd.stderr)
    }

    /// The image backbones data-parallel: the cnn on Fashion-MNIST's images and AlexNet (with its
    /// dropout) on generated images, 2 ranks against one process with the same global batch (the
    /// dropout masks come from each row's place in the global batch, so the ranks drop what one
    /// process drops; other masks would move the loss by far more than the tolerance).
    func testImageBackbonesOnRanks() throws {
        let dir = tempDir()
        let cnn = ["train", "--backbone", "cnn", "--train-limit", "512", "--query-limit", "64", "--db-limit", "512", "--nbit", "16",
                   "--batch-size", "64", "--epochs", "1", "--threads", "1", "--quiet", "--log-steps"]
        let alexnet = ["train", "--dataset", "generated", "--backbone", "alexnet", "--image-size", "63", "--train-limit", "64",
                       "--query-limit", "16", "--classes", "4", "--nbit", "16", "--batch-size", "16", "--epochs", "1", "--lr", "1e-3",
                       "--checkpoint-every", "0", "--keep-checkpoints", "1", "--threads", "1", "--quiet", "--log-steps"]
        for (name, args) in [("cnn", cnn), ("alexnet", alexnet)] {
            let one = try mpirun(np: 0, args + ["--run-dir", "\(dir)/\(name)1"])
            XCTAssertEqual(one.status, 0, one.stderr)
            let two = try mpirun(np: 2, args + ["--run-dir", "\(dir)/\(name)2", "--verify"])
            XCTAssertEqual(two.status, 0, two.stderr)
            let reference = try stepLosses("\(dir)/\(name)1"), losses = try stepLosses("\(dir)/\(name)2")
            XCTAssertEqual(losses.count, reference.count)
            XCTAssertGreaterThan(losses.count, 0)
            for (a, b) in zip(losses, reference) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b), "\(name): 2 ranks against one process") }
            assertClose(try finalParameters("\(dir)/\(name)2"), try finalParameters("\(dir)/\(name)1"), "\(name) parameters")
        }
    }

    /// Stopped at step 12 of 24 and resumed: byte-identical parameters with the same ranks;
    /// with another number of ranks (2 -> 1, 1 -> 2, 2 -> 4) within the tolerance above.
    func testResumeExactAndAcrossRankCounts() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--checkpoint-every-steps", "4"]
        let full = try mpirun(np: 2, args + ["--run-dir", dir + "/full"])
        XCTAssertEqual(full.status, 0, full.stderr)
        let target = try finalParameters(dir + "/full")
        for (first, second) in [(2, 2), (2, 1), (1, 2), (2, 4)] {
            let run = dir + "/cut\(first)to\(second)"
            let cut = try mpirun(np: first, args + ["--run-dir", run], env: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "13"])
            XCTAssertEqual(cut.status, 0, cut.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/summary.json"))
            let resumed = try mpirun(np: second, args + ["--run-dir", run, "--resume"])
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            let parameters = try finalParameters(run)
            if first == second {
                XCTAssertEqual(parameters, target, "same ranks: byte-identical")
            } else {
                assertClose(parameters, target, "\(first) -> \(second) ranks")
            }
        }
    }

    /// AlexNet, whose 57M parameters make a checkpoint of 0.68 GB with Adam's moments at any image
    /// size (63 x 63 here): preempted (SIGUSR1 to mpirun: a checkpoint of the step it stopped
    /// after, exit 75) and resumed on the same 2 ranks, byte-identical to a run never stopped;
    /// ended after step 5 of 8 without a checkpoint of it and resumed on 1 rank, within the
    /// tolerance above. The run directory keeps --keep-checkpoints step checkpoints (and no
    /// temporary file of a write) however many were written, and the log says what they cost.
    func testAlexNetResumeAcrossRankCounts() throws {
        let dir = tempDir()
        let args = ["train", "--dataset", "generated", "--backbone", "alexnet", "--image-size", "63", "--train-limit", "64",
                    "--query-limit", "16", "--classes", "4", "--nbit", "16", "--batch-size", "16", "--epochs", "2", "--lr", "1e-3",
                    "--checkpoint-every-steps", "3", "--keep-checkpoints", "2", "--threads", "1", "--quiet", "--log-steps"]
        let full = try mpirun(np: 2, args.filter { $0 != "--quiet" } + ["--run-dir", dir + "/full", "--progress-every", "0"])
        XCTAssertEqual(full.status, 0, full.stderr)
        XCTAssertTrue(full.stdout.contains("checkpoints: about 0.68 GB each (parameters and 2 optimizer moments); --keep-checkpoints 2, "
                                           + "the best and one being written take up to 2.74 GB in \(dir)/full/checkpoints"), full.stdout)
        let target = try finalParameters(dir + "/full")
        // torchvision's AlexNet features and classifier[0:6], then the hash layer (4096 x 16 and BatchNorm's 2 x 16).
        XCTAssertEqual(target.count, 57_003_840 + 4096 * 16 + 2 * 16)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/full/checkpoints")
        XCTAssertEqual(files.filter { $0.hasPrefix("step") }.count, 2, "\(files)")
        XCTAssertTrue(files.allSatisfy { !$0.contains(".tmp") }, "\(files)")
        for f in files {
            let size = try FileManager.default.attributesOfItem(atPath: dir + "/full/checkpoints/" + f)[.size] as! Int
            XCTAssertGreaterThan(size, 3 * 4 * 57_000_000, "\(f): parameters and two moments")
        }
        let preempted = dir + "/preempted"
        let job = try launch(np: 2, args + ["--run-dir", preempted], env: ["ORTHOHASH_TEST_STEP_SLEEP_MS": "300"])
        let started = Date()
        while ((try? String(contentsOfFile: preempted + "/steps.csv", encoding: .utf8))?.split(separator: "\n").count ?? 0) < 2
                && Date().timeIntervalSince(started) < 120 { usleep(20_000) }
        kill(job.0.processIdentifier, SIGUSR1)
        let stopped = finish(job)
        XCTAssertEqual(stopped.status, Interruption.exitStatus, stopped.stderr)
        let done = try stepLosses(preempted).count
        XCTAssertLessThan(done, 8)
        XCTAssertEqual(try Checkpoint.read(CheckpointDirectory(runDir: preempted).stepCheckpoints()[0]).state.globalStep, done)
        let resumed = try mpirun(np: 2, args + ["--run-dir", preempted, "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try stepLosses(preempted), try stepLosses(dir + "/full"))
        XCTAssertEqual(try finalParameters(preempted), target, "same ranks: byte-identical")
        let cut = dir + "/cut"
        let ended = try mpirun(np: 2, args + ["--run-dir", cut], env: ["ORTHOHASH_TEST_STOP_AFTER_STEPS": "5"])
        XCTAssertEqual(ended.status, 0, ended.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: cut + "/summary.json"))
        let one = try mpirun(np: 1, args + ["--run-dir", cut, "--resume"])
        XCTAssertEqual(one.status, 0, one.stderr)
        assertClose(try finalParameters(cut), target, "2 -> 1 ranks")
    }

    /// Ranks on one node sum gradients through a shared-memory window. With 2 ranks each sum
    /// is one addition either way, so the run is byte-identical to MPI_Allreduce's (switched on
    /// with ORTHOHASH_SHARED_MEMORY_REDUCE=0); with 3 ranks the addition order differs, so within
    /// the tolerance above. Without room for the window, a warning and MPI_Allreduce. Bench runs
    /// a second model in the same job (one per thread count), which gets the window again.
    func testSharedMemoryReductionMatchesAllreduce() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        for np in [2, 3] {
            var batch = args
            batch[batch.firstIndex(of: "--batch-size")! + 1] = np == 3 ? "66" : "64"
            let shared = try mpirun(np: np, batch + ["--run-dir", dir + "/shared\(np)", "--verify"])
            XCTAssertEqual(shared.status, 0, shared.stderr)
            let plain = try mpirun(np: np, batch + ["--run-dir", dir + "/plain\(np)", "--verify"], env: ["ORTHOHASH_SHARED_MEMORY_REDUCE": "0"])
            XCTAssertEqual(plain.status, 0, plain.stderr)
            XCTAssertEqual(try gradientReduction(dir + "/shared\(np)"), "shared memory within each node (\(np) ranks)")
            XCTAssertEqual(try gradientReduction(dir + "/plain\(np)"), "MPI_Allreduce")
            if np == 2 {
                XCTAssertEqual(try stepLosses(dir + "/shared2"), try stepLosses(dir + "/plain2"))
                XCTAssertEqual(try finalParameters(dir + "/shared2"), try finalParameters(dir + "/plain2"), "byte-identical")
            } else {
                for (a, b) in zip(try stepLosses(dir + "/shared3"), try stepLosses(dir + "/plain3")) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b)) }
                assertClose(try finalParameters(dir + "/shared3"), try finalParameters(dir + "/plain3"), "3 ranks, shared vs MPI_Allreduce")
            }
        }
        // Too little room for the window where Open MPI puts it (a container's small /dev/shm):
        // a warning, MPI_Allreduce, and the same result.
        if getuid() == 0 {
            let small = dir + "/smallshm"
            try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
            if try shell("mount -t tmpfs -o size=1m tmpfs '\(small)'").status == 0 {
                defer { _ = try? shell("umount '\(small)'") }
                let cramped = try mpirun(np: 2, args + ["--run-dir", dir + "/cramped"], env: ["OMPI_MCA_osc_sm_backing_directory": small])
                XCTAssertEqual(cramped.status, 0, cramped.stderr)
                XCTAssertTrue(cramped.stderr.contains("[rank 0] warning: \(small) has 1 MB free on a node; the shared-memory gradient window needs about"), cramped.stderr)
                XCTAssertEqual(try gradientReduction(dir + "/cramped"), "MPI_Allreduce")
                XCTAssertEqual(try finalParameters(dir + "/cramped"), try finalParameters(dir + "/shared2"))
            }
        }
        let bench = try mpirun(np: 2, ["bench", "--dataset", "npy"] + Array(args.dropFirst(3).prefix(12))
                                   + ["--backbone", "mlp", "--hidden", "32", "--nbit", "16", "--batch-size", "64", "--steps", "3", "--threads", "1,1"])
        XCTAssertEqual(bench.status, 0, bench.stderr)
        XCTAssertTrue(bench.stdout.contains("gradients summed by shared memory within each node (2 ranks)"), bench.stdout)
        XCTAssertEqual(bench.stdout.split(separator: "\n").filter { $0.hasPrefix("    2        1") }.count, 2, bench.stdout)
    }

    /// Two ranks (gradients summed through the node's shared memory, each rank updating half of
    /// the parameters) give the model that the code before the restructuring gave, byte for byte
    /// (Tests/Fixtures/reference; see Tests/CLITests/ReferenceTests.swift).
    func testTwoRanksReference() throws {
        let run = tempDir() + "/run"
        let job = try mpirun(np: 2, ["train", "--backbone", "mlp", "--hidden", "16", "--nbit", "16", "--epochs", "2",
                                     "--train-limit", "2048", "--query-limit", "256", "--db-limit", "2048", "--batch-size", "128",
                                     "--eval-every", "1", "--threads", "1", "--quiet", "--run-dir", run], env: reproducibleBLAS)
        XCTAssertEqual(job.status, 0, job.stderr)
        XCTAssertEqual(try gradientReduction(run), "shared memory within each node (2 ranks)")
        try assertMatchesReference("fashion-mnist-mlp-2ranks", runDir: run) { out in
            let r = try mpirun(np: 0, ["export", "--run-dir", run, "--out", out])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
    }

    /// A signal stops every rank after the same step: SIGTERM to rank 1 alone, SIGUSR1 to
    /// mpirun (which forwards it), SIGTERM to mpirun, SIGTERM to deploy/launch.sh (which passes
    /// it on as SIGUSR1).
    /// Each time rank 0 writes a checkpoint of that step and says so once, the job exits with 75,
    /// and --resume on 2 ranks ends byte-identical to a run that was never interrupted.
    func testSignalsStopEveryRankAfterTheSameStep() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "6"]
        let whole = try mpirun(np: 2, args + ["--run-dir", dir + "/whole"])
        XCTAssertEqual(whole.status, 0, whole.stderr)
        for how in ["rank 1", "mpirun", "mpirun TERM", "launch.sh"] {
            let run = dir + "/" + how.filter { $0.isLetter || $0.isNumber }
            let env = ["ORTHOHASH_TEST_STEP_SLEEP_MS": "60"]
            let job: (Process, Pipe, Pipe)
            if how == "launch.sh" {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: packageRoot + "/deploy/launch.sh")
                p.arguments = ["--"] + Array(args.dropFirst()) + ["--run-dir", run]
                var environment = mpiEnvironment(env)
                environment["ORTHOHASH"] = try binary()
                p.environment = environment
                let out = Pipe(), err = Pipe()
                p.standardOutput = out; p.standardError = err
                try p.run()
                job = (p, out, err)
            } else {
                job = try launch(np: 2, args + ["--run-dir", run], env: env)
            }
            let started = Date()
            while ((try? String(contentsOfFile: run + "/steps.csv", encoding: .utf8))?.split(separator: "\n").count ?? 0) < 5
                    && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
            switch how {
            case "rank 1":
                guard let rank1 = try rankProcesses(run).first(where: { worldRank(of: $0) == 1 }) else { return XCTFail("rank 1 not found") }
                kill(rank1, SIGTERM)
            default:
                kill(job.0.processIdentifier, how == "mpirun" ? SIGUSR1 : SIGTERM)
            }
            let r = finish(job)
            // mpirun answers its own SIGTERM by passing it to the ranks and killing them a second
            // later, and exits 1 whatever they did: the ranks still stop with a checkpoint.
            XCTAssertEqual(r.status, how == "mpirun TERM" ? 1 : Interruption.exitStatus, "\(how): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n").filter { $0.contains("stopped by") }
            XCTAssertEqual(lines.count, 1, "\(how): \(r.stderr)")
            let reason = how == "rank 1" ? "a stop request on 1 other rank" : how == "mpirun TERM" ? "SIGTERM" : "SIGUSR1"
            XCTAssertTrue(lines.first?.hasPrefix("stopped by \(reason) after step ") ?? false, "\(how): \(r.stderr)")
            let done = try stepLosses(run).count
            XCTAssertLessThan(done, 48, "\(how): stopped before the end")
            XCTAssertEqual(try Checkpoint.read(CheckpointDirectory(runDir: run).stepCheckpoints()[0]).state.globalStep, done, how)
            let resumed = try mpirun(np: 2, args + ["--run-dir", run, "--resume"])
            XCTAssertEqual(resumed.status, 0, "\(how): \(resumed.stderr)")
            XCTAssertEqual(try stepLosses(run), try stepLosses(dir + "/whole"), how)
            XCTAssertEqual(try finalParameters(run), try finalParameters(dir + "/whole"), "\(how): byte-identical")
        }
    }

    /// A rank that stops answering: the others' watchdog aborts the job naming it.
    func testWatchdogNamesTheMissingRank() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let job = try mpirun(np: 4, args + ["--run-dir", dir + "/hang", "--collective-timeout", "3"],
                             env: ["ORTHOHASH_TEST_HANG_RANK": "2", "ORTHOHASH_TEST_HANG_STEP": "3"])
        assertWatchdogAborted(job, naming: 2, atStep: 3)
    }

    /// A rank stopped with SIGSTOP mid-training: the others' watchdog aborts the job at the
    /// timeout given (not a grace period later), naming that rank as giving no answer and the
    /// collective waited in by its real name. Three times, since the stop lands anywhere.
    func testWatchdogNamesAStoppedRankAtTheTimeout() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--epochs", "50"]
        let names = ["all-reduce of ", "broadcast", "all-gather", "gather of the updated parameter shards"]
        for attempt in 1...3 {
            let run = dir + "/run\(attempt)"
            let job = try launch(np: 4, args + ["--run-dir", run, "--collective-timeout", "4"], env: ["ORTHOHASH_TEST_STEP_SLEEP_MS": "20"])
            let started = Date()
            while (try? stepLosses(run).count) ?? 0 < 3 && Date().timeIntervalSince(started) < 60 { usleep(20_000) }
            guard let victim = try rankProcesses(run).first(where: { worldRank(of: $0) == 2 }) else { job.0.terminate(); return XCTFail("rank 2 not found") }
            kill(victim, SIGSTOP)
            let stopped = Date()
            let r = finish(job)
            let seconds = Date().timeIntervalSince(stopped)
            kill(victim, SIGKILL)
            XCTAssertNotEqual(r.status, 0)
            let line = r.stderr.split(separator: "\n").first { $0.contains("waited more than 4 s (--collective-timeout)") }.map(String.init) ?? ""
            XCTAssertTrue(line.contains("ranks that did not arrive: 2 (no answer: stopped, hung or gone)"), "attempt \(attempt): \(r.stderr)")
            XCTAssertFalse(line.contains("none"), line)
            let collective = line.components(separatedBy: "collective '").dropFirst().first ?? ""
            XCTAssertTrue(names.contains { collective.hasPrefix($0) }, "attempt \(attempt): the collective is named: \(line)")
            // The deadline is 4 s after the others entered the collective (at most one step after the stop).
            XCTAssertLessThan(seconds, 4 + 3, "attempt \(attempt): aborted at the timeout")
        }
    }

    /// Work rank 0 does alone is not a hang: with a one-second collective timeout, a job whose
    /// rank 0 takes longer than that to write each checkpoint (a pause injected before the
    /// rename) and evaluates at every epoch runs to its end.
    func testWorkOnRankZeroAloneIsNotAHang() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--eval-every", "1"]
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/run", "--collective-timeout", "1"], env: ["ORTHOHASH_TEST_CHECKPOINT_PAUSE": "1.5"])
        XCTAssertEqual(job.status, 0, job.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/run/summary.json"))
        // The same pause with --io-timeout below it: the wait for rank 0 is bounded too.
        let bounded = try mpirun(np: 2, args + ["--run-dir", dir + "/bounded", "--collective-timeout", "1", "--io-timeout", "1"],
                                 env: ["ORTHOHASH_TEST_CHECKPOINT_PAUSE": "3"])
        XCTAssertNotEqual(bounded.status, 0)
        XCTAssertTrue(bounded.stderr.contains("waited more than 1 s (--collective-timeout); ranks that did not arrive: 0 (busy: writing ")
                      || bounded.stderr.contains("(--io-timeout); ranks that did not arrive: 0 (busy: writing "), bounded.stderr)
    }

    /// A user error on the ranks ends the whole job with the rank named, never a hang.
    /// An error every rank meets (the step's shared verdict, a data file every rank reads) is
    /// said once, by rank 0, and the job exits 1 (issue 13: it was once per rank).
    func testErrorOnRanksEndsTheJob() throws {
        let dir = tempDir()
        var args = try writeData(dir)
        args[args.firstIndex(of: "--lr")! + 1] = "1e30"
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/nan"])
        XCTAssertNotEqual(job.status, 0)
        XCTAssertTrue(job.stderr.contains("error: non-finite loss or gradient on rank 0 at step"), job.stderr)
        XCTAssertEqual(job.stderr.split(separator: "\n").filter { $0.contains("error:") }.count, 1, job.stderr)
        var missing = try writeData(dir)
        missing[missing.firstIndex(of: "--train-features")! + 1] = dir + "/missing.npy"
        let both = try mpirun(np: 3, missing + ["--run-dir", dir + "/missing", "--batch-size", "63"])
        XCTAssertEqual(both.status, 1, both.stderr)
        XCTAssertEqual(both.stderr.split(separator: "\n").filter { $0.contains("error:") },
                       ["error: \(dir)/missing.npy: no such file"], both.stderr)
    }

    /// The memory check counts the node's ranks: a model whose buffers fit this machine once but
    /// not twice (an MLP of two hidden layers of W, about 16 W^2 bytes with Adam's moments, sized
    /// to 3/4 of the memory) is refused on 2 ranks of one node before anything is allocated, said
    /// once with both figures; the same model passes the check for one rank.
    func testMemoryCheckCountsTheNodesRanks() throws {
        let physical = Double(ProcessInfo.processInfo.physicalMemory)
        let width = Int((0.75 * physical / 16).squareRoot())
        var args = try writeData(tempDir())
        args[args.firstIndex(of: "--hidden")! + 1] = "\(width),\(width)"
        let dir = tempDir()
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/r"])
        XCTAssertEqual(job.status, 1, job.stderr)
        let errors = job.stderr.split(separator: "\n").filter { $0.contains("error:") }
        XCTAssertEqual(errors.count, 1, job.stderr)
        XCTAssertTrue(errors.first?.contains("for its buffers on each of this node's 2 ranks") == true, job.stderr)
        XCTAssertTrue(errors.first?.contains("fewer ranks per node") == true, job.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r/checkpoints"))
        let model = ModelConfig(inputDim: 16, backbone: .mlp, hidden: [width, width], nbit: 16, classes: 4)
        XCTAssertNoThrow(try checkMemory(model, batch: 32, moments: 2, arcMargin: false, ranksOnNode: 1))
        XCTAssertThrowsError(try checkMemory(model, batch: 32, moments: 2, arcMargin: false, ranksOnNode: 2))
    }

    /// Gradients finite on every rank whose sum overflows (3e38 on each of 2 ranks) are found
    /// before the update; a large sum that stays finite (1e30) is read the same way and the run
    /// goes on.
    func testGradientSumOverflowAcrossRanks() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/spike", "--checkpoint-every", "1"],
                             env: ["ORTHOHASH_TEST_GRADIENT_SPIKE": "14:3e38"])
        XCTAssertNotEqual(job.status, 0)
        XCTAssertTrue(job.stderr.contains("error: the gradients summed over the ranks overflow at step 14"), job.stderr)
        XCTAssertEqual(job.stderr.components(separatedBy: "\n").filter { $0.contains("Stack") || $0.contains("Fatal") }, [])
        // Nothing after the overflow reached the disk: only epoch 1's checkpoint (step 8), and it resumes.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/spike/checkpoints"), ["step-0000000008.ohck"])
        let resumed = try mpirun(np: 2, args + ["--run-dir", dir + "/spike", "--checkpoint-every", "1", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let fine = try mpirun(np: 2, args + ["--run-dir", dir + "/large"], env: ["ORTHOHASH_TEST_GRADIENT_SPIKE": "14:1e30"])
        XCTAssertEqual(fine.status, 0, fine.stderr)
        XCTAssertEqual(try stepLosses(dir + "/large").count, 24)
    }

    /// kill -9 of a rank while training, and of rank 0 while it writes a checkpoint: mpirun exits
    /// non-zero within 30 s, every checkpoint on disk is intact, and --resume finishes the run.
    func testKilledRankThenResume() throws {
        for (name, extra) in [("training", ["ORTHOHASH_TEST_STEP_SLEEP_MS": "60"]),
                              ("checkpoint", ["ORTHOHASH_TEST_STEP_SLEEP_MS": "20", "ORTHOHASH_TEST_CHECKPOINT_PAUSE": "4"])] {
            let dir = tempDir(name)
            let run = dir + "/run"
            let args = try writeData(dir) + ["--checkpoint-every-steps", "4", "--epochs", "6", "--run-dir", run]
            let start = Date()
            let job = try launch(np: 2, args, env: extra)
            // Wait for the first checkpoint (or, in the checkpoint case, for a write in progress).
            let ckdir = run + "/checkpoints"
            var victim: Int32? = nil
            while Date().timeIntervalSince(start) < 60 && victim == nil {
                usleep(100_000)
                let names = (try? FileManager.default.contentsOfDirectory(atPath: ckdir)) ?? []
                let ready = name == "training" ? names.contains { $0.hasPrefix("step-") } : names.contains { $0.contains(".tmp-") }
                guard ready else { continue }
                let ranks = try rankProcesses(run)
                guard ranks.count == 2 else { continue }
                // Training: any rank. Checkpoint: the writer (rank 0), whose pid the temporary file's name carries.
                victim = name == "training" ? ranks.last! : writerProcess(ckdir)
            }
            guard let victim else { job.0.terminate(); return XCTFail("\(name): no checkpoint appeared") }
            kill(victim, SIGKILL)
            let killedAt = Date()
            let result = finish(job)
            XCTAssertNotEqual(result.status, 0, name)
            XCTAssertLessThan(Date().timeIntervalSince(killedAt), 30, "\(name): mpirun exits promptly")
            for file in CheckpointDirectory(runDir: run).stepCheckpoints() {
                XCTAssertNoThrow(try Checkpoint.read(file), "\(name): \(file) is intact")
            }
            let resumed = try mpirun(np: 2, args + ["--resume"])
            XCTAssertEqual(resumed.status, 0, "\(name): \(resumed.stderr)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/summary.json"))
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: ckdir).filter { $0.contains(".tmp-") }
            XCTAssertEqual(leftovers, [], "stale temporary files are cleaned on resume")
        }
    }
}

/// The package's root (for hostfiles/), from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func shell(_ command: String, env: [String: String] = [:]) throws -> Job {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    p.environment = mpiEnvironment(env)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    let start = Date()
    try p.run()
    return finish((p, out, err), started: start)
}

/// `mpirun` from the first of the namespace hosts `prefix`h1... (hostfiles/netns-hosts.sh) over
/// the hosts of `hostfile`: hostfiles/netns-launcher.sh maps host hN to its namespace.
func onNamespaceHosts(prefix: String, hostfile: String, np: Int, mapBy: String, _ runArgs: [String], mca: [String] = []) throws -> Job {
    let settings = stride(from: 0, to: mca.count - 1, by: 2).flatMap { ["--mca", mca[$0], mca[$0 + 1]] }
    let command = ["ip", "netns", "exec", "\(prefix)h1", "mpirun", "--hostfile", hostfile, "-np", String(np)] + settings + [
                   "--map-by", mapBy, "--mca", "plm_rsh_agent", "\(packageRoot)/hostfiles/netns-launcher.sh",
                   "--mca", "plm_rsh_no_tree_spawn", "1", "--mca", "oob_tcp_if_include", "198.51.100.0/24",
                   "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "198.51.100.0/24",
                   "--mca", "mpi_yield_when_idle", "1", "-x", "OPENBLAS_NUM_THREADS", "-x", "NETNS_PREFIX",
                   try binary()] + runArgs
    return try shell("timeout 300 " + command.map { "'\($0)'" }.joined(separator: " "), env: ["NETNS_PREFIX": prefix])
}

/// Namespace hosts for a test, deleted when `body` returns or throws; skipped without root.
func withNamespaceHosts(_ count: Int, _ body: (String) throws -> Void) throws {
    guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
        throw XCTSkip("needs root and iproute2 to make network namespaces")
    }
    let prefix = "ohv\(getpid() % 10000)"
    let up = try shell("\(packageRoot)/hostfiles/netns-hosts.sh up \(count)", env: ["NETNS_PREFIX": prefix])
    defer { _ = try? shell("\(packageRoot)/hostfiles/netns-hosts.sh down", env: ["NETNS_PREFIX": prefix]) }
    XCTAssertEqual(up.status, 0, up.stderr)
    try body(prefix)
}

final class MultiHostTests: XCTestCase {
    /// Three hosts made of network namespaces, over TCP, launched by mpirun with a hostfile and a
    /// launcher in place of ssh: the same result as the same three ranks on one host. Then two
    /// hosts with two ranks each (the hierarchical sum) against four ranks on one host, and two
    /// uneven hosts (one all-reduce) against three ranks on one host.
    func testThreeHostsOverTCP() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
            throw XCTSkip("needs root and iproute2 to make network namespaces")
        }
        let prefix = "oht\(getpid() % 10000)"
        let env = ["NETNS_PREFIX": prefix]
        let up = try shell("\(packageRoot)/hostfiles/netns-hosts.sh up 3", env: env)
        defer { _ = try? shell("\(packageRoot)/hostfiles/netns-hosts.sh down", env: env) }
        XCTAssertEqual(up.status, 0, up.stderr)
        let dir = tempDir()
        var args = try writeData(dir)
        args[args.firstIndex(of: "--batch-size")! + 1] = "96"
        let oneHost = try mpirun(np: 3, args + ["--run-dir", dir + "/onehost"])
        XCTAssertEqual(oneHost.status, 0, oneHost.stderr)
        func onHosts(_ hostfile: String, np: Int, mapBy: String, _ runArgs: [String]) throws -> Job {
            try onNamespaceHosts(prefix: prefix, hostfile: hostfile, np: np, mapBy: mapBy, runArgs)
        }
        let hosts = try onHosts("\(packageRoot)/hostfiles/netns-test", np: 3, mapBy: "node", args + ["--run-dir", dir + "/hosts", "--verify"])
        XCTAssertEqual(hosts.status, 0, hosts.stderr)
        XCTAssertEqual(try stepLosses(dir + "/hosts").count, 15)
        for (a, b) in zip(try stepLosses(dir + "/hosts"), try stepLosses(dir + "/onehost")) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b)) }
        assertClose(try finalParameters(dir + "/hosts"), try finalParameters(dir + "/onehost"), "3 hosts vs 1 host")
        XCTAssertEqual(try summaryMAP(dir + "/hosts"), try summaryMAP(dir + "/onehost"), accuracy: 0.005)

        // Two hosts with two ranks each: shared memory within each host, then MPI_Allreduce of
        // each shard between the hosts. Against four ranks on one host (shared memory only).
        let fourOnOne = try mpirun(np: 4, args + ["--run-dir", dir + "/fourhost1"])
        XCTAssertEqual(fourOnOne.status, 0, fourOnOne.stderr)
        try "h1 slots=2\nh2 slots=2\n".write(toFile: dir + "/hostfile", atomically: true, encoding: .utf8)
        let hierarchical = try onHosts(dir + "/hostfile", np: 4, mapBy: "slot", args + ["--run-dir", dir + "/twobytwo", "--verify"])
        XCTAssertEqual(hierarchical.status, 0, hierarchical.stderr)
        XCTAssertEqual(try gradientReduction(dir + "/twobytwo"), "shared memory within each node (2 ranks), then MPI_Allreduce across 2 nodes")
        for (a, b) in zip(try stepLosses(dir + "/twobytwo"), try stepLosses(dir + "/fourhost1")) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b)) }
        assertClose(try finalParameters(dir + "/twobytwo"), try finalParameters(dir + "/fourhost1"), "2 hosts x 2 ranks vs 4 ranks on 1 host")

        // Uneven hosts (2 + 1 ranks): shards would not line up, so one MPI_Allreduce; against the
        // three ranks on one host above.
        try "h1 slots=2\nh2 slots=1\n".write(toFile: dir + "/uneven", atomically: true, encoding: .utf8)
        let unevenJob = try onHosts(dir + "/uneven", np: 3, mapBy: "slot", args + ["--run-dir", dir + "/uneven-run", "--verify"])
        XCTAssertEqual(unevenJob.status, 0, unevenJob.stderr)
        XCTAssertEqual(try gradientReduction(dir + "/uneven-run"), "MPI_Allreduce")
        assertClose(try finalParameters(dir + "/uneven-run"), try finalParameters(dir + "/onehost"), "2 + 1 ranks on 2 hosts vs 3 ranks on 1 host")
    }
}

/// Pids of the orthohash processes of a run (not mpirun's), found by their command line.
func rankProcesses(_ runDir: String) throws -> [Int32] {
    var out: [Int32] = []
    for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
        guard let pid = Int32(entry),
              let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        let args = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if let first = args.first, first.hasSuffix("/orthohash"), args.contains(runDir) { out.append(pid) }
    }
    return out.sorted()
}

/// A rank's MPI_COMM_WORLD rank, from the environment Open MPI gave it.
func worldRank(of pid: Int32) -> Int? {
    guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
    for entry in environment.split(separator: 0) {
        let text = String(decoding: entry, as: UTF8.self)
        if text.hasPrefix("OMPI_COMM_WORLD_RANK=") { return Int(text.dropFirst("OMPI_COMM_WORLD_RANK=".count)) }
    }
    return nil
}

/// The process writing a checkpoint: temporary files are named `.NAME.tmp-PID`.
func writerProcess(_ directory: String) -> Int32? {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.first { $0.contains(".tmp-") }.flatMap { Int32($0.split(separator: "-").last ?? "") }
}

/// deploy/slurm.sbatch under a real Slurm (one node, started by scripts/slurm-local.sh, which
/// scripts/test.sh runs as root): srun --mpi=pmix with 2 tasks, steps slowed to 100 ms so that
/// the jobs outlast their one-minute limit.
final class SlurmTests: XCTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sbatch"),
              (try? shell("timeout 10 sinfo -h -o %t"))?.stdout.contains(where: { $0.isLetter }) == true else {
            throw XCTSkip("no Slurm running here (as root, scripts/slurm-local.sh up starts a one-node Slurm; scripts/test.sh does)")
        }
    }

    /// Submits the batch script (`script`, a copy of deploy/slurm.sbatch) and returns the job id.
    func submit(_ script: String, dir: String, run: String, trainArgs: [String], options: [String], sleepMs: Int) throws -> String {
        let env = ["ORTHOHASH": try binary(), "RUN": run, "TRAIN_ARGS": trainArgs.joined(separator: " "),
                   "ORTHOHASH_TEST_STEP_SLEEP_MS": String(sleepMs)]
        let exports = env.map { "\($0.key)='\($0.value)'" }.joined(separator: " ")
        let r = try shell("cd '\(dir)' && env \(exports) sbatch --parsable --nodes=1 --ntasks-per-node=2 --export=ALL "
                          + options.joined(separator: " ") + " '\(script)'")
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Waits until job `id` has left the queue for good; a job requeued by the script waits two
    /// minutes before it may start again (Slurm's rule), which `releasing` cuts short.
    func waitForJob(_ id: String, releasing: Bool, timeout: Double) throws {
        let start = Date()
        // The job's own record (scontrol), not squeue's listing: while the script requeues the
        // job, squeue can list nothing for a moment, which read as "finished" and ended the wait
        // before the requeued job ran (a CI run saw it). Finished: a final state, or no record.
        let final = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"]
        while Date().timeIntervalSince(start) < timeout {
            let record = try shell("scontrol show job \(id) -o 2>/dev/null").stdout
            let fields = Dictionary(record.split(separator: " ").compactMap { field -> (String, String)? in
                let parts = field.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            }, uniquingKeysWith: { first, _ in first })
            guard let state = fields["JobState"] else { return }
            if final.contains(state) { return }
            if releasing && fields["Reason"] == "BeginTime" { _ = try shell("scontrol update JobId=\(id) StartTime=now") }
            sleep(2)
        }
        _ = try shell("scancel \(id)")
        XCTFail("job \(id) still in the queue after \(Int(timeout)) s")
    }

    func trainArgs(_ dir: String, epochs: Int) throws -> [String] {
        Array(try writeData(dir).dropFirst()) + ["--epochs", String(epochs)]
    }

    /// deploy/scaling.sbatch on the one-node Slurm: the harness takes its hosts from the
    /// allocation (1 rank, 1 rank x 2 threads bound to 2 cores, 2 ranks), and writes the report.
    func testScalingInsideAnAllocation() throws {
        let dir = tempDir()
        let env = ["BIN": try binary(), "WORKLOADS": "fmnist", "MODES": "strong", "REPS": "1", "STEPS": "8", "TTT_EPOCHS": "1",
                   "TARGET_MAP": "0.3", "OUT": dir + "/out", "LINK": "test"]
        let exports = env.map { "\($0.key)='\($0.value)'" }.joined(separator: " ")
        let r = try shell("cd '\(packageRoot)' && env \(exports) sbatch --parsable --nodes=1 --export=ALL --output='\(dir)/job.out' deploy/scaling.sbatch")
        XCTAssertEqual(r.status, 0, r.stderr)
        try waitForJob(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), releasing: false, timeout: 400)
        let log = (try? String(contentsOfFile: dir + "/job.out", encoding: .utf8)) ?? ""
        let csv = try String(contentsOfFile: dir + "/out/scaling.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        let header = csv[0]
        func col(_ name: String) -> Int { header.firstIndex(of: name)! }
        XCTAssertEqual(csv.dropFirst().map { "\($0[col("ranks")])x\($0[col("threads")]) \($0[col("hosts")]) \($0[col("link")])" },
                       ["1x1 cluster test", "1x2 cluster test", "2x1 cluster test"], log)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/model.png"), log)
    }

    /// A job that reaches its time limit (SIGTERM to every task and to the script, SIGKILL 30 s
    /// later) leaves a checkpoint of the step it was signalled at, and the script requeues it;
    /// the requeued job resumes it and ends byte-identical to an uninterrupted run.
    func testTimeLimitLeavesACheckpointThatResumes() throws {
        let dir = tempDir()
        let args = try trainArgs(dir, epochs: 150)                   // 1,200 steps: two minutes at 100 ms
        let reference = try mpirun(np: 2, ["train"] + args + ["--run-dir", dir + "/reference"])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        // The script without the early signal: the time limit's SIGTERM is all the job gets.
        let plain = dir + "/nosignal.sbatch"
        let script = try String(contentsOfFile: packageRoot + "/deploy/slurm.sbatch", encoding: .utf8)
        try script.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("#SBATCH --signal") }
            .joined(separator: "\n").write(toFile: plain, atomically: true, encoding: .utf8)
        let run = dir + "/run"
        let job = try submit(plain, dir: dir, run: run, trainArgs: args, options: ["--time=00:01:00"], sleepMs: 100)
        try waitForJob(job, releasing: true, timeout: 420)
        let log = (try? String(contentsOfFile: dir + "/orthohash-\(job).out", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("DUE TO TIME LIMIT"), log)
        XCTAssertTrue(log.contains("stopped by SIGTERM after step "), log)
        XCTAssertTrue(log.contains("interrupted with a checkpoint; requeued to continue"), log)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/summary.json"), log)
        // Every step's loss once, in order: the requeued job started right after the signalled step.
        XCTAssertEqual(try stepLosses(run), try stepLosses(dir + "/reference"))
        XCTAssertEqual(try finalParameters(run), try finalParameters(dir + "/reference"), "byte-identical")
        XCTAssertEqual(try gradientReduction(run), "shared memory within each node (2 ranks)")
    }

    /// The script's own early signal (--signal=USR1@20 here) stops the ranks with a checkpoint
    /// and exit status 75, on which the script requeues the job; the requeued job resumes, and
    /// the run ends byte-identical to an uninterrupted one.
    func testEarlySignalRequeuesAndResumes() throws {
        let dir = tempDir()
        let args = try trainArgs(dir, epochs: 50)                    // 400 steps: 40 s at 100 ms
        let reference = try mpirun(np: 2, ["train"] + args + ["--run-dir", dir + "/reference"])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let run = dir + "/run"
        let job = try submit(packageRoot + "/deploy/slurm.sbatch", dir: dir, run: run, trainArgs: args,
                             options: ["--time=00:01:00", "--signal=USR1@20"], sleepMs: 100)
        try waitForJob(job, releasing: true, timeout: 360)
        let log = (try? String(contentsOfFile: dir + "/orthohash-\(job).out", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("stopped by SIGUSR1 after step "), log)
        XCTAssertTrue(log.contains("interrupted with a checkpoint; requeued to continue"), log)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/summary.json"), log)
        XCTAssertEqual(try stepLosses(run), try stepLosses(dir + "/reference"))
        XCTAssertEqual(try finalParameters(run), try finalParameters(dir + "/reference"), "byte-identical")
    }
}
