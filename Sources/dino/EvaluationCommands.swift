import ArgumentParser
import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation

/// The evaluation transform's sizes, shared by `features`, `knn` and `linear`.
struct EvaluationTransform: ParsableArguments {
    @Option(help: "Resize the short side to this before the center crop, for every image (default: input size x 256/224, and images already at the input size as they are; 32 gives the official transform on 28-px Fashion-MNIST).")
    var resize: Int?
    @Option(name: .customLong("input-size"), help: "Evaluate at this square size (the position embedding interpolated bicubically; default: the checkpoint's training size). A model trained on smaller crops than the images, e.g. 21 px crops of 28-px Fashion-MNIST, can be evaluated at the images' own size.")
    var inputSize: Int?

    func validate() throws {
        try require((resize ?? 1) >= 1, "--resize must be a positive number of pixels")
        try require((inputSize ?? 1) >= 1, "--input-size must be a positive number of pixels")
    }
}

/// Features for a data argument: a cached `.npy`, raw pixels, or a checkpoint's frozen CLS features.
struct FeatureSource: ParsableArguments {
    @Option(help: ArgumentHelp(checkpointHelp + " Omit it with --raw-pixels or .npy inputs.")) var checkpoint: String?
    @Flag(name: .customLong("raw-pixels"), help: "Use pixels/255 as features (the floor to beat); folder images are resized and center-cropped to 32x32 first.") var rawPixels = false
    @Flag(name: .customLong("normalize-pixels"), help: "With --raw-pixels: (x - mean) / std with the training data's statistics (Fashion-MNIST's published ones; a folder's measured on its images).")
    var normalizePixels = false
    @Option(name: .customLong("batch-size"), help: "Images per forward pass (memory, not results).") var batchSize = 256
    @Option(name: .customLong("on-bad-image"), help: "fail or skip unreadable images.") var onBadImage = "fail"
    @Option(name: .customLong("limit"), help: "Use only the first N images of each set.") var limit: Int?
    @Flag(name: .customLong("avgpool"), help: "Concatenate the average of the patch tokens to the CLS token (as eval_linear.py's --avgpool_patchtokens).")
    var avgpool = false
    @Option(name: .customLong("n-last-blocks"), help: "Concatenate the normed CLS tokens of the last N blocks (as eval_linear.py's --n_last_blocks; 1 is the CLS output).")
    var lastBlocks = 1
    @OptionGroup var transform: EvaluationTransform
    @OptionGroup var normalization: NormalizationOption
    @OptionGroup var precision: MatmulPrecisionOption

    func validate() throws {
        try requirePath(checkpoint, "--checkpoint")
        try require((1...65536).contains(batchSize), "--batch-size must be 1...65536")
        try require((limit ?? 1) >= 1, "--limit must be at least 1")
        try require(!normalizePixels || rawPixels, "--normalize-pixels goes with --raw-pixels (a checkpoint normalizes with its own statistics)")
        try require(!rawPixels || (transform.resize == nil && transform.inputSize == nil),
                    "--resize and --input-size go with --checkpoint (raw pixels are Fashion-MNIST's 28x28 as stored, a folder's images resized and center-cropped to 32x32)")
        try require(lastBlocks >= 1, "--n-last-blocks must be at least 1")
        try require(BadImagePolicy(rawValue: onBadImage) != nil, "--on-bad-image takes fail or skip, not '\(onBadImage)'")
    }

