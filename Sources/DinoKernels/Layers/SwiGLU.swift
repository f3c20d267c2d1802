import Foundation

/// The gated activation of DINOv2's SwiGLU feed-forward (`SwiGLUFFN`, used by ViT-g): the first layer's
/// output `(M, 2H)` splits into x₁ (columns 0..<H) and x₂ (columns H..<2H), and
/// `y = SiLU(x₁)⊙x₂`, `SiLU(x) = x·σ(x)`, output `(M, H)`.
public enum SwiGLU {
    @inline(__always)
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// output `(M, H)` = SiLU(input[:, :H])⊙input[:, H:], input `(M, 2H)`.
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int, hidden h: Int) {
        Parallel.forEachRange(rows, grain: max(1, 8192 / max(h, 1))) { range in
            for r in range {
                let x1 = input + r * 2 * h, x2 = x1 + h, y = output + r * h
                for j in 0..<h { y[j] = x1[j] * sigmoid(x1[j]) * x2[j] }
            }
        }
    }

    /// dInput `(M, 2H)` (overwritten) from dOutput `(M, H)`:
    /// dx₁ = dy⊙x₂⊙σ(x₁)(1 + x₁(1 − σ(x₁))), dx₂ = dy⊙SiLU(x₁).
    public static func backward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>,
                                rows: Int, hidden h: Int) {
        Parallel.forEachRange(rows, grain: max(1, 8192 / max(h, 1))) { range in
            for r in range {
                let x1 = input + r * 2 * h, x2 = x1 + h, dy = dOutput + r * h
                let d1 = dInput + r * 2 * h, d2 = d1 + h
                for j in 0..<h {
                    let s = sigmoid(x1[j])
                    d1[j] = dy[j] * x2[j] * s * (1 + x1[j] * (1 - s))
                    d2[j] = dy[j] * x1[j] * s
                }
            }
        }
    }
}

/// DINOv2's LayerScale on a residual branch: `y = γ⊙x` per channel, x `(M, C)`, γ `(C)` (`ls1.gamma`,
/// `ls2.gamma`).
public enum LayerScale {
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                               rows: Int, columns c: Int) {
        Parallel.forEachRange(rows, grain: max(1, 8192 / max(c, 1))) { range in
            for r in range {
                let x = input + r * c, y = output + r * c
                for j in 0..<c { y[j] = gamma[j] * x[j] }
            }
        }
    }

    /// dGamma += Σ_r gradient⊙input, then gradient = γ⊙gradient in place (it holds dOutput and becomes
    /// dInput). The sums run over the rows in order per column, split by columns: the same bits on
    /// any thread count.
    public static func backward(dGamma: UnsafeMutablePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                                input: UnsafePointer<Float>, gamma: UnsafePointer<Float>, rows: Int, columns c: Int) {
        Parallel.forEachRange((c + 7) / 8, grain: 4) { vectors in
            let columns = (vectors.lowerBound * 8)..<min(c, vectors.upperBound * 8)
            for r in 0..<rows {
                let x = input + r * c, dy = gradient + r * c
                for j in columns {
                    dGamma[j] += dy[j] * x[j]
                    dy[j] *= gamma[j]
                }
            }
        }
    }
}
