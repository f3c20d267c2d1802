import DinoData
import DinoKernels
import DinoModel
import DinoPictures
import Foundation

/// The last block's CLS-to-patch attention of one image (official `visualize_attention.py`:
/// `attn[0, :, 0, 1:]` reshaped to the patch grid).
public struct AttentionMap: Sendable {
    public var name: String
    public var gridHeight: Int, gridWidth: Int
    /// Per head, `gridHeight·gridWidth` probabilities (each sums to 1 − the CLS self-attention).
    public var heads: [[Float]]
    /// The mean over heads.
    public var mean: [Float]
    /// Share of the mean map's mass on foreground patches (see `AttentionExporter`), in [0, 1].
    public var foregroundShare: Double
    /// True when no mask was given and every patch counted as foreground (a photo has no dark
    /// background): `foregroundShare` is then 1 whatever the attention does, and measures nothing.
    public var foregroundIsWholeImage: Bool = false
    /// The image the map was computed on (cropped to a multiple of the patch size).
    public var image: Image
}

/// Computes and writes attention maps: per head and mean heatmaps (viridis), overlays on the image,
/// and the official masks that keep the smallest set of patches holding `threshold` of each head's mass.
///
/// Foreground: with a mask image, the share of attention on its white pixels (per patch, the
/// fraction of the patch inside the mask); without one, patches with any pixel brighter than 10% of
/// full scale count as foreground: on Fashion-MNIST's black background that is the object.
public struct AttentionExporter {
    public let checkpoint: BackboneCheckpoint
    public var mean: [Float], std: [Float]
    public var threshold: Float
    /// Resize the short side to this before cropping to a multiple of the patch size (nil: keep).
    public var size: Int?

    public init(checkpoint: BackboneCheckpoint, mean: [Float]? = nil, std: [Float]? = nil, threshold: Float = 0.6, size: Int? = nil) {
        self.checkpoint = checkpoint
        self.mean = mean ?? checkpoint.mean
        self.std = std ?? checkpoint.std
        self.threshold = threshold
        self.size = size
    }

    /// The most tokens an image may give: the attention matrices of the blocks grow with their square.
    public static let maximumTokens = 4097

    /// The size an image of `width`x`height` is resized to: its short side to `size` (at least a patch
    /// each way); without `size` its own size, or, when that would give more than `maximumTokens` tokens
    /// (a photo from a camera), its short side to the model's training size (224 px for DINO's ViTs,
    /// 518 for DINOv2's), as the official `visualize_attention.py` resizes.
    func scaled(width: Int, height: Int) -> (width: Int, height: Int) {
        let p = checkpoint.config.patchSize
        let tooLarge = (width / p) * (height / p) + checkpoint.config.firstPatchToken > Self.maximumTokens
        guard let size = size ?? (tooLarge ? checkpoint.config.imageSize : nil) else { return (width, height) }
        let scale = Double(size) / Double(min(width, height))
        return (max(p, Int((Double(width) * scale).rounded())), max(p, Int((Double(height) * scale).rounded())))
    }

    /// The size an image of `width`x`height` is resized to (with `size`), then cropped to: a multiple of
    /// the patch size, at least one patch.
    public func resized(width: Int, height: Int) -> (width: Int, height: Int) {
        let p = checkpoint.config.patchSize
        let (w, h) = scaled(width: width, height: height)
        return (max(p, w - w % p), max(p, h - h % p))
    }

    /// Refuses an image that would give more than `maximumTokens` tokens, naming the option that helps.
    public func checkSize(_ image: Image, name: String) throws {
        let (w, h) = resized(width: image.width, height: image.height)
        let p = checkpoint.config.patchSize, tokens = (w / p) * (h / p) + 1
        guard tokens <= Self.maximumTokens else {
            throw DinoError("\(name) gives \(tokens - 1) patches at \(w)x\(h) px (at most \(Self.maximumTokens - 1)): pass --size N to resize its short side, e.g. --size \(16 * p)")
        }
    }

    /// `image` resized as `prepare` resizes it, before the crop to whole patches, as 8-bit pixels (an
    /// image `prepare` leaves at its size is returned as it is): what a command keeps of a camera photo
    /// while it reads the others. `prepare` leaves the result at its size. Check the size first
    /// (`checkSize`): a large `size` would enlarge before the refusal.
    public func reduced(_ image: Image) -> Image {
        let (w, h) = scaled(width: image.width, height: image.height)
        guard w != image.width || h != image.height else { return image }
        return Image(Resample.resizedCrop(FloatImage(image), x: 0, y: 0, width: image.width, height: image.height, outputWidth: w, outputHeight: h))
    }