    /// The features of `argument` (a dataset or a cached `.npy`); `labelsFor` names what needs the
    /// labels, so that a folder with no class subfolders is refused before its features are computed.
    /// `opened`: the dataset when the caller has already opened it (`labelledDataset`).
    func features(_ argument: String, what: String, labelsFor purpose: String, opened: (any ImageDataset)? = nil) throws -> FeatureSet {
        if argument.hasSuffix(".npy") {
            guard !avgpool && lastBlocks == 1 else {
                throw DinoError("--avgpool and --n-last-blocks need --checkpoint; a cached .npy holds the features it was written with")
            }
            return try FeatureSet.read(from: URL(fileURLWithPath: argument))
        }
        var dataset = try opened ?? labelledDataset(argument, labelsFor: purpose)
        if let limit, limit < dataset.count { dataset = DatasetSubset(dataset, indices: Array(0..<limit)) }
        if rawPixels {
            guard !avgpool && lastBlocks == 1 else {
                throw DinoError("--avgpool and --n-last-blocks need --checkpoint (raw pixels have no tokens)")
            }
            return try rawPixelFeatures(dataset, channels: 1, size: argument.hasPrefix("fashion-mnist") ? nil : 32)
        }
        guard let checkpoint else {
            throw DinoError("\(argument) is images: give --checkpoint to compute their features (or --raw-pixels, or a .npy written by dino features)")
        }
        let policy = BadImagePolicy(rawValue: onBadImage)!   // checked by validate()
        let extractor = try FeatureExtractor(checkpoint: loadBackbone(checkpoint, normalization: normalization),
                                             batchSize: batchSize, inputSize: transform.inputSize,
                                             resizeTo: transform.resize)
        noteEvaluationResize(extractor, given: transform.resize)
        let line = ProgressLine()
        let set = try precision.run {
            try extractor.extract(dataset, onBadImage: policy, meanPatchToken: avgpool, lastBlocks: lastBlocks) { done, total in
                line.update("\(what) features \(done)/\(total)", force: done == total)
            }
        }
        line.finish()
        if !set.skipped.isEmpty { FileHandle.standardError.write(Data("skipped \(set.skipped.count) unreadable \(what) image(s)\n".utf8)) }
        return set
    }
}

/// Whether the note of `noteEvaluationResize` was printed (knn and linear extract two sets).
nonisolated(unsafe) var notedEvaluationResize = false

/// A line on stderr, once, when the images are resized as the checkpoint's recipe asks (`eval_resize`)
/// rather than as eval_knn.py does, so that a number that differs from the official protocol says why.
func noteEvaluationResize(_ extractor: FeatureExtractor, given: Int?) {
    guard given == nil, let resize = extractor.checkpoint.evaluationResize, extractor.resizeTo == resize, !notedEvaluationResize else { return }
    notedEvaluationResize = true
    let size = extractor.inputSize, official = Int((Double(size) * 256 / 224).rounded())
    FileHandle.standardError.write(Data("note: each image evaluated as \(extractor.transformDescription); --resize \(official) evaluates as eval_knn.py (short side \(official) px, the central \(size)x\(size))\n".utf8))
}

/// Folders already warned about files of other formats (one warning per folder per command).
nonisolated(unsafe) var warnedFolders: Set<String> = []

/// The dataset a data argument names (`openDataset`), with a warning on stderr, once per folder, about
/// image files of formats that are not read (HEIC, WebP, ...).
func openData(_ argument: String) throws -> any ImageDataset {
    let dataset = try openDataset(argument: argument)
    if let folder = dataset as? ImageFolder, let note = folder.otherFormatsNote, warnedFolders.insert(folder.root.path).inserted {
        FileHandle.standardError.write(Data("warning: \(note)\n".utf8))
    }
    return dataset
}

/// The dataset `argument` names, refused when it has no labels (`purpose` needs them): a folder without
/// class subfolders is found out before any features are computed.
func labelledDataset(_ argument: String, labelsFor purpose: String) throws -> any ImageDataset {
    let dataset = try openData(argument)
    if dataset.classNames.isEmpty, let folder = dataset as? ImageFolder {
        // Some images in subfolders and some beside them: the loose ones have no class.
        let loose = folder.looseImages
        if !loose.isEmpty {
            throw DinoError("\(argument) has \(loose.count) image(s) directly inside it (e.g. \(loose[0])) beside its class subfolders, and \(purpose) needs a class for every image: move them into a class subfolder or out of the folder")
        }
    }
    guard !dataset.classNames.isEmpty else {
        throw DinoError("\(argument) has no class subfolders, and \(purpose) needs labels: give a folder with one subfolder per class, fashion-mnist:train/test, or a .npy with its .labels.npy")
    }
    return dataset
}

