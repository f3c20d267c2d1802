import DinoData
import DinoKernels
import DinoModel
import Foundation

/// Frozen features of a dataset: one row per image that could be read.
public struct FeatureSet: Sendable {
    /// CLS token after the final norm, `(N, D)`.
    public var features: [Float]
    public var dimension: Int
    /// Patch tokens after the final norm, `(N, np, C)` with C = `patchTokenWidth`, when requested.
    public var patchTokens: [Float]?
    /// The model's width C (the feature `dimension` is a multiple of it with `lastBlocks` or `meanPatchToken`).
    public var patchTokenWidth: Int
    public var names: [String]
    public var labels: [Int]
    public var classNames: [String]
    /// Names of images that could not be decoded and were skipped.
    public var skipped: [String]
    public var count: Int { names.count }

    public init(features: [Float], dimension: Int, patchTokens: [Float]?, names: [String], labels: [Int],
                classNames: [String], skipped: [String], patchTokenWidth: Int? = nil) {
        self.features = features; self.dimension = dimension; self.patchTokens = patchTokens; self.names = names
        self.patchTokenWidth = patchTokenWidth ?? dimension
        self.labels = labels; self.classNames = classNames; self.skipped = skipped
    }
}

extension FeatureSet {
    /// The rows `indices`, in that order (patch tokens too, when present).
    public func rows(_ indices: [Int]) -> FeatureSet {
        var picked = [Float](), tokens: [Float]? = patchTokens == nil ? nil : []
        picked.reserveCapacity(indices.count * dimension)
        let tokenCount = count == 0 ? 0 : (patchTokens?.count ?? 0) / count
        for i in indices {
            picked.append(contentsOf: features[(i * dimension)..<((i + 1) * dimension)])
            if let all = patchTokens { tokens!.append(contentsOf: all[(i * tokenCount)..<((i + 1) * tokenCount)]) }
        }
        return FeatureSet(features: picked, dimension: dimension, patchTokens: tokens, names: indices.map { names[$0] },
                          labels: labels.isEmpty ? [] : indices.map { labels[$0] }, classNames: classNames, skipped: skipped,
                          patchTokenWidth: patchTokenWidth)
    }

    /// This (test) set with its labels renumbered to `train`'s classes by name: two folders number their
    /// class subfolders each in its own sorted order, so a test folder with classes a, c against a
    /// training folder with a, b would otherwise score its c images as b. Throws when a test class has
    /// no training images (no classifier can predict it). Sets without class names (cached `.npy`
    /// features) keep their labels as they are.
    public func relabeled(toClassesOf train: FeatureSet) throws -> FeatureSet {
        guard !classNames.isEmpty, !train.classNames.isEmpty, classNames != train.classNames, !labels.isEmpty else { return self }
        let index = Dictionary(train.classNames.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        let used = Set(labels.filter { $0 >= 0 }).sorted().map { $0 < classNames.count ? classNames[$0] : "class \($0)" }
        let missing = used.filter { index[$0] == nil }
        if !missing.isEmpty {
            let shown = missing.prefix(5).map { "'\($0)'" }.joined(separator: ", ") + (missing.count > 5 ? ", ..." : "")
            let known = train.classNames.prefix(10).joined(separator: ", ") + (train.classNames.count > 10 ? ", ..." : "")
            throw DinoError("the test data's class\(missing.count == 1 ? "" : "es") \(shown) \(missing.count == 1 ? "has" : "have") no training images (training classes: \(known)): give test class folders named as the training ones")
        }
        var relabeled = self
        relabeled.labels = labels.map { $0 < 0 ? $0 : index[classNames[$0]]! }  // -1: an image without a class
        relabeled.classNames = train.classNames
        return relabeled
    }

    /// The memory bank and queries of `ValidationSplit` (every fifth row a query).
    public func validationSplit() -> (memory: FeatureSet, queries: FeatureSet) {
        let split = ValidationSplit.indices(count: count)
        return (rows(split.memory), rows(split.queries))
    }
}

/// The evaluation transform and a batched, frozen forward pass (official `eval_knn.py`
/// `extract_features`): resize the short side to size·256/224, center-crop size×size (images already
/// that size are used as they are, unless `resizeTo` is set), pixels/255, normalize with the
/// checkpoint's mean and std.
public struct FeatureExtractor {
    public let checkpoint: BackboneCheckpoint
    public var mean: [Float]
    public var std: [Float]
    public var batchSize: Int
    /// The square size the model sees: the checkpoint's training size unless given (another size
    /// interpolates the position embedding; at least the patch size).
    public var inputSize: Int
    /// The short side before the center crop; nil: size·256/224, and images already size×size untouched.
    /// Set, it applies to every image (the official transform on 28-px Fashion-MNIST is `resizeTo` 32).
    /// Not given, it is the checkpoint's `evaluationResize` (its recipe's `eval_resize`) at the
    /// checkpoint's own size.
    public var resizeTo: Int?

