import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

final class KNNTests: XCTestCase {
    /// The GEMM + heap implementation against a brute-force one (full sort, the same votes).
    func testMatchesBruteForce() throws {
        var g = RandomGenerator(seed: 5)
        let (n, m, d, classes) = (300, 70, 12, 4)
        let train = (0..<(n * d)).map { _ in Float(g.nextNormal()) }, test = (0..<(m * d)).map { _ in Float(g.nextNormal()) }
        let trainLabels = (0..<n).map { _ in g.nextInt(below: classes) }, testLabels = (0..<m).map { _ in g.nextInt(below: classes) }
        let results = try KNN.evaluate(trainFeatures: train, trainLabels: trainLabels, testFeatures: test, testLabels: testLabels,
                                       dimension: d, ks: [1, 5, 20])
        func normalized(_ x: [Float], _ r: Int) -> [Double] {
            let row = x[(r * d)..<((r + 1) * d)].map(Double.init)
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return row.map { $0 / norm }
        }
        for (ki, k) in [1, 5, 20].enumerated() {
            var correct = 0
            for r in 0..<m {
                let q = normalized(test, r)
                let sims = (0..<n).map { j in zip(q, normalized(train, j)).reduce(0) { $0 + $1.0 * $1.1 } }
                let nearest = (0..<n).sorted { sims[$0] > sims[$1] }.prefix(k)
                var scores = [Double](repeating: 0, count: classes)
                for j in nearest { scores[trainLabels[j]] += exp(sims[j] / 0.07) }
                if scores.indices.max(by: { scores[$0] < scores[$1] })! == testLabels[r] { correct += 1 }
            }
            XCTAssertEqual(results[ki].top1, 100 * Double(correct) / Double(m), accuracy: 1e-9, "k = \(k)")
        }
    }

    func testEdgeCases() throws {
        // k larger than the training set uses every training image; one class; a single test image.
        let train: [Float] = [1, 0, 0, 1, 1, 1], test: [Float] = [1, 0.1]
        let r = try KNN.evaluate(trainFeatures: train, trainLabels: [0, 0, 0], testFeatures: test, testLabels: [0],
                                 dimension: 2, ks: [10, 200])
        XCTAssertEqual(r.map(\.top1), [100, 100])
        // Ties in class score go to the lower class index, deterministically.
        let tie = try KNN.evaluate(trainFeatures: [1, 0, 1, 0], trainLabels: [1, 0], testFeatures: [1, 0], testLabels: [0],
                                   dimension: 2, ks: [2])
        XCTAssertEqual(tie[0].top1, 100)
        // Fewer than 100 test images work (the official script fails there).
        XCTAssertThrowsError(try KNN.evaluate(trainFeatures: [], trainLabels: [], testFeatures: [1], testLabels: [0], dimension: 1))
        XCTAssertThrowsError(try KNN.evaluate(trainFeatures: [1], trainLabels: [-1], testFeatures: [1], testLabels: [0], dimension: 1)) {
            XCTAssertTrue("\($0)".contains("labelled"))
        }
    }

    /// Raw pixels of Fashion-MNIST: the published floor, 84.59% weighted 20-NN and 85.76% 1-NN.
    func testRawPixelBaselineOnFashionMNIST() throws {
        let train = try rawPixelFeatures(FashionMNIST(split: .train)), test = try rawPixelFeatures(FashionMNIST(split: .test))
        let results = try KNN.evaluate(trainFeatures: train.features, trainLabels: train.labels, testFeatures: test.features,
                                       testLabels: test.labels, dimension: 784, ks: [1, 20])
        XCTAssertEqual(results[0].top1, 85.76, accuracy: 0.005)
        XCTAssertEqual(results[1].top1, 84.59, accuracy: 0.005)
    }

