import CDinoKernels

/// Column sums over rows, the reduction behind bias and LayerNorm parameter gradients:
/// `dBias[j] += Σ_r dy[r, j]` and, with LayerNorm's saved statistics, `dWeight[j] += Σ_r dy[r, j]·x̂[r, j]`,
/// `x̂ = (x − μ_r)·rstd_r`. Shapes: dOutput and input `(rows, columns)`, mean and rstd `(rows)`.
///
/// Split over the threads by columns, evenly at multiples of 8 (one AVX2 vector): a column's sum runs
/// over the rows in order wherever the split falls, so every split gives the same bits, and at 192
/// columns both cores get equal shares (64-column blocks gave one core 2 of 3).
public enum ColumnSums {
    public static func accumulate(
        dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
        input: UnsafePointer<Float>? = nil, mean: UnsafePointer<Float>? = nil, rstd: UnsafePointer<Float>? = nil,
        rows: Int, columns: Int
    ) {
        Parallel.forEachRange((columns + 7) / 8, grain: 4) { vectors in
            dino_column_sums(dWeight, dBias, dOutput, input, mean, rstd, rows, columns, vectors.lowerBound * 8,
                             min(columns, vectors.upperBound * 8))
        }
    }
}
