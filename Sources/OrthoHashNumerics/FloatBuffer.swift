// Flat float32 buffers: the storage of parameters, gradients, activations and workspaces.

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A fixed-size Float buffer, allocated once and freed with its owner. Training-loop code works
/// on its pointer; nothing in the loop allocates.
public final class FloatBuffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// What deinit does: free the memory, or hand borrowed memory (such as MPI's shared-memory
    /// window) back to its owner.
    private let release: (() -> Void)?

    public init(count: Int) {
        self.count = count
        pointer = FloatBuffer.allocate(count: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        release = nil
    }

    /// `count` zeroed floats at `pointer` that someone else owns; `release` returns them.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int, release: @escaping () -> Void) {
        self.pointer = pointer
        self.count = count
        self.release = release
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { if let release { release() } else { free(pointer) } }

    /// Buffers of 2 MB or more are aligned to 2 MB and offered to the kernel for transparent huge
    /// pages (MADV_HUGEPAGE; a no-op where THP is off).
    private static func allocate(count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = count * MemoryLayout<Float>.stride
        let huge = 1 << 21
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, bytes >= huge ? huge : 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        if bytes >= huge { _ = madvise(raw, bytes, 14 /* MADV_HUGEPAGE */) }
        return raw.bindMemory(to: Float.self, capacity: count)
    }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}
