import DinoData
import DinoKernels
import Foundation

/// What `dino train --data FOLDER` measures about a folder before it chooses a recipe.
public struct FolderSurvey: Sendable, Equatable {
    public var path: String
    public var imageCount: Int
    /// First-level subfolders when every image sits in one (labels for the held-out k-NN check); 0 otherwise.
    public var classCount: Int
    /// Images decoded for the statistics below (an even spread over the folder), and how many of them failed.
    public var sampled: Int, unreadable: Int
    /// The median short side of the sampled images, in pixels; at `FolderSurvey.decodeLimit` and above a
    /// floor (larger JPEGs are decoded at a reduced scale).
    public var medianShortSide: Int
    /// True when every sampled image has equal red, green and blue (within 2 levels on average).
    public var grayscale: Bool
    /// Per-channel mean and standard deviation of the sampled pixels, in [0, 1] (1 value when gray).
    public var mean: [Double], std: [Double]
    /// `ImageFolder.otherFormatsNote`: files of image formats that are not read (HEIC, WebP, ...), if any.
    public var otherFormatsNote: String?
    /// Images directly in the folder while others sit in subfolders: they take the classes away from all.
    public var looseImages: Int

    public init(path: String, imageCount: Int, classCount: Int, sampled: Int, unreadable: Int, medianShortSide: Int,
                grayscale: Bool, mean: [Double], std: [Double], otherFormatsNote: String? = nil, looseImages: Int = 0) {
        self.path = path; self.imageCount = imageCount; self.classCount = classCount; self.sampled = sampled
        self.unreadable = unreadable; self.medianShortSide = medianShortSide; self.grayscale = grayscale
        self.mean = mean; self.std = std; self.otherFormatsNote = otherFormatsNote; self.looseImages = looseImages
    }

    /// Short sides larger than this are not needed to choose a recipe: JPEGs decode at a smaller scale.
    public static let decodeLimit = 256

    /// Lists `path` (as training would) and decodes up to `sampleSize` images spread over it.
    public static func measure(path: String, sampleSize: Int = 200) throws -> FolderSurvey {
        let folder = try ImageFolder(path: path)
        let n = folder.count, take = min(n, max(1, sampleSize))
        let indices = (0..<take).map { $0 * n / take }
        var shortSides: [Int] = [], unreadable = 0, colored = 0
        var sum = [Double](repeating: 0, count: 3), squares = [Double](repeating: 0, count: 3), pixels = 0.0
        for index in indices {
            guard let image = try? folder.image(at: index, channels: 3, minimumShortSide: decodeLimit) else {
                unreadable += 1
                continue
            }
            shortSides.append(min(image.width, image.height))
            var chroma = 0
            let count = image.width * image.height
            image.pixels.withUnsafeBufferPointer { p in
                for i in 0..<count {
                    let r = Int(p[3 * i]), g = Int(p[3 * i + 1]), b = Int(p[3 * i + 2])
                    chroma += abs(r - g) + abs(g - b)
                    for (c, v) in [r, g, b].enumerated() {
                        let x = Double(v) / 255
                        sum[c] += x; squares[c] += x * x
                    }
                }
            }
            pixels += Double(count)
            if Double(chroma) / Double(max(count, 1)) > 2 { colored += 1 }
        }
        guard !shortSides.isEmpty else {
            throw DinoError("none of the \(take) images sampled from \(path) could be read (e.g. \(folder.name(at: indices[0]))): check that they are JPEG or PNG files")
        }
        let mean = sum.map { $0 / pixels }
        let std = zip(squares, mean).map { max(($0 / pixels - $1 * $1).squareRoot(), 1e-3) }
        let gray = colored == 0
        return FolderSurvey(path: path, imageCount: n, classCount: folder.classNames.count, sampled: shortSides.count + unreadable,
                            unreadable: unreadable, medianShortSide: shortSides.sorted()[shortSides.count / 2], grayscale: gray,
                            mean: gray ? [mean.reduce(0, +) / 3] : mean, std: gray ? [std.reduce(0, +) / 3] : std,
                            otherFormatsNote: folder.otherFormatsNote, looseImages: folder.looseImages.count)
    }
}

