import CZlib
import XCTest
@testable import OrthoHashFormats
@testable import OrthoHashNumerics
@testable import OrthoHashTraining
import TestSupport

final class IDXTests: XCTestCase {
    func testValidImagesAndLabels() throws {
        let dir = temporaryDirectory()
        writeGzip(dir + "/i.gz", bigEndian(2051) + bigEndian(2) + bigEndian(2) + bigEndian(3) + Array(0..<12))
        writeGzip(dir + "/l.gz", bigEndian(2049) + bigEndian(2) + [4, 9])
        let images = try IDX.readImages(dir + "/i.gz")
        XCTAssertEqual(images.rows, 2); XCTAssertEqual(images.dim, 6); XCTAssertEqual(images.pixels, Array(0..<12))
        XCTAssertEqual(try IDX.readLabels(dir + "/l.gz"), [4, 9])
    }

    func testMalformed() {
        let dir = temporaryDirectory()
        writeGzip(dir + "/magic.gz", bigEndian(2049) + bigEndian(1) + bigEndian(1) + bigEndian(1) + [0])
        assertUserError("wrong magic 2049", file: "magic.gz") { _ = try IDX.readImages(dir + "/magic.gz") }
        writeGzip(dir + "/short.gz", bigEndian(2051) + bigEndian(10) + bigEndian(28) + bigEndian(28) + Array(repeating: 0, count: 100))
        assertUserError("truncated", file: "short.gz") { _ = try IDX.readImages(dir + "/short.gz") }
        writeGzip(dir + "/labels.gz", bigEndian(2049) + bigEndian(5) + [1, 2])
        assertUserError("truncated", file: "labels.gz") { _ = try IDX.readLabels(dir + "/labels.gz") }
        writeGzip(dir + "/header.gz", [0, 0])
        assertUserError("truncated IDX header", file: "header.gz") { _ = try IDX.readLabels(dir + "/header.gz") }
        assertUserError("apt-get install -y dataset-fashion-mnist", file: "/nonexistent") {
            _ = try FashionMNIST.load(directory: "/nonexistent")
        }
    }

    /// The real images from the Debian package.
    func testRealFashionMNIST() throws {
        let data = try FashionMNIST.load()
        XCTAssertEqual(data.train.rows, 60_000); XCTAssertEqual(data.query.rows, 10_000); XCTAssertEqual(data.database.rows, 60_000)
        XCTAssertEqual(data.inputDim, 784); XCTAssertEqual(data.classes, 10)
        guard case .single(let labels) = data.train.labels else { return XCTFail() }
        XCTAssertEqual(Set(labels).count, 10)
        // Standardised pixels: mean about 0 and std about 1 over the first 1000 images.
        let x = FloatBuffer(count: 1000 * 784)
        try data.train.features.copyRows(0, count: 1000, into: x.pointer)
        let mean = x.array.reduce(0.0) { $0 + Double($1) } / Double(x.count)
        XCTAssertEqual(mean, 0, accuracy: 0.05)
        // Pixels are kept as bytes and mapped through a table: the rows a gather gives are exactly
        // b / 255 standardised, computed here from the IDX file directly.
        let images = try IDX.readImages(FashionMNIST.defaultDirectory + "/train-images-idx3-ubyte.gz")
        let scale = 1 / (255 * FashionMNIST.std), shift = FashionMNIST.mean / FashionMNIST.std
        // Rows that hold every pixel value between them (so every table entry is compared), the
        // last row, and a repeated row.
        var firstRow = [Int32](repeating: -1, count: 256)
        var found = 0
        for (i, b) in images.pixels.enumerated() where firstRow[Int(b)] < 0 {
            firstRow[Int(b)] = Int32(i / 784)
            found += 1
            if found == 256 { break }
        }
        XCTAssertFalse(firstRow.contains(-1), "every pixel value occurs")
        let wanted = Array(Set(firstRow)).sorted().reversed() + [59_999, 0, 0]
        let gathered = FloatBuffer(count: wanted.count * 784)
        try wanted.withUnsafeBufferPointer { try data.train.features.gather($0, into: gathered.pointer) }
        let expected = wanted.flatMap { r in (0..<784).map { Float(images.pixels[Int(r) * 784 + $0]) * scale - shift } }
        XCTAssertEqual(gathered.array, expected)
    }
}

