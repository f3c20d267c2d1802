import ArgumentParser
import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a freshly initialized backbone checkpoint (official init) for an architecture.")

    @Option(help: "vit_tiny, vit_small, vit_base, or custom (with --embed-dim, --depth, --num-heads).")
    var arch = "vit_small"
    @Option(name: .customLong("patch-size"), help: "Patch side in pixels.") var patchSize = 16
    @Option(name: .customLong("in-chans"), help: "Input channels: 1 (gray) or 3 (RGB).") var inChans = 3
    @Option(name: .customLong("img-size"), help: "Training input side; position embeddings are learned for it.") var imgSize = 224
    @Option(name: .customLong("embed-dim"), help: "Token width (default: the --arch's; needed with custom).") var embedDim: Int?
    @Option(help: "Transformer blocks (default: the --arch's; needed with custom).") var depth: Int?
    @Option(name: .customLong("num-heads"), help: "Attention heads; --embed-dim must be a multiple (default: the --arch's; needed with custom).") var numHeads: Int?
    @Flag(name: .customLong("shifted-patches"), help: "Shifted patch tokenization (the recipe key shifted_patches).")
    var shiftedPatches = false
    @Option(help: "Per-channel mean, comma-separated (default: ImageNet for RGB, Fashion-MNIST for gray).") var mean: String?
    @Option(help: "Per-channel std, comma-separated.") var std: String?
    @Option(help: "Seed of the random initialization (the same seed writes the same weights).") var seed: UInt64 = 0
    @Option(help: "Output .safetensors file.") var output: String

    func validate() throws {
        try requireFilePath(output, "--output", example: "model.safetensors")
        // The options are the architecture: a value that cannot build one is a command-line error (64).
        do {
            let (config, (m, s)) = (try architecture(), try statistics())
            try checkStatistics(mean: m, std: s, channels: config.inChannels)
        } catch let error as DinoError { throw ValidationError(error.message) }
    }

    func architecture() throws -> ViTConfig {
        try ViTConfig.named(arch, imageSize: imgSize, patchSize: patchSize, inChannels: inChans,
                            embedDim: embedDim, depth: depth, numHeads: numHeads, shiftedPatches: shiftedPatches)
    }

    func statistics() throws -> (mean: [Float], std: [Float]) {
        (try parseFloats(mean, name: "--mean") ?? (inChans == 3 ? imageNetMean : FashionMNIST.mean),
         try parseFloats(std, name: "--std") ?? (inChans == 3 ? imageNetStd : FashionMNIST.std))
    }

    func run() throws {
        try runReportingErrors {
            let config = try architecture()
            let (m, s) = try statistics()
            let checkpoint = BackboneCheckpoint.initialized(config: config, mean: m, std: s, seed: seed)
            try checkpoint.save(to: URL(fileURLWithPath: output))
            print("wrote \(output): \(config.arch) \(config.embedDim)-wide, depth \(config.depth), \(config.numHeads) heads, patch \(config.patchSize), \(config.inChannels) channel(s), \(config.imageSize) px, \(checkpoint.layout.count) parameters")
        }
    }
}

