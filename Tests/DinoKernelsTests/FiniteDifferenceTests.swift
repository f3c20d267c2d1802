import DinoKernels
import TestSupport
import XCTest

/// Rung 1: each reference backward pass against central finite differences of its forward pass, in
/// Double, with outputs reduced by a fixed random projection (a plain sum would hide LayerNorm and
/// softmax bugs: Σ LayerNorm(x) and Σ softmax(x) do not depend on x).
final class FiniteDifferenceTests: XCTestCase {
    func testLinear() {
        let (m, k, n) = (3, 5, 4)
        let x = randomArray(m * k, seed: 1), w = randomArray(n * k, seed: 2), b = randomArray(n, seed: 3)
        let r = randomArray(m * n, seed: 4)
        let grads = Reference.linearBackward(r, x, w, m: m, k: k, n: n)
        checkGradient(x, analytic: grads.dx, "linear dx") { projection(Reference.linear($0, w, b, m: m, k: k, n: n), r) }
        checkGradient(w, analytic: grads.dw, "linear dw") { projection(Reference.linear(x, $0, b, m: m, k: k, n: n), r) }
        checkGradient(b, analytic: grads.db, "linear db") { projection(Reference.linear(x, w, $0, m: m, k: k, n: n), r) }
    }

    func testLayerNorm() {
        let (rows, c) = (4, 7)
        let x = randomArray(rows * c, seed: 5, scale: 3), w = randomArray(c, seed: 6), b = randomArray(c, seed: 7)
        let r = randomArray(rows * c, seed: 8)
        let grads = Reference.layerNormBackward(r, x, w, rows: rows, columns: c)
        checkGradient(x, analytic: grads.dx, "layernorm dx") { projection(Reference.layerNorm($0, w, b, rows: rows, columns: c), r) }
        checkGradient(w, analytic: grads.dw, "layernorm dw") { projection(Reference.layerNorm(x, $0, b, rows: rows, columns: c), r) }
        checkGradient(b, analytic: grads.db, "layernorm db") { projection(Reference.layerNorm(x, w, $0, rows: rows, columns: c), r) }
    }

    func testGELU() {
        let x = randomArray(50, seed: 9, scale: 4), r = randomArray(50, seed: 10)
        checkGradient(x, analytic: Reference.geluBackward(r, x), "gelu") { projection(Reference.gelu($0), r) }
    }

    func testAttention() {
        let (b, n, c, h) = (2, 5, 8, 2)
        let qkv = randomArray(b * n * 3 * c, seed: 11, scale: 2), r = randomArray(b * n * c, seed: 12)
        let dqkv = Reference.attentionBackward(r, qkv, batch: b, tokens: n, channels: c, heads: h)
        checkGradient(qkv, analytic: dqkv, samples: 80, "attention dqkv") {
            projection(Reference.attention($0, batch: b, tokens: n, channels: c, heads: h).output, r)
        }
    }

    func testL2NormalizeAndWeightNormAgainstOptimizedBackward() {
        // The optimized L2Normalize and WeightNorm backward passes, run on Float, against finite
        // differences of the Double reference forward passes (tolerance for Float rounding).
        let (rows, c) = (3, 6)
        let x = randomArray(rows * c, seed: 13), r = randomArray(rows * c, seed: 14), g = randomArray(rows, seed: 15)
        let y = floats(Reference.l2Normalize(x, rows: rows, columns: c))
        let dx = kept(FloatBuffer(count: rows * c)), norms = kept(FloatBuffer(count: rows)), out = kept(FloatBuffer(count: rows * c))
        L2Normalize.forward(output: out.pointer, norms: norms.pointer, input: input(x), rows: rows, columns: c)
        assertClose(out.array, y, tolerance: 1e-6, "l2 forward")
        L2Normalize.backward(dInput: dx.pointer, dOutput: input(r), output: out.pointer,
                             norms: norms.pointer, rows: rows, columns: c)
        checkGradient(x, analytic: doubles(dx.array), tolerance: 1e-5, "l2 normalize") {
            projection(Reference.l2Normalize($0, rows: rows, columns: c), r)
        }
        let dv = kept(FloatBuffer(count: rows * c)), dg = kept(FloatBuffer(count: rows)), w = kept(FloatBuffer(count: rows * c))
        let vb = kept(FloatBuffer(floats(x))), gb = kept(FloatBuffer(floats(g)))
        WeightNorm.forward(weight: w.pointer, norms: norms.pointer, direction: vb.pointer, magnitude: gb.pointer, rows: rows, columns: c)
        assertClose(w.array, Reference.weightNorm(x, g, rows: rows, columns: c), tolerance: 1e-6, "weight norm forward")
        WeightNorm.backward(dDirection: dv.pointer, dMagnitude: dg.pointer, dWeight: input(r),
                            direction: vb.pointer, magnitude: gb.pointer, norms: norms.pointer, rows: rows, columns: c)
        checkGradient(x, analytic: doubles(dv.array), tolerance: 1e-5, "weight norm dv") {
            projection(Reference.weightNorm($0, g, rows: rows, columns: c), r)
        }
        checkGradient(g, analytic: doubles(dg.array), tolerance: 1e-5, "weight norm dg") {
            projection(Reference.weightNorm(x, $0, rows: rows, columns: c), r)
        }
    }

