import CJPEGShim

/// JPEG decoding with libjpeg-turbo.
public enum JPEG {
    /// Decodes `bytes` to RGB (grayscale is expanded to three equal channels).
    /// - Parameter minimumSide: when set, libjpeg's DCT scaling (1/2, 1/4, 1/8) is used as long
    ///   as both sides stay at least this large: much faster for large photos that are cropped
    ///   and resized to a small training size anyway.
    /// - Parameter name: used in error messages (the file path).
    public static func decode(_ bytes: [UInt8], minimumSide: Int? = nil, name: String = "image") throws -> RGBImage {
        var message = [CChar](repeating: 0, count: 256)
        var w: Int32 = 0, h: Int32 = 0, components: Int32 = 0
        let header = bytes.withUnsafeBufferPointer { b in
            stjpeg_header(b.baseAddress, b.count, &w, &h, &components, &message, message.count)
        }
        guard header == 0 else { throw DatasetError("\(name): not a readable JPEG (\(text(message)))") }
        guard w > 0, h > 0 else { throw DatasetError("\(name): JPEG has an empty size") }
        var denom: Int32 = 1
        if let minimumSide {
            while denom < 8 && Int(min(w, h)) / Int(denom * 2) >= minimumSide { denom *= 2 }
        }
        let ow = (Int(w) + Int(denom) - 1) / Int(denom), oh = (Int(h) + Int(denom) - 1) / Int(denom)
        var pixels = [UInt8](repeating: 0, count: ow * oh * 3)
        var outW: Int32 = 0, outH: Int32 = 0
        let status = bytes.withUnsafeBufferPointer { b in
            pixels.withUnsafeMutableBufferPointer { p in
                stjpeg_decode_rgb(b.baseAddress, b.count, denom, p.baseAddress, p.count, &outW, &outH,
                                  &message, message.count)
            }
        }
        guard status == 0 else { throw DatasetError("\(name): corrupt or truncated JPEG (\(text(message)))") }
        if Int(outW) != ow || Int(outH) != oh {
            pixels = Array(pixels.prefix(Int(outW) * Int(outH) * 3))
        }
        return RGBImage(width: Int(outW), height: Int(outH), pixels: pixels)
    }

    /// Encodes interleaved pixels (3 components: RGB; 1: grayscale) as a JPEG file's bytes.
    public static func encode(pixels: [UInt8], width: Int, height: Int, components: Int = 3, quality: Int = 90) throws -> [UInt8] {
        guard components == 1 || components == 3, pixels.count == width * height * components, width > 0, height > 0 else {
            throw DatasetError("cannot encode: \(pixels.count) bytes for \(width)×\(height)×\(components)")
        }
        var message = [CChar](repeating: 0, count: 256)
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status = pixels.withUnsafeBufferPointer {
            stjpeg_encode($0.baseAddress, Int32(width), Int32(height), Int32(components), Int32(quality), &out, &size,
                          &message, message.count)
        }
        defer { stjpeg_free(out) }
        guard status == 0, let out else { throw DatasetError("JPEG encoding failed (\(text(message)))") }
        return Array(UnsafeBufferPointer(start: out, count: Int(size)))
    }

    private static func text(_ c: [CChar]) -> String {
        String(decoding: c.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
