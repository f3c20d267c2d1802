import DinoKernels
import Foundation

/// Hugging Face `transformers` ViT and DINOv2 models (`ViTModel`, e.g. `facebook/dino-vits16`; `Dinov2Model`,
/// `facebook/dinov2-small`; `Dinov2WithRegistersModel`, `facebook/dinov2-with-registers-small`): their tensors
/// renamed to the official layouts (separate query, key and value joined into `qkv`; SwiGLU's halves into
/// `w12`), and their `config.json` read for the widths, heads, eps, image size, registers and feed-forward.
enum HuggingFaceViT {
    static let patchWeight = "embeddings.patch_embeddings.projection.weight"

    /// The prefix under which `file` holds a transformers ViT (`""`, `vit.`, `dinov2.`, …), or nil.
    static func prefix(in file: SafeTensors.File) -> String? {
        file.tensors.map(\.name).filter { $0.hasSuffix(patchWeight) }.map { String($0.dropLast(patchWeight.count)) }.min { $0.count < $1.count }
    }

    /// The file's ViT tensors under the official names; the pooler, the mask token and anything outside
    /// the ViT are left out. Both the checkpoints' names (`attention.attention.query`, `mlp.weights_in`)
    /// and transformers 5's module names (`attention.q_proj`, `mlp.gate_proj` / `up_proj`) are read.
    static func renamed(_ file: SafeTensors.File, prefix: String, path: String) throws -> SafeTensors.File {
        var byName: [String: NamedTensor] = [:]
        for t in file.tensors where t.name.hasPrefix(prefix) { byName[String(t.name.dropFirst(prefix.count))] = t }
        func take(_ name: String, as official: String) throws -> NamedTensor {
            guard var t = byName[name] else { throw DinoError("\(path): a Hugging Face ViT without tensor '\(prefix)\(name)'") }
            t.name = official
            return t
        }
        /// The first of `names` the file has.
        func first(_ names: [String]) -> String { names.first { byName[$0] != nil } ?? names[0] }
        var out = [try take("embeddings.cls_token", as: "cls_token"), try take("embeddings.position_embeddings", as: "pos_embed"),
                   try take(patchWeight, as: "patch_embed.proj.weight"),
                   try take("embeddings.patch_embeddings.projection.bias", as: "patch_embed.proj.bias")]
        if byName["embeddings.register_tokens"] != nil { out.append(try take("embeddings.register_tokens", as: "register_tokens")) }
        let depth = Set(byName.keys.compactMap { name -> Int? in
            guard name.hasPrefix("encoder.layer.") else { return nil }
            return Int(name.dropFirst("encoder.layer.".count).prefix { $0.isNumber })
        }).count
        for i in 0..<depth {
            let l = "encoder.layer.\(i).", b = "blocks.\(i)."
            let legacy = byName[l + "attention.attention.query.weight"] != nil
            let parts = legacy ? ["attention.attention.query", "attention.attention.key", "attention.attention.value"]
                               : ["attention.q_proj", "attention.k_proj", "attention.v_proj"]
            let q = try take(l + parts[0] + ".weight", as: ""), k = try take(l + parts[1] + ".weight", as: ""),
                v = try take(l + parts[2] + ".weight", as: "")
            guard q.shape.count == 2, q.shape == k.shape, q.shape == v.shape else {
                throw DinoError("\(path): layer \(i)'s query, key and value weights differ in shape")
            }
            out.append(NamedTensor(name: b + "attn.qkv.weight", shape: [3 * q.shape[0], q.shape[1]], values: q.values + k.values + v.values))
            let biases = parts.map { part -> [Float] in
                // qkv_bias false: no bias tensors, which is a zero bias.
                byName[l + part + ".bias"]?.values ?? [Float](repeating: 0, count: q.shape[0])
            }
            out.append(NamedTensor(name: b + "attn.qkv.bias", shape: [3 * q.shape[0]], values: biases.flatMap { $0 }))
            var pairs = [(first([l + "attention.output.dense", l + "attention.o_proj"]), "attn.proj")]
            if byName[l + "norm1.weight"] != nil {  // Dinov2
                pairs += [(l + "norm1", "norm1"), (l + "norm2", "norm2")]
                if byName[l + "mlp.gate_proj.weight"] != nil {  // SwiGLU as transformers 5's modules: w12 = [gate; up]
                    for suffix in ["weight", "bias"] {
                        let gate = try take(l + "mlp.gate_proj." + suffix, as: ""), up = try take(l + "mlp.up_proj." + suffix, as: "")
                        guard gate.shape == up.shape, let rows = gate.shape.first else { throw DinoError("\(path): layer \(i)'s SwiGLU halves differ in shape") }
                        out.append(NamedTensor(name: b + "mlp.w12." + suffix, shape: [2 * rows] + gate.shape.dropFirst(), values: gate.values + up.values))
                    }
                    pairs.append((l + "mlp.down_proj", "mlp.w3"))
                } else if byName[l + "mlp.weights_in.weight"] != nil {
                    pairs += [(l + "mlp.weights_in", "mlp.w12"), (l + "mlp.weights_out", "mlp.w3")]
                } else {
                    pairs += [(l + "mlp.fc1", "mlp.fc1"), (l + "mlp.fc2", "mlp.fc2")]
                }
                if byName[l + "layer_scale1.lambda1"] != nil {
                    out += [try take(l + "layer_scale1.lambda1", as: b + "ls1.gamma"), try take(l + "layer_scale2.lambda1", as: b + "ls2.gamma")]
                }
            } else {
                pairs += [(l + "intermediate.dense", "mlp.fc1"), (l + "output.dense", "mlp.fc2"),
                          (l + "layernorm_before", "norm1"), (l + "layernorm_after", "norm2")]
            }
            for (hf, official) in pairs {
                out.append(try take(hf + ".weight", as: b + official + ".weight"))
                out.append(try take(hf + ".bias", as: b + official + ".bias"))
            }
        }
        out += [try take("layernorm.weight", as: "norm.weight"), try take("layernorm.bias", as: "norm.bias")]
        return SafeTensors.File(tensors: out, metadata: [:])
    }

