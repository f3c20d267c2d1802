import DinoKernels

/// One named tensor inside a flat parameter buffer.
public struct TensorEntry: Equatable, Sendable {
    /// The PyTorch state-dict key (`blocks.3.attn.qkv.weight`, `head.last_layer.weight_v`).
    public let name: String
    /// PyTorch's shape for that key.
    public let shape: [Int]
    /// Offset in floats from the start of the buffer.
    public let offset: Int
    /// Weight decay applies (official rule: not a bias and more than one dimension).
    public let decays: Bool
    /// Part of the head's last layer, frozen during the `freeze_last_layer` epochs.
    public let isLastLayer: Bool
    /// Updated by the optimizer (the weight-norm scale is not when `norm_last_layer`).
    public let isTrainable: Bool

    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
}

/// An ordered table of named tensors in one flat Float buffer (llm.c's layout): parameters,
/// gradients, AdamW moments and the teacher all share it, so the optimizer and the EMA are one loop.
public struct ParameterLayout: Equatable, Sendable {
    public private(set) var entries: [TensorEntry] = []
    public private(set) var count = 0
    private var index: [String: Int] = [:]

    public init() {}

    public mutating func append(_ name: String, _ shape: [Int], trainable: Bool = true) {
        let decays = !name.hasSuffix(".bias") && shape.count > 1
        entries.append(TensorEntry(name: name, shape: shape, offset: count, decays: decays,
                                   isLastLayer: name.contains("last_layer"), isTrainable: trainable))
        index[name] = entries.count - 1
        count += shape.reduce(1, *)
    }

    public func entry(_ name: String) -> TensorEntry? { index[name].map { entries[$0] } }

    /// The offset of a tensor that the layout must contain (a programming error otherwise).
    public func offset(_ name: String) -> Int {
        guard let i = index[name] else { preconditionFailure("no tensor named \(name) in the layout") }
        return entries[i].offset
    }

    /// The backbone's tensors, in the order of the official `VisionTransformer.state_dict()`.
    public static func backbone(_ c: ViTConfig) -> ParameterLayout {
        var layout = ParameterLayout()
        layout.appendBackbone(c)
        return layout
    }

    /// Backbone followed by the DINO head (`head.` prefix), as the official student/teacher
    /// `MultiCropWrapper` minus its `backbone.` prefix. With `maskToken`, DINOv2's learned `mask_token`
    /// `(1, C)` for masked-patch (iBOT) training comes last, so every other offset is unchanged and the
    /// backbone tensors still come first.
    public static func model(_ c: ViTConfig, head: HeadConfig, maskToken: Bool = false) -> ParameterLayout {
        var layout = ParameterLayout()
        layout.appendBackbone(c)
        layout.appendHead(head)
        if maskToken { layout.append("mask_token", [1, c.embedDim]) }
        return layout
    }

    /// DINOv2's additions keep its names: `register_tokens` after `pos_embed`, `ls1.gamma` / `ls2.gamma`
    /// after each branch, and SwiGLU's `mlp.w12` / `mlp.w3` in place of `mlp.fc1` / `mlp.fc2`.
    mutating func appendBackbone(_ c: ViTConfig) {
        let d = c.embedDim, h = c.hiddenDim
        append("cls_token", [1, 1, d])
        append("pos_embed", [1, c.gridSide * c.gridSide + 1, d])
        if c.registerCount > 0 { append("register_tokens", [1, c.registerCount, d]) }
        append("patch_embed.proj.weight", [d, c.patchPlanes, c.patchSize, c.patchSize])
        append("patch_embed.proj.bias", [d])
        let (first, second) = Self.feedForwardNames(c)
        for i in 0..<c.depth {
            let p = "blocks.\(i)."
            append(p + "norm1.weight", [d]); append(p + "norm1.bias", [d])
            append(p + "attn.qkv.weight", [3 * d, d]); append(p + "attn.qkv.bias", [3 * d])
            append(p + "attn.proj.weight", [d, d]); append(p + "attn.proj.bias", [d])
            if c.usesLayerScale { append(p + "ls1.gamma", [d]) }
            append(p + "norm2.weight", [d]); append(p + "norm2.bias", [d])
            append(p + first + ".weight", [c.firstLayerWidth, d]); append(p + first + ".bias", [c.firstLayerWidth])
            append(p + second + ".weight", [d, h]); append(p + second + ".bias", [d])
            if c.usesLayerScale { append(p + "ls2.gamma", [d]) }
        }
        append("norm.weight", [d]); append("norm.bias", [d])
    }

    /// The feed-forward's two linear layers: `mlp.fc1`, `mlp.fc2`, or SwiGLU's `mlp.w12`, `mlp.w3`.
    public static func feedForwardNames(_ c: ViTConfig) -> (first: String, second: String) {
        c.usesSwiGLU ? ("mlp.w12", "mlp.w3") : ("mlp.fc1", "mlp.fc2")
    }

    /// The DINO head alone, names relative to `head.` (`mlp.0.weight`, …, `last_layer.weight_v`).
    public static func head(_ head: HeadConfig) -> ParameterLayout {
        var layout = ParameterLayout()
        layout.appendHead(head)
        return layout.subset(prefix: "head.")
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    mutating func appendHead(_ head: HeadConfig) {
        for (i, (input, output)) in DINOHead.layerSizes(head).enumerated() {
            let name = DINOHead.linearName(layer: i, count: head.layerCount)
            append(name + ".weight", [output, input]); append(name + ".bias", [output])
        }
        append("head.last_layer.weight_g", [head.outDim, 1], trainable: !head.normLastLayer)
        append("head.last_layer.weight_v", [head.outDim, head.bottleneckDim])
    }

    /// A copy of the tensors whose names start with `prefix`, with the prefix removed and offsets repacked.
    public func subset(prefix: String = "", excluding excludedPrefix: String? = nil) -> ParameterLayout {
        var layout = ParameterLayout()
        for e in entries where e.name.hasPrefix(prefix) && !(excludedPrefix.map { e.name.hasPrefix($0) } ?? false) {
            layout.append(String(e.name.dropFirst(prefix.count)), e.shape, trainable: e.isTrainable)
        }
        return layout
    }
}
