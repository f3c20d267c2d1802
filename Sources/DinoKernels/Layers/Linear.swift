import CDinoKernels

/// A fully connected layer, `y = x·Wᵀ + b`, on OpenBLAS sgemm.
///
/// Shapes: input `(M, K)`, weight `(N, K)` (PyTorch's `nn.Linear.weight` layout), bias `(N)`,
/// output `(M, N)`. Mirrors `nn.Linear`.
public enum Linear {
    /// output = input·weightᵀ + bias, or with `residual` `(M, N)` output = (residual + bias) + input·weightᵀ:
    /// a transformer block's projection and its residual add in one pass over the output.
    public static func forward(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        rows m: Int, inputSize k: Int, outputSize n: Int, residual: UnsafePointer<Float>? = nil
    ) {
        GEMM.multiply(transposeA: false, transposeB: true, m: m, n: n, k: k,
                      a: input, lda: k, b: weight, ldb: k, beta: 0, c: output, ldc: n, bias: bias, addend: residual)
    }

    /// output = input·weightᵀ + bias and activated = GELU(output): the MLP's first layer with its
    /// activation applied to each block of the product while it is still in cache (the exact-erf GELU
    /// of `GELU.forward`, the same values). `output` is what the GELU backward needs.
    public static func forwardGELU(
        output: UnsafeMutablePointer<Float>, activated: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        rows m: Int, inputSize k: Int, outputSize n: Int
    ) {
        GEMM.multiply(transposeA: false, transposeB: true, m: m, n: n, k: k,
                      a: input, lda: k, b: weight, ldb: k, beta: 0, c: output, ldc: n, bias: bias) { rows, columns in
            for r in rows {
                dino_gelu_forward(activated + r * n + columns.lowerBound, output + r * n + columns.lowerBound, columns.count)
            }
        }
    }

    /// Accumulates gradients: dInput += dOutput·W, dWeight += dOutputᵀ·input, dBias += Σ_rows dOutput.
    /// Any of the three outputs may be nil when it is not needed. With `overwriteInput`, dInput = dOutput·W
    /// instead (no separate pass to zero it first).
    /// - Parameter geluInput: when this layer's input is `GELU(geluInput)` `(M, K)` (the MLP's second
    ///   layer), dInput = (dOutput·W)⊙GELU′(geluInput), the gradient before the activation: applied to
    ///   each block of the product while it is in cache (`GELU.backwardInPlace`'s values), with `overwriteInput`.
    public static func backward(
        dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
        dBias: UnsafeMutablePointer<Float>?,
        dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
        rows m: Int, inputSize k: Int, outputSize n: Int, overwriteInput: Bool = false,
        geluInput: UnsafePointer<Float>? = nil
    ) {
        precondition(geluInput == nil || (dInput != nil && overwriteInput), "the GELU backward needs dInput, overwritten")
        if let dInput {
            let epilogue: ((Range<Int>, Range<Int>) -> Void)? = geluInput.map { x in
                { rows, columns in
                    for r in rows {
                        let offset = r * k + columns.lowerBound
                        dino_gelu_backward(dInput + offset, dInput + offset, x + offset, columns.count, 0)
                    }
                }
            }
            GEMM.multiply(transposeA: false, transposeB: false, m: m, n: k, k: n,
                          a: dOutput, lda: n, b: weight, ldb: k, beta: overwriteInput ? 0 : 1, c: dInput, ldc: k,
                          epilogue: epilogue)
        }
        if let dWeight {
            GEMM.multiply(transposeA: true, transposeB: false, m: n, n: k, k: m,
                          a: dOutput, lda: n, b: input, ldb: k, beta: 1, c: dWeight, ldc: k)
        }
        if let dBias { addColumnSums(dBias, dOutput, rows: m, columns: n) }
    }

    /// out[c] += Σ_r x[r, c] (the bias gradient), the same bits on any thread count (`ColumnSums`).
    public static func addColumnSums(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                     rows: Int, columns: Int) {
        ColumnSums.accumulate(dWeight: nil, dBias: out, dOutput: x, rows: rows, columns: columns)
    }
}
