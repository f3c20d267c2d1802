import DinoKernels

/// Offsets of one block's tensors in the flat parameter buffer.
struct BlockOffsets {
    let norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias: Int
    /// The feed-forward's first and second layers: `mlp.fc1`/`mlp.fc2`, or SwiGLU's `mlp.w12`/`mlp.w3`.
    let norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: Int
    /// DINOv2's LayerScale gammas of the attention and feed-forward branches, when the model has them.
    let layerScale1, layerScale2: Int?

    init(_ layout: ParameterLayout, block i: Int, prefix: String, config: ViTConfig) {
        func o(_ s: String) -> Int { layout.offset("\(prefix)blocks.\(i).\(s)") }
        let (first, second) = ParameterLayout.feedForwardNames(config)
        norm1Weight = o("norm1.weight"); norm1Bias = o("norm1.bias")
        qkvWeight = o("attn.qkv.weight"); qkvBias = o("attn.qkv.bias")
        projWeight = o("attn.proj.weight"); projBias = o("attn.proj.bias")
        norm2Weight = o("norm2.weight"); norm2Bias = o("norm2.bias")
        fc1Weight = o(first + ".weight"); fc1Bias = o(first + ".bias")
        fc2Weight = o(second + ".weight"); fc2Bias = o(second + ".bias")
        layerScale1 = config.usesLayerScale ? o("ls1.gamma") : nil
        layerScale2 = config.usesLayerScale ? o("ls2.gamma") : nil
    }
}

/// The DINO Vision Transformer backbone (official `VisionTransformer` with `num_classes=0`):
/// patch embedding, CLS token, (interpolated) position embedding, `depth` pre-norm blocks
/// `x + drop_path(attn(norm1(x)))`, `x + drop_path(mlp(norm2(x)))`, and a final LayerNorm.
/// DINOv2's backbone (`DinoVisionTransformer`) adds register tokens after the class token, LayerScale
/// on each branch (`x + drop_path(ls1(attn(norm1(x))))`) and optionally the SwiGLU feed-forward.
///
/// It owns no storage: parameters and gradients are flat buffers described by a `ParameterLayout`
/// that contains the backbone's names (optionally under a prefix); activations live in a `ViTActivations`.
public struct VisionTransformer: Sendable {
    public let config: ViTConfig
    let clsToken, positionEmbedding, patchWeight, patchBias, normWeight, normBias: Int
    /// DINOv2's `register_tokens` `(1, R, C)`, when the model has registers.
    let registerTokens: Int?
    /// DINOv2's `mask_token` `(1, C)`, present when the layout has one (masked-patch training).
    let maskToken: Int?
    let blocks: [BlockOffsets]
    /// With drop path, run each branch only on the images that keep it (packed into consecutive rows):
    /// the same outputs and gradients as running it on the whole batch and multiplying by 0, up to the
    /// rounding of differently shaped products, for `rate·l/(depth−1)` less work in block l on average.
    /// `false` runs every branch on the whole batch, as the official code does (the tests' reference).
    public var skipsDroppedImages = true

    public init(config: ViTConfig, layout: ParameterLayout, prefix: String = "") {
        self.config = config
        clsToken = layout.offset(prefix + "cls_token"); positionEmbedding = layout.offset(prefix + "pos_embed")
        patchWeight = layout.offset(prefix + "patch_embed.proj.weight")
        patchBias = layout.offset(prefix + "patch_embed.proj.bias")
        normWeight = layout.offset(prefix + "norm.weight"); normBias = layout.offset(prefix + "norm.bias")
        maskToken = layout.entry(prefix + "mask_token")?.offset
        registerTokens = config.registerCount > 0 ? layout.offset(prefix + "register_tokens") : nil
        blocks = (0..<config.depth).map { BlockOffsets(layout, block: $0, prefix: prefix, config: config) }
    }

    /// - Parameter classTokenOnly: compute only what the CLS output needs in the last block (see `ViTActivations`):
    ///   for callers that read nothing but the class token (the DINO head, CLS features, CLS attention).
    public func makeActivations(batch: Int, imageHeight: Int, imageWidth: Int, training: Bool,
                                classTokenOnly: Bool = false) -> ViTActivations {
        ViTActivations(config: config, batch: batch, imageHeight: imageHeight, imageWidth: imageWidth,
                       storesBackwardState: training, classTokenOnly: classTokenOnly)
    }

