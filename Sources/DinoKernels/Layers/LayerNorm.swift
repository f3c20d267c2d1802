import Foundation

/// Layer normalization over the last dimension: `y = (x − μ)·rstd·w + b`, `rstd = 1/√(σ² + eps)`.
///
/// Shapes: input and output `(R, C)`, weight and bias `(C)`, saved `mean` and `rstd` `(R)`.
/// eps is 1e-6 in DINO's ViT (`partial(nn.LayerNorm, eps=1e-6)` in vision_transformer.py).
public enum LayerNorm {
    public static let dinoEpsilon: Float = 1e-6

    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        rows: Int, columns c: Int, epsilon: Float = dinoEpsilon
    ) {
        Parallel.forEachRange(rows, grain: 64) { range in
            for r in range {
                let x = input + r * c, y = output + r * c
                let mu = sum(x, c) / Float(c)
                // Two passes: the variance of centred values, which stays accurate for large means.
                var variance: Float = 0
                for i in 0..<c { let d = x[i] - mu; variance += d * d }
                variance /= Float(c)
                let s = 1 / (variance + epsilon).squareRoot()
                for i in 0..<c { y[i] = (x[i] - mu) * s * weight[i] + bias[i] }
                mean[r] = mu
                rstd[r] = s
            }
        }
    }

    /// Accumulates dInput, dWeight and dBias (each may be nil).
    ///
    /// With x̂ = (x − μ)·rstd and g = dy·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), dw = Σ dy·x̂, db = Σ dy.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>, rows: Int, columns c: Int
    ) {
        if let dInput {
            Parallel.forEachRange(rows, grain: 64) { range in
                for r in range {
                    let x = input + r * c, dy = dOutput + r * c, dx = dInput + r * c
                    let mu = mean[r], s = rstd[r]
                    var meanG: Float = 0, meanGX: Float = 0
                    for i in 0..<c {
                        let g = dy[i] * weight[i]
                        meanG += g
                        meanGX += g * (x[i] - mu) * s
                    }
                    meanG /= Float(c); meanGX /= Float(c)
                    for i in 0..<c {
                        let xhat = (x[i] - mu) * s
                        dx[i] += s * (dy[i] * weight[i] - meanG - xhat * meanGX)
                    }
                }
            }
        }
        if dWeight == nil && dBias == nil { return }
        // Parameter gradients reduce over rows: split over columns to keep the order fixed.
        Parallel.forEachRange((c + 63) / 64) { blocks in
            let start = blocks.lowerBound * 64, end = min(c, blocks.upperBound * 64)
            for col in start..<end {
                var dw: Float = 0, db: Float = 0
                for r in 0..<rows {
                    let dy = dOutput[r * c + col]
                    dw += dy * (input[r * c + col] - mean[r]) * rstd[r]
                    db += dy
                }
                dWeight?[col] += dw
                dBias?[col] += db
            }
        }
    }
}
