// Where one rank's time goes: spans of a step's phases (data, forward, backward, waiting, the
// gradient sum, BatchNorm's sync, the update) and of checkpoints and evaluations. Training always
// keeps the per-phase totals (`bench` prints them as the step's split; two clock reads a span);
// with `--timeline FILE` it also keeps the spans, and rank 0 writes every rank's as one Chrome
// trace (one track per rank), which Perfetto and chrome://tracing open.

import Foundation
import OrthoHashFormats

public final class Timeline {
    public enum Phase: UInt8, CaseIterable, Sendable {
        case data, forward, backward, wait, gradientSum, control, bnSync, update, parameterGather, checkpoint, evaluation
        /// One bucket's sum by the background worker (overlap), on its own track.
        case bucketSum

        /// The span's name in the trace.
        public var name: String {
            switch self {
            case .data: "data gather"
            case .forward: "forward"
            case .backward: "backward"
            case .wait: "waiting for the slowest rank"
            case .gradientSum: "gradient sum"
            case .control: "step control word"
            case .bnSync: "BatchNorm sync"
            case .update: "update"
            case .parameterGather: "parameter gather"
            case .checkpoint: "checkpoint"
            case .evaluation: "evaluation"
            case .bucketSum: "gradient bucket sum"
            }
        }
    }

    /// One span: what, when (ns on this rank's monotonic clock), how long, and the global step.
    struct Span { var phase: Phase; var start: UInt64; var duration: UInt64; var step: Int32; var bytes: Int64; var track: UInt8 }

    /// Keep the spans (a trace is wanted), not only the totals.
    public var recording: Bool
    /// At most this many spans are kept (about 40 bytes each); later ones are counted, not kept.
    public let capacity: Int
    private var spans: [Span] = []
    public private(set) var dropped = 0
    /// Nanoseconds per phase since the last `resetTotals`, and how many spans.
    private var totals = [UInt64](repeating: 0, count: Phase.allCases.count)
    private var counts = [Int](repeating: 0, count: Phase.allCases.count)
    /// The step later spans belong to.
    public var step = 0
    /// This rank's clock reading when the ranks last met (`align`): the trace's zero.
    private var origin: UInt64 = 0

    public init(recording: Bool, capacity: Int = 2_000_000) {
        self.recording = recording
        self.capacity = capacity
        origin = Timeline.now()
    }

    /// CLOCK_MONOTONIC in nanoseconds: the clock the C shim's worker stamps its buckets with.
    @inline(__always) public static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }

    /// A span of `phase` from `start` to now; `bytes`: what a collective moved, for the trace.
    @inline(__always) public func end(_ phase: Phase, since start: UInt64, bytes: Int = 0) {
        add(phase, start: start, end: Timeline.now(), bytes: bytes)
    }

    /// A span measured elsewhere (the background worker's buckets: `track` 1).
    @inline(__always) public func add(_ phase: Phase, start: UInt64, end: UInt64, bytes: Int = 0, track: UInt8 = 0) {
        let i = Int(phase.rawValue)
        let duration = end >= start ? end - start : 0
        totals[i] &+= duration
        counts[i] += 1
        guard recording else { return }
        if spans.count < capacity {
            spans.append(Span(phase: phase, start: start, duration: duration, step: Int32(truncatingIfNeeded: step), bytes: Int64(bytes), track: track))
        } else {
            dropped += 1
        }
    }

    /// Times `body` as a span of `phase`.
    @inline(__always) public func measure<T>(_ phase: Phase, bytes: Int = 0, _ body: () throws -> T) rethrows -> T {
        let start = Timeline.now()
        defer { end(phase, since: start, bytes: bytes) }
        return try body()
    }

    /// Seconds in `phase` since the last reset.
    public func seconds(_ phase: Phase) -> Double { Double(totals[Int(phase.rawValue)]) / 1e9 }
    public func count(_ phase: Phase) -> Int { counts[Int(phase.rawValue)] }
    public func resetTotals() {
        for i in totals.indices { totals[i] = 0; counts[i] = 0 }
    }

    /// Called by every rank just after a collective they all left at about the same moment:
    /// the trace's time zero, so the ranks' tracks line up (to within a collective's latency).
    public func align() { origin = Timeline.now() }

    /// This rank's spans since `align`, packed for `allGather`: 30 bytes each.
    func packed() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(spans.count * 30)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        for s in spans where s.start >= origin {
            out.append(s.phase.rawValue)
            out.append(s.track)
            put(s.start - origin); put(s.duration); put(s.step); put(s.bytes)
        }
        return out
    }

    /// Every rank's spans on rank 0, written there as a Chrome trace (JSON object format):
    /// one process per rank named by its host, complete ("X") events in microseconds. Every
    /// rank calls it; `hosts` are the ranks' host names. Spans nest: BatchNorm's sync lies
    /// within the forward pass.
    public func write(to path: String, collective: Collective, host: String) throws {
        let all = collective.allGather(packed())
        let names = collective.allGather(Array(host.utf8)).map { String(decoding: $0, as: UTF8.self) }
        let droppedAll = collective.allGather(withUnsafeBytes(of: Int64(dropped).littleEndian) { Array($0) })
        guard collective.isCoordinator else { return }
        var json = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"orthohash\",\"ranks\":\(all.count)"
        let lost = droppedAll.map { $0.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) } }.reduce(0, +)
        json += ",\"spans_not_kept\":\(lost)},\"traceEvents\":[\n"
        var first = true
        for (rank, bytes) in all.enumerated() {
            if !first { json += ",\n" }
            first = false
            json += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":\(rank),\"args\":{\"name\":\(JSONValue.string("rank \(rank) (\(names[rank]))").text(spaced: false))}},\n"
            json += "{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":\(rank),\"args\":{\"sort_index\":\(rank)}},\n"
            json += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":\(rank),\"tid\":0,\"args\":{\"name\":\"training\"}},\n"
            json += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":\(rank),\"tid\":1,\"args\":{\"name\":\"gradient sums behind the backward pass\"}}"
            bytes.withUnsafeBytes { raw in
                var o = 0
                func get<T: FixedWidthInteger>(_: T.Type) -> T {
                    defer { o += MemoryLayout<T>.size }
                    return T(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: T.self))
                }
                while o < raw.count {
                    let phase = Phase(rawValue: raw[o])!, track = raw[o + 1]
                    o += 2
                    let start = get(UInt64.self), duration = get(UInt64.self), step = get(Int32.self), moved = get(Int64.self)
                    json += ",\n{\"name\":\"\(phase.name)\",\"ph\":\"X\",\"pid\":\(rank),\"tid\":\(track),"
                    json += "\"ts\":\(microseconds(start)),\"dur\":\(microseconds(duration)),\"args\":{\"step\":\(step)"
                    if moved > 0 { json += ",\"bytes\":\(moved)" }
                    json += "}}"
                }
            }
        }
        json += "\n]}\n"
        try AtomicFile.write(Data(json.utf8), to: path)
    }

    private func microseconds(_ ns: UInt64) -> String { String(format: "%.3f", Double(ns) / 1000) }
}