    /// Runs the backbone on `images` `(B, Cin, H, W)`; the result is `activations.normalized` `(B, N, C)`,
    /// tokens in the order class, registers, patches.
    /// - Parameters:
    ///   - dropPathRate: the student's stochastic-depth rate (0 for teacher and evaluation); block l
    ///     drops with probability `rate·l/(depth−1)` (`linspace(0, rate, depth)`).
    ///   - generator: draws the drop-path masks; required when the rate is positive.
    ///   - patchMask: `(B, np)`, nonzero where a patch's embedding is replaced by `mask_token` before the
    ///     position embedding is added (DINOv2's `prepare_tokens_with_masks`); needs a layout with a mask token.
    ///   - blockOutput: called after block l with its output stream `(B, N, C)` (before the final norm),
    ///     which the next blocks may overwrite (evaluation activations keep only two streams).
    public func forward(parameters p: UnsafePointer<Float>, images: UnsafePointer<Float>, activations a: ViTActivations,
                        dropPathRate: Float = 0, generator: inout RandomGenerator, patchMask: UnsafePointer<UInt8>? = nil,
                        blockOutput: ((Int, UnsafePointer<Float>) -> Void)? = nil) {
        let c = config, d = c.embedDim, n = a.tokens, b = a.batch, t = b * n, first = c.firstPatchToken, np = n - first
        PatchEmbedding.forward(tokens: a.patchTokens.pointer, patches: a.patches.pointer, images: images,
                               weight: p + patchWeight, bias: p + patchBias, batch: b, channels: c.inChannels,
                               height: a.imageHeight, width: a.imageWidth, patchSize: c.patchSize, embedDim: d,
                               shift: c.patchShift)
        let grid: UnsafePointer<Float>
        if let matrix = a.interpolation {
            PositionEmbedding.forward(output: a.positionGrid.pointer, grid: p + positionEmbedding + d,
                                      matrix: matrix.pointer, targetCount: np, sourceCount: c.gridSide * c.gridSide,
                                      channels: d)
            grid = UnsafePointer(a.positionGrid.pointer)
        } else {
            grid = p + positionEmbedding + d
        }
        let x0 = a.streamBuffer(0).pointer
        if let patchMask {
            guard let maskToken else { preconditionFailure("a patch mask needs a layout with mask_token") }
            a.patchMask = Array(UnsafeBufferPointer(start: patchMask, count: b * np))
            let token = p + maskToken
            for i in 0..<(b * np) where patchMask[i] != 0 { (a.patchTokens.pointer + i * d).update(from: token, count: d) }
        } else {
            a.patchMask = []
        }
        Parallel.forEachRange(b) { images in
            for image in images {
                let row = x0 + image * n * d
                for i in 0..<d { row[i] = p[clsToken + i] + p[positionEmbedding + i] }
                if let registerTokens { (row + d).update(from: p + registerTokens, count: c.registerCount * d) }
                for k in 0..<np {
                    let out = row + (first + k) * d, source = a.patchTokens.pointer + (image * np + k) * d, pos = grid + k * d
                    for i in 0..<d { out[i] = source[i] + pos[i] }
                }
            }
        }
        a.dropScales = []; a.keptImages = []
        /// output = residual + DropPath(input·weightᵀ + bias) `(R, D)`, R = T rows, or B in a class-token-only
        /// last block. Without drop path the residual is added in the product's initialization (one pass
        /// over the output); with it, the branch is scaled per image first, so it goes through `branch`.
        /// With LayerScale `gamma`, the product goes to `stored` (what the gamma's gradient needs) and
        /// γ⊙product to `branch`.
        func residualBranch(output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, input: UnsafePointer<Float>,
                            weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, inputSize: Int,
                            scales: [Float], gamma: Int?, stored: FloatBuffer?) {
            if let gamma, let stored {
                Linear.forward(output: stored.pointer, input: input, weight: weight, bias: bias, rows: rows, inputSize: inputSize,
                               outputSize: d)
                LayerScale.forward(output: a.branch.pointer, input: stored.pointer, gamma: p + gamma, rows: rows, columns: d)
                if !scales.isEmpty { DropPath.apply(a.branch.pointer, scales: scales, elementsPerSample: rows / b * d) }
                Residual.add(output: output, residual, a.branch.pointer, count: rows * d)
            } else if scales.isEmpty {
                Linear.forward(output: output, input: input, weight: weight, bias: bias, rows: rows, inputSize: inputSize,
                               outputSize: d, residual: residual)
            } else {
                Linear.forward(output: a.branch.pointer, input: input, weight: weight, bias: bias, rows: rows,
                               inputSize: inputSize, outputSize: d)
                DropPath.apply(a.branch.pointer, scales: scales, elementsPerSample: rows / b * d)
                Residual.add(output: output, residual, a.branch.pointer, count: rows * d)
            }
        }
        /// output = residual, plus scale·(input·weightᵀ + bias) on the rows of the kept images only: a
        /// branch that some images drop ran on the kept images alone, `rowsPerImage` consecutive rows each.
        func keptBranch(output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, input: UnsafePointer<Float>,
                        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, kept: [Int], scales: [Float],
                        rowsPerImage: Int, inputSize: Int, gamma: Int?, stored: FloatBuffer?) {
            let span = rowsPerImage * d, rows = kept.count * rowsPerImage
            guard !kept.isEmpty else { output.update(from: residual, count: b * span); return }
            if let gamma, let stored {
                Linear.forward(output: stored.pointer, input: input, weight: weight, bias: bias, rows: rows,
                               inputSize: inputSize, outputSize: d)
                LayerScale.forward(output: a.branch.pointer, input: stored.pointer, gamma: p + gamma, rows: rows, columns: d)
            } else {
                Linear.forward(output: a.branch.pointer, input: input, weight: weight, bias: bias, rows: rows,
                               inputSize: inputSize, outputSize: d)
            }
            residualPlusImages(output, residual: residual, from: a.branch.pointer, images: kept, span: span, scales: scales,
                               batch: b)
        }
        for l in 0..<c.depth {
            let o = blocks[l], s = a.block(l)
            let x = a.streamBuffer(l).pointer, out = a.streamBuffer(l + 1).pointer
            var scales: ([Float], [Float]) = ([], [])
            if dropPathRate > 0 && c.depth > 1 {
                let keep = 1 - dropPathRate * Float(l) / Float(c.depth - 1)
                let first = (0..<b).map { _ in generator.nextFloat() }, second = (0..<b).map { _ in generator.nextFloat() }
                scales = (DropPath.scales(keepProbability: keep, uniforms: first),
                          DropPath.scales(keepProbability: keep, uniforms: second))
            }
            a.dropScales.append(scales.0); a.dropScales.append(scales.1)
            let keptImages = skipsDroppedImages ? (DropPath.keptImages(scales.0), DropPath.keptImages(scales.1)) : (nil, nil)
            a.keptImages.append(keptImages.0); a.keptImages.append(keptImages.1)
            // Keys and values need every token; after attention a class-token-only last block has one row per image.
            let classOnly = a.classTokenOnly && l == c.depth - 1, rowsPerImage = classOnly ? 1 : n, rows = b * rowsPerImage
            if classOnly {
                for image in 0..<b { (a.classInput.pointer + image * d).update(from: x + image * n * d, count: d) }
            }
            let residual = classOnly ? UnsafePointer(a.classInput.pointer) : UnsafePointer(x)

            // Attention branch. Images that drop it skip it: the kept ones are gathered into consecutive rows.
            if let kept = keptImages.0 {
                gatherImages(a.gathered.pointer, from: x, images: kept, span: n * d)
                attentionCore(parameters: p, block: o, activations: s, input: a.gathered.pointer, images: kept.count,
                              tokens: n, classOnly: classOnly)
                keptBranch(output: s.middle.pointer, residual: residual, input: s.attention.pointer,
                           weight: p + o.projWeight, bias: p + o.projBias, kept: kept, scales: scales.0,
                           rowsPerImage: rowsPerImage, inputSize: d, gamma: o.layerScale1, stored: s.attentionBranch)
            } else {
                attentionCore(parameters: p, block: o, activations: s, input: x, images: b, tokens: n, classOnly: classOnly)
                residualBranch(output: s.middle.pointer, residual: residual, input: s.attention.pointer,
                               weight: p + o.projWeight, bias: p + o.projBias, rows: rows, inputSize: d, scales: scales.0,
                               gamma: o.layerScale1, stored: s.attentionBranch)
            }

            // MLP branch, the same way.
            let blockOut = classOnly ? a.classOutput.pointer : out
            if let kept = keptImages.1 {
                gatherImages(a.gathered.pointer, from: s.middle.pointer, images: kept, span: rowsPerImage * d)
                mlpCore(parameters: p, block: o, activations: s, input: a.gathered.pointer, rows: kept.count * rowsPerImage)
                keptBranch(output: blockOut, residual: s.middle.pointer, input: s.activated.pointer,
                           weight: p + o.fc2Weight, bias: p + o.fc2Bias, kept: kept, scales: scales.1,
                           rowsPerImage: rowsPerImage, inputSize: c.hiddenDim, gamma: o.layerScale2, stored: s.mlpBranch)
            } else {
                mlpCore(parameters: p, block: o, activations: s, input: s.middle.pointer, rows: rows)
                residualBranch(output: blockOut, residual: s.middle.pointer, input: s.activated.pointer,
                               weight: p + o.fc2Weight, bias: p + o.fc2Bias, rows: rows, inputSize: c.hiddenDim, scales: scales.1,
                               gamma: o.layerScale2, stored: s.mlpBranch)
            }
            if classOnly {
                for image in 0..<b { (out + image * n * d).update(from: a.classOutput.pointer + image * d, count: d) }
            }
            blockOutput?(l, out)
        }
        if a.classTokenOnly {
            LayerNorm.forward(output: a.classNormalized.pointer, mean: a.normMean.pointer, rstd: a.normRstd.pointer,
                              input: a.classOutput.pointer, weight: p + normWeight, bias: p + normBias, rows: b, columns: d, epsilon: config.layerNormEpsilon)
            for image in 0..<b {
                (a.normalized.pointer + image * n * d).update(from: a.classNormalized.pointer + image * d, count: d)
            }
        } else {
            LayerNorm.forward(output: a.normalized.pointer, mean: a.normMean.pointer, rstd: a.normRstd.pointer,
                              input: a.streamBuffer(c.depth).pointer, weight: p + normWeight, bias: p + normBias,
                              rows: t, columns: d, epsilon: config.layerNormEpsilon)
        }
    }