final class NPYTests: XCTestCase {
    func testFloat32Float16AndLabels() throws {
        let dir = temporaryDirectory()
        writeNPY(dir + "/f32.npy", descr: "<f4", shape: "(2, 3)", data: bytes([Float(1), 2, 3, 4, 5, 6]))
        writeNPY(dir + "/f16.npy", descr: "<f2", shape: "(2, 3)", data: bytes([Float16(1), 2, 3, 4, 5, 6.5]))
        writeNPY(dir + "/y64.npy", descr: "<i8", shape: "(2,)", data: bytes([Int64(3), 0]))
        writeNPY(dir + "/y32.npy", descr: "<i4", shape: "(2,)", data: bytes([Int32(1), 2]))
        writeNPY(dir + "/multi.npy", descr: "|u1", shape: "(2, 3)", data: [1, 0, 1, 0, 1, 0])
        let a = try NPYFeatures(path: dir + "/f32.npy"), b = try NPYFeatures(path: dir + "/f16.npy")
        XCTAssertEqual(a.rows, 2); XCTAssertEqual(a.dim, 3)
        let row = FloatBuffer(count: 3)
        try b.copyRow(1, into: row.pointer)
        XCTAssertEqual(row.array, [4, 5, 6.5])
        XCTAssertEqual(try Labels.load(path: dir + "/y64.npy"), .single([3, 0]))
        XCTAssertEqual(try Labels.load(path: dir + "/y32.npy"), .single([1, 2]))
        XCTAssertEqual(try Labels.load(path: dir + "/multi.npy"), .multi(classes: 3, [1, 0, 1, 0, 1, 0]))
        // Round trip through the writer.
        try NPYWriter.write(path: dir + "/w.npy", shape: [3, 2], floats: [1, 2, 3, 4, 5, 6])
        let w = try NPYFeatures(path: dir + "/w.npy")
        try w.copyRow(2, into: row.pointer)
        XCTAssertEqual(Array(row.array.prefix(2)), [5, 6])
    }

    func testMalformedFiles() {
        let dir = temporaryDirectory()
        assertUserError("no such file", file: dir + "/missing.npy") { _ = try NPYFeatures(path: dir + "/missing.npy") }
        writeNPY(dir + "/magic.npy", descr: "<f4", shape: "(1, 1)", data: bytes([Float(1)]), magic: Array("NOTNPY".utf8))
        assertUserError("wrong magic", file: "magic.npy") { _ = try NPYFeatures(path: dir + "/magic.npy") }
        writeNPY(dir + "/short.npy", descr: "<f4", shape: "(10, 4)", data: bytes([Float(1), 2]))
        assertUserError("truncated", file: "short.npy") { _ = try NPYFeatures(path: dir + "/short.npy") }
        _ = FileManager.default.createFile(atPath: dir + "/tiny.npy", contents: Data([0x93, 0x4E]))
        assertUserError("truncated", file: "tiny.npy") { _ = try NPYFeatures(path: dir + "/tiny.npy") }
        writeNPY(dir + "/c8.npy", descr: "<c8", shape: "(1, 1)", data: bytes([Float(1), 0]))
        assertUserError("unsupported dtype '<c8'", file: "c8.npy") { _ = try NPYFeatures(path: dir + "/c8.npy") }
        writeNPY(dir + "/f8.npy", descr: "<f8", shape: "(1, 1)", data: bytes([Double(1)]))
        assertUserError("unsupported dtype f8 for features", file: "f8.npy") { _ = try NPYFeatures(path: dir + "/f8.npy") }
        writeNPY(dir + "/big.npy", descr: ">f4", shape: "(1, 1)", data: bytes([Float(1)]))
        assertUserError("big-endian", file: "big.npy") { _ = try NPYFeatures(path: dir + "/big.npy") }
        // The hint keeps the type: labels stay integers (a float conversion would then be refused).
        writeNPY(dir + "/bigy.npy", descr: ">i8", shape: "(1,)", data: [UInt8](repeating: 0, count: 8))
        assertUserError("save it little-endian: astype('<i8')", file: "bigy.npy") { _ = try Labels.load(path: dir + "/bigy.npy") }
        writeNPY(dir + "/fortran.npy", descr: "<f4", shape: "(2, 2)", fortran: true, data: bytes([Float(1), 2, 3, 4]))
        assertUserError("Fortran order", file: "fortran.npy") { _ = try NPYFeatures(path: dir + "/fortran.npy") }
        writeNPY(dir + "/ylabels.npy", descr: "<f4", shape: "(2,)", data: bytes([Float(1), 2]))
        assertUserError("unsupported dtype f4 for labels", file: "ylabels.npy") { _ = try Labels.load(path: dir + "/ylabels.npy") }
        writeNPY(dir + "/neg.npy", descr: "<i8", shape: "(3,)", data: bytes([Int64(1), -2, 0]))
        assertUserError("label -2 at row 1 is negative", file: "neg.npy") { _ = try Labels.load(path: dir + "/neg.npy") }
        writeNPY(dir + "/nopos.npy", descr: "|u1", shape: "(2, 3)", data: [1, 0, 0, 0, 0, 0])
        assertUserError("multi-label row 1 has no positive label", file: "nopos.npy") { _ = try Labels.load(path: dir + "/nopos.npy") }
        writeNPY(dir + "/nan.npy", descr: "<f4", shape: "(2, 2)", data: bytes([Float(1), 2, .nan, 4]))
        let nan = try! NPYFeatures(path: dir + "/nan.npy")
        let row = FloatBuffer(count: 2)
        assertUserError("row 1 holds NaN or Inf", file: "nan.npy") { try nan.copyRow(1, into: row.pointer) }
        writeNPY(dir + "/inf16.npy", descr: "<f2", shape: "(1, 2)", data: bytes([Float16(1), .infinity]))
        let inf = try! NPYFeatures(path: dir + "/inf16.npy")
        assertUserError("row 0 holds NaN or Inf", file: "inf16.npy") { try inf.copyRow(0, into: row.pointer) }
    }

