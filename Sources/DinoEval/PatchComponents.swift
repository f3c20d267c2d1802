import DinoData
import DinoKernels
import DinoModel
import DinoPictures
import Foundation

/// The last layer's patch tokens of one image, with the picture the model saw.
public struct PatchTokens: Sendable {
    public var name: String
    public var gridHeight: Int, gridWidth: Int
    /// (gridHeight · gridWidth, D): the normed patch tokens, row-major over the grid.
    public var tokens: [Float]
    public var image: Image
}

/// Patch-feature maps as DINOv2 shows them: the principal components of the last layer's patch
/// tokens, fitted over all the given images together. The first component separates object from
/// background: its min-max scaled value above `threshold` is the foreground (its sign chosen so that the
/// foreground touches the images' borders less, as objects inside a frame do). A second fit over the foreground patches
/// alone gives three components shown as red, green and blue, each min-max scaled over the foreground;
/// the background is black.
public struct PatchComponentMaps {
    public let exporter: AttentionExporter
    public var threshold: Float

    /// `size` resizes each image's short side first (nil: its own size), as `AttentionExporter`.
    public init(checkpoint: BackboneCheckpoint, size: Int? = nil, threshold: Float = 0.5) {
        exporter = AttentionExporter(checkpoint: checkpoint, size: size)
        self.threshold = threshold
    }

    /// The patch tokens of one image (any size: the position embedding is interpolated).
    public func tokens(_ image: Image, name: String) -> PatchTokens {
        let checkpoint = exporter.checkpoint
        let (display, input) = exporter.prepare(image)
        let activations = checkpoint.transformer.makeActivations(batch: 1, imageHeight: display.height, imageWidth: display.width,
                                                                 training: false, classTokenOnly: false)
        let buffer = FloatBuffer(input)
        checkpoint.transformer.forward(parameters: checkpoint.parameters.pointer, images: buffer.pointer, activations: activations)
        withExtendedLifetime(buffer) {}
        let out = FloatBuffer(count: activations.patchCount * checkpoint.config.embedDim)
        activations.copyPatchTokens(to: out.pointer)
        return PatchTokens(name: name, gridHeight: activations.gridHeight, gridWidth: activations.gridWidth, tokens: out.array,
                           image: display)
    }

    /// The result for one image.
    public struct Map: Sendable {
        public var name: String
        public var image: Image
        public var gridHeight: Int, gridWidth: Int
        /// The first component per patch, min-max scaled over all images to [0, 1].
        public var first: [Float]
        public var foreground: [Bool]
        /// Per patch, the colour of components 1–3 of the foreground fit (black on the background).
        public var colors: [Color]
        /// The share of the patches that are foreground, in [0, 1].
        public var foregroundShare: Double { Double(foreground.filter { $0 }.count) / Double(max(1, foreground.count)) }
    }

    /// Fits the components over `images` together and maps each image.
    public func maps(_ images: [PatchTokens]) -> [Map] {
        let d = exporter.checkpoint.config.embedDim
        let all = images.flatMap(\.tokens)
        let first = Self.principalComponents(all, dimension: d, count: 1)
        var projected = Self.project(all, dimension: d, basis: first)
        let (lo, hi) = (projected.min() ?? 0, projected.max() ?? 1)
        projected = projected.map { hi > lo ? ($0 - lo) / (hi - lo) : 0 }
        // The component's sign is arbitrary: take the side that touches the images' borders less as the
        // foreground (objects sit inside the frame), the smaller side when both touch them as much.
        var border = [Bool]()
        for t in images {
            for gy in 0..<t.gridHeight { for gx in 0..<t.gridWidth {
                border.append(gy == 0 || gx == 0 || gy == t.gridHeight - 1 || gx == t.gridWidth - 1)
            } }
        }
        func borderShare(_ side: [Bool]) -> Double {
            let chosen = side.indices.filter { side[$0] }
            return chosen.isEmpty ? 1 : Double(chosen.filter { border[$0] }.count) / Double(chosen.count)
        }
        var foreground = projected.map { $0 > threshold }
        let flipped = projected.map { 1 - $0 > threshold }
        let (a, b) = (borderShare(foreground), borderShare(flipped))
        if b < a || (b == a && flipped.filter({ $0 }).count < foreground.filter({ $0 }).count) {
            projected = projected.map { 1 - $0 }
            foreground = flipped
        }
        let rows = all.count / max(d, 1)
        let kept = (0..<rows).filter { foreground[$0] }
        var keptTokens = [Float](); keptTokens.reserveCapacity(kept.count * d)
        for r in kept { keptTokens.append(contentsOf: all[(r * d)..<((r + 1) * d)]) }
        let basis = kept.count >= 2 ? Self.principalComponents(keptTokens, dimension: d, count: 3) : []
        let rgb = basis.isEmpty ? [] : Self.project(keptTokens, dimension: d, basis: basis)
        let components = basis.count
        var ranges = [(Float, Float)](repeating: (0, 1), count: components)
        for c in 0..<components {
            let values = stride(from: c, to: rgb.count, by: components).map { rgb[$0] }
            ranges[c] = (values.min() ?? 0, values.max() ?? 1)
        }
        var colors = [Color](repeating: .black, count: rows)
        for (i, r) in kept.enumerated() where components > 0 {
            let channel = (0..<3).map { c -> UInt8 in
                guard c < components else { return 0 }
                let (a, b) = ranges[c]
                return UInt8(max(0, min(255, (255 * (b > a ? (rgb[i * components + c] - a) / (b - a) : 0.5)).rounded())))
            }
            colors[r] = Color(channel[0], channel[1], channel[2])
        }
        var offset = 0
        return images.map { t in
            let n = t.gridHeight * t.gridWidth
            defer { offset += n }
            return Map(name: t.name, image: t.image, gridHeight: t.gridHeight, gridWidth: t.gridWidth,
                       first: Array(projected[offset..<(offset + n)]), foreground: Array(foreground[offset..<(offset + n)]),
                       colors: Array(colors[offset..<(offset + n)]))
        }
    }