    /// norm1 → qkv → attention for `images` images whose block input `(images·N, C)` starts at `input`,
    /// into the block's activations (their first rows). A class-token-only block computes the keys and
    /// values of every token (columns C..<3C of each qkv row) but the query of the class rows only
    /// (columns 0..<C of every N-th row): the patch rows' queries are never read.
    func attentionCore(parameters p: UnsafePointer<Float>, block o: BlockOffsets, activations s: BlockActivations,
                       input: UnsafePointer<Float>, images m: Int, tokens n: Int, classOnly: Bool) {
        let d = config.embedDim, t = m * n
        guard m > 0 else { return }
        LayerNorm.forward(output: s.norm1.pointer, mean: s.norm1Mean.pointer, rstd: s.norm1Rstd.pointer, input: input,
                          weight: p + o.norm1Weight, bias: p + o.norm1Bias, rows: t, columns: d, epsilon: config.layerNormEpsilon)
        if classOnly {
            GEMM.multiply(transposeA: false, transposeB: true, m: t, n: 2 * d, k: d, a: s.norm1.pointer, lda: d,
                          b: p + o.qkvWeight + d * d, ldb: d, beta: 0, c: s.qkv.pointer + d, ldc: 3 * d,
                          bias: p + o.qkvBias + d)
            GEMM.multiply(transposeA: false, transposeB: true, m: m, n: d, k: d, a: s.norm1.pointer, lda: n * d,
                          b: p + o.qkvWeight, ldb: d, beta: 0, c: s.qkv.pointer, ldc: n * 3 * d, bias: p + o.qkvBias)
        } else {
            Linear.forward(output: s.qkv.pointer, input: s.norm1.pointer, weight: p + o.qkvWeight, bias: p + o.qkvBias,
                           rows: t, inputSize: d, outputSize: 3 * d)
        }
        Attention.forward(output: s.attention.pointer, probabilities: s.probabilities.pointer, qkv: s.qkv.pointer,
                          batch: m, tokens: n, channels: d, heads: config.numHeads, queries: classOnly ? 1 : nil)
    }

