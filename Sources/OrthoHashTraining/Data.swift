// Training, query and database splits: features (rows, D) and labels.
// Dimensions: D = features per row, C = classes.

import CKernels
import Foundation
import OrthoHashFormats
import OrthoHashNumerics

/// Rows of features, read on demand.
public protocol FeatureSource: AnyObject {
    /// The file the rows come from, for error messages.
    var name: String { get }
    var rows: Int { get }
    var dim: Int { get }
    /// Copies row `row` into `out` (D floats); throws naming the file and row if it is not finite.
    func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) throws
    /// Copies the rows `indices` into `out` (indices.count, D).
    func gather(_ indices: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>) throws
    /// The rows `indices` as epoch `epoch` of training sees them (images: their random crops);
    /// the same as `gather` for sources without augmentation.
    func gather(_ indices: UnsafeBufferPointer<Int32>, epoch: Int, into out: UnsafeMutablePointer<Float>) throws
    /// Copies rows [start, start + count) into `out`.
    func copyRows(_ start: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws
}

public extension FeatureSource {
    func gather(_ indices: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>) throws {
        for (i, r) in indices.enumerated() { try copyRow(Int(r), into: out + i * dim) }
    }

    func gather(_ indices: UnsafeBufferPointer<Int32>, epoch: Int, into out: UnsafeMutablePointer<Float>) throws {
        try gather(indices, into: out)
    }

    /// Copies rows [start, start + count) into `out`.
    func copyRows(_ start: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws {
        for i in 0..<count { try copyRow(start + i, into: out + i * dim) }
    }

    /// Reads the rows `range` in chunks of at most `chunk` rows into `buffer` (chunk, D), calling
    /// `body(start, rows)` after each chunk.
    func forEachChunk(_ range: Range<Int>, chunk: Int, into buffer: FloatBuffer,
                      _ body: (Int, Int) throws -> Void) throws {
        precondition(buffer.count >= chunk * dim, "chunk buffer \(buffer.count) < \(chunk) x \(dim)")
        var start = range.lowerBound
        while start < range.upperBound {
            let n = min(chunk, range.upperBound - start)
            try copyRows(start, count: n, into: buffer.pointer)
            try body(start, n)
            start += n
        }
    }
}

/// 8-bit pixels held in memory, mapped to floats through a 256-entry table as rows are copied
/// (Fashion-MNIST). A quarter of the memory of float rows, and of the bytes a batch gather
/// reads; the table holds exactly the floats a conversion at load time would give.
public final class PixelFeatures: FeatureSource {
    public let name: String
    public let rows: Int
    public let dim: Int
    let pixels: [UInt8]
    let table: [Float]

    /// `table[b]` is the feature value of pixel value `b` (256 entries).
    public init(name: String, rows: Int, dim: Int, pixels: [UInt8], table: [Float]) {
        precondition(pixels.count >= rows * dim, "pixel features: \(pixels.count) values < \(rows) x \(dim)")
        precondition(table.count == 256, "pixel table: \(table.count) entries, not 256")
        self.name = name; self.rows = rows; self.dim = dim; self.pixels = pixels; self.table = table
    }

    public func prefix(_ n: Int) -> PixelFeatures {
        PixelFeatures(name: name, rows: min(n, rows), dim: dim, pixels: pixels, table: table)
    }

    public func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) throws {
        pixels.withUnsafeBufferPointer { oh_lookup_bytes(out, $0.baseAddress! + row * dim, dim, table) }
    }

    public func gather(_ indices: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>) throws {
        let d = dim
        pixels.withUnsafeBufferPointer { s in
            for (i, r) in indices.enumerated() { oh_lookup_bytes(out + i * d, s.baseAddress! + Int(r) * d, d, table) }
        }
    }
}

/// Features in a memory-mapped .npy file (float32 or float16, 2-D, C order).
public final class NPYFeatures: FeatureSource {
    public let array: NPYArray
    public let rows: Int
    public var name: String { array.path }
    public var dim: Int { array.rowLength }

