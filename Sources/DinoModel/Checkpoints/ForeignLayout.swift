import DinoKernels
import Foundation

/// Backbone files written by other projects' code under the official names, or close to them: the
/// official DINO files, the DINOv2 hub files (`dinov2_vits14_pretrain.pth`, the `_reg4` ones, FSDP's
/// chunked `blocks.C.I.` names) and timm's DINO and DINOv2 models. `normalize` maps their differences
/// onto this project's names; `inferConfig` reads the architecture from the tensor shapes.
enum ForeignLayout {
    /// `file` with the tensors under `prefix` renamed to the official DINO / DINOv2 hub names, and what
    /// was found when it was not already that layout:
    /// - DINOv2's chunked blocks `blocks.C.I.x` (block_chunks > 0; I is the block's index) → `blocks.I.x`;
    /// - timm's DINOv2 (timm 1.0 `checkpoint_filter_fn`): `reg_token` → `register_tokens`, with the class
    ///   position that timm folds into `cls_token` restored as a zero row of `pos_embed`; SwiGLU's packed
    ///   `mlp.fc1` (twice the width `mlp.fc2` reads) → `mlp.w12`, `mlp.fc2` → `mlp.w3`.
    static func normalize(_ file: SafeTensors.File, prefix: String) -> (file: SafeTensors.File, layout: String?) {
        var tensors = file.tensors, found: [String] = []
        let names = Set(tensors.map(\.name))
        // Chunked blocks: "blocks.C.I." where both parts are numbers.
        func chunked(_ name: String) -> String? {
            guard name.hasPrefix(prefix + "blocks.") else { return nil }
            let parts = name.dropFirst((prefix + "blocks.").count).split(separator: ".", maxSplits: 2)
            guard parts.count == 3, Int(parts[0]) != nil, Int(parts[1]) != nil else { return nil }
            return prefix + "blocks.\(parts[1]).\(parts[2])"
        }
        if tensors.contains(where: { chunked($0.name) != nil }) {
            for i in tensors.indices { if let name = chunked(tensors[i].name) { tensors[i].name = name } }
            found.append("chunked blocks")
        }
        if names.contains(prefix + "reg_token") {
            found.append("timm's DINOv2 with registers")
            for i in tensors.indices where tensors[i].name == prefix + "reg_token" { tensors[i].name = prefix + "register_tokens" }
            if let p = tensors.firstIndex(where: { $0.name == prefix + "pos_embed" }), tensors[p].shape.count == 3 {
                let rows = tensors[p].shape[1], side = Int(Double(rows).squareRoot().rounded())
                if side * side == rows {  // no class row: cls_token already holds the class position
                    let width = tensors[p].shape[2]
                    tensors[p] = NamedTensor(name: tensors[p].name, shape: [1, rows + 1, width],
                                             values: [Float](repeating: 0, count: width) + tensors[p].values)
                }
            }
        }
        if let fc1 = tensors.first(where: { $0.name == prefix + "blocks.0.mlp.fc1.weight" }),
           let fc2 = tensors.first(where: { $0.name == prefix + "blocks.0.mlp.fc2.weight" }),
           fc1.shape.count == 2, fc2.shape.count == 2, fc1.shape[0] == 2 * fc2.shape[1] {
            found.append("timm's packed SwiGLU")
            for i in tensors.indices {
                tensors[i].name = tensors[i].name.replacingOccurrences(of: ".mlp.fc1.", with: ".mlp.w12.")
                    .replacingOccurrences(of: ".mlp.fc2.", with: ".mlp.w3.")
            }
        }
        return (SafeTensors.File(tensors: tensors, metadata: file.metadata), found.isEmpty ? nil : found.joined(separator: ", "))
    }

    /// The architecture from the tensor shapes: widths, depth, patch, grid, heads 64 wide (every official DINO
    /// and DINOv2 model), and DINOv2's registers, LayerScale and SwiGLU where the tensors are there. Models
    /// with registers interpolate positions as the `_reg` hub models (`size=`, antialiased), others as DINO.
    static func inferConfig(_ file: SafeTensors.File, prefix: String, path: String) throws -> ViTConfig {
        guard let patch = file.tensor(prefix + "patch_embed.proj.weight"), patch.shape.count == 4,
              let pos = file.tensor(prefix + "pos_embed"), pos.shape.count == 3, pos.shape[1] >= 2 else {
            throw DinoError("\(path) has no ViT backbone (no \(prefix)patch_embed.proj.weight / \(prefix)pos_embed) and no dino.config metadata")
        }
        let depth = Set(file.tensors.compactMap { t -> Int? in
            guard t.name.hasPrefix(prefix + "blocks.") else { return nil }
            return Int(t.name.dropFirst((prefix + "blocks.").count).prefix { $0.isNumber })
        }).count
        let side = Int(Double(pos.shape[1] - 1).squareRoot().rounded())
        let dim = patch.shape[0]
        let registers = file.tensor(prefix + "register_tokens").flatMap { $0.shape.count == 3 ? $0.shape[1] : nil } ?? 0
        let swiglu = file.tensor(prefix + "blocks.0.mlp.w12.weight") != nil
        var ratio = 4
        if swiglu, let w3 = file.tensor(prefix + "blocks.0.mlp.w3.weight"), w3.shape.count == 2 {
            ratio = (1...16).first { (dim * $0 * 2 / 3 + 7) / 8 * 8 == w3.shape[1] } ?? 4
        } else if let fc1 = file.tensor(prefix + "blocks.0.mlp.fc1.weight"), fc1.shape.count == 2, dim > 0, fc1.shape[0] % dim == 0 {
            ratio = fc1.shape[0] / dim
        }
        return ViTConfig(arch: "custom", imageSize: side * patch.shape[2], patchSize: patch.shape[2],
                         inChannels: patch.shape[1], embedDim: dim, depth: depth, numHeads: max(1, dim / 64), mlpRatio: max(1, ratio),
                         registerCount: registers,
                         layerScaleInit: file.tensor(prefix + "blocks.0.ls1.gamma") != nil ? 1e-5 : 0,
                         ffnLayer: swiglu ? "swiglufused" : "mlp",
                         interpolateOffset: registers > 0 ? 0 : 0.1, interpolateAntialias: registers > 0)
    }

    /// A description of the architecture's DINOv2 parts, for the layout's name ("" for DINO's ViT).
    static func dinov2Parts(_ c: ViTConfig) -> String {
        guard c.usesLayerScale || c.registerCount > 0 || c.usesSwiGLU else { return "" }
        var parts = ["DINOv2"]
        if c.registerCount > 0 { parts.append("\(c.registerCount) registers") }
        if c.usesSwiGLU { parts.append("SwiGLU") }
        return parts.joined(separator: ", ")
    }
}
