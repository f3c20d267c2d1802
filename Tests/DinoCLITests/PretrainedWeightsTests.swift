import DinoData
import DinoEval
import DinoKernels
import DinoModel
import Foundation
import XCTest

/// Published weights through every command as processes: DINOv2 files (hub, timm, transformers) as
/// downloaded, `--normalization`, and `dino train --init-from` keeping the starting k-NN.
final class PretrainedWeightsTests: XCTestCase {
    static let dinov2 = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Goldens/dinov2")

    func testDINOv2FilesInEveryCommand() throws {
        let folder = makeTemporaryFolder()
        let out = folder.appendingPathComponent("f.npy")
        // features with the mean patch token (registers excluded): CLS + mean, 64 wide each.
        let features = runDino(["features", "--checkpoint", Self.dinov2.appendingPathComponent("hub-reg4.pth").path,
                                "--data", Inputs.labelledFolder.path, "--output", out.path, "--avgpool", "--input-size", "28"])
        assertSucceeded(features)
        XCTAssertTrue(features.stderr.contains("DINOv2, 4 registers"), features.stderr)
        XCTAssertEqual(try Npy.read(out).shape, [16, 128])
        let knn = runDino(["knn", "--checkpoint", Self.dinov2.appendingPathComponent("hf-dinov2-reg").path, "--train",
                           Inputs.labelledFolder.path, "--validation", "--k", "3", "--json", "--normalization", "imagenet"])
        assertSucceeded(knn)
        XCTAssertTrue(knn.stderr.contains("a Hugging Face transformers DINOv2, 4 registers"), knn.stderr)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(knn.stdout.utf8)) as? [String: Any], knn.stdout)
        // attention on a photo (48x40 at patch 14: 3x2 patches, 3 across and 2 down; the registers' columns left out).
        let attention = runDino(["attention", "--checkpoint", Self.dinov2.appendingPathComponent("timm-reg4.pth").path,
                                 "--image", Inputs.photo.path, "--output", folder.appendingPathComponent("a").path])
        assertSucceeded(attention)
        XCTAssertTrue(attention.stdout.contains("3x2 patches"), attention.stdout)
        XCTAssertTrue(files(in: folder.appendingPathComponent("a")).contains("photo-attn-head0.png"))
        let sheet = try ImageCodec.decode(contentsOf: folder.appendingPathComponent("a/photo-attn-mean.png"), channels: 3)
        XCTAssertEqual([sheet.width, sheet.height], [42, 28])  // the image cropped to whole patches
        assertSucceeded(runDino(["pca", "--checkpoint", Self.dinov2.appendingPathComponent("hub-swiglu.pth").path,
                                 "--image", Inputs.photo.path, "--output", folder.appendingPathComponent("p").path]))
        assertSucceeded(runDino(["linear", "--checkpoint", Self.dinov2.appendingPathComponent("hf-dinov2-swiglu").path,
                                 "--train", Inputs.labelledFolder.path, "--test", Inputs.labelledFolder.path, "--epochs", "2"]))
        // convert keeps the architecture; a truncated hub file and a folder without weights are refused.
        let converted = folder.appendingPathComponent("converted.safetensors")
        let convert = runDino(["convert", Self.dinov2.appendingPathComponent("hub.pth").path, converted.path])
        assertSucceeded(convert)
        XCTAssertTrue(convert.stdout.contains("64-wide, depth 1, 1 heads, patch 14"), convert.stdout)
        XCTAssertTrue(try BackboneCheckpoint.load(from: converted).config.usesLayerScale)
        let truncated = Inputs.truncated(Self.dinov2.appendingPathComponent("hub-reg4.pth"), as: "hub-truncated.pth")
        assertRefused(runDino(["attention", "--checkpoint", truncated.path, "--image", Inputs.photo.path, "--output",
                               folder.appendingPathComponent("b").path]), "hub-truncated.pth")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("b").path))
    }

    /// A camera-sized photo without --size is resized to the model's training size (short side 16 px for the
    /// test backbone), not refused for its 120,000 patches.
    func testAttentionResizesACameraPhoto() throws {
        let folder = makeTemporaryFolder()
        let photo = folder.appendingPathComponent("camera.png")
        var pixels = [UInt8](repeating: 30, count: 1600 * 1200 * 3)
        for y in 400..<800 { for x in 600..<1000 { for c in 0..<3 { pixels[3 * (y * 1600 + x) + c] = 230 } } }
        try ImageCodec.encodePNG(Image(width: 1600, height: 1200, channels: 3, pixels: pixels)).write(to: photo)
        let run = runDino(["attention", "--checkpoint", Inputs.rgbBackbone.path, "--image", photo.path, "--output",
                           folder.appendingPathComponent("a").path])
        assertSucceeded(run)
        XCTAssertTrue(run.stdout.contains("camera.png: 5x4 patches"), run.stdout)
        let map = try ImageCodec.decode(contentsOf: folder.appendingPathComponent("a/camera-attn-mean.png"), channels: 3)
        XCTAssertEqual([map.width, map.height], [20, 16])
    }

    func testNormalizationOption() throws {
        let folder = makeTemporaryFolder()
        var features: [String: [Float]] = [:]
        for value in ["checkpoint", "imagenet", "none", "0.5/0.25"] {
            let out = folder.appendingPathComponent("\(features.count).npy")
            assertSucceeded(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                                     "--output", out.path, "--normalization", value]))
            features[value] = try Npy.read(out).values
        }
        // The rgb test backbone holds ImageNet's statistics: checkpoint and imagenet agree, the others differ.
        XCTAssertEqual(features["checkpoint"], features["imagenet"])
        XCTAssertNotEqual(features["none"], features["imagenet"])
        XCTAssertNotEqual(features["0.5/0.25"], features["none"])
        let out = folder.appendingPathComponent("bad.npy")
        for (arguments, fragment) in [(["--normalization", "bogus"], "--normalization takes checkpoint, imagenet, none"),
                                      (["--normalization", "0.5,0.5/0.2"], "--normalization's means and stds need 1 or 3 values each for this 3-channel model, not 2 and 1"),
                                      (["--normalization", "0.5/0"], "every std must be positive"),
                                      (["--normalization", "imagenet", "--mean", "0.5"], "not both")] {
            assertRefused(runDino(["features", "--checkpoint", Inputs.rgbBackbone.path, "--data", Inputs.labelledFolder.path,
                                   "--output", out.path] + arguments), fragment)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        }
        assertRefused(runDino(["attention", "--checkpoint", Inputs.grayBackbone.path, "--image", Inputs.photo.path, "--output",
                               folder.appendingPathComponent("a").path, "--normalization", "imagenet"]), "is for RGB models")
    }

    /// The guard: continuing DINO training from published weights with a fresh head must not wreck
    /// them. A small model trained for 3 epochs on 4,000 Fashion-MNIST images stands for the published
    /// backbone; `--init-from` it (a fresh head: the backbone frozen for the first steps, then its lr ramped)
    /// for 2 more epochs keeps the teacher's validation 20-NN within a point.
    func testInitFromKeepsTheStartingKNN() throws {
        let folder = makeTemporaryFolder()
        let recipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Recipes/fashion-mnist-quick.yaml").path
        let start = folder.appendingPathComponent("start"), continued = folder.appendingPathComponent("continued")
        let common = ["--recipe", recipe, "--set", "train_subset=4000", "--set", "knn_every=0", "--set", "batch_size=64",
                      "--set", "max_minutes=0", "--set", "warmup_epochs=1"]
        assertSucceeded(runDino(["train", "--output", start.path, "--set", "epochs=3"] + common, timeout: 600))
        let run = runDino(["train", "--output", continued.path, "--set", "epochs=2", "--init-from",
                           start.appendingPathComponent("teacher_backbone.safetensors").path] + common, timeout: 600)
        assertSucceeded(run)
        XCTAssertTrue(run.stdout.contains("with a fresh DINO head"), run.stdout)
        XCTAssertTrue(run.stdout.contains("steps 0..<62 train the head alone"), run.stdout)
        func knn(_ run: URL) throws -> Double {
            let result = runDino(["knn", "--checkpoint", run.appendingPathComponent("teacher_backbone.safetensors").path, "--train",
                                  "fashion-mnist:train", "--validation", "--limit", "5000", "--k", "20", "--json"])
            assertSucceeded(result)
            let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            return ((json?["results"] as? [[String: Any]])?.first?["top1"] as? Double) ?? -1
        }
        let (before, after) = (try knn(start), try knn(continued))
        print("init-from: validation 20-NN \(before)% at the start, \(after)% after continuing")
        XCTAssertLessThanOrEqual(abs(after - before), 1, "continued training moved the k-NN from \(before)% to \(after)%")
        // The continued run trained: its head is no longer the fresh one, and it resumes like any run.
        XCTAssertTrue(FileManager.default.fileExists(atPath: continued.appendingPathComponent("report.html").path))
        // Bad starts: a missing file, a model with other channels than the data.
        assertRefused(runDino(["train", "--output", folder.appendingPathComponent("x").path, "--init-from",
                               folder.appendingPathComponent("missing.pth").path] + common), "missing.pth", "does not exist")
        assertRefused(runDino(["train", "--output", folder.appendingPathComponent("y").path, "--init-from", Inputs.rgbBackbone.path]
                              + common), "3-channel model", "in_chans: 3")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("y/checkpoint.safetensors").path))
    }
}
