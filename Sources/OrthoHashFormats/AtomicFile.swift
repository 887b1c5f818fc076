// Whole-file writes that never leave a partial file under the final name.

import Foundation
import OrthoHashNumerics

/// Whole-file writes that never leave a partial file under the final name: write a temporary
/// file in the same directory, fsync it, rename it over the target, fsync the directory.
public enum AtomicFile {
    /// `beforeRename` runs between the write and the rename (fault-injection tests pause there,
    /// so that a writer can be killed mid-write).
    public static func write(_ data: Data, to path: String, beforeRename: (() -> Void)? = nil) throws {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw OrthoHashError("cannot write: \(String(cString: strerror(errno)))", file: path) }
        var ok = true
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { ok = false; break }
                offset += n
            }
        }
        if ok { ok = fsync(fd) == 0 }
        close(fd)
        guard ok else {
            unlink(temporary)
            throw OrthoHashError("cannot write: \(String(cString: strerror(errno)))", file: path)
        }
        beforeRename?()
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw OrthoHashError("cannot rename into place: \(String(cString: strerror(errno)))", file: path)
        }
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}
