import CPNG
import CTurboJPEG
import DinoKernels
import Foundation

/// An 8-bit image, rows of interleaved channels (HWC), 1 (gray) or 3 (RGB) channels.
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match \(width)x\(height)x\(channels)")
        self.width = width; self.height = height; self.channels = channels; self.pixels = pixels
    }

    /// The same image with `channels` channels: gray is replicated to RGB; RGB becomes gray with
    /// ITU-R 601 luma (PIL's "L": (299R + 587G + 114B)/1000).
    public func converted(to channels: Int) -> Image {
        if channels == self.channels { return self }
        var out = [UInt8](repeating: 0, count: width * height * channels)
        if channels == 3 {
            for i in 0..<(width * height) { out[3 * i] = pixels[i]; out[3 * i + 1] = pixels[i]; out[3 * i + 2] = pixels[i] }
        } else {
            for i in 0..<(width * height) {
                let luma = (299 * Int(pixels[3 * i]) + 587 * Int(pixels[3 * i + 1]) + 114 * Int(pixels[3 * i + 2]) + 500) / 1000
                out[i] = UInt8(min(255, luma))
            }
        }
        return Image(width: width, height: height, channels: channels, pixels: out)
    }
}

/// JPEG (libjpeg-turbo) and PNG (libpng) decoding, and PNG encoding.
public enum ImageCodec {
    public static let fileExtensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Decodes a JPEG or PNG file (by content, not name) to `channels` channels; a JPEG is turned upright
    /// by its EXIF orientation (`ExifOrientation`).
    /// - Parameter minimumShortSide: with JPEG, decode at the smallest libjpeg-turbo scale (1/8 … 1)
    ///   whose short side is still at least this many pixels: far fewer pixels to decode when the
    ///   pipeline needs far fewer than the file has.
    public static func decode(contentsOf url: URL, channels: Int, minimumShortSide: Int? = nil) throws -> Image {
        try decode(readInputFile(url, what: "image"), channels: channels, minimumShortSide: minimumShortSide, name: url.path)
    }

    /// Decodes `urls` in order, each passed through `reducing` (its index and pixels in, what is kept
    /// out: a camera photo shrunk to what the model sees, its full-size pixels dropped at once), refusing
    /// once the kept pixels pass `byteBudget` (by default a quarter of this machine's memory, leaving the
    /// rest to what is computed from them): a shell glob over a folder can name more than fit at once,
    /// and the kernel's out-of-memory kill says nothing.
    public static func decodeAll(_ urls: [URL], channels: Int,
                                 byteBudget: Int = Int(min(ProcessInfo.processInfo.physicalMemory / 4, UInt64(Int.max))),
                                 reducing: (Int, Image) throws -> Image = { $1 }) throws -> [Image] {
        var images: [Image] = [], bytes = 0
        for (index, url) in urls.enumerated() {
            let image = try reducing(index, decode(contentsOf: url, channels: channels))
            bytes += image.pixels.count
            guard bytes <= byteBudget else {
                func size(_ n: Int) -> String { String(format: "%.1f GiB", Double(n) / 1_073_741_824) }
                throw DinoError("the first \(index + 1) of \(urls.count) images take \(size(bytes)) decoded, more than the \(size(byteBudget)) set aside for them (a quarter of this machine's memory): give fewer or smaller images at a time")
            }
            images.append(image)
        }
        return images
    }

    /// Refuses declared sizes that are empty or larger than `InputLimits.maximumImagePixels`, before
    /// the pixels are allocated (a 100000x100000 header in a few bytes).
    static func checkDimensions(width: Int, height: Int, name: String) throws {
        guard width > 0, height > 0, checkedElementCount([width, height], limit: InputLimits.maximumImagePixels) != nil else {
            throw DinoError("\(name) is not a readable image: it declares \(width)x\(height) pixels (at most \(InputLimits.maximumImagePixels) are decoded); the file may be truncated or corrupt")
        }
    }

