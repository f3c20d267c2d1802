import DinoKernels
import Foundation

/// Hugging Face `transformers` ViT models (`ViTModel`, e.g. `facebook/dino-vits16`): their tensors renamed
/// to the official DINO layout (separate query, key and value joined into `qkv`), and their `config.json`
/// read for the widths, heads, eps and image size.
enum HuggingFaceViT {
    static let patchWeight = "embeddings.patch_embeddings.projection.weight"

    /// The prefix under which `file` holds a transformers ViT (`""`, `vit.`, …), or nil.
    static func prefix(in file: SafeTensors.File) -> String? {
        file.tensors.map(\.name).filter { $0.hasSuffix(patchWeight) }.map { String($0.dropLast(patchWeight.count)) }.min { $0.count < $1.count }
    }

    /// The file's ViT tensors under the official names; the pooler and anything outside the ViT are left out.
    static func renamed(_ file: SafeTensors.File, prefix: String, path: String) throws -> SafeTensors.File {
        var byName: [String: NamedTensor] = [:]
        for t in file.tensors where t.name.hasPrefix(prefix) { byName[String(t.name.dropFirst(prefix.count))] = t }
        func take(_ name: String, as official: String) throws -> NamedTensor {
            guard var t = byName[name] else { throw DinoError("\(path): a Hugging Face ViT without tensor '\(prefix)\(name)'") }
            t.name = official
            return t
        }
        var out = [try take("embeddings.cls_token", as: "cls_token"), try take("embeddings.position_embeddings", as: "pos_embed"),
                   try take(patchWeight, as: "patch_embed.proj.weight"),
                   try take("embeddings.patch_embeddings.projection.bias", as: "patch_embed.proj.bias")]
        let depth = Set(byName.keys.compactMap { name -> Int? in
            guard name.hasPrefix("encoder.layer.") else { return nil }
            return Int(name.dropFirst("encoder.layer.".count).prefix { $0.isNumber })
        }).count
        for i in 0..<depth {
            let l = "encoder.layer.\(i).", b = "blocks.\(i)."
            let q = try take(l + "attention.attention.query.weight", as: ""), k = try take(l + "attention.attention.key.weight", as: ""),
                v = try take(l + "attention.attention.value.weight", as: "")
            guard q.shape.count == 2, q.shape == k.shape, q.shape == v.shape else {
                throw DinoError("\(path): layer \(i)'s query, key and value weights differ in shape")
            }
            out.append(NamedTensor(name: b + "attn.qkv.weight", shape: [3 * q.shape[0], q.shape[1]], values: q.values + k.values + v.values))
            let biases = try ["query", "key", "value"].map { part -> [Float] in
                // qkv_bias false: no bias tensors, which is a zero bias.
                byName[l + "attention.attention.\(part).bias"]?.values ?? [Float](repeating: 0, count: q.shape[0])
            }
            out.append(NamedTensor(name: b + "attn.qkv.bias", shape: [3 * q.shape[0]], values: biases.flatMap { $0 }))
            for (hf, official) in [("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"),
                                   ("layernorm_before", "norm1"), ("layernorm_after", "norm2")] {
                out.append(try take(l + hf + ".weight", as: b + official + ".weight"))
                out.append(try take(l + hf + ".bias", as: b + official + ".bias"))
            }
        }
        out += [try take("layernorm.weight", as: "norm.weight"), try take("layernorm.bias", as: "norm.bias")]
        return SafeTensors.File(tensors: out, metadata: [:])
    }

    /// The architecture from `config.json` (when there is one) or from the tensor shapes (heads 64 wide,
    /// and the transformers default eps 1e-12).
    static func config(_ json: Data?, renamed file: SafeTensors.File, path: String) throws -> ViTConfig {
        guard let patch = file.tensor("patch_embed.proj.weight"), patch.shape.count == 4, let pos = file.tensor("pos_embed"),
              pos.shape.count == 3, pos.shape[1] >= 2, let fc1 = file.tensor("blocks.0.mlp.fc1.weight") else {
            throw DinoError("\(path): a Hugging Face ViT whose tensors have unexpected shapes")
        }
        let dim = patch.shape[0], depth = file.tensors.filter { $0.name.hasSuffix("attn.qkv.weight") }.count
        let side = Int(Double(pos.shape[1] - 1).squareRoot().rounded())
        var config = ViTConfig(arch: "custom", imageSize: side * patch.shape[2], patchSize: patch.shape[2], inChannels: patch.shape[1],
                               embedDim: dim, depth: depth, numHeads: max(1, dim / 64), mlpRatio: max(1, fc1.shape[0] / max(dim, 1)),
                               layerNormEpsilon: 1e-12)
        guard let json else { return config }
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw DinoError("\(path): its config.json is not a JSON object")
        }
        func int(_ key: String) -> Int? { (object[key] as? NSNumber).flatMap { Int(exactly: $0.doubleValue) } }
        if let type = object["model_type"] as? String, type != "vit" {
            throw DinoError("\(path): a Hugging Face '\(type)' model; of the Hugging Face models, ViT ('vit') is read")
        }
        if let act = object["hidden_act"] as? String, act != "gelu" {
            throw DinoError("\(path): hidden_act '\(act)'; only the exact-erf 'gelu' of DINO's ViT is implemented")
        }
        if let heads = int("num_attention_heads") { config.numHeads = heads }
        if let size = int("image_size") { config.imageSize = size }
        if let eps = (object["layer_norm_eps"] as? NSNumber)?.floatValue { config.layerNormEpsilon = eps }
        if let hidden = int("intermediate_size"), dim > 0, hidden % dim == 0 { config.mlpRatio = hidden / dim }
        guard int("hidden_size").map({ $0 == dim }) ?? true, int("num_hidden_layers").map({ $0 == depth }) ?? true,
              int("patch_size").map({ $0 == config.patchSize }) ?? true, int("num_channels").map({ $0 == config.inChannels }) ?? true else {
            throw DinoError("\(path): config.json and the weights disagree (hidden_size, num_hidden_layers, patch_size or num_channels)")
        }
        return config
    }
}