    public init(checkpoint: BackboneCheckpoint, mean: [Float]? = nil, std: [Float]? = nil, batchSize: Int = 64,
                inputSize: Int? = nil, resizeTo: Int? = nil) throws {
        self.checkpoint = checkpoint
        let c = checkpoint.config.inChannels
        self.mean = mean ?? checkpoint.mean
        self.std = std ?? checkpoint.std
        try checkStatistics(mean: self.mean, std: self.std, channels: c)
        self.batchSize = max(1, batchSize)
        self.inputSize = inputSize ?? checkpoint.config.imageSize
        let patch = checkpoint.config.patchSize
        guard self.inputSize >= patch else {
            throw DinoError("the input size (\(self.inputSize)) is below the patch size \(patch): no patch would fit")
        }
        if let resizeTo, resizeTo < self.inputSize {
            throw DinoError("the resize (\(resizeTo)) is below the input size \(self.inputSize): the center crop would not fit")
        }
        self.resizeTo = resizeTo ?? (self.inputSize == checkpoint.config.imageSize ? checkpoint.evaluationResize : nil)
        let tokens = (self.inputSize / patch) * (self.inputSize / patch) + 1
        try checkpoint.config.checkMemory(bytes: checkpoint.config.activationBytes(batch: self.batchSize, tokens: tokens, keptBlocks: 1),
                                          advice: "lower --batch-size or --input-size")
    }

    /// How images reach the model, in words, and why: "the whole image at 21x21 px (the recipe's
    /// eval_resize)", "short side 24 px, the central 21x21 (eval_knn.py)".
    public var transformDescription: String {
        let resize = resizeTo ?? Int((Double(inputSize) * 256 / 224).rounded())
        let what = resize == inputSize ? "the whole image at \(inputSize)x\(inputSize) px" : "short side \(resize) px, the central \(inputSize)x\(inputSize)"
        let why = resizeTo == nil ? "eval_knn.py" : resizeTo == checkpoint.evaluationResize ? "the recipe's eval_resize" : "--resize"
        return "\(what) (\(why))"
    }

    /// The normalized CHW input for one decoded image.
    public func preprocess(_ image: Image) -> [Float] {
        let c = checkpoint.config.inChannels
        var floats = FloatImage(image.converted(to: c))
        if resizeTo != nil || floats.width != inputSize || floats.height != inputSize {
            floats = Resample.resizeAndCenterCrop(floats, size: inputSize,
                                                  resizeTo: resizeTo ?? Int((Double(inputSize) * 256 / 224).rounded()),
                                                  keepingExactSize: false)
        }
        normalize(&floats.values, channels: c, plane: inputSize * inputSize, mean: mean, std: std)
        return floats.values
    }