    /// The qkv layer's backward for `images` images: dNorm `(images·N, C)` = dQKV·W (overwritten), and the
    /// weight and bias gradients. In a class-token-only block the queries' gradient is zero off the class
    /// rows (the forward computed them there only): the keys' and values' part runs over every row, the
    /// queries' part over the class rows.
    func qkvBackward(gradients g: UnsafeMutablePointer<Float>, parameters p: UnsafePointer<Float>, block o: BlockOffsets,
                     activations s: BlockActivations, dQKV: UnsafePointer<Float>, dNorm: UnsafeMutablePointer<Float>,
                     images m: Int, tokens n: Int, classOnly: Bool) {
        let d = config.embedDim, t = m * n, norm1 = UnsafePointer(s.norm1.pointer)
        guard classOnly else {
            Linear.backward(dInput: dNorm, dWeight: g + o.qkvWeight, dBias: g + o.qkvBias, dOutput: dQKV, input: norm1,
                            weight: p + o.qkvWeight, rows: t, inputSize: d, outputSize: 3 * d, overwriteInput: true)
            return
        }
        let weight = p + o.qkvWeight, dWeight = g + o.qkvWeight
        GEMM.multiply(transposeA: false, transposeB: false, m: t, n: d, k: 2 * d, a: dQKV + d, lda: 3 * d,
                      b: weight + d * d, ldb: d, beta: 0, c: dNorm, ldc: d)
        GEMM.multiply(transposeA: false, transposeB: false, m: m, n: d, k: d, a: dQKV, lda: n * 3 * d,
                      b: weight, ldb: d, beta: 1, c: dNorm, ldc: n * d)
        GEMM.multiply(transposeA: true, transposeB: false, m: 2 * d, n: d, k: t, a: dQKV + d, lda: 3 * d,
                      b: norm1, ldb: d, beta: 1, c: dWeight + d * d, ldc: d)
        GEMM.multiply(transposeA: true, transposeB: false, m: d, n: d, k: m, a: dQKV, lda: n * 3 * d,
                      b: norm1, ldb: n * d, beta: 1, c: dWeight, ldc: d)
        ColumnSums.accumulate(dWeight: nil, dBias: g + o.qkvBias, dOutput: dQKV, rows: t, rowStride: 3 * d, columns: d..<(3 * d))
        ColumnSums.accumulate(dWeight: nil, dBias: g + o.qkvBias, dOutput: dQKV, rows: m, rowStride: n * 3 * d, columns: 0..<d)
    }

