import CDinoKernels
import COpenBLAS
import Foundation

/// Row-major single-precision GEMM, `C = α·op(A)·op(B) + β·C`, on OpenBLAS.
///
/// OpenBLAS's own threading gives results that change in the last bit with the thread count (its
/// kernels depend on how the matrix is cut). Here OpenBLAS runs single-threaded and the product is
/// cut into pieces whose sides depend on the shape only, never on the thread count; each piece is one
/// sgemm call, and pieces are spread over `Parallel.threadCount` threads. Every element is therefore
/// computed by the same calls in the same order on 1 and N threads: the same bits.
///
/// Each sgemm call packs its panels of A and B once, at a cost of about one cycle per float against
/// 1/16 cycle per multiply-add, so pieces are few and large: about 8 tiles of C with at least 128
/// rows and at most 1024 columns (columns split evenly, so 576 is one tile, not 256 + 256 + 64).
/// A small C with a long inner dimension (weight gradients: k = tokens) is split along k instead:
/// fixed chunks each computed into scratch in full, then summed in a fixed order.
public enum GEMM {
    /// How products are computed. `bfloat16` rounds A and B to bfloat16 and sums the products in float
    /// (mixed-precision training's matmuls: vdpbf16ps does twice the multiply-adds of a float FMA, an AMX
    /// tile unit up to 8x that per cycle), on CPUs with AVX-512 BF16; elsewhere it falls back to `float32`.
    public enum Precision: String, Sendable, CaseIterable {
        case float32, bfloat16
    }

    nonisolated(unsafe) private static var storedPrecision = Precision.float32

    /// The precision `multiply` uses: `float32` (the default) unless set to `bfloat16` on a CPU that has
    /// AVX-512 BF16 (`bfloat16Available`). Set it between products, not during one.
    public static var precision: Precision {
        get { storedPrecision }
        set { storedPrecision = newValue == .bfloat16 && !bfloat16Available ? .float32 : newValue }
    }

    /// Runs `body` with `precision` set to `requested` (float32 where bfloat16 is unavailable), then
    /// restores the previous precision.
    public static func withPrecision<T>(_ requested: Precision, _ body: () throws -> T) rethrows -> T {
        let previous = precision
        precision = requested
        defer { precision = previous }
        return try body()
    }

    /// Whether this CPU runs the bfloat16 GEMM (AVX-512 BF16).
    public static var bfloat16Available: Bool { dino_gemm_bf16_available() != 0 }

    /// Whether bfloat16 products may run on AMX tiles where the CPU has them (Intel Xeon of the 4th
    /// generation on; the default), or stay on AVX-512 BF16 (for comparisons). Both sum the same exact pair
    /// products in float, in different orders. Set it between products, not during one.
    public static var allowsAMX: Bool {
        get { dino_gemm_bf16_amx_in_use() != 0 || dino_gemm_bf16_amx_available() == 0 }
        set { dino_gemm_bf16_use_amx(newValue ? 1 : 0) }
    }

    /// The kernel bfloat16 products run on: "AMX", "AVX-512 BF16", or nil where neither is available.
    public static var bfloat16KernelName: String? {
        dino_gemm_bf16_amx_in_use() != 0 ? "AMX" : bfloat16Available ? "AVX-512 BF16" : nil
    }

    static let targetTiles = 8
    static let minimumRows = 128
    static let maximumColumns = 1024

    /// Tile sides of C for an m×n product.
    public static func tileSides(m: Int, n: Int) -> (rows: Int, columns: Int) {
        let columnTiles = (n + maximumColumns - 1) / maximumColumns
        let columns = min(n, roundUp((n + columnTiles - 1) / columnTiles, 16))
        var rowTiles = max(1, (targetTiles + columnTiles - 1) / columnTiles)
        rowTiles = max(1, min(rowTiles, m / minimumRows))
        if rowTiles > 1 && rowTiles % 2 == 1 { rowTiles -= 1 }  // even counts share evenly over 2 and 4 threads
        let rows = min(m, max(16, roundUp((m + rowTiles - 1) / rowTiles, 16)))
        return (max(1, rows), max(1, columns))
    }

    /// Floats of C in one tile of a bfloat16 product that runs on one thread: 1 MiB, so that the tile
    /// is still in a core's L2 when its epilogue runs.
    static let serialTileFloats = 1 << 18

    /// Tile sides of C for an m×n bfloat16 product on one thread (inside a batch shard, or with one
    /// thread): as few row tiles as `serialTileFloats` allows, in multiples of AMX's 32-row block. Each
    /// tile packs all of op(B) again, and at the training step's shapes (B a weight, 96–384 wide, against
    /// 640–960 rows) the 4–6 tiles of `tileSides` spent a tenth of the step packing. The bfloat16 kernel
    /// gives every element the same bits whatever the tiles (its sums run along k only), so 1 and N
    /// threads still agree.
    public static func serialTileSides(m: Int, n: Int) -> (rows: Int, columns: Int) {
        let columns = tileSides(m: m, n: n).columns
        let rowTiles = max(1, (m * columns + serialTileFloats - 1) / serialTileFloats)
        let rows = min(m, roundUp((m + rowTiles - 1) / rowTiles, 32))
        return (max(1, rows), columns)
    }

