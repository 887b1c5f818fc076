// The scaling experiment's parts over real Open MPI: the timeline (a Chrome trace every rank
// writes into), the all-reduce sweep, and deploy/scaling.sh end to end on a tiny grid.

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashMPI
import OrthoHashTraining
import TestSupport

/// A trace's events after checking that it is what chrome://tracing and Perfetto read: a JSON
/// object whose `traceEvents` are metadata ("M") or complete ("X") events with a name, a pid,
/// and for "X" a tid, a start and a duration in microseconds, and whose spans on one track (pid
/// and tid) nest (a span that starts inside another ends inside it), as complete events on one
/// thread must.
func validTrace(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
    let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
    let events = try XCTUnwrap(object?["traceEvents"] as? [[String: Any]], "no traceEvents array", file: file, line: line)
    var tracks: [String: [(Double, Double, String)]] = [:]
    for e in events {
        let ph = try XCTUnwrap(e["ph"] as? String, file: file, line: line)
        XCTAssertNotNil(e["name"] as? String, "\(e)", file: file, line: line)
        let pid = try XCTUnwrap(e["pid"] as? Int, "\(e)", file: file, line: line)
        XCTAssertTrue(ph == "X" || ph == "M", ph, file: file, line: line)
        guard ph == "X" else { continue }
        let tid = try XCTUnwrap(e["tid"] as? Int, file: file, line: line)
        let ts = try XCTUnwrap(e["ts"] as? Double, file: file, line: line), dur = try XCTUnwrap(e["dur"] as? Double, file: file, line: line)
        XCTAssertGreaterThanOrEqual(ts, 0, file: file, line: line)
        XCTAssertGreaterThanOrEqual(dur, 0, file: file, line: line)
        tracks["rank \(pid), thread \(tid)", default: []].append((ts, ts + dur, e["name"] as! String))
    }
    for (track, spans) in tracks {
        // Sorted by start, longest first; every span must end before the enclosing one does.
        var open: [(Double, Double, String)] = []
        for s in spans.sorted(by: { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 > $1.1 }) {
            while let top = open.last, top.1 <= s.0 { open.removeLast() }
            if let top = open.last {
                // Printed microseconds are rounded to the nanosecond: allow that much.
                XCTAssertLessThanOrEqual(s.1, top.1 + 0.002, "\(track): '\(s.2)' overlaps '\(top.2)' without nesting", file: file, line: line)
            }
            open.append(s)
        }
    }
    return events
}

