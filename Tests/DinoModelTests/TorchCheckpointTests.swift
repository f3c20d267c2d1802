import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

/// PyTorch checkpoints as users download them (`Tests/Goldens/make_torch_checkpoints.py`, torch 2.13.0+cpu):
/// the official DINO layouts load, give PyTorch's outputs on the same file, and hostile files are refused.
final class TorchCheckpointTests: XCTestCase {
    static let folder = goldensFolder.appendingPathComponent("torch")

    /// The CLS output (after the final norm) and the last block's CLS attention row of `checkpoint` on `image`.
    func forward(_ checkpoint: BackboneCheckpoint, _ image: [Float]) -> (cls: [Float], attention: [Float]) {
        let activations = checkpoint.transformer.makeActivations(batch: 1, imageHeight: 16, imageWidth: 16, training: false,
                                                                 classTokenOnly: false)
        let input = FloatBuffer(image)
        checkpoint.transformer.forward(parameters: checkpoint.parameters.pointer, images: input.pointer, activations: activations)
        let cls = FloatBuffer(count: checkpoint.config.embedDim)
        activations.copyClassTokens(to: cls.pointer)
        let n = activations.tokens
        let rows = (0..<checkpoint.config.numHeads).flatMap { h in
            Array(UnsafeBufferPointer(start: activations.lastAttention.pointer + h * n * n, count: n))
        }
        withExtendedLifetime(input) {}
        return (cls.array, rows)
    }

    func testOfficialBackboneAndTrainingCheckpointsGivePyTorchsOutputs() throws {
        let golden = try SafeTensors.read(Self.folder.appendingPathComponent("outputs.safetensors"))
        let image = golden.values("image")
        let backbone = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent("backbone.pth"))
        XCTAssertEqual(backbone.source, "a backbone state dict in the official DINO / DINOv2 layout")
        XCTAssertEqual([backbone.config.embedDim, backbone.config.depth, backbone.config.numHeads, backbone.config.patchSize,
                        backbone.config.imageSize], [64, 1, 1, 4, 16])
        let (cls, attention) = forward(backbone, image)
        assertClose(cls, golden.values("cls"), tolerance: 1e-5, "CLS output")
        let n = 17
        let reference = golden.values("attention")   // (1, heads, n, n): the CLS row of each head
        assertClose(attention, (0..<backbone.config.numHeads).flatMap { h in reference[(h * n * n)..<(h * n * n + n)] }, tolerance: 1e-5,
                    "last-layer CLS attention")

