// JPEG and PNG images, decoded by libjpeg-turbo and libpng (CImage) to 8-bit RGB.

import CImage
import Foundation
import OrthoHashNumerics

/// An image as 8-bit RGB: `height` rows of `width` pixels of 3 bytes.
public struct RGBImage: Equatable, Sendable {
    public var width: Int, height: Int
    public var pixels: [UInt8]
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGB image \(width)x\(height) of \(pixels.count) bytes")
        self.width = width; self.height = height; self.pixels = pixels
    }
}

public enum ImageFile {
    /// Decodes JPEG or PNG bytes (grey, CMYK, palette and alpha become RGB as Pillow's
    /// convert("RGB") makes them); the error names `name`.
    public static func decode(_ bytes: UnsafeRawBufferPointer, name: String) throws -> RGBImage {
        var rgb: UnsafeMutablePointer<UInt8>? = nil
        var width: Int32 = 0, height: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = ohimage_decode(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &rgb, &width, &height, &message, message.count)
        guard status == 0, let rgb else { throw OrthoHashError(String(cString: message), file: name) }
        defer { ohimage_free(rgb) }
        return RGBImage(width: Int(width), height: Int(height), pixels: Array(UnsafeBufferPointer(start: rgb, count: Int(width) * Int(height) * 3)))
    }

    /// Reads and decodes the image at `path` (a regular file).
    public static func read(_ path: String) throws -> RGBImage {
        try InputFile.check(path)
        guard let data = FileManager.default.contents(atPath: path) else { throw OrthoHashError("cannot read the image", file: path) }
        return try data.withUnsafeBytes { try decode($0, name: path) }
    }
}

extension RGBImage {
    /// Pillow's `resize((width, height), BILINEAR)` of the region `crop` (x, y, width, height in
    /// pixels; default the whole image), as torchvision's resized crops compute it.
    public func resized(width w: Int, height h: Int, crop: (x: Int, y: Int, width: Int, height: Int)? = nil) -> RGBImage {
        let c = crop ?? (0, 0, width, height)
        precondition(c.x >= 0 && c.y >= 0 && c.width >= 1 && c.height >= 1 && c.x + c.width <= width && c.y + c.height <= height,
                     "crop \(c) of a \(width)x\(height) image")
        var out = [UInt8](repeating: 0, count: w * h * 3)
        var scratch = [UInt8](repeating: 0, count: ohimage_resize_scratch_size(Int32(c.width), Int32(c.height), Int32(w), Int32(h)))
        pixels.withUnsafeBufferPointer { p in
            ohimage_resize_bilinear(&out, Int32(w), Int32(h), p.baseAddress! + (c.y * width + c.x) * 3, Int32(c.width), Int32(c.height),
                                    width * 3, &scratch)
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    /// (3, height, width) floats: the pixels / 255 less `mean`, over `std`, per channel (torchvision's
    /// ToTensor then Normalize), mirrored left to right when `flip`.
    public func normalised(into out: UnsafeMutablePointer<Float>, mean: [Float], std: [Float], flip: Bool = false) {
        precondition(mean.count == 3 && std.count == 3, "mean and std of 3 channels")
        pixels.withUnsafeBufferPointer { p in
            ohimage_to_chw(out, p.baseAddress!, Int32(width), Int32(height), width * 3, flip ? 1 : 0, mean, std)
        }
    }
}
