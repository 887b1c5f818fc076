// The models trained by the code before the restructuring of issue 10, as references that every
// later build must reproduce byte for byte (see Tests/CLITests/ReferenceTests.swift).

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

public let referenceDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/reference").path

/// The environment that makes a run's GEMMs reproducible across CPUs.
public let reproducibleBLAS = ["OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"]

/// A checkpoint with the fields that a run measures (seconds) or that name where the data was
/// (paths) set to fixed values, and the fields added after the references were recorded (the
/// step's path, the training data's fingerprint and the final loss kept for a late summary, which
/// the references lack) left out, serialized: equal bytes mean the same training state.
public func normalisedCheckpoint(_ path: String) throws -> Data {
    var ck = try Checkpoint.read(path)
    ck.state.epochSeconds = 0
    ck.state.trainSeconds = 0
    func base(_ p: String?) -> String? { p.map { URL(fileURLWithPath: $0).lastPathComponent } }
    var c = ck.state.config
    c.trainFeatures = base(c.trainFeatures); c.trainLabels = base(c.trainLabels)
    c.queryFeatures = base(c.queryFeatures); c.queryLabels = base(c.queryLabels)
    c.dbFeatures = base(c.dbFeatures); c.dbLabels = base(c.dbLabels)
    c.head = nil; c.headProducts = nil; c.gradientOverlap = nil; c.gradientSum = nil; c.gradientBucketMB = nil
    ck.state.config = c
    ck.state.trainData = nil; ck.state.finalLoss = nil
    return ck.serialized()
}

/// Compares (or records) the run's newest checkpoint and its export with `name` in the reference
/// directory. `export` runs `orthohash export` on the run.
public func assertMatchesReference(_ name: String, runDir: String, export: (String) throws -> Void,
                            file: StaticString = #filePath, line: UInt = #line) throws {
    let checkpoint = CheckpointDirectory(runDir: runDir).stepCheckpoints()[0]
    let exported = runDir + "/model.safetensors"
    try export(exported)
    let ckRef = referenceDirectory + "/\(name).ohck", stRef = referenceDirectory + "/\(name).safetensors"
    if ProcessInfo.processInfo.environment["ORTHOHASH_RECORD_REFERENCE"] == "1" {
        try FileManager.default.createDirectory(atPath: referenceDirectory, withIntermediateDirectories: true)
        try normalisedCheckpoint(checkpoint).write(to: URL(fileURLWithPath: ckRef))
        try Data(contentsOf: URL(fileURLWithPath: exported)).write(to: URL(fileURLWithPath: stRef))
        return
    }
    let reference = try Data(contentsOf: URL(fileURLWithPath: ckRef))
    // The committed file reads back and serializes to the same bytes (the format is unchanged) ...
    XCTAssertEqual(try Checkpoint.parse(reference, path: ckRef).serialized(), reference, "\(name): checkpoint format", file: file, line: line)
    // ... and the run trained today reaches the same state, bit for bit.
    let today = try normalisedCheckpoint(checkpoint)
    if today != reference {
        let a = try Checkpoint.parse(today, path: checkpoint), b = try Checkpoint.parse(reference, path: ckRef)
        let differing = zip(a.parameters, b.parameters).filter { $0.bitPattern != $1.bitPattern }.count
        XCTFail("\(name): checkpoint differs from the reference (\(differing) of \(b.parameters.count) parameters; state equal: \(a.state == b.state))",
                file: file, line: line)
    }
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: exported)), try Data(contentsOf: URL(fileURLWithPath: stRef)),
                   "\(name): exported safetensors", file: file, line: line)
}