    /// `--normalize-pixels` on a folder: one mean and std over every pixel value, applied as (x - mean) / std
    /// with `normalize`'s arithmetic (Fashion-MNIST's published statistics give the same numbers either way).
    func testPixelStatisticsNormalizeByTheTrainingData() throws {
        let set = FeatureSet(features: [0, 0.5, 1, 0.5], dimension: 2, patchTokens: nil, names: ["a", "b"], labels: [0, 1],
                             classNames: [], skipped: [])
        let (mean, std) = pixelStatistics(set)
        XCTAssertEqual(mean, 0.5, accuracy: 1e-7)
        XCTAssertEqual(std, (0.125 as Float).squareRoot(), accuracy: 1e-7)
        let normalized = normalizedPixels(set, mean: mean, std: std)
        for (value, expected) in zip(normalized.features, [-2.0.squareRoot(), 0, 2.0.squareRoot(), 0]) {
            XCTAssertEqual(Double(value), expected, accuracy: 1e-6)
        }
        XCTAssertEqual(normalized.labels, [0, 1])
        let flat = FeatureSet(features: [0.3, 0.3], dimension: 2, patchTokens: nil, names: ["a"], labels: [0], classNames: [], skipped: [])
        XCTAssertEqual(pixelStatistics(flat).std, 1, "a constant image set keeps its scale rather than dividing by 0")
        let test = try rawPixelFeatures(FashionMNIST(split: .test))
        let subset = test.rows(Array(0..<50))
        XCTAssertEqual(normalizedPixels(subset, mean: FashionMNIST.mean[0], std: FashionMNIST.std[0]).features,
                       try rawPixelFeatures(DatasetSubset(FashionMNIST(split: .test), indices: Array(0..<50)),
                                            mean: FashionMNIST.mean, std: FashionMNIST.std).features)
    }

    /// `dino knn --validation` and the training loop's held-out check: every fifth row a query, the
    /// others the memory, patch tokens and labels kept with their rows. On raw pixels this is the
    /// validation floor (48,000 / 12,000 of the training split; numpy's brute force gives the same).
    func testValidationSplitTakesEveryFifthRow() throws {
        let d = 2, tokens = 3
        let set = FeatureSet(features: (0..<(12 * d)).map(Float.init), dimension: d,
                             patchTokens: (0..<(12 * tokens * d)).map(Float.init), names: (0..<12).map { "\($0)" },
                             labels: (0..<12).map { $0 % 4 }, classNames: ["a", "b", "c", "d"], skipped: [])
        let (memory, queries) = set.validationSplit()
        XCTAssertEqual(queries.names, ["0", "5", "10"])
        XCTAssertEqual(memory.names, ["1", "2", "3", "4", "6", "7", "8", "9", "11"])
        XCTAssertEqual(queries.labels, [0, 1, 2])
        XCTAssertEqual(queries.features, [0, 1, 10, 11, 20, 21])
        XCTAssertEqual(Array(queries.patchTokens![6..<12]), (30..<36).map(Float.init))
        XCTAssertEqual(memory.count + queries.count, 12)

        let (bank, held) = try rawPixelFeatures(FashionMNIST(split: .train)).validationSplit()
        let results = try KNN.evaluate(trainFeatures: bank.features, trainLabels: bank.labels, testFeatures: held.features,
                                       testLabels: held.labels, dimension: 784, ks: [20])
        print("[knn] raw-pixel validation floor: weighted 20-NN \(results[0].top1)%")
        XCTAssertEqual(results[0].top1, 84.375, accuracy: 0.005)
    }

