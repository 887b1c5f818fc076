// The Google Landmarks v2 retrieval ground truth as the official solution file gives it
// (retrieval_solution_v2.1.csv, read as DELF's dataset_file_io.ReadSolution reads it), and ids
// files that name the rows of a code or feature file.
//
// Solution: CSV with the header `id,images,Usage`; one row per test image: its id, the index ids
// that show its landmark separated by spaces, and Public, Private or Ignored. Ignored rows (test
// images without a landmark of the index) are dropped. Ids file: one id per line, line i naming
// row i (blank lines and surrounding spaces are not allowed: the count must match the rows).

import Foundation
import OrthoHashNumerics

public struct GLDv2Solution: Equatable {
    public struct Query: Equatable {
        public var id: String
        public var images: [String]
        public var isPublic: Bool
    }
    /// In file order, Ignored rows dropped.
    public var queries: [Query]
    /// Rows marked Ignored.
    public var ignored: Int

    public init(queries: [Query], ignored: Int) { self.queries = queries; self.ignored = ignored }

    public init(path: String) throws {
        let text = try readText(path)
        let lines = textLines(text)
        guard let header = lines.first else { throw OrthoHashError("empty file; expected the header id,images,Usage", file: path) }
        guard header.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) == ["id", "images", "Usage"] else {
            throw OrthoHashError("line 1 is '\(header.prefix(60))', expected the header id,images,Usage", file: path)
        }
        var queries: [Query] = [], ignored = 0, seen = Set<String>()
        for (n, line) in lines.enumerated().dropFirst() {
            guard let fields = csvFields(line) else {
                throw OrthoHashError("line \(n + 1) has a quote that is not closed (or text after a closing quote)", file: path)
            }
            guard fields.count == 3 else {
                throw OrthoHashError("line \(n + 1) has \(fields.count) fields, expected 3 (id,images,Usage)", file: path)
            }
            guard !fields[0].isEmpty else { throw OrthoHashError("line \(n + 1) has an empty id", file: path) }
            guard seen.insert(fields[0]).inserted else { throw OrthoHashError("line \(n + 1): test image \(fields[0]) is listed twice", file: path) }
            let images = fields[1].split(separator: " ").map(String.init)
            switch fields[2] {
            case "Ignored": ignored += 1
            case "Public", "Private":
                queries.append(Query(id: fields[0], images: images, isPublic: fields[2] == "Public"))
            default:
                throw OrthoHashError("line \(n + 1): Usage is '\(fields[2])', expected Public, Private or Ignored", file: path)
            }
        }
        self.init(queries: queries, ignored: ignored)
    }
}

/// The fields of one CSV line as RFC 4180 reads them: a field in double quotes may hold commas,
/// and "" within it is one quote; spaces around a field are dropped. nil for a quote that is not
/// closed, or text after a closing quote.
func csvFields(_ line: Substring) -> [String]? {
    var fields: [String] = [], field = "", quoted = false, closed = false
    var i = line.startIndex
    while i < line.endIndex {
        let c = line[i]
        if quoted {
            if c == "\"" {
                let next = line.index(after: i)
                if next < line.endIndex && line[next] == "\"" { field.append("\""); i = next } else { quoted = false; closed = true }
            } else {
                field.append(c)
            }
        } else if c == "," {
            fields.append(closed ? field : field.trimmingCharacters(in: .whitespaces))
            field = ""; closed = false
        } else if c == "\"" && field.trimmingCharacters(in: .whitespaces).isEmpty && !closed {
            field = ""; quoted = true
        } else if closed {
            if c != " " { return nil }
        } else {
            field.append(c)
        }
        i = line.index(after: i)
    }
    if quoted { return nil }
    fields.append(closed ? field : field.trimmingCharacters(in: .whitespaces))
    return fields
}

/// The ids of an ids file, line i naming row i; `rows` (when given) must match their count.
public func readIDs(_ path: String, rows: Int? = nil) throws -> [String] {
    let text = try readText(path)
    let lines = textLines(text).map(String.init)
    for (n, id) in lines.enumerated() where id.isEmpty || id.trimmingCharacters(in: .whitespaces) != id {
        throw OrthoHashError("line \(n + 1) is \(id.isEmpty ? "empty" : "'\(id)', with spaces around the id"); expected one id per line", file: path)
    }
    if let rows, lines.count != rows {
        throw OrthoHashError("\(lines.count) ids for \(rows) rows", file: path)
    }
    return lines
}

/// Lines ended by LF or CRLF (one Character in Swift, so splitting at "\n" alone would miss it);
/// a last line without an end counts, an empty one after the last end does not.
func textLines(_ text: String) -> [Substring] {
    var lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    if lines.last == "" { lines.removeLast() }
    return lines
}

func readText(_ path: String) throws -> String {
    try InputFile.check(path)
    guard let data = FileManager.default.contents(atPath: path) else { throw OrthoHashError("cannot read", file: path) }
    guard let text = String(data: data, encoding: .utf8) else { throw OrthoHashError("not UTF-8 text", file: path) }
    return text
}
