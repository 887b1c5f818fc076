// Whole-file writes that never leave a partial file under the final name, and the checks that
// keep reads and writes to regular files.

import Foundation
import OrthoHashNumerics

/// Whole-file writes that never leave a partial file under the final name: write a temporary
/// file `.NAME.tmp-PID` in the same directory, fsync it, rename it over the target, fsync the
/// directory. A target that exists and is not a regular file (a directory, a device, a FIFO) is
/// refused; a symbolic link is followed, so the file it names is replaced.
public enum AtomicFile {
    /// `beforeRename` runs between the write and the rename (fault-injection tests pause there,
    /// so that a writer can be killed mid-write).
    public static func write(_ data: Data, to path: String, beforeRename: (() -> Void)? = nil) throws {
        let target = try writableTarget(path)
        let url = URL(fileURLWithPath: target)
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw OrthoHashError("cannot write: \(String(cString: strerror(errno)))", file: path) }
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { failure = n == 0 ? EIO : errno; break }
                offset += n
            }
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        guard failure == 0 else {
            unlink(temporary)
            throw OrthoHashError("cannot write: \(String(cString: strerror(failure)))", file: path)
        }
        beforeRename?()
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw OrthoHashError("cannot rename into place: \(reason)", file: path)
        }
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Whether `name` is a temporary file of this writer (`.NAME.tmp-PID`).
    public static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(".tmp-") }

    /// Removes the temporary files writers killed mid-write left in `directory`.
    public static func removeTemporaries(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where isTemporary(name) { try? FileManager.default.removeItem(atPath: directory + "/" + name) }
    }

    /// The path a write to `path` replaces: `path`, or the file a symbolic link there names.
    static func writableTarget(_ path: String) throws -> String {
        var target = path
        var info = stat()
        for _ in 0..<16 {
            guard lstat(target, &info) == 0 else { return target }          // no such file yet: created
            switch info.st_mode & S_IFMT {
            case S_IFREG: return target
            case S_IFLNK:
                guard let next = try? FileManager.default.destinationOfSymbolicLink(atPath: target) else { return target }
                target = next.hasPrefix("/") ? next : URL(fileURLWithPath: target).deletingLastPathComponent().appendingPathComponent(next).path
            default:
                throw OrthoHashError("exists and is \(FileKind(info.st_mode)), not a regular file", file: path,
                                     hint: "write to a new or a regular file")
            }
        }
        throw OrthoHashError("too many symbolic links", file: path)
    }
}

/// What a path names, for messages.
struct FileKind: CustomStringConvertible {
    let mode: mode_t
    init(_ mode: mode_t) { self.mode = mode }
    var description: String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR, S_IFBLK: return "a device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }
}

/// Inputs are regular files: a FIFO would block the reader forever, a directory or a device is
/// a mistake. Checked with stat (which does not block), before anything opens the file.
public enum InputFile {
    public static func check(_ path: String, missingHint: String? = nil) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { throw OrthoHashError("no such file", file: path, hint: missingHint) }
            throw OrthoHashError("cannot read: \(String(cString: strerror(errno)))", file: path)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw OrthoHashError("is \(FileKind(info.st_mode)), not a regular file", file: path)
        }
    }
}
