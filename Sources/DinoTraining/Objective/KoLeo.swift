import Foundation

/// The KoLeo regularizer (DINOv2's `koleo_loss_weight`; Sablayrolles et al. 2019, after the
/// Kozachenko-Leonenko entropy estimator): it pushes each feature away from its nearest neighbour in
/// the batch, spreading the features over the sphere, which is what cosine k-NN works on.
///
/// For rows `x_i` `(n, d)` of one crop's batch, x̂_i = x_i / max(‖x_i‖, ε), the nearest neighbour
/// `j(i) = argmax_{j≠i} x̂_i·x̂_j` (the first on ties) and
///
///     L = −(1/n) Σ_i log(‖x̂_i − x̂_{j(i)} + ε‖ + ε),  ε = 1e-8,
///
/// as `torch.nn.functional.pairwise_distance` adds ε inside the norm. The neighbour choice is a
/// constant for the gradient. Sums in Double (n and d are small: the batch and the embedding width).
public enum KoLeo {
    static let epsilon = 1e-8

    /// Double buffers for `forwardBackward`, kept by a training loop so that a step allocates nothing
    /// (resized only when n or d change).
    public final class Workspace {
        var unit: [Double] = [], norms: [Double] = [], dUnit: [Double] = [], difference: [Double] = []
        var transposed: [Double] = [], similarities: [Double] = []
        public init() {}

        func prepare(rows n: Int, columns d: Int) {
            if unit.count != n * d { unit = Array(repeating: 0, count: n * d) }
            if transposed.count != n * d { transposed = Array(repeating: 0, count: n * d) }
            if similarities.count != n { similarities = Array(repeating: 0, count: n) }
            if norms.count != n { norms = Array(repeating: 0, count: n) }
            if difference.count != d { difference = Array(repeating: 0, count: d) }
            // dUnit accumulates: zero it on every call.
            if dUnit.count != n * d {
                dUnit = Array(repeating: 0, count: n * d)
            } else {
                dUnit.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            }
        }
    }

    /// Returns L and accumulates `weight · dL/dx` into `dInput` `(n, d)`. Fewer than 2 rows: L = 0.
    public static func forwardBackward(dInput: UnsafeMutablePointer<Float>?, input: UnsafePointer<Float>,
                                       rows n: Int, columns d: Int, weight: Float = 1,
                                       workspace: Workspace = Workspace()) -> Float {
        guard n >= 2 else { return 0 }
        workspace.prepare(rows: n, columns: d)
        return workspace.unit.withUnsafeMutableBufferPointer { unit in
            workspace.norms.withUnsafeMutableBufferPointer { norms in
                workspace.dUnit.withUnsafeMutableBufferPointer { dUnit in
                    workspace.difference.withUnsafeMutableBufferPointer { difference in
                        workspace.transposed.withUnsafeMutableBufferPointer { transposed in
                            workspace.similarities.withUnsafeMutableBufferPointer { similarities in
                                compute(dInput: dInput, input: input, n: n, d: d, weight: weight, unit: unit.baseAddress!,
                                        norms: norms.baseAddress!, dUnit: dUnit.baseAddress!, difference: difference.baseAddress!,
                                        transposed: transposed.baseAddress!, similarities: similarities.baseAddress!)
                            }
                        }
                    }
                }
            }
        }
    }

    static func compute(dInput: UnsafeMutablePointer<Float>?, input: UnsafePointer<Float>, n: Int, d: Int, weight: Float,
                        unit: UnsafeMutablePointer<Double>, norms: UnsafeMutablePointer<Double>,
                        dUnit: UnsafeMutablePointer<Double>, difference: UnsafeMutablePointer<Double>,
                        transposed: UnsafeMutablePointer<Double>, similarities: UnsafeMutablePointer<Double>) -> Float {
        for i in 0..<n {
            var s = 0.0
            for c in 0..<d { s += Double(input[i * d + c]) * Double(input[i * d + c]) }
            norms[i] = max(s.squareRoot(), epsilon)
            for c in 0..<d { unit[i * d + c] = Double(input[i * d + c]) / norms[i] }
        }
        // x̂ as (d, n), so that one row of similarities is d passes over contiguous columns: each
        // similarity is still the sum over c in order from zero (the passes run across j, not c).
        for i in 0..<n { for c in 0..<d { transposed[c * n + i] = unit[i * d + c] } }
        var total = 0.0
        for i in 0..<n {
            similarityRow(similarities, row: unit + i * d, transposed: transposed, n: n, d: d)
            var nearest = -1, best = -Double.infinity
            for j in 0..<n where j != i && similarities[j] > best { best = similarities[j]; nearest = j }
            var squared = 0.0
            for c in 0..<d {
                difference[c] = unit[i * d + c] - unit[nearest * d + c] + epsilon
                squared += difference[c] * difference[c]
            }
            let distance = squared.squareRoot()
            total -= log(distance + epsilon)
            // dL/d(difference) = −(1/n)·difference / (distance·(distance + ε)).
            guard distance > 0 else { continue }
            let scale = -1 / (Double(n) * distance * (distance + epsilon))
            for c in 0..<d {
                dUnit[i * d + c] += scale * difference[c]
                dUnit[nearest * d + c] -= scale * difference[c]
            }
        }
        if let dInput {
            // Through x̂ = x/‖x‖: dx = (dx̂ − x̂·(x̂·dx̂)) / ‖x‖ (a zero row has no direction to move).
            for i in 0..<n where norms[i] > epsilon {
                var projection = 0.0
                for c in 0..<d { projection += unit[i * d + c] * dUnit[i * d + c] }
                for c in 0..<d {
                    let g = (dUnit[i * d + c] - unit[i * d + c] * projection) / norms[i]
                    dInput[i * d + c] += weight * Float(g)
                }
            }
        }
        return Float(total / Double(n))
    }

    /// similarities[j] = Σ_c row[c]·transposed[c·n + j] `(n)`, summed over c in order: for each c a pass
    /// over j, which vectorizes across j without reordering any one sum.
    @inline(__always)
    static func similarityRow(_ similarities: UnsafeMutablePointer<Double>, row: UnsafePointer<Double>,
                              transposed: UnsafePointer<Double>, n: Int, d: Int) {
        similarities.update(repeating: 0, count: n)
        for c in 0..<d {
            let a = row[c], column = transposed + c &* n
            for j in 0..<n { similarities[j] += a * column[j] }
        }
    }
}