final class TimelineTests: XCTestCase {
    /// Two ranks train 3 epochs of 8 steps with --timeline: one track per rank, named by host;
    /// per step the phases in order, BatchNorm's sync within the forward pass, the gradient sum
    /// with its size; the checkpoints and evaluations; and the run's result unchanged by it.
    func testTwoRanksWriteOneTrace() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let trace = dir + "/trace.json"
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/run", "--timeline", trace])
        XCTAssertEqual(job.status, 0, job.stderr)
        let plain = try mpirun(np: 2, args + ["--run-dir", dir + "/plain"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(try stepLosses(dir + "/run"), try stepLosses(dir + "/plain"), "the timeline changes nothing but time")
        let events = try validTrace(trace)
        let names = events.filter { $0["name"] as? String == "process_name" }
        XCTAssertEqual(Set(names.compactMap { $0["pid"] as? Int }), [0, 1])
        for e in names { XCTAssertTrue(((e["args"] as? [String: Any])?["name"] as? String ?? "").hasPrefix("rank ")) }
        let spans = events.filter { $0["ph"] as? String == "X" }
        let parameters = try Checkpoint.read(CheckpointDirectory(runDir: dir + "/run").stepCheckpoints()[0]).parameters.count
        for rank in 0..<2 {
            let mine = spans.filter { $0["pid"] as? Int == rank }
            func named(_ n: String) -> [[String: Any]] { mine.filter { $0["name"] as? String == n } }
            for phase in ["data gather", "forward", "backward", "waiting for the slowest rank", "gradient sum", "step control word", "update", "parameter gather"] {
                XCTAssertEqual(named(phase).count, 24, "rank \(rank): \(phase)")
            }
            XCTAssertEqual(named("BatchNorm sync").count, 24 * 3, "rank \(rank): the hash layer's BatchNorm, three sums per step")
            XCTAssertFalse(named("checkpoint").isEmpty)
            XCTAssertEqual(named("evaluation").count, 1)
            for sum in named("gradient sum") { XCTAssertEqual((sum["args"] as? [String: Any])?["bytes"] as? Int, 4 * parameters) }
            // Step 5's phases, in order, and BatchNorm's sums inside its forward pass.
            let five = mine.filter { ($0["args"] as? [String: Any])?["step"] as? Int == 5 }
            func start(_ n: String) -> Double { five.first { $0["name"] as? String == n }!["ts"] as! Double }
            let order = ["data gather", "forward", "backward", "waiting for the slowest rank", "gradient sum", "step control word", "update", "parameter gather"].map(start)
            XCTAssertEqual(order, order.sorted())
            let forward = five.first { $0["name"] as? String == "forward" }!
            let f0 = forward["ts"] as! Double, f1 = f0 + (forward["dur"] as! Double)
            let inForward = five.filter { $0["name"] as? String == "BatchNorm sync" && ($0["ts"] as! Double) < f1 }
            XCTAssertEqual(inForward.count, 2, "the mean and the variance in the forward pass")
            for s in inForward { XCTAssertGreaterThanOrEqual(s["ts"] as! Double, f0) }
        }
    }

    /// A run interrupted by a signal to rank 1 writes its trace too: every rank stops after the same step.
    func testInterruptedRunWritesItsTrace() throws {
        let dir = tempDir()
        let args = try writeData(dir)
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/run", "--timeline", dir + "/t.json"], env: ["ORTHOHASH_TEST_SIGNAL": "5:TERM:1"])
        XCTAssertEqual(job.status, 75, job.stderr)
        let spans = try validTrace(dir + "/t.json").filter { $0["name"] as? String == "update" }
        XCTAssertEqual(spans.count, 10, "5 steps on each of 2 ranks")
    }
}

final class AllReduceSweepTests: XCTestCase {
    /// `bench --allreduce` over 2 ranks: both paths (Open MPI's all-reduce and the shared
    /// window), every size from 4 B to the maximum, positive times, one CSV row each.
    func testSweepWritesBothPaths() throws {
        let dir = tempDir()
        let job = try mpirun(np: 2, ["bench", "--allreduce", "--allreduce-max", "4096", "--csv", dir + "/s.csv", "--label", "link=shm"])
        XCTAssertEqual(job.status, 0, job.stderr)
        let rows = try String(contentsOfFile: dir + "/s.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").map(String.init) }
        XCTAssertEqual(rows[0], ["link", "path", "nodes", "ranks", "bytes", "seconds", "repeats"])
        XCTAssertEqual(rows.count, 1 + 2 * 6)
        for path in ["mpi", "shared"] {
            let mine = rows.dropFirst().filter { $0[1] == path }
            XCTAssertEqual(mine.map { Int($0[4])! }, [4, 16, 64, 256, 1024, 4096])
            for r in mine { XCTAssertGreaterThan(Double(r[5])!, 0); XCTAssertEqual(r[3], "2"); XCTAssertEqual(r[0], "shm") }
        }
    }

    /// One process has nothing to sum with: a one-line error, not a hang.
    func testSweepNeedsTwoRanks() throws {
        let job = try mpirun(np: 0, ["bench", "--allreduce"])
        XCTAssertEqual(job.status, 1)
        XCTAssertTrue(job.stderr.hasPrefix("error: bench --allreduce needs at least 2 ranks"), job.stderr)
        XCTAssertEqual(job.stderr.split(separator: "\n").count, 1, job.stderr)
    }
}

