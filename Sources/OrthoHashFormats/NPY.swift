// NumPy .npy files: read through a memory map (a process touches only the rows it uses), write
// whole arrays. Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

import CKernels
import Foundation
import OrthoHashNumerics

public enum NPYType: String, Sendable {
    case float16 = "f2", float32 = "f4", float64 = "f8"
    case int8 = "i1", uint8 = "u1", int16 = "i2", uint16 = "u2", int32 = "i4", uint32 = "u4"
    case int64 = "i8", uint64 = "u8", bool = "b1"

    public var size: Int { Int(rawValue.dropFirst())! }
}

/// A read-only, memory-mapped .npy array in C order.
public final class NPYArray {
    public let path: String
    public let type: NPYType
    public let shape: [Int]
    let base: UnsafeMutableRawPointer?
    let mappedLength: Int
    /// Start of the data, inside the mapping.
    public let data: UnsafeRawPointer

    public var rows: Int { shape.first ?? 1 }
    /// Elements per row (1 for a 1-D array).
    public var rowLength: Int { shape.dropFirst().reduce(1, *) }

    public init(path: String) throws {
        self.path = path
        try InputFile.check(path)
        // O_NONBLOCK: should the path have become a FIFO since the check, open does not wait for a writer.
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            throw OrthoHashError(errno == ENOENT ? "no such file" : "cannot open: \(String(cString: strerror(errno)))", file: path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw OrthoHashError("cannot stat", file: path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw OrthoHashError("not a regular file", file: path) }
        let length = Int(st.st_size)
        guard length >= 10 else { throw OrthoHashError("truncated: \(length) bytes is too short for a .npy header", file: path) }
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw OrthoHashError("cannot map: \(String(cString: strerror(errno)))", file: path)
        }
        base = map
        mappedLength = length
        let bytes = UnsafeRawBufferPointer(start: map, count: length)
        let parsed: (NPYType, [Int], Int)
        do {
            parsed = try NPYArray.parseHeader(bytes, path: path)
        } catch {
            munmap(map, length)
            throw error
        }
        (type, shape) = (parsed.0, parsed.1)
        // The shape comes from the file: its product is checked, not trusted.
        guard let elements = checkedProduct(shape), let bytes = checkedProduct([elements, type.size]), bytes <= length - parsed.2 else {
            munmap(map, length)
            throw OrthoHashError("truncated: header promises shape \(shape) of \(type.rawValue) but the file has \(length) bytes", file: path)
        }
        let needed = parsed.2 + bytes
        guard needed <= length else {
            munmap(map, length)
            throw OrthoHashError("truncated: header promises shape \(shape) of \(type.rawValue) (\(needed) bytes) but the file has \(length)", file: path)
        }
        data = UnsafeRawPointer(map + parsed.2)
    }

    deinit { if let base { munmap(base, mappedLength) } }