    /// The first `count` principal directions of the rows of `x` (N, D), each of unit length: the
    /// covariance by GEMM, then subspace iteration with Gram-Schmidt in Double.
    public static func principalComponents(_ x: [Float], dimension d: Int, count: Int) -> [[Double]] {
        let n = x.count / d
        guard n > 0, d > 0 else { return [] }
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mean[j] += Double(x[r * d + j]) } }
        mean = mean.map { $0 / Double(n) }
        let centered = FloatBuffer((0..<(n * d)).map { x[$0] - Float(mean[$0 % d]) })
        let covariance = FloatBuffer(count: d * d)
        GEMM.multiply(transposeA: true, transposeB: false, m: d, n: d, k: n, a: centered.pointer, lda: d,
                      b: centered.pointer, ldb: d, beta: 0, c: covariance.pointer, ldc: d)
        let cov = covariance.array.map(Double.init)
        var generator = RandomGenerator(seed: 1)
        var basis = (0..<min(count, d)).map { _ in (0..<d).map { _ in generator.nextDouble() - 0.5 } }
        for _ in 0..<300 {
            basis = basis.map { v in
                (0..<d).map { i in
                    var s = 0.0
                    for j in 0..<d { s += cov[i * d + j] * v[j] }
                    return s
                }
            }
            for i in basis.indices {   // Gram-Schmidt: each direction orthogonal to the earlier ones
                for j in 0..<i {
                    let dot = zip(basis[i], basis[j]).reduce(0) { $0 + $1.0 * $1.1 }
                    basis[i] = zip(basis[i], basis[j]).map { $0 - dot * $1 }
                }
                let norm = basis[i].reduce(0) { $0 + $1 * $1 }.squareRoot()
                basis[i] = basis[i].map { norm > 0 ? $0 / norm : 0 }
            }
        }
        return basis
    }

    /// Each row of `x` (N, D), centred on the rows' mean, projected on `basis`: (N, basis.count).
    public static func project(_ x: [Float], dimension d: Int, basis: [[Double]]) -> [Float] {
        let n = x.count / max(d, 1)
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mean[j] += Double(x[r * d + j]) / Double(n) } }
        var out = [Float](repeating: 0, count: n * basis.count)
        for r in 0..<n {
            for (c, v) in basis.enumerated() {
                var s = 0.0
                for j in 0..<d { s += (Double(x[r * d + j]) - mean[j]) * v[j] }
                out[r * basis.count + c] = Float(s)
            }
        }
        return out
    }

    /// The component colours at the image's size (each patch a block, nearest neighbour).
    public func picture(_ map: Map) -> Image {
        var canvas = Canvas(width: map.image.width, height: map.image.height, background: .black)
        let p = exporter.checkpoint.config.patchSize
        for gy in 0..<map.gridHeight { for gx in 0..<map.gridWidth {
            canvas.fill(x: gx * p, y: gy * p, width: p, height: p, color: map.colors[gy * map.gridWidth + gx])
        } }
        return canvas.image
    }

    /// One image's cells: the input, the first component (viridis), the foreground, the components as RGB.
    func cells(_ map: Map) -> [ContactSheet.Cell?] {
        let heat = exporter.heatmap(map.first, gridHeight: map.gridHeight, gridWidth: map.gridWidth,
                                    width: map.image.width, height: map.image.height)
        let mask = exporter.masked(map.image, keep: map.foreground, gridWidth: map.gridWidth)
        return [ContactSheet.Cell(map.image, map.name), ContactSheet.Cell(heat, "1st component"),
                ContactSheet.Cell(mask, "foreground"), ContactSheet.Cell(picture(map), "components as RGB")]
    }

    /// One image's page.
    public func sheet(for map: Map) -> Image {
        ContactSheet(title: String(format: "%@: patch-token PCA, %dx%d patches, %.0f%% foreground", map.name, map.gridWidth,
                                   map.gridHeight, 100 * map.foregroundShare), rows: [cells(map)]).render()
    }

    /// Writes `NAME-pca.png` (the RGB components at the image's size) and `NAME-pca-sheet.png` per image,
    /// and `pca-overview.png` (a row per image) when there are several.
    public func export(_ maps: [Map], to folder: URL) throws -> [URL] {
        try createFolder(folder, what: "output folder")
        var written: [URL] = []
        var stems = Set<String>()
        for map in maps {
            let stem = exporter.uniqueStem(map.name, among: &stems)
            for (suffix, image) in [("pca", picture(map)), ("pca-sheet", sheet(for: map))] {
                let url = folder.appendingPathComponent("\(stem)-\(suffix).png")
                try ImageCodec.writePNG(image, to: url)
                written.append(url)
            }
        }
        if maps.count > 1 {
            let url = folder.appendingPathComponent("pca-overview.png")
            try ImageCodec.writePNG(ContactSheet(title: "patch-token PCA of \(maps.count) images, fitted together",
                                                 rows: maps.map(cells)).render(), to: url)
            written.append(url)
        }
        return written
    }
}