final class ScalingHarnessTests: XCTestCase {
    /// deploy/scaling.sh on a tiny grid (Fashion-MNIST, strong scaling, one repetition, a 10 Gb/s
    /// link between two namespace hosts, one epoch to a low target): every file of the report,
    /// efficiency 1 at one rank, a model step time for every point, PNG plots.
    func testTinyGridEndToEnd() throws {
        guard getuid() == 0 else { throw XCTSkip("the harness's namespace hosts and its apt packages need root") }
        let dir = tempDir()
        let job = try shell("\(packageRoot)/deploy/scaling.sh --out \(dir)/out", env: [
            "BIN": try binary(), "WORKLOADS": "fmnist", "MODES": "strong", "REPS": "1", "STEPS": "8", "LINKS": "10",
            "TTT_EPOCHS": "1", "TARGET_MAP": "0.3"])
        XCTAssertEqual(job.status, 0, job.stderr + job.stdout)
        for f in ["runs.csv", "scaling.csv", "compute.csv", "allreduce.csv", "time_to_target.csv", "model.json", "predictions.csv", "summary.md"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/out/\(f)"), f)
        }
        for png in ["throughput", "efficiency", "step_split", "model", "allreduce", "time_to_target"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/out/\(png).png"))
            XCTAssertEqual(Array(data.prefix(4)), [0x89, 0x50, 0x4e, 0x47], png)
        }
        let text = try String(contentsOfFile: dir + "/out/scaling.csv", encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = lines[0]
        func col(_ name: String) -> Int { header.firstIndex(of: name)! }
        // 1 x 1 (also with 2 threads), 1 x 2 on one host, 2 x 1 and 2 x 2 over the 10 Gb/s link,
        // the latter two also with overlap and with bfloat16 sums.
        XCTAssertEqual(lines.count, 10)
        XCTAssertEqual(lines.dropFirst().filter { $0[col("variant")] == "2threads" }.map { $0[col("threads")] }, ["2"])
        XCTAssertEqual(lines.dropFirst().filter { $0[col("variant")] == "overlap" }.map { $0[col("overlap")] }, ["yes", "yes"])
        XCTAssertEqual(lines.dropFirst().filter { $0[col("variant")] == "bf16" }.map { $0[col("gradient_precision")] }, ["bf16", "bf16"])
        XCTAssertEqual(lines.dropFirst().filter { $0[col("variant")] == "default" }.map { $0[col("overlap")] }, ["no", "no", "no", "no"])
        for r in lines.dropFirst() {
            XCTAssertEqual(r[col("link")] == "10", r[col("nodes")] == "2")
            if r[col("threads")] == "1" { XCTAssertGreaterThan(Double(r[col("model_ms")])!, 0) }
            XCTAssertGreaterThan(Double(r[col("samples_per_s")])!, 0)
            if r[col("ranks")] == "1" && r[col("threads")] == "1" { XCTAssertEqual(Double(r[col("efficiency")])!, 1, accuracy: 1e-9) }
            XCTAssertEqual(r[col("shares_cores")], Int(r[col("ranks")])! > ProcessInfo.processInfo.activeProcessorCount ? "yes" : "no")
        }
        let ttt = try String(contentsOfFile: dir + "/out/time_to_target.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(ttt.count, 4, "header and 3 configurations")
        let model = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/out/model.json"))) as! [String: Any]
        XCTAssertNotNil((model["tcp"] as? [String: Any])?["10"])
    }
}

final class OverlapTests: XCTestCase {
    /// Gradient buckets summed behind the backward pass (--gradient-overlap on) against one sum
    /// after it (off, the default): on the node's shared-memory path each element is added in the
    /// same order, so the losses and the parameters are the same bits; --verify checks after
    /// every step that the ranks hold the same parameters. 2 and 3 ranks (3 shards of 3 buckets,
    /// most buckets split between shards), with a bucket per layer (`--gradient-bucket-mb 0`),
    /// with buckets of 0.002 MB (524 floats: the hash layer's 416 merged with the next layer's 792
    /// and split into 3, the first layer's 544 into 2), and with 25 MB (all merged into
    /// one bucket at the pass's end).
    func testOverlapIsBitwiseOnSharedMemory() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--hidden", "32,24", "--verify"]
        for np in [2, 3] {
            var batch = args
            batch[batch.firstIndex(of: "--batch-size")! + 1] = np == 3 ? "96" : "64"
            let off = try mpirun(np: np, batch + ["--run-dir", dir + "/off\(np)", "--gradient-overlap", "off"])
            XCTAssertEqual(off.status, 0, off.stderr)
            for mb in ["0", "0.002", "25"] {
                let run = dir + "/on\(np)-\(mb)"
                let on = try mpirun(np: np, batch + ["--run-dir", run, "--gradient-overlap", "on", "--gradient-bucket-mb", mb,
                                                     "--timeline", run + ".json"])
                XCTAssertEqual(on.status, 0, on.stderr)
                XCTAssertEqual(try gradientReduction(run), "shared memory within each node (\(np) ranks)")
                XCTAssertEqual(try stepLosses(run), try stepLosses(dir + "/off\(np)"), "\(np) ranks, \(mb) MB buckets")
                XCTAssertEqual(try finalParameters(run), try finalParameters(dir + "/off\(np)"), "\(np) ranks, \(mb) MB buckets")
                // Rank 0's buckets per step: the 3 layers'; 3 + 2 pieces; one.
                let buckets = try validTrace(run + ".json").filter { $0["name"] as? String == "gradient bucket sum" && $0["pid"] as? Int == 0 }
                let steps = try stepLosses(run).count
                XCTAssertEqual(buckets.count, steps * ["0": 3, "0.002": 5, "25": 1][mb]!, "\(np) ranks, \(mb) MB buckets")
            }
        }
    }

    /// Without the shared window (ORTHOHASH_SHARED_MEMORY_REDUCE=0: MPI_Allreduce of each bucket
    /// instead of the whole buffer): with 2 ranks a + b is the same bits in any order; with 3,
    /// Open MPI may add in another order for smaller messages, so the tolerance of 3 ranks
    /// against one (MPITests' header) applies. --verify: the ranks agree bitwise after every step.
    func testOverlapOverMPIAllreduce() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--hidden", "32,24", "--verify"]
        let env = ["ORTHOHASH_SHARED_MEMORY_REDUCE": "0"]
        for np in [2, 3] {
            var batch = args
            batch[batch.firstIndex(of: "--batch-size")! + 1] = np == 3 ? "96" : "64"
            let on = try mpirun(np: np, batch + ["--run-dir", dir + "/on\(np)", "--gradient-overlap", "on"], env: env)
            XCTAssertEqual(on.status, 0, on.stderr)
            let off = try mpirun(np: np, batch + ["--run-dir", dir + "/off\(np)", "--gradient-overlap", "off"], env: env)
            XCTAssertEqual(off.status, 0, off.stderr)
            XCTAssertEqual(try gradientReduction(dir + "/on\(np)"), "MPI_Allreduce")
            if np == 2 {
                XCTAssertEqual(try finalParameters(dir + "/on2"), try finalParameters(dir + "/off2"))
                // Layers split and merged into buckets of 0.002 MB: a + b still.
                let split = try mpirun(np: np, batch + ["--run-dir", dir + "/split2", "--gradient-overlap", "on", "--gradient-bucket-mb", "0.002"], env: env)
                XCTAssertEqual(split.status, 0, split.stderr)
                XCTAssertEqual(try finalParameters(dir + "/split2"), try finalParameters(dir + "/off2"))
            } else {
                for (a, b) in zip(try stepLosses(dir + "/on3"), try stepLosses(dir + "/off3")) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b)) }
                assertClose(try finalParameters(dir + "/on3"), try finalParameters(dir + "/off3"), "3 ranks, buckets vs one sum")
            }
        }
    }

    /// Across namespace hosts over TCP. Two hosts with two ranks each (the window in each node,
    /// then each bucket's part of a shard between the 2 nodes: a + b) give the same bits as one
    /// sum after the backward pass; three hosts with one rank each (MPI_Allreduce of each bucket
    /// over 3 ranks) agree within the tolerance of MPITests' header. --verify throughout.
    func testOverlapAcrossHosts() throws {
        try withNamespaceHosts(3) { prefix in
            let dir = tempDir()
            var args = try writeData(dir) + ["--hidden", "32,24", "--verify"]
            args[args.firstIndex(of: "--batch-size")! + 1] = "96"
            try "h1 slots=2\nh2 slots=2\n".write(toFile: dir + "/two", atomically: true, encoding: .utf8)
            var four = args
            four[four.firstIndex(of: "--batch-size")! + 1] = "64"
            let on = try onNamespaceHosts(prefix: prefix, hostfile: dir + "/two", np: 4, mapBy: "slot", four + ["--run-dir", dir + "/on4", "--gradient-overlap", "on", "--timeline", dir + "/on4.json"])
            XCTAssertEqual(on.status, 0, on.stderr)
            XCTAssertFalse(try validTrace(dir + "/on4.json").filter { $0["name"] as? String == "gradient bucket sum" }.isEmpty)
            let off = try onNamespaceHosts(prefix: prefix, hostfile: dir + "/two", np: 4, mapBy: "slot",
                                           four + ["--run-dir", dir + "/off4", "--gradient-overlap", "off"])
            XCTAssertEqual(off.status, 0, off.stderr)
            XCTAssertEqual(try gradientReduction(dir + "/on4"), "shared memory within each node (2 ranks), then MPI_Allreduce across 2 nodes")
            XCTAssertEqual(try finalParameters(dir + "/on4"), try finalParameters(dir + "/off4"))
            let on3 = try onNamespaceHosts(prefix: prefix, hostfile: "\(packageRoot)/hostfiles/netns-test", np: 3, mapBy: "node", args + ["--run-dir", dir + "/on3", "--gradient-overlap", "on"])
            XCTAssertEqual(on3.status, 0, on3.stderr)
            let off3 = try onNamespaceHosts(prefix: prefix, hostfile: "\(packageRoot)/hostfiles/netns-test", np: 3, mapBy: "node",
                                            args + ["--run-dir", dir + "/off3", "--gradient-overlap", "off"])
            XCTAssertEqual(off3.status, 0, off3.stderr)
            for (a, b) in zip(try stepLosses(dir + "/on3"), try stepLosses(dir + "/off3")) { XCTAssertEqual(a, b, accuracy: 1e-4 * abs(b)) }
            assertClose(try finalParameters(dir + "/on3"), try finalParameters(dir + "/off3"), "3 hosts, buckets vs one sum")
            // The default (auto): on for AlexNet across hosts, off for the MLP; the log says so.
            let alexnet = ["train", "--dataset", "generated", "--backbone", "alexnet", "--image-size", "63", "--train-limit", "32",
                           "--query-limit", "8", "--classes", "4", "--nbit", "16", "--batch-size", "16", "--epochs", "1",
                           "--checkpoint-every", "0", "--threads", "1", "--run-dir", dir + "/auto-alexnet", "--timeline", dir + "/auto.json"]
            let auto = try onNamespaceHosts(prefix: prefix, hostfile: "\(packageRoot)/hostfiles/netns-test", np: 2, mapBy: "node", alexnet)
            XCTAssertEqual(auto.status, 0, auto.stderr)
            XCTAssertTrue(auto.stdout.contains("during the backward pass in buckets of 4.0 MB (--gradient-overlap auto: on for alexnet on 2 nodes)"), auto.stdout)
            XCTAssertTrue(auto.stdout.contains("Open MPI's TCP transport sends messages of up to 4.06 MB without a rendezvous"), auto.stdout)
            XCTAssertFalse(try validTrace(dir + "/auto.json").filter { $0["name"] as? String == "gradient bucket sum" }.isEmpty)
            var mlp = args.filter { $0 != "--quiet" }
            mlp[mlp.firstIndex(of: "--epochs")! + 1] = "1"
            // A job's own setting of the eager limit wins over the shim's.
            let autoOff = try onNamespaceHosts(prefix: prefix, hostfile: "\(packageRoot)/hostfiles/netns-test", np: 2, mapBy: "node",
                                               mlp + ["--run-dir", dir + "/auto-mlp"], mca: ["btl_tcp_eager_limit", "65536"])
            XCTAssertEqual(autoOff.status, 0, autoOff.stderr)
            XCTAssertTrue(autoOff.stdout.contains("Open MPI's TCP transport sends messages of up to 0.06 MB without a rendezvous"), autoOff.stdout)
            XCTAssertTrue(autoOff.stdout.contains("after the backward pass (--gradient-overlap auto: off for mlp on 2 nodes)"), autoOff.stdout)
        }
    }

    /// A rank that stops at the end of its backward pass while the others' background workers
    /// wait in the buckets' sums: the others' watchdog (watching their wait for the worker)
    /// aborts the job at the timeout, naming it. Not a hang.
    func testAHungPeerDuringTheBucketsIsNamed() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--hidden", "32,24", "--gradient-overlap", "on", "--collective-timeout", "3"]
        let job = try mpirun(np: 3, args + ["--batch-size", "96", "--run-dir", dir + "/hang"],
                             env: ["ORTHOHASH_TEST_HANG_RANK": "1", "ORTHOHASH_TEST_HANG_STEP": "4", "ORTHOHASH_TEST_HANG_AT": "backward"])
        assertWatchdogAborted(job, naming: 1, atStep: 4)
    }

    /// With overlap, the injected gradient (tests' fault) lands in the last bucket before that
    /// bucket is summed: its overflow across the ranks is caught at the same step as without.
    func testOverflowCaughtWithOverlap() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--gradient-overlap", "on"]
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/spike"], env: ["ORTHOHASH_TEST_GRADIENT_SPIKE": "14:3e38"])
        XCTAssertNotEqual(job.status, 0)
        XCTAssertTrue(job.stderr.contains("error: the gradients summed over the ranks overflow at step 14"), job.stderr)
    }

    /// The timeline shows the buckets on the rank's second track, in the backward's order (hash
    /// layer first: the highest offsets), their bytes adding up to the gradients': one per layer
    /// (`--gradient-bucket-mb 0`), or layers merged and split into buckets of at most 0.002 MB.
    func testTimelineShowsTheBuckets() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--hidden", "32,24"]
        // 16 features -> 32 -> 24 -> 16 bits: hash (24 x 16 + 2 x 16 = 416), fc1 (24 x 33 = 792),
        // fc0 (32 x 17 = 544). Buckets of 524 floats: hash + fc1 (1,208) in 3, fc0 in 2.
        for (mb, expected) in [("0", [416, 792, 544]), ("0.002", [403, 403, 402, 272, 272])] {
        let job = try mpirun(np: 2, args + ["--run-dir", dir + "/run" + mb, "--timeline", dir + "/t\(mb).json", "--gradient-overlap", "on",
                                            "--gradient-bucket-mb", mb])
        XCTAssertEqual(job.status, 0, job.stderr)
        let events = try validTrace(dir + "/t\(mb).json")
        let parameters = try finalParameters(dir + "/run" + mb).count
        for rank in 0..<2 {
            let buckets = events.filter { $0["name"] as? String == "gradient bucket sum" && $0["pid"] as? Int == rank }
            XCTAssertEqual(buckets.count, 24 * expected.count, "\(expected.count) buckets per step")
            for b in buckets { XCTAssertEqual(b["tid"] as? Int, 1) }
            let five = buckets.filter { ($0["args"] as? [String: Any])?["step"] as? Int == 5 }
            let bytes = five.map { ($0["args"] as! [String: Any])["bytes"] as! Int }
            XCTAssertEqual(bytes.reduce(0, +), 4 * parameters)
            XCTAssertEqual(bytes, expected.map { 4 * $0 })
            let starts = five.map { $0["ts"] as! Double }
            XCTAssertEqual(starts, starts.sorted())
        }
        }
    }

    /// The policy alone: ranges handed over from the top down, merged until a bucket reaches
    /// the size, larger ones split into near-equal pieces from the top down, the pass's last range
    /// (from element 0) closing the last bucket; together the buckets cover the buffer once.
    func testBucketsMergeAndSplit() {
        func buckets(_ ranges: [Range<Int>], floats: Int) -> [Range<Int>] {
            var policy = GradientBuckets(bytes: 4 * floats), out: [Range<Int>] = []
            for r in ranges { policy.add(r) { out.append($0) } }
            policy.flush { out.append($0) }
            return out
        }
        let layers = [1000..<1010, 900..<1000, 100..<900, 90..<100, 0..<90]
        XCTAssertEqual(buckets(layers, floats: 0), layers, "0: one per range")
        XCTAssertEqual(buckets(layers, floats: 100), [955..<1010, 900..<955] + stride(from: 800, through: 100, by: -100).map { $0..<($0 + 100) } + [0..<100])
        XCTAssertEqual(buckets(layers, floats: 2000), [0..<1010], "all merged, closed by the range from 0")
        // A range that does not continue the pending one closes it first.
        XCTAssertEqual(buckets([50..<60, 10..<20, 0..<10], floats: 100), [50..<60, 0..<20])
        for floats in [1, 7, 64, 333] {
            let b = buckets(layers, floats: floats)
            XCTAssertEqual(b.map(\.count).reduce(0, +), 1010)
            XCTAssertTrue(b.allSatisfy { $0.count <= floats }, "\(floats)")
            XCTAssertEqual(b.first?.upperBound, 1010)
            XCTAssertEqual(zip(b, b.dropFirst()).allSatisfy { $0.0.lowerBound == $0.1.upperBound }, true)
            XCTAssertLessThanOrEqual(b.count, GradientBuckets(bytes: 4 * floats).maximumBuckets(count: 1010, ranges: layers.count))
        }
    }
}

