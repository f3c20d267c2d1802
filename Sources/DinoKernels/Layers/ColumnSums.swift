import CDinoKernels

/// Column sums over rows, the reduction behind bias and LayerNorm parameter gradients:
/// `dBias[j] += Σ_r dy[r, j]` and, with LayerNorm's saved statistics, `dWeight[j] += Σ_r dy[r, j]·x̂[r, j]`,
/// `x̂ = (x − μ_r)·rstd_r`. Shapes: dOutput and input `(rows, columns)`, mean and rstd `(rows)`.
///
/// Split over the threads by columns, evenly at multiples of 8 (one AVX2 vector): a column's sum runs
/// over the rows in order wherever the split falls, so every split gives the same bits, and at 192
/// columns both cores get equal shares (64-column blocks gave one core 2 of 3). A column block of a
/// wider matrix, or a subset of its rows at a fixed stride, is summed in place (`rowStride`).
public enum ColumnSums {
    public static func accumulate(
        dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
        input: UnsafePointer<Float>? = nil, mean: UnsafePointer<Float>? = nil, rstd: UnsafePointer<Float>? = nil,
        rows: Int, columns: Int
    ) {
        accumulate(dWeight: dWeight, dBias: dBias, dOutput: dOutput, input: input, mean: mean, rstd: rstd,
                   rows: rows, rowStride: columns, columns: 0..<columns)
    }

    /// The sums of the columns `columns` of rows `rowStride` floats apart (a block of a wider matrix, or
    /// every N-th row of one), into `dWeight[j]` and `dBias[j]` for j in `columns`.
    public static func accumulate(
        dWeight: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?, dOutput: UnsafePointer<Float>,
        input: UnsafePointer<Float>? = nil, mean: UnsafePointer<Float>? = nil, rstd: UnsafePointer<Float>? = nil,
        rows: Int, rowStride: Int, columns: Range<Int>
    ) {
        precondition(columns.upperBound <= rowStride)
        Parallel.forEachRange((columns.count + 7) / 8, grain: 4) { vectors in
            dino_column_sums(dWeight, dBias, dOutput, input, mean, rstd, rows, rowStride, columns.lowerBound + vectors.lowerBound * 8,
                             min(columns.upperBound, columns.lowerBound + vectors.upperBound * 8))
        }
    }
}
