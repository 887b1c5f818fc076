// JSON: the one place that writes it. Codable values (configurations, summaries, checkpoint
// headers) go through Foundation's encoder with sorted keys; everything written by hand (metrics
// lines, command output, the safetensors header) is a JSONValue, which escapes its strings and
// keeps its keys in the order given.

import Foundation
import OrthoHashNumerics

/// A JSON value written by hand. Objects keep their keys in the order given.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    /// Shortest text that reads back as the same Double (Swift's `description`); NaN and the
    /// infinities, which JSON cannot hold, as null.
    case double(Double)
    /// A number with this many digits after the point (`%.6f`): command output meant for people.
    case fixed(Double, digits: Int)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// `spaced`: ", " and ": " between items (metrics lines, command output); otherwise none (files
    /// that other programs parse, such as the safetensors header).
    public func text(spaced: Bool = true) -> String {
        var out = ""
        write(into: &out, spaced: spaced)
        return out
    }

    private func write(into out: inout String, spaced: Bool) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let v): out += String(v)
        case .double(let v): out += v.isFinite ? "\(v)" : "null"
        case .fixed(let v, let digits): out += v.isFinite ? String(format: "%.\(digits)f", v) : "null"
        case .string(let s): JSONValue.escape(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += spaced ? ", " : "," }
                item.write(into: &out, spaced: spaced)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += spaced ? ", " : "," }
                JSONValue.escape(key, into: &out)
                out += spaced ? ": " : ":"
                value.write(into: &out, spaced: spaced)
            }
            out += "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped (RFC 8259).
    static func escape(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    public static func == (a: JSONValue, b: JSONValue) -> Bool { a.text() == b.text() }
}

/// Codable values as JSON, and settings compared field by field.
public enum JSON {
    /// Sorted keys; `pretty` adds indentation (files people read, such as config.json).
    public static func encode<T: Encodable>(_ value: T, pretty: Bool = true) -> Data {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        do { return try e.encode(value) } catch {
            // Our Codable types hold no values JSON cannot represent once validated; a NaN that
            // slipped through is a programming error.
            preconditionFailure("JSON encoding of \(T.self) failed: \(error)")
        }
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, file: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw OrthoHashError("invalid JSON: \(describe(error))", file: file)
        }
    }

    /// An encodable value as a JSON object (field name -> value), for comparing settings field by field.
    public static func object<T: Encodable>(_ value: T) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: encode(value, pretty: false)) as? [String: Any]) ?? [:]
    }

    /// One field's value (from `object`) as canonical JSON text ("nil" when absent): equal texts, equal values.
    public static func text(_ value: Any?) -> String {
        guard let value else { return "nil" }
        let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
        return data.map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
    }

    /// The fields in which two encodable values differ, sorted (empty: equal).
    public static func differingFields<T: Encodable>(_ a: T, _ b: T) -> [String] {
        let x = object(a), y = object(b)
        return Set(x.keys).union(y.keys).sorted().filter { text(x[$0]) != text(y[$0]) }
    }

    /// A decoding error in one line, naming the field where there is one.
    static func describe(_ error: Error) -> String {
        guard let e = error as? DecodingError else { return error.localizedDescription.replacingOccurrences(of: "\n", with: " ") }
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at '\(p)'"
        }
        switch e {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            return c.debugDescription.replacingOccurrences(of: "\n", with: " ") + path(c)
        case .keyNotFound(let key, let c): return "missing field '\(key.stringValue)'" + path(c)
        @unknown default: return error.localizedDescription
        }
    }
}