    /// float16 rows long enough for the vectorised conversion and its tail: every value equals
    /// Swift's own conversion (normals, subnormals, signed zeros, the largest half), and a NaN at
    /// any position, vector body or tail, is reported.
    func testLongFloat16Rows() throws {
        let dir = temporaryDirectory()
        let n = 37
        var values: [Float16] = (0..<n).map { Float16(Float($0) * 0.37 - 5) }
        values[3] = Float16(bitPattern: 0x0001); values[4] = -0.0; values[5] = .greatestFiniteMagnitude; values[36] = -.greatestFiniteMagnitude
        writeNPY(dir + "/long16.npy", descr: "<f2", shape: "(1, \(n))", data: bytes(values))
        let row = FloatBuffer(count: n)
        try NPYFeatures(path: dir + "/long16.npy").copyRow(0, into: row.pointer)
        XCTAssertEqual(row.array.map(\.bitPattern), values.map { Float($0).bitPattern })
        for bad in [0, 17, 31, 32, 36] {
            var v = values
            v[bad] = .nan
            writeNPY(dir + "/bad16.npy", descr: "<f2", shape: "(1, \(n))", data: bytes(v))
            let f = try NPYFeatures(path: dir + "/bad16.npy")
            assertUserError("row 0 holds NaN or Inf", file: "bad16.npy") { try f.copyRow(0, into: row.pointer) }
        }
    }
}

final class SplitValidationTests: XCTestCase {
    func testMismatchesAreNamed() throws {
        let dir = temporaryDirectory()
        let s = SyntheticNPY(dir: dir)
        XCTAssertEqual(try s.config.loadData().classes, 4)
        var c = s.config
        writeNPY(dir + "/short_y.npy", descr: "<i8", shape: "(3,)", data: bytes([Int64(0), 1, 2]))
        c.trainLabels = dir + "/short_y.npy"
        assertUserError("3 labels but 512 feature rows", file: "short_y.npy") { _ = try c.loadData() }
        c = s.config
        writeNPY(dir + "/wide_x.npy", descr: "<f4", shape: "(64, 17)", data: bytes([Float](repeating: 0, count: 64 * 17)))
        c.queryFeatures = dir + "/wide_x.npy"
        assertUserError("feature dimension 17 does not match the training features' 16", file: "wide_x.npy") { _ = try c.loadData() }
        c = s.config
        c.classes = 3
        assertUserError("out of range for 3 classes", file: "_y.npy") { _ = try c.loadData() }
        c = s.config
        writeNPY(dir + "/multi_y.npy", descr: "|u1", shape: "(64, 4)", data: (0..<256).map { $0 % 4 == 0 ? 1 : 0 })
        c.queryLabels = dir + "/multi_y.npy"
        assertUserError("multi-label but the training labels are not", file: "multi_y.npy") { _ = try c.loadData() }
    }

