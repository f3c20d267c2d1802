import DinoKernels

/// Offsets of one block's tensors in the flat parameter buffer.
struct BlockOffsets {
    let norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias: Int
    let norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias: Int

    init(_ layout: ParameterLayout, block i: Int, prefix: String) {
        func o(_ s: String) -> Int { layout.offset("\(prefix)blocks.\(i).\(s)") }
        norm1Weight = o("norm1.weight"); norm1Bias = o("norm1.bias")
        qkvWeight = o("attn.qkv.weight"); qkvBias = o("attn.qkv.bias")
        projWeight = o("attn.proj.weight"); projBias = o("attn.proj.bias")
        norm2Weight = o("norm2.weight"); norm2Bias = o("norm2.bias")
        fc1Weight = o("mlp.fc1.weight"); fc1Bias = o("mlp.fc1.bias")
        fc2Weight = o("mlp.fc2.weight"); fc2Bias = o("mlp.fc2.bias")
    }
}

/// The DINO Vision Transformer backbone (official `VisionTransformer` with `num_classes=0`):
/// patch embedding, CLS token, (interpolated) position embedding, `depth` pre-norm blocks
/// `x + drop_path(attn(norm1(x)))`, `x + drop_path(mlp(norm2(x)))`, and a final LayerNorm.
///
/// It owns no storage: parameters and gradients are flat buffers described by a `ParameterLayout`
/// that contains the backbone's names (optionally under a prefix); activations live in a `ViTActivations`.
public struct VisionTransformer: Sendable {
    public let config: ViTConfig
    let clsToken, positionEmbedding, patchWeight, patchBias, normWeight, normBias: Int
    /// DINOv2's `mask_token` `(1, C)`, present when the layout has one (masked-patch training).
    let maskToken: Int?
    let blocks: [BlockOffsets]

    public init(config: ViTConfig, layout: ParameterLayout, prefix: String = "") {
        self.config = config
        clsToken = layout.offset(prefix + "cls_token"); positionEmbedding = layout.offset(prefix + "pos_embed")
        patchWeight = layout.offset(prefix + "patch_embed.proj.weight")
        patchBias = layout.offset(prefix + "patch_embed.proj.bias")
        normWeight = layout.offset(prefix + "norm.weight"); normBias = layout.offset(prefix + "norm.bias")
        maskToken = layout.entry(prefix + "mask_token")?.offset
        blocks = (0..<config.depth).map { BlockOffsets(layout, block: $0, prefix: prefix) }
    }

    /// - Parameter classTokenOnly: compute only what the CLS output needs in the last block (see `ViTActivations`):
    ///   for callers that read nothing but the class token (the DINO head, CLS features, CLS attention).
    public func makeActivations(batch: Int, imageHeight: Int, imageWidth: Int, training: Bool,
                                classTokenOnly: Bool = false) -> ViTActivations {
        ViTActivations(config: config, batch: batch, imageHeight: imageHeight, imageWidth: imageWidth,
                       storesBackwardState: training, classTokenOnly: classTokenOnly)
    }

