import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

final class CheckpointTests: XCTestCase {
    let config = ViTConfig(arch: "custom", imageSize: 16, patchSize: 4, inChannels: 1, embedDim: 16, depth: 2, numHeads: 2)

    func testRoundTripKeepsEveryValueAndTheMetadata() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let original = BackboneCheckpoint.initialized(config: config, mean: [0.3], std: [0.4], seed: 7)
        let url = folder.appendingPathComponent("b.safetensors")
        try original.save(to: url)
        let loaded = try BackboneCheckpoint.load(from: url)
        XCTAssertEqual(loaded.config, config)
        XCTAssertEqual(loaded.mean, [0.3]); XCTAssertEqual(loaded.std, [0.4])
        XCTAssertEqual(loaded.parameters.array, original.parameters.array)
        XCTAssertEqual(loaded.layout.entries.map(\.name).prefix(4), ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"])
        XCTAssertEqual(loaded.layout.entry("blocks.1.attn.qkv.weight")?.shape, [48, 16])
        // No temporary file is left beside it.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["b.safetensors"])
    }

    /// `evaluationResize` travels in `dino.eval_resize`; a file's value is checked as untrusted input (a
    /// whole number from the model's image size up), the file named.
    func testEvaluationResizeTravelsWithTheFile() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("b.safetensors")
        var backbone = BackboneCheckpoint.initialized(config: config, mean: [0.3], std: [0.4], seed: 7)
        try backbone.save(to: url)
        XCTAssertNil(try BackboneCheckpoint.load(from: url).evaluationResize)
        backbone.evaluationResize = 16
        try backbone.save(to: url)
        XCTAssertEqual(try BackboneCheckpoint.load(from: url).evaluationResize, 16)
        backbone.evaluationResize = nil
        for bad in ["15", "-1", "abc", "99999999999999999999", "16.5"] {
            try backbone.save(to: url, extraMetadata: [BackboneCheckpoint.evaluationResizeKey: bad])
            XCTAssertThrowsError(try BackboneCheckpoint.load(from: url), bad) {
                XCTAssertEqual("\($0)", "\(url.path): dino.eval_resize is '\(bad)', not a size from the model's 16 px to 65536")
            }
        }
    }

    /// A file's input statistics get the checks `--mean` / `--std` get, with the file named: a zero std
    /// would make every feature NaN, and a count that is neither 1 nor the channels cannot be applied.
    func testStatisticsInAFileAreChecked() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("b.safetensors")
        try BackboneCheckpoint.initialized(config: config, mean: [0.3], std: [0], seed: 7).save(to: url)
        XCTAssertThrowsError(try BackboneCheckpoint.load(from: url)) {
            XCTAssertEqual("\($0)", "\(url.path): dino.std: every std must be a positive number, not [0.0]")
        }
        try BackboneCheckpoint.initialized(config: config, mean: [0.3, 0.3], std: [0.4], seed: 7).save(to: url)
        XCTAssertThrowsError(try BackboneCheckpoint.load(from: url)) {
            XCTAssertEqual("\($0)", "\(url.path): dino.mean and dino.std need 1 value each for this 1-channel model, not 2 and 1")
        }
        XCTAssertThrowsError(try checkStatistics(mean: [.nan], std: [1], channels: 3)) {
            XCTAssertEqual("\($0)", "--mean: every mean must be a finite number, not [nan]")
        }
        XCTAssertNoThrow(try checkStatistics(mean: [0.5, 0.4, 0.3], std: [0.2], channels: 3))
    }

    func testOfficialInitialization() {
        let c = ViTConfig(arch: "custom", imageSize: 32, patchSize: 4, inChannels: 3, embedDim: 64, depth: 2, numHeads: 2)
        let checkpoint = BackboneCheckpoint.initialized(config: c, mean: [0.5], std: [0.5], seed: 1)
        func values(_ name: String) -> [Float] {
            let e = checkpoint.layout.entry(name)!
            return Array(UnsafeBufferPointer(start: checkpoint.parameters.pointer + e.offset, count: e.count))
        }
        func std(_ v: [Float]) -> Float { let m = v.reduce(0, +) / Float(v.count); return (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Float(v.count)).squareRoot() }
        XCTAssertEqual(std(values("blocks.0.mlp.fc1.weight")), 0.02, accuracy: 0.001)   // trunc-normal(0.02)
        XCTAssertEqual(std(values("pos_embed")), 0.02, accuracy: 0.002)
        XCTAssertTrue(values("blocks.0.attn.qkv.bias").allSatisfy { $0 == 0 })
        XCTAssertTrue(values("norm.weight").allSatisfy { $0 == 1 })
        let bound = 1 / Float(3 * 16).squareRoot()                                      // Conv2d default U(±1/√fan_in)
        XCTAssertLessThanOrEqual(values("patch_embed.proj.weight").map(abs).max()!, bound)
        XCTAssertGreaterThan(values("patch_embed.proj.weight").map(abs).max()!, 0.9 * bound)
    }

    func testAnotherArchitectureIsAClearErrorNamingTheTensor() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("b.safetensors")
        try BackboneCheckpoint.initialized(config: config, mean: [0.3], std: [0.4], seed: 7).save(to: url)
        let file = try SafeTensors.read(url)
        var other = config
        other.embedDim = 32
        let parameters = kept(FloatBuffer(count: ParameterLayout.backbone(other).count))
        XCTAssertThrowsError(try loadTensors(file, prefix: "", into: parameters.pointer, layout: .backbone(other), path: url.path)) {
            XCTAssertEqual("\($0)", "\(url.path) does not match the architecture: tensor 'cls_token' has shape [1, 1, 16] in the file but [1, 1, 32] is expected")
        }
        withExtendedLifetime(parameters) {}
        var deeper = config
        deeper.depth = 3
        let deeperParameters = kept(FloatBuffer(count: ParameterLayout.backbone(deeper).count))
        XCTAssertThrowsError(try loadTensors(file, prefix: "", into: deeperParameters.pointer,
                                             layout: .backbone(deeper), path: url.path)) {
            XCTAssertTrue("\($0)".contains("tensor 'blocks.2.norm1.weight' [16] is missing"), "\($0)")
        }
        withExtendedLifetime(deeperParameters) {}
        try Data([0x01, 0xFE, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x33]).write(to: url)
        XCTAssertThrowsError(try BackboneCheckpoint.load(from: url)) { XCTAssertTrue("\($0)".contains("is not a safetensors file")) }
        // Files whose first bytes say what they are get named, with what to do.
        for (bytes, expected) in [(Array("not a checkpoint\nat all".utf8), "is a text file (not a checkpoint...), not a checkpoint"),
                                  ([0xFF, 0xD8, 0xFF, 0xE0, 0, 16], "is a JPEG image, not a checkpoint"),
                                  ([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "is a PNG image, not a checkpoint"),
                                  ([0x1F, 0x8B, 0x08, 0, 0, 0, 0, 0, 0], "is a gzip archive, not a checkpoint: unpack it first"),
                                  ([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20], "is a PyTorch file in the legacy (pre-1.6) format")] {
            try Data(bytes).write(to: url)
            XCTAssertThrowsError(try BackboneCheckpoint.load(from: url)) { XCTAssertTrue("\($0)".hasPrefix(url.path + " " + expected), "\($0)") }
        }
    }
}
