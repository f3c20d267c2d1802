import Foundation

/// Row-wise softmax and log-softmax at a temperature: `softmax(x/τ)`, `log_softmax(x/τ)`.
/// Shapes: `(R, K)`. `shift` (K values, optional) is subtracted first: `softmax((x − c)/τ)`, the
/// teacher's centering in the DINO loss.
public enum Softmax {
    public static func forward(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                               shift: UnsafePointer<Float>? = nil, temperature: Float,
                               rows: Int, columns k: Int, logarithm: Bool = false) {
        let inverseTemperature = 1 / temperature
        Parallel.forEachRange(rows) { range in
            for r in range {
                let x = input + r * k, y = output + r * k
                for i in 0..<k { y[i] = (x[i] - (shift?[i] ?? 0)) * inverseTemperature }
                let m = maximum(y, k)
                var total: Float = 0
                for i in 0..<k { total += expf(y[i] - m) }
                if logarithm {
                    let logTotal = logf(total) + m
                    for i in 0..<k { y[i] -= logTotal }
                } else {
                    let inverse = 1 / total
                    for i in 0..<k { y[i] = expf(y[i] - m) * inverse }
                }
            }
        }
    }
}
