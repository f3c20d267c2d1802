/// Row-wise L2 normalization, `y = x / max(‖x‖₂, eps)` (`F.normalize(x, dim=-1, p=2)`, eps 1e-12).
/// Shapes: input and output `(M, C)`, saved norms `(M)`.
public enum L2Normalize {
    public static let epsilon: Float = 1e-12

    public static func forward(output: UnsafeMutablePointer<Float>, norms: UnsafeMutablePointer<Float>,
                               input: UnsafePointer<Float>, rows: Int, columns c: Int) {
        Parallel.forEachRange(rows, grain: 64) { range in
            for r in range {
                let x = input + r * c
                let n = dot(x, x, c).squareRoot()
                norms[r] = n
                let inverse = 1 / max(n, epsilon)
                for i in 0..<c { output[r * c + i] = x[i] * inverse }
            }
        }
    }

    /// dInput += (dy − y·(y·dy)) / ‖x‖ where ‖x‖ > eps, and dy/eps where the clamp is active.
    public static func backward(dInput: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
                                output: UnsafePointer<Float>, norms: UnsafePointer<Float>, rows: Int, columns c: Int) {
        Parallel.forEachRange(rows, grain: 64) { range in
            for r in range {
                let y = output + r * c, dy = dOutput + r * c, dx = dInput + r * c
                if norms[r] > epsilon {
                    let projection = dot(y, dy, c)
                    let inverse = 1 / norms[r]
                    for i in 0..<c { dx[i] += (dy[i] - y[i] * projection) * inverse }
                } else {
                    for i in 0..<c { dx[i] += dy[i] / epsilon }
                }
            }
        }
    }
}

/// Weight normalization of a linear layer's rows, `W_k = g_k · v_k / ‖v_k‖` (`nn.utils.weight_norm`, dim 0).
/// Shapes: v and W `(K, C)`, g `(K)` (stored as `(K, 1)`), saved norms `(K)`. With `g == nil` the
/// scale is fixed at 1, as DINO's `norm_last_layer`.
public enum WeightNorm {
    public static func forward(weight: UnsafeMutablePointer<Float>, norms: UnsafeMutablePointer<Float>,
                               direction v: UnsafePointer<Float>, magnitude g: UnsafePointer<Float>?,
                               rows: Int, columns c: Int) {
        Parallel.forEachRange(rows, grain: 256) { range in
            for k in range {
                let row = v + k * c
                let n = dot(row, row, c).squareRoot()
                norms[k] = n
                let factor = (g?[k] ?? 1) / n
                for i in 0..<c { weight[k * c + i] = row[i] * factor }
            }
        }
    }

    /// From dW: dv += (g/‖v‖)·(dW − v̂·(v̂·dW)), dg += v̂·dW (dg only when given).
    public static func backward(dDirection: UnsafeMutablePointer<Float>, dMagnitude: UnsafeMutablePointer<Float>?,
                                dWeight: UnsafePointer<Float>, direction v: UnsafePointer<Float>,
                                magnitude g: UnsafePointer<Float>?, norms: UnsafePointer<Float>,
                                rows: Int, columns c: Int) {
        Parallel.forEachRange(rows, grain: 256) { range in
            for k in range {
                let row = v + k * c, dw = dWeight + k * c, dv = dDirection + k * c
                let n = norms[k]
                let projection = dot(row, dw, c) / n  // v̂·dW
                dMagnitude?[k] += projection
                let factor = (g?[k] ?? 1) / n
                for i in 0..<c { dv[i] += factor * (dw[i] - row[i] / n * projection) }
            }
        }
    }
}

/// Stochastic depth on a residual branch (`drop_path` in vision_transformer.py): each sample's branch
/// is multiplied by `floor(keep + u)/keep`, u ~ U[0, 1). Shapes: branch `(B, rowsPerSample·C)`.
public enum DropPath {
    /// Per-sample scales 0 or 1/keep from uniforms in [0, 1).
    public static func scales(keepProbability keep: Float, uniforms: [Float]) -> [Float] {
        uniforms.map { (keep + $0).rounded(.down) / keep }
    }

    /// The images a branch keeps when it drops at least one (scale 0), in order; nil when it drops none,
    /// so that the whole batch runs the branch. An image that drops a branch contributes nothing through
    /// it, forward or backward: the branch can run on the kept images alone.
    public static func keptImages(_ scales: [Float]) -> [Int]? {
        guard scales.contains(0) else { return nil }
        return scales.indices.filter { scales[$0] != 0 }
    }

    /// In place: branch[b] *= scales[b]. The backward pass is the same call on the gradient.
    public static func apply(_ branch: UnsafeMutablePointer<Float>, scales: [Float], elementsPerSample: Int) {
        for (b, s) in scales.enumerated() where s != 1 {
            let p = branch + b * elementsPerSample
            for i in 0..<elementsPerSample { p[i] *= s }
        }
    }
}

/// Elementwise helpers for residual connections.
public enum Residual {
    /// output = a + b, elementwise over `count` values (output may alias a).
    public static func add(output: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        Parallel.forEachRange(count, grain: 32768) { range in
            for i in range { output[i] = a[i] + b[i] }
        }
    }
}