extension FeatureSource {
    /// `--normalize-pixels`: raw pixels as (x - mean) / std, for the training and the test data alike, with
    /// the training data's statistics: Fashion-MNIST's published ones, or those measured on a folder's
    /// images. Without the flag (or for cached `.npy` features), the sets as they are.
    func pixelNormalization(train: FeatureSet, trainArgument: String) -> (FeatureSet) -> FeatureSet {
        guard rawPixels && normalizePixels && !trainArgument.hasSuffix(".npy") else { return { $0 } }
        let (mean, std) = trainArgument.hasPrefix("fashion-mnist") ? (FashionMNIST.mean[0], FashionMNIST.std[0]) : pixelStatistics(train)
        return { normalizedPixels($0, mean: mean, std: std) }
    }

    /// The features of `train` and `test` as `knn --test` and `linear` use them: raw pixels normalized by the
    /// training data's statistics (`--normalize-pixels`), the test labels renumbered to the training classes.
    func trainAndTest(_ train: String, _ test: String, labelsFor purpose: String) throws -> (train: FeatureSet, test: FeatureSet) {
        // One data set given twice: its features once, and a word that the score is not held out.
        if sameData(train, test) {
            let features = try features(train, what: "train", labelsFor: purpose)
            let instead = purpose == "k-NN" ? "--validation queries every fifth image against the others instead"
                                            : "give a test set the probe does not train on"
            FileHandle.standardError.write(Data("warning: --test is the --train data, so every test image is also a training image and the score is not held out; \(instead)\n".utf8))
            let normalized = pixelNormalization(train: features, trainArgument: train)(features)
            return (normalized, normalized)
        }
        // The test data is opened (and its labels checked) before the training features are computed.
        let testData = test.hasSuffix(".npy") ? nil : try labelledDataset(test, labelsFor: purpose)
        let trainFeatures = try features(train, what: "train", labelsFor: purpose)
        let normalize = pixelNormalization(train: trainFeatures, trainArgument: train)
        return (normalize(trainFeatures),
                try normalize(features(test, what: "test", labelsFor: purpose, opened: testData)).relabeled(toClassesOf: trainFeatures))
    }
}

/// Whether two data arguments name the same data: the same `fashion-mnist:` split, or the same file or
/// folder (after `..` and symbolic links are resolved).
func sameData(_ a: String, _ b: String) -> Bool {
    func resolved(_ path: String) -> String {
        path.hasPrefix("fashion-mnist:") ? path : URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }
    return resolved(a) == resolved(b)
}