final class ReducedPrecisionTests: XCTestCase {
    /// --gradient-sum bf16 over MPI_Allreduce (one rank per "node" here, as with
    /// ORTHOHASH_SHARED_MEMORY_REDUCE=0): the ranks stay bitwise identical (--verify), the
    /// parameters differ from float32 sums (the path ran), by less than bfloat16's rounding can
    /// explain over 24 Adam steps (relative 2^-8 per sum; Adam divides most of it out), and the
    /// mAP is within 0.05. Within a node the window's sums stay float32: the same bits as without it.
    func testBF16Sums() throws {
        let dir = tempDir()
        let args = try writeData(dir) + ["--hidden", "32,24", "--verify"]
        let env = ["ORTHOHASH_SHARED_MEMORY_REDUCE": "0"]
        let f32 = try mpirun(np: 2, args + ["--run-dir", dir + "/f32"], env: env)
        XCTAssertEqual(f32.status, 0, f32.stderr)
        let bf16 = try mpirun(np: 2, args + ["--run-dir", dir + "/bf16", "--gradient-sum", "bf16"], env: env)
        XCTAssertEqual(bf16.status, 0, bf16.stderr)
        XCTAssertEqual(try gradientReduction(dir + "/bf16"), "MPI_Allreduce in bfloat16")
        let a = try finalParameters(dir + "/bf16"), b = try finalParameters(dir + "/f32")
        XCTAssertNotEqual(a, b)
        let scale = b.map { abs($0) }.max()!
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()! / scale, 0.05)
        XCTAssertEqual(try summaryMAP(dir + "/bf16"), try summaryMAP(dir + "/f32"), accuracy: 0.05)
        for (x, y) in zip(try stepLosses(dir + "/bf16"), try stepLosses(dir + "/f32")) { XCTAssertEqual(x, y, accuracy: 0.02 * abs(y)) }

        let window = try mpirun(np: 2, args + ["--run-dir", dir + "/w16", "--gradient-sum", "bf16"])
        XCTAssertEqual(window.status, 0, window.stderr)
        let window32 = try mpirun(np: 2, args + ["--run-dir", dir + "/w32"])
        XCTAssertEqual(window32.status, 0, window32.stderr)
        XCTAssertEqual(try finalParameters(dir + "/w16"), try finalParameters(dir + "/w32"), "no network stage within one node")
    }
}
