// The checkpoint file: a versioned container of a JSON header and binary sections, checksummed.
//
// Layout (little-endian):
//   "OHCKPT\0\0"            8 bytes magic
//   version                 UInt32 (1)
//   header length           UInt32
//   header                  JSON (the training state; see OrthoHashTraining's Checkpoint)
//   sections                each: UInt64 byte count, then the bytes
//   CRC-32                  UInt32 over everything above
//   "OHEND\0\0\0"           8 bytes

import CZlib
import Foundation
import OrthoHashNumerics

public enum CheckpointFile {
    static let magic: [UInt8] = Array("OHCKPT".utf8) + [0, 0]
    static let endMagic: [UInt8] = Array("OHEND".utf8) + [0, 0, 0]
    public static let version: UInt32 = 1

    /// The file's bytes for a header and its sections.
    public static func serialize(header: Data, sections: [UnsafeRawBufferPointer]) -> Data {
        var out = Data(magic)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        u32(version)
        u32(UInt32(header.count))
        out.append(header)
        for s in sections {
            u64(UInt64(s.count))
            out.append(contentsOf: s)
        }
        let crc = out.withUnsafeBytes { UInt32(crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt($0.count))) }
        u32(crc)
        out.append(contentsOf: endMagic)
        return out
    }

    /// The header and the first `sections` sections of a checkpoint's bytes, checked: magic, end
    /// marker, checksum, version, and that every length stays inside the file. Errors name `path`.
    public static func parse(_ bytes: [UInt8], sections count: Int, path: String) throws -> (header: Data, sections: [ArraySlice<UInt8>]) {
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
        guard version == CheckpointFile.version else {
            throw OrthoHashError("checkpoint format version \(version) is not supported (this build reads \(CheckpointFile.version))", file: path)
        }
        let headerLength = Int(u32(12))
        var at = 16 + headerLength
        guard at <= body else { throw fail("header overruns the file") }
        var sections: [ArraySlice<UInt8>] = []
        for _ in 0..<count {
            guard at + 8 <= body else { throw fail("missing section") }
            let n = u64(at); at += 8
            guard n <= UInt64(body - at) else { throw fail("section overruns the file") }
            sections.append(bytes[at..<(at + Int(n))])
            at += Int(n)
        }
        return (Data(bytes[16..<(16 + headerLength)]), sections)
    }
}
