import DinoKernels
import Foundation

/// Settings of the multi-crop augmentation (official `DataAugmentationDINO`, main_dino.py).
public struct AugmentationSettings: Sendable, Equatable {
    public var channels: Int
    public var globalSize: Int
    public var localSize: Int
    public var localCount: Int
    public var globalScale: (Double, Double)
    public var localScale: (Double, Double)
    public var flipProbability = 0.5
    /// Brightness, contrast, saturation, hue strengths of `ColorJitter`.
    public var colorJitter: [Double] = [0.4, 0.4, 0.2, 0.1]
    public var colorJitterProbability = 0.8
    public var grayscaleProbability = 0.2
    /// Gaussian blur probability for global crop 1, global crop 2, local crops.
    public var blurProbabilities: [Double] = [1.0, 0.1, 0.5]
    public var blurSigma: (Double, Double) = (0.1, 2.0)
    /// Solarization probability of global crop 2 (the only view that solarizes).
    public var solarizationProbability = 0.2
    public var mean: [Float]
    public var std: [Float]

    public init(channels: Int, globalSize: Int, localSize: Int, localCount: Int, globalScale: (Double, Double),
                localScale: (Double, Double), mean: [Float], std: [Float]) {
        self.channels = channels; self.globalSize = globalSize; self.localSize = localSize; self.localCount = localCount
        self.globalScale = globalScale; self.localScale = localScale; self.mean = mean; self.std = std
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.channels == b.channels && a.globalSize == b.globalSize && a.localSize == b.localSize && a.localCount == b.localCount
            && a.globalScale == b.globalScale && a.localScale == b.localScale && a.mean == b.mean && a.std == b.std
    }

    /// The short side a decoder must keep so that the smallest crop still has output resolution.
    public var minimumShortSide: Int {
        let global = Double(globalSize) / globalScale.0.squareRoot()
        let local = localCount > 0 ? Double(localSize) / localScale.0.squareRoot() : 0
        return Int(max(global, local).rounded(.up))
    }
}

/// Produces the 2 global and N local views of one image, each a normalized CHW float array.
public struct MultiCropAugmenter: Sendable {
    public let settings: AugmentationSettings
    public init(settings: AugmentationSettings) { self.settings = settings }

    /// Views in the official order [global 1, global 2, local 1 … local N].
    public func views(of image: Image, generator g: inout RandomGenerator) -> [[Float]] {
        let s = settings
        let source = FloatImage(image.converted(to: s.channels))
        var out: [[Float]] = []
        for view in 0..<(2 + s.localCount) {
            let isGlobal = view < 2
            let size = isGlobal ? s.globalSize : s.localSize
            var crop = randomResizedCrop(source, size: size, scale: isGlobal ? s.globalScale : s.localScale, generator: &g)
            if g.nextDouble() < s.flipProbability { flipHorizontally(&crop) }
            if g.nextDouble() < s.colorJitterProbability { colorJitter(&crop, generator: &g) }
            if g.nextDouble() < s.grayscaleProbability { grayscale(&crop) }
            // `random.random() <= p` in the official GaussianBlur: p = 1 always blurs.
            if g.nextDouble() <= s.blurProbabilities[min(view, 2)] {
                gaussianBlur(&crop, sigma: g.uniform(s.blurSigma.0, s.blurSigma.1))
            }
            if view == 1 && g.nextDouble() < s.solarizationProbability { solarize(&crop) }
            normalize(&crop.values, channels: crop.channels, plane: size * size, mean: s.mean, std: s.std)
            out.append(crop.values)
        }
        return out
    }

    /// torchvision `RandomResizedCrop.get_params` (ratio 3/4…4/3, 10 tries, then a center fallback),
    /// then a bicubic resize of the box to size×size.
    func randomResizedCrop(_ image: FloatImage, size: Int, scale: (Double, Double), generator g: inout RandomGenerator) -> FloatImage {
        let width = image.width, height = image.height, area = Double(width * height)
        let logRatio = (log(3.0 / 4.0), log(4.0 / 3.0))
        for _ in 0..<10 {
            let target = area * g.uniform(scale.0, scale.1)
            let aspect = exp(g.uniform(logRatio.0, logRatio.1))
            let w = Int((target * aspect).squareRoot().rounded()), h = Int((target / aspect).squareRoot().rounded())
            if w > 0 && h > 0 && w <= width && h <= height {
                let y = g.nextInt(below: height - h + 1), x = g.nextInt(below: width - w + 1)
                return Resample.resizedCrop(image, x: x, y: y, width: w, height: h, outputWidth: size, outputHeight: size)
            }
        }
        let ratio = Double(width) / Double(height)
        var w = width, h = height
        if ratio < 3.0 / 4.0 { h = Int((Double(w) / (3.0 / 4.0)).rounded()) } else if ratio > 4.0 / 3.0 { w = Int((Double(h) * 4.0 / 3.0).rounded()) }
        w = min(w, width); h = min(h, height)
        return Resample.resizedCrop(image, x: (width - w) / 2, y: (height - h) / 2, width: w, height: h,
                                    outputWidth: size, outputHeight: size)
    }

    func flipHorizontally(_ image: inout FloatImage) {
        let w = image.width
        for row in 0..<(image.channels * image.height) {
            var a = row * w, b = row * w + w - 1
            while a < b { image.values.swapAt(a, b); a += 1; b -= 1 }
        }
    }

