import DinoKernels

/// What one block saves in its forward pass for the backward pass. Shapes with T = B·N tokens, C channels.
public final class BlockActivations {
    public let norm1: FloatBuffer, norm1Mean: FloatBuffer, norm1Rstd: FloatBuffer   // (T, C), (T), (T)
    public let qkv: FloatBuffer                                                     // (T, 3C)
    public let probabilities: FloatBuffer                                           // (B, H, N, N)
    public let attention: FloatBuffer                                               // (T, C), before proj
    public let middle: FloatBuffer                                                  // (T, C), x + attn branch
    public let norm2: FloatBuffer, norm2Mean: FloatBuffer, norm2Rstd: FloatBuffer   // (T, C), (T), (T)
    public let hidden: FloatBuffer, activated: FloatBuffer                          // (T, 4C): fc1 out, GELU out

    init(batch: Int, tokens: Int, config c: ViTConfig) {
        let t = batch * tokens, d = c.embedDim
        norm1 = FloatBuffer(count: t * d); norm1Mean = FloatBuffer(count: t); norm1Rstd = FloatBuffer(count: t)
        qkv = FloatBuffer(count: t * 3 * d)
        probabilities = FloatBuffer(count: batch * c.numHeads * tokens * tokens)
        attention = FloatBuffer(count: t * d); middle = FloatBuffer(count: t * d)
        norm2 = FloatBuffer(count: t * d); norm2Mean = FloatBuffer(count: t); norm2Rstd = FloatBuffer(count: t)
        hidden = FloatBuffer(count: t * c.hiddenDim); activated = FloatBuffer(count: t * c.hiddenDim)
    }
}

/// The activation arena of one ViT forward pass at one input size (llm.c's `ActivationTensors`):
/// allocated once per (batch, height, width) and reused every step, so a step allocates nothing.
///
/// With `storesBackwardState == false` (teacher, feature extraction) the blocks share one set of
/// buffers and the residual stream ping-pongs between two, so memory does not grow with depth.
public final class ViTActivations {
    public let config: ViTConfig
    public let batch: Int, imageHeight: Int, imageWidth: Int
    public let gridHeight: Int, gridWidth: Int
    /// Tokens per image: the class token plus gridHeight·gridWidth patches.
    public let tokens: Int
    public let storesBackwardState: Bool

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
    var patchMask: [UInt8] = []         // (B·np) of the latest forward, empty when nothing was masked

    // Backward scratch, allocated on first use.
    lazy var dStream = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dBranch = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dAttention = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dQKV = FloatBuffer(count: batch * tokens * 3 * config.embedDim)
    lazy var dNorm = FloatBuffer(count: batch * tokens * config.embedDim)
    lazy var dHidden = FloatBuffer(count: batch * tokens * config.hiddenDim)
    lazy var dPositions = FloatBuffer(count: tokens * config.embedDim)

    public init(config: ViTConfig, batch: Int, imageHeight: Int, imageWidth: Int, storesBackwardState: Bool) {
        self.config = config
        self.batch = batch; self.imageHeight = imageHeight; self.imageWidth = imageWidth
        self.storesBackwardState = storesBackwardState
        let p = config.patchSize, d = config.embedDim
        gridHeight = imageHeight / p; gridWidth = imageWidth / p
        let np = gridHeight * gridWidth
        tokens = np + 1
        let t = batch * tokens
        patches = FloatBuffer(count: batch * np * config.patchPlanes * p * p)
        patchTokens = FloatBuffer(count: batch * np * d)
        positionGrid = FloatBuffer(count: np * d)
        let side = config.gridSide
        if PositionEmbedding.isIdentity(side: side, targetHeight: gridHeight, targetWidth: gridWidth) {
            interpolation = nil
        } else {
            interpolation = FloatBuffer(PositionEmbedding.interpolationMatrix(
                side: side, targetHeight: gridHeight, targetWidth: gridWidth))
        }
        stream = (0..<(storesBackwardState ? config.depth + 1 : 2)).map { _ in FloatBuffer(count: t * d) }
        let tokenCount = tokens
        blocks = (0..<(storesBackwardState ? config.depth : 1)).map { _ in
            BlockActivations(batch: batch, tokens: tokenCount, config: config)
        }
        branch = FloatBuffer(count: t * d)
        normalized = FloatBuffer(count: t * d)
        normMean = FloatBuffer(count: t); normRstd = FloatBuffer(count: t)
    }

    func streamBuffer(_ index: Int) -> FloatBuffer { storesBackwardState ? stream[index] : stream[index % 2] }
    func block(_ index: Int) -> BlockActivations { storesBackwardState ? blocks[index] : blocks[0] }

    /// The last block's attention probabilities `(B, H, N, N)` from the latest forward pass.
    public var lastAttention: FloatBuffer { block(config.depth - 1).probabilities }

    /// Copies the CLS token of each image after the final norm into `output` `(B, C)`.
    public func copyClassTokens(to output: UnsafeMutablePointer<Float>) {
        let d = config.embedDim
        for b in 0..<batch { (output + b * d).update(from: normalized.pointer + b * tokens * d, count: d) }
    }

    /// Writes each image's mean patch token after the final norm, `(1/np) Σ_p token_p`, into `output`
    /// `(B, C)` (the official `eval_linear.py` `--avgpool_patchtokens` feature).
    public func copyMeanPatchTokens(to output: UnsafeMutablePointer<Float>) {
        let d = config.embedDim, np = tokens - 1
        for b in 0..<batch {
            let mean = output + b * d
            mean.update(repeating: 0, count: d)
            for p in 1..<tokens {
                let token = normalized.pointer + (b * tokens + p) * d
                for j in 0..<d { mean[j] += token[j] }
            }
            for j in 0..<d { mean[j] /= Float(np) }
        }
    }

    /// Copies the patch tokens after the final norm into `output` `(B, np, C)`.
    public func copyPatchTokens(to output: UnsafeMutablePointer<Float>) {
        let d = config.embedDim, np = tokens - 1
        for b in 0..<batch {
            (output + b * np * d).update(from: normalized.pointer + (b * tokens + 1) * d, count: np * d)
        }
    }
}