    func testPositionEmbeddingBackwardIsTheAdjoint() {
        let (side, c, th, tw) = (4, 3, 3, 5)
        let grid = randomArray(side * side * c, seed: 16), r = randomArray(th * tw * c, seed: 17)
        let matrix = PositionEmbedding.interpolationMatrix(side: side, targetHeight: th, targetWidth: tw)
        let dGrid = kept(FloatBuffer(count: grid.count))
        PositionEmbedding.backward(dGrid: dGrid.pointer, dOutput: input(r),
                                   matrix: input(matrix), targetCount: th * tw, sourceCount: side * side, channels: c)
        checkGradient(grid, analytic: doubles(dGrid.array), tolerance: 1e-5, "bicubic interpolation") {
            projection(Reference.bicubic($0, side: side, channels: c, targetHeight: th, targetWidth: tw), r)
        }
    }

    /// The antialiased and `size=` rules (DINOv2) are linear too: backward is the adjoint of forward.
    func testDINOv2InterpolationBackwardIsTheAdjoint() {
        let (side, c) = (6, 2)
        let grid = randomArray(side * side * c, seed: 18)
        for (th, tw, offset, antialias) in [(3, 4, 0.0, true), (8, 9, 0.0, true), (4, 4, 0.0, false)] {
            let r = randomArray(th * tw * c, seed: 19)
            let matrix = PositionEmbedding.interpolationMatrix(side: side, targetHeight: th, targetWidth: tw, offset: offset,
                                                               antialias: antialias)
            let dGrid = kept(FloatBuffer(count: grid.count))
            PositionEmbedding.backward(dGrid: dGrid.pointer, dOutput: input(r),
                                       matrix: input(matrix), targetCount: th * tw, sourceCount: side * side, channels: c)
            checkGradient(grid, analytic: doubles(dGrid.array), tolerance: 1e-5, "interpolation \(th)x\(tw) antialias \(antialias)") {
                projection(Reference.bicubic($0, side: side, channels: c, targetHeight: th, targetWidth: tw, offset: offset,
                                             antialias: antialias), r)
            }
        }
    }

    func testSwiGLU() {
        let (rows, h) = (3, 5)
        let x = randomArray(rows * 2 * h, seed: 20, scale: 4), r = randomArray(rows * h, seed: 21)
        checkGradient(x, analytic: Reference.swiGLUBackward(r, x, rows: rows, hidden: h), "swiglu") {
            projection(Reference.swiGLU($0, rows: rows, hidden: h), r)
        }
    }

    func testLayerScale() {
        let (rows, c) = (4, 6)
        let x = randomArray(rows * c, seed: 22), gamma = randomArray(c, seed: 23), r = randomArray(rows * c, seed: 24)
        let grads = Reference.layerScaleBackward(r, x, gamma, columns: c)
        checkGradient(x, analytic: grads.dx, "layer scale dx") { projection(Reference.layerScale($0, gamma, columns: c), r) }
        checkGradient(gamma, analytic: grads.dGamma, "layer scale dgamma") { projection(Reference.layerScale(x, $0, columns: c), r) }
    }

    func testDropPathScalesMatchTheOfficialMask() {
        // floor(keep + u)/keep: u < 1 − keep drops the sample, otherwise it is scaled by 1/keep.
        XCTAssertEqual(DropPath.scales(keepProbability: 0.75, uniforms: [0.1, 0.3, 0.9]), [0, 1 / 0.75, 1 / 0.75])
    }
}
