import Foundation

/// Plain, obviously correct twins of the optimized kernels, in Double, on arrays.
///
/// They are the first rung of the verification ladder: tests check their backward passes by finite
/// differences, then check the Float kernels against them. Shapes match the kernels of the same name.
public enum Reference {
    // MARK: Linear

    public static func linear(_ x: [Double], _ w: [Double], _ b: [Double]?, m: Int, k: Int, n: Int) -> [Double] {
        var y = [Double](repeating: 0, count: m * n)
        for r in 0..<m { for o in 0..<n {
            var s = b?[o] ?? 0
            for i in 0..<k { s += x[r * k + i] * w[o * k + i] }
            y[r * n + o] = s
        } }
        return y
    }

    public static func linearBackward(_ dy: [Double], _ x: [Double], _ w: [Double], m: Int, k: Int, n: Int)
        -> (dx: [Double], dw: [Double], db: [Double]) {
        var dx = [Double](repeating: 0, count: m * k), dw = [Double](repeating: 0, count: n * k)
        var db = [Double](repeating: 0, count: n)
        for r in 0..<m { for o in 0..<n {
            let g = dy[r * n + o]
            db[o] += g
            for i in 0..<k { dx[r * k + i] += g * w[o * k + i]; dw[o * k + i] += g * x[r * k + i] }
        } }
        return (dx, dw, db)
    }

    // MARK: LayerNorm

    public static func layerNorm(_ x: [Double], _ w: [Double], _ b: [Double], rows: Int, columns c: Int,
                                 epsilon: Double = 1e-6) -> [Double] {
        var y = [Double](repeating: 0, count: rows * c)
        for r in 0..<rows {
            let row = x[(r * c)..<((r + 1) * c)]
            let mean = row.reduce(0, +) / Double(c)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
            let rstd = 1 / (variance + epsilon).squareRoot()
            for i in 0..<c { y[r * c + i] = (x[r * c + i] - mean) * rstd * w[i] + b[i] }
        }
        return y
    }

    public static func layerNormBackward(_ dy: [Double], _ x: [Double], _ w: [Double], rows: Int, columns c: Int,
                                         epsilon: Double = 1e-6) -> (dx: [Double], dw: [Double], db: [Double]) {
        var dx = [Double](repeating: 0, count: rows * c)
        var dw = [Double](repeating: 0, count: c), db = [Double](repeating: 0, count: c)
        for r in 0..<rows {
            let row = Array(x[(r * c)..<((r + 1) * c)])
            let mean = row.reduce(0, +) / Double(c)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
            let rstd = 1 / (variance + epsilon).squareRoot()
            let xhat = row.map { ($0 - mean) * rstd }
            var meanG = 0.0, meanGX = 0.0
            for i in 0..<c {
                let g = dy[r * c + i] * w[i]
                meanG += g / Double(c); meanGX += g * xhat[i] / Double(c)
                dw[i] += dy[r * c + i] * xhat[i]; db[i] += dy[r * c + i]
            }
            for i in 0..<c { dx[r * c + i] = rstd * (dy[r * c + i] * w[i] - meanG - xhat[i] * meanGX) }
        }
        return (dx, dw, db)
    }

    // MARK: GELU

