import DinoData

/// An RGB colour.
public struct Color: Equatable, Sendable {
    public var red: UInt8, green: UInt8, blue: UInt8
    public init(_ red: UInt8, _ green: UInt8, _ blue: UInt8) { self.red = red; self.green = green; self.blue = blue }
    public static let white = Color(255, 255, 255), black = Color(0, 0, 0), border = Color(200, 200, 200)
    public static let ink = Color(34, 34, 34), paper = Color(250, 250, 250)
}

/// A raster to draw pictures on: filled rectangles, images scaled by whole factors (nearest
/// neighbour, so a patch grid stays a grid), lines and text in `BitmapFont`. Pixels are RGB, row-major.
public struct Canvas: Sendable {
    public let width: Int, height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, background: Color = .paper) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fill(x: 0, y: 0, width: width, height: height, color: background)
    }

    /// The canvas as an 8-bit RGB image.
    public var image: Image { Image(width: width, height: height, channels: 3, pixels: pixels) }

    public mutating func set(_ x: Int, _ y: Int, _ color: Color) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = 3 * (y * width + x)
        pixels[i] = color.red; pixels[i + 1] = color.green; pixels[i + 2] = color.blue
    }

    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, color: Color) {
        let (x0, x1, y0, y1) = (max(0, x), min(width, x + w), max(0, y), min(height, y + h))
        guard x0 < x1, y0 < y1 else { return }   // wholly outside: nothing to draw
        for yy in y0..<y1 { for xx in x0..<x1 { set(xx, yy, color) } }
    }

    /// Draws `image` (gray or RGB) with its top-left corner at (x, y), each pixel a `scale`×`scale` block.
    public mutating func draw(_ image: Image, x: Int, y: Int, scale: Int = 1) {
        draw(image, x: x, y: y, width: image.width * scale, height: image.height * scale)
    }

    /// Draws `image` (gray or RGB) resized to `width`x`height` with nearest neighbour, its top-left corner
    /// at (x, y): destination pixel (u, v) shows source pixel (u·image.width/width, v·image.height/height),
    /// so a whole-factor enlargement repeats each pixel as a block.
    public mutating func draw(_ image: Image, x: Int, y: Int, width w: Int, height h: Int) {
        let rgb = image.converted(to: 3)
        guard rgb.width > 0, rgb.height > 0 else { return }
        for v in 0..<max(0, h) {
            let row = v * rgb.height / h
            for u in 0..<max(0, w) {
                let i = 3 * (row * rgb.width + u * rgb.width / w)
                set(x + u, y + v, Color(rgb.pixels[i], rgb.pixels[i + 1], rgb.pixels[i + 2]))
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel a `scale`×`scale` block.
    public mutating func text(_ text: String, x: Int, y: Int, color: Color = .ink, scale: Int = 1) {
        for (index, character) in text.enumerated() {
            let glyph = BitmapFont.glyph(character)
            for (row, bits) in glyph.enumerated() {
                for (column, on) in bits.enumerated() where on {
                    fill(x: x + (index * BitmapFont.advance + column) * scale, y: y + row * scale, width: scale, height: scale, color: color)
                }
            }
        }
    }

    /// A straight line of `thickness` pixels from (x0, y0) to (x1, y1) (Bresenham).
    public mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, color: Color, thickness: Int = 1) {
        var (x, y) = (x0, y0)
        let dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var error = dx + dy
        let half = (thickness - 1) / 2
        while true {
            fill(x: x - half, y: y - half, width: thickness, height: thickness, color: color)
            if x == x1 && y == y1 { break }
            let e2 = 2 * error
            if e2 >= dy { error += dy; x += sx }
            if e2 <= dx { error += dx; y += sy }
        }
    }
}
