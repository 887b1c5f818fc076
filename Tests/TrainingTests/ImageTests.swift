// The image pipeline against what Pillow computes (Tests/Fixtures/images, written by
// bench/pil_transforms.py with Pillow): decoding of every kind of JPEG and PNG to RGB, the
// bilinear resize (shrinking and growing), resized crops and torchvision's test transform, all
// byte for byte; the normalisation; list files and their refusals; the training crops' draws.

import Foundation
import XCTest
import OrthoHashFormats
import OrthoHashNumerics
import TestSupport
@testable import OrthoHashTraining

final class ImageTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images").path

    func expected() throws -> [String: [String: Any]] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/expected.json"))) as! [String: [String: Any]]
    }

    func bytes(_ v: Any?) -> [UInt8] { (v as! [Int]).map { UInt8($0) } }

    /// Byte-for-byte equality, reported as the count of differing bytes and the largest difference.
    func assertSameBytes(_ got: [UInt8], _ want: [UInt8], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what, file: file, line: line)
        let differing = zip(got, want).filter { $0 != $1 }
        let largest = differing.map { abs(Int($0) - Int($1)) }.max() ?? 0
        XCTAssertTrue(differing.isEmpty, "\(what): \(differing.count) of \(want.count) bytes differ, by up to \(largest)", file: file, line: line)
    }

    /// Pillow's decoding (Image.open(f).convert("RGB")) and its bilinear resizes, byte for byte.
    func testDecodeAndResizeAsPillow() throws {
        let all = try expected()
        XCTAssertEqual(all.count, 8)
        for (name, e) in all.sorted(by: { $0.key < $1.key }) {
            let image = try ImageFile.read(Self.fixtures + "/" + name)
            XCTAssertEqual(image.width, e["width"] as! Int, name)
            XCTAssertEqual(image.height, e["height"] as! Int, name)
            assertSameBytes(image.pixels, bytes(e["rgb"]), "\(name): decoded RGB")
            for r in e["resized"] as! [[String: Any]] {
                let w = r["width"] as! Int, h = r["height"] as! Int
                assertSameBytes(image.resized(width: w, height: h).pixels, bytes(r["rgb"]), "\(name): resized to \(w)x\(h)")
            }
            for c in e["crops"] as! [[String: Any]] {
                let s = c["size"] as! Int
                let crop = (x: c["x"] as! Int, y: c["y"] as! Int, width: c["width"] as! Int, height: c["height"] as! Int)
                assertSameBytes(image.resized(width: s, height: s, crop: crop).pixels, bytes(c["rgb"]), "\(name): crop \(crop) to \(s)")
            }
            for t in e["test"] as! [[String: Any]] {
                let out = ImageTransform.resizedCentreCrop(image, resize: t["resize"] as! Int, size: t["size"] as! Int)
                assertSameBytes(out.pixels, bytes(t["rgb"]), "\(name): Resize(\(t["resize"]!)) + CenterCrop(\(t["size"]!))")
            }
        }
    }

    /// ToTensor then Normalize, in CHW order, and the mirror image.
    func testNormalisation() throws {
        let image = RGBImage(width: 2, height: 1, pixels: [0, 128, 255, 10, 20, 30])
        let out = FloatBuffer(count: 6), flipped = FloatBuffer(count: 6)
        image.normalised(into: out.pointer, mean: ImageTransform.mean, std: ImageTransform.std)
        image.normalised(into: flipped.pointer, mean: ImageTransform.mean, std: ImageTransform.std, flip: true)
        let m = ImageTransform.mean, s = ImageTransform.std
        XCTAssertEqual(out.array, [(0 / 255 - m[0]) / s[0], (10 / 255 - m[0]) / s[0], (128 / 255 - m[1]) / s[1], (20 / 255 - m[1]) / s[1],
                                   (255 / 255 - m[2]) / s[2], (30 / 255 - m[2]) / s[2]])
        XCTAssertEqual(flipped.array, [out[1], out[0], out[3], out[2], out[5], out[4]])
    }

    /// A file that is not a whole JPEG or PNG is refused in one line naming it.
    func testBadImagesAreRefused() throws {
        let dir = temporaryDirectory()
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/rgb.jpg"))
        let png = try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/rgb.png"))
        let cases: [(String, Data, String)] = [("cut.jpg", jpeg.prefix(jpeg.count / 2), "JPEG"), ("cut.png", png.prefix(png.count / 2), "PNG"),
                                               ("text.jpg", Data("hello".utf8), "neither a JPEG nor a PNG"), ("empty.png", Data(), "empty file")]
        for (name, data, what) in cases {
            try data.write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
            assertUserError(what, file: name) { _ = try ImageFile.read("\(dir)/\(name)") }
        }
        assertUserError("no such file", file: "missing.jpg") { _ = try ImageFile.read("\(dir)/missing.jpg") }
    }

    func writeList(_ text: String, in dir: String, name: String = "list.txt") throws -> String {
        let path = "\(dir)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testListFiles() throws {
        let dir = temporaryDirectory()
        // Class indices; blank lines and CRLF; relative paths from the list's directory, absolute ones as they are.
        let single = try ImageList.read(try writeList("a.jpg 3\r\n\nsub/b.png 0\r\n/abs/c.jpg 7\n", in: dir), root: nil)
        XCTAssertEqual(single.images, ["\(dir)/a.jpg", "\(dir)/sub/b.png", "/abs/c.jpg"])
        XCTAssertEqual(single.labels, .single([3, 0, 7]))
        XCTAssertEqual(try ImageList.read(dir + "/list.txt", root: "/data").images, ["/data/a.jpg", "/data/sub/b.png", "/abs/c.jpg"])
        // One-hot rows (the authors' ImageNet100 lists) are single-label; multi-hot rows are not.
        XCTAssertEqual(try ImageList.read(try writeList("a.jpg 0 0 1\nb.jpg 1 0 0\n", in: dir), root: nil).labels, .single([2, 0]))
        XCTAssertEqual(try ImageList.read(try writeList("a.jpg 0 1 1\nb.jpg 1 0 0\n", in: dir), root: nil).labels,
                       .multi(classes: 3, [0, 1, 1, 1, 0, 0]))
        let refusals: [(String, String)] = [
            ("a.jpg\n", "line 1: a path without a label"),
            ("a.jpg 1\nb.jpg 0 1\n", "line 2: 2 label values, the lines before have 1"),
            ("a.jpg 0 1\n\nb.jpg 0 2\n", "line 3: the label value '2' is not 0 or 1"),
            ("a.jpg -1\n", "line 1: the class index '-1' is not a non-negative integer"),
            ("a.jpg x\n", "line 1: the class index 'x'"),
            ("a.jpg 0 0\n", "line 1: a multi-hot label with no positive class"),
            ("\n\n", "the list has no images"),
        ]
        for (text, message) in refusals {
            let path = try writeList(text, in: dir, name: "bad.txt")
            assertUserError(message, file: path) { _ = try ImageList.read(path, root: nil) }
        }
    }

    /// RandomResizedCrop's draws: inside the image, of area 8-100% and aspect 3/4-4/3 (but for
    /// rounding), a function of (seed, epoch, row); the fallback's centre crop for extreme shapes.
    func testRandomResizedCropDraws() throws {
        for row in 0..<200 {
            var rng = Xoshiro256(seed: 5 ^ UInt64(row), stream: 9)
            let c = ImageTransform.randomResizedCrop(width: 300, height: 200, rng: &rng)
            XCTAssertTrue(c.x >= 0 && c.y >= 0 && c.x + c.width <= 300 && c.y + c.height <= 200, "\(c)")
            let area = Double(c.width * c.height) / 60_000, aspect = Double(c.width) / Double(c.height)
            XCTAssertTrue(area > 0.07 && area <= 1.0 && aspect > 0.7 && aspect < 1.4, "\(c)")
        }
        var rng = Xoshiro256(seed: 1)
        // 1000 x 10: no draw fits within 10 tries' reach of such an aspect; the centre crop of ratio 4/3.
        let wide = ImageTransform.randomResizedCrop(width: 1000, height: 10, rng: &rng)
        XCTAssertEqual(wide.height, 10)
        XCTAssertLessThanOrEqual(wide.width, 1000)
        // The same (seed, epoch, row): the same crop and flip; another epoch: another.
        let image = try ImageFile.read(Self.fixtures + "/rgb.jpg")
        let t = ImageTransform(kind: .train, size: 16, testResize: 16, seed: 3)
        let a = FloatBuffer(count: 3 * 16 * 16), b = FloatBuffer(count: 3 * 16 * 16), c = FloatBuffer(count: 3 * 16 * 16)
        t.apply(image, epoch: 2, row: 7, into: a.pointer)
        t.apply(image, epoch: 2, row: 7, into: b.pointer)
        t.apply(image, epoch: 3, row: 7, into: c.pointer)
        XCTAssertEqual(a.array, b.array)
        XCTAssertNotEqual(a.array, c.array)
    }

    /// NUS-WIDE's and MS-COCO's training crop: Resize of the shorter side, then RandomCrop (top,
    /// then left, as torchvision draws them), as bytes.
    func testResizeRandomCrop() throws {
        let image = try ImageFile.read(Self.fixtures + "/rgb.jpg")         // 53 x 37
        XCTAssertEqual([image.width, image.height], [53, 37])
        for seed in UInt64(0)..<5 {
            var rng = Xoshiro256(seed: seed, stream: 1)
            var same = rng
            let out = ImageTransform.resizedRandomCrop(image, resize: 20, size: 16, rng: &rng)
            let resized = image.resized(width: 28, height: 20)            // int(20 x 53 / 37) = 28
            let top = same.nextInt(below: 5), left = same.nextInt(below: 13)
            XCTAssertEqual(out, resized.resized(width: 16, height: 16, crop: (left, top, 16, 16)), "seed \(seed)")
        }
    }
}
