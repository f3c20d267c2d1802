import COpenBLAS

/// Row-major single-precision GEMM, `C = α·op(A)·op(B) + β·C`, on OpenBLAS.
///
/// OpenBLAS's own threading gives results that change in the last bit with the thread count (its
/// kernels depend on how the matrix is cut). Here OpenBLAS runs single-threaded and C is cut into
/// fixed tiles whose size does not depend on the thread count; each tile is one sgemm call, and tiles
/// are spread over `Parallel.threadCount` threads. Every element is therefore computed by the same call
/// on 1 and N threads: the same bits.
public enum GEMM {
    /// Tile sides: large enough that packing overhead stays small (≤ 1/64 of the work), small enough
    /// to give two cores work on ViT-sized matrices.
    public static let tileRows = 128
    public static let tileColumns = 256

    public static func multiply(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        let tilesM = (m + tileRows - 1) / tileRows, tilesN = (n + tileColumns - 1) / tileColumns
        let ta = transposeA ? CblasTrans : CblasNoTrans, tb = transposeB ? CblasTrans : CblasNoTrans
        Parallel.forEachRange(tilesM * tilesN) { tiles in
            for tile in tiles {
                let i0 = (tile / tilesN) * tileRows, j0 = (tile % tilesN) * tileColumns
                let rows = min(tileRows, m - i0), columns = min(tileColumns, n - j0)
                // op(A) rows i0..., op(B) columns j0...
                let aTile = transposeA ? a + i0 : a + i0 * lda
                let bTile = transposeB ? b + j0 * ldb : b + j0
                cblas_sgemm(CblasRowMajor, ta, tb, Int32(rows), Int32(columns), Int32(k), alpha,
                            aTile, Int32(lda), bTile, Int32(ldb), beta, c + i0 * ldc + j0, Int32(ldc))
            }
        }
    }
}