struct KNN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "knn",
        abstract: "Weighted k-NN on frozen teacher features (official eval_knn.py): top-1/top-5 per k and per-class accuracy.",
        discussion: "DATA: an image folder (class = first-level subfolder), fashion-mnist:train / fashion-mnist:test, or a .npy written by dino features (labels from its .labels.npy).")

    @Option(help: "Training (memory bank) data.") var train: String
    @Option(help: "Test data.") var test: String?
    @Flag(help: "Instead of --test, cut the queries from the training data: every fifth image a query, the others the memory bank (the split of the training loop's held-out check). Choose settings with it; report on the test split.")
    var validation = false
    @OptionGroup var source: FeatureSource
    @Option(help: "Comma-separated k values.") var k = "10,20,100,200"
    @Option(help: "Vote temperature T (weights exp(sim/T)).") var temperature: Float = 0.07
    @Flag(help: "Print one JSON object instead of tables.") var json = false
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(train, "--train")
        try requirePath(test, "--test")
        try require(temperature > 0 && temperature.isFinite, "--temperature must be a positive number")
        let values = k.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        try require(!values.isEmpty && values.allSatisfy { ($0 ?? 0) > 0 }, "--k takes comma-separated positive integers, e.g. 10,20")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            var ks: [Int] = []  // in the order given, each once
            for value in k.split(separator: ",").compactMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) where !ks.contains(value) {
                ks.append(value)
            }
            guard !ks.isEmpty else { throw DinoError("--k takes comma-separated positive integers") }
            let started = Date()
            let trainSet: FeatureSet, testSet: FeatureSet
            switch (test, validation) {
            case (let test?, false):
                (trainSet, testSet) = try source.trainAndTest(train, test, labelsFor: "k-NN")
            case (nil, true):
                let trainFeatures = try source.features(train, what: "train", labelsFor: "k-NN")
                (trainSet, testSet) = source.pixelNormalization(train: trainFeatures, trainArgument: train)(trainFeatures).validationSplit()
            case (_?, true): throw DinoError("give --test or --validation, not both")
            case (nil, false): throw DinoError("give --test DATA (or --validation to cut the queries from --train)")
            }
            if validation && trainSet.count == 0 {
                throw DinoError("the validation split of \(testSet.count) image(s) leaves no memory bank (every fifth image is a query, the others the bank): give at least 2 images")
            }
            guard trainSet.count > 0, testSet.count > 0 else {
                throw DinoError("the \(trainSet.count == 0 ? "training" : "test") data holds no images")
            }
            guard !testSet.labels.isEmpty, !trainSet.labels.isEmpty else {
                throw DinoError("k-NN needs labels: an image folder with class subfolders, fashion-mnist:*, or a .npy with its .labels.npy")
            }
            guard trainSet.dimension == testSet.dimension else {
                throw DinoError("train features are \(trainSet.dimension)-dimensional, test features \(testSet.dimension)")
            }
            let evaluated = Date()
            let results = try DinoEval.KNN.evaluate(trainFeatures: trainSet.features, trainLabels: trainSet.labels,
                                                    testFeatures: testSet.features, testLabels: testSet.labels,
                                                    dimension: trainSet.dimension, ks: ks, temperature: temperature)
            let knnSeconds = Date().timeIntervalSince(evaluated)
            let classNames = trainSet.classNames.isEmpty ? testSet.classNames : trainSet.classNames
            if json {
                let object: [String: Any] = [
                    "train_images": trainSet.count, "test_images": testSet.count, "dimension": trainSet.dimension,
                    "queries": validation ? "validation" : "test",
                    "temperature": temperature, "seconds": Date().timeIntervalSince(started), "knn_seconds": knnSeconds,
                    "results": results.map { ["k": $0.k, "top1": $0.top1, "top5": $0.top5, "per_class": $0.perClass] },
                    "classes": classNames,
                ]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
                return
            }
            let split = validation ? "validation split: \(trainSet.count) memory / \(testSet.count) query" : "\(trainSet.count) train / \(testSet.count) test"
            print("weighted k-NN (T = \(temperature)) on \(split) images, \(trainSet.dimension)-d features (\(String(format: "%.1f", knnSeconds)) s)")
            print("    k    top-1    top-5")
            for r in results { print(String(format: "%5ld  %6.2f%%  %6.2f%%", r.k, r.top1, r.top5)) }
            if let largest = ks.max(), largest > trainSet.count {
                print("(a k above the \(trainSet.count) memory images votes with all of them)")
            }
            let best = results.first { $0.k == 20 } ?? results[0]
            print("per-class top-1 at k = \(best.k):")
            for (c, accuracy) in best.perClass.enumerated() where best.perClassCount[c] > 0 {
                let name = c < classNames.count ? classNames[c] : "class \(c)"
                print("  " + name.padding(toLength: 14, withPad: " ", startingAt: 0) + String(format: " %6.2f%%  (%d image%@)", accuracy, best.perClassCount[c], best.perClassCount[c] == 1 ? "" : "s"))
            }
        }
    }
}

