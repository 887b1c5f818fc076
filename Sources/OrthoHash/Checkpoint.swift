// Checkpoints: a versioned binary file, checksummed, written atomically.
//
// Layout (little-endian):
//   "OHCKPT\0\0"            8 bytes magic
//   version                 UInt32 (1)
//   header length           UInt32
//   header                  JSON (CheckpointState: configuration, counters, RNG)
//   sections                for each of parameters, running mean, running var, optimizer m,
//                           optimizer v, codebook: UInt64 byte count, then the bytes
//                           (Float32 arrays; the codebook as Int8 (C, K))
//   CRC-32                  UInt32 over everything above
//   "OHEND\0\0\0"           8 bytes

import CZlib
import Foundation

public struct CheckpointState: Codable, Equatable {
    public var config: TrainConfig
    public var model: ModelConfig
    /// Epoch in progress (0-based) and batches of it already done.
    public var epoch: Int
    public var stepInEpoch: Int
    public var globalStep: Int
    public var optimizerStep: Int64
    public var batchesTracked: Int64
    /// Running sums of the epoch in progress, so its metrics line is the same after a resume.
    public var epochLossSum: Double
    public var epochCorrect: Int
    public var epochSamples: Int
    public var epochSeconds: Double
    /// Totals of the training loop so far.
    public var trainSeconds: Double
    public var samplesSeen: Int
    public var bestMAP: Double?
    public var bestEpoch: Int?
    public var worldSize: Int
    /// The data order of epoch e is Xoshiro256(seed, stream: epochPermutation + e).permutation(n).
    public var permutationSeed: UInt64
}

public struct Checkpoint {
    public var state: CheckpointState
    public var parameters: [Float]
    public var runningMean: [Float]
    public var runningVar: [Float]
    public var momentum1: [Float]
    public var momentum2: [Float]
    public var codebook: Codebook

    static let magic: [UInt8] = Array("OHCKPT".utf8) + [0, 0]
    static let endMagic: [UInt8] = Array("OHEND".utf8) + [0, 0, 0]
    static let version: UInt32 = 1

    public init(state: CheckpointState, parameters: [Float], runningMean: [Float], runningVar: [Float],
                momentum1: [Float], momentum2: [Float], codebook: Codebook) {
        self.state = state; self.parameters = parameters; self.runningMean = runningMean
        self.runningVar = runningVar; self.momentum1 = momentum1; self.momentum2 = momentum2; self.codebook = codebook
    }

    public func serialized() -> Data {
        var out = Data(Checkpoint.magic)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        let header = JSON.encode(state, pretty: false)
        u32(Checkpoint.version)
        u32(UInt32(header.count))
        out.append(header)
        for array in [parameters, runningMean, runningVar, momentum1, momentum2] {
            u64(UInt64(array.count * 4))
            array.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        u64(UInt64(codebook.values.count))
        codebook.values.withUnsafeBytes { out.append(contentsOf: $0) }
        let crc = out.withUnsafeBytes { UInt32(crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt($0.count))) }
        u32(crc)
        out.append(contentsOf: Checkpoint.endMagic)
        return out
    }

    public func write(to path: String, pauseBeforeRename: Double = 0) throws {
        try AtomicFile.write(serialized(), to: path, pauseBeforeRename: pauseBeforeRename)
    }

    public static func read(_ path: String) throws -> Checkpoint {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw OrthoHashError(FileManager.default.fileExists(atPath: path) ? "cannot read checkpoint" : "no such file", file: path)
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> Checkpoint {
        let bytes = [UInt8](data)
        func fail(_ why: String) -> OrthoHashError { OrthoHashError("corrupt checkpoint: \(why)", file: path) }
        guard bytes.count >= 8 + 8 + 12, Array(bytes[0..<8]) == magic else { throw fail("wrong magic (not an orthohash checkpoint)") }
        guard Array(bytes[(bytes.count - 8)...]) == endMagic else { throw fail("truncated (no end marker)") }
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        let body = bytes.count - 12
        let stored = u32(body)
        let actual = bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt(body))) }
        guard stored == actual else { throw fail("checksum mismatch") }
        let version = u32(8)
        guard version == Checkpoint.version else {
            throw OrthoHashError("checkpoint format version \(version) is not supported (this build reads \(Checkpoint.version))", file: path)
        }
        let headerLength = Int(u32(12))
        var at = 16 + headerLength
        guard at <= body else { throw fail("header overruns the file") }
        let state = try JSON.decode(CheckpointState.self, from: Data(bytes[16..<at]), file: path)
        func section() throws -> ArraySlice<UInt8> {
            guard at + 8 <= body else { throw fail("missing section") }
            let n = Int(u64(at)); at += 8
            guard n >= 0, at + n <= body else { throw fail("section overruns the file") }
            defer { at += n }
            return bytes[at..<(at + n)]
        }
        func floats(_ s: ArraySlice<UInt8>) -> [Float] {
            s.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
        }
        let p = floats(try section()), rm = floats(try section()), rv = floats(try section())
        let m1 = floats(try section()), m2 = floats(try section())
        let cb = try section().map { Int8(bitPattern: $0) }
        let K = state.model.nbit, C = state.model.classes
        guard cb.count == C * K, rm.count == K, rv.count == K else { throw fail("sections do not match the model's shape") }
        return Checkpoint(state: state, parameters: p, runningMean: rm, runningVar: rv, momentum1: m1, momentum2: m2,
                          codebook: Codebook(classes: C, bits: K, values: cb))
    }
}

/// The checkpoints of a run directory: `checkpoints/step-XXXXXXXXXX.ohck`, plus `best.ohck`.
public struct CheckpointDirectory {
    public let path: String
    public init(runDir: String) { path = runDir + "/checkpoints" }

    public func stepPath(_ step: Int) -> String { path + String(format: "/step-%010d.ohck", step) }
    public var bestPath: String { path + "/best.ohck" }

    /// Step checkpoints, newest first.
    public func stepCheckpoints() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".ohck") }.sorted(by: >).map { path + "/" + $0 }
    }

    /// The newest checkpoint that reads back intact; corrupt ones are reported through `warn` and skipped.
    public func newestValid(warn: (String) -> Void) -> (String, Checkpoint)? {
        for file in stepCheckpoints() {
            do { return (file, try Checkpoint.read(file)) } catch { warn("skipping \(error)") }
        }
        return nil
    }

    /// Removes temporary files left by a writer that was killed mid-write (never valid checkpoints).
    public func removeStaleTemporaries() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        for name in names where name.hasPrefix(".") && name.contains(".tmp-") { try? FileManager.default.removeItem(atPath: path + "/" + name) }
    }

    /// Deletes all but the newest `keep` step checkpoints.
    public func prune(keep: Int) {
        guard keep > 0 else { return }
        for file in stepCheckpoints().dropFirst(keep) { try? FileManager.default.removeItem(atPath: file) }
    }
}
