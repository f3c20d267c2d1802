/// Bicubic interpolation of the learned patch position embeddings to another grid, as the official
/// `VisionTransformer.interpolate_pos_encoding`: `F.interpolate(mode="bicubic", align_corners=False)`
/// with `scale_factor = ((h0 + 0.1)/S, (w0 + 0.1)/S)` (the +0.1 keeps floor(scale·S) at h0, dino#8).
///
/// The interpolation is linear in the embeddings, so it is materialized once per target grid as a
/// dense matrix `M` of shape `(h0·w0, S·S)`; forward is `out = M·pos` and backward `dPos += Mᵀ·dOut`,
/// both GEMMs over the embedding width.
public enum PositionEmbedding {
    /// PyTorch's cubic convolution coefficients (A = −0.75) for fractional offset t.
    @inline(__always)
    static func cubicCoefficients(_ t: Float) -> (Float, Float, Float, Float) {
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        return (far(t + 1), near(t), near(1 - t), far(2 - t))
    }

    /// One axis: weights `(target, source)` for source side `source` and target side `target`,
    /// with PyTorch's source index `scale·(dst + 0.5) − 0.5`, `scale = 1/scale_factor`.
    static func axisWeights(source: Int, target: Int) -> [Float] {
        let scaleFactor = (Double(target) + 0.1) / Double(source)
        let scale = Float(1.0 / scaleFactor)
        var weights = [Float](repeating: 0, count: target * source)
        for dst in 0..<target {
            let real = scale * (Float(dst) + 0.5) - 0.5
            let index = min(Int(real.rounded(.down)), source - 1)
            let t = min(max(real - Float(index), 0), 1)
            let (w0, w1, w2, w3) = cubicCoefficients(t)
            for (k, w) in [w0, w1, w2, w3].enumerated() {
                let s = min(max(index - 1 + k, 0), source - 1)
                weights[dst * source + s] += w
            }
        }
        return weights
    }

    /// The dense interpolation matrix `(targetHeight·targetWidth, side·side)`.
    public static func interpolationMatrix(side: Int, targetHeight: Int, targetWidth: Int) -> [Float] {
        let wy = axisWeights(source: side, target: targetHeight)
        let wx = axisWeights(source: side, target: targetWidth)
        var matrix = [Float](repeating: 0, count: targetHeight * targetWidth * side * side)
        for oy in 0..<targetHeight {
            for ox in 0..<targetWidth {
                let row = (oy * targetWidth + ox) * side * side
                for iy in 0..<side where wy[oy * side + iy] != 0 {
                    for ix in 0..<side {
                        matrix[row + iy * side + ix] = wy[oy * side + iy] * wx[ox * side + ix]
                    }
                }
            }
        }
        return matrix
    }

    /// True when the official code would use the stored embedding unchanged (same, square grid).
    public static func isIdentity(side: Int, targetHeight: Int, targetWidth: Int) -> Bool {
        targetHeight == side && targetWidth == side
    }

    /// output `(T, C)` = matrix `(T, S²)` · grid `(S², C)`.
    public static func forward(output: UnsafeMutablePointer<Float>, grid: UnsafePointer<Float>,
                               matrix: UnsafePointer<Float>, targetCount: Int, sourceCount: Int, channels: Int) {
        GEMM.multiply(transposeA: false, transposeB: false, m: targetCount, n: channels, k: sourceCount,
                      a: matrix, lda: sourceCount, b: grid, ldb: channels, beta: 0, c: output, ldc: channels)
    }

    /// dGrid `(S², C)` += matrixᵀ · dOutput `(T, C)`.
    public static func backward(dGrid: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                matrix: UnsafePointer<Float>, targetCount: Int, sourceCount: Int, channels: Int) {
        GEMM.multiply(transposeA: true, transposeB: false, m: sourceCount, n: channels, k: targetCount,
                      a: matrix, lda: sourceCount, b: dOutput, ldb: channels, beta: 1, c: dGrid, ldc: channels)
    }
}