    /// norm2 → fc1 → GELU (or w12 → SiLU gate) of `rows` rows starting at `input`, into the block's activations.
    func mlpCore(parameters p: UnsafePointer<Float>, block o: BlockOffsets, activations s: BlockActivations,
                 input: UnsafePointer<Float>, rows: Int) {
        guard rows > 0 else { return }
        LayerNorm.forward(output: s.norm2.pointer, mean: s.norm2Mean.pointer, rstd: s.norm2Rstd.pointer,
                          input: input, weight: p + o.norm2Weight, bias: p + o.norm2Bias, rows: rows, columns: config.embedDim, epsilon: config.layerNormEpsilon)
        if config.usesSwiGLU {
            Linear.forward(output: s.hidden.pointer, input: s.norm2.pointer, weight: p + o.fc1Weight, bias: p + o.fc1Bias,
                           rows: rows, inputSize: config.embedDim, outputSize: config.firstLayerWidth)
            SwiGLU.forward(output: s.activated.pointer, input: s.hidden.pointer, rows: rows, hidden: config.hiddenDim)
        } else {
            Linear.forwardGELU(output: s.hidden.pointer, activated: s.activated.pointer, input: s.norm2.pointer,
                               weight: p + o.fc1Weight, bias: p + o.fc1Bias, rows: rows, inputSize: config.embedDim,
                               outputSize: config.hiddenDim)
        }
    }

    /// Forward with no drop path (teacher, evaluation).
    public func forward(parameters: UnsafePointer<Float>, images: UnsafePointer<Float>, activations: ViTActivations,
                        blockOutput: ((Int, UnsafePointer<Float>) -> Void)? = nil) {
        var unused = RandomGenerator(seed: 0)
        forward(parameters: parameters, images: images, activations: activations, dropPathRate: 0, generator: &unused,
                patchMask: nil, blockOutput: blockOutput)
    }

    /// Activations for `batch` images split into `shards` consecutive parts, shard s holding images
    /// `batch·s/shards ..< batch·(s+1)/shards` (for `forward(shards:)` and the training step's passes).
    public func makeShardActivations(batch: Int, shards: Int, imageHeight: Int, imageWidth: Int, training: Bool,
                                     classTokenOnly: Bool = false) -> [ViTActivations] {
        (0..<shards).map { s in
            makeActivations(batch: batch * (s + 1) / shards - batch * s / shards, imageHeight: imageHeight,
                            imageWidth: imageWidth, training: training, classTokenOnly: classTokenOnly)
        }
    }

    /// Forward with no drop path over a batch split into shards: `shards[s]` holds the activations of
    /// the next `shards[s].batch` images of `images`, in order. The shards run side by side on 2
    /// threads (`Parallel.forEachShard`: each pass stays in its own core's cache), one after the other
    /// otherwise; every shard's result is that of its own `forward`, whatever the thread count.
    public func forward(parameters: UnsafePointer<Float>, images: UnsafePointer<Float>, shards: [ViTActivations]) {
        var firstImage = [0]
        for a in shards { firstImage.append(firstImage.last! + a.batch) }
        Parallel.forEachShard(shards.count) { s in
            let a = shards[s], pixels = config.inChannels * a.imageHeight * a.imageWidth
            forward(parameters: parameters, images: images + firstImage[s] * pixels, activations: a)
        }
    }