    /// torchvision `ColorJitter`: brightness, contrast, saturation and hue in a random order, each with
    /// a factor drawn uniformly. Saturation and hue do nothing on one channel, as on a PIL "L" image.
    func colorJitter(_ image: inout FloatImage, generator g: inout RandomGenerator) {
        let j = settings.colorJitter
        var order = [0, 1, 2, 3]
        g.shuffle(&order)
        let plane = image.width * image.height
        for op in order {
            switch op {
            case 0 where j[0] > 0:
                let f = Float(g.uniform(max(0, 1 - j[0]), 1 + j[0]))
                for i in image.values.indices { image.values[i] = min(1, max(0, image.values[i] * f)) }
            case 1 where j[1] > 0:
                let f = Float(g.uniform(max(0, 1 - j[1]), 1 + j[1]))
                let gray = luma(image)
                let mean = gray.reduce(0, +) / Float(plane)
                for i in image.values.indices { image.values[i] = min(1, max(0, mean + f * (image.values[i] - mean))) }
            case 2 where j[2] > 0:
                let f = Float(g.uniform(max(0, 1 - j[2]), 1 + j[2]))
                guard image.channels == 3 else { continue }
                let gray = luma(image)
                for c in 0..<3 { for i in 0..<plane {
                    let k = c * plane + i
                    image.values[k] = min(1, max(0, gray[i] + f * (image.values[k] - gray[i])))
                } }
            case 3 where j[3] > 0:
                let shift = Float(g.uniform(-j[3], j[3]))
                guard image.channels == 3 else { continue }
                shiftHue(&image, by: shift)
            default: continue
            }
        }
    }

    func luma(_ image: FloatImage) -> [Float] {
        let plane = image.width * image.height
        if image.channels == 1 { return image.values }
        return (0..<plane).map { 0.299 * image.values[$0] + 0.587 * image.values[plane + $0] + 0.114 * image.values[2 * plane + $0] }
    }

    func grayscale(_ image: inout FloatImage) {
        guard image.channels == 3 else { return }
        let plane = image.width * image.height, gray = luma(image)
        for c in 0..<3 { for i in 0..<plane { image.values[c * plane + i] = gray[i] } }
    }

    /// Rotates hue by `shift` turns in HSV space.
    func shiftHue(_ image: inout FloatImage, by shift: Float) {
        let plane = image.width * image.height
        for i in 0..<plane {
            let r = image.values[i], gr = image.values[plane + i], b = image.values[2 * plane + i]
            let maxV = max(r, gr, b), minV = min(r, gr, b), delta = maxV - minV
            if delta <= 0 { continue }
            var h: Float
            if maxV == r { h = (gr - b) / delta } else if maxV == gr { h = 2 + (b - r) / delta } else { h = 4 + (r - gr) / delta }
            h = h / 6 + shift
            h -= h.rounded(.down)
            let s = delta / maxV, v = maxV
            let h6 = h * 6, sector = Int(h6) % 6, f = h6 - Float(Int(h6))
            let p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
            let (nr, ng, nb): (Float, Float, Float)
            switch sector {
            case 0: (nr, ng, nb) = (v, t, p)
            case 1: (nr, ng, nb) = (q, v, p)
            case 2: (nr, ng, nb) = (p, v, t)
            case 3: (nr, ng, nb) = (p, q, v)
            case 4: (nr, ng, nb) = (t, p, v)
            default: (nr, ng, nb) = (v, p, q)
            }
            image.values[i] = nr; image.values[plane + i] = ng; image.values[2 * plane + i] = nb
        }
    }

    /// Separable Gaussian blur with standard deviation `sigma` pixels (PIL's radius), edges clamped.
    func gaussianBlur(_ image: inout FloatImage, sigma: Double) {
        let radius = max(1, Int((3 * sigma).rounded(.up)))
        var kernel = (-radius...radius).map { Float(exp(-Double($0 * $0) / (2 * sigma * sigma))) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        let w = image.width, h = image.height, channels = image.channels
        var temp = [Float](repeating: 0, count: image.values.count)
        kernel.withUnsafeBufferPointer { kernel in
        temp.withUnsafeMutableBufferPointer { temp in
        image.values.withUnsafeMutableBufferPointer { values in
            let taps = kernel.baseAddress! + radius  // taps[k] for k in -radius...radius
            for c in 0..<channels {
                let plane = values.baseAddress! + c * w * h, blurred = temp.baseAddress! + c * w * h
                for y in 0..<h { for x in 0..<w {
                    var s: Float = 0
                    for k in -radius...radius { s += taps[k] * plane[y * w + min(max(x + k, 0), w - 1)] }
                    blurred[y * w + x] = s
                } }
                for y in 0..<h { for x in 0..<w {
                    var s: Float = 0
                    for k in -radius...radius { s += taps[k] * blurred[min(max(y + k, 0), h - 1) * w + x] }
                    plane[y * w + x] = s
                } }
            }
        } } }
    }

    /// PIL `ImageOps.solarize(threshold=128)`: values ≥ 128/255 become 1 − v.
    func solarize(_ image: inout FloatImage) {
        for i in image.values.indices where image.values[i] >= 128.0 / 255.0 { image.values[i] = 1 - image.values[i] }
    }
}

/// In place: (x − mean[c]) / std[c] per channel plane (one value applies to every channel).
public func normalize(_ values: inout [Float], channels: Int, plane: Int, mean: [Float], std: [Float]) {
    for ch in 0..<channels {
        let m = mean.count == 1 ? mean[0] : mean[ch], s = std.count == 1 ? std[0] : std[ch]
        let inverse = 1 / s
        for i in (ch * plane)..<((ch + 1) * plane) { values[i] = (values[i] - m) * inverse }
    }
}