/// The recipe `dino train --data FOLDER` uses when no recipe is given: chosen from the folder's image
/// count, image size and channels, time-boxed. Every choice is explained in `explanation` (printed at
/// the start and kept as the `_comment` of `RUN/recipe.yaml`).
public enum FolderRecipe {
    /// The time box when `--minutes` is not given.
    public static let defaultMinutes = 10.0

    /// Prototypes (`out_dim`) for a folder of `images`: about one per 16 images, a power of two in
    /// 64...1024. 1,024 prototypes for 4,000 images leave most of them to a handful of images each.
    public static func prototypes(images: Int) -> Int {
        var k = 64
        while k < 1024 && k * 2 * 16 <= images { k *= 2 }
        return k
    }

    /// The batch: 64, or an eighth of a small folder (a multiple of 8, at least 8) so an epoch has 8 steps.
    public static func batchSize(images: Int) -> Int {
        min(64, max(8, images / 8 / 8 * 8))
    }

    /// The recipe for `survey` with a time box of `minutes`; `note` holds the reasons.
    public static func recipe(for survey: FolderSurvey, minutes: Double = defaultMinutes) throws -> Recipe {
        let side = survey.medianShortSide
        // Sampled JPEGs are decoded at a reduced scale: at the limit and above, the size is a floor.
        let sideText = side >= FolderSurvey.decodeLimit ? "\(FolderSurvey.decodeLimit)+" : "\(side)"
        // Geometry: tiny images (MNIST-like) keep Fashion-MNIST's validated shape, 4 patches across with
        // 3x3-patch global and 2x2-patch local crops; larger images are resized to crops a 2-core step affords.
        let patch: Int, global: Int, local: Int, geometry: String
        // Crop scales: small images keep most of the object in every view (the quick start's milder
        // crops, measured on Fashion-MNIST folders); larger images get the wider range of the 30-minute recipe.
        var globalScale = [0.6, 1.0], localScale = [0.1, 0.4]
        if side <= 48 {
            patch = max(4, (side + 2) / 4)
            global = 3 * patch; local = 2 * patch
            globalScale = [0.8, 1.0]; localScale = [0.2, 0.5]
            geometry = "\(side) px images: patch \(patch), global crops \(global) px (3x3 patches) of 80-100% of the image, local crops \(local) px of 20-50%"
        } else if side <= 128 {
            patch = 8; global = 48; local = 24
            geometry = "\(side) px images, resized into 48 px global crops (6x6 patches of 8 px) and 24 px local crops"
        } else {
            patch = 16; global = 96; local = 48
            geometry = "photos (short side \(sideText) px), resized into 96 px global crops (6x6 patches of 16 px) and 48 px local crops"
        }
        let n = survey.imageCount
        // Refused before a recipe is printed: its smallest batch is 8, and the loader would refuse after.
        guard n >= 8 else {
            throw DinoError("\(survey.path) holds \(n) image\(n == 1 ? "" : "s"): dino train --data needs at least 8 (one batch), and self-supervised training learns from hundreds or more; add images"
                            + (survey.otherFormatsNote.map { " (" + $0 + ")" } ?? ""))
        }
        let channels = survey.grayscale ? 1 : 3
        let k = prototypes(images: n), batch = batchSize(images: n)
        let labelled = survey.classCount >= 2
        // A check over a handful of queries reads 0% or 100% by chance: from 100 images (20 queries).
        let checked = labelled && n >= 100
        // The ceiling the time box fits under: no 2-core step of these models runs 30 times a second.
        let iterations = max(1, n / batch)
        let epochs = max(1, min(1_000_000, Int((30 * 60 * minutes / Double(iterations)).rounded(.up))))
        func list(_ v: [Double]) -> String { "[" + v.map { String(format: "%.4f", $0) }.joined(separator: ", ") + "]" }
        let reasons = [
            "chosen by dino train --data for \(survey.path): \(n) images\(labelled ? " in \(survey.classCount) class folders" : ""), \(survey.grayscale ? "grayscale" : "color"), median short side \(sideText) px (\(survey.sampled) sampled\(survey.unreadable > 0 ? ", \(survey.unreadable) unreadable" : ""))",
            geometry,
            "a 96-wide, 4-block ViT with 3 heads and 4 local crops (the quick start's model: more steps in the box than 6 blocks); \(k) prototypes (about one per 16 images, 64...1024); batch \(batch)",
            "time box \(String(format: "%g", minutes)) minutes (the schedules are fitted to the steps that fit); lr warm-up over at least \(Recipe.warmupFloorSteps) steps (or a quarter of the run)",
            "normalization measured on the sample: mean \(list(survey.mean)), std \(list(survey.std))",
            GEMM.bfloat16Available ? "bfloat16 matmuls (this CPU has AVX-512 BF16: 1.4-1.5x the steps of float32)"
                : "float32 matmuls (bfloat16 needs AVX-512 BF16, which this CPU lacks)",
            checked ? "the teacher's k-NN on a validation split (every fifth image against the rest) about every 100 steps, in knn.jsonl"
                : labelled ? "no k-NN check during training: \(n) images give \(n / 5) validation queries, too few to tell (from 100 images)"
                : survey.looseImages > 0 ? "no k-NN check during training: \(survey.looseImages) image(s) lie beside the class subfolders, so no image has a class (move them into a class folder for the check)"
                : "no class folders, so no k-NN check during training",
        ]
        let grayAugmentation = channels == 1
        let yaml = """
        arch: custom
        embed_dim: 96
        depth: 4
        num_heads: 3
        patch_size: \(patch)
        in_chans: \(channels)
        dataset: folder
        data_path: \(Recipe.doubleQuoted(survey.path))
        mean: \(list(survey.mean))
        std: \(list(survey.std))
        out_dim: \(k)
        head_hidden_dim: 512
        bottleneck_dim: 128
        norm_last_layer: true
        drop_path_rate: 0.0
        global_crop_size: \(global)
        local_crop_size: \(local)
        local_crops_number: 4
        global_crops_scale: \(globalScale)
        local_crops_scale: \(localScale)
        blur_prob: [0.5, 0.1, 0.2]
        blur_sigma: [0.1, \(grayAugmentation ? "0.6" : "2.0")]
        color_jitter_prob: \(grayAugmentation ? "0.4" : "0.8")
        grayscale_prob: \(grayAugmentation ? "0.0" : "0.2")
        solarization_prob: \(grayAugmentation ? "0.0" : "0.2")
        batch_size: \(batch)
        epochs: \(epochs)
        max_minutes: \(minutes)
        lr: 0.016
        min_lr: 1.0e-5
        warmup_epochs: 1
        weight_decay: 0.04
        weight_decay_end: 0.1
        momentum_teacher: 0.98
        teacher_temp: 0.04
        warmup_teacher_temp: 0.04
        warmup_teacher_temp_epochs: 0
        freeze_last_layer: 0
        clip_grad: 3.0
        koleo_loss_weight: 0.05
        knn_every: \(checked ? max(1, 100 / iterations) : 0)
        knn_eval_size: 2000
        knn_train_size: 10000
        saveckp_freq: 0
        seed: 0
        matmul_precision: \(GEMM.bfloat16Available ? "bfloat16" : "float32")

        """
        var recipe = Recipe()
        try recipe.apply(yaml: yaml, source: "the recipe chosen for \(survey.path)")
        recipe.note = reasons.joined(separator: ".\n") + "."
        return recipe
    }
}
