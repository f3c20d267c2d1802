import DinoKernels
import Foundation

/// Sinkhorn-Knopp teacher targets (DINOv2's alternative to centering, SwAV's equipartition).
///
/// For teacher logits `t` `(R, K)` over all R teacher rows of a step, start from
/// `Q = exp(t/τ)` and alternately rescale its K prototype columns to equal totals 1/K and its R rows
/// to equal totals 1/R, `iterations` times; finally scale rows to sum to 1. Each row is then a
/// distribution over prototypes, and together the rows use every prototype about equally (each
/// column totals about R/K): the batch cannot collapse onto a few prototypes, so no center is needed.
///
/// The largest logit is subtracted first (a common factor of Q, which the normalization removes) so
/// that exp cannot overflow at small τ; sums are taken in Double, in a fixed order (the same bits on
/// any thread count). A column whose every entry underflowed to 0 stays 0.
public enum SinkhornKnopp {
    /// Writes the normalized targets `(R, K)` into `output`; `scratch` holds at least (R + 1)·K Doubles.
    /// In a data-parallel run each process holds R of the rows: the largest logit, the total and the column
    /// totals are taken over every process's rows (DINOv2's all-reduces), so the targets are those of one
    /// process holding all of them.
    public static func normalize(output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                                 temperature: Float, rows r: Int, columns k: Int, iterations: Int = 3,
                                 scratch q: UnsafeMutablePointer<Double>, communicator: (any Communicator)? = nil) {
        let n = r * k
        let ranks = communicator?.size ?? 1
        var largest = -Float.infinity
        for i in 0..<n { largest = max(largest, input[i]) }
        if let communicator, ranks > 1 { largest = Float(communicator.maximum(Double(largest))) }
        let inverseTemperature = 1 / Double(temperature)
        var total = 0.0
        for i in 0..<n {
            q[i] = exp(Double(input[i] - largest) * inverseTemperature)
            total += q[i]
        }
        if let communicator, ranks > 1 { total = communicator.sum(total) }
        for i in 0..<n { q[i] /= total }
        let columnTotals = q + n  // K Doubles after the R·K of Q
        for _ in 0..<iterations {
            // Columns (prototypes) to 1/K each.
            for j in 0..<k { columnTotals[j] = 0 }
            for row in 0..<r { for j in 0..<k { columnTotals[j] += q[row * k + j] } }
            if let communicator, ranks > 1 { communicator.sum(columnTotals, count: k) }
            for j in 0..<k { columnTotals[j] = columnTotals[j] > 0 ? 1 / (columnTotals[j] * Double(k)) : 0 }
            for row in 0..<r { for j in 0..<k { q[row * k + j] *= columnTotals[j] } }
            // Rows (samples) to 1/R each.
            for row in 0..<r { scaleRow(q + row * k, k, to: 1 / Double(r * ranks)) }
        }
        for row in 0..<r {
            scaleRow(q + row * k, k, to: 1)
            for j in 0..<k { output[row * k + j] = Float(q[row * k + j]) }
        }
    }

    @inline(__always) static func scaleRow(_ row: UnsafeMutablePointer<Double>, _ k: Int, to target: Double) {
        var s = 0.0
        for j in 0..<k { s += row[j] }
        guard s > 0 else { return }
        let factor = target / s
        for j in 0..<k { row[j] *= factor }
    }
}
