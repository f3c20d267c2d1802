import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

final class AttentionTests: XCTestCase {
    let config = ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 1, embedDim: 16, depth: 2, numHeads: 2)

    /// The maps are the last block's CLS-row attention probabilities of the core kernel, at any size.
    func testMapsAreTheKernelsProbabilities() throws {
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.5], seed: 3)
        let image = Image(width: 35, height: 21, channels: 1, pixels: (0..<(35 * 21)).map { UInt8(($0 * 7) % 256) })
        let map = AttentionExporter(checkpoint: backbone).attention(image, name: "x")
        XCTAssertEqual([map.gridHeight, map.gridWidth], [3, 5])   // non-square: interpolated position embedding
        var input = FloatImage(image).values
        normalize(&input, channels: 1, plane: 35 * 21, mean: [0.5], std: [0.5])
        let buffer = kept(FloatBuffer(input))
        // Exactly the kernel's probabilities of the class-token-only pass the exporter runs, and within
        // float rounding those of a pass over every token (whose class query comes from a wider product).
        for classTokenOnly in [true, false] {
            let activations = backbone.transformer.makeActivations(batch: 1, imageHeight: 21, imageWidth: 35, training: false,
                                                                   classTokenOnly: classTokenOnly)
            backbone.transformer.forward(parameters: backbone.parameters.pointer, images: buffer.pointer, activations: activations)
            let n = activations.tokens
            for h in 0..<2 {
                let probabilities = Array(activations.lastAttention.array[(h * n * n + 1)..<(h * n * n + n)])
                if classTokenOnly {
                    XCTAssertEqual(map.heads[h], probabilities)
                } else {
                    for (a, b) in zip(map.heads[h], probabilities) { XCTAssertEqual(a, b, accuracy: 1e-6) }
                }
            }
        }
        XCTAssertEqual(map.mean[0], (map.heads[0][0] + map.heads[1][0]) / 2, accuracy: 1e-7)
    }

    func testMasksHoldTheRequestedMass() {
        var g = RandomGenerator(seed: 1)
        let map = (0..<49).map { _ in Float(g.nextDouble()) }
        let total = map.reduce(0, +)
        for threshold: Float in [0.3, 0.6, 0.9] {
            let keep = AttentionExporter.mask(map, threshold: threshold)
            let kept = zip(map, keep).filter(\.1).map(\.0)
            XCTAssertGreaterThanOrEqual(kept.reduce(0, +) / total, threshold - 1e-6)
            // Smallest such set: dropping the weakest kept patch falls below the threshold.
            XCTAssertLessThan((kept.reduce(0, +) - kept.min()!) / total, threshold)
        }
    }

    func testWrittenPNGsDecodeToTheExpectedPixels() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.5], seed: 3)
        let image = Image(width: 28, height: 28, channels: 1, pixels: (0..<784).map { $0 % 28 > 14 ? 200 : 0 })
        let exporter = AttentionExporter(checkpoint: backbone)
        let maps = try exporter.export([("item", image)], to: folder)
        let heat = try ImageCodec.decode(contentsOf: folder.appendingPathComponent("item-attn-mean.png"), channels: 3)
        XCTAssertEqual([heat.width, heat.height], [28, 28])
        XCTAssertEqual(heat, exporter.heatmap(maps[0].mean, gridHeight: 4, gridWidth: 4, width: 28, height: 28))
        // The brightest patch is viridis yellow, the faintest viridis purple.
        XCTAssertTrue(heat.pixels.contains(253) && heat.pixels.contains(84))
        for name in ["item-image.png", "item-attn-head0.png", "item-attn-head1.png", "item-overlay-mean.png", "item-mask60-mean.png"] {
            XCTAssertNoThrow(try ImageCodec.decode(contentsOf: folder.appendingPathComponent(name), channels: 3), name)
        }
        // Foreground (right half bright): the share is the mass on patches with bright pixels.
        let fg = (0..<16).filter { $0 % 4 >= 2 }
        XCTAssertEqual(maps[0].foregroundShare, Double(fg.map { maps[0].mean[$0] }.reduce(0, +) / maps[0].mean.reduce(0, +)), accuracy: 1e-5)
    }

    /// A mask stays over the pixels it was drawn on: an image 10 px wide is cropped to the 7 px of its one
    /// whole patch column, so a mask white only on the 3 px cut off counts nothing (stretching the mask
    /// to the crop would count them), and one white on the first 7 px counts everything.
    func testMasksFollowTheCropToWholePatches() throws {
        let backbone = BackboneCheckpoint.initialized(config: config, mean: [0.5], std: [0.5], seed: 3)
        let exporter = AttentionExporter(checkpoint: backbone)
        let image = Image(width: 10, height: 14, channels: 1, pixels: .init(repeating: 100, count: 140))
        func mask(_ white: Range<Int>) -> Image {
            Image(width: 10, height: 14, channels: 1, pixels: (0..<140).map { white.contains($0 % 10) ? 255 : 0 })
        }
        XCTAssertEqual(exporter.attention(image, name: "x", foregroundMask: mask(7..<10)).foregroundShare, 0)
        XCTAssertEqual(exporter.attention(image, name: "x", foregroundMask: mask(0..<7)).foregroundShare, 1, accuracy: 1e-6)
        // At twice the image's size the same mask measures the same.
        let large = AttentionExporter.resizedMask(mask(7..<10), width: 20, height: 28)
        XCTAssertEqual(exporter.attention(image, name: "x", foregroundMask: large).foregroundShare, 0)
        // With --size the mask is resized with the image: 10x14 to 14x20 (short side 14), cropped to 14x14.
        let sized = AttentionExporter(checkpoint: backbone, size: 14)
        XCTAssertEqual(sized.fittedMask(mask(0..<10), width: 10, height: 14).pixels, .init(repeating: 255, count: 14 * 14))
        let fitted = sized.fittedMask(mask(5..<10), width: 10, height: 14)
        XCTAssertEqual([fitted.width, fitted.height], [14, 14])
        XCTAssertEqual(Array(fitted.pixels.prefix(14)), [0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255])
    }
}
