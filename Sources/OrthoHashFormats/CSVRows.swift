// Rows appended to CSV files (bench's --csv; the scaling harness reads them).

import Foundation
import OrthoHashNumerics

/// Rows appended to a CSV file: the header when the file is new or empty, else the file's header
/// must be the same columns (a clear error, not a misaligned row). Values are quoted when they
/// hold a comma or a quote.
public enum CSVRows {
    /// `columns`: (name, value) in order.
    public static func append(to path: String, _ columns: [(String, String)]) throws {
        let header = columns.map { quote($0.0) }.joined(separator: ",")
        let row = columns.map { quote($0.1) }.joined(separator: ",")
        // Opened first: refused unless a regular file (a FIFO would block the read below).
        let file = try AppendFile(path)
        var text = ""
        if let existing = FileManager.default.contents(atPath: path), !existing.isEmpty {
            let first = String(decoding: existing.prefix { $0 != 10 && $0 != 13 }, as: UTF8.self)
            guard first == header else {
                throw OrthoHashError("its header is not this table's columns (\(header))", file: path,
                                     hint: "write this table to a new file, or give the same columns as its other rows (bench: the same --label keys)")
            }
            if existing.last != 10 { text = "\n" }
        } else {
            text = header + "\n"
        }
        text += row + "\n"
        try file.write(text)
    }

    /// The column names of an existing, non-empty CSV file's first line (nil: no such file, or
    /// empty). Unquoted names, as `append` writes them.
    public static func header(of path: String) throws -> [String]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        try InputFile.check(path)
        guard let handle = FileHandle(forReadingAtPath: path) else { throw OrthoHashError("cannot read", file: path) }
        defer { try? handle.close() }
        let start = (try? handle.read(upToCount: 1 << 16)) ?? nil ?? Data()
        guard !start.isEmpty else { return nil }
        let line = String(decoding: start.prefix { $0 != 10 && $0 != 13 }, as: UTF8.self)
        return line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    }

    public static func quote(_ s: String) -> String {
        s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}
