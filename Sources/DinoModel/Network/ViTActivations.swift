import DinoKernels

/// What one block saves in its forward pass for the backward pass. Shapes with T = B·N tokens, C channels.
public final class BlockActivations {
    public let norm1: FloatBuffer, norm1Mean: FloatBuffer, norm1Rstd: FloatBuffer   // (T, C), (T), (T)
    public let qkv: FloatBuffer                                                     // (T, 3C)
    public let probabilities: FloatBuffer                                           // (B, H, N, N)
    public let attention: FloatBuffer                                               // (T, C), before proj
    public let middle: FloatBuffer                                                  // (T, C), x + attn branch
    public let norm2: FloatBuffer, norm2Mean: FloatBuffer, norm2Rstd: FloatBuffer   // (T, C), (T), (T)
    public let hidden: FloatBuffer, activated: FloatBuffer                          // (T, H) fc1 out (2H: w12), (T, H) activation
    /// With LayerScale: the attention and feed-forward branches before γ (T, C), for the gammas' gradients.
    let attentionBranch: FloatBuffer?, mlpBranch: FloatBuffer?

    /// `rowsAfterAttention`: T, or B for a last block that computes only the class token's rows
    /// (attention output, middle, norm2, hidden and activated then hold one row per image).
    init(batch: Int, tokens: Int, config c: ViTConfig, rowsAfterAttention: Int? = nil) {
        let t = batch * tokens, d = c.embedDim, r = rowsAfterAttention ?? t
        norm1 = FloatBuffer(count: t * d); norm1Mean = FloatBuffer(count: t); norm1Rstd = FloatBuffer(count: t)
        qkv = FloatBuffer(count: t * 3 * d)
        probabilities = FloatBuffer(count: batch * c.numHeads * tokens * tokens)
        attention = FloatBuffer(count: r * d); middle = FloatBuffer(count: r * d)
        norm2 = FloatBuffer(count: r * d); norm2Mean = FloatBuffer(count: r); norm2Rstd = FloatBuffer(count: r)
        hidden = FloatBuffer(count: r * c.firstLayerWidth); activated = FloatBuffer(count: r * c.hiddenDim)
        attentionBranch = c.usesLayerScale ? FloatBuffer(count: r * d) : nil
        mlpBranch = c.usesLayerScale ? FloatBuffer(count: r * d) : nil
    }
}

/// The activation arena of one ViT forward pass at one input size (llm.c's `ActivationTensors`):
/// allocated once per (batch, height, width) and reused every step, so a step allocates nothing.
///
/// With `storesBackwardState == false` (teacher, feature extraction) the blocks share one set of
/// buffers and the residual stream ping-pongs between two, so memory does not grow with depth.
///
/// With `classTokenOnly` the last block computes only what its CLS output depends on: the keys and
/// values of every token, but the query, attention, projection, MLP and final norm of the class token
/// alone (each patch token's last-block output feeds nothing when only CLS is read: the DINO head,
/// k-NN features, the last layer's CLS attention). The CLS outputs are those of the full pass up to
/// the rounding of differently shaped products; 10/12 of the last block's linear work is skipped
/// (7% of a 12-block backbone's FLOPs, a fifth of a 4-block one's).
/// The patch rows of `normalized`, of the last stream and of the last attention's rows other than
/// the first are then not written.
public final class ViTActivations {
    public let config: ViTConfig
    public let batch: Int, imageHeight: Int, imageWidth: Int
    public let gridHeight: Int, gridWidth: Int
    /// Tokens per image: the class token, the registers, then gridHeight·gridWidth patches.
    public let tokens: Int
    /// Patches per image (gridHeight·gridWidth): tokens `config.firstPatchToken ..< tokens`.
    public var patchCount: Int { tokens - config.firstPatchToken }
    public let storesBackwardState: Bool
    public let classTokenOnly: Bool

    let patches: FloatBuffer            // (B·np, planes·p·p), planes = Cin (or 5·Cin, shifted)
    let patchTokens: FloatBuffer        // (B·np, C)
    let positionGrid: FloatBuffer       // (np, C), interpolated when the grid differs
    let interpolation: FloatBuffer?     // (np, S²)
    let stream: [FloatBuffer]           // residual stream (T, C): depth+1 buffers, or 2
    let blocks: [BlockActivations]
    let branch: FloatBuffer             // (T, C) scratch: proj / fc2 outputs before the residual add
    /// The final LayerNorm over all tokens (T, C): the CLS rows are the backbone's output.
    public let normalized: FloatBuffer
    let normMean: FloatBuffer, normRstd: FloatBuffer
    var dropScales: [[Float]] = []      // per block: attention branch, then MLP branch (B each)
    /// Per block and branch as `dropScales`: the images that ran the branch when it dropped some (they ran
    /// it packed, in this order: `VisionTransformer.skipsDroppedImages`), nil when the whole batch ran it.
    var keptImages: [[Int]?] = []
    /// (T, C) scratch: the kept images' rows of a branch input, packed.
    lazy var gathered = FloatBuffer(count: batch * tokens * config.embedDim)
    var patchMask: [UInt8] = []         // (B·np) of the latest forward, empty when nothing was masked
    // The class-token-only last block: its input's CLS rows, its output and the final norm (B, C) each.
    let classInput: FloatBuffer, classOutput: FloatBuffer, classNormalized: FloatBuffer

