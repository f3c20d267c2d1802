import CDinoKernels

/// Row-wise softmax and log-softmax at a temperature: `softmax(x/τ)`, `log_softmax(x/τ)`.
/// Shapes: `(R, K)`. `shift` (K values, optional) is subtracted first: `softmax((x − c)/τ)`, the
/// teacher's centering in the DINO loss. `logNormalizers` (R values, optional) receives each row's
/// `log Σ exp y` with `y = (x − c)/τ`: the entropy of the row is then `log Σ exp y − Σ p·y`, one
/// product instead of K logarithms.
public enum Softmax {
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               shift: UnsafePointer<Float>? = nil, temperature: Float,
                               rows: Int, columns k: Int, logarithm: Bool = false,
                               logNormalizers: UnsafeMutablePointer<Float>? = nil) {
        let inverseTemperature = 1 / temperature
        Parallel.forEachRange(rows) { range in
            dino_softmax_rows(output + range.lowerBound * k, logNormalizers.map { $0 + range.lowerBound },
                              input + range.lowerBound * k, shift, inverseTemperature, range.count, k, logarithm ? 1 : 0)
        }
    }
}
