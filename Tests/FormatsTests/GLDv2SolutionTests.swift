// The GLDv2 solution file and ids files.

import Foundation
import XCTest
@testable import OrthoHashFormats
import TestSupport

final class GLDv2SolutionTests: XCTestCase {
    func write(_ dir: String, _ name: String, _ text: String) -> String {
        let path = dir + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    /// The official layout: Ignored rows dropped and counted, quoted fields, CRLF line ends, an
    /// empty images field (no image), and no newline after the last row.
    func testReadsTheOfficialLayout() throws {
        let dir = temporaryDirectory()
        let path = write(dir, "solution.csv", "id,images,Usage\r\nq1,a b c,Public\r\n\"q2\",\"d\",Private\r\nq3,,Ignored\r\nq4,,Public")
        let s = try GLDv2Solution(path: path)
        XCTAssertEqual(s.ignored, 1)
        XCTAssertEqual(s.queries, [.init(id: "q1", images: ["a", "b", "c"], isPublic: true), .init(id: "q2", images: ["d"], isPublic: false),
                                   .init(id: "q4", images: [], isPublic: true)])
    }

    /// RFC 4180's quoting: a quoted field keeps its commas, and "" within it is one quote.
    func testQuotedFieldsKeepCommasAndQuotes() throws {
        let path = write(temporaryDirectory(), "solution.csv", "id,images,Usage\n\"q,1\",\"a \"\"b\"\"\",Public\n \"q2\" , c ,Private\n")
        XCTAssertEqual(try GLDv2Solution(path: path).queries, [.init(id: "q,1", images: ["a", "\"b\""], isPublic: true),
                                                               .init(id: "q2", images: ["c"], isPublic: false)])
    }

    func testRefusesBadSolutions() {
        let dir = temporaryDirectory()
        let cases: [(String, String)] = [
            ("", "empty file; expected the header id,images,Usage"),
            ("id,images\nq1,a\n", "line 1 is 'id,images', expected the header id,images,Usage"),
            ("id,images,Usage\nq1,a,Public,extra\n", "line 2 has 4 fields, expected 3"),
            ("id,images,Usage\nq1,a,Public\n,b,Private\n", "line 3 has an empty id"),
            ("id,images,Usage\nq1,a,Public\nq1,b,Private\n", "line 3: test image q1 is listed twice"),
            ("id,images,Usage\nq1,a,public\n", "line 2: Usage is 'public', expected Public, Private or Ignored"),
            ("id,images,Usage\n\"q1,a,Public\n", "line 2 has a quote that is not closed"),
            ("id,images,Usage\n\"q1\"x,a,Public\n", "line 2 has a quote that is not closed (or text after a closing quote)"),
        ]
        for (n, (text, message)) in cases.enumerated() {
            let path = write(dir, "s\(n).csv", text)
            assertUserError(message, file: path) { _ = try GLDv2Solution(path: path) }
        }
        let bytes = dir + "/latin1.csv"
        _ = FileManager.default.createFile(atPath: bytes, contents: Data([0x69, 0x64, 0xE9, 0x0A]))
        assertUserError("not UTF-8 text", file: bytes) { _ = try GLDv2Solution(path: bytes) }
        assertUserError("no such file", file: "missing.csv") { _ = try GLDv2Solution(path: dir + "/missing.csv") }
    }

    func testIDs() throws {
        let dir = temporaryDirectory()
        XCTAssertEqual(try readIDs(write(dir, "ok.txt", "a\nb\r\nc\n"), rows: 3), ["a", "b", "c"])
        XCTAssertEqual(try readIDs(write(dir, "last.txt", "a\nb")), ["a", "b"])
        let count = write(dir, "count.txt", "a\nb\n")
        assertUserError("2 ids for 3 rows", file: count) { _ = try readIDs(count, rows: 3) }
        let blank = write(dir, "blank.txt", "a\n\nb\n")
        assertUserError("line 2 is empty; expected one id per line", file: blank) { _ = try readIDs(blank) }
        let spaced = write(dir, "spaced.txt", "a\n b\n")
        assertUserError("line 2 is ' b', with spaces around the id", file: spaced) { _ = try readIDs(spaced) }
    }
}