    /// The number of inner-dimension chunks (1: no split), when k is long enough that each chunk
    /// stays a large product, for a small C: at most 2²⁰ elements in fewer than 512 rows (thin row
    /// tiles), or at most 2¹⁸ elements at any row count (weight gradients). Each chunk packs its slices
    /// of A and B once, where row tiles would each repack all of B (k×n): splitting the qkv and fc1
    /// weight gradients (576 and 768 rows) along k ran them 2–4% faster at ViT-T/4's shapes.
    public static func innerChunks(m: Int, n: Int, k: Int) -> Int {
        guard m * n <= 1 << 20, m < 4 * minimumRows || m * n <= 1 << 18, k >= 2048 else { return 1 }
        return k >= 4096 ? 4 : 2
    }

    @inline(__always) static func roundUp(_ x: Int, _ multiple: Int) -> Int { (x + multiple - 1) / multiple * multiple }

    /// `C = α·op(A)·op(B) + β·C`, or with `bias` (n values, broadcast over the rows) and/or `addend`
    /// (m×n at row stride ldc: a residual stream) `C = (addend + bias) + α·op(A)·op(B)`, β then ignored.
    /// Each tile of C is initialized just before its own product, while that tile is about to be read
    /// anyway, instead of in separate passes over all of C. `epilogue(rows, columns)` runs once per
    /// finished block of C, on the thread that computed it, while the block is still in cache (an
    /// elementwise activation: the fused bias + GELU of the MLP).
    public static func multiply(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>? = nil,
        addend: UnsafePointer<Float>? = nil, epilogue: ((Range<Int>, Range<Int>) -> Void)? = nil
    ) {
        if m == 0 || n == 0 { return }
        let initialized = bias != nil || addend != nil
        let beta: Float = initialized ? 1 : beta
        let chunks = innerChunks(m: m, n: n, k: k)
        if chunks > 1 {
            let scratch = ScratchPool.shared.take(count: chunks * m * n)
            defer { ScratchPool.shared.give(scratch) }
            let partials = scratch.pointer
            Parallel.forEachRange(chunks) { range in
                for chunk in range {
                    let k0 = k * chunk / chunks, k1 = k * (chunk + 1) / chunks
                    // op(A) columns k0..<k1 and op(B) rows k0..<k1.
                    let aChunk = transposeA ? a + k0 * lda : a + k0
                    let bChunk = transposeB ? b + k0 : b + k0 * ldb
                    product(transposeA, transposeB, m, n, k1 - k0, alpha, aChunk, lda, bChunk, ldb, 0,
                            partials + chunk * m * n, n)
                }
            }
            // C = β·C + ((P₀ + P₁) + P₂) + …, each row in the same order on any thread count.
            Parallel.forEachRange(m, grain: 16) { rows in
                for i in rows {
                    let total = partials + i * n, row = c + i * ldc
                    for chunk in 1..<chunks { axpy(total, 1, partials + chunk * m * n + i * n, n) }
                    if initialized {
                        initialize(row, bias: bias, addend: addend.map { $0 + i * ldc }, count: n)
                        for j in 0..<n { row[j] += total[j] }
                    } else if beta == 0 {
                        row.update(from: total, count: n)
                    } else {
                        for j in 0..<n { row[j] = beta * row[j] + total[j] }
                    }
                }
                epilogue?(rows, 0..<n)
            }
            return
        }
        let (tileRows, tileColumns) = storedPrecision == .bfloat16 && Parallel.runsInline
            ? serialTileSides(m: m, n: n) : tileSides(m: m, n: n)
        let tilesM = (m + tileRows - 1) / tileRows, tilesN = (n + tileColumns - 1) / tileColumns
        // A bias alone goes into the bfloat16 kernel's store (the same sum, bias + α·s, one pass fewer).
        let kernelBias = storedPrecision == .bfloat16 && addend == nil ? bias : nil
        Parallel.forEachRange(tilesM * tilesN) { tiles in
            for tile in tiles {
                let i0 = (tile / tilesN) * tileRows, j0 = (tile % tilesN) * tileColumns
                let rows = min(tileRows, m - i0), columns = min(tileColumns, n - j0)
                // op(A) rows i0..., op(B) columns j0...
                let aTile = transposeA ? a + i0 : a + i0 * lda
                let bTile = transposeB ? b + j0 * ldb : b + j0
                if initialized && kernelBias == nil {
                    for i in i0..<(i0 + rows) {
                        initialize(c + i * ldc + j0, bias: bias.map { $0 + j0 }, addend: addend.map { $0 + i * ldc + j0 },
                                   count: columns)
                    }
                }
                product(transposeA, transposeB, rows, columns, k, alpha, aTile, lda, bTile, ldb, kernelBias == nil ? beta : 0,
                        c + i0 * ldc + j0, ldc, bias: kernelBias.map { $0 + j0 })
                epilogue?(i0..<(i0 + rows), j0..<(j0 + columns))
            }
        }
    }

    /// One single-threaded product in the current precision; `bias` (bfloat16 only) as `dino_gemm_bf16_bias`.
    @inline(__always)
    static func product(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                        _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
                        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, bias: UnsafePointer<Float>? = nil) {
        if storedPrecision == .bfloat16 {
            dino_gemm_bf16_bias(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias)
        } else {
            precondition(bias == nil, "a bias goes into the product in bfloat16 only")
            cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    /// row = addend + bias (either may be absent), `count` values.
    @inline(__always)
    static func initialize(_ row: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, addend: UnsafePointer<Float>?,
                           count: Int) {
        switch (bias, addend) {
        case let (bias?, addend?): for j in 0..<count { row[j] = addend[j] + bias[j] }
        case let (bias?, nil): row.update(from: bias, count: count)
        case let (nil, addend?): row.update(from: addend, count: count)
        case (nil, nil): row.update(repeating: 0, count: count)
        }
    }
}
