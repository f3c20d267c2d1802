import DinoKernels
import Foundation

/// A Vision Transformer's shape, named after the official `vision_transformer.py` arguments.
public struct ViTConfig: Codable, Equatable, Sendable {
    /// `vit_tiny`, `vit_small`, `vit_base`, or `custom` for a declared size.
    public var arch: String
    /// Side of the square training input the position embedding is learned for.
    public var imageSize: Int
    public var patchSize: Int
    public var inChannels: Int
    public var embedDim: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpRatio: Int
    /// Shifted patch tokenization (Lee et al. 2021, "Vision Transformer for Small-Size Datasets",
    /// without its LayerNorm): the patch embedding sees the image and four copies shifted diagonally by
    /// half a patch, `5·in_chans` input planes, so each token also covers its neighbours' borders.
    /// Not in the official DINO; false by default and for checkpoints written before it existed.
    public var shiftedPatches: Bool
    /// The LayerNorms' eps: 1e-6 in DINO's ViT; Hugging Face's ViT models say theirs in config.json (1e-12
    /// by default). Absent from checkpoints written before it existed, which are DINO's 1e-6.
    public var layerNormEpsilon: Float
    /// DINOv2's register tokens (Darcet et al. 2023): learned tokens between the class token and the
    /// patches, without position embedding, dropped from the outputs. 0 (DINO) or 4 (`_reg` models).
    public var registerCount: Int
    /// DINOv2's LayerScale (`ls1.gamma`, `ls2.gamma` scale each residual branch per channel): the gammas'
    /// initial value (`init_values`, 1e-5 in DINOv2's recipes), 0 for none (DINO).
    public var layerScaleInit: Float
    /// The blocks' feed-forward: `mlp` (fc1, GELU, fc2) or DINOv2's `swiglufused` (w12, SiLU gate, w3;
    /// ViT-g), whose hidden width is ⌈(2/3)·mlp_ratio·C⌉ to a multiple of 8.
    public var ffnLayer: String
    /// The position-embedding interpolation (`PositionEmbedding`): DINO's `scale_factor` offset (0.1), 0 for
    /// PyTorch's `size=` (Hugging Face, DINOv2 with registers); `interpolate_antialias` as DINOv2's.
    public var interpolateOffset: Float
    public var interpolateAntialias: Bool

    enum CodingKeys: String, CodingKey {
        case arch, imageSize = "img_size", patchSize = "patch_size", inChannels = "in_chans",
             embedDim = "embed_dim", depth, numHeads = "num_heads", mlpRatio = "mlp_ratio",
             shiftedPatches = "shifted_patches", layerNormEpsilon = "layer_norm_eps",
             registerCount = "num_register_tokens", layerScaleInit = "init_values", ffnLayer = "ffn_layer",
             interpolateOffset = "interpolate_offset", interpolateAntialias = "interpolate_antialias"
    }

    public init(arch: String, imageSize: Int, patchSize: Int, inChannels: Int, embedDim: Int, depth: Int,
                numHeads: Int, mlpRatio: Int = 4, shiftedPatches: Bool = false, layerNormEpsilon: Float = 1e-6,
                registerCount: Int = 0, layerScaleInit: Float = 0, ffnLayer: String = "mlp",
                interpolateOffset: Float = 0.1, interpolateAntialias: Bool = false) {
        self.arch = arch; self.imageSize = imageSize; self.patchSize = patchSize; self.inChannels = inChannels
        self.embedDim = embedDim; self.depth = depth; self.numHeads = numHeads; self.mlpRatio = mlpRatio
        self.shiftedPatches = shiftedPatches; self.layerNormEpsilon = layerNormEpsilon
        self.registerCount = registerCount; self.layerScaleInit = layerScaleInit
        self.ffnLayer = ffnLayer == "swiglu" ? "swiglufused" : ffnLayer
        self.interpolateOffset = interpolateOffset; self.interpolateAntialias = interpolateAntialias
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(arch, forKey: .arch); try c.encode(imageSize, forKey: .imageSize); try c.encode(patchSize, forKey: .patchSize)
        try c.encode(inChannels, forKey: .inChannels); try c.encode(embedDim, forKey: .embedDim); try c.encode(depth, forKey: .depth)
        try c.encode(numHeads, forKey: .numHeads); try c.encode(mlpRatio, forKey: .mlpRatio); try c.encode(shiftedPatches, forKey: .shiftedPatches)
        // Written only when it is not DINO's, so that files and the recipes' configs stay as they were.
        if layerNormEpsilon != 1e-6 { try c.encode(layerNormEpsilon, forKey: .layerNormEpsilon) }
        if registerCount != 0 { try c.encode(registerCount, forKey: .registerCount) }
        if layerScaleInit != 0 { try c.encode(layerScaleInit, forKey: .layerScaleInit) }
        if ffnLayer != "mlp" { try c.encode(ffnLayer, forKey: .ffnLayer) }
        if interpolateOffset != 0.1 { try c.encode(interpolateOffset, forKey: .interpolateOffset) }
        if interpolateAntialias { try c.encode(interpolateAntialias, forKey: .interpolateAntialias) }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(arch: try c.decode(String.self, forKey: .arch), imageSize: try c.decode(Int.self, forKey: .imageSize),
                  patchSize: try c.decode(Int.self, forKey: .patchSize), inChannels: try c.decode(Int.self, forKey: .inChannels),
                  embedDim: try c.decode(Int.self, forKey: .embedDim), depth: try c.decode(Int.self, forKey: .depth),
                  numHeads: try c.decode(Int.self, forKey: .numHeads), mlpRatio: try c.decode(Int.self, forKey: .mlpRatio),
                  shiftedPatches: try c.decodeIfPresent(Bool.self, forKey: .shiftedPatches) ?? false,
                  layerNormEpsilon: try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-6,
                  registerCount: try c.decodeIfPresent(Int.self, forKey: .registerCount) ?? 0,
                  layerScaleInit: try c.decodeIfPresent(Float.self, forKey: .layerScaleInit) ?? 0,
                  ffnLayer: try c.decodeIfPresent(String.self, forKey: .ffnLayer) ?? "mlp",
                  interpolateOffset: try c.decodeIfPresent(Float.self, forKey: .interpolateOffset) ?? 0.1,
                  interpolateAntialias: try c.decodeIfPresent(Bool.self, forKey: .interpolateAntialias) ?? false)
    }