struct Linear: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a linear classifier on frozen features and report test top-1 (after eval_linear.py).")

    @Option(help: "Training data (folder, fashion-mnist:train, or .npy).") var train: String
    @Option(help: "Test data.") var test: String
    @OptionGroup var source: FeatureSource
    @Option(help: "Passes of the classifier over the training features.") var epochs = 30
    @Option(help: "Peak learning rate of the classifier's SGD (momentum 0.9, cosine to 0).") var lr: Float = 0.1
    @Option(name: .customLong("probe-batch-size"), help: "Features per step of the classifier.") var probeBatchSize = 256
    @Option(name: .customLong("weight-decay"), help: "The classifier's weight decay.") var weightDecay: Float = 0
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(train, "--train")
        try requirePath(test, "--test")
        try require((1...100_000).contains(epochs), "--epochs must be 1...100000")
        try require(lr > 0 && lr.isFinite, "--lr must be a positive number")
        try require((1...65536).contains(probeBatchSize), "--probe-batch-size must be 1...65536")
        try require(weightDecay >= 0 && weightDecay.isFinite, "--weight-decay must be 0 or more")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let (trainSet, testSet) = try source.trainAndTest(train, test, labelsFor: "the linear probe")
            guard !trainSet.labels.isEmpty, !testSet.labels.isEmpty, (trainSet.labels + testSet.labels).allSatisfy({ $0 >= 0 }) else {
                throw DinoError("the linear probe needs labels: an image folder with class subfolders, fashion-mnist:*, or a .npy with its .labels.npy")
            }
            let trainClasses = Set(trainSet.labels).count
            guard trainClasses >= 2 else {
                throw DinoError("the linear probe needs at least 2 classes in the training data (found \(trainClasses)\(trainSet.classNames.count == 1 ? ": " + trainSet.classNames[0] : ""))")
            }
            var settings = LinearProbeSettings()
            settings.epochs = epochs; settings.learningRate = lr; settings.batchSize = probeBatchSize; settings.weightDecay = weightDecay
            let result = try LinearProbe.train(trainFeatures: trainSet.features, trainLabels: trainSet.labels,
                                               testFeatures: testSet.features, testLabels: testSet.labels,
                                               dimension: trainSet.dimension, settings: settings) { epoch, loss in
                if epoch % 5 == 0 || epoch == epochs { print(String(format: "epoch %d/%d  loss %.4f", epoch, epochs, loss)) }
            }
            print(String(format: "linear probe on %d-d features: train top-1 %.2f%%, test top-1 %.2f%%", trainSet.dimension,
                         result.trainTop1, result.testTop1))
        }
    }
}