    public init(path: String, limit: Int? = nil) throws {
        array = try NPYArray(path: path)
        guard array.shape.count == 2 else {
            throw OrthoHashError("features must be a 2-D array (rows, dim), found shape \(array.shape)", file: path)
        }
        guard array.type == .float32 || array.type == .float16 else {
            throw OrthoHashError("unsupported dtype \(array.type.rawValue) for features", file: path, hint: "use float32 or float16")
        }
        rows = min(limit ?? array.rows, array.rows)
    }

    public func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) throws {
        guard array.copyRow(row, into: out) else {
            throw OrthoHashError("row \(row) holds NaN or Inf", file: name)
        }
    }
}

extension Labels {
    /// Labels from a .npy file: 1-D integers (single-label) or a 2-D 0/1 matrix (multi-label).
    public static func load(path: String, limit: Int? = nil) throws -> Labels {
        let a = try NPYArray(path: path)
        let rows = min(limit ?? a.rows, a.rows)
        switch a.shape.count {
        case 1:
            guard [.int32, .int64, .int16, .int8, .uint8, .uint16, .uint32].contains(a.type) else {
                throw OrthoHashError("unsupported dtype \(a.type.rawValue) for labels", file: path, hint: "use int32 or int64")
            }
            var out = [Int32](repeating: 0, count: rows)
            for i in 0..<rows {
                let v = a.double(at: i)
                guard v >= 0 else { throw OrthoHashError("label \(Int(v)) at row \(i) is negative", file: path) }
                guard v <= Double(Int32.max) else { throw OrthoHashError("label \(v) at row \(i) is too large", file: path) }
                out[i] = Int32(v)
            }
            return .single(out)
        case 2:
            let C = a.shape[1]
            var out = [UInt8](repeating: 0, count: rows * C)
            for r in 0..<rows {
                var positives = 0
                for c in 0..<C {
                    let v = a.double(at: r * C + c)
                    guard v == 0 || v == 1 else {
                        throw OrthoHashError("multi-label entry (\(r), \(c)) is \(v), expected 0 or 1", file: path)
                    }
                    if v == 1 { out[r * C + c] = 1; positives += 1 }
                }
                guard positives > 0 else { throw OrthoHashError("multi-label row \(r) has no positive label", file: path) }
            }
            return .multi(classes: C, out)
        default:
            throw OrthoHashError("labels must be 1-D (class indices) or 2-D (multi-hot), found shape \(a.shape)", file: path)
        }
    }
}

public struct Split {
    public let features: FeatureSource
    public let labels: Labels
    public var rows: Int { features.rows }
}

/// The three splits of a retrieval benchmark, checked against each other.
public struct DataSplits {
    public let train: Split
    public let query: Split
    public let database: Split
    public let classes: Int
    public var inputDim: Int { train.features.dim }
    /// The rows as images (channels, height, width), where the data says so (Fashion-MNIST);
    /// nil for feature vectors.
    public var imageShape: SampleShape? = nil
    public var isMultiLabel: Bool { train.labels.isMulti }

