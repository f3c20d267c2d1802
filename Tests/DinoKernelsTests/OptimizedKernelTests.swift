import DinoKernels
import TestSupport
import XCTest

/// Rung 2: the Float kernels against the Double reference twins, and the same bits on 1 and 2 threads.
///
/// Tolerances: a length-k float32 dot product has a relative error bound of about k·2⁻²⁴ ≈ k·6e-8 of
/// Σ|terms|; with k ≤ 100 and terms of mixed sign relative to the output scale, 1e-5 leaves room for
/// cancellation and stays far below any real bug (which shows as errors of order 1e-2 or more).
final class OptimizedKernelTests: XCTestCase {
    override func tearDown() { Parallel.setThreadCount(2) }

    func testLinearForwardAndBackward() {
        let (m, k, n) = (37, 19, 23)
        let x = randomArray(m * k, seed: 1), w = randomArray(n * k, seed: 2), b = randomArray(n, seed: 3)
        let dy = randomArray(m * n, seed: 4)
        let y = kept(FloatBuffer(count: m * n))
        Linear.forward(output: y.pointer, input: input(x), weight: input(w),
                       bias: input(b), rows: m, inputSize: k, outputSize: n)
        assertClose(y.array, Reference.linear(x, w, b, m: m, k: k, n: n), tolerance: 1e-5, "linear forward")
        let dx = kept(FloatBuffer(count: m * k)), dw = kept(FloatBuffer(count: n * k)), db = kept(FloatBuffer(count: n))
        dw.pointer.update(repeating: 1, count: n * k)  // backward accumulates: start from a known value
        Linear.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: input(dy),
                        input: input(x), weight: input(w), rows: m, inputSize: k, outputSize: n)
        let ref = Reference.linearBackward(dy, x, w, m: m, k: k, n: n)
        assertClose(dx.array, ref.dx, tolerance: 1e-5, "linear dx")
        assertClose(dw.array, ref.dw.map { $0 + 1 }, tolerance: 1e-5, "linear dw accumulates")
        assertClose(db.array, ref.db, tolerance: 1e-5, "linear db")
    }

    func testLayerNorm() {
        let (rows, c) = (33, 40)
        let x = randomArray(rows * c, seed: 5, scale: 4).map { $0 + 10 }, w = randomArray(c, seed: 6), b = randomArray(c, seed: 7)
        let dy = randomArray(rows * c, seed: 8)
        let y = kept(FloatBuffer(count: rows * c)), mean = kept(FloatBuffer(count: rows)), rstd = kept(FloatBuffer(count: rows))
        let xb = kept(FloatBuffer(floats(x))), wb = kept(FloatBuffer(floats(w)))
        LayerNorm.forward(output: y.pointer, mean: mean.pointer, rstd: rstd.pointer, input: xb.pointer, weight: wb.pointer,
                          bias: input(b), rows: rows, columns: c)
        assertClose(y.array, Reference.layerNorm(x, w, b, rows: rows, columns: c), tolerance: 1e-5, "layernorm forward")
        let dx = kept(FloatBuffer(count: rows * c)), dw = kept(FloatBuffer(count: c)), db = kept(FloatBuffer(count: c))
        LayerNorm.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: input(dy),
                           input: xb.pointer, weight: wb.pointer, mean: mean.pointer, rstd: rstd.pointer, rows: rows, columns: c)
        let ref = Reference.layerNormBackward(dy, x, w, rows: rows, columns: c)
        // x has mean 10 and spread 4: the centred values lose ~log2(10/4) bits, hence 1e-4 for dx.
        assertClose(dx.array, ref.dx, tolerance: 1e-4, "layernorm dx")
        assertClose(dw.array, ref.dw, tolerance: 1e-5, "layernorm dw")
        assertClose(db.array, ref.db, tolerance: 1e-5, "layernorm db")
    }

    func testGELU() {
        let x = randomArray(1000, seed: 9, scale: 6), dy = randomArray(1000, seed: 10)
        let y = kept(FloatBuffer(count: 1000)), dx = kept(FloatBuffer(count: 1000)), xb = kept(FloatBuffer(floats(x)))
        GELU.forward(output: y.pointer, input: xb.pointer, count: 1000)
        assertClose(y.array, Reference.gelu(x), tolerance: 1e-6, "gelu forward")
        GELU.backward(dInput: dx.pointer, dOutput: input(dy), input: xb.pointer, count: 1000)
        assertClose(dx.array, Reference.geluBackward(dy, x), tolerance: 1e-6, "gelu backward")
        // Exact erf, not the tanh approximation: GELU(1) = 0.8413447, tanh form gives 0.8411920.
        let one = kept(FloatBuffer(count: 1))
        GELU.forward(output: one.pointer, input: input([Float(1)]), count: 1)
        XCTAssertEqual(one[0], 0.8413447, accuracy: 2e-7)
    }

    func testAttention() {
        let (b, n, c, h) = (3, 17, 24, 3)
        let qkv = randomArray(b * n * 3 * c, seed: 11, scale: 2), dOut = randomArray(b * n * c, seed: 12)
        let out = kept(FloatBuffer(count: b * n * c)), probs = kept(FloatBuffer(count: b * h * n * n)), qb = kept(FloatBuffer(floats(qkv)))
        Attention.forward(output: out.pointer, probabilities: probs.pointer, qkv: qb.pointer, batch: b, tokens: n, channels: c, heads: h)
        let ref = Reference.attention(qkv, batch: b, tokens: n, channels: c, heads: h)
        assertClose(out.array, ref.output, tolerance: 1e-5, "attention output")
        assertClose(probs.array, ref.probabilities, tolerance: 1e-5, "attention probabilities")
        let dqkv = kept(FloatBuffer(count: qkv.count))
        Attention.backward(dQKV: dqkv.pointer, dOutput: input(dOut), qkv: qb.pointer,
                           probabilities: probs.pointer, batch: b, tokens: n, channels: c, heads: h)
        assertClose(dqkv.array, Reference.attentionBackward(dOut, qkv, batch: b, tokens: n, channels: c, heads: h),
                    tolerance: 1e-5, "attention dqkv")
    }

    func testPatchEmbeddingMatchesDirectConvolution() {
        let (b, ch, hgt, wid, p, d) = (2, 3, 12, 8, 4, 5)
        let images = randomArray(b * ch * hgt * wid, seed: 13), w = randomArray(d * ch * p * p, seed: 14), bias = randomArray(d, seed: 15)
        let count = b * (hgt / p) * (wid / p)
        let tokens = kept(FloatBuffer(count: count * d)), patches = kept(FloatBuffer(count: count * ch * p * p))
        PatchEmbedding.forward(tokens: tokens.pointer, patches: patches.pointer, images: input(images),
                               weight: input(w), bias: input(bias),
                               batch: b, channels: ch, height: hgt, width: wid, patchSize: p, embedDim: d)
        assertClose(tokens.array, Reference.patchEmbedding(images, w, bias, batch: b, channels: ch, height: hgt, width: wid,
                                                           patch: p, embedDim: d), tolerance: 1e-5, "patch embedding")
    }

    func testBicubicMatrixMatchesReference() {
        let (side, c) = (7, 4)
        let grid = randomArray(side * side * c, seed: 16)
        for (th, tw) in [(3, 3), (5, 9), (14, 14), (2, 7)] {
            let out = kept(FloatBuffer(count: th * tw * c))
            PositionEmbedding.forward(output: out.pointer, grid: input(grid),
                                      matrix: input(PositionEmbedding.interpolationMatrix(side: side, targetHeight: th, targetWidth: tw)),
                                      targetCount: th * tw, sourceCount: side * side, channels: c)
            assertClose(out.array, Reference.bicubic(grid, side: side, channels: c, targetHeight: th, targetWidth: tw),
                        tolerance: 1e-5, "bicubic \(th)x\(tw)")
        }
    }

    func testSoftmax() {
        let x = randomArray(6 * 11, seed: 17, scale: 5)
        for logarithm in [false, true] {
            let y = kept(FloatBuffer(count: x.count))
            Softmax.forward(output: y.pointer, input: input(x), temperature: 0.1, rows: 6, columns: 11, logarithm: logarithm)
            assertClose(y.array, Reference.softmax(x, rows: 6, columns: 11, temperature: 0.1, logarithm: logarithm),
                        tolerance: 1e-5, "softmax log=\(logarithm)")
        }
    }

    /// Every kernel gives the same bits on 1 and 2 threads.
    func testOneAndTwoThreadsAgreeExactly() {
        func run() -> [[Float]] {
            let (b, n, c, h, rows) = (4, 50, 64, 4, 200)
            let qkv = kept(FloatBuffer(floats(randomArray(b * n * 3 * c, seed: 20)))), dOut = kept(FloatBuffer(floats(randomArray(b * n * c, seed: 21))))
            let out = kept(FloatBuffer(count: b * n * c)), probs = kept(FloatBuffer(count: b * h * n * n)), dqkv = kept(FloatBuffer(count: qkv.count))
            Attention.forward(output: out.pointer, probabilities: probs.pointer, qkv: qkv.pointer, batch: b, tokens: n, channels: c, heads: h)
            Attention.backward(dQKV: dqkv.pointer, dOutput: dOut.pointer, qkv: qkv.pointer, probabilities: probs.pointer,
                               batch: b, tokens: n, channels: c, heads: h)
            let x = kept(FloatBuffer(floats(randomArray(rows * c, seed: 22)))), w = kept(FloatBuffer(floats(randomArray(c, seed: 23))))
            let y = kept(FloatBuffer(count: rows * c)), mean = kept(FloatBuffer(count: rows)), rstd = kept(FloatBuffer(count: rows))
            LayerNorm.forward(output: y.pointer, mean: mean.pointer, rstd: rstd.pointer, input: x.pointer, weight: w.pointer,
                              bias: w.pointer, rows: rows, columns: c)
            let dx = kept(FloatBuffer(count: rows * c)), dw = kept(FloatBuffer(count: c)), db = kept(FloatBuffer(count: c))
            LayerNorm.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: x.pointer, input: x.pointer,
                               weight: w.pointer, mean: mean.pointer, rstd: rstd.pointer, rows: rows, columns: c)
            let wide = kept(FloatBuffer(floats(randomArray(rows * 3 * c, seed: 24)))), lw = kept(FloatBuffer(floats(randomArray(3 * c * c, seed: 25))))
            let lin = kept(FloatBuffer(count: rows * 3 * c)), ldx = kept(FloatBuffer(count: rows * c)), ldw = kept(FloatBuffer(count: 3 * c * c)), ldb = kept(FloatBuffer(count: 3 * c))
            Linear.forward(output: lin.pointer, input: x.pointer, weight: lw.pointer, bias: nil, rows: rows, inputSize: c, outputSize: 3 * c)
            Linear.backward(dInput: ldx.pointer, dWeight: ldw.pointer, dBias: ldb.pointer, dOutput: wide.pointer, input: x.pointer,
                            weight: lw.pointer, rows: rows, inputSize: c, outputSize: 3 * c)
            let g = kept(FloatBuffer(count: rows * c))
            GELU.forward(output: g.pointer, input: x.pointer, count: rows * c)
            return [out.array, probs.array, dqkv.array, y.array, dx.array, dw.array, db.array, lin.array, ldx.array, ldw.array, ldb.array, g.array]
        }
        Parallel.setThreadCount(1)
        let one = run()
        Parallel.setThreadCount(2)
        let two = run()
        for (i, (a, b)) in zip(one, two).enumerated() { XCTAssertEqual(a, b, "output \(i) differs between 1 and 2 threads") }
    }
}
