// Helpers shared by the test targets: files written by hand, one-line user errors, synthetic data.

import CZlib
import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import OrthoHashTraining

/// A fresh temporary directory for one test (removed when the test process exits).
public func temporaryDirectory(_ name: String = #function) -> String { TestDirectories.make(name) }

/// A .npy file written by hand: header dict text and raw data.
public func writeNPY(_ path: String, descr: String, shape: String, fortran: Bool = false, data: [UInt8], magic: [UInt8]? = nil) {
    var header = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }"
    header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
    var bytes: [UInt8] = magic ?? [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
    bytes += [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
    bytes += Array(header.utf8) + data
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

public func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

public func writeGzip(_ path: String, _ data: [UInt8]) {
    let gz = gzopen(path, "wb")!
    _ = data.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
    gzclose(gz)
}

public func bigEndian(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

/// Asserts that `body` throws an OrthoHashError naming `file` and containing `fragment`.
public func assertUserError(_ fragment: String, file expectedFile: String?, _ body: () throws -> Void,
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        try body()
        XCTFail("expected an error containing '\(fragment)'", file: file, line: line)
    } catch let error as OrthoHashError {
        let text = "\(error)"
        XCTAssertTrue(text.contains(fragment), "'\(text)' lacks '\(fragment)'", file: file, line: line)
        if let expectedFile { XCTAssertTrue(text.contains(expectedFile), "'\(text)' does not name \(expectedFile)", file: file, line: line) }
        XCTAssertFalse(text.contains("\n"), "error is not one line: \(text)", file: file, line: line)
    } catch {
        XCTFail("unexpected error type: \(error)", file: file, line: line)
    }
}

/// A small synthetic npy benchmark: `classes` Gaussian clusters in D dimensions.
public struct SyntheticNPY {
    public let dir: String
    public var config: TrainConfig

    public init(dir: String, train: Int = 512, query: Int = 64, db: Int = 256, D: Int = 16, classes: Int = 4, seed: UInt64 = 1) {
        self.dir = dir
        var rng = Xoshiro256(seed: seed, stream: 77)
        let centres = (0..<(classes * D)).map { _ in Float(rng.gaussian() * 2) }
        func split(_ name: String, _ n: Int) {
            var x: [Float] = [], y: [Int64] = []
            for _ in 0..<n {
                let c = rng.nextInt(below: classes)
                y.append(Int64(c))
                for d in 0..<D { x.append(centres[c * D + d] + Float(rng.gaussian())) }
            }
            writeNPY("\(dir)/\(name)_x.npy", descr: "<f4", shape: "(\(n), \(D))", data: bytes(x))
            writeNPY("\(dir)/\(name)_y.npy", descr: "<i8", shape: "(\(n),)", data: bytes(y))
        }
        split("train", train); split("query", query); split("db", db)
        var c = TrainConfig()
        c.dataset = .npy
        c.trainFeatures = dir + "/train_x.npy"; c.trainLabels = dir + "/train_y.npy"
        c.queryFeatures = dir + "/query_x.npy"; c.queryLabels = dir + "/query_y.npy"
        c.dbFeatures = dir + "/db_x.npy"; c.dbLabels = dir + "/db_y.npy"
        c.nbit = 16; c.batchSize = 64; c.epochs = 3; c.optimizer.lr = 1e-2
        c.mapAt = [nil, 10]; c.precisionAt = [10]
        config = c
    }
}


/// zlib's CRC-32 of `n` bytes (to fix up a checksum after changing a file on purpose).
public func crc32Bytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt { UInt(crc32(0, p, uInt(n))) }

extension TrainerOptions {
    /// Options of a test's trainer: no output, no progress bar.
    public static var quiet: TrainerOptions {
        var o = TrainerOptions()
        o.log = Log(quiet: true)
        o.progressBar = false
        return o
    }
}