    public static func decode(_ data: Data, channels: Int, minimumShortSide: Int? = nil, name: String = "image") throws -> Image {
        precondition(channels == 1 || channels == 3, "images decode to 1 or 3 channels")
        if data.count >= 3 && data[data.startIndex] == 0xFF && data[data.startIndex + 1] == 0xD8 {
            return try decodeJPEG(data, channels: channels, minimumShortSide: minimumShortSide, name: name)
        }
        if data.count >= 8 && data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return try decodePNG(data, channels: channels, name: name)
        }
        throw DinoError("\(name) is neither a JPEG nor a PNG file (\(data.count) bytes)")
    }

    static func decodeJPEG(_ data: Data, channels: Int, minimumShortSide: Int?, name: String) throws -> Image {
        guard let handle = tjInitDecompress() else { throw DinoError("libjpeg-turbo could not start a decoder") }
        defer { tjDestroy(handle) }
        func failure(_ what: String) -> DinoError {
            DinoError("\(name) is not a readable JPEG (\(what): \(String(cString: tjGetErrorStr2(handle)))); the file may be truncated or corrupt")
        }
        return try data.withUnsafeBytes { raw -> Image in
            let bytes = raw.bindMemory(to: UInt8.self).baseAddress!
            var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            guard tjDecompressHeader3(handle, bytes, UInt(data.count), &width, &height, &subsampling, &colorspace) == 0 else {
                throw failure("header")
            }
            try checkDimensions(width: Int(width), height: Int(height), name: name)
            var outWidth = Int(width), outHeight = Int(height)
            if let minimumShortSide {
                var count: Int32 = 0
                if let factors = tjGetScalingFactors(&count) {
                    var best = (Int(width), Int(height))
                    for i in 0..<Int(count) {
                        let f = factors[i]
                        guard f.num <= f.denom else { continue }
                        let w = (Int(width) * Int(f.num) + Int(f.denom) - 1) / Int(f.denom)
                        let h = (Int(height) * Int(f.num) + Int(f.denom) - 1) / Int(f.denom)
                        if min(w, h) >= minimumShortSide && w * h < best.0 * best.1 { best = (w, h) }
                    }
                    (outWidth, outHeight) = best
                }
            }
            // CMYK and YCCK files (print workflows) decode to CMYK, which libjpeg-turbo does not turn into RGB.
            let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
            let decodedChannels = cmyk ? 4 : channels
            var pixels = [UInt8](repeating: 0, count: outWidth * outHeight * decodedChannels)
            let format = cmyk ? TJPF_CMYK : channels == 3 ? TJPF_RGB : TJPF_GRAY
            let status = pixels.withUnsafeMutableBufferPointer {
                tjDecompress2(handle, bytes, UInt(data.count), $0.baseAddress, Int32(outWidth), 0, Int32(outHeight),
                              Int32(format.rawValue), TJFLAG_STOPONWARNING)
            }
            guard status == 0 else { throw failure("data") }
            let stored = cmyk ? Self.rgb(fromCMYK: pixels, width: outWidth, height: outHeight).converted(to: channels)
                : Image(width: outWidth, height: outHeight, channels: channels, pixels: pixels)
            return ExifOrientation.upright(stored, orientation: ExifOrientation.read(jpeg: data))
        }
    }

    /// RGB from the CMYK values libjpeg-turbo returns. JPEG files store CMYK inverted (Adobe's convention,
    /// which Photoshop and Pillow write), so each value is 255 − ink: R = C·K/255, and so on, as Pillow reads them.
    static func rgb(fromCMYK cmyk: [UInt8], width: Int, height: Int) -> Image {
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let k = Int(cmyk[4 * i + 3])
            for c in 0..<3 { rgb[3 * i + c] = UInt8((Int(cmyk[4 * i + c]) * k + 127) / 255) }
        }
        return Image(width: width, height: height, channels: 3, pixels: rgb)
    }

    static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static func decodePNG(_ data: Data, channels: Int, name: String) throws -> Image {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let ok = data.withUnsafeBytes { raw in png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) }
        guard ok != 0 else { throw DinoError("\(name) is not a readable PNG (\(message(&image))); the file may be corrupt") }
        image.format = channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
        let width = Int(image.width), height = Int(image.height)
        do { try checkDimensions(width: width, height: height, name: name) } catch { png_image_free(&image); throw error }
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        let finished = pixels.withUnsafeMutableBytes { out in
            png_image_finish_read(&image, nil, out.baseAddress, Int32(width * channels), nil)
        }
        let failed = finished == 0 || (image.warning_or_error & UInt32(PNG_IMAGE_ERROR)) != 0
        let text = message(&image)
        png_image_free(&image)
        guard !failed else {
            throw DinoError("\(name) is not a readable PNG (\(text)); the file may be truncated or corrupt")
        }
        return Image(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// Encodes an 8-bit gray or RGB image as baseline JPEG (4:2:0 chroma for RGB) at `quality` 1–100.
    public static func encodeJPEG(_ image: Image, quality: Int = 90) throws -> Data {
        guard let handle = tjInitCompress() else { throw DinoError("libjpeg-turbo could not start an encoder") }
        defer { tjDestroy(handle) }
        let format = image.channels == 3 ? TJPF_RGB : TJPF_GRAY
        let subsampling = image.channels == 3 ? TJSAMP_420 : TJSAMP_GRAY
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status = image.pixels.withUnsafeBufferPointer {
            tjCompress2(handle, $0.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(format.rawValue), &buffer, &size,
                        Int32(subsampling.rawValue), Int32(max(1, min(100, quality))), 0)
        }
        defer { if let buffer { tjFree(buffer) } }
        guard status == 0, let buffer else {
            throw DinoError("libjpeg-turbo could not encode a JPEG: \(String(cString: tjGetErrorStr2(handle)))")
        }
        return Data(bytes: buffer, count: Int(size))
    }

    /// Encodes an 8-bit gray or RGB image as PNG.
    public static func encodePNG(_ image: Image) throws -> Data {
        var png = png_image()
        png.version = UInt32(PNG_IMAGE_VERSION)
        png.width = UInt32(image.width); png.height = UInt32(image.height)
        png.format = image.channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
        var size = 0
        let stride = Int32(image.width * image.channels)
        guard image.pixels.withUnsafeBytes({ png_image_write_to_memory(&png, nil, &size, 0, $0.baseAddress, stride, nil) }) != 0 else {
            throw DinoError("libpng could not size a PNG: \(message(&png))")
        }
        var out = Data(count: size)
        let ok = out.withUnsafeMutableBytes { target in
            image.pixels.withUnsafeBytes { png_image_write_to_memory(&png, target.baseAddress, &size, 0, $0.baseAddress, stride, nil) }
        }
        guard ok != 0 else { throw DinoError("libpng could not write a PNG: \(message(&png))") }
        return out.prefix(size)
    }

    public static func writePNG(_ image: Image, to url: URL) throws {
        let data = try encodePNG(image)
        do { try data.write(to: url, options: .atomic) } catch {
            throw DinoError("cannot write \(url.path): \(error.localizedDescription)")
        }
    }
}