    /// The official presets (vit_tiny 192/12/3, vit_small 384/12/6, vit_base 768/12/12, and DINOv2's
    /// vit_large 1024/24/16 and vit_giant2 1536/40/24 with SwiGLU), or a `custom` size when `embedDim`,
    /// `depth` and `numHeads` are given.
    public static func named(_ arch: String, imageSize: Int, patchSize: Int, inChannels: Int,
                             embedDim: Int? = nil, depth: Int? = nil, numHeads: Int? = nil,
                             shiftedPatches: Bool = false) throws -> ViTConfig {
        let preset: (Int, Int, Int)
        switch arch {
        case "vit_tiny": preset = (192, 12, 3)
        case "vit_small": preset = (384, 12, 6)
        case "vit_base": preset = (768, 12, 12)
        case "vit_large": preset = (1024, 24, 16)
        case "vit_giant2": preset = (1536, 40, 24)
        case "custom":
            guard let embedDim, let depth, let numHeads else {
                throw DinoError("arch 'custom' needs embed_dim, depth and num_heads")
            }
            preset = (embedDim, depth, numHeads)
        default:
            throw DinoError("unknown arch '\(arch)': use vit_tiny, vit_small, vit_base, vit_large, vit_giant2 or custom (with embed_dim, depth, num_heads)")
        }
        let config = ViTConfig(arch: arch, imageSize: imageSize, patchSize: patchSize, inChannels: inChannels,
                               embedDim: embedDim ?? preset.0, depth: depth ?? preset.1, numHeads: numHeads ?? preset.2,
                               shiftedPatches: shiftedPatches, ffnLayer: arch == "vit_giant2" ? "swiglufused" : "mlp")
        try config.validate()
        return config
    }

    /// Upper bounds on the sizes, far above any published ViT (ViT-g: 1536 wide, 40 blocks), so that a
    /// corrupt recipe or checkpoint is refused before its sizes are allocated.
    public static let maximumEmbedDim = 8192, maximumDepth = 128, maximumPatchSize = 256, maximumImageSize = 8192

    public func validate() throws {
        guard patchSize > 0, patchSize <= Self.maximumPatchSize, imageSize >= patchSize, imageSize <= Self.maximumImageSize else {
            throw DinoError("patch_size \(patchSize) does not fit img_size \(imageSize) (patch_size 1...\(Self.maximumPatchSize), img_size up to \(Self.maximumImageSize))")
        }
        guard inChannels == 1 || inChannels == 3 else { throw DinoError("in_chans must be 1 or 3, not \(inChannels)") }
        guard depth > 0 else { throw DinoError("depth must be at least 1, not \(depth)") }
        guard numHeads > 0 else { throw DinoError("num_heads must be at least 1, not \(numHeads)") }
        guard embedDim > 0, embedDim % numHeads == 0 else {
            throw DinoError("embed_dim \(embedDim) must be a positive multiple of num_heads \(numHeads)")
        }
        guard layerNormEpsilon > 0, layerNormEpsilon < 1 else { throw DinoError("layer_norm_eps must be in (0, 1), not \(layerNormEpsilon)") }
        guard embedDim <= Self.maximumEmbedDim, depth <= Self.maximumDepth, mlpRatio >= 1, mlpRatio <= 16 else {
            throw DinoError("embed_dim \(embedDim), depth \(depth) or mlp_ratio \(mlpRatio) is out of range (embed_dim up to \(Self.maximumEmbedDim), depth up to \(Self.maximumDepth), mlp_ratio 1...16)")
        }
        guard registerCount >= 0, registerCount <= 64 else { throw DinoError("num_register_tokens must be in 0...64, not \(registerCount)") }
        guard layerScaleInit >= 0, layerScaleInit <= 10 else { throw DinoError("init_values (LayerScale) must be in 0...10, not \(layerScaleInit)") }
        guard ffnLayer == "mlp" || ffnLayer == "swiglufused" else {
            throw DinoError("ffn_layer must be mlp or swiglufused (swiglu), not '\(ffnLayer)'")
        }
        guard interpolateOffset >= 0, interpolateOffset < 1 else { throw DinoError("interpolate_offset must be in [0, 1), not \(interpolateOffset)") }
    }