    func testFlagChecks() throws {
        let dir = temporaryDirectory()
        var c = SyntheticNPY(dir: dir).config
        c.nbit = 0
        assertUserError("--nbit must be at least 1", file: nil) { try c.validate() }
        c.nbit = 16; c.batchSize = 1024
        let data = try c.loadData()
        assertUserError("--batch-size 1024 is larger than the training set (512 rows)", file: "train_x.npy") {
            _ = try Trainer(config: c, data: data, runDir: dir)
        }
        c.batchSize = 64; c.trainLabels = nil
        assertUserError("--dataset npy needs --train-labels", file: nil) { try c.validate() }
    }

    func testNaNInTrainingFeaturesStopsWithFileAndRow() throws {
        let dir = temporaryDirectory()
        var s = SyntheticNPY(dir: dir, train: 128)
        var x = [Float](repeating: 0.5, count: 128 * 16)
        x[70 * 16 + 3] = .nan
        writeNPY(dir + "/train_x.npy", descr: "<f4", shape: "(128, 16)", data: bytes(x))
        s.config.epochs = 1
        let trainer = try Trainer(config: s.config, data: try s.config.loadData(), runDir: dir + "/run", options: .quiet)
        assertUserError("row 70 holds NaN or Inf", file: "train_x.npy") { try trainer.run() }
    }
}

final class RevisitedGroundTruthTests: XCTestCase {
    func testGroundTruthFileErrors() throws {
        let dir = temporaryDirectory()
        func write(_ text: String) -> String {
            let path = dir + "/gnd.json"
            _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
            return path
        }
        let good = write(#"[{"easy": [0], "hard": [1], "junk": []}]"#)
        XCTAssertEqual(try loadRevisitedGroundTruth(good, queries: 1, databaseRows: 2), [RevisitedQuery(easy: [0], hard: [1], junk: [])])
        let cases: [(String, Int, Int, String)] = [
            (#"{"easy": []}"#, 1, 2, "not a JSON list"),
            (#"[{"easy": [0], "hard": [1], "junk": []}]"#, 2, 2, "ground truth for 1 queries, but there are 2 query rows"),
            (#"[{"easy": [0], "hard": [5], "junk": []}]"#, 1, 2, "query 0 lists database row 5, the database has 2 rows"),
            (#"[{"easy": [-1], "hard": [], "junk": []}]"#, 1, 2, "database row -1"),
        ]
        for (text, queries, rows, message) in cases {
            let path = write(text)
            XCTAssertThrowsError(try loadRevisitedGroundTruth(path, queries: queries, databaseRows: rows)) { error in
                XCTAssertTrue("\(error)".contains(message) && "\(error)".contains("gnd.json"), "\(error)")
            }
        }
        XCTAssertThrowsError(try loadRevisitedGroundTruth(dir + "/missing.json", queries: 1, databaseRows: 2)) { error in
            XCTAssertTrue("\(error)".contains("missing.json"), "\(error)")
        }
    }
}

final class BatchLoaderTests: XCTestCase {
    /// The prefetching loader gives the batches the plain one gives: in order across an epoch's
    /// end, and when a run asks for another position (a resume), with the targets of its rows.
    func testPrefetchGivesTheSameBatches() throws {
        let data = try GeneratedImages.splits(shape: SampleShape(channels: 3, height: 5, width: 4), classes: 3, train: 24, queries: 4, seed: 2)
        let plain = BatchLoader(split: data.train, classes: 3, globalBatch: 8, rank: 1, ranks: 2, seed: 5)
        let ahead = BatchLoader(split: data.train, classes: 3, globalBatch: 8, rank: 1, ranks: 2, seed: 5, prefetch: true)
        let positions = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 2), (3, 0), (0, 1)].map { BatchPosition(epoch: $0.0, step: $0.1) }
        for p in positions {
            let a = try plain.batch(at: p), b = try ahead.batch(at: p)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: a.input, count: 4 * 60)), Array(UnsafeBufferPointer(start: b.input, count: 4 * 60)), "\(p)")
            guard case .single(let ta) = a.targets, case .single(let tb) = b.targets else { return XCTFail("single-label targets") }
            XCTAssertEqual(Array(UnsafeBufferPointer(start: ta, count: 4)), Array(UnsafeBufferPointer(start: tb, count: 4)), "\(p)")
        }
    }
}