    /// Checks row counts, dimensions and label ranges; `classes` (if given) bounds the labels,
    /// otherwise it is the largest training label + 1.
    public init(train: Split, query: Split, database: Split, classes: Int? = nil, labelFiles: [String]) throws {
        self.train = train; self.query = query; self.database = database
        let splits = [train, query, database]
        for (split, labelFile) in zip(splits, labelFiles) where split.features.rows != split.labels.rows {
            throw OrthoHashError("\(split.labels.rows) labels but \(split.features.rows) feature rows in \(split.features.name)", file: labelFile)
        }
        for split in [query, database] where split.features.dim != train.features.dim {
            throw OrthoHashError("feature dimension \(split.features.dim) does not match the training features' \(train.features.dim)", file: split.features.name)
        }
        for (split, labelFile) in zip(splits, labelFiles) where split.labels.isMulti != train.labels.isMulti {
            throw OrthoHashError("labels are \(split.labels.isMulti ? "multi" : "single")-label but the training labels are not", file: labelFile)
        }
        switch train.labels {
        case .single(let l):
            let c = classes ?? Int(l.max() ?? 0) + 1
            for (split, labelFile) in zip(splits, labelFiles) {
                guard case .single(let labels) = split.labels else { continue }
                if let i = labels.firstIndex(where: { Int($0) >= c }) {
                    throw OrthoHashError("label \(labels[i]) at row \(i) is out of range for \(c) classes", file: labelFile)
                }
            }
            self.classes = c
        case .multi(let c, _):
            if let classes, classes != c {
                throw OrthoHashError("multi-label matrix has \(c) columns but --classes is \(classes)", file: labelFiles[0])
            }
            for (split, labelFile) in zip(splits, labelFiles) {
                if case .multi(let sc, _) = split.labels, sc != c {
                    throw OrthoHashError("multi-label matrix has \(sc) columns, the training labels \(c)", file: labelFile)
                }
            }
            self.classes = c
        }
        guard train.rows > 0 else { throw OrthoHashError("the training set is empty", file: train.features.name) }
    }
}

/// Fashion-MNIST from the Debian package `dataset-fashion-mnist`: train on the 60k training
/// images, query with the 10k test images, database = the 60k training images.
/// Pixels are scaled to [0, 1] and standardised with mean 0.2860 and std 0.3530.
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let mean: Float = 0.2860, std: Float = 0.3530
    static let hint = "install it with: apt-get install -y dataset-fashion-mnist"

    public static func load(directory: String = defaultDirectory, trainLimit: Int? = nil,
                            queryLimit: Int? = nil, databaseLimit: Int? = nil) throws -> DataSplits {
        // Pixel value b becomes b / 255 standardised; one table serves every pixel.
        let scale = 1 / (255 * std), shift = mean / std
        let table = (0..<256).map { Float($0) * scale - shift }
        func split(_ prefix: String) throws -> (PixelFeatures, [Int32], String, (height: Int, width: Int)) {
            let imagePath = "\(directory)/\(prefix)-images-idx3-ubyte.gz"
            let labelPath = "\(directory)/\(prefix)-labels-idx1-ubyte.gz"
            let images = try IDX.readImages(imagePath, missingHint: hint)
            let labels = try IDX.readLabels(labelPath, missingHint: hint)
            guard labels.count == images.rows else {
                throw OrthoHashError("\(labels.count) labels but \(images.rows) images in \(imagePath)", file: labelPath)
            }
            if let i = labels.firstIndex(where: { $0 >= 10 }) {
                throw OrthoHashError("label \(labels[i]) at row \(i) is out of range for 10 classes", file: labelPath)
            }
            return (PixelFeatures(name: imagePath, rows: images.rows, dim: images.dim, pixels: images.pixels, table: table),
                    labels.map { Int32($0) }, labelPath, (images.height, images.width))
        }
        let (trainX, trainY, trainLabelPath, trainShape) = try split("train")
        let (testX, testY, testLabelPath, _) = try split("t10k")
        func limited(_ x: PixelFeatures, _ y: [Int32], _ n: Int?) -> Split {
            let n = min(n ?? x.rows, x.rows)
            return Split(features: x.prefix(n), labels: .single(Array(y.prefix(n))))
        }
        var splits = try DataSplits(train: limited(trainX, trainY, trainLimit), query: limited(testX, testY, queryLimit),
                                    database: limited(trainX, trainY, databaseLimit), classes: 10,
                                    labelFiles: [trainLabelPath, testLabelPath, trainLabelPath])
        splits.imageShape = SampleShape(channels: 1, height: trainShape.height, width: trainShape.width)
        return splits
    }
}