    /// What the model sees of `image` (resized with `size`, cropped to whole patches) as 8-bit pixels,
    /// and the same normalized as the network's CHW input.
    public func prepare(_ image: Image) -> (display: Image, input: [Float]) {
        let c = checkpoint.config
        var floats = FloatImage(image.converted(to: c.inChannels))
        // Whole-image resize whenever `scaled` asks: with `size`, and without it for a photo with more
        // patches than the attention allows; the crop below only trims to whole patches.
        let (w, h) = scaled(width: image.width, height: image.height)
        if w != floats.width || h != floats.height {
            floats = Resample.resizedCrop(floats, x: 0, y: 0, width: floats.width, height: floats.height, outputWidth: w, outputHeight: h)
        }
        let (width, height) = resized(width: image.width, height: image.height)
        if width != floats.width || height != floats.height {
            floats = Resample.resizedCrop(floats, x: 0, y: 0, width: min(width, floats.width), height: min(height, floats.height),
                                          outputWidth: width, outputHeight: height)
        }
        let display = Image(floats)
        var input = floats.values
        normalize(&input, channels: c.inChannels, plane: width * height, mean: mean, std: std)
        return (display, input)
    }

    /// The attention of one image (any size: the position embedding is interpolated).
    public func attention(_ image: Image, name: String, foregroundMask: Image? = nil) -> AttentionMap {
        let c = checkpoint.config, p = c.patchSize
        let (display, input) = prepare(image)
        let (width, height) = (display.width, display.height)
        let activations = checkpoint.transformer.makeActivations(batch: 1, imageHeight: height, imageWidth: width, training: false,
                                                                 classTokenOnly: true)  // the CLS row of attention alone
        let buffer = FloatBuffer(input)
        checkpoint.transformer.forward(parameters: checkpoint.parameters.pointer, images: buffer.pointer, activations: activations)
        let n = activations.tokens, np = activations.patchCount, gh = activations.gridHeight, gw = activations.gridWidth
        let probabilities = activations.lastAttention
        // The class token's attention to each patch; the registers' columns are left out.
        let heads: [[Float]] = (0..<c.numHeads).map { h in
            Array(UnsafeBufferPointer(start: probabilities.pointer + h * n * n + c.firstPatchToken, count: np))
        }
        withExtendedLifetime(buffer) {}  // the forward pass saw only its pointer
        let meanMap = (0..<np).map { i in heads.reduce(0) { $0 + $1[i] } / Float(c.numHeads) }
        let weights = foregroundWeights(display, mask: foregroundMask, original: (image.width, image.height),
                                        gridHeight: gh, gridWidth: gw, patch: p)
        let total = meanMap.reduce(0, +)
        let share = total > 0 ? Double(zip(meanMap, weights).reduce(0) { $0 + $1.0 * $1.1 } / total) : 0
        return AttentionMap(name: name, gridHeight: gh, gridWidth: gw, heads: heads, mean: meanMap, foregroundShare: share,
                            foregroundIsWholeImage: foregroundMask == nil && !weights.contains(0), image: display)
    }

    /// `mask` over what the model sees of an image of `width`x`height`: stretched to that size, then
    /// resized and cropped as `prepare` resizes and crops the image (nearest neighbour, gray), so that a
    /// mask pixel stays over the image pixel it was drawn on.
    public func fittedMask(_ mask: Image, width: Int, height: Int) -> Image {
        let (w, h) = scaled(width: width, height: height), (cw, ch) = resized(width: width, height: height)
        let whole = Self.resizedMask(mask, width: w, height: h)
        // `prepare`'s crop: the top-left part of the resize, enlarged where the frame is smaller than a patch.
        let (kw, kh) = (min(cw, w), min(ch, h))
        let kept = Image(width: kw, height: kh, channels: 1, pixels: (0..<(kw * kh)).map { whole.pixels[($0 / kw) * w + $0 % kw] })
        return Self.resizedMask(kept, width: cw, height: ch)
    }

    /// `mask` resized (nearest neighbour, gray) to `width`x`height`: what a command keeps of a mask for an
    /// image it `reduced` to that size.
    public static func resizedMask(_ mask: Image, width: Int, height: Int) -> Image {
        let gray = mask.converted(to: 1)
        guard gray.width != width || gray.height != height else { return gray }
        return Image(width: width, height: height, channels: 1, pixels: (0..<(width * height)).map { i in
            gray.pixels[min(gray.height - 1, (i / width) * gray.height / height) * gray.width + min(gray.width - 1, (i % width) * gray.width / width)]
        })
    }