    static func parseHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (NPYType, [Int], Int) {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard Array(bytes[0..<6]) == magic else { throw OrthoHashError("not a .npy file (wrong magic)", file: path) }
        let major = bytes[6]
        var headerLength: Int, headerStart: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw OrthoHashError("truncated .npy header", file: path) }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default: throw OrthoHashError("unsupported .npy version \(major)", file: path)
        }
        guard headerStart + headerLength <= bytes.count else { throw OrthoHashError("truncated .npy header", file: path) }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func value(of key: String) throws -> Substring {
            guard let r = header.range(of: "'\(key)':") else { throw OrthoHashError("malformed .npy header: no '\(key)'", file: path) }
            return header[r.upperBound...].drop(while: { $0 == " " })
        }
        let descrField = try value(of: "descr")
        guard let q = descrField.first, q == "'" || q == "\"",
              let end = descrField.dropFirst().firstIndex(of: q) else {
            throw OrthoHashError("malformed .npy header: descr", file: path)
        }
        let descr = String(descrField[descrField.index(after: descrField.startIndex)..<end])
        var code = Substring(descr)
        if let first = code.first, "<>|=".contains(first) {
            if first == ">" && !descr.hasSuffix("1") {
                // The same type little-endian: labels stay integers, features floats.
                throw OrthoHashError("unsupported dtype '\(descr)': big-endian", file: path, hint: "save it little-endian: astype('<\(descr.dropFirst())')")
            }
            code = code.dropFirst()
        }
        guard let type = NPYType(rawValue: String(code)) else {
            throw OrthoHashError("unsupported dtype '\(descr)'", file: path, hint: "use float32/float16 features, int32/int64 labels")
        }
        let fortran = try value(of: "fortran_order")
        if fortran.hasPrefix("True") {
            throw OrthoHashError("Fortran order is not supported", file: path, hint: "save with np.ascontiguousarray")
        }
        let shapeField = try value(of: "shape")
        guard shapeField.first == "(", let close = shapeField.firstIndex(of: ")") else {
            throw OrthoHashError("malformed .npy header: shape", file: path)
        }
        let inside = shapeField[shapeField.index(after: shapeField.startIndex)..<close]
        var shape: [Int] = []
        for part in inside.split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let n = Int(t.hasSuffix("L") ? String(t.dropLast()) : t), n >= 0 else {
                throw OrthoHashError("malformed .npy header: shape \(inside)", file: path)
            }
            shape.append(n)
        }
        return (type, shape, headerStart + headerLength)
    }

    /// Element `i` (flat index) as a Double, for labels and small arrays.
    @inline(__always)
    public func double(at i: Int) -> Double {
        let p = data + i * type.size
        switch type {
        case .float16: return Double(Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self))))
        case .float32: return Double(p.loadUnaligned(as: Float.self))
        case .float64: return p.loadUnaligned(as: Double.self)
        case .int8: return Double(p.load(as: Int8.self))
        case .uint8, .bool: return Double(p.load(as: UInt8.self))
        case .int16: return Double(p.loadUnaligned(as: Int16.self))
        case .uint16: return Double(p.loadUnaligned(as: UInt16.self))
        case .int32: return Double(p.loadUnaligned(as: Int32.self))
        case .uint32: return Double(p.loadUnaligned(as: UInt32.self))
        case .int64: return Double(p.loadUnaligned(as: Int64.self))
        case .uint64: return Double(p.loadUnaligned(as: UInt64.self))
        }
    }

    /// Copies row `row` (float16/32/64) into `out` as Float; returns false if it holds NaN or Inf.
    @inline(__always)
    public func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) -> Bool {
        let n = rowLength
        let p = data + row * n * type.size
        var finite = true
        switch type {
        case .float32:
            out.update(from: p.assumingMemoryBound(to: Float.self), count: n)
            for i in 0..<n where !out[i].isFinite { finite = false }
        case .float16:
            finite = oh_half_to_float(out, p.assumingMemoryBound(to: UInt16.self), n) != 0
        default:
            for i in 0..<n { out[i] = Float(double(at: row * n + i)) }
            for i in 0..<n where !out[i].isFinite { finite = false }
        }
        return finite
    }
}

public enum NPYWriter {
    /// Writes a C-order array of `type` with the raw little-endian `bytes`, atomically.
    public static func write(path: String, type: NPYType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        let endian = type.size == 1 ? "|" : "<"
        var header = "{'descr': '\(endian)\(type.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so the data starts on a multiple of 64 bytes, header ending in a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let n = header.utf8.count
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(header.data(using: .ascii)!)
        out.append(Data(bytes))
        try AtomicFile.write(out, to: path)
    }

    public static func write(path: String, shape: [Int], floats: [Float]) throws {
        try floats.withUnsafeBytes { try write(path: path, type: .float32, shape: shape, bytes: $0) }
    }

    public static func write(path: String, shape: [Int], int8: [Int8]) throws {
        try int8.withUnsafeBytes { try write(path: path, type: .int8, shape: shape, bytes: $0) }
    }

    public static func write(path: String, shape: [Int], uint8: [UInt8]) throws {
        try uint8.withUnsafeBytes { try write(path: path, type: .uint8, shape: shape, bytes: $0) }
    }

    public static func write(path: String, shape: [Int], int64: [Int64]) throws {
        try int64.withUnsafeBytes { try write(path: path, type: .int64, shape: shape, bytes: $0) }
    }

    public static func write(path: String, shape: [Int], int32: [Int32]) throws {
        try int32.withUnsafeBytes { try write(path: path, type: .int32, shape: shape, bytes: $0) }
    }
}
