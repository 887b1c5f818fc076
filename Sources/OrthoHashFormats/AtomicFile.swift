// Whole-file writes that never leave a partial file under the final name, and the checks that
// keep reads and writes to regular files.

import Foundation
import OrthoHashNumerics

/// Writes all of `bytes` to `fd`, again after a short write or an interrupted call; 0, or the
/// errno of the write that failed (EIO for one that wrote nothing).
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
    var offset = 0
    while offset < bytes.count {
        let n = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return n == 0 ? EIO : errno }
        offset += n
    }
    return 0
}

/// `writeAll` of a string's UTF-8 bytes.
public func writeAll(_ fd: Int32, _ text: String) -> Int32 {
    var text = text
    return text.withUTF8 { writeAll(fd, UnsafeRawBufferPointer($0)) }
}

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
        removeDeadTemporaries(of: url.lastPathComponent, in: directory)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw OrthoHashError("cannot write: \(String(cString: strerror(errno)))", file: path) }
        var failure = data.withUnsafeBytes { writeAll(fd, $0) }
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

    /// Removes `.NAME.tmp-PID` files of `name` whose writer is no longer running (killed
    /// mid-write): a search or export killed once leaves nothing behind for good.
    static func removeDeadTemporaries(of name: String, in directory: String) {
        let prefix = "." + name + ".tmp-"
        for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where file.hasPrefix(prefix) {
            guard let pid = Int32(file.dropFirst(prefix.count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + file) }
        }
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

/// A file the product appends to (metrics.jsonl, steps.csv, bench's --csv): created when missing,
/// refused unless it is a regular file (a FIFO would block the writer, and a stop request with
/// it), opened without blocking, and every write's failure (a full disk, a closed file) thrown
/// with the file's name instead of trapping as Foundation's FileHandle.write does.
public final class AppendFile {
    public let path: String
    let fd: Int32

    public init(_ path: String) throws {
        self.path = path
        // O_NONBLOCK: opening a FIFO without a reader fails (ENXIO) instead of waiting for one.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let reason = errno == ENXIO ? "is a FIFO, not a regular file" : "cannot be opened for writing: \(String(cString: strerror(errno)))"
            throw OrthoHashError(reason, file: path)
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            let kind = FileKind(info.st_mode)
            close(fd)
            throw OrthoHashError("is \(kind), not a regular file", file: path, hint: "append to a new or a regular file")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        self.fd = fd
    }

    deinit { close(fd) }

    /// Appends `text`; throws naming the file when the system refuses (ENOSPC, EIO, ...).
    public func write(_ text: String) throws {
        let failure = writeAll(fd, text)
        if failure != 0 { throw OrthoHashError("cannot write: \(String(cString: strerror(failure)))", file: path) }
    }

    /// Flushes to the disk; a failure is thrown as `write`'s are.
    public func sync() throws {
        if fsync(fd) != 0 && errno != EINVAL { throw OrthoHashError("cannot write: \(String(cString: strerror(errno)))", file: path) }
    }

    /// Opens `path`, appends `text` (and syncs it when `sync`), closes it.
    public static func append(_ text: String, to path: String, sync: Bool = false) throws {
        let file = try AppendFile(path)
        try file.write(text)
        if sync { try file.sync() }
    }
}

/// A file a command will write (its --out, --csv, --timeline; whole or appended), checked before
/// any work starts: its directory exists and is writable, and the path, if it exists, names a
/// regular file (through symbolic links), so that a run never ends in a refused write.
public enum OutputFile {
    public static func check(_ path: String, flag: String) throws {
        guard !path.isEmpty else { throw OrthoHashError("\(flag) needs a file name") }
        let target = try AtomicFile.writableTarget(path)
        let directory = (target as NSString).deletingLastPathComponent
        let dir = directory.isEmpty ? "." : directory
        var info = stat()
        guard stat(dir, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw OrthoHashError("\(flag) \(path): the directory \(dir) does not exist")
        }
        guard access(dir, W_OK) == 0 else { throw OrthoHashError("\(flag) \(path): the directory \(dir) is not writable") }
    }

    /// The file a path names, for comparing outputs with inputs and with each other: the
    /// device and inode of an existing file, else the resolved directory and the name.
    public static func identity(_ path: String) -> String {
        var info = stat()
        if stat(path, &info) == 0 { return "inode \(info.st_dev):\(info.st_ino)" }
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: directory)) ?? directory
        var dirInfo = stat()
        if stat(resolved, &dirInfo) == 0 { return "in \(dirInfo.st_dev):\(dirInfo.st_ino) \(url.lastPathComponent)" }
        return url.standardizedFileURL.path
    }

    /// Checks each of a command's outputs (`check`), and refuses one that is one of its inputs or
    /// another of its outputs: writing it would destroy what the command reads, or one output
    /// the other.
    public static func check(outputs: [(flag: String, path: String)], inputs: [(what: String, path: String)]) throws {
        for (flag, path) in outputs { try check(path, flag: flag) }
        var seen: [String: String] = [:]
        let read = Dictionary(inputs.map { (identity($0.path), $0.what) }, uniquingKeysWith: { a, _ in a })
        for (flag, path) in outputs {
            let id = identity(path)
            if let what = read[id] {
                throw OrthoHashError("\(flag) \(path) is \(what): writing it would destroy what this command reads",
                                     hint: "write the output to another file")
            }
            if let other = seen[id] { throw OrthoHashError("\(flag) and \(other) name the same file, \(path): one would replace the other") }
            seen[id] = flag
        }
    }
}
