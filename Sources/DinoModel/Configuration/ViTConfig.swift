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

    enum CodingKeys: String, CodingKey {
        case arch, imageSize = "img_size", patchSize = "patch_size", inChannels = "in_chans",
             embedDim = "embed_dim", depth, numHeads = "num_heads", mlpRatio = "mlp_ratio",
             shiftedPatches = "shifted_patches", layerNormEpsilon = "layer_norm_eps"
    }

    public init(arch: String, imageSize: Int, patchSize: Int, inChannels: Int, embedDim: Int, depth: Int,
                numHeads: Int, mlpRatio: Int = 4, shiftedPatches: Bool = false, layerNormEpsilon: Float = 1e-6) {
        self.arch = arch; self.imageSize = imageSize; self.patchSize = patchSize; self.inChannels = inChannels
        self.embedDim = embedDim; self.depth = depth; self.numHeads = numHeads; self.mlpRatio = mlpRatio
        self.shiftedPatches = shiftedPatches; self.layerNormEpsilon = layerNormEpsilon
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(arch, forKey: .arch); try c.encode(imageSize, forKey: .imageSize); try c.encode(patchSize, forKey: .patchSize)
        try c.encode(inChannels, forKey: .inChannels); try c.encode(embedDim, forKey: .embedDim); try c.encode(depth, forKey: .depth)
        try c.encode(numHeads, forKey: .numHeads); try c.encode(mlpRatio, forKey: .mlpRatio); try c.encode(shiftedPatches, forKey: .shiftedPatches)
        // Written only when it is not DINO's, so that files and the recipes' configs stay as they were.
        if layerNormEpsilon != 1e-6 { try c.encode(layerNormEpsilon, forKey: .layerNormEpsilon) }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(arch: try c.decode(String.self, forKey: .arch), imageSize: try c.decode(Int.self, forKey: .imageSize),
                  patchSize: try c.decode(Int.self, forKey: .patchSize), inChannels: try c.decode(Int.self, forKey: .inChannels),
                  embedDim: try c.decode(Int.self, forKey: .embedDim), depth: try c.decode(Int.self, forKey: .depth),
                  numHeads: try c.decode(Int.self, forKey: .numHeads), mlpRatio: try c.decode(Int.self, forKey: .mlpRatio),
                  shiftedPatches: try c.decodeIfPresent(Bool.self, forKey: .shiftedPatches) ?? false,
                  layerNormEpsilon: try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-6)
    }

    /// The official presets (vit_tiny 192/12/3, vit_small 384/12/6, vit_base 768/12/12), or a
    /// `custom` size when `embedDim`, `depth` and `numHeads` are given.
    public static func named(_ arch: String, imageSize: Int, patchSize: Int, inChannels: Int,
                             embedDim: Int? = nil, depth: Int? = nil, numHeads: Int? = nil,
                             shiftedPatches: Bool = false) throws -> ViTConfig {
        let preset: (Int, Int, Int)
        switch arch {
        case "vit_tiny": preset = (192, 12, 3)
        case "vit_small": preset = (384, 12, 6)
        case "vit_base": preset = (768, 12, 12)
        case "custom":
            guard let embedDim, let depth, let numHeads else {
                throw DinoError("arch 'custom' needs embed_dim, depth and num_heads")
            }
            preset = (embedDim, depth, numHeads)
        default:
            throw DinoError("unknown arch '\(arch)': use vit_tiny, vit_small, vit_base or custom (with embed_dim, depth, num_heads)")
        }
        let config = ViTConfig(arch: arch, imageSize: imageSize, patchSize: patchSize, inChannels: inChannels,
                               embedDim: embedDim ?? preset.0, depth: depth ?? preset.1, numHeads: numHeads ?? preset.2,
                               shiftedPatches: shiftedPatches)
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
        guard embedDim > 0, depth > 0, numHeads > 0, embedDim % numHeads == 0 else {
            throw DinoError("embed_dim \(embedDim) must be a positive multiple of num_heads \(numHeads)")
        }
        guard layerNormEpsilon > 0, layerNormEpsilon < 1 else { throw DinoError("layer_norm_eps must be in (0, 1), not \(layerNormEpsilon)") }
        guard embedDim <= Self.maximumEmbedDim, depth <= Self.maximumDepth, mlpRatio >= 1, mlpRatio <= 16 else {
            throw DinoError("embed_dim \(embedDim), depth \(depth) or mlp_ratio \(mlpRatio) is out of range (embed_dim up to \(Self.maximumEmbedDim), depth up to \(Self.maximumDepth), mlp_ratio 1...16)")
        }
    }

    /// A lower bound on the bytes of activations a pass over `batch` images of `tokens` tokens (class
    /// token included) holds: per kept block, the token rows (7 widths of the stream, norms, q/k/v and
    /// branches, and 2 of the MLP's hidden width) and the attention probabilities
    /// (batch · heads · tokens²); training keeps all `depth` blocks, inference one.
    public func activationBytes(batch: Int, tokens: Int, keptBlocks: Int) -> Double {
        let rows = Double(batch) * Double(tokens)
        return 4 * Double(keptBlocks) * (rows * Double(7 * embedDim + 2 * hiddenDim)
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
    public var hiddenDim: Int { embedDim * mlpRatio }
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
