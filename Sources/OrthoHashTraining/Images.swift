// Images from list files (`--dataset images`), as the authors' code and DeepHash-pytorch read
// them: one image per line, a path then either one class index or C values 0/1 (multi-hot).
// Rows are decoded (libjpeg-turbo, libpng) and transformed when they are read, as torchvision
// transforms PIL images:
//   training   RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) and a horizontal flip (p 0.5)
//              (ImageNet100), or Resize(testResize) then RandomCrop(size) and the flip (NUS-WIDE
//              at 256, MS-COCO at 224: `--train-transform resize-random-crop`)
//   test       Resize(testResize) (the shorter side) then CenterCrop(size)
// then ToTensor and Normalize with ImageNet's mean and std. A training row's random draws are a
// function of (seed, epoch, row): any number of ranks, and a resumed run, draw the same crops.
//
// Dimensions: S = the crop's side (size), D = 3 S S.

import Dispatch
import Foundation
import OrthoHashFormats
import OrthoHashNumerics

/// One list file: its images' paths (resolved against the image root) and labels.
public struct ImageList {
    public let path: String
    public let images: [String]
    public let labels: Labels

    /// Reads `path`: every line a path then one class index (single-label) or C values 0/1
    /// (multi-hot; lists where every line has exactly one 1, as the authors' ImageNet100 lists,
    /// read as single-label with that class). Blank lines are skipped; anything else malformed is
    /// refused naming its line. Relative image paths are taken from `root` (default: the list's
    /// directory).
    public static func read(_ path: String, root: String?) throws -> ImageList {
        try InputFile.check(path)
        guard let data = FileManager.default.contents(atPath: path) else { throw OrthoHashError("cannot read the list", file: path) }
        guard let text = String(data: data, encoding: .utf8) else { throw OrthoHashError("not UTF-8 text", file: path) }
        let base = root ?? (path as NSString).deletingLastPathComponent
        var images: [String] = []
        var indices: [Int32] = []
        var hot: [UInt8] = [], width: Int? = nil, allOneHot = true
        // Split on \n and \r\n alike (Swift's "\r\n" is one Character).
        for (n, rawLine) in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(String.UnicodeScalarView(rawLine)).trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\r")))
            if line.isEmpty { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            let lineNumber = n + 1
            func bad(_ why: String) -> OrthoHashError {
                OrthoHashError("line \(lineNumber): \(why)", file: path, hint: "each line: an image path, then one class index or C values 0/1")
            }
            guard fields.count >= 2 else { throw bad("a path without a label") }
            let values = fields.dropFirst()
            if width == nil { width = values.count }
            guard values.count == width else {
                throw bad("\(values.count) label value\(values.count == 1 ? "" : "s"), the lines before have \(width!)")
            }
            let file = String(fields[0])
            images.append(file.hasPrefix("/") ? file : (base as NSString).appendingPathComponent(file))
            if values.count == 1 {
                guard let c = Int32(values.first!), c >= 0 else { throw bad("the class index '\(values.first!)' is not a non-negative integer") }
                indices.append(c)
            } else {
                var positives = 0
                for v in values {
                    guard v == "0" || v == "1" else { throw bad("the label value '\(v)' is not 0 or 1") }
                    hot.append(v == "1" ? 1 : 0)
                    if v == "1" { positives += 1 }
                }
                guard positives > 0 else { throw bad("a multi-hot label with no positive class") }
                if positives != 1 { allOneHot = false }
            }
        }
        guard !images.isEmpty else { throw OrthoHashError("the list has no images", file: path) }
        let labels: Labels
        if width == 1 {
            labels = .single(indices)
        } else if allOneHot {
            let C = width!
            labels = .single((0..<images.count).map { r in Int32((0..<C).first { hot[r * C + $0] == 1 }!) })
        } else {
            labels = .multi(classes: width!, hot)
        }
        return ImageList(path: path, images: images, labels: labels)
    }
}

/// The training crop of the authors' pipelines.
public enum TrainTransform: String, Codable, CaseIterable, Sendable {
    /// RandomResizedCrop(size): ImageNet100's.
    case randomResizedCrop = "random-resized-crop"
    /// Resize(testResize) of the shorter side, then RandomCrop(size): NUS-WIDE's (256) and MS-COCO's (224).
    case resizeRandomCrop = "resize-random-crop"
}

/// The transforms of a split (the authors' pipelines).
public struct ImageTransform: Equatable, Sendable {
    public enum Kind: Equatable, Sendable { case train, test }
    public var kind: Kind
    /// The training crop (`kind` train).
    public var training = TrainTransform.randomResizedCrop
    /// The side S of the square crop the backbone takes.
    public var size: Int
    /// Test: the shorter side is resized to this before the centre crop.
    public var testResize: Int
    public var seed: UInt64
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let std: [Float] = [0.229, 0.224, 0.225]

    public init(kind: Kind, size: Int, testResize: Int, seed: UInt64) {
        self.kind = kind; self.size = size; self.testResize = testResize; self.seed = seed
    }