    /// Features of every readable image, one row per image:
    /// `[CLS of block depth−n, …, CLS of the last block]` after the final norm, `n = lastBlocks`
    /// (official `eval_linear.py` `--n_last_blocks`; 1 is the CLS output `(N, D)`), then with
    /// `meanPatchToken` the last block's mean patch token (official `--avgpool_patchtokens`):
    /// `(N, (n + [1])·D)`. Computed per batch, so the patch tokens of the whole set are never held;
    /// `patchTokens` also returns those.
    public func extract(_ dataset: any ImageDataset, onBadImage: BadImagePolicy = .fail, patchTokens: Bool = false,
                        meanPatchToken: Bool = false, lastBlocks: Int = 1,
                        progress: ((Int, Int) -> Void)? = nil) throws -> FeatureSet {
        let config = checkpoint.config, d = config.embedDim, c = config.inChannels, s = inputSize
        guard (1...config.depth).contains(lastBlocks) else {
            throw DinoError("the number of last blocks must be 1...\(config.depth) for this \(config.depth)-block model (got \(lastBlocks))")
        }
        let transformer = checkpoint.transformer
        let parts = lastBlocks + (meanPatchToken ? 1 : 0)
        var result = FeatureSet(features: [], dimension: parts * d, patchTokens: patchTokens ? [] : nil,
                                names: [], labels: [], classNames: dataset.classNames, skipped: [], patchTokenWidth: d)
        let means = FloatBuffer(count: meanPatchToken ? batchSize * d : 0)
        // CLS of blocks depth−n … depth−2 (the last block's is `normalized`'s), (n − 1, B, D).
        let earlier = FloatBuffer(count: (lastBlocks - 1) * batchSize * d)
        // The last block's CLS alone (the default) runs as two half-batch shards side by side
        // (`VisionTransformer.forward(shards:)`); earlier blocks' CLS need the whole batch's block outputs.
        let sharded = lastBlocks == 1
        var activations: [ViTActivations] = []
        let images = FloatBuffer(count: batchSize * c * s * s), cls = FloatBuffer(count: batchSize * d)
        var start = 0
        while start < dataset.count {
            let end = min(dataset.count, start + batchSize)
            // Decode and preprocess the batch in parallel; errors are collected per image.
            var decoded = [Result<[Float], Error>](repeating: .success([]), count: end - start)
            decoded.withUnsafeMutableBufferPointer { slots in
                let slots = slots
                Parallel.forEachRange(end - start) { range in
                    for i in range {
                        slots[i] = Result { try preprocess(dataset.image(at: start + i, channels: c, minimumShortSide: s)) }
                    }
                }
            }
            var rows: [Int] = []
            for (i, r) in decoded.enumerated() {
                switch r {
                case .success(let values):
                    (images.pointer + rows.count * c * s * s).update(from: values, count: values.count)
                    rows.append(start + i)
                case .failure(let error):
                    if onBadImage == .fail {
                        throw DinoError("\(error) (image \(dataset.name(at: start + i)); use --on-bad-image skip to skip unreadable images)")
                    }
                    result.skipped.append(dataset.name(at: start + i))
                }
            }
            if !rows.isEmpty {
                let batch = rows.count, first = config.depth - lastBlocks
                if activations.reduce(0, { $0 + $1.batch }) != batch {
                    activations = transformer.makeShardActivations(batch: batch, shards: sharded ? min(2, batch) : 1, imageHeight: s,
                                                                   imageWidth: s, training: false,
                                                                   classTokenOnly: !meanPatchToken && !patchTokens)
                }
                let tokens = activations[0].tokens
                if sharded {
                    transformer.forward(parameters: checkpoint.parameters.pointer, images: images.pointer, shards: activations)
                } else {
                    transformer.forward(parameters: checkpoint.parameters.pointer, images: images.pointer,
                                        activations: activations[0]) { block, stream in
                        guard block >= first && block < config.depth - 1 else { return }
                        transformer.normalizedClassTokens(output: earlier.pointer + (block - first) * batchSize * d, stream: stream,
                                                          parameters: checkpoint.parameters.pointer, batch: batch, tokens: tokens)
                    }
                }
                var firstRow = 0
                for a in activations {
                    a.copyClassTokens(to: cls.pointer + firstRow * d)
                    if meanPatchToken { a.copyMeanPatchTokens(to: means.pointer + firstRow * d) }
                    firstRow += a.batch
                }
                for r in 0..<batch {  // row r: [earlier blocks' CLS…, last CLS, mean patch token?]
                    for part in 0..<(lastBlocks - 1) {
                        result.features.append(contentsOf: UnsafeBufferPointer(start: earlier.pointer + (part * batchSize + r) * d, count: d))
                    }
                    result.features.append(contentsOf: UnsafeBufferPointer(start: cls.pointer + r * d, count: d))
                    if meanPatchToken {
                        result.features.append(contentsOf: UnsafeBufferPointer(start: means.pointer + r * d, count: d))
                    }
                }
                if patchTokens {
                    for a in activations {
                        let patches = FloatBuffer(count: a.batch * a.patchCount * d)
                        a.copyPatchTokens(to: patches.pointer)
                        result.patchTokens!.append(contentsOf: patches.array)
                    }
                }
                for r in rows { result.names.append(dataset.name(at: r)); result.labels.append(dataset.label(at: r)) }
            }
            start = end
            progress?(start, dataset.count)
        }
        withExtendedLifetime((images, cls, means, earlier)) {}  // kernels saw only their pointers
        return result
    }
}

extension FeatureSet {
    /// Writes `url` (`(N, D)` float32), the image list beside it (`.txt`, one name per line),
    /// labels (`.labels.npy`, int64) and the class names they index (`.classes.txt`, one per line)
    /// when the data has them, and patch tokens (`.patches.npy`).
    public func write(to url: URL) throws {
        try Npy.write(features, shape: [count, dimension], to: url)
        let base = url.deletingPathExtension()
        try writeAtomically(Data((names.joined(separator: "\n") + "\n").utf8), to: base.appendingPathExtension("txt"))
        if labels.contains(where: { $0 >= 0 }) {
            try Npy.write(labels.map { Int64($0) }, shape: [count], to: URL(fileURLWithPath: base.path + ".labels.npy"))
            if !classNames.isEmpty {
                try writeAtomically(Data((classNames.joined(separator: "\n") + "\n").utf8),
                                    to: URL(fileURLWithPath: base.path + ".classes.txt"))
            }
        }
        if let patchTokens {
            let np = count == 0 ? 0 : patchTokens.count / (count * patchTokenWidth)
            try Npy.write(patchTokens, shape: [count, np, patchTokenWidth], to: URL(fileURLWithPath: base.path + ".patches.npy"))
        }
    }