struct Features: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extract frozen CLS features (after the final norm) as float32 .npy [N, D].",
        discussion: """
        DATA is a folder (JPEG and PNG found recursively; rows in the order of the sorted relative paths) \
        or fashion-mnist:train / fashion-mnist:test. Beside OUTPUT: OUTPUT.txt lists the images, \
        OUTPUT.labels.npy holds class labels when the data has them (OUTPUT.classes.txt their names, one per \
        line, so that dino knn and linear match a test set's classes by name), OUTPUT.patches.npy the patch tokens \
        with --patch-tokens.
        """)

    @Option(help: ArgumentHelp(checkpointHelp)) var checkpoint: String
    @Option(help: "Image folder, or fashion-mnist:train / fashion-mnist:test.") var data: String
    @Option(help: "Output .npy file (.npy is appended when missing, as numpy.save does, so that knn and linear read it as features).") var output: String
    @Flag(name: .customLong("patch-tokens"), help: "Also write the patch tokens [N, np, D].") var patchTokens = false
    @Flag(name: .customLong("avgpool"), help: "Append the average of the patch tokens to each row (as eval_linear.py's --avgpool_patchtokens).")
    var avgpool = false
    @Option(name: .customLong("n-last-blocks"), help: "Rows hold the normed CLS tokens of the last N blocks, concatenated (as eval_linear.py's --n_last_blocks).")
    var lastBlocks = 1
    @Option(help: "Override the checkpoint's per-channel mean.") var mean: String?
    @Option(help: "Override the checkpoint's per-channel std.") var std: String?
    @Option(name: .customLong("batch-size"), help: "Images per forward pass (memory, not results).") var batchSize = 64
    @Option(name: .customLong("limit"), help: "Use only the first N images (as knn and linear's --limit).") var limit: Int?
    @OptionGroup var transform: EvaluationTransform
    @OptionGroup var normalization: NormalizationOption
    @Option(name: .customLong("on-bad-image"), help: "fail or skip (count and report) unreadable images.")
    var onBadImage = "fail"
    @OptionGroup var precision: MatmulPrecisionOption
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(checkpoint, "--checkpoint")
        try requirePath(data, "--data")
        try requireFilePath(output, "--output", example: "features.npy")
        try require((1...65536).contains(batchSize), "--batch-size must be 1...65536")
        try require((limit ?? 1) >= 1, "--limit must be at least 1")
        try require(lastBlocks >= 1, "--n-last-blocks must be at least 1")
        try require(BadImagePolicy(rawValue: onBadImage) != nil, "--on-bad-image takes fail or skip, not '\(onBadImage)'")
        try require((mean == nil && std == nil) || normalization.normalization == "checkpoint",
                    "give --normalization or --mean/--std, not both")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let policy = BadImagePolicy(rawValue: onBadImage)!   // checked by validate()
            let backbone = try loadBackbone(checkpoint, normalization: normalization)
            let extractor = try FeatureExtractor(checkpoint: backbone, mean: parseFloats(mean, name: "--mean"),
                                                 std: parseFloats(std, name: "--std"), batchSize: batchSize, inputSize: transform.inputSize,
                                                 resizeTo: transform.resize)
            noteEvaluationResize(extractor, given: transform.resize)
            var dataset = try openData(data)
            if let limit, limit < dataset.count { dataset = DatasetSubset(dataset, indices: Array(0..<limit)) }
            let line = ProgressLine()
            let started = Date()
            let set = try precision.run {
                try extractor.extract(dataset, onBadImage: policy, patchTokens: patchTokens, meanPatchToken: avgpool,
                                      lastBlocks: lastBlocks) { done, total in
                    line.update("features \(done)/\(total)", force: done == total)
                }
            }
            line.finish()
            let file = output.hasSuffix(".npy") ? output : output + ".npy"
            try set.write(to: URL(fileURLWithPath: file))
            let seconds = Date().timeIntervalSince(started)
            print("wrote \(file): \(set.count) x \(set.dimension) features in \(String(format: "%.1f", seconds)) s (\(String(format: "%.0f", Double(set.count) / max(seconds, 1e-9))) images/s)")
            if patchTokens {
                let patches = String(file.dropLast(4)) + ".patches.npy"
                let perImage = set.count == 0 ? 0 : (set.patchTokens?.count ?? 0) / (set.count * set.patchTokenWidth)
                print("wrote \(patches): \(set.count) x \(perImage) x \(set.patchTokenWidth) patch tokens")
            }
            if !set.skipped.isEmpty {
                print("skipped \(set.skipped.count) unreadable image(s), e.g. \(set.skipped.prefix(3).joined(separator: ", "))")
            }
        }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write any checkpoint dino reads (an official DINO or DINOv2 .pth, timm's weights, a Hugging Face ViT or DINOv2 folder, a training checkpoint) as this project's self-describing backbone safetensors.")

    @Argument(help: ArgumentHelp("The checkpoint to read.", valueName: "IN")) var input: String
    @Argument(help: ArgumentHelp("The .safetensors file to write.", valueName: "OUT")) var output: String

    func validate() throws {
        try requirePath(input, "<IN>")
        try requireFilePath(output, "<OUT>", example: "model.safetensors")
    }

    func run() throws {
        try runReportingErrors {
            let backbone = try loadBackbone(input)
            try backbone.save(to: URL(fileURLWithPath: output))
            let c = backbone.config
            print("wrote \(output): \(c.embedDim)-wide, depth \(c.depth), \(c.numHeads) heads, patch \(c.patchSize), \(c.inChannels) channel(s), \(c.imageSize) px, from \(backbone.source)")
        }
    }
}