        // The training checkpoint's teacher is the same backbone; its Namespace, optimizer state and center load as inert data.
        let training = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent("training.pth"))
        XCTAssertEqual(training.source, "an official DINO training checkpoint (its teacher)")
        XCTAssertEqual(training.parameters.array, backbone.parameters.array)
        let file = try TorchCheckpoint.read(Data(contentsOf: Self.folder.appendingPathComponent("training.pth")), name: "training.pth")
        XCTAssertEqual(file.tensor("dino_loss.center")?.shape, [1, 32])
        XCTAssertEqual(file.tensor("teacher.head.last_layer.weight_v")?.shape, [32, 16])
        XCTAssertNotNil(file.tensor("student.module.head.mlp.0.weight"))
        XCTAssertNotNil(file.tensor("optimizer.state.0.exp_avg_sq"))

        // Half and bfloat16 files become Float32: bfloat16 exactly PyTorch's rounded weights.
        let bf16 = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent("backbone-bf16.pth"))
        assertClose(forward(bf16, image).cls, golden.values("cls_bf16"), tolerance: 1e-5, "CLS output of the bfloat16 file")
        let fp16 = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent("backbone-fp16.pth"))
        assertClose(fp16.parameters.array, backbone.parameters.array, tolerance: 1e-3, "half-precision weights")
    }

    func testTensorViewsAndValueKinds() throws {
        let file = try TorchCheckpoint.read(Data(contentsOf: Self.folder.appendingPathComponent("small.pth")), name: "small.pth")
        XCTAssertEqual(file.tensor("w")?.values, (0..<12).map(Float.init))
        XCTAssertEqual(file.tensor("t")?.shape, [4, 3])
        XCTAssertEqual(file.tensor("t")?.values, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11], "a transposed view, read in row-major order")
        XCTAssertEqual(file.tensor("h")?.values, [4, 5, 6, 7], "a half-precision row at a storage offset")
        XCTAssertEqual(file.tensor("b")?.values, (0..<12).map(Float.init))
        XCTAssertEqual(file.tensor("i")?.values, [0, 1, 2, 3, 4])
        XCTAssertEqual(TorchCheckpoint.halfToFloat(0x3C00), 1)
        XCTAssertEqual(TorchCheckpoint.halfToFloat(0xC000), -2)
        XCTAssertEqual(TorchCheckpoint.halfToFloat(0x0001), 0x1p-24)
        XCTAssertEqual(TorchCheckpoint.halfToFloat(0x7C00), .infinity)
        XCTAssertTrue(TorchCheckpoint.halfToFloat(0x7E00).isNaN)
    }

    func testHostileAndBrokenFilesAreRefused() {
        for (file, expected) in [("refused-system.pth", "'posix.system'"), ("refused-storage.pth", "'torch.EvilStorage'"),
                                 ("refused-size.pth", "does not fit its storage"), ("refused-truncated.pth", "not a readable zip archive"),
                                 ("small.pth", "unknown checkpoint layout")] {
            XCTAssertThrowsError(try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent(file)), file) {
                XCTAssertTrue("\($0)".contains(expected), "\(file): \($0)")
            }
        }
    }

    /// A transformers ViTModel (`make_huggingface_checkpoints.py`), as a folder, as its weights file with the
    /// config beside it, and as pytorch_model.bin: PyTorch's outputs, with the config's heads and eps.
    func testHuggingFaceViTModelsGiveTransformersOutputs() throws {
        let folder = goldensFolder.appendingPathComponent("huggingface")
        let golden = try SafeTensors.read(folder.appendingPathComponent("outputs.safetensors"))
        for url in [folder.appendingPathComponent("vit"), folder.appendingPathComponent("vit/model.safetensors"),
                    folder.appendingPathComponent("vit-bin")] {
            let backbone = try BackboneCheckpoint.load(from: url)
            XCTAssertEqual(backbone.source, "a Hugging Face transformers ViT", url.path)
            XCTAssertEqual([backbone.config.embedDim, backbone.config.depth, backbone.config.numHeads, backbone.config.mlpRatio,
                            backbone.config.imageSize], [64, 1, 2, 4, 16])
            XCTAssertEqual(backbone.config.layerNormEpsilon, 1e-12)
            let (cls, attention) = forward(backbone, golden.values("image"))
            assertClose(cls, golden.values("cls"), tolerance: 1e-5, "CLS of \(url.lastPathComponent)")
            let n = 17, reference = golden.values("attention")
            assertClose(attention, (0..<2).flatMap { h in reference[(h * n * n)..<(h * n * n + n)] }, tolerance: 1e-5,
                        "last-layer CLS attention of \(url.lastPathComponent)")
            // Off the native size, positions are interpolated as transformers does (size=, no offset).
            let wide = backbone.transformer.makeActivations(batch: 1, imageHeight: 12, imageWidth: 20, training: false)
            let image = FloatBuffer(golden.values("image_wide")), wideCLS = FloatBuffer(count: 64)
            backbone.transformer.forward(parameters: backbone.parameters.pointer, images: image.pointer, activations: wide)
            wide.copyClassTokens(to: wideCLS.pointer)
            assertClose(wideCLS.array, golden.values("cls_wide"), tolerance: 1e-5, "CLS of \(url.lastPathComponent) at 20x12")
            // The eps travels with a converted file.
            let converted = FileManager.default.temporaryDirectory.appendingPathComponent("hf-\(UUID().uuidString).safetensors")
            try backbone.save(to: converted)
            XCTAssertEqual(try BackboneCheckpoint.load(from: converted).config, backbone.config)
            try? FileManager.default.removeItem(at: converted)
        }
        XCTAssertThrowsError(try BackboneCheckpoint.load(from: goldensFolder.appendingPathComponent("torch"))) { XCTAssertTrue("\($0)".contains("without model.safetensors"), "\($0)") }
    }
}
