import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation

/// The main job a newcomer runs first: train the quick recipe on Fashion-MNIST, evaluate the teacher
/// with weighted k-NN on the official test split next to the raw-pixel floor, and write attention maps.
public enum Quickstart {
    /// Raw-pixel floors on Fashion-MNIST (cosine, official split; ../shared/DATA.md).
    public static let rawPixelFloor20NN = 84.59
    public static let rawPixelFloor1NN = 85.76

    /// `Recipes/fashion-mnist-quick.yaml`, embedded so the binary runs from any folder (a test keeps them equal).
    public static let recipeYAML = """
    _comment: >
      The quick start (built into dino quickstart): a 4-block, 96-wide ViT with patch 7 on 21 px global
      crops (80-100% of the image) and 4 local crops of 14 px, batch 32 (twice the steps of batch 64),
      KoLeo 0.05, time-boxed to 4.5 minutes of training on 30,000 Fashion-MNIST images (epochs is the
      ceiling; the lr warms up over at most half of what the box fits), bfloat16 matmuls where the CPU
      has AVX-512 BF16 (float32 elsewhere). The teacher k-NN on a validation split is evaluated at the
      end of every epoch, and every k-NN sees the whole 28 px image at 21 px (eval_resize). How it was
      chosen: EXPERIMENTS.md.
    arch: custom
    embed_dim: 96
    depth: 4
    num_heads: 3
    patch_size: 7
    in_chans: 1
    dataset: fashion-mnist
    out_dim: 1024
    head_hidden_dim: 512
    bottleneck_dim: 128
    norm_last_layer: true
    drop_path_rate: 0.0
    global_crop_size: 21
    local_crop_size: 14
    local_crops_number: 4
    global_crops_scale: [0.8, 1.0]
    local_crops_scale: [0.2, 0.5]
    blur_prob: [0.5, 0.1, 0.2]
    blur_sigma: [0.1, 0.6]
    color_jitter_prob: 0.4
    grayscale_prob: 0.0
    solarization_prob: 0.0
    batch_size: 32
    epochs: 20
    max_minutes: 4.5
    train_subset: 30000
    lr: 0.016
    min_lr: 1.0e-5
    warmup_epochs: 5
    weight_decay: 0.04
    weight_decay_end: 0.1
    momentum_teacher: 0.98
    teacher_temp: 0.04
    warmup_teacher_temp: 0.04
    warmup_teacher_temp_epochs: 0
    freeze_last_layer: 0
    clip_grad: 3.0
    koleo_loss_weight: 0.05
    knn_every: 1
    knn_eval_size: 2000
    knn_train_size: 10000
    eval_resize: 21
    seed: 0
    matmul_precision: bfloat16

    """

    public static func recipe(overrides: [String] = []) throws -> Recipe {
        var recipe = Recipe()
        try recipe.apply(yaml: recipeYAML, source: "the built-in quick recipe")
        for o in overrides { try recipe.apply(override: o) }
        try recipe.validate()
        return recipe
    }

    public struct Report: Sendable {
        /// Weighted 20-NN on the CLS token (eval_knn.py's, with the images resized as `transform` says), and
        /// on the CLS token with the mean patch token.
        public var knn: KNNResult, knnWithMeanPatchToken: KNNResult
        public var trainImages: Int, testImages: Int
        /// How the images were resized for the k-NN (`FeatureExtractor.transformDescription`).
        public var transform: String
        public var attentionFolder: URL
        public var attentionFiles: [URL]
        /// Mean share of mean-over-heads CLS attention on non-background patches, over the test images used.
        public var foregroundShare: Double
        public var foregroundImages: Int
    }

    /// k-NN of `backbone` on Fashion-MNIST (the first `trainSize` training and `testSize` test images)
    /// and attention maps of the first `attentionImages` test images into `output/attention`.
    /// The foreground share is measured on the first `foregroundImages` test images.
    public static func evaluate(backbone: BackboneCheckpoint, output: URL, trainSize: Int = 60000, testSize: Int = 10000,
                                attentionImages: Int = 8, foregroundImages: Int = 1000, dataFolder: String? = nil,
                                progress: (String) -> Void = { _ in }) throws -> Report {
        let folder = dataFolder ?? FashionMNIST.defaultFolder
        let train = try FashionMNIST(split: .train, folder: folder), test = try FashionMNIST(split: .test, folder: folder)
        let extractor = try FeatureExtractor(checkpoint: backbone, batchSize: 256)
        progress("extracting teacher features of \(min(trainSize, train.count)) training and \(min(testSize, test.count)) test images")
        // One pass gives both features: the CLS token, then the mean patch token (eval_linear.py's --avgpool_patchtokens).
        let trainFeatures = try extractor.extract(DatasetSubset(train, indices: Array(0..<min(trainSize, train.count))), meanPatchToken: true)
        let testFeatures = try extractor.extract(DatasetSubset(test, indices: Array(0..<min(testSize, test.count))), meanPatchToken: true)
        let both = trainFeatures.dimension, d = both / 2
        func classTokens(_ set: FeatureSet) -> [Float] {
            (0..<set.count).flatMap { set.features[($0 * both)..<($0 * both + d)] }
        }
        let knn = try KNN.evaluate(trainFeatures: classTokens(trainFeatures), trainLabels: trainFeatures.labels,
                                   testFeatures: classTokens(testFeatures), testLabels: testFeatures.labels,
                                   dimension: d, ks: [20], classCount: 10)[0]
        let knnWithPatches = try KNN.evaluate(trainFeatures: trainFeatures.features, trainLabels: trainFeatures.labels,
                                              testFeatures: testFeatures.features, testLabels: testFeatures.labels,
                                              dimension: both, ks: [20], classCount: 10)[0]
        let attentionFolder = output.appendingPathComponent("attention")
        let exporter = AttentionExporter(checkpoint: backbone)
        let images = try (0..<min(attentionImages, test.count)).map { i in
            ("test\(i)-\(FashionMNIST.classes[test.label(at: i)].replacingOccurrences(of: "/", with: "-"))",
             try test.image(at: i, channels: 1, minimumShortSide: nil))
        }
        _ = try exporter.export(images, to: attentionFolder)
        let files = try FileManager.default.contentsOfDirectory(at: attentionFolder, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "png" }.sorted { $0.path < $1.path }
        let count = min(foregroundImages, test.count)
        var share = 0.0
        for i in 0..<count {
            share += exporter.attention(try test.image(at: i, channels: 1, minimumShortSide: nil), name: "").foregroundShare
        }
        return Report(knn: knn, knnWithMeanPatchToken: knnWithPatches, trainImages: trainFeatures.count, testImages: testFeatures.count,
                      transform: extractor.transformDescription, attentionFolder: attentionFolder,
                      attentionFiles: files, foregroundShare: share / Double(max(count, 1)), foregroundImages: count)
    }
}
