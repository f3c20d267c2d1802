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

extension Image {
    /// CHW floats in [0, 1] back to HWC bytes, rounded and clamped (the inverse of `FloatImage.init(_:)`).
    public init(_ image: FloatImage) {
        let plane = image.width * image.height, c = image.channels
        self.init(width: image.width, height: image.height, channels: c, pixels: (0..<(plane * c)).map { i in
            UInt8(max(0, min(255, (image.values[(i % c) * plane + i / c] * 255).rounded())))
        })
    }
}

/// PIL-style separable resampling with antialiasing: the filter support widens by the downscale
/// factor, as `PIL.Image.resize` (and torchvision's resize on PIL images) does.
public enum Resample {
    public enum Filter: Sendable { case bicubic, bilinear }

    /// For one axis: per output pixel o, the first source index `starts[o]` and `counts[o]` normalized
    /// weights at `weights[o·stride...]` (flat arrays: a crop makes 2 of these, not one array per pixel).
    struct Coefficients {
        var starts: [Int], counts: [Int], weights: [Float]
        let stride: Int
    }

    static func coefficients(sourceStart: Int, sourceLength: Int, sourceLimit: Int, outputLength: Int,
                             filter: Filter) -> Coefficients {
        let scale = Double(sourceLength) / Double(outputLength)
        let filterScale = max(scale, 1)
        let support = (filter == .bicubic ? 2.0 : 1.0) * filterScale
        @inline(__always) func kernel(_ x: Double) -> Double {
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
        let stride = Int((2 * support).rounded(.up)) + 2
        var result = Coefficients(starts: [Int](repeating: 0, count: outputLength), counts: [Int](repeating: 0, count: outputLength),
                                  weights: [Float](repeating: 0, count: outputLength * stride), stride: stride)
        for o in 0..<outputLength {
            let center = Double(sourceStart) + (Double(o) + 0.5) * scale
            let lo = max(Int((center - support).rounded(.down)), 0)
            let hi = min(Int((center + support).rounded(.up)), sourceLimit)
            let count = max(hi, lo + 1) - lo
            var total = 0.0
            for s in lo..<(lo + count) { total += kernel((Double(s) + 0.5 - center) / filterScale) }
            result.starts[o] = lo; result.counts[o] = count
            for t in 0..<count {
                let w = kernel((Double(lo + t) + 0.5 - center) / filterScale)
                result.weights[o * stride + t] = Float(total != 0 ? w / total : 0)
            }
        }
        return result
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
        let rowLo = vertical.starts.min() ?? 0
        let rowHi = zip(vertical.starts, vertical.counts).map { $0 + $1 }.max() ?? 0
        var temp = [Float](repeating: 0, count: (rowHi - rowLo) * outputWidth)
        image.values.withUnsafeBufferPointer { source in
        temp.withUnsafeMutableBufferPointer { temp in
        out.withUnsafeMutableBufferPointer { out in
        horizontal.weights.withUnsafeBufferPointer { hw in
        vertical.weights.withUnsafeBufferPointer { vw in
            for ch in 0..<c {
                for row in rowLo..<rowHi {
                    let sourceRow = source.baseAddress! + (ch * inH + row) * inW, tempRow = temp.baseAddress! + (row - rowLo) * outputWidth
                    for o in 0..<outputWidth {
                        let first = sourceRow + horizontal.starts[o], weights = hw.baseAddress! + o * horizontal.stride
                        var s: Float = 0
                        for k in 0..<horizontal.counts[o] { s += weights[k] * first[k] }
                        tempRow[o] = s
                    }
                }
                for o in 0..<outputHeight {
                    let weights = vw.baseAddress! + o * vertical.stride, count = vertical.counts[o]
                    let first = temp.baseAddress! + (vertical.starts[o] - rowLo) * outputWidth
                    let outRow = out.baseAddress! + (ch * outputHeight + o) * outputWidth
                    for col in 0..<outputWidth {
                        var s: Float = 0
                        for k in 0..<count { s += weights[k] * first[k * outputWidth + col] }
                        outRow[col] = clamp ? min(max(s, 0), 1) : s
                    }
                }
            }
        } } } } }
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