    /// The architecture from `config.json` (when there is one) or from the tensor shapes (heads 64 wide,
    /// the transformers defaults: eps 1e-12 for ViT, 1e-6 for DINOv2). Positions are interpolated as
    /// transformers does: `size=`, antialiased for the models with registers.
    static func config(_ json: Data?, renamed file: SafeTensors.File, path: String) throws -> ViTConfig {
        var config = try ForeignLayout.inferConfig(file, prefix: "", path: path)
        let dinov2 = file.tensor("blocks.0.norm1.weight") != nil && file.tensor("blocks.0.ls1.gamma") != nil
        config.layerNormEpsilon = dinov2 ? 1e-6 : 1e-12
        config.interpolateOffset = 0
        config.interpolateAntialias = config.registerCount > 0
        guard let json else { return config }
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw DinoError("\(path): its config.json is not a JSON object")
        }
        func int(_ key: String) -> Int? { (object[key] as? NSNumber).flatMap { Int(exactly: $0.doubleValue) } }
        if let type = object["model_type"] as? String, !["vit", "dinov2", "dinov2_with_registers"].contains(type) {
            throw DinoError("\(path): a Hugging Face '\(type)' model; of the Hugging Face models, ViT ('vit') and DINOv2 ('dinov2', 'dinov2_with_registers') are read")
        }
        if let act = object["hidden_act"] as? String, act != "gelu", !config.usesSwiGLU {
            throw DinoError("\(path): hidden_act '\(act)'; only the exact-erf 'gelu' of DINO's ViT is implemented")
        }
        if let heads = int("num_attention_heads") { config.numHeads = heads }
        if let size = int("image_size") { config.imageSize = size }
        if let eps = (object["layer_norm_eps"] as? NSNumber)?.floatValue { config.layerNormEpsilon = eps }
        if let value = (object["layerscale_value"] as? NSNumber)?.floatValue, config.usesLayerScale, value > 0 { config.layerScaleInit = value }
        let dim = config.embedDim
        if let hidden = int("intermediate_size"), dim > 0, hidden % dim == 0, !config.usesSwiGLU { config.mlpRatio = hidden / dim }
        guard int("hidden_size").map({ $0 == dim }) ?? true, int("num_hidden_layers").map({ $0 == config.depth }) ?? true,
              int("patch_size").map({ $0 == config.patchSize }) ?? true, int("num_channels").map({ $0 == config.inChannels }) ?? true,
              int("num_register_tokens").map({ $0 == config.registerCount || object["model_type"] as? String != "dinov2_with_registers" }) ?? true,
              (object["use_swiglu_ffn"] as? Bool).map({ $0 == config.usesSwiGLU }) ?? true else {
            throw DinoError("\(path): config.json and the weights disagree (hidden_size, num_hidden_layers, patch_size, num_channels, num_register_tokens or use_swiglu_ffn)")
        }
        return config
    }
}