    /// Reads features written by `write(to:)` (labels from `.labels.npy` and their class names from
    /// `.classes.txt` when present).
    public static func read(from url: URL) throws -> FeatureSet {
        for (suffix, what) in [(".patches.npy", "the patch tokens"), (".labels.npy", "the labels")] where url.path.hasSuffix(suffix) {
            let features = String(url.path.dropLast(suffix.count)) + ".npy"
            if FileManager.default.fileExists(atPath: features) {
                throw DinoError("\(url.path) holds \(what) written beside the features \(features): give that file")
            }
        }
        let (values, shape) = try Npy.read(url)
        guard shape.count == 2, shape[1] >= 1 else {
            throw DinoError("\(url.path) holds shape \(shape); features are (N, D) with D at least 1")
        }
        guard values.allSatisfy(\.isFinite) else { throw DinoError("\(url.path) holds NaN or infinite features") }
        let base = url.deletingPathExtension()
        let labelsURL = URL(fileURLWithPath: base.path + ".labels.npy")
        var labels = Array(repeating: -1, count: shape[0])
        if FileManager.default.fileExists(atPath: labelsURL.path) {
            let (values, labelShape) = try Npy.read(labelsURL)
            guard labelShape == [shape[0]], values.allSatisfy({ $0 == $0.rounded() && $0 >= -1 && $0 < 1_000_000 }) else {
                throw DinoError("\(labelsURL.path) must hold \(shape[0]) integer class labels in 0..<1000000 (-1: none) to go with \(url.path)")
            }
            labels = values.map { Int($0) }
        }
        let names = (try? String(contentsOf: base.appendingPathExtension("txt"), encoding: .utf8))?
            .split(separator: "\n").map(String.init) ?? (0..<shape[0]).map { "row[\($0)]" }
        var classNames: [String] = []
        let classesURL = URL(fileURLWithPath: base.path + ".classes.txt")
        if labels.contains(where: { $0 >= 0 }), FileManager.default.fileExists(atPath: classesURL.path) {
            let bytes = (try? FileManager.default.attributesOfItem(atPath: classesURL.path)[.size] as? Int) ?? nil
            let text = (bytes ?? .max) <= 64 << 20 ? String(data: try readInputFile(classesURL, what: "class names"), encoding: .utf8) : nil
            classNames = text?.split(separator: "\n").map(String.init) ?? []
            guard !classNames.isEmpty, labels.max()! < classNames.count, Set(classNames).count == classNames.count else {
                throw DinoError("\(classesURL.path) must name each class of \(labelsURL.lastPathComponent) once, one UTF-8 line per class (at most 64 MB): delete it to use the labels without names")
            }
        }
        return FeatureSet(features: values, dimension: shape[1], patchTokens: nil, names: names, labels: labels,
                          classNames: classNames, skipped: [])
    }
}