    public static func gelu(_ x: [Double]) -> [Double] { x.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) } }

    public static func geluBackward(_ dy: [Double], _ x: [Double]) -> [Double] {
        zip(dy, x).map { g, v in
            g * (0.5 * (1 + erf(v / 2.0.squareRoot())) + v * exp(-0.5 * v * v) / (2 * Double.pi).squareRoot())
        }
    }

    // MARK: Attention (qkv (B, N, 3, H, d) → out (B, N, H·d), probabilities (B, H, N, N))

    public static func attention(_ qkv: [Double], batch: Int, tokens n: Int, channels c: Int, heads: Int)
        -> (output: [Double], probabilities: [Double]) {
        let d = c / heads, scale = 1 / Double(d).squareRoot()
        var out = [Double](repeating: 0, count: batch * n * c)
        var probs = [Double](repeating: 0, count: batch * heads * n * n)
        func at(_ b: Int, _ t: Int, _ part: Int, _ h: Int, _ i: Int) -> Int { ((b * n + t) * 3 + part) * c + h * d + i }
        for b in 0..<batch { for h in 0..<heads { for i in 0..<n {
            var scores = [Double](repeating: 0, count: n)
            for j in 0..<n { for e in 0..<d { scores[j] += qkv[at(b, i, 0, h, e)] * qkv[at(b, j, 1, h, e)] * scale } }
            let m = scores.max()!
            let exps = scores.map { exp($0 - m) }
            let total = exps.reduce(0, +)
            for j in 0..<n {
                let p = exps[j] / total
                probs[((b * heads + h) * n + i) * n + j] = p
                for e in 0..<d { out[(b * n + i) * c + h * d + e] += p * qkv[at(b, j, 2, h, e)] }
            }
        } } }
        return (out, probs)
    }

    public static func attentionBackward(_ dOut: [Double], _ qkv: [Double], batch: Int, tokens n: Int, channels c: Int,
                                         heads: Int) -> [Double] {
        let d = c / heads, scale = 1 / Double(d).squareRoot()
        let probs = attention(qkv, batch: batch, tokens: n, channels: c, heads: heads).probabilities
        var dqkv = [Double](repeating: 0, count: qkv.count)
        func at(_ b: Int, _ t: Int, _ part: Int, _ h: Int, _ i: Int) -> Int { ((b * n + t) * 3 + part) * c + h * d + i }
        for b in 0..<batch { for h in 0..<heads { for i in 0..<n {
            var dp = [Double](repeating: 0, count: n)
            for j in 0..<n { for e in 0..<d { dp[j] += dOut[(b * n + i) * c + h * d + e] * qkv[at(b, j, 2, h, e)] } }
            let row = (0..<n).map { probs[((b * heads + h) * n + i) * n + $0] }
            let weighted = zip(row, dp).reduce(0) { $0 + $1.0 * $1.1 }
            for j in 0..<n {
                let ds = row[j] * (dp[j] - weighted) * scale
                for e in 0..<d {
                    dqkv[at(b, i, 0, h, e)] += ds * qkv[at(b, j, 1, h, e)]
                    dqkv[at(b, j, 1, h, e)] += ds * qkv[at(b, i, 0, h, e)]
                    dqkv[at(b, j, 2, h, e)] += row[j] * dOut[(b * n + i) * c + h * d + e]
                }
            }
        } } }
        return dqkv
    }

    // MARK: Patch embedding as a direct strided convolution, images (B, Cin, H, W) → (B, gh·gw, D)

    public static func patchEmbedding(_ images: [Double], _ w: [Double], _ bias: [Double], batch: Int, channels: Int,
                                      height: Int, width: Int, patch p: Int, embedDim: Int) -> [Double] {
        let gh = height / p, gw = width / p
        var out = [Double](repeating: 0, count: batch * gh * gw * embedDim)
        for b in 0..<batch { for gy in 0..<gh { for gx in 0..<gw { for o in 0..<embedDim {
            var s = bias[o]
            for ch in 0..<channels { for ky in 0..<p { for kx in 0..<p {
                s += images[((b * channels + ch) * height + gy * p + ky) * width + gx * p + kx]
                    * w[((o * channels + ch) * p + ky) * p + kx]
            } } }
            out[((b * gh + gy) * gw + gx) * embedDim + o] = s
        } } } }
        return out
    }

    // MARK: Bicubic interpolation (PyTorch upsample_bicubic2d, align_corners False, A = −0.75; antialiased: A = −0.5)

    /// Interpolates a `(side, side, C)` grid to `(th, tw, C)` with `scale_factor = (t + offset)/side`
    /// (DINO's offset 0.1), or `size = (th, tw)` when the offset is 0; with `antialias`, PyTorch's
    /// antialiased bicubic (support widened by the scale when shrinking, taps inside the grid, normalized).
    public static func bicubic(_ grid: [Double], side: Int, channels: Int, targetHeight th: Int, targetWidth tw: Int,
                               offset: Double = 0.1, antialias: Bool = false) -> [Double] {
        func cubic(_ x: Double, _ a: Double) -> Double {
            let x = abs(x)
            if x <= 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
            return 0
        }
        func taps(_ dst: Int, _ target: Int) -> [(Int, Double)] {
            let scale = offset > 0 ? Double(side) / (Double(target) + offset) : Double(side) / Double(target)
            if antialias {
                let support = 2 * max(scale, 1), center = scale * (Double(dst) + 0.5)
                let low = max(Int(center - support + 0.5), 0), high = min(Int(center + support + 0.5), side)
                let raw = (low..<high).map { ($0, cubic((Double($0) - center + 0.5) / max(scale, 1), -0.5)) }
                let total = raw.reduce(0) { $0 + $1.1 }
                return raw.map { ($0.0, $0.1 / total) }
            }
            let real = scale * (Double(dst) + 0.5) - 0.5
            let index = min(Int(real.rounded(.down)), side - 1)
            let t = min(max(real - Double(index), 0), 1)
            return (0..<4).map { k in (min(max(index - 1 + k, 0), side - 1), cubic(t - Double(k - 1), -0.75)) }
        }
        var out = [Double](repeating: 0, count: th * tw * channels)
        for oy in 0..<th { for ox in 0..<tw {
            for (iy, wy) in taps(oy, th) { for (ix, wx) in taps(ox, tw) { for ch in 0..<channels {
                out[(oy * tw + ox) * channels + ch] += wy * wx * grid[(iy * side + ix) * channels + ch]
            } } }
        } }
        return out
    }

    // MARK: SwiGLU and LayerScale

    /// `(M, 2H)` → `(M, H)`: SiLU(x₁)⊙x₂.
    public static func swiGLU(_ x: [Double], rows: Int, hidden h: Int) -> [Double] {
        (0..<(rows * h)).map { i in
            let (r, j) = (i / h, i % h), x1 = x[r * 2 * h + j], x2 = x[r * 2 * h + h + j]
            return x1 / (1 + exp(-x1)) * x2
        }
    }

    public static func swiGLUBackward(_ dy: [Double], _ x: [Double], rows: Int, hidden h: Int) -> [Double] {
        var dx = [Double](repeating: 0, count: rows * 2 * h)
        for r in 0..<rows { for j in 0..<h {
            let x1 = x[r * 2 * h + j], x2 = x[r * 2 * h + h + j], s = 1 / (1 + exp(-x1)), g = dy[r * h + j]
            dx[r * 2 * h + j] = g * x2 * (s + x1 * s * (1 - s))
            dx[r * 2 * h + h + j] = g * x1 * s
        } }
        return dx
    }

    /// y = γ⊙x per column of `(M, C)`.
    public static func layerScale(_ x: [Double], _ gamma: [Double], columns c: Int) -> [Double] {
        x.indices.map { x[$0] * gamma[$0 % c] }
    }

    public static func layerScaleBackward(_ dy: [Double], _ x: [Double], _ gamma: [Double], columns c: Int)
        -> (dx: [Double], dGamma: [Double]) {
        var dGamma = [Double](repeating: 0, count: c)
        for i in x.indices { dGamma[i % c] += dy[i] * x[i] }
        return (dy.indices.map { dy[$0] * gamma[$0 % c] }, dGamma)
    }

    // MARK: L2 normalization and weight normalization

    public static func l2Normalize(_ x: [Double], rows: Int, columns c: Int) -> [Double] {
        var y = x
        for r in 0..<rows {
            let n = max((0..<c).reduce(0) { $0 + x[r * c + $1] * x[r * c + $1] }.squareRoot(), 1e-12)
            for i in 0..<c { y[r * c + i] = x[r * c + i] / n }
        }
        return y
    }

    public static func weightNorm(_ v: [Double], _ g: [Double]?, rows: Int, columns c: Int) -> [Double] {
        var w = v
        for k in 0..<rows {
            let n = (0..<c).reduce(0) { $0 + v[k * c + $1] * v[k * c + $1] }.squareRoot()
            for i in 0..<c { w[k * c + i] = (g?[k] ?? 1) * v[k * c + i] / n }
        }
        return w
    }

    // MARK: Softmax

    public static func softmax(_ x: [Double], rows: Int, columns k: Int, temperature: Double, logarithm: Bool = false)
        -> [Double] {
        var y = x
        for r in 0..<rows {
            let row = x[(r * k)..<((r + 1) * k)].map { $0 / temperature }
            let m = row.max()!
            let logTotal = log(row.reduce(0) { $0 + exp($1 - m) }) + m
            for i in 0..<k { y[r * k + i] = logarithm ? row[i] - logTotal : exp(row[i] - logTotal) }
        }
        return y
    }
}
