import DinoData
import DinoKernels
import Foundation
import TestSupport
import XCTest

final class AugmentationTests: XCTestCase {
    func settings(channels: Int = 1) -> AugmentationSettings {
        AugmentationSettings(channels: channels, globalSize: 28, localSize: 12, localCount: 3, globalScale: (0.4, 1),
                             localScale: (0.05, 0.4), mean: [0.5], std: [0.5])
    }

    func testSameSeedSameViewsAndTheOfficialOrder() throws {
        let image = try ImageCodec.decode(contentsOf: fixturesFolder.appendingPathComponent("chelsea.png"), channels: 3)
        let augmenter = MultiCropAugmenter(settings: settings(channels: 3))
        var a = RandomGenerator(seed: 1, stream: 2, index: 3), b = RandomGenerator(seed: 1, stream: 2, index: 3)
        let first = augmenter.views(of: image, generator: &a), second = augmenter.views(of: image, generator: &b)
        XCTAssertEqual(first, second)
        XCTAssertEqual(first.map(\.count), [3 * 28 * 28, 3 * 28 * 28, 3 * 12 * 12, 3 * 12 * 12, 3 * 12 * 12])
        var c = RandomGenerator(seed: 1, stream: 2, index: 4)
        XCTAssertNotEqual(augmenter.views(of: image, generator: &c), first)
    }

    /// With every photometric op off and no flips, a crop of a horizontal ramp stays a ramp: the
    /// resized crop keeps geometry (values grow left to right, identical down each column).
    func testCropGeometryOnARamp() {
        var s = settings()
        s.flipProbability = 0; s.colorJitterProbability = 0; s.grayscaleProbability = 0
        s.blurProbabilities = [0, 0, 0]; s.solarizationProbability = 0; s.mean = [0]; s.std = [1]
        let ramp = Image(width: 64, height: 64, channels: 1, pixels: (0..<(64 * 64)).map { UInt8(($0 % 64) * 4) })
        var g = RandomGenerator(seed: 9)
        for view in MultiCropAugmenter(settings: s).views(of: ramp, generator: &g) {
            let side = Int(Double(view.count).squareRoot())
            for y in 0..<side {
                for x in 1..<side { XCTAssertGreaterThanOrEqual(view[y * side + x] + 1e-4, view[y * side + x - 1]) }
                XCTAssertEqual(view[y * side + side / 2], view[side / 2], accuracy: 1e-4)
            }
        }
    }

    func testLoaderBatchesAreDeterministicAndViewsMajor() throws {
        let dataset = try FashionMNIST(split: .test)
        let subset = DatasetSubset(dataset, indices: Array(0..<40))
        let make = { try MultiCropLoader(dataset: subset, augmenter: MultiCropAugmenter(settings: self.settings()), batchSize: 8,
                                         seed: 3, onBadImage: .fail, workers: 2) }
        let a = try make(), b = try make()
        let batchA = try a.batch(step: 6), batchB = try b.next(step: 6, limit: 10)
        XCTAssertEqual(batchA.globals.array, batchB.globals.array)
        XCTAssertEqual(batchA.locals.array, batchB.locals.array)
        // Steps 7 and 8 come from the background workers' prefetch: the same batches as built in the foreground.
        for step in 7...8 {
            let foreground = try a.batch(step: step), prefetched = try b.next(step: step, limit: 10)
            XCTAssertEqual(foreground.globals.array, prefetched.globals.array, "step \(step)")
            XCTAssertEqual(foreground.locals.array, prefetched.locals.array, "step \(step)")
            XCTAssertEqual(foreground.indices, prefetched.indices, "step \(step)")
        }
        b.drain()
        XCTAssertEqual(a.iterationsPerEpoch, 5)
        // Step 6 is in epoch 1: a different shuffle than epoch 0, and every image of the epoch appears once.
        let epoch1 = (5..<10).flatMap { try! a.batch(step: $0).indices }
        XCTAssertEqual(epoch1.sorted(), Array(0..<40))
        if let dump = ProcessInfo.processInfo.environment["DINO_DUMP_BATCH"] {
            // A contact sheet of the batch (globals, then locals), for eyeballing the augmentations.
            for (name, buffer, side, count) in [("globals", batchA.globals, 28, 16), ("locals", batchA.locals, 12, 24)] {
                var pixels = [UInt8]()
                for row in 0..<side { for i in 0..<count { for x in 0..<side {
                    pixels.append(UInt8(max(0, min(255, (buffer[(i * side + row) * side + x] * 0.5 + 0.5) * 255))))
                } } }
                try ImageCodec.writePNG(Image(width: side * count, height: side, channels: 1, pixels: pixels),
                                        to: URL(fileURLWithPath: "\(dump)-\(name).png"))
            }
        }
    }

    func testUnreadableImagesAreSkippedAndCountedOrFail() throws {
        let root = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        for i in 0..<6 {
            try FileManager.default.copyItem(at: fixturesFolder.appendingPathComponent("rocket.jpg"), to: root.appendingPathComponent("img\(i).jpg"))
        }
        try Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).write(to: root.appendingPathComponent("img2.jpg"))
        let folder = try ImageFolder(path: root.path)
        var s = settings(channels: 3)
        s.globalSize = 16; s.localSize = 8
        let skip = try MultiCropLoader(dataset: folder, augmenter: MultiCropAugmenter(settings: s), batchSize: 6, seed: 0,
                                       onBadImage: .skip, workers: 1)
        let batch = try skip.batch(step: 0)
        XCTAssertEqual(batch.skipped, ["img2.jpg"])
        XCTAssertFalse(batch.indices.contains(2))
        let fail = try MultiCropLoader(dataset: folder, augmenter: MultiCropAugmenter(settings: s), batchSize: 6, seed: 0,
                                       onBadImage: .fail, workers: 1)
        XCTAssertThrowsError(try fail.batch(step: 0)) { XCTAssertTrue("\($0)".contains("img2.jpg"), "\($0)") }
        XCTAssertThrowsError(try MultiCropLoader(dataset: folder, augmenter: MultiCropAugmenter(settings: s), batchSize: 60, seed: 0,
                                                 onBadImage: .skip, workers: 1)) { XCTAssertTrue("\($0)".contains("fewer than one batch")) }
    }
}