    /// Per patch, the fraction counted as foreground. `image` is what the model sees (`prepare`'s display);
    /// `mask` is over the image before `prepare` (`original` its size).
    func foregroundWeights(_ image: Image, mask: Image?, original: (width: Int, height: Int),
                           gridHeight gh: Int, gridWidth gw: Int, patch p: Int) -> [Float] {
        var weights = [Float](repeating: 0, count: gh * gw)
        let gray = image.converted(to: 1)
        let maskGray = mask.map { fittedMask($0, width: original.width, height: original.height) }
        for gy in 0..<gh { for gx in 0..<gw {
            var inside = 0, bright = false
            for y in (gy * p)..<((gy + 1) * p) { for x in (gx * p)..<((gx + 1) * p) {
                if let maskGray { if maskGray.pixels[y * image.width + x] > 127 { inside += 1 } }
                else if gray.pixels[y * image.width + x] > 25 { bright = true }
            } }
            weights[gy * gw + gx] = maskGray != nil ? Float(inside) / Float(p * p) : (bright ? 1 : 0)
        } }
        return weights
    }

    /// The official threshold mask: the smallest set of patches whose attention sums to at least
    /// `threshold` of the map's mass (sort ascending, cumulative share > 1 − threshold).
    public static func mask(_ map: [Float], threshold: Float) -> [Bool] {
        let total = map.reduce(0, +)
        guard total > 0 else { return map.map { _ in false } }
        let order = map.indices.sorted { map[$0] != map[$1] ? map[$0] < map[$1] : $0 < $1 }
        var keep = [Bool](repeating: false, count: map.count)
        var cumulative: Float = 0
        for i in order {
            cumulative += map[i] / total
            if cumulative > 1 - threshold { keep[i] = true }
        }
        return keep
    }

    /// Writes, per image: `NAME-sheet.png` (everything below on one page, see `sheet(for:)`),
    /// `NAME-attn-headH.png` and `NAME-attn-mean.png` (heatmaps), `NAME-overlay-*.png`,
    /// `NAME-mask-*.png` (the threshold masks over the image) and `NAME-image.png`, at the image's own
    /// size; with more than one image, `attention-overview.png` (`overview(_:)`).
    public func export(_ images: [(String, Image)], to folder: URL, masks: [Image?]? = nil) throws -> [AttentionMap] {
        try createFolder(folder, what: "output folder")
        var maps: [AttentionMap] = []
        var stems: Set<String> = []
        for (index, (name, image)) in images.enumerated() {
            let map = attention(image, name: name, foregroundMask: masks?[index] ?? nil)
            let stem = uniqueStem(name, among: &stems)
            try ImageCodec.writePNG(map.image, to: folder.appendingPathComponent("\(stem)-image.png"))
            for (label, values) in map.heads.enumerated().map({ ("head\($0)", $1) }) + [("mean", map.mean)] {
                let heat = heatmap(values, gridHeight: map.gridHeight, gridWidth: map.gridWidth, width: map.image.width, height: map.image.height)
                try ImageCodec.writePNG(heat, to: folder.appendingPathComponent("\(stem)-attn-\(label).png"))
                try ImageCodec.writePNG(blend(map.image, heat), to: folder.appendingPathComponent("\(stem)-overlay-\(label).png"))
                let keep = Self.mask(values, threshold: threshold)
                try ImageCodec.writePNG(masked(map.image, keep: keep, gridWidth: map.gridWidth),
                                        to: folder.appendingPathComponent("\(stem)-mask\(Int(threshold * 100))-\(label).png"))
            }
            try ImageCodec.writePNG(sheet(for: map), to: folder.appendingPathComponent("\(stem)-sheet.png"))
            maps.append(map)
        }
        if maps.count > 1 { try ImageCodec.writePNG(overview(maps), to: folder.appendingPathComponent("attention-overview.png")) }
        return maps
    }

    /// The heatmap, the overlay and the threshold mask of one map (mean or a head), at the image's size.
    func views(_ map: AttentionMap, _ values: [Float]) -> (heat: Image, overlay: Image, mask: Image) {
        let heat = heatmap(values, gridHeight: map.gridHeight, gridWidth: map.gridWidth, width: map.image.width, height: map.image.height)
        return (heat, blend(map.image, heat),
                masked(map.image, keep: Self.mask(values, threshold: threshold), gridWidth: map.gridWidth))
    }