    /// Writes the final norm of each image's CLS row of a block output `stream` `(B, N, C)` into `output`
    /// `(B, C)`: official `get_intermediate_layers`, which passes every returned block through `norm`.
    public func normalizedClassTokens(output: UnsafeMutablePointer<Float>, stream: UnsafePointer<Float>,
                                      parameters p: UnsafePointer<Float>, batch: Int, tokens: Int) {
        let d = config.embedDim
        // Scratch from the shared pool: called once per returned block and batch, it allocates nothing once warm.
        let scratch = ScratchPool.shared.take(count: batch * (d + 2))
        defer { ScratchPool.shared.give(scratch) }
        let rows = scratch.pointer, mean = rows + batch * d, rstd = mean + batch
        for b in 0..<batch { (rows + b * d).update(from: stream + b * tokens * d, count: d) }
        LayerNorm.forward(output: output, mean: mean, rstd: rstd, input: rows,
                          weight: p + normWeight, bias: p + normBias, rows: batch, columns: d, epsilon: config.layerNormEpsilon)
    }

    /// Accumulates every parameter gradient into `gradients` from dL/d(CLS output) `(B, C)` and, when
    /// given, dL/d(output) of some patch tokens: `dTokens` `(R, C)` for the token rows `tokenRows`
    /// (indices into the `(B·N)` rows, `image·N + firstPatchToken + patch`), as the masked-patch loss gives.
    /// Requires a forward pass with `storesBackwardState`. Masked patches pass their gradient to
    /// `mask_token` instead of the patch embedding.
    public func backward(gradients g: UnsafeMutablePointer<Float>, parameters p: UnsafePointer<Float>,
                         dClassTokens: UnsafePointer<Float>, activations a: ViTActivations,
                         tokenRows: [Int] = [], dTokens: UnsafePointer<Float>? = nil) {
        precondition(a.storesBackwardState, "backward needs activations made with training: true")
        precondition(!a.classTokenOnly || dTokens == nil, "a class-token-only pass has no patch-token outputs")
        let c = config, d = c.embedDim, n = a.tokens, b = a.batch, t = b * n, first = c.firstPatchToken, np = n - first
        let h = c.hiddenDim
        let dx = a.dStream.pointer, dBranch = a.dBranch.pointer, dNorm = a.dNorm.pointer
        if a.classTokenOnly {
            a.dClass.zero()
            LayerNorm.backward(dInput: a.dClass.pointer, dWeight: g + normWeight, dBias: g + normBias,
                               dOutput: dClassTokens, input: a.classOutput.pointer, weight: p + normWeight,
                               mean: a.normMean.pointer, rstd: a.normRstd.pointer, rows: b, columns: d)
        } else {
            dx.update(repeating: 0, count: t * d)
            dNorm.update(repeating: 0, count: t * d)
            for image in 0..<b { (dNorm + image * n * d).update(from: dClassTokens + image * d, count: d) }
            if let dTokens {
                for (r, row) in tokenRows.enumerated() {
                    precondition(row % n >= first && row < t, "token row \(row) is not a patch token of this batch")
                    axpy(dNorm + row * d, 1, dTokens + r * d, d)
                }
            }
            LayerNorm.backward(dInput: dx, dWeight: g + normWeight, dBias: g + normBias, dOutput: dNorm,
                               input: a.streamBuffer(c.depth).pointer, weight: p + normWeight,
                               mean: a.normMean.pointer, rstd: a.normRstd.pointer, rows: t, columns: d)
        }

        for l in stride(from: c.depth - 1, through: 0, by: -1) {
            let o = blocks[l], s = a.block(l)
            // A class-token-only last block has one row per image after attention (dClass, not dx).
            let classOnly = a.classTokenOnly && l == c.depth - 1, rowsPerImage = classOnly ? 1 : n
            let dRows = classOnly ? a.dClass.pointer : dx
            // MLP branch: dRows holds dL/d(block output) and becomes dL/d(middle). When the branch ran on
            // some images only (`keptImages`), its gradient runs on their rows, packed, and is added back.
            let mlpKept = a.keptImages[2 * l + 1], mlpRows = (mlpKept?.count ?? b) * rowsPerImage
            branchGradient(dBranch, from: dRows, kept: mlpKept, scales: a.dropScales[2 * l + 1], images: b,
                           span: rowsPerImage * d)
            if mlpRows > 0 {
                if let gamma = o.layerScale2, let stored = s.mlpBranch {
                    LayerScale.backward(dGamma: g + gamma, gradient: dBranch, input: stored.pointer, gamma: p + gamma,
                                        rows: mlpRows, columns: d)
                }
                if c.usesSwiGLU {
                    Linear.backward(dInput: a.dActivated.pointer, dWeight: g + o.fc2Weight, dBias: g + o.fc2Bias, dOutput: dBranch,
                                    input: s.activated.pointer, weight: p + o.fc2Weight, rows: mlpRows, inputSize: h, outputSize: d,
                                    overwriteInput: true)
                    SwiGLU.backward(dInput: a.dHidden.pointer, dOutput: a.dActivated.pointer, input: s.hidden.pointer,
                                    rows: mlpRows, hidden: h)
                } else {
                    Linear.backward(dInput: a.dHidden.pointer, dWeight: g + o.fc2Weight, dBias: g + o.fc2Bias, dOutput: dBranch,
                                    input: s.activated.pointer, weight: p + o.fc2Weight, rows: mlpRows, inputSize: h, outputSize: d,
                                    overwriteInput: true, geluInput: s.hidden.pointer)
                }
                Linear.backward(dInput: dNorm, dWeight: g + o.fc1Weight, dBias: g + o.fc1Bias, dOutput: a.dHidden.pointer,
                                input: s.norm2.pointer, weight: p + o.fc1Weight, rows: mlpRows, inputSize: d,
                                outputSize: c.firstLayerWidth, overwriteInput: true)
            }
            branchNormBackward(dInput: dRows, dWeight: g + o.norm2Weight, dBias: g + o.norm2Bias, dOutput: dNorm,
                               input: s.middle.pointer, weight: p + o.norm2Weight, mean: s.norm2Mean.pointer,
                               rstd: s.norm2Rstd.pointer, kept: mlpKept, images: b, rowsPerImage: rowsPerImage, activations: a)
            // Attention branch: dx becomes dL/d(block input), the same way.
            let attentionKept = a.keptImages[2 * l], images = attentionKept?.count ?? b
            branchGradient(dBranch, from: dRows, kept: attentionKept, scales: a.dropScales[2 * l], images: b,
                           span: rowsPerImage * d)
            if images > 0 {
                if let gamma = o.layerScale1, let stored = s.attentionBranch {
                    LayerScale.backward(dGamma: g + gamma, gradient: dBranch, input: stored.pointer, gamma: p + gamma,
                                        rows: images * rowsPerImage, columns: d)
                }
                Linear.backward(dInput: a.dAttention.pointer, dWeight: g + o.projWeight, dBias: g + o.projBias,
                                dOutput: dBranch, input: s.attention.pointer, weight: p + o.projWeight,
                                rows: images * rowsPerImage, inputSize: d, outputSize: d, overwriteInput: true)
                a.dQKV.pointer.update(repeating: 0, count: images * n * 3 * d)
                Attention.backward(dQKV: a.dQKV.pointer, dOutput: a.dAttention.pointer, qkv: s.qkv.pointer,
                                   probabilities: s.probabilities.pointer, batch: images, tokens: n, channels: d, heads: c.numHeads,
                                   queries: classOnly ? 1 : nil)
                qkvBackward(gradients: g, parameters: p, block: o, activations: s, dQKV: a.dQKV.pointer, dNorm: dNorm,
                            images: images, tokens: n, classOnly: classOnly)
            }
            if classOnly {  // the residual reaches the block input at the CLS rows only
                dx.update(repeating: 0, count: t * d)
                for image in 0..<b { (dx + image * n * d).update(from: a.dClass.pointer + image * d, count: d) }
            }
            branchNormBackward(dInput: dx, dWeight: g + o.norm1Weight, dBias: g + o.norm1Bias, dOutput: dNorm,
                               input: a.streamBuffer(l).pointer, weight: p + o.norm1Weight, mean: s.norm1Mean.pointer,
                               rstd: s.norm1Rstd.pointer, kept: attentionKept, images: b, rowsPerImage: n, activations: a)
        }

        // Embeddings: sum over images per token position, in a fixed order.
        let dPositions = a.dPositions.pointer
        Parallel.forEachRange(n) { positions in
            for i in positions {
                let row = dPositions + i * d
                row.update(repeating: 0, count: d)
                for image in 0..<b { axpy(row, 1, dx + (image * n + i) * d, d) }
            }
        }
        axpy(g + clsToken, 1, dPositions, d)
        axpy(g + positionEmbedding, 1, dPositions, d)
        if let registerTokens { axpy(g + registerTokens, 1, dPositions + d, c.registerCount * d) }
        let dGrid = dPositions + first * d
        if let matrix = a.interpolation {
            PositionEmbedding.backward(dGrid: g + positionEmbedding + d, dOutput: dGrid, matrix: matrix.pointer,
                                       targetCount: np, sourceCount: c.gridSide * c.gridSide, channels: d)
        } else {
            axpy(g + positionEmbedding + d, 1, dGrid, np * d)
        }
        for image in 0..<b { (dNorm + image * np * d).update(from: dx + (image * n + first) * d, count: np * d) }
        if !a.patchMask.isEmpty, let maskToken {
            for i in 0..<(b * np) where a.patchMask[i] != 0 {
                axpy(g + maskToken, 1, dNorm + i * d, d)
                (dNorm + i * d).update(repeating: 0, count: d)  // the masked patch's pixels did not reach the output
            }
        }
        PatchEmbedding.backward(dWeight: g + patchWeight, dBias: g + patchBias, dTokens: dNorm, patches: a.patches.pointer,
                                weight: p + patchWeight, patchCount: b * np, channels: c.patchPlanes,
                                patchSize: c.patchSize, embedDim: d)
    }
}