/// Reads a codebook .npy (any numeric dtype, entries +-1) of shape (C, K).
public func loadCodebook(_ path: String, classes: Int, bits: Int) throws -> Codebook {
    let a = try NPYArray(path: path)
    guard a.shape == [classes, bits] else {
        throw OrthoHashError("codebook shape \(a.shape) does not match \(classes) classes x \(bits) bits", file: path)
    }
    return try Codebook.validated(classes: classes, bits: bits, values: (0..<(classes * bits)).map { a.double(at: $0) }, file: path)
}

/// Reads the ground truth: a JSON list with one `{"easy": [...], "hard": [...], "junk": [...]}`
/// object per query, rows 0-based (bench/revisitop_gnd_to_json.py converts revisitop's pickles).
public func loadRevisitedGroundTruth(_ path: String, queries: Int, databaseRows: Int) throws -> [RevisitedQuery] {
    try InputFile.check(path)
    guard let data = FileManager.default.contents(atPath: path) else { throw OrthoHashError("cannot read", file: path) }
    let gt: [RevisitedQuery]
    do {
        gt = try JSONDecoder().decode([RevisitedQuery].self, from: data)
    } catch {
        throw OrthoHashError("not a JSON list of {\"easy\", \"hard\", \"junk\"} objects of row numbers", file: path)
    }
    guard gt.count == queries else {
        throw OrthoHashError("ground truth for \(gt.count) queries, but there are \(queries) query rows", file: path)
    }
    for (q, g) in gt.enumerated() {
        for row in g.easy + g.hard + g.junk where row < 0 || row >= databaseRows {
            throw OrthoHashError("query \(q) lists database row \(row), the database has \(databaseRows) rows", file: path)
        }
    }
    return gt
}


/// Images made up from a seed, for benchmarks and smoke tests of the image backbones where no
/// image data is at hand (`--dataset generated`): row r of a split is of class r mod C, its
/// pixels a per-class colour (+-0.5 per channel) plus noise uniform in [-1, 1), already
/// standardised. Nothing is stored: a row is made when it is read.
public final class GeneratedImages: FeatureSource {
    public let name: String
    public let rows: Int
    public let shape: SampleShape
    public let classes: Int
    let key: UInt64
    public var dim: Int { shape.count }

    public init(name: String, rows: Int, shape: SampleShape, classes: Int, seed: UInt64) {
        self.name = name; self.rows = rows; self.shape = shape; self.classes = classes
        // The split's name enters the key (Swift's hashValue is seeded per process: not used).
        key = Self.mix(seed ^ Self.mix(name.utf8.reduce(UInt64(0)) { $0 &* 31 &+ UInt64($1) }))
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    public var labels: Labels { .single((0..<rows).map { Int32($0 % classes) }) }

    public func copyRow(_ row: Int, into out: UnsafeMutablePointer<Float>) throws {
        let c = row % classes, plane = shape.height * shape.width
        let rowKey = Self.mix(key ^ UInt64(row))
        for ch in 0..<shape.channels {
            let colour: Float = Self.mix(UInt64(c * 8 + ch) ^ 0x5bd1_e995) & 1 == 0 ? 0.5 : -0.5
            let base = ch * plane
            for i in 0..<plane {
                let u = Self.mix(rowKey &+ UInt64(base + i))
                out[base + i] = colour + Float(u >> 40) * (2 / Float(1 << 24)) - 1
            }
        }
    }

    /// Train and database (the same rows), and queries of their own.
    public static func splits(shape: SampleShape, classes: Int, train: Int, queries: Int, seed: UInt64) throws -> DataSplits {
        let t = GeneratedImages(name: "generated/train", rows: train, shape: shape, classes: classes, seed: seed)
        let q = GeneratedImages(name: "generated/query", rows: queries, shape: shape, classes: classes, seed: seed)
        var splits = try DataSplits(train: Split(features: t, labels: t.labels), query: Split(features: q, labels: q.labels),
                                    database: Split(features: t, labels: t.labels), classes: classes,
                                    labelFiles: ["generated/train", "generated/query", "generated/train"])
        splits.imageShape = shape
        return splits
    }
}