    // Backward scratch, allocated on first use.
    lazy var dStream = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dBranch = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dAttention = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dQKV = FloatBuffer(count: batch * tokens * 3 * config.embedDim)
    lazy var dNorm = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dHidden = FloatBuffer(count: batch * tokens * config.firstLayerWidth)
    lazy var dActivated = FloatBuffer(count: batch * tokens * config.hiddenDim)
    lazy var dPositions = FloatBuffer(count: tokens * config.embedDim)
    lazy var dClass = FloatBuffer(count: batch * config.embedDim)

    public init(config: ViTConfig, batch: Int, imageHeight: Int, imageWidth: Int, storesBackwardState: Bool,
                classTokenOnly: Bool = false) {
        self.config = config
        self.batch = batch; self.imageHeight = imageHeight; self.imageWidth = imageWidth
        self.storesBackwardState = storesBackwardState
        self.classTokenOnly = classTokenOnly
        let p = config.patchSize, d = config.embedDim
        gridHeight = imageHeight / p; gridWidth = imageWidth / p
        let np = gridHeight * gridWidth
        tokens = np + config.firstPatchToken
        let t = batch * tokens
        patches = FloatBuffer(count: batch * np * config.patchPlanes * p * p)
        patchTokens = FloatBuffer(count: batch * np * d)
        positionGrid = FloatBuffer(count: np * d)
        let side = config.gridSide
        if PositionEmbedding.isIdentity(side: side, targetHeight: gridHeight, targetWidth: gridWidth) {
            interpolation = nil
        } else {
            interpolation = FloatBuffer(PositionEmbedding.interpolationMatrix(
                side: side, targetHeight: gridHeight, targetWidth: gridWidth, offset: Double(config.interpolateOffset),
                antialias: config.interpolateAntialias))
        }
        stream = (0..<(storesBackwardState ? config.depth + 1 : 2)).map { _ in FloatBuffer(count: t * d) }
        let tokenCount = tokens, depth = config.depth
        blocks = (0..<(storesBackwardState ? depth : 1)).map { l in
            BlockActivations(batch: batch, tokens: tokenCount, config: config,
                             rowsAfterAttention: storesBackwardState && classTokenOnly && l == depth - 1 ? batch : nil)
        }
        branch = FloatBuffer(count: t * d)
        normalized = FloatBuffer(count: t * d)
        normMean = FloatBuffer(count: t); normRstd = FloatBuffer(count: t)
        let classRows = classTokenOnly ? batch * d : 0
        classInput = FloatBuffer(count: classRows); classOutput = FloatBuffer(count: classRows)
        classNormalized = FloatBuffer(count: classRows)
    }

    func streamBuffer(_ index: Int) -> FloatBuffer { storesBackwardState ? stream[index] : stream[index % 2] }
    func block(_ index: Int) -> BlockActivations { storesBackwardState ? blocks[index] : blocks[0] }

    /// The last block's attention probabilities `(B, H, N, N)` from the latest forward pass (only the
    /// class token's row 0 of each block with `classTokenOnly`).
    public var lastAttention: FloatBuffer { block(config.depth - 1).probabilities }

    /// Copies the CLS token of each image after the final norm into `output` `(B, C)`.
    public func copyClassTokens(to output: UnsafeMutablePointer<Float>) {
        let d = config.embedDim
        for b in 0..<batch { (output + b * d).update(from: normalized.pointer + b * tokens * d, count: d) }
    }

    /// Writes each image's mean patch token after the final norm, `(1/np) Σ_p token_p`, into `output`
    /// `(B, C)` (the official `eval_linear.py` `--avgpool_patchtokens` feature; registers excluded).
    public func copyMeanPatchTokens(to output: UnsafeMutablePointer<Float>) {
        precondition(!classTokenOnly, "the patch tokens of a class-token-only pass are not computed")
        let d = config.embedDim, np = patchCount
        for b in 0..<batch {
            let mean = output + b * d
            mean.update(repeating: 0, count: d)
            for p in config.firstPatchToken..<tokens {
                let token = normalized.pointer + (b * tokens + p) * d
                for j in 0..<d { mean[j] += token[j] }
            }
            for j in 0..<d { mean[j] /= Float(np) }
        }
    }

    /// Copies the patch tokens after the final norm into `output` `(B, np, C)` (registers excluded).
    public func copyPatchTokens(to output: UnsafeMutablePointer<Float>) {
        precondition(!classTokenOnly, "the patch tokens of a class-token-only pass are not computed")
        let d = config.embedDim, np = patchCount
        for b in 0..<batch {
            (output + b * np * d).update(from: normalized.pointer + (b * tokens + config.firstPatchToken) * d, count: np * d)
        }
    }
}
