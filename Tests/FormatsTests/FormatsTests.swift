// The byte layouts: JSON written by hand, safetensors, the checkpoint container.

import Foundation
import XCTest
@testable import OrthoHashFormats
import OrthoHashNumerics
import TestSupport

final class JSONTests: XCTestCase {
    /// Strings are escaped (quotes, backslashes, control characters); keys keep their order;
    /// non-finite numbers become null; the two spacings.
    func testWriterEscapesAndKeepsOrder() throws {
        let v = JSONValue.object([("z", .string("a\"b\\c\nd\u{01}é")), ("a", .array([.int(1), .double(0.1), .double(.nan), .fixed(2.5, digits: 3)])),
                                  ("m", .object([])), ("t", .bool(true)), ("n", .null)])
        XCTAssertEqual(v.text(), #"{"z": "a\"b\\c\nd\u0001é", "a": [1, 0.1, null, 2.500], "m": {}, "t": true, "n": null}"#)
        XCTAssertEqual(v.text(spaced: false), #"{"z":"a\"b\\c\nd\u0001é","a":[1,0.1,null,2.500],"m":{},"t":true,"n":null}"#)
        // What it writes, JSON parsers read back.
        let back = try JSONSerialization.jsonObject(with: Data(v.text().utf8)) as! [String: Any]
        XCTAssertEqual(back["z"] as? String, "a\"b\\c\nd\u{01}é")
    }

    func testDifferingFields() {
        struct S: Encodable { var a = 1, b = "x", c = [1, 2] }
        var t = S()
        XCTAssertEqual(JSON.differingFields(S(), t), [])
        t.c = [1]; t.a = 2
        XCTAssertEqual(JSON.differingFields(S(), t), ["a", "c"])
    }
}

final class SafeTensorsTests: XCTestCase {
    /// Metadata that needs escaping is escaped (it was written raw before): the header parses.
    func testMetadataIsEscaped() throws {
        let t = SafeTensors.Tensor(name: "w", dtype: "F32", shape: [2], bytes: [UInt8](repeating: 0, count: 8))
        let data = [UInt8](SafeTensors.serialize([t], metadata: ["path": "runs/\"odd\"\\name"]))
        let n = Int(data[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        XCTAssertEqual((8 + n) % 8, 0)
        let header = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + n)])) as! [String: Any]
        XCTAssertEqual((header["__metadata__"] as! [String: String])["path"], "runs/\"odd\"\\name")
        XCTAssertEqual((header["w"] as! [String: Any])["data_offsets"] as! [Int], [0, 8])
    }
}

final class CheckpointFileTests: XCTestCase {
    /// A container round trip, and a section length past the end of the file is an error, not a trap.
    func testRoundTripAndOverrun() throws {
        let a: [UInt8] = [1, 2, 3], b: [UInt8] = []
        let data = a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in CheckpointFile.serialize(header: Data("{}".utf8), sections: [pa, pb]) } }
        let (header, sections) = try CheckpointFile.parse([UInt8](data), sections: 2, path: "x.ohck")
        XCTAssertEqual(String(decoding: header, as: UTF8.self), "{}")
        XCTAssertEqual(sections.map(Array.init), [a, b])
        assertUserError("missing section", file: "x.ohck") { _ = try CheckpointFile.parse([UInt8](data), sections: 3, path: "x.ohck") }
        // A huge section length (2^63) with the checksum fixed up.
        var bytes = [UInt8](data)
        let at = 16 + 2
        for i in 0..<8 { bytes[at + i] = i == 7 ? 0x80 : 0 }
        let body = bytes.count - 12
        let crc = bytes.withUnsafeBufferPointer { crc32Bytes($0.baseAddress!, body) }
        for i in 0..<4 { bytes[body + i] = UInt8(crc >> (8 * UInt(i)) & 0xFF) }
        assertUserError("section overruns the file", file: "x.ohck") { _ = try CheckpointFile.parse(bytes, sections: 2, path: "x.ohck") }
    }
}

final class FileCheckTests: XCTestCase {
    /// Writes replace regular files only: a directory, a FIFO and a device node in the way are
    /// refused (and left as they were); a symbolic link's file is replaced, the link kept.
    func testWritesReplaceOnlyRegularFiles() throws {
        let dir = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: false)
        XCTAssertEqual(mkfifo(dir + "/afifo", 0o644), 0)
        var targets = [("adir", "a directory"), ("afifo", "a FIFO")]
        if getuid() == 0, mknod(dir + "/adevice", S_IFCHR | 0o644, (1 << 8) | 3) == 0 { targets.append(("adevice", "a device")) }
        for (name, kind) in targets {
            assertUserError("exists and is \(kind), not a regular file", file: name) {
                try AtomicFile.write(Data("x".utf8), to: dir + "/" + name)
            }
        }
        var info = stat()
        XCTAssertEqual(lstat(dir + "/afifo", &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFIFO, "the FIFO is still there")
        try Data("old".utf8).write(to: URL(fileURLWithPath: dir + "/real"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "real")
        try AtomicFile.write(Data("new".utf8), to: dir + "/link")
        XCTAssertEqual(try String(contentsOfFile: dir + "/real", encoding: .utf8), "new")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link"), "real")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter(AtomicFile.isTemporary), [])
    }

    /// Inputs that are not regular files are refused at once, a FIFO included (reading one would
    /// wait for a writer forever).
    func testInputsMustBeRegularFiles() throws {
        let dir = temporaryDirectory()
        XCTAssertEqual(mkfifo(dir + "/fifo.npy", 0o644), 0)
        assertUserError("is a FIFO, not a regular file", file: "fifo.npy") { _ = try NPYArray(path: dir + "/fifo.npy") }
        assertUserError("is a directory, not a regular file", file: dir) { _ = try NPYArray(path: dir) }
        assertUserError("is a FIFO, not a regular file", file: "fifo.npy") { _ = try IDX.readLabels(dir + "/fifo.npy") }
        assertUserError("no such file", file: "missing.npy") { _ = try NPYArray(path: dir + "/missing.npy") }
    }
}
