// The numerics module is arithmetic only: it imports the C kernels, BLAS, the C library, atomics and
// Dispatch, and reads no files, clocks or environment (docs/ARCHITECTURE.md). Checked on its
// sources, so that a later change that reaches for one of them fails here rather than in review.

import Foundation
import XCTest

final class BoundaryTests: XCTestCase {
    func testNumericsReadsNoFilesClocksOrEnvironment() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/OrthoHashNumerics")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".swift") }
        XCTAssertGreaterThan(files.count, 10)
        let allowedImports: Set<String> = ["CKernels", "COpenBLAS", "Glibc", "Darwin", "Dispatch", "Synchronization"]
        let forbidden = ["FileManager", "FileHandle", "ProcessInfo", "getenv", "fopen", "open(", "mmap", "clock_gettime",
                         "gettimeofday", "DispatchTime", "Date(", "time(nil)", "print("]
        for file in files {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("import ") {
                let module = String(line.dropFirst("import ".count))
                XCTAssertTrue(allowedImports.contains(module), "\(file) imports \(module)")
            }
            let code = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("//") }.joined(separator: "\n")
            for word in forbidden { XCTAssertFalse(code.contains(word), "\(file) uses \(word)") }
        }
    }
}
