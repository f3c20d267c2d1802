import CDinoKernels
import DinoKernels
import Foundation
import TestSupport
import XCTest

/// Rungs 1–2 for the bfloat16 GEMM: the rounding, the AVX-512 BF16 kernel against its plain twin, the
/// twin against Double within the bound the rounding allows, and `GEMM.multiply` in bfloat16 on 1 and 2
/// threads.
///
/// Bound: rounding a float to bfloat16 (8 significant bits, ties to even) changes it by at most 2⁻⁸ of
/// its magnitude, so a product of two rounded values is within (2·2⁻⁸ + 2⁻¹⁶)·|a·b| of the exact one, and
/// a float sum of k such products adds at most k·2⁻²⁴·Σ|a·b|: |C − C_exact| ≤ (2⁻⁷ + 2⁻¹⁶ + k·2⁻²⁴)·|α|·Σₚ|aₚ·bₚ|.
/// The kernel sums the same products as the twin in another order (pairs, and passes of 384 over k),
/// so the two differ only by float rounding: k·2⁻²⁴·Σ|a·b|. A float32 product would miss the twin by
/// ~2⁻⁸·Σ|a·b|, far outside that, so the comparison shows that the kernel really rounds to bfloat16.
final class BFloat16GEMMTests: XCTestCase {
    override func tearDown() {
        dino_gemm_bf16_use_amx(1)
        GEMM.precision = .float32
        Parallel.setThreadCount(2)
    }

    /// Σₚ op(A)ᵢₚ·op(B)ₚⱼ and Σₚ|op(A)ᵢₚ·op(B)ₚⱼ| in Double, A m×k (k×m transposed), B k×n (n×k transposed).
    func dot(_ a: [Double], _ b: [Double], _ i: Int, _ j: Int, m: Int, n: Int, k: Int, transposeA: Bool,
             transposeB: Bool) -> (Double, Double) {
        var total = 0.0, magnitude = 0.0
        for p in 0..<k {
            let product = (transposeA ? a[p * m + i] : a[i * k + p]) * (transposeB ? b[j * k + p] : b[p * n + j])
            total += product
            magnitude += abs(product)
        }
        return (total, magnitude)
    }

    func testRoundingToBFloat16() {
        let one = Float(1), ulp = Float(1) / 128  // bfloat16's spacing just above 1
        XCTAssertEqual(dino_round_to_bfloat16(one), one)
        XCTAssertEqual(dino_round_to_bfloat16(one + ulp / 2), one, "a tie rounds to the even neighbour")
        XCTAssertEqual(dino_round_to_bfloat16(one + 3 * ulp / 2), one + 2 * ulp, "a tie rounds to the even neighbour")
        XCTAssertEqual(dino_round_to_bfloat16(one + ulp / 2 + ulp / 64), one + ulp, "above a tie rounds up")
        XCTAssertEqual(dino_round_to_bfloat16(-3.0), -3.0)
        XCTAssertEqual(dino_round_to_bfloat16(-0.0).sign, .minus)
        XCTAssertEqual(dino_round_to_bfloat16(.infinity), .infinity)
        XCTAssertTrue(dino_round_to_bfloat16(.nan).isNaN)
        XCTAssertEqual(dino_round_to_bfloat16(.greatestFiniteMagnitude), .infinity, "above bfloat16's largest value")
        XCTAssertEqual(dino_round_to_bfloat16(Float.leastNormalMagnitude / 4), 0, "subnormals flush to zero, as the instruction does")
        var generator = RandomGenerator(seed: 3)
        for _ in 0..<1000 {
            let x = Float(generator.uniform(-100, 100))
            let rounded = dino_round_to_bfloat16(x)
            XCTAssertLessThanOrEqual(abs(rounded - x), abs(x) / 256, "\(x)")
            XCTAssertEqual(rounded.bitPattern & 0xffff, 0, "\(x) → \(rounded) is not a bfloat16")
        }
    }

    /// Shapes past every edge of the 12×32 tile and of AMX's 32×32 block and 16-pair tiles (rows and
    /// columns not multiples, odd k, k over one 384-long pass), the four transposes, β = 0 over NaNs (C
    /// must not be read) and β = 1, with and without a bias in the store; each kernel the CPU has (AMX,
    /// then AVX-512 BF16).
    func testKernelMatchesTwinAndTheBound() throws {
        guard dino_gemm_bf16_available() != 0 else {
            throw XCTSkip("this CPU has no AVX-512 BF16: dino_gemm_bf16 runs its twin, so there is no kernel to compare")
        }
        let kernels = dino_gemm_bf16_amx_available() != 0 ? [1, 0] : [0]
        for useAMX in kernels {
            dino_gemm_bf16_use_amx(Int32(useAMX))
            XCTAssertEqual(dino_gemm_bf16_amx_in_use(), Int32(useAMX))
            try checkKernelAgainstTwin(kernel: useAMX == 1 ? "AMX" : "AVX-512 BF16")
        }
    }

