import CDinoKernels

/// Layer normalization over the last dimension: `y = (x − μ)·rstd·w + b`, `rstd = 1/√(σ² + eps)`.
///
/// Shapes: input and output `(R, C)`, weight and bias `(C)`, saved `mean` and `rstd` `(R)`.
/// eps is 1e-6 in DINO's ViT (`partial(nn.LayerNorm, eps=1e-6)` in vision_transformer.py).
/// The variance is taken of centred values (two passes), which stays accurate for large means.
public enum LayerNorm {
    public static let dinoEpsilon: Float = 1e-6

    public static func forward(
        output: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        rows: Int, columns c: Int, epsilon: Float = dinoEpsilon
    ) {
        Parallel.forEachRange(rows, grain: 64) { range in
            let r = range.lowerBound
            dino_layernorm_forward(output + r * c, mean + r, rstd + r, input + r * c, weight, bias, range.count, c, epsilon)
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
                let r = range.lowerBound
                dino_layernorm_backward_input(dInput + r * c, dOutput + r * c, input + r * c, weight, mean + r, rstd + r,
                                              range.count, c)
            }
        }
        if dWeight == nil && dBias == nil { return }
        ColumnSums.accumulate(dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input, mean: mean, rstd: rstd,
                              rows: rows, columns: c)
    }
}