    /// torchvision's RandomResizedCrop.get_params with our generator: (x, y, width, height).
    static func randomResizedCrop(width: Int, height: Int, rng: inout Xoshiro256) -> (x: Int, y: Int, width: Int, height: Int) {
        let area = Double(width * height)
        let logRatio = (log(3.0 / 4.0), log(4.0 / 3.0))
        for _ in 0..<10 {
            let target = area * (0.08 + (1 - 0.08) * rng.nextDouble())
            let aspect = exp(logRatio.0 + (logRatio.1 - logRatio.0) * rng.nextDouble())
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let y = rng.nextInt(below: height - h + 1), x = rng.nextInt(below: width - w + 1)
                return (x, y, w, h)
            }
        }
        // torchvision's fallback: the centre crop of the ratio's nearest bound.
        let ratio = Double(width) / Double(height)
        var w = width, h = height
        if ratio < 3.0 / 4.0 { h = Int((Double(w) / (3.0 / 4.0)).rounded(.toNearestOrEven)) }
        else if ratio > 4.0 / 3.0 { w = Int((Double(h) * (4.0 / 3.0)).rounded(.toNearestOrEven)) }
        return ((width - w) / 2, (height - h) / 2, w, h)
    }

    /// torchvision's Resize(s) with an int: the shorter side to s, the longer int(s long / short).
    static func resizedSize(width: Int, height: Int, shorter s: Int) -> (width: Int, height: Int) {
        width <= height ? (s, Int(Double(s) * Double(height) / Double(width))) : (Int(Double(s) * Double(width) / Double(height)), s)
    }

    /// Writes the transformed image (3, S, S) to `out`; `epoch` and `row` pick a training row's draws.
    public func apply(_ image: RGBImage, epoch: Int, row: Int, into out: UnsafeMutablePointer<Float>) {
        switch kind {
        case .train:
            var rng = Xoshiro256(seed: seed ^ (UInt64(row) &* 0x2545_F491_4F6C_DD1D),
                                 stream: RandomStream.imageAugmentation.rawValue + UInt64(epoch))
            switch training {
            case .randomResizedCrop:
                let crop = Self.randomResizedCrop(width: image.width, height: image.height, rng: &rng)
                let flip = rng.nextDouble() < 0.5
                image.resized(width: size, height: size, crop: crop).normalised(into: out, mean: Self.mean, std: Self.std, flip: flip)
            case .resizeRandomCrop:
                Self.resizedRandomCrop(image, resize: testResize, size: size, rng: &rng)
                    .normalised(into: out, mean: Self.mean, std: Self.std, flip: rng.nextDouble() < 0.5)
            }
        case .test:
            Self.resizedCentreCrop(image, resize: testResize, size: size).normalised(into: out, mean: Self.mean, std: Self.std)
        }
    }

    /// torchvision's Resize(resize) then RandomCrop(size) (its draws: top, then left) of a PIL image.
    static func resizedRandomCrop(_ image: RGBImage, resize: Int, size: Int, rng: inout Xoshiro256) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height, shorter: resize)
        let resized = image.resized(width: w, height: h)
        let top = rng.nextInt(below: h - size + 1), left = rng.nextInt(below: w - size + 1)
        return resized.resized(width: size, height: size, crop: (left, top, size, size))
    }

    /// torchvision's Resize(resize) then CenterCrop(size) of a PIL image, as bytes.
    public static func resizedCentreCrop(_ image: RGBImage, resize: Int, size: Int) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height, shorter: resize)
        let resized = image.resized(width: w, height: h)
        // CenterCrop: top int(round((h - S) / 2)), Python's round (half to even).
        let top = Int((Double(h - size) / 2).rounded(.toNearestOrEven)), left = Int((Double(w - size) / 2).rounded(.toNearestOrEven))
        return resized.resized(width: size, height: size, crop: (left, top, size, size))
    }
}

/// The rows of a list file as transformed images (3, S, S), decoded when they are read.
public final class ImageFeatures: FeatureSource {
    public let list: ImageList
    public let transform: ImageTransform
    /// Threads that decode a batch (the run's thread budget).
    public let threads: Int
    public var name: String { list.path }
    public var rows: Int { list.images.count }
    public var dim: Int { 3 * transform.size * transform.size }

    public init(list: ImageList, transform: ImageTransform, threads: Int) {
        self.list = list; self.transform = transform; self.threads = max(1, threads)
    }

    /// One image, decoded and transformed; errors name the image and its line in the list.
    func load(_ row: Int, epoch: Int, into out: UnsafeMutablePointer<Float>) throws {
        let image: RGBImage
        do {
            image = try ImageFile.read(list.images[row])
        } catch var error as OrthoHashError {
            error.hint = "image \(row + 1) of \(list.path)"
            throw error
        }
        transform.apply(image, epoch: epoch, row: row, into: out)
    }

    public func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) throws { try load(row, epoch: 0, into: out) }

    public func gather(_ indices: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>) throws {
        try gather(indices, epoch: 0, into: out, threads: threads)
    }

    public func gather(_ indices: UnsafeBufferPointer<Int32>, epoch: Int, into out: UnsafeMutablePointer<Float>) throws {
        try gather(indices, epoch: epoch, into: out, threads: threads)
    }

    /// Decodes the rows `indices` on `threads` threads; the first error (in row order) is thrown.
    func gather(_ indices: UnsafeBufferPointer<Int32>, epoch: Int, into out: UnsafeMutablePointer<Float>, threads: Int) throws {
        let n = indices.count, D = dim
        let parts = max(1, min(threads, n))
        var errors = [Error?](repeating: nil, count: parts)
        errors.withUnsafeMutableBufferPointer { errors in
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                for i in (n * p / parts)..<(n * (p + 1) / parts) {
                    do { try load(Int(indices[i]), epoch: epoch, into: out + i * D) } catch { errors[p] = error; return }
                }
            }
        }
        if let error = errors.compactMap({ $0 }).first { throw error }
    }

    public func copyRows(_ start: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws {
        let indices = (start..<(start + count)).map { Int32($0) }
        try indices.withUnsafeBufferPointer { try gather($0, epoch: 0, into: out, threads: threads) }
    }
}