/// Accumulates into `dInput` `(B·R, C)` (R rows per image) the gradient through a pre-norm branch's
/// LayerNorm, given `dOutput` = dL/d(normalized rows) and its parameter gradients. When the branch ran
/// on the kept images alone (`kept`), `dOutput`, `mean` and `rstd` hold their rows packed: the stored
/// `input` rows are gathered, the LayerNorm backward runs on them into the activations' `dBranch`
/// (free here), and the result is added back to each kept image's rows.
func branchNormBackward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                        dBias: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
                        weight: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                        kept: [Int]?, images: Int, rowsPerImage: Int, activations a: ViTActivations) {
    let columns = a.config.embedDim, span = rowsPerImage * columns
    guard let kept else {
        LayerNorm.backward(dInput: dInput, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input,
                           weight: weight, mean: mean, rstd: rstd, rows: images * rowsPerImage, columns: columns)
        return
    }
    guard !kept.isEmpty else { return }
    let packed = a.dBranch.pointer
    gatherImages(a.gathered.pointer, from: input, images: kept, span: span)
    packed.update(repeating: 0, count: kept.count * span)
    LayerNorm.backward(dInput: packed, dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: a.gathered.pointer,
                       weight: weight, mean: mean, rstd: rstd, rows: kept.count * rowsPerImage, columns: columns)
    scatterAddImages(dInput, from: packed, images: kept, span: span)
}

