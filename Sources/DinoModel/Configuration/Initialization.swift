import DinoKernels
import Foundation

/// The official initialization (vision_transformer.py `_init_weights`, utils `trunc_normal_`):
/// - every Linear weight, `cls_token` and `pos_embed`: truncated normal, std 0.02, bounds ±2 (absolute);
/// - Linear biases 0; LayerNorm weight 1, bias 0;
/// - `patch_embed.proj` keeps PyTorch's Conv2d default, U(±1/√fan_in) for weight and bias;
/// - the head's `last_layer.weight_v` keeps the Linear default U(±1/√bottleneck); `weight_g` = 1;
/// - DINOv2's `register_tokens` N(0, 1e-12), LayerScale gammas `init_values`, `mask_token` 0.
public enum Initialization {
    /// - Parameter layerScale: the LayerScale gammas' value (the config's `init_values`).
    public static func initialize(_ parameters: UnsafeMutablePointer<Float>, layout: ParameterLayout,
                                  generator: inout RandomGenerator, layerScale: Float = 1e-5) {
        for e in layout.entries {
            let p = parameters + e.offset
            let name = e.name
            if name.hasPrefix("patch_embed.proj.") {
                let shape = layout.entry("patch_embed.proj.weight")!.shape
                let bound = 1 / Float(shape[1] * shape[2] * shape[3]).squareRoot()
                for i in 0..<e.count { p[i] = Float(generator.uniform(-1, 1)) * bound }
            } else if name.hasSuffix("last_layer.weight_v") {
                let bound = 1 / Float(e.shape[1]).squareRoot()
                for i in 0..<e.count { p[i] = Float(generator.uniform(-1, 1)) * bound }
            } else if name.hasSuffix("last_layer.weight_g") || name.hasSuffix("norm1.weight")
                        || name.hasSuffix("norm2.weight") || name == "norm.weight" {
                p.update(repeating: 1, count: e.count)
            } else if name.hasSuffix("ls1.gamma") || name.hasSuffix("ls2.gamma") {
                p.update(repeating: layerScale, count: e.count)
            } else if name == "register_tokens" {
                for i in 0..<e.count { p[i] = Float(generator.nextNormal() * 1e-6) }
            } else if name.hasSuffix(".bias") || name == "mask_token" {  // DINOv2 starts the mask token at 0
                p.update(repeating: 0, count: e.count)
            } else {
                for i in 0..<e.count { p[i] = truncatedNormal(&generator, std: 0.02, bound: 2) }
            }
        }
    }

    /// N(0, std²) truncated to [−bound, bound] (absolute bounds, as the official call).
    public static func truncatedNormal(_ g: inout RandomGenerator, std: Double, bound: Double) -> Float {
        while true {
            let x = g.nextNormal() * std
            if abs(x) <= bound { return Float(x) }
        }
    }
}
