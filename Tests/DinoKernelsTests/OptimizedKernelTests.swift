import CDinoKernels
import DinoKernels
import Foundation
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

    /// The fused forms of the block: bias + GELU applied per finished block of the product, and the
    /// residual added in the product's initialization, and the backward through the GELU applied per block
    /// of the input-gradient product. Shapes reach row tiles, column tiles (n > 1024, so blocks start
    /// mid-row) and the k-split path; against Double twins, same bits on 1 and 2 threads.
    func testFusedLinearGELUAndResidual() {
        for (m, k, n) in [(37, 19, 23), (300, 16, 2100), (260, 2100, 40)] {
            let x = randomArray(m * k, seed: 5), w = randomArray(n * k, seed: 6), b = randomArray(n, seed: 7)
            let r = randomArray(m * n, seed: 8)
            let linear = Reference.linear(x, w, b, m: m, k: k, n: n)
            let tolerance = 1e-5 * max(1, Double(k).squareRoot() / 4)
            var bits: [[Float]] = []
            for threads in [1, 2] {
                Parallel.setThreadCount(threads)
                let y = kept(FloatBuffer(count: m * n)), g = kept(FloatBuffer(count: m * n)), z = kept(FloatBuffer(count: m * n))
                Linear.forwardGELU(output: y.pointer, activated: g.pointer, input: input(x), weight: input(w), bias: input(b),
                                   rows: m, inputSize: k, outputSize: n)
                assertClose(y.array, linear, tolerance: tolerance, "fc1 pre-activation \(m)x\(k)x\(n)")
                assertClose(g.array, Reference.gelu(linear), tolerance: tolerance, "fc1 GELU \(m)x\(k)x\(n)")
                Linear.forward(output: z.pointer, input: input(x), weight: input(w), bias: input(b),
                               rows: m, inputSize: k, outputSize: n, residual: input(r))
                assertClose(z.array, zip(linear, r).map { $0 + $1 }, tolerance: tolerance, "residual \(m)x\(k)x\(n)")
                // Backward through the GELU into an m×n input gradient (this layer's input GELU(y), its
                // output size k): the same bits as the product followed by the separate GELU pass.
                let dOut = randomArray(m * k, seed: 9), wT = randomArray(k * n, seed: 10)
                let fused = kept(FloatBuffer(count: m * n)), separate = kept(FloatBuffer(count: m * n))
                Linear.backward(dInput: fused.pointer, dWeight: nil, dBias: nil, dOutput: input(dOut), input: g.pointer,
                                weight: input(wT), rows: m, inputSize: n, outputSize: k, overwriteInput: true, geluInput: y.pointer)
                Linear.backward(dInput: separate.pointer, dWeight: nil, dBias: nil, dOutput: input(dOut), input: g.pointer,
                                weight: input(wT), rows: m, inputSize: n, outputSize: k, overwriteInput: true)
                GELU.backwardInPlace(gradient: separate.pointer, input: y.pointer, count: m * n)
                XCTAssertEqual(fused.array, separate.array, "backward through GELU \(m)x\(k)x\(n)")
                bits.append(y.array + g.array + z.array + fused.array)
            }
            XCTAssertEqual(bits[0], bits[1], "fused linear \(m)x\(k)x\(n): 1 and 2 threads differ")
        }
    }

    /// Scratch buffers are reused (the smallest that fits), concurrent holders get distinct buffers,
    /// and the pool keeps at most its capacity, preferring the larger buffers.
    func testScratchPoolReusesBestFitAndStaysBounded() {
        let pool = ScratchPool(capacity: 2)
        let small = pool.take(count: 100), large = pool.take(count: 1000)
        XCTAssertFalse(small === large)
        XCTAssertGreaterThanOrEqual(small.count, 100)
        pool.give(large); pool.give(small)
        let fit = pool.take(count: 50)
        XCTAssertTrue(fit === small, "the smallest buffer that fits")
        let held = pool.take(count: 60)
        XCTAssertTrue(held === large, "a held buffer is not handed out twice")
        XCTAssertEqual(pool.take(count: 2000).count, 2000, "nothing cached fits: a new buffer")
        pool.give(fit); pool.give(held)
        pool.give(FloatBuffer(count: 5000))  // full: replaces the smallest (100)
        XCTAssertTrue(pool.take(count: 10) === held, "the 100-float buffer was dropped")
        XCTAssertEqual(pool.take(count: 10).count, 5000)
    }

    /// The worker pool covers every index exactly once: plain calls, a call made from inside a range
    /// (the pool is busy: it runs on Dispatch), and calls from two threads at once.
    func testParallelCoversEveryIndexOnceFromAnyCaller() {
        Parallel.setThreadCount(2)
        func coverage(_ count: Int, nested: Bool) -> [Int] {
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: count)
            counts.initialize(repeating: 0, count: count)
            defer { counts.deallocate() }
            Parallel.forEachRange(count) { range in
                for i in range {
                    if nested {
                        var inner = 0
                        let lock = NSLock()
                        Parallel.forEachRange(10) { r in lock.lock(); inner += r.count; lock.unlock() }
                        counts[i] += inner == 10 ? 1 : 100
                    } else {
                        counts[i] += 1
                    }
                }
            }
            return Array(UnsafeBufferPointer(start: counts, count: count))
        }
        XCTAssertEqual(coverage(1001, nested: false), Array(repeating: 1, count: 1001))
        XCTAssertEqual(coverage(37, nested: true), Array(repeating: 1, count: 37))
        var results = [[Int]](repeating: [], count: 4)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            let result = coverage(5000 + caller, nested: false)
            lock.lock(); results[caller] = result; lock.unlock()
        }
        for caller in 0..<4 { XCTAssertEqual(results[caller], Array(repeating: 1, count: 5000 + caller)) }
    }

    /// GEMM is cut into pieces by shape: row and column tiles, or inner-dimension chunks summed in
    /// a fixed order (a small C with a long k, as weight gradients). Every path against a Double
    /// product, with both transposes, β = 1 and a bias row, and the same bits on 1 and 2 threads.
    /// Changing the thread count retires the old pool: its workers exit instead of idling forever.
    func testChangingTheThreadCountRetiresTheOldWorkers() {
        defer { Parallel.setThreadCount(2) }
        func settle(to expected: Int) {
            let deadline = Date().addingTimeInterval(5)
            while Parallel.workerThreadsAlive != expected && Date() < deadline { usleep(1000) }
            XCTAssertEqual(Parallel.workerThreadsAlive, expected)
        }
        let covered = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { covered.deallocate() }
        for threads in [3, 4, 1, 2] {
            Parallel.setThreadCount(threads)
            covered.initialize(repeating: 0, count: 64)
            Parallel.forEachRange(64) { range in for i in range { covered[i] += 1 } }
            XCTAssertEqual((0..<64).map { covered[$0] }, Array(repeating: 1, count: 64))
            settle(to: threads == 1 ? 0 : threads - 1)   // one pool of `threads`: the caller plus threads − 1 workers
        }
    }

    func testGEMMPiecesMatchReferenceAndThreads() {
        // (m, n, k): one tile; row tiles; column tiles (n > 1024); k split in 2 and in 4 chunks.
        for (m, n, k) in [(7, 9, 5), (600, 40, 24), (130, 2100, 8), (40, 30, 2500), (50, 30, 4100)] {
            for (transposeA, transposeB) in [(false, true), (true, false), (false, false)] {
                let a = randomArray(m * k, seed: 30), b = randomArray(k * n, seed: 31), c0 = randomArray(m * n, seed: 32)
                let bias = randomArray(n, seed: 33)
                // β = 1 (C accumulates), and a bias row (C's old contents are overwritten).
                for withBias in [false, true] {
                    var expected = [Double](repeating: 0, count: m * n)
                    for i in 0..<m {
                        for j in 0..<n {
                            var total = 0.0
                            for p in 0..<k {
                                total += (transposeA ? a[p * m + i] : a[i * k + p]) * (transposeB ? b[j * k + p] : b[p * n + j])
                            }
                            expected[i * n + j] = 0.5 * total + (withBias ? bias[j] : c0[i * n + j])
                        }
                    }
                    var bits: [[Float]] = []
                    for threads in [1, 2] {
                        Parallel.setThreadCount(threads)
                        let c = kept(FloatBuffer(floats(c0)))
                        GEMM.multiply(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                                      a: input(a), lda: transposeA ? m : k, b: input(b), ldb: transposeB ? k : n,
                                      beta: 1, c: c.pointer, ldc: n, bias: withBias ? input(bias) : nil)
                        // A length-k float dot product: relative error ~k·6e-8 of Σ|terms| ≈ √k·(output scale).
                        assertClose(c.array, expected, tolerance: 2e-5 * Double(k).squareRoot() / 10,
                                    "gemm \(m)x\(n)x\(k) tA \(transposeA) tB \(transposeB) bias \(withBias) \(threads) thread(s)")
                        bits.append(c.array)
                    }
                    XCTAssertEqual(bits[0], bits[1], "gemm \(m)x\(n)x\(k): 1 and 2 threads differ")
                }
            }
        }
        XCTAssertEqual(GEMM.innerChunks(m: 50, n: 30, k: 4100), 4)
        XCTAssertEqual(GEMM.innerChunks(m: 40, n: 30, k: 2500), 2)
        XCTAssertEqual(GEMM.innerChunks(m: 768, n: 192, k: 6400), 4)  // ViT-T/4's fc1 weight gradient
        XCTAssertEqual(GEMM.innerChunks(m: 6400, n: 192, k: 768), 1)  // its input gradient: row tiles
        XCTAssertEqual(GEMM.tileSides(m: 6400, n: 576).columns, 576)
        // One thread's bfloat16 tiles: the recipe's shard shapes in one or two tiles of at most 2¹⁸ floats,
        // rows in multiples of 32 (AMX blocks), columns as in `tileSides`.
        XCTAssertTrue(GEMM.serialTileSides(m: 640, n: 384) == (640, 384))
        XCTAssertTrue(GEMM.serialTileSides(m: 960, n: 384) == (480, 384))
        XCTAssertTrue(GEMM.serialTileSides(m: 6400, n: 576) == (448, 576))
        XCTAssertTrue(GEMM.serialTileSides(m: 7, n: 9) == (7, 9))
    }

    func testLayerNorm() {
        // Column counts: vector-only (40), a scalar tail (37), several 64-column blocks of parameter
        // gradients with a tail (200).
        for (rows, c) in [(33, 40), (9, 37), (70, 200)] {
            let x = randomArray(rows * c, seed: 5, scale: 4).map { $0 + 10 }, w = randomArray(c, seed: 6), b = randomArray(c, seed: 7)
            let dy = randomArray(rows * c, seed: 8)
            let ref = Reference.layerNormBackward(dy, x, w, rows: rows, columns: c)
            var results: [[[Float]]] = []
            forEachKernelVariant { variant in
                for threads in [1, 2] {
                    Parallel.setThreadCount(threads)
                    let label = "layernorm \(rows)x\(c) \(variant) \(threads) thread(s)"
                    let y = kept(FloatBuffer(count: rows * c)), mean = kept(FloatBuffer(count: rows)), rstd = kept(FloatBuffer(count: rows))
                    let xb = kept(FloatBuffer(floats(x))), wb = kept(FloatBuffer(floats(w)))
                    LayerNorm.forward(output: y.pointer, mean: mean.pointer, rstd: rstd.pointer, input: xb.pointer, weight: wb.pointer,
                                      bias: input(b), rows: rows, columns: c)
                    assertClose(y.array, Reference.layerNorm(x, w, b, rows: rows, columns: c), tolerance: 1e-5, "\(label) forward")
                    // Backward accumulates into all three: start from ones.
                    let dx = kept(FloatBuffer(floats(Array(repeating: 1, count: rows * c))))
                    let dw = kept(FloatBuffer(floats(Array(repeating: 1, count: c)))), db = kept(FloatBuffer(floats(Array(repeating: 1, count: c))))
                    LayerNorm.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: input(dy),
                                       input: xb.pointer, weight: wb.pointer, mean: mean.pointer, rstd: rstd.pointer, rows: rows, columns: c)
                    // x has mean 10 and spread 4: the centred values lose ~log2(10/4) bits, hence 1e-4 for dx.
                    assertClose(dx.array, ref.dx.map { $0 + 1 }, tolerance: 1e-4, "\(label) dx")
                    assertClose(dw.array, ref.dw.map { $0 + 1 }, tolerance: 1e-5, "\(label) dw")
                    assertClose(db.array, ref.db.map { $0 + 1 }, tolerance: 1e-5, "\(label) db")
                    results.append([y.array, dx.array, dw.array, db.array])
                }
            }
            // The same bits on 1 and 2 threads, for each variant.
            for pair in stride(from: 0, to: results.count, by: 2) { XCTAssertEqual(results[pair], results[pair + 1], "layernorm \(rows)x\(c) threads") }
        }
    }

    func testColumnSums() {
        // (rows, first, last, width = row stride): all of 2,100 columns (two 1,024-column groups, then 48
        // in vectors and a scalar tail of 4), 13 columns (one vector and a tail), and a block of a wider
        // matrix (columns 64..<96 of 96: the qkv bias's 2d..<3d of 3d at d = 32).
        for (rows, first, last, width) in [(50, 0, 2100, 2100), (7, 0, 13, 13), (33, 64, 96, 96)] {
            let dy = randomArray(rows * width, seed: 40), x = randomArray(rows * width, seed: 41, scale: 3)
            let mean = randomArray(rows, seed: 42), rstd = randomArray(rows, seed: 43).map { abs($0) + 0.5 }
            var expectedBias = [Double](repeating: 1, count: width), expectedWeight = [Double](repeating: 1, count: width)
            for r in 0..<rows {
                for j in first..<last {
                    expectedBias[j] += dy[r * width + j]
                    expectedWeight[j] += dy[r * width + j] * (x[r * width + j] - mean[r]) * rstd[r]
                }
            }
            var results: [[Float]] = []
            forEachKernelVariant { variant in
                for threads in [1, 2, 3] {
                    Parallel.setThreadCount(threads)
                    let dBias = kept(FloatBuffer(floats(Array(repeating: 1, count: width))))
                    let dWeight = kept(FloatBuffer(floats(Array(repeating: 1, count: width))))
                    let dBiasOnly = kept(FloatBuffer(floats(Array(repeating: 1, count: width))))
                    ColumnSums.accumulate(dWeight: dWeight.pointer, dBias: dBias.pointer, dOutput: input(dy), input: input(x),
                                          mean: input(mean), rstd: input(rstd), rows: rows, rowStride: width, columns: first..<last)
                    ColumnSums.accumulate(dWeight: nil, dBias: dBiasOnly.pointer, dOutput: input(dy), rows: rows,
                                          rowStride: width, columns: first..<last)
                    let label = "column sums \(rows)x\(first)..<\(last) of \(width) \(variant) \(threads) thread(s)"
                    // Sums of `rows` terms of order 1: float error ~rows·6e-8 of Σ|terms|.
                    assertClose(dBias.array, expectedBias, tolerance: 1e-5, "\(label) bias")
                    assertClose(dWeight.array, expectedWeight, tolerance: 1e-5, "\(label) weight")
                    XCTAssertEqual(dBiasOnly.array, dBias.array, "\(label): the bias sums alone and with the weight sums")
                    results.append(dBias.array + dWeight.array)
                }
            }
            // The same bits on 1, 2 and 3 threads (splits at other multiples of 8 columns), for each variant.
            for v in stride(from: 0, to: results.count, by: 3) {
                XCTAssertEqual(results[v], results[v + 1], "column sums \(rows)x\(last): 1 and 2 threads")
                XCTAssertEqual(results[v], results[v + 2], "column sums \(rows)x\(last): 1 and 3 threads")
            }
        }
    }

    /// Runs `body` with each kernel variant the CPU has: AVX2 with its AVX-512 parts, AVX2 alone, and
    /// the portable C kernels.
    func forEachKernelVariant(_ body: (String) -> Void) {
        if dino_kernels_use_avx512() == 1 { body("avx512") }
        dino_kernels_allow_avx512(0)
        defer { dino_kernels_allow_avx512(1) }
        if dino_kernels_use_avx2() == 1 { body("avx2") }
        dino_kernels_force_portable(1)
        defer { dino_kernels_force_portable(0) }
        body("portable")
    }

    /// The AVX-512 parts compute each element by the AVX2 code's operations: the same bits, so the
    /// goldens, the thread-count checks and resumed runs do not depend on which a CPU runs.
    func assertAVX512MatchesAVX2(_ results: [String: [Float]], _ label: String) {
        guard let wide = results["avx512"], let narrow = results["avx2"] else { return }
        XCTAssertEqual(wide.count, narrow.count, label)
        let differing = zip(wide, narrow).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertEqual(differing, 0, "\(label): \(differing) values differ between the AVX-512 and AVX2 kernels")
    }

    func testGELU() {
        // erf as a rational polynomial has absolute error < 5e-7 (checked on a dense grid when it
        // was fitted); 1e-6 of max(1, |y|) covers it plus float rounding of the products.
        // Far tails and extremes included: the clamps and exp's underflow take the same path in every variant.
        let x = randomArray(1003, seed: 9, scale: 6) + [-200, -87.5, -30, -9, 0, 9, 30, 87.5, 200]
        let count = x.count, dy = randomArray(count, seed: 10)
        var forward: [String: [Float]] = [:], backward: [String: [Float]] = [:], inPlaceResults: [String: [Float]] = [:]
        forEachKernelVariant { variant in
            let y = kept(FloatBuffer(count: count)), dx = kept(FloatBuffer(count: count)), xb = kept(FloatBuffer(floats(x)))
            GELU.forward(output: y.pointer, input: xb.pointer, count: count)
            assertClose(y.array, Reference.gelu(x), tolerance: 1e-6, "gelu forward (\(variant))")
            dx.pointer.update(repeating: 1, count: count)  // backward accumulates
            GELU.backward(dInput: dx.pointer, dOutput: input(dy), input: xb.pointer, count: count)
            assertClose(dx.array, Reference.geluBackward(dy, x).map { $0 + 1 }, tolerance: 1e-6, "gelu backward (\(variant))")
            let inPlace = kept(FloatBuffer(floats(dy)))
            GELU.backwardInPlace(gradient: inPlace.pointer, input: xb.pointer, count: count)
            assertClose(inPlace.array, Reference.geluBackward(dy, x), tolerance: 1e-6, "gelu in place (\(variant))")
            (forward[variant], backward[variant], inPlaceResults[variant]) = (y.array, dx.array, inPlace.array)
            // A value's result does not depend on where it sits (vector body or tail): what makes any
            // split over threads give the same bits.
            for i in [0, 7, 8, 1001, 1002] {
                let single = kept(FloatBuffer(count: 1))
                GELU.forward(output: single.pointer, input: xb.pointer + i, count: 1)
                XCTAssertEqual(single[0], y[i], "gelu of element \(i) alone (\(variant))")
            }
            // Exact erf, not the tanh approximation: GELU(1) = 0.8413447, tanh form gives 0.8411920.
            let one = kept(FloatBuffer(count: 1))
            GELU.forward(output: one.pointer, input: input([Float(1)]), count: 1)
            XCTAssertEqual(one[0], 0.8413447, accuracy: 2e-7, variant)
            // Far tails: GELU(x) → 0 for x ≪ 0 and → x for x ≫ 0; the derivative → 0 and 1.
            let tails = kept(FloatBuffer(count: 4))
            GELU.forward(output: tails.pointer, input: input([Float(-30), -9, 9, 30]), count: 4)
            XCTAssertEqual(tails.array, [0, 0, 9, 30], variant)
        }
        assertAVX512MatchesAVX2(forward, "gelu forward")
        assertAVX512MatchesAVX2(backward, "gelu backward")
        assertAVX512MatchesAVX2(inPlaceResults, "gelu backward in place")
    }

    /// The AdamW update is elementwise with no sums, so every variant must give the plain loop's bits
    /// exactly (any fused multiply-add or reordering shows as differing elements), clipped or not, with
    /// or without the teacher (each its own compiled loop), in the vector bodies (1003 elements) and the tails.
    func testAdamWUpdateGivesThePlainLoopsBits() {
        var cases: [(count: Int, scale: Float, withTeacher: Bool)] = []
        for count in [1, 17, 1003] { for scale: Float in [1, 0.37] { for t in [true, false] { cases.append((count, scale, t)) } } }
        for (count, scale, withTeacher) in cases {
            let p0 = floats(randomArray(count, seed: 11)), g0 = floats(randomArray(count, seed: 12, scale: 0.1))
            let m0 = floats(randomArray(count, seed: 13, scale: 0.01)), t0 = floats(randomArray(count, seed: 15))
            let v0 = floats(randomArray(count, seed: 14, scale: 0.01)).map { $0 * $0 }
            let s = DinoAdamWScalars(gradientScale: scale, decay: 1 - 0.016 * 0.04, oneMinusBeta1: 1 - 0.9, beta2: 0.999,
                                     oneMinusBeta2: 1 - 0.999, stepSize: 0.016 / 0.271, secondMomentCorrectionRoot: 0.0632,
                                     epsilon: 1e-8, teacherMomentum: 0.98, oneMinusTeacherMomentum: 1 - 0.98)
            // The plain loop, written out as the optimizer's formula.
            var (p, g, m, v, t) = (p0, g0, m0, v0, t0)
            for i in 0..<count {
                g[i] = g0[i] * s.gradientScale
                m[i] = m0[i] + (g[i] - m0[i]) * s.oneMinusBeta1
                v[i] = v0[i] * s.beta2 + s.oneMinusBeta2 * g[i] * g[i]
                p[i] = p0[i] * s.decay - s.stepSize * m[i] / (v[i].squareRoot() / s.secondMomentCorrectionRoot + s.epsilon)
                t[i] = t0[i] * s.teacherMomentum + s.oneMinusTeacherMomentum * p[i]
            }
            forEachKernelVariant { variant in
                let label = "adamw \(count) scale \(scale) teacher \(withTeacher) (\(variant))"
                let (pb, gb, mb, vb, tb) = (kept(FloatBuffer(p0)), kept(FloatBuffer(g0)), kept(FloatBuffer(m0)),
                                            kept(FloatBuffer(v0)), kept(FloatBuffer(t0)))
                withUnsafePointer(to: s) {
                    dino_adamw_update(pb.pointer, gb.pointer, mb.pointer, vb.pointer, withTeacher ? tb.pointer : nil, count, $0)
                }
                for (name, got, want) in [("p", pb.array, p), ("g", gb.array, g), ("m", mb.array, m), ("v", vb.array, v),
                                          ("t", tb.array, withTeacher ? t : t0)] {
                    let differing = zip(got, want).filter { $0.bitPattern != $1.bitPattern }.count
                    XCTAssertEqual(differing, 0, "\(label): \(differing) values of \(name) differ from the plain loop")
                }
            }
        }
    }

    func testAttention() {
        // (tokens, channels, heads): head sizes 8, 32, 64 and 25 (a scalar column tail); token counts
        // across the 16-column tiles (1, 5, 17, 50) and the 4-row tiles.
        // With AVX-512: 32-column tiles for widths ≥ 32 (score rows padded to 8 columns), with 16-column rests
        // (n 45: 48 wide) and 8-column rests (n 33 and 65: 40 and 72 wide; d 40).
        // (10, 96, 3) and (5, 96, 3): the Fashion-MNIST recipe's global and local crops.
        for (n, c, h) in [(17, 24, 3), (1, 64, 2), (5, 64, 1), (50, 128, 2), (33, 50, 2), (65, 80, 2), (45, 64, 2), (10, 96, 3),
                          (5, 96, 3)] {
            let b = 3
            let qkv = randomArray(b * n * 3 * c, seed: 11, scale: 2), dOut = randomArray(b * n * c, seed: 12)
            let ref = Reference.attention(qkv, batch: b, tokens: n, channels: c, heads: h)
            let dRef = Reference.attentionBackward(dOut, qkv, batch: b, tokens: n, channels: c, heads: h)
            var results: [String: [Float]] = [:]
            forEachKernelVariant { variant in
                let label = "n \(n) d \(c / h) \(variant)"
                let out = kept(FloatBuffer(count: b * n * c)), probs = kept(FloatBuffer(count: b * h * n * n)), qb = kept(FloatBuffer(floats(qkv)))
                Attention.forward(output: out.pointer, probabilities: probs.pointer, qkv: qb.pointer, batch: b, tokens: n, channels: c, heads: h)
                assertClose(out.array, ref.output, tolerance: 1e-5, "attention output \(label)")
                assertClose(probs.array, ref.probabilities, tolerance: 1e-5, "attention probabilities \(label)")
                let dqkv = kept(FloatBuffer(floats(Array(repeating: 1, count: qkv.count))))  // backward accumulates
                Attention.backward(dQKV: dqkv.pointer, dOutput: input(dOut), qkv: qb.pointer,
                                   probabilities: probs.pointer, batch: b, tokens: n, channels: c, heads: h)
                assertClose(dqkv.array, dRef.map { $0 + 1 }, tolerance: 1e-5, "attention dqkv \(label)")
                results[variant] = out.array + probs.array + dqkv.array
            }
            assertAVX512MatchesAVX2(results, "attention n \(n) d \(c / h)")
            // The first Q query rows alone (Q = 1: a class-token-only last block) against all n keys:
            // the same rows of output and probabilities, and the backward of a dOutput that is zero elsewhere.
            let d = c / h
            for queries in Set([1, min(3, n)]) {
                var dOutRows = dOut
                for i in 0..<dOut.count where (i / c) % n >= queries { dOutRows[i] = 0 }
                let dRows = Reference.attentionBackward(dOutRows, qkv, batch: b, tokens: n, channels: c, heads: h)
                let firstRows = (0..<b).flatMap { image in ref.output[(image * n * c)..<((image * n + queries) * c)] }
                let firstProbabilities = (0..<(b * h)).flatMap { block in
                    ref.probabilities[(block * n * n)..<(block * n * n + queries * n)]
                }
                let compactDOut = (0..<b).flatMap { image in dOut[(image * n * c)..<((image * n + queries) * c)] }
                var rowResults: [String: [Float]] = [:]
                forEachKernelVariant { variant in
                    let label = "n \(n) d \(d) queries \(queries) \(variant)"
                    let out = kept(FloatBuffer(count: b * queries * c)), probs = kept(FloatBuffer(count: b * h * n * n))
                    let qb = kept(FloatBuffer(floats(qkv)))
                    Attention.forward(output: out.pointer, probabilities: probs.pointer, qkv: qb.pointer, batch: b, tokens: n,
                                      channels: c, heads: h, queries: queries)
                    assertClose(out.array, firstRows, tolerance: 1e-5, "attention output \(label)")
                    let written = (0..<(b * h)).flatMap { block in probs.array[(block * n * n)..<(block * n * n + queries * n)] }
                    assertClose(written, firstProbabilities, tolerance: 1e-5, "attention probabilities \(label)")
                    let dqkv = kept(FloatBuffer(floats(Array(repeating: 1, count: qkv.count))))
                    Attention.backward(dQKV: dqkv.pointer, dOutput: input(compactDOut), qkv: qb.pointer, probabilities: probs.pointer,
                                       batch: b, tokens: n, channels: c, heads: h, queries: queries)
                    assertClose(dqkv.array, dRows.map { $0 + 1 }, tolerance: 1e-5, "attention dqkv \(label)")
                    rowResults[variant] = out.array + written + dqkv.array
                }
                assertAVX512MatchesAVX2(rowResults, "attention n \(n) d \(d) queries \(queries)")
            }
        }
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

    /// DINOv2's rules (`size=`, antialiased) against the Double twin, shrinking and enlarging.
    func testDINOv2InterpolationMatricesMatchReference() {
        let (side, c) = (7, 3)
        let grid = randomArray(side * side * c, seed: 25)
        for (th, tw) in [(3, 3), (5, 9), (16, 11)] {
            for antialias in [false, true] {
                let out = kept(FloatBuffer(count: th * tw * c))
                let matrix = PositionEmbedding.interpolationMatrix(side: side, targetHeight: th, targetWidth: tw, offset: 0,
                                                                   antialias: antialias)
                PositionEmbedding.forward(output: out.pointer, grid: input(grid), matrix: input(matrix),
                                          targetCount: th * tw, sourceCount: side * side, channels: c)
                assertClose(out.array, Reference.bicubic(grid, side: side, channels: c, targetHeight: th, targetWidth: tw, offset: 0,
                                                         antialias: antialias), tolerance: 1e-5, "bicubic \(th)x\(tw) antialias \(antialias)")
            }
        }
    }

    /// SwiGLU and LayerScale, forward and backward, against the Double twins; the same bits on 1 and 2 threads
    /// (LayerScale's gamma gradient sums rows in order per column).
    func testSwiGLUAndLayerScale() {
        let (rows, h, c) = (37, 21, 19)
        let x = randomArray(rows * 2 * h, seed: 26, scale: 3), dy = randomArray(rows * h, seed: 27)
        let y = randomArray(rows * c, seed: 28), gamma = randomArray(c, seed: 29), dz = randomArray(rows * c, seed: 30)
        var bits: [[Float]] = []
        for threads in [1, 2] {
            Parallel.setThreadCount(threads)
            let out = kept(FloatBuffer(count: rows * h)), dx = kept(FloatBuffer(count: rows * 2 * h))
            SwiGLU.forward(output: out.pointer, input: input(x), rows: rows, hidden: h)
            SwiGLU.backward(dInput: dx.pointer, dOutput: input(dy), input: input(x), rows: rows, hidden: h)
            assertClose(out.array, Reference.swiGLU(x, rows: rows, hidden: h), tolerance: 1e-6, "swiglu forward")
            assertClose(dx.array, Reference.swiGLUBackward(dy, x, rows: rows, hidden: h), tolerance: 1e-6, "swiglu backward")
            let scaled = kept(FloatBuffer(count: rows * c)), dGamma = kept(FloatBuffer(count: c))
            let gradient = kept(FloatBuffer(floats(dz)))
            LayerScale.forward(output: scaled.pointer, input: input(y), gamma: input(gamma), rows: rows, columns: c)
            LayerScale.backward(dGamma: dGamma.pointer, gradient: gradient.pointer, input: input(y), gamma: input(gamma), rows: rows, columns: c)
            let reference = Reference.layerScaleBackward(dz, y, gamma, columns: c)
            assertClose(scaled.array, Reference.layerScale(y, gamma, columns: c), tolerance: 1e-6, "layer scale forward")
            assertClose(gradient.array, reference.dx, tolerance: 1e-6, "layer scale dx")
            assertClose(dGamma.array, reference.dGamma, tolerance: 1e-5, "layer scale dgamma")
            bits.append(out.array + dx.array + scaled.array + gradient.array + dGamma.array)
        }
        XCTAssertEqual(bits[0], bits[1], "SwiGLU / LayerScale: 1 and 2 threads differ")
    }

    /// Softmax and log-softmax with the teacher's centering shift, and each row's log Σ exp (the entropy's
    /// normalizer), against Double: a tail-only row (11), whole vectors (16), a prototype count with a
    /// tail (1029), each kernel variant.
    func testSoftmax() {
        for (rows, k) in [(6, 11), (3, 16), (4, 1029)] {
            let x = randomArray(rows * k, seed: 17, scale: 5), shift = randomArray(k, seed: 18)
            let shifted = (0..<(rows * k)).map { x[$0] - shift[$0 % k] }
            let expectedNormalizers = (0..<rows).map { r -> Double in
                let y = shifted[(r * k)..<((r + 1) * k)].map { $0 / 0.1 }, m = y.max()!
                return log(y.reduce(0) { $0 + exp($1 - m) }) + m
            }
            forEachKernelVariant { variant in
                for logarithm in [false, true] {
                    let y = kept(FloatBuffer(count: x.count)), normalizers = kept(FloatBuffer(count: rows))
                    Softmax.forward(output: y.pointer, input: input(x), shift: input(shift), temperature: 0.1, rows: rows, columns: k,
                                    logarithm: logarithm, logNormalizers: normalizers.pointer)
                    assertClose(y.array, Reference.softmax(shifted, rows: rows, columns: k, temperature: 0.1, logarithm: logarithm),
                                tolerance: 1e-5, "softmax \(rows)x\(k) log=\(logarithm) (\(variant))")
                    assertClose(normalizers.array, expectedNormalizers, tolerance: 1e-6, "log Σ exp \(rows)x\(k) (\(variant))")
                }
            }
        }
    }

    /// The DINO loss's per-row kernel against Double: both cross-entropies and the gradient for each
    /// kind of student view (0 and 1 compare with the other global view, the rest with both).
    func testCrossEntropyRow() {
        for k in [16, 1029] {
            let logits = randomArray(3 * k, seed: 30, scale: 3)
            let lp = Reference.softmax(Array(logits[0..<k]), rows: 1, columns: k, temperature: 1, logarithm: true)
            let q = Reference.softmax(Array(logits[k...]), rows: 2, columns: k, temperature: 1)
            let q0 = Array(q[0..<k]), q1 = Array(q[k...])
            let scale = 0.5
            forEachKernelVariant { variant in
                for view in 0..<3 {
                    let d = kept(FloatBuffer(count: k))
                    var c0 = 0.0, c1 = 0.0
                    dino_cross_entropy_row(d.pointer, &c0, &c1, input(lp), input(q0), input(q1), k, Int32(view), Float(scale))
                    let label = "cross-entropy row k=\(k) view \(view) (\(variant))"
                    XCTAssertEqual(c0, -zip(q0, lp).reduce(0) { $0 + $1.0 * $1.1 }, accuracy: 1e-5, label)
                    XCTAssertEqual(c1, -zip(q1, lp).reduce(0) { $0 + $1.0 * $1.1 }, accuracy: 1e-5, label)
                    let expected = (0..<k).map { j -> Double in
                        let p = exp(lp[j])
                        return scale * (view == 0 ? p - q1[j] : view == 1 ? p - q0[j] : 2 * p - q0[j] - q1[j])
                    }
                    assertClose(d.array, expected, tolerance: 1e-6, label)
                }
            }
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