    /// A lower bound on the bytes of activations a pass over `batch` images of `tokens` tokens (class
    /// token included) holds: per kept block, the token rows (7 widths of the stream, norms, q/k/v and
    /// branches, 2 more with LayerScale, and the feed-forward's first-layer and hidden widths) and the attention probabilities
    /// (batch · heads · tokens²); training keeps all `depth` blocks, inference one.
    public func activationBytes(batch: Int, tokens: Int, keptBlocks: Int) -> Double {
        let rows = Double(batch) * Double(tokens)
        return 4 * Double(keptBlocks) * (rows * Double((usesLayerScale ? 9 : 7) * embedDim + firstLayerWidth + hiddenDim)
                                         + Double(batch) * Double(numHeads) * Double(tokens) * Double(tokens))
    }

    /// Refuses a pass whose activations alone (`activationBytes`) would not fit in this machine's memory,
    /// before anything is allocated; `advice` says which option lowers it.
    public func checkMemory(bytes: Double, advice: String) throws {
        let available = Double(ProcessInfo.processInfo.physicalMemory)
        guard bytes <= 0.9 * available else {
            throw DinoError(String(format: "this model and batch need at least %.1f GiB of activations, and this machine has %.1f GiB: %@",
                                   bytes / 1_073_741_824, available / 1_073_741_824, advice))
        }
    }

    /// Patches per side at the training resolution.
    public var gridSide: Int { imageSize / patchSize }
    public var headDim: Int { embedDim / numHeads }
    /// The feed-forward's hidden width H: mlp_ratio·C, or for SwiGLU DINOv2's `(int(2/3·mlp_ratio·C) + 7) // 8 · 8`.
    public var hiddenDim: Int { usesSwiGLU ? (embedDim * mlpRatio * 2 / 3 + 7) / 8 * 8 : embedDim * mlpRatio }
    public var usesSwiGLU: Bool { ffnLayer == "swiglufused" }
    public var usesLayerScale: Bool { layerScaleInit > 0 }
    /// The feed-forward's first layer's output width: H, or 2H for SwiGLU (both halves of w12).
    public var firstLayerWidth: Int { usesSwiGLU ? 2 * hiddenDim : hiddenDim }
    /// The class token and the registers come before the patches: token k ≥ this is patch k − this.
    public var firstPatchToken: Int { 1 + registerCount }
    /// Input planes of the patch embedding: `in_chans`, or `5·in_chans` with shifted patches.
    public var patchPlanes: Int { inChannels * (shiftedPatches ? 5 : 1) }
    /// The diagonal shift of the shifted copies: half a patch (0 without shifted patches).
    public var patchShift: Int { shiftedPatches ? patchSize / 2 : 0 }
}

/// The DINO projection head: an MLP (`layerCount` Linear layers, GELU between them) to a bottleneck,
/// L2 normalization, then a weight-normalized Linear to `outDim` prototypes (official `DINOHead`).
public struct HeadConfig: Codable, Equatable, Sendable {
    public var inDim: Int
    public var outDim: Int
    public var hiddenDim: Int
    public var bottleneckDim: Int
    public var layerCount: Int
    /// Fix the weight-norm scale g at 1 (not trained), as `norm_last_layer=True`.
    public var normLastLayer: Bool

    enum CodingKeys: String, CodingKey {
        case inDim = "in_dim", outDim = "out_dim", hiddenDim = "hidden_dim", bottleneckDim = "bottleneck_dim",
             layerCount = "nlayers", normLastLayer = "norm_last_layer"
    }

    public init(inDim: Int, outDim: Int, hiddenDim: Int = 2048, bottleneckDim: Int = 256, layerCount: Int = 3,
                normLastLayer: Bool = true) {
        self.inDim = inDim; self.outDim = outDim; self.hiddenDim = hiddenDim; self.bottleneckDim = bottleneckDim
        self.layerCount = layerCount; self.normLastLayer = normLastLayer
    }

    public func validate() throws {
        guard outDim > 0, hiddenDim > 0, bottleneckDim > 0, layerCount >= 1 else {
            throw DinoError("head sizes must be positive (out_dim \(outDim), hidden \(hiddenDim), bottleneck \(bottleneckDim), nlayers \(layerCount))")
        }
        guard outDim <= 1 << 20, hiddenDim <= 1 << 15, bottleneckDim <= 1 << 14, layerCount <= 16, inDim > 0, inDim <= 1 << 14 else {
            throw DinoError("head sizes are out of range (out_dim up to 1048576, hidden up to 32768, bottleneck up to 16384, nlayers up to 16)")
        }
    }
}
