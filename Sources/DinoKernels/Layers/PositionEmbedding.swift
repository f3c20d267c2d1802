/// Bicubic interpolation of the learned patch position embeddings to another grid, as the official
/// `VisionTransformer.interpolate_pos_encoding`: `F.interpolate(mode="bicubic", align_corners=False)`
/// with `scale_factor = ((h0 + offset)/S, (w0 + offset)/S)` (DINO's offset 0.1 keeps floor(scale·S) at
/// h0, dino#8), or with `size = (h0, w0)` when the offset is 0 (Hugging Face's models, DINOv2 with
/// registers). With `antialias` (DINOv2 with registers) PyTorch's antialiased bicubic: Keys' kernel with
/// a = −0.5, widened by the scale when shrinking, and normalized over the taps inside the grid.
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
    /// with PyTorch's source index `scale·(dst + 0.5) − 0.5`, `scale = 1/scale_factor` (or
    /// source/target when the offset is 0, PyTorch's `size=`).
    static func axisWeights(source: Int, target: Int, offset: Double = 0.1, antialias: Bool = false) -> [Float] {
        if antialias { return antialiasedAxisWeights(source: source, target: target, offset: offset) }
        let scale = offset > 0 ? Float(1.0 / ((Double(target) + offset) / Double(source))) : Float(source) / Float(target)
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

    /// PyTorch's `_upsample_bicubic2d_aa` weights for one axis (`_compute_indices_min_size_weights_aa`):
    /// center `scale·(dst + 0.5)`, support 2·max(scale, 1), taps at `(j − center + 0.5)/max(scale, 1)`
    /// through Keys' kernel with a = −0.5, only inside the grid, normalized to sum 1.
    static func antialiasedAxisWeights(source: Int, target: Int, offset: Double) -> [Float] {
        let scale = offset > 0 ? Double(Float(1.0 / ((Double(target) + offset) / Double(source))))
                               : Double(Float(source) / Float(target))
        func filter(_ x: Double) -> Double {
            let a = -0.5, x = abs(x)
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
            return 0
        }
        let support = scale >= 1 ? 2 * scale : 2, inverse = scale >= 1 ? 1 / scale : 1
        var weights = [Float](repeating: 0, count: target * source)
        for dst in 0..<target {
            let center = scale * (Double(dst) + 0.5)
            let low = max(Int(center - support + 0.5), 0), high = min(Int(center + support + 0.5), source)
            guard high > low else { continue }
            let taps = (low..<high).map { filter((Double($0) - center + 0.5) * inverse) }
            let total = taps.reduce(0, +)
            for (k, w) in taps.enumerated() { weights[dst * source + low + k] = Float(total != 0 ? w / total : w) }
        }
        return weights
    }

    /// The dense interpolation matrix `(targetHeight·targetWidth, side·side)`.
    public static func interpolationMatrix(side: Int, targetHeight: Int, targetWidth: Int, offset: Double = 0.1,
                                           antialias: Bool = false) -> [Float] {
        let wy = axisWeights(source: side, target: targetHeight, offset: offset, antialias: antialias)
        let wx = axisWeights(source: side, target: targetWidth, offset: offset, antialias: antialias)
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
