import Foundation

/// Multi-head self-attention core (no projections): for each image b and head h,
/// `P = softmax(Q·Kᵀ·d⁻¹ᐟ²)`, `O = P·V`, with Q, K, V read in place from the fused qkv activation.
///
/// Shapes: qkv `(B, N, 3, H, d)` (the output of `attn.qkv`, reshaped as the official `Attention`
/// does), output `(B, N, H, d)` = `(B, N, C)`, probabilities `(B, H, N, N)`.
/// One (image, head) block is computed at a time while it stays in cache; blocks run in parallel and
/// write disjoint memory. The probabilities are kept: backward needs them and they are what
/// `get_last_selfattention` returns.
public enum Attention {
    public static func forward(
        output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
        qkv: UnsafePointer<Float>, batch: Int, tokens n: Int, channels c: Int, heads: Int
    ) {
        let d = c / heads
        let scale = 1 / Float(d).squareRoot()
        let rowStride = 3 * c
        Parallel.forEachRange(batch * heads) { blocks in
            for block in blocks {
                let b = block / heads, h = block % heads
                let base = qkv + b * n * rowStride + h * d
                let p = probabilities + block * n * n
                for i in 0..<n {
                    let q = base + i * rowStride
                    let row = p + i * n
                    var m = -Float.infinity
                    for j in 0..<n {
                        let s = dot(q, base + j * rowStride + c, d) * scale
                        row[j] = s
                        if s > m { m = s }
                    }
                    var total: Float = 0
                    for j in 0..<n { let e = expf(row[j] - m); row[j] = e; total += e }
                    let inverse = 1 / total
                    for j in 0..<n { row[j] *= inverse }
                    let o = output + (b * n + i) * c + h * d
                    o.update(repeating: 0, count: d)
                    for j in 0..<n { axpy(o, row[j], base + j * rowStride + 2 * c, d) }
                }
            }
        }
    }

    /// Accumulates dQKV from dOutput: with dP = dO·Vᵀ and dS = P ⊙ (dP − rowsum(P ⊙ dP)),
    /// dV += Pᵀ·dO, dQ += dS·K·scale, dK += dSᵀ·Q·scale.
    public static func backward(
        dQKV: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
        qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
        batch: Int, tokens n: Int, channels c: Int, heads: Int
    ) {
        let d = c / heads
        let scale = 1 / Float(d).squareRoot()
        let rowStride = 3 * c
        Parallel.forEachRange(batch * heads) { blocks in
            let dp = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { dp.deallocate() }
            for block in blocks {
                let b = block / heads, h = block % heads
                let base = qkv + b * n * rowStride + h * d
                let dBase = dQKV + b * n * rowStride + h * d
                let p = probabilities + block * n * n
                for i in 0..<n {
                    let dO = dOutput + (b * n + i) * c + h * d
                    let row = p + i * n
                    var weighted: Float = 0
                    for j in 0..<n {
                        let g = dot(dO, base + j * rowStride + 2 * c, d)
                        dp[j] = g
                        weighted += row[j] * g
                    }
                    let q = base + i * rowStride, dq = dBase + i * rowStride
                    for j in 0..<n {
                        let ds = row[j] * (dp[j] - weighted) * scale
                        axpy(dq, ds, base + j * rowStride + c, d)
                        axpy(dBase + j * rowStride + c, ds, q, d)
                        axpy(dBase + j * rowStride + 2 * c, row[j], dO, d)
                    }
                }
            }
        }
    }
}