    func testNpyRoundTrip() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let set = FeatureSet(features: [1, 2, 3, 4, 5, 6], dimension: 3, patchTokens: nil, names: ["a.png", "b/c.jpg"], labels: [0, 1],
                             classNames: [], skipped: [])
        let url = folder.appendingPathComponent("f.npy")
        try set.write(to: url)
        let back = try FeatureSet.read(from: url)
        XCTAssertEqual(back.features, set.features); XCTAssertEqual(back.labels, [0, 1]); XCTAssertEqual(back.names, ["a.png", "b/c.jpg"])
    }

    func testMeanPatchTokenFeaturesArePerBatchMeans() throws {
        // CLS + mean patch token, computed per batch (batch 3 over 5 images: a partial last batch),
        // equals the CLS features and the mean of the patch tokens the extractor returns.
        let config = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: 16, depth: 2, numHeads: 2)
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.286], std: [0.353], seed: 3)
        let extractor = try FeatureExtractor(checkpoint: backbone, batchSize: 3)
        let images = DatasetSubset(try FashionMNIST(split: .test), indices: Array(0..<5))
        let plain = try extractor.extract(images, patchTokens: true)
        let pooled = try extractor.extract(images, meanPatchToken: true)
        let (d, np) = (16, 16)
        XCTAssertEqual(pooled.dimension, 2 * d)
        XCTAssertEqual(pooled.count, 5)
        XCTAssertEqual(pooled.labels, plain.labels)
        for r in 0..<5 {
            XCTAssertEqual(Array(pooled.features[(r * 2 * d)..<(r * 2 * d + d)]), Array(plain.features[(r * d)..<((r + 1) * d)]))
            let tokens = plain.patchTokens!
            let mean = (0..<d).map { j in (0..<np).map { Double(tokens[(r * np + $0) * d + j]) }.reduce(0, +) / Double(np) }
            assertClose(Array(pooled.features[(r * 2 * d + d)..<((r + 1) * 2 * d)]), mean, tolerance: 1e-6, "mean patch token \(r)")
        }
    }

    /// An image already at the input size is used as it is by default; with `resizeTo` it goes through
    /// the official resize-then-center-crop (here 28 → 32 → the central 28), normalized the same way.
    func testResizeAppliesTheOfficialTransformToImagesAtTheInputSize() throws {
        let config = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: 16, depth: 1, numHeads: 2)
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.25], seed: 1)
        var extractor = try FeatureExtractor(checkpoint: backbone)
        let pixels = (0..<(28 * 28)).map { UInt8(($0 * 37) % 256) }
        let image = Image(width: 28, height: 28, channels: 1, pixels: pixels)
        XCTAssertEqual(extractor.preprocess(image), pixels.map { (Float($0) / 255 - 0.5) / 0.25 })
        extractor.resizeTo = 32
        let expected = Resample.resizeAndCenterCrop(FloatImage(image), size: 28, resizeTo: 32, keepingExactSize: false)
        XCTAssertEqual(extractor.preprocess(image), expected.values.map { ($0 - 0.5) / 0.25 })
        XCTAssertNotEqual(expected.values, pixels.map { Float($0) / 255 })
        XCTAssertThrowsError(try FeatureExtractor(checkpoint: backbone, resizeTo: 24), "a resize below the input size")
    }

    /// A checkpoint's `evaluationResize` (its recipe's `eval_resize`) is the default resize at the
    /// checkpoint's own size: 21 shows a 28-px image whole at 21 px, where the default crops 28 → 24 →
    /// the central 21. A given `resizeTo` wins, and another input size leaves it out.
    func testTheCheckpointsEvaluationResizeIsTheDefault() throws {
        let config = ViTConfig(arch: "custom", imageSize: 21, patchSize: 7, inChannels: 1, embedDim: 16, depth: 1, numHeads: 2)
        var backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.25], seed: 2)
        let image = Image(width: 28, height: 28, channels: 1, pixels: (0..<(28 * 28)).map { UInt8(($0 * 53) % 256) })
        func normalized(_ f: FloatImage) -> [Float] { f.values.map { ($0 - 0.5) / 0.25 } }
        let official = normalized(Resample.resizeAndCenterCrop(FloatImage(image), size: 21, resizeTo: 24, keepingExactSize: false))
        let whole = normalized(Resample.resizeAndCenterCrop(FloatImage(image), size: 21, resizeTo: 21, keepingExactSize: false))
        XCTAssertNotEqual(official, whole)
        XCTAssertEqual(try FeatureExtractor(checkpoint: backbone).preprocess(image), official)
        backbone.evaluationResize = 21
        XCTAssertEqual(try FeatureExtractor(checkpoint: backbone).resizeTo, 21)
        XCTAssertEqual(try FeatureExtractor(checkpoint: backbone).preprocess(image), whole)
        XCTAssertEqual(try FeatureExtractor(checkpoint: backbone, resizeTo: 24).preprocess(image), official)
        XCTAssertNil(try FeatureExtractor(checkpoint: backbone, inputSize: 28).resizeTo)
    }

    /// A model trained on 21-px crops, evaluated at 28 px (`--input-size 28`): the 28-px images are used
    /// as they are (no resize and crop to 21), there are 4×4 patch tokens, and the features differ from
    /// the default 21-px evaluation; a size below the patch is refused.
    func testInputSizeEvaluatesAtAnotherSizeThanTraining() throws {
        let config = ViTConfig(arch: "custom", imageSize: 21, patchSize: 7, inChannels: 1, embedDim: 16, depth: 1, numHeads: 2)
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.25], seed: 2)
        let native = try FeatureExtractor(checkpoint: backbone, inputSize: 28)
        let pixels = (0..<(28 * 28)).map { UInt8(($0 * 53) % 256) }
        XCTAssertEqual(native.preprocess(Image(width: 28, height: 28, channels: 1, pixels: pixels)),
                       pixels.map { (Float($0) / 255 - 0.5) / 0.25 })
        let images = DatasetSubset(try FashionMNIST(split: .test), indices: Array(0..<3))
        let atNative = try native.extract(images, patchTokens: true)
        XCTAssertEqual(atNative.patchTokens?.count, 3 * 16 * 16)
        XCTAssertTrue(atNative.features.allSatisfy(\.isFinite))
        let atTraining = try FeatureExtractor(checkpoint: backbone).extract(images)
        XCTAssertEqual(atTraining.features.count, atNative.features.count)
        XCTAssertNotEqual(atTraining.features, atNative.features)
        XCTAssertThrowsError(try FeatureExtractor(checkpoint: backbone, inputSize: 6), "no 7-px patch fits in 6 px")
    }

    func testLastBlocksFeaturesAreNormedClassTokensOfEachBlock() throws {
        // --n-last-blocks 3 on a 3-block model (+ avgpool), in batches of 3 over 5 images: each part is the
        // final norm (Double reference) of that block's CLS row from one whole-set training-mode forward.
        let (d, depth) = (16, 3)
        let config = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: d, depth: depth, numHeads: 2)
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.286], std: [0.353], seed: 5)
        let extractor = try FeatureExtractor(checkpoint: backbone, batchSize: 3)
        let images = DatasetSubset(try FashionMNIST(split: .test), indices: Array(0..<5))
        let plain = try extractor.extract(images)
        let pooled = try extractor.extract(images, meanPatchToken: true)
        let stacked = try extractor.extract(images, meanPatchToken: true, lastBlocks: depth)
        XCTAssertEqual(stacked.dimension, (depth + 1) * d)
        XCTAssertThrowsError(try extractor.extract(images, lastBlocks: depth + 1))
        // Patch tokens written beside wider features keep the model's width: (N, np, C).
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("f.npy")
        try extractor.extract(images, patchTokens: true, lastBlocks: 2).write(to: url)
        XCTAssertEqual(try Npy.read(url).shape, [5, 2 * d])
        XCTAssertEqual(try Npy.read(folder.appendingPathComponent("f.patches.npy")).shape, [5, 16, d])

        let input = (0..<5).flatMap { extractor.preprocess(try! images.image(at: $0, channels: 1, minimumShortSide: 28)) }
        let transformer = backbone.transformer
        let activations = transformer.makeActivations(batch: 5, imageHeight: 28, imageWidth: 28, training: true)
        var blockCLS = [[Float]](repeating: [], count: depth)   // (5, d) per block, before the norm
        let tokens = activations.tokens
        input.withUnsafeBufferPointer { x in
            transformer.forward(parameters: backbone.parameters.pointer, images: x.baseAddress!, activations: activations) { l, stream in
                for b in 0..<5 { blockCLS[l] += Array(UnsafeBufferPointer(start: stream + b * tokens * d, count: d)) }
            }
        }
        let weight = backbone.parameters.pointer + backbone.layout.offset("norm.weight")
        let bias = backbone.parameters.pointer + backbone.layout.offset("norm.bias")
        let width = (depth + 1) * d
        for r in 0..<5 {
            for l in 0..<depth {
                let x = blockCLS[l][(r * d)..<((r + 1) * d)].map(Double.init)
                let mean = x.reduce(0, +) / Double(d)
                let variance = x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
                let expected = x.enumerated().map { j, v in (v - mean) / (variance + 1e-6).squareRoot() * Double(weight[j]) + Double(bias[j]) }
                let part = Array(stacked.features[(r * width + l * d)..<(r * width + (l + 1) * d)])
                assertClose(part, expected, tolerance: 1e-5, "block \(l) image \(r)")
            }
            // `plain` runs the last block for the class token only, `stacked` (with the mean patch token) for
            // every token: the same values up to the rounding of differently tiled products.
            assertClose(Array(stacked.features[(r * width + (depth - 1) * d)..<(r * width + depth * d)]),
                        Array(plain.features[(r * d)..<((r + 1) * d)]), tolerance: 1e-5, "last block image \(r)")
            // `pooled` (the last block's outputs only) runs as two half-batch shards, `stacked` as one pass.
            assertClose(Array(stacked.features[(r * width + depth * d)..<((r + 1) * width)]),
                        Array(pooled.features[(r * 2 * d + d)..<((r + 1) * 2 * d)]), tolerance: 1e-5, "mean patch token image \(r)")
        }
    }
}
