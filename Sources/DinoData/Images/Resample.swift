import Foundation

/// Float images in CHW layout, values in [0, 1] (torchvision's `ToTensor` scale) until normalized.
public struct FloatImage: Sendable {
    public var width: Int, height: Int, channels: Int
    public var values: [Float]

    public init(width: Int, height: Int, channels: Int, values: [Float]) {
        self.width = width; self.height = height; self.channels = channels; self.values = values
    }

    /// pixels/255, HWC bytes to CHW floats.
    public init(_ image: Image) {
        width = image.width; height = image.height; channels = image.channels
        var v = [Float](repeating: 0, count: width * height * channels)
        let plane = width * height
        for i in 0..<plane { for c in 0..<channels { v[c * plane + i] = Float(image.pixels[i * channels + c]) / 255 } }
        values = v
    }
}

/// PIL-style separable resampling with antialiasing: the filter support widens by the downscale
/// factor, as `PIL.Image.resize` (and torchvision's resize on PIL images) does.
public enum Resample {
    public enum Filter: Sendable { case bicubic, bilinear }

    /// For one axis: per output pixel, the first source index and normalized weights.
    static func coefficients(sourceStart: Int, sourceLength: Int, sourceLimit: Int, outputLength: Int,
                             filter: Filter) -> [(Int, [Float])] {
        let scale = Double(sourceLength) / Double(outputLength)
        let filterScale = max(scale, 1)
        let support = (filter == .bicubic ? 2.0 : 1.0) * filterScale
        func kernel(_ x: Double) -> Double {
            let x = abs(x)
            switch filter {
            case .bilinear: return x < 1 ? 1 - x : 0
            case .bicubic:
                let a = -0.5  // PIL's bicubic
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            }
        }
        return (0..<outputLength).map { o in
            let center = Double(sourceStart) + (Double(o) + 0.5) * scale
            let lo = max(Int((center - support).rounded(.down)), 0)
            let hi = min(Int((center + support).rounded(.up)), sourceLimit)
            var weights: [Double] = []
            for s in lo..<max(hi, lo + 1) { weights.append(kernel((Double(s) + 0.5 - center) / filterScale)) }
            let total = weights.reduce(0, +)
            return (lo, weights.map { Float(total != 0 ? $0 / total : 0) })
        }
    }

    /// Crops the box (x, y, w, h) out of `image` and resizes it to (outputWidth, outputHeight).
    /// A box already at the output size is copied with no resampling.
    public static func resizedCrop(_ image: FloatImage, x: Int, y: Int, width w: Int, height h: Int,
                                   outputWidth: Int, outputHeight: Int, filter: Filter = .bicubic,
                                   clamp: Bool = true) -> FloatImage {
        let c = image.channels, inW = image.width, inH = image.height
        var out = [Float](repeating: 0, count: outputWidth * outputHeight * c)
        if w == outputWidth && h == outputHeight {
            for ch in 0..<c { for row in 0..<h { for col in 0..<w {
                out[(ch * h + row) * w + col] = image.values[(ch * inH + y + row) * inW + x + col]
            } } }
            return FloatImage(width: w, height: h, channels: c, values: out)
        }
        let horizontal = coefficients(sourceStart: x, sourceLength: w, sourceLimit: inW, outputLength: outputWidth, filter: filter)
        let vertical = coefficients(sourceStart: y, sourceLength: h, sourceLimit: inH, outputLength: outputHeight, filter: filter)
        // Rows of the source that any output row touches, resized horizontally first.
        let rowLo = vertical.map { $0.0 }.min() ?? 0
        let rowHi = vertical.map { $0.0 + $0.1.count }.max() ?? 0
        var temp = [Float](repeating: 0, count: (rowHi - rowLo) * outputWidth)
        for ch in 0..<c {
            for row in rowLo..<rowHi {
                let source = (ch * inH + row) * inW
                for (o, (start, weights)) in horizontal.enumerated() {
                    var s: Float = 0
                    for (k, wgt) in weights.enumerated() { s += wgt * image.values[source + start + k] }
                    temp[(row - rowLo) * outputWidth + o] = s
                }
            }
            for (o, (start, weights)) in vertical.enumerated() {
                for col in 0..<outputWidth {
                    var s: Float = 0
                    for (k, wgt) in weights.enumerated() { s += wgt * temp[(start + k - rowLo) * outputWidth + col] }
                    out[(ch * outputHeight + o) * outputWidth + col] = clamp ? min(max(s, 0), 1) : s
                }
            }
        }
        return FloatImage(width: outputWidth, height: outputHeight, channels: c, values: out)
    }

    /// Resize the short side to `resizeTo` then center-crop `size`×`size` (the evaluation transform:
    /// `Resize(256) + CenterCrop(224)` scaled to the model's input). An image already `size`×`size`
    /// is returned as it is unless `keepingExactSize` is false.
    public static func resizeAndCenterCrop(_ image: FloatImage, size: Int, resizeTo: Int? = nil,
                                           keepingExactSize: Bool = true) -> FloatImage {
        if keepingExactSize && image.width == size && image.height == size { return image }
        let short = resizeTo ?? size
        let scale = Double(short) / Double(min(image.width, image.height))
        // Crop in source coordinates the region that maps to the centered size×size window.
        let w = min(image.width, Int((Double(size) / scale).rounded())), h = min(image.height, Int((Double(size) / scale).rounded()))
        let x = (image.width - w) / 2, y = (image.height - h) / 2
        return resizedCrop(image, x: x, y: y, width: max(w, 1), height: max(h, 1), outputWidth: size, outputHeight: size)
    }
}