/// output[i] = source[images[i]]: the `span` floats of each listed image, packed in order.
func gatherImages(_ output: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, images: [Int], span: Int) {
    for (i, image) in images.enumerated() { (output + i * span).update(from: source + image * span, count: span) }
}

/// output[images[i]] += source[i]: the inverse of `gatherImages`, accumulated.
func scatterAddImages(_ output: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, images: [Int], span: Int) {
    for (i, image) in images.enumerated() { axpy(output + image * span, 1, source + i * span, span) }
}

/// output[image] = residual[image] + scale(image)·source[i] for each listed image `images[i]` (ascending),
/// residual[image] for the others, in one pass over the output (not a copy of the residual, then a scatter-add).
func residualPlusImages(_ output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>,
                        from source: UnsafePointer<Float>, images: [Int], span: Int, scales: [Float], batch: Int) {
    var next = 0
    for image in 0..<batch {
        let out = output + image * span, kept = residual + image * span
        if next < images.count && images[next] == image {
            addScaled(out, kept, scales[image], source + next * span, span)
            next += 1
        } else {
            out.update(from: kept, count: span)
        }
    }
}

/// The gradient a drop-path branch sees: dBranch = scale·dOutput per image (scale 1 with no drop path:
/// empty `scales`), over the whole batch, or packed over the kept images when the branch ran on them
/// alone (`kept`, `DropPath.keptImages`). One pass either way.
func branchGradient(_ dBranch: UnsafeMutablePointer<Float>, from dOutput: UnsafePointer<Float>, kept: [Int]?, scales: [Float],
                    images: Int, span: Int) {
    guard !scales.isEmpty else {
        precondition(kept == nil, "kept images come from drop-path scales")
        dBranch.update(from: dOutput, count: images * span)
        return
    }
    for (i, image) in (kept ?? Array(0..<images)).enumerated() {
        let packed = dBranch + i * span, source = dOutput + image * span, scale = scales[image]
        for j in 0..<span { packed[j] = scale * source[j] }
    }
}