    /// Runs the backbone on `images` `(B, Cin, H, W)`; the result is `activations.normalized` `(B, N, C)`.
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
        let c = config, d = c.embedDim, n = a.tokens, b = a.batch, t = b * n, np = n - 1
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
                for k in 0..<np {
                    let out = row + (k + 1) * d, source = a.patchTokens.pointer + (image * np + k) * d, pos = grid + k * d
                    for i in 0..<d { out[i] = source[i] + pos[i] }
                }
            }
        }
        a.dropScales = []
        /// output = residual + DropPath(input·weightᵀ + bias) `(R, D)`, R = T rows, or B in a class-token-only
        /// last block. Without drop path the residual is added in the product's initialization (one pass
        /// over the output); with it, the branch is scaled per image first, so it goes through `branch`.
        func residualBranch(output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, input: UnsafePointer<Float>,
                            weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, inputSize: Int,
                            scales: [Float]) {
            if scales.isEmpty {
                Linear.forward(output: output, input: input, weight: weight, bias: bias, rows: rows, inputSize: inputSize,
                               outputSize: d, residual: residual)
            } else {
                Linear.forward(output: a.branch.pointer, input: input, weight: weight, bias: bias, rows: rows,
                               inputSize: inputSize, outputSize: d)
                DropPath.apply(a.branch.pointer, scales: scales, elementsPerSample: rows / b * d)
                Residual.add(output: output, residual, a.branch.pointer, count: rows * d)
            }
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
            // Keys and values need every token; after attention a class-token-only last block has one row per image.
            let classOnly = a.classTokenOnly && l == c.depth - 1, rows = classOnly ? b : t

            LayerNorm.forward(output: s.norm1.pointer, mean: s.norm1Mean.pointer, rstd: s.norm1Rstd.pointer, input: x,
                              weight: p + o.norm1Weight, bias: p + o.norm1Bias, rows: t, columns: d)
            Linear.forward(output: s.qkv.pointer, input: s.norm1.pointer, weight: p + o.qkvWeight, bias: p + o.qkvBias,
                           rows: t, inputSize: d, outputSize: 3 * d)
            Attention.forward(output: s.attention.pointer, probabilities: s.probabilities.pointer, qkv: s.qkv.pointer,
                              batch: b, tokens: n, channels: d, heads: c.numHeads, queries: classOnly ? 1 : nil)
            if classOnly {
                for image in 0..<b { (a.classInput.pointer + image * d).update(from: x + image * n * d, count: d) }
            }
            residualBranch(output: s.middle.pointer, residual: classOnly ? a.classInput.pointer : x,
                           input: s.attention.pointer, weight: p + o.projWeight, bias: p + o.projBias, rows: rows,
                           inputSize: d, scales: scales.0)

            LayerNorm.forward(output: s.norm2.pointer, mean: s.norm2Mean.pointer, rstd: s.norm2Rstd.pointer,
                              input: s.middle.pointer, weight: p + o.norm2Weight, bias: p + o.norm2Bias, rows: rows, columns: d)
            Linear.forwardGELU(output: s.hidden.pointer, activated: s.activated.pointer, input: s.norm2.pointer,
                               weight: p + o.fc1Weight, bias: p + o.fc1Bias, rows: rows, inputSize: d, outputSize: c.hiddenDim)
            residualBranch(output: classOnly ? a.classOutput.pointer : out, residual: s.middle.pointer,
                           input: s.activated.pointer, weight: p + o.fc2Weight, bias: p + o.fc2Bias, rows: rows,
                           inputSize: c.hiddenDim, scales: scales.1)
            if classOnly {
                for image in 0..<b { (out + image * n * d).update(from: a.classOutput.pointer + image * d, count: d) }
            }
            blockOutput?(l, out)
        }
        if a.classTokenOnly {
            LayerNorm.forward(output: a.classNormalized.pointer, mean: a.normMean.pointer, rstd: a.normRstd.pointer,
                              input: a.classOutput.pointer, weight: p + normWeight, bias: p + normBias, rows: b, columns: d)
            for image in 0..<b {
                (a.normalized.pointer + image * n * d).update(from: a.classNormalized.pointer + image * d, count: d)
            }
        } else {
            LayerNorm.forward(output: a.normalized.pointer, mean: a.normMean.pointer, rstd: a.normRstd.pointer,
                              input: a.streamBuffer(c.depth).pointer, weight: p + normWeight, bias: p + normBias,
                              rows: t, columns: d)
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
        let rows = FloatBuffer(count: batch * d), mean = FloatBuffer(count: batch), rstd = FloatBuffer(count: batch)
        for b in 0..<batch { (rows.pointer + b * d).update(from: stream + b * tokens * d, count: d) }
        LayerNorm.forward(output: output, mean: mean.pointer, rstd: rstd.pointer, input: rows.pointer,
                          weight: p + normWeight, bias: p + normBias, rows: batch, columns: d)
        withExtendedLifetime((rows, mean, rstd)) {}
    }

    /// Accumulates every parameter gradient into `gradients` from dL/d(CLS output) `(B, C)` and, when
    /// given, dL/d(output) of some patch tokens: `dTokens` `(R, C)` for the token rows `tokenRows`
    /// (indices into the `(B·N)` rows, `image·N + 1 + patch`), as the masked-patch loss gives.
    /// Requires a forward pass with `storesBackwardState`. Masked patches pass their gradient to
    /// `mask_token` instead of the patch embedding.
    public func backward(gradients g: UnsafeMutablePointer<Float>, parameters p: UnsafePointer<Float>,
                         dClassTokens: UnsafePointer<Float>, activations a: ViTActivations,
                         tokenRows: [Int] = [], dTokens: UnsafePointer<Float>? = nil) {
        precondition(a.storesBackwardState, "backward needs activations made with training: true")
        precondition(!a.classTokenOnly || dTokens == nil, "a class-token-only pass has no patch-token outputs")
        let c = config, d = c.embedDim, n = a.tokens, b = a.batch, t = b * n, np = n - 1, h = c.hiddenDim
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
                    precondition(row % n != 0 && row < t, "token row \(row) is not a patch token of this batch")
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
            let classOnly = a.classTokenOnly && l == c.depth - 1, rows = classOnly ? b : t
            let dRows = classOnly ? a.dClass.pointer : dx
            // MLP branch: dRows holds dL/d(block output) and becomes dL/d(middle).
            dBranch.update(from: dRows, count: rows * d)
            DropPath.apply(dBranch, scales: a.dropScales[2 * l + 1], elementsPerSample: rows / b * d)
            Linear.backward(dInput: a.dHidden.pointer, dWeight: g + o.fc2Weight, dBias: g + o.fc2Bias, dOutput: dBranch,
                            input: s.activated.pointer, weight: p + o.fc2Weight, rows: rows, inputSize: h, outputSize: d,
                            overwriteInput: true)
            GELU.backwardInPlace(gradient: a.dHidden.pointer, input: s.hidden.pointer, count: rows * h)
            Linear.backward(dInput: dNorm, dWeight: g + o.fc1Weight, dBias: g + o.fc1Bias, dOutput: a.dHidden.pointer,
                            input: s.norm2.pointer, weight: p + o.fc1Weight, rows: rows, inputSize: d, outputSize: h,
                            overwriteInput: true)
            LayerNorm.backward(dInput: dRows, dWeight: g + o.norm2Weight, dBias: g + o.norm2Bias, dOutput: dNorm,
                               input: s.middle.pointer, weight: p + o.norm2Weight, mean: s.norm2Mean.pointer,
                               rstd: s.norm2Rstd.pointer, rows: rows, columns: d)
            // Attention branch: dx becomes dL/d(block input).
            dBranch.update(from: dRows, count: rows * d)
            DropPath.apply(dBranch, scales: a.dropScales[2 * l], elementsPerSample: rows / b * d)
            Linear.backward(dInput: a.dAttention.pointer, dWeight: g + o.projWeight, dBias: g + o.projBias,
                            dOutput: dBranch, input: s.attention.pointer, weight: p + o.projWeight,
                            rows: rows, inputSize: d, outputSize: d, overwriteInput: true)
            a.dQKV.zero()
            Attention.backward(dQKV: a.dQKV.pointer, dOutput: a.dAttention.pointer, qkv: s.qkv.pointer,
                               probabilities: s.probabilities.pointer, batch: b, tokens: n, channels: d, heads: c.numHeads,
                               queries: classOnly ? 1 : nil)
            Linear.backward(dInput: dNorm, dWeight: g + o.qkvWeight, dBias: g + o.qkvBias, dOutput: a.dQKV.pointer,
                            input: s.norm1.pointer, weight: p + o.qkvWeight, rows: t, inputSize: d, outputSize: 3 * d,
                            overwriteInput: true)
            if classOnly {  // the residual reaches the block input at the CLS rows only
                dx.update(repeating: 0, count: t * d)
                for image in 0..<b { (dx + image * n * d).update(from: a.dClass.pointer + image * d, count: d) }
            }
            LayerNorm.backward(dInput: dx, dWeight: g + o.norm1Weight, dBias: g + o.norm1Bias, dOutput: dNorm,
                               input: a.streamBuffer(l).pointer, weight: p + o.norm1Weight, mean: s.norm1Mean.pointer,
                               rstd: s.norm1Rstd.pointer, rows: t, columns: d)
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
        if let matrix = a.interpolation {
            PositionEmbedding.backward(dGrid: g + positionEmbedding + d, dOutput: dPositions + d, matrix: matrix.pointer,
                                       targetCount: np, sourceCount: c.gridSide * c.gridSide, channels: d)
        } else {
            axpy(g + positionEmbedding + d, 1, dPositions + d, np * d)
        }
        for image in 0..<b { (dNorm + image * np * d).update(from: dx + (image * n + 1) * d, count: np * d) }
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