struct Attention: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the last layer's CLS attention per head (and their mean) as PNG heatmaps, overlays and masks.",
        discussion: """
        For each image: NAME-sheet.png (every map on one page, upsampled to at least 224 px), NAME-image.png, \
        NAME-attn-headH.png / NAME-attn-mean.png (viridis), NAME-overlay-*.png, \
        and NAME-mask60-*.png (the smallest set of patches holding 60% of the attention mass, as the paper). \
        Prints the share of attention on the foreground: inside --mask images when given, otherwise on \
        patches with any pixel above 10% intensity (Fashion-MNIST's objects on black).
        """)

    @Option(help: ArgumentHelp(checkpointHelp)) var checkpoint: String
    @Option(parsing: .upToNextOption, help: "JPEG or PNG images (any size); a quoted pattern such as 'photos/*.jpg' is expanded.") var image: [String] = []
    @Option(name: .customLong("fashion-mnist-test"), help: "Also use the first N Fashion-MNIST test images.")
    var fashionMNISTTest = 0
    @Option(parsing: .upToNextOption, help: "Foreground masks (white = object), one per --image, in the same order, of the same shape (a quoted pattern, 'masks/*.png', is expanded with the same sort).") var mask: [String] = []
    @Option(help: "Output folder.") var output: String
    @Option(help: "Attention mass the masks keep.") var threshold: Float = 0.6
    @Option(help: "Resize the short side to this before cropping to a multiple of the patch size (default: the image's own size, or the model's training size for an image that would give more than 4,096 patches).") var size: Int?
    @OptionGroup var normalization: NormalizationOption
    @Flag(name: .customLong("summary-only"), help: "Print the foreground shares without writing PNGs.") var summaryOnly = false
    @Option(name: .customLong("png-limit"), help: "Write PNGs for at most this many images (the shares cover all).")
    var pngLimit = 100
    @OptionGroup var precision: MatmulPrecisionOption
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(checkpoint, "--checkpoint")
        for path in image { try requireImagePath(path) }
        for path in mask {
            try requirePath(path, "--mask")
            try require(isFolder(path) != true, "--mask \(path) is a folder: give its masks, one per --image in the same order, e.g. --mask '\((path as NSString).appendingPathComponent("*.png"))'")
        }
        try requireFolderPath(output, "--output")
        try require(threshold > 0 && threshold <= 1, "--threshold must be in (0, 1]")
        try require(pngLimit >= 0, "--png-limit must be 0 or more")
        try require(fashionMNISTTest >= 0, "--fashion-mnist-test must be 0 or more")
        try require((size ?? 1) >= 1, "--size must be a positive number of pixels")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let images = try expandImagePatterns(image), maskPaths = try expandImagePatterns(mask, option: "--mask")
            guard maskPaths.isEmpty || maskPaths.count == images.count else { throw DinoError("give one --mask per --image (\(images.count) images, \(maskPaths.count) masks)") }
            let backbone = try loadBackbone(checkpoint, normalization: normalization)
            let exporter = AttentionExporter(checkpoint: backbone, threshold: threshold, size: size)
            let inputs = try loadImages(images, fashionMNISTTest: fashionMNISTTest, for: exporter)
            // One optional mask per image: the --mask files for the --image files, nil for the rest.
            var masks: [DinoData.Image?] = try loadMasks(maskPaths, for: inputs, images: images)
            masks += Array(repeating: nil, count: inputs.count - masks.count)
            guard !inputs.isEmpty else { throw DinoError("give --image files or --fashion-mnist-test N") }
            // PNGs (a sheet, the image, and a heatmap, overlay and mask per head and for the mean) for the
            // first pngLimit images; shares for all of them.
            let written = summaryOnly ? 0 : min(pngLimit, inputs.count)
            let maps = try precision.run {
                var maps = written > 0
                    ? try exporter.export(Array(inputs[..<written]), to: URL(fileURLWithPath: output), masks: Array(masks[..<written])) : []
                for i in written..<inputs.count {
                    maps.append(exporter.attention(inputs[i].1, name: inputs[i].0, foregroundMask: masks[i]))
                }
                return maps
            }
            if maps.count <= 20 {
                for m in maps {
                    print(String(format: "%@: %dx%d patches, ", m.name, m.gridWidth, m.gridHeight)
                          + (m.foregroundIsWholeImage ? "no dark background to measure against (every patch is foreground)"
                                                      : String(format: "%.1f%% of the mean attention on the foreground", 100 * m.foregroundShare)))
                }
            }
            let mean = maps.map(\.foregroundShare).reduce(0, +) / Double(maps.count)
            let whole = maps.filter(\.foregroundIsWholeImage).count
            // Without --mask the foreground is the patches with a pixel above 10% intensity (an object on
            // black); on a photo that is every patch, and a share of 100% would say nothing.
            if whole == maps.count {
                print("no foreground share: every patch of every image is brighter than 10%, so without --mask there is no background to compare with (give --mask, white = object)")
            } else {
                print(String(format: "mean foreground share over %d image(s): %.1f%%", maps.count, 100 * mean)
                      + (whole == 0 ? "" : " (\(whole) of them have no dark background and count 100%; --mask measures them)"))
            }
            if written > 0 {
                let limited = written < inputs.count ? " (the first \(written == 1 ? "image" : "\(written) images"); --png-limit raises it)" : ""
                let files = written * (3 * (backbone.config.numHeads + 1) + 2) + (written > 1 ? 1 : 0)
                print("wrote \(files) PNGs to \(output)\(limited): one NAME-sheet.png per image"
                      + (written > 1 ? " and attention-overview.png" : "") + ", and each map at the image's own size")
            }
        }
    }
}
