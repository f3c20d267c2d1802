import Foundation

/// The EXIF orientation of a JPEG (tag 0x0112 in the APP1 "Exif" segment's first IFD): how the stored
/// pixels are turned to be seen upright. Phones store a portrait photo as landscape pixels with
/// orientation 6; every image viewer applies it, and so does `ImageCodec` (torchvision's PIL loader
/// does not: a model there sees such photos on their side).
///
/// Values as the EXIF standard numbers them: 1 as stored, 2 mirrored left-right, 3 turned 180°, 4 mirrored
/// top-bottom, 5 transposed (mirrored across the main diagonal), 6 turned 90° clockwise, 7 transversed, 8
/// turned 90° counter-clockwise.
public enum ExifOrientation {
    /// The orientation a JPEG file declares, 1 when it declares none or when the segment is malformed.
    /// Every offset is checked against the bytes present: the file is untrusted. It reads the markers in
    /// place (no copy: the training loader calls it for every JPEG it decodes).
    public static func read(jpeg data: Data) -> Int {
        data.withUnsafeBytes { raw -> Int in
            let bytes = UnsafeRawBufferPointer(rebasing: raw.prefix(256 * 1024))  // EXIF comes before the image data
            guard bytes.count >= 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else { return 1 }
            var position = 2
            while position + 4 <= bytes.count, bytes[position] == 0xFF {
                let marker = bytes[position + 1]
                if marker == 0xFF { position += 1; continue }  // a fill byte before the marker
                if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { position += 2; continue }  // no length
                if marker == 0xDA || marker == 0xD9 { return 1 }  // the image data: no EXIF before it
                let length = Int(bytes[position + 2]) << 8 | Int(bytes[position + 3])
                guard length >= 2, position + 2 + length <= bytes.count else { return 1 }
                if marker == 0xE1,
                   let value = orientation(inExif: UnsafeRawBufferPointer(rebasing: bytes[(position + 4)..<(position + 2 + length)])) {
                    return value
                }
                position += 2 + length
            }
            return 1
        }
    }

    /// The orientation tag of an APP1 payload ("Exif\0\0" and a TIFF structure), nil when it has none.
    static func orientation(inExif payload: UnsafeRawBufferPointer) -> Int? {
        guard payload.count >= 14, payload.starts(with: Array("Exif".utf8) + [0, 0]) else { return nil }
        let tiff = UnsafeRawBufferPointer(rebasing: payload[6...])
        let little: Bool
        switch (tiff[0], tiff[1]) {
        case (0x49, 0x49): little = true   // "II": Intel byte order
        case (0x4D, 0x4D): little = false  // "MM": Motorola byte order
        default: return nil
        }
        func u16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= tiff.count else { return nil }
            return little ? Int(tiff[at]) | Int(tiff[at + 1]) << 8 : Int(tiff[at]) << 8 | Int(tiff[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard let a = u16(at), let b = u16(at + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for entry in 0..<count {
            let at = ifd + 2 + 12 * entry
            guard let tag = u16(at), let type = u16(at + 2) else { return nil }
            if tag == 0x0112 {
                guard type == 3, let value = u16(at + 8), (1...8).contains(value) else { return nil }  // SHORT
                return value
            }
        }
        return nil
    }

    /// `image` turned upright for `orientation` (1...8; others leave it as it is).
    public static func upright(_ image: Image, orientation: Int) -> Image {
        guard (2...8).contains(orientation) else { return image }
        let w = image.width, h = image.height, c = image.channels
        let swapped = orientation >= 5
        let outW = swapped ? h : w, outH = swapped ? w : h
        var pixels = [UInt8](repeating: 0, count: image.pixels.count)
        for y in 0..<outH {
            for x in 0..<outW {
                // The stored pixel (sx, sy) shown at (x, y).
                let (sx, sy): (Int, Int)
                switch orientation {
                case 2: (sx, sy) = (w - 1 - x, y)
                case 3: (sx, sy) = (w - 1 - x, h - 1 - y)
                case 4: (sx, sy) = (x, h - 1 - y)
                case 5: (sx, sy) = (y, x)
                case 6: (sx, sy) = (y, h - 1 - x)
                case 7: (sx, sy) = (w - 1 - y, h - 1 - x)
                default: (sx, sy) = (w - 1 - y, x)  // 8
                }
                let from = (sy * w + sx) * c, to = (y * outW + x) * c
                for k in 0..<c { pixels[to + k] = image.pixels[from + k] }
            }
        }
        return Image(width: outW, height: outH, channels: c, pixels: pixels)
    }
}
