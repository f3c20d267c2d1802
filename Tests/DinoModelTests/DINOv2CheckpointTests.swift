import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

/// DINOv2 checkpoints as users download them (`Tests/Goldens/make_dinov2_checkpoints.py`): the hub files (with
/// registers and SwiGLU), timm's names for them, and transformers' Dinov2 folders load with no conversion
/// step and give the defining library's CLS token, patch tokens and last-layer attention, at the native size
/// and at one that interpolates the position embedding.
final class DINOv2CheckpointTests: XCTestCase {
    static let folder = goldensFolder.appendingPathComponent("dinov2")

    /// (file, reference outputs' name, expected source, registers, SwiGLU)
    static let files: [(String, String, String, Int, Bool)] = [
        ("hub.pth", "hub", "a backbone state dict in the official DINO / DINOv2 layout, DINOv2", 0, false),
        ("hub-swiglu.pth", "hub-swiglu", "a backbone state dict in the official DINO / DINOv2 layout, DINOv2, SwiGLU", 0, true),
        ("hub-reg4.pth", "hf-dinov2-reg", "a backbone state dict in the official DINO / DINOv2 layout, DINOv2, 4 registers", 4, false),
        ("timm-reg4.pth", "hf-dinov2-reg",
         "a backbone state dict in the official DINO / DINOv2 layout (timm's DINOv2 with registers), DINOv2, 4 registers", 4, false),
        ("timm-swiglu.pth", "hub-swiglu",
         "a backbone state dict in the official DINO / DINOv2 layout (timm's packed SwiGLU), DINOv2, SwiGLU", 0, true),
        ("hf-dinov2", "hf-dinov2", "a Hugging Face transformers DINOv2", 0, false),
        ("hf-dinov2/model.safetensors", "hf-dinov2", "a Hugging Face transformers DINOv2", 0, false),
        ("hf-dinov2-bin", "hf-dinov2", "a Hugging Face transformers DINOv2", 0, false),
        ("hf-dinov2-reg", "hf-dinov2-reg", "a Hugging Face transformers DINOv2, 4 registers", 4, false),
        ("hf-dinov2-swiglu", "hf-dinov2-swiglu", "a Hugging Face transformers DINOv2, SwiGLU", 0, true),
    ]

    func testEveryLayoutGivesItsLibrarysOutputs() throws {
        let golden = try SafeTensors.read(Self.folder.appendingPathComponent("outputs.safetensors"))
        for (file, reference, source, registers, swiglu) in Self.files {
            let checkpoint = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent(file))
            let c = checkpoint.config
            XCTAssertEqual(checkpoint.source, source, file)
            XCTAssertEqual([c.embedDim, c.depth, c.numHeads, c.patchSize, c.imageSize, c.registerCount], [64, 1, 1, 14, 56, registers], file)
            XCTAssertEqual([c.usesLayerScale, c.usesSwiGLU], [true, swiglu], file)
            for (size, height, width) in [("native", 56, 56), ("wide", 42, 70)] {
                let a = checkpoint.transformer.makeActivations(batch: 1, imageHeight: height, imageWidth: width, training: false)
                let image = FloatBuffer(golden.values("image.\(size)"))
                checkpoint.transformer.forward(parameters: checkpoint.parameters.pointer, images: image.pointer, activations: a)
                let cls = FloatBuffer(count: 64), patches = FloatBuffer(count: a.patchCount * 64)
                a.copyClassTokens(to: cls.pointer)
                a.copyPatchTokens(to: patches.pointer)
                let label = "\(file) at \(width)x\(height)"
                assertClose(cls.array, golden.values("\(reference).\(size).cls"), tolerance: 1e-5, "CLS of \(label)")
                assertClose(patches.array, golden.values("\(reference).\(size).patch"), tolerance: 1e-5, "patch tokens of \(label)")
                assertClose(a.lastAttention.array, golden.values("\(reference).\(size).attention"), tolerance: 1e-5,
                            "last attention of \(label)")
                withExtendedLifetime(image) {}
            }
        }
    }

    /// A converted DINOv2 file keeps its architecture (registers, LayerScale, SwiGLU, interpolation) and weights.
    func testConvertedFilesKeepTheArchitecture() throws {
        for file in ["hub-reg4.pth", "hf-dinov2-swiglu"] {
            let checkpoint = try BackboneCheckpoint.load(from: Self.folder.appendingPathComponent(file))
            let converted = temporaryFolder().appendingPathComponent("converted.safetensors")
            try checkpoint.save(to: converted)
            let again = try BackboneCheckpoint.load(from: converted)
            XCTAssertEqual(again.config, checkpoint.config, file)
            XCTAssertEqual(again.parameters.array, checkpoint.parameters.array, file)
        }
    }
}
