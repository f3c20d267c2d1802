import CDinoKernels

/// Multi-head self-attention core (no projections): for each image b and head h,
/// `P = softmax(Q·Kᵀ·d⁻¹ᐟ²)`, `O = P·V`, with Q, K, V read in place from the fused qkv activation.
///
/// Shapes: qkv `(B, N, 3, H, d)` (the output of `attn.qkv`, reshaped as the official `Attention`
/// does), output `(B, Q, H, d)` = `(B, Q, C)` for the first Q query rows (Q = N by default; Q = 1 is the
/// class token alone, all a last block needs when only its CLS output is read), probabilities
/// `(B, H, N, N)` of which rows 0..<Q are written.
/// One (image, head) block is computed at a time while it stays in cache (the C kernel transposes
/// K, or V in backward, once per block so both products are register-tiled FMA loops); blocks run in
/// parallel and write disjoint memory. The probabilities are kept rather than the log-sum-exp: at
/// ViT token counts (5–200) they are at most N² floats per block, backward reuses them instead of
/// recomputing Q·Kᵀ and the exponentials, and they are what `get_last_selfattention` returns.
public enum Attention {
    public static func forward(
        output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, batch: Int, tokens n: Int, channels c: Int, heads: Int, queries: Int? = nil
    ) {
        let d = c / heads, rows = queries ?? n
        precondition(rows >= 1 && rows <= n, "queries must be in 1...tokens")
        let scale = 1 / Float(d).squareRoot()
        let rowStride = 3 * c
        forEachBlock(batch: batch, heads: heads, tokens: n, headDim: d) { block, b, h, scratch in
            let q = qkv + b * n * rowStride + h * d
            dino_attention_forward_block(output + b * rows * c + h * d, c, probabilities + block * n * n,
                                         q, q + c, q + 2 * c, rowStride, rows, n, d, scale, scratch)
        }
    }

    /// Accumulates dQKV from dOutput: with dP = dO·Vᵀ and dS = P ⊙ (dP − rowsum(P ⊙ dP)),
    /// dV += Pᵀ·dO, dQ += dS·K·scale, dK += dSᵀ·Q·scale; dOutput `(B, Q, C)` for the first Q query rows
    /// of the forward pass (dQ stays untouched on the other rows).
    public static func backward(
        dQKV: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
        qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
        batch: Int, tokens n: Int, channels c: Int, heads: Int, queries: Int? = nil
    ) {
        let d = c / heads, rows = queries ?? n
        precondition(rows >= 1 && rows <= n, "queries must be in 1...tokens")
        let scale = 1 / Float(d).squareRoot()
        let rowStride = 3 * c
        forEachBlock(batch: batch, heads: heads, tokens: n, headDim: d) { block, b, h, scratch in
            let offset = b * n * rowStride + h * d
            let q = qkv + offset, dq = dQKV + offset
            dino_attention_backward_block(dq, dq + c, dq + 2 * c, dOutput + b * rows * c + h * d, c,
                                          q, q + c, q + 2 * c, rowStride, probabilities + block * n * n,
                                          rows, n, d, scale, scratch)
        }
    }

    /// Runs `body(block, image, head, scratch)` for every (image, head) block, blocks spread over the
    /// threads, each thread with the C kernel's scratch for one block taken from the pool once.
    @inline(__always)
    static func forEachBlock(batch: Int, heads: Int, tokens n: Int, headDim d: Int,
                             _ body: (Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        Parallel.forEachRange(batch * heads) { blocks in
            let buffer = ScratchPool.shared.take(count: dino_attention_scratch_count(n, d))
            defer { ScratchPool.shared.give(buffer) }
            for block in blocks { body(block, block / heads, block % heads, buffer.pointer) }
        }
    }
}