    /// One image's attention on one page: a column per map (the input, the mean over heads, each head),
    /// a row each for the heatmap (viridis), the heatmap over the image, and the threshold mask;
    /// every picture scaled by a whole factor (nearest neighbour) to at least 224 px on its short side.
    public func sheet(for map: AttentionMap) -> Image {
        let maps = [("mean", map.mean)] + map.heads.enumerated().map { ("head \($0)", $1) }
        let columns = maps.map { label, values in (label, views(map, values)) }
        let percent = "\(Int((threshold * 100).rounded()))%"
        let rows: [[ContactSheet.Cell?]] = [
            [ContactSheet.Cell(map.image, "input")] + columns.map { ContactSheet.Cell($0.1.heat, "\($0.0)") },
            [nil] + columns.map { ContactSheet.Cell($0.1.overlay, "\($0.0) over image") },
            [nil] + columns.map { ContactSheet.Cell($0.1.mask, "\($0.0) \(percent) mass") },
        ]
        let title = map.foregroundIsWholeImage
            ? String(format: "%@: last-layer CLS attention, %dx%d patches", map.name, map.gridWidth, map.gridHeight)
            : String(format: "%@: last-layer CLS attention, %dx%d patches, %.0f%% on the foreground",
                     map.name, map.gridWidth, map.gridHeight, 100 * map.foregroundShare)
        return ContactSheet(title: title, rows: rows).render()
    }

    /// Many images on one page, a row each: the input, the mean map's heatmap, overlay and mask, then
    /// each head's overlay.
    public func overview(_ maps: [AttentionMap]) -> Image {
        let rows: [[ContactSheet.Cell?]] = maps.map { map in
            let mean = views(map, map.mean)
            return [ContactSheet.Cell(map.image, map.name), ContactSheet.Cell(mean.heat, "mean"),
                    ContactSheet.Cell(mean.overlay, "mean over image"), ContactSheet.Cell(mean.mask, "mean mask")]
                + map.heads.enumerated().map { h, values in ContactSheet.Cell(views(map, values).overlay, "head \(h)") }
        }
        return ContactSheet(title: "last-layer CLS attention of \(maps.count) images", rows: rows).render()
    }

    /// A file-name stem for `name` not yet in `stems` (then added): photo.png and photo.jpg give `photo`
    /// and `photo_jpg`, so neither's pictures overwrite the other's.
    func uniqueStem(_ name: String, among stems: inout Set<String>) -> String {
        var stem = safeStem(name)
        if stems.contains(stem) { stem = safeStem(name.replacingOccurrences(of: ".", with: "_")) }
        while stems.contains(stem) { stem += "_" }
        stems.insert(stem)
        return stem
    }

    func safeStem(_ name: String) -> String {
        let stem = (name as NSString).deletingPathExtension
        return String(stem.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
    }

    /// The map upsampled ×patch with nearest neighbour (as the official script), scaled to [0, 1] by its
    /// min and max, through the viridis colour map.
    public func heatmap(_ values: [Float], gridHeight: Int, gridWidth: Int, width: Int, height: Int) -> Image {
        let lo = values.min() ?? 0, hi = values.max() ?? 1
        let range = hi > lo ? hi - lo : 1
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height { for x in 0..<width {
            let gy = min(gridHeight - 1, y * gridHeight / height), gx = min(gridWidth - 1, x * gridWidth / width)
            let (r, g, b) = viridis((values[gy * gridWidth + gx] - lo) / range)
            pixels[3 * (y * width + x)] = r; pixels[3 * (y * width + x) + 1] = g; pixels[3 * (y * width + x) + 2] = b
        } }
        return Image(width: width, height: height, channels: 3, pixels: pixels)
    }

    func blend(_ image: Image, _ heat: Image) -> Image {
        let rgb = image.converted(to: 3)
        return Image(width: rgb.width, height: rgb.height, channels: 3,
                     pixels: zip(rgb.pixels, heat.pixels).map { UInt8((Int($0) + Int($1)) / 2) })
    }

    func masked(_ image: Image, keep: [Bool], gridWidth: Int) -> Image {
        var rgb = image.converted(to: 3)
        let p = checkpoint.config.patchSize
        for y in 0..<rgb.height { for x in 0..<rgb.width where !keep[min(keep.count - 1, (y / p) * gridWidth + x / p)] {
            for c in 0..<3 { rgb.pixels[3 * (y * rgb.width + x) + c] /= 4 }
        } }
        return rgb
    }
}

/// Matplotlib's viridis (`ColorMap.viridis`): perceptually uniform, readable in gray.
public func viridis(_ t: Float) -> (UInt8, UInt8, UInt8) {
    let c = ColorMap.viridis.color(t)
    return (c.red, c.green, c.blue)
}
