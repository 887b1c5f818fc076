// Temporary directories for the test targets.

import Foundation

/// All of a test process's directories live under one root that is removed when the process
/// exits, so the suite leaves nothing in /tmp. ORTHOHASH_KEEP_TEST_DIRS=1 keeps them for a
/// post-mortem (the root is `$TMPDIR/orthohash-tests-PID`).
public enum TestDirectories {
    static let root: String = {
        let root = NSTemporaryDirectory() + "orthohash-tests-\(getpid())"
        try! FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        if ProcessInfo.processInfo.environment["ORTHOHASH_KEEP_TEST_DIRS"] == nil {
            atexit { try? FileManager.default.removeItem(atPath: TestDirectories.root) }
        }
        return root
    }()

    /// A fresh directory named after the test.
    public static func make(_ name: String) -> String {
        let dir = root + "/\(name.filter { $0.isLetter || $0.isNumber })-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}
