import DinoKernels
import DinoModel
import Foundation
import TestSupport
import XCTest

/// Rung 3 for DINOv2's backbone: LayerScale, the SwiGLU feed-forward and register tokens against the
/// official `DinoVisionTransformer` and transformers' `Dinov2WithRegistersModel` (make_dinov2_goldens.py),
/// with the model golden's tolerances, on native, shrunk, enlarged and non-square crop groups (so each of
/// DINOv2's interpolation rules runs forward and backward).
extension ModelGoldenTests {
    static let dinov2Head = HeadConfig(inDim: 32, outDim: 24, hiddenDim: 40, bottleneckDim: 16, layerCount: 3, normLastLayer: false)

    static func dinov2(ffn: String = "mlp", registers: Int = 0) -> ViTConfig {
        ViTConfig(arch: "custom", imageSize: 28, patchSize: 7, inChannels: 3, embedDim: 32, depth: 2, numHeads: 4,
                  registerCount: registers, layerScaleInit: 1, ffnLayer: ffn,
                  interpolateOffset: registers > 0 ? 0 : 0.1, interpolateAntialias: registers > 0)
    }

    func testDINOv2LayerScaleForwardAndEveryGradientMatchPyTorch() throws {
        for classTokenOnly in [false, true] {
            try checkAgainstGolden("dinov2_mlp.safetensors", vit: Self.dinov2(), head: Self.dinov2Head,
                                   groups: [("global", 28, 28), ("small", 14, 14), ("wide", 14, 21)], checksAttention: true,
                                   classTokenOnly: classTokenOnly)
        }
    }

    func testDINOv2SwiGLUForwardAndEveryGradientMatchPyTorch() throws {
        let vit = Self.dinov2(ffn: "swiglu")
        XCTAssertEqual([vit.hiddenDim, vit.firstLayerWidth], [88, 176])  // (int(128·2/3) + 7) // 8 · 8
        XCTAssertEqual(ParameterLayout.backbone(vit).entry("blocks.1.mlp.w12.weight")?.shape, [176, 32])
        for classTokenOnly in [false, true] {
            try checkAgainstGolden("dinov2_swiglu.safetensors", vit: vit, head: Self.dinov2Head,
                                   groups: [("global", 28, 28), ("small", 14, 14), ("wide", 14, 21)], checksAttention: true,
                                   classTokenOnly: classTokenOnly)
        }
    }

    /// Four registers between the class token and the patches, without position embedding; attention
    /// rows and columns include them, as transformers' model computes them.
    func testDINOv2RegistersForwardAndEveryGradientMatchTransformers() throws {
        for classTokenOnly in [false, true] {
            try checkAgainstGolden("dinov2_registers.safetensors", vit: Self.dinov2(registers: 4), head: Self.dinov2Head,
                                   groups: [("global", 28, 28), ("small", 14, 14), ("large", 35, 42)], checksAttention: true,
                                   classTokenOnly: classTokenOnly)
        }
    }

    /// Drop path on a DINOv2 block (LayerScale and SwiGLU) gives the same outputs and gradients whether the
    /// dropped images skip a branch or run it scaled by 0, with registers and the class-token-only block.
    func testDINOv2DropPathSkipsDroppedImagesExactly() throws {
        let vit = Self.dinov2(ffn: "swiglu", registers: 2)
        let layout = ParameterLayout.backbone(vit)
        let parameters = kept(FloatBuffer(count: layout.count))
        var generator = RandomGenerator(seed: 5)
        Initialization.initialize(parameters.pointer, layout: layout, generator: &generator, layerScale: 0.5)
        for i in 0..<layout.count { parameters.pointer[i] += Float(generator.uniform(-0.1, 0.1)) }
        let images = kept(FloatBuffer(floats(randomArray(6 * 3 * 21 * 14, seed: 6))))
        let upstream = kept(FloatBuffer(floats(randomArray(6 * 32, seed: 7))))
        for classTokenOnly in [false, true] {
            var results: [[Float]] = []
            for skips in [false, true] {
                var transformer = VisionTransformer(config: vit, layout: layout)
                transformer.skipsDroppedImages = skips
                let a = transformer.makeActivations(batch: 6, imageHeight: 21, imageWidth: 14, training: true, classTokenOnly: classTokenOnly)
                var masks = RandomGenerator(seed: 8)
                transformer.forward(parameters: parameters.pointer, images: images.pointer, activations: a, dropPathRate: 0.7,
                                    generator: &masks)
                let cls = kept(FloatBuffer(count: 6 * 32)), gradients = kept(FloatBuffer(count: layout.count))
                a.copyClassTokens(to: cls.pointer)
                transformer.backward(gradients: gradients.pointer, parameters: parameters.pointer, dClassTokens: upstream.pointer,
                                     activations: a)
                results.append(cls.array + gradients.array)
            }
            let plain = VisionTransformer(config: vit, layout: layout)
            let a = plain.makeActivations(batch: 6, imageHeight: 21, imageWidth: 14, training: false)
            plain.forward(parameters: parameters.pointer, images: images.pointer, activations: a)
            let cls = kept(FloatBuffer(count: 6 * 32))
            a.copyClassTokens(to: cls.pointer)
            XCTAssertGreaterThan(zip(cls.array, results[0]).map { abs($0 - $1) }.max() ?? 0, 1e-3, "drop path must drop branches")
            assertClose(results[1], results[0], tolerance: 1e-5, "skipped vs scaled drop path (class token only: \(classTokenOnly))")
        }
    }

    /// DINOv2's three interpolation rules (the hub's scale factor with offset 0.1; `size=`, as transformers;
    /// `size=` with antialias, as the `_reg` models) from 37x37 (518 px at patch 14) to 224 px and others.
    func testDINOv2PositionEmbeddingInterpolationsMatchPyTorch() throws {
        let golden = try loadGolden("dinov2_interpolation.safetensors")
        let grid = kept(FloatBuffer(golden.values("grid")))
        for (h, w) in [(16, 16), (37, 37), (5, 9), (20, 26)] {
            for (rule, offset, antialias) in [("offset", 0.1, false), ("size", 0.0, false), ("antialias", 0.0, true)] {
                let out = kept(FloatBuffer(count: h * w * 2))
                let matrix = kept(FloatBuffer(PositionEmbedding.interpolationMatrix(side: 37, targetHeight: h, targetWidth: w,
                                                                                   offset: offset, antialias: antialias)))
                PositionEmbedding.forward(output: out.pointer, grid: grid.pointer, matrix: matrix.pointer, targetCount: h * w,
                                          sourceCount: 37 * 37, channels: 2)
                assertClose(out.array, golden.values("\(rule).\(h)x\(w)"), tolerance: 1e-5, "\(rule) \(h)x\(w)")
            }
        }
    }
}