    func checkKernelAgainstTwin(kernel: String) throws {
        for (m, n, k) in [(1, 1, 1), (13, 33, 7), (12, 32, 2), (40, 96, 49), (25, 17, 385), (100, 300, 800), (7, 1030, 96),
                          (33, 64, 64), (16, 31, 33)] {
            for (transposeA, transposeB) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = randomArray(m * k, seed: 40), b = randomArray(k * n, seed: 41), c0 = randomArray(m * n, seed: 42)
                let bias = randomArray(n, seed: 43)
                let lda = transposeA ? m : k, ldb = transposeB ? k : n
                for (beta, withBias) in [(Float(0), false), (1, false), (0, true), (1, true)] {
                    let start = beta == 0 ? [Float](repeating: .nan, count: m * n) : floats(c0)
                    let fast = kept(FloatBuffer(start)), twin = kept(FloatBuffer(start))
                    let biasPointer = withBias ? input(bias) : nil
                    dino_gemm_bf16_bias(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, 0.5, input(a), lda, input(b), ldb,
                                        beta, fast.pointer, n, biasPointer)
                    dino_gemm_bf16_bias_reference(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, 0.5, input(a), lda,
                                                  input(b), ldb, beta, twin.pointer, n, biasPointer)
                    if !withBias {  // the entry point without a bias gives the same bits
                        let plain = kept(FloatBuffer(start))
                        dino_gemm_bf16(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, 0.5, input(a), lda, input(b), ldb,
                                       beta, plain.pointer, n)
                        XCTAssertEqual(plain.array, fast.array, "\(kernel) \(m)x\(n)x\(k): dino_gemm_bf16 differs")
                    }
                    let label = "\(kernel) \(m)x\(n)x\(k) tA \(transposeA) tB \(transposeB) β \(beta) bias \(withBias)"
                    var worstTwin = 0.0, worstExact = 0.0
                    for i in 0..<m {
                        for j in 0..<n {
                            var (exact, magnitude) = dot(a, b, i, j, m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB)
                            let added = withBias ? Double(bias[j]) : 0
                            exact = 0.5 * exact + added + Double(beta) * c0[i * n + j]
                            magnitude = 0.5 * magnitude + abs(added) + Double(beta) * abs(c0[i * n + j])
                            let floatSums = Double(k + 3) * 0x1p-24 * magnitude + 1e-30
                            let bound = (0x1p-7 + 0x1p-16) * magnitude + floatSums
                            let f = Double(fast.pointer[i * n + j]), t = Double(twin.pointer[i * n + j])
                            worstTwin = max(worstTwin, abs(f - t) / floatSums)
                            worstExact = max(worstExact, abs(t - exact) / bound)
                        }
                    }
                    XCTAssertLessThanOrEqual(worstTwin, 1, "\(label): the kernel leaves its twin by more than float rounding")
                    XCTAssertLessThanOrEqual(worstExact, 1, "\(label): the twin leaves the exact product by more than the bound")
                }
            }
        }
    }

    /// `GEMM.multiply` in bfloat16: row tiles, column tiles and the k split, with a bias and with β = 1,
    /// within the bound, the same bits on 1 and 2 threads, and different from float32 (the switch acts).
    func testMultiplyInBFloat16() throws {
        guard GEMM.bfloat16Available else {
            GEMM.precision = .bfloat16
            XCTAssertEqual(GEMM.precision, .float32, "without AVX-512 BF16 the precision stays float32")
            return
        }
        for (m, n, k) in [(7, 9, 5), (600, 40, 24), (130, 2100, 8), (40, 30, 2500)] {
            for (transposeA, transposeB) in [(false, true), (true, false), (false, false)] {
                let a = randomArray(m * k, seed: 50), b = randomArray(k * n, seed: 51), c0 = randomArray(m * n, seed: 52)
                let bias = randomArray(n, seed: 53)
                for withBias in [false, true] {
                    var results: [[Float]] = []
                    for (precision, threads) in [(GEMM.Precision.bfloat16, 1), (.bfloat16, 2), (.float32, 2)] {
                        GEMM.precision = precision
                        Parallel.setThreadCount(threads)
                        let c = kept(FloatBuffer(floats(c0)))
                        GEMM.multiply(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                                      a: input(a), lda: transposeA ? m : k, b: input(b), ldb: transposeB ? k : n,
                                      beta: 1, c: c.pointer, ldc: n, bias: withBias ? input(bias) : nil)
                        results.append(c.array)
                    }
                    let label = "\(m)x\(n)x\(k) tA \(transposeA) tB \(transposeB) bias \(withBias)"
                    XCTAssertEqual(results[0], results[1], "\(label): 1 and 2 threads differ")
                    XCTAssertNotEqual(results[0], results[2], "\(label): bfloat16 gave the float32 result")
                    for i in 0..<m {
                        for j in 0..<n {
                            var (exact, magnitude) = dot(a, b, i, j, m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB)
                            let addend = withBias ? bias[j] : c0[i * n + j]
                            exact = 0.5 * exact + addend
                            magnitude = 0.5 * magnitude + abs(addend)
                            let bound = (0x1p-7 + 0x1p-16 + Double(k + 2) * 0x1p-24) * magnitude + 1e-30
                            let error = abs(Double(results[0][i * n + j]) - exact)
                            if error > bound {
                                XCTFail("\(label): element (\(i), \(j)) is off by \(error), bound \(bound)")
                                return
                            }
                        }
                    }
                }
            }
        }
    }
}
