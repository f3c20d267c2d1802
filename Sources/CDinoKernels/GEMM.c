// Single-precision GEMM tiles for the ViT's products: C = init + op(A)·op(B), row-major, with the
// initialization inside the micro-kernel: init = addend + bias (a residual stream and/or a bias row),
// 0, or C itself (accumulate).
//
// Why not only OpenBLAS: through its sgemm interface every product pays two passes over C that this
// kernel does not: with β = 0 OpenBLAS zeroes C first (`sgemm_beta`), and a bias or residual has to
// be written into C before the call (a copy); together 3.3% of a fmnist-tiny step (perf). Its
// packing (7.8%) is the same algorithm as here.
//
// The algorithm is GotoBLAS's: op(B) in blocks of KC rows × NC columns packed into 16-column panels
// (a panel of KC×16 floats stays in L1), op(A) in blocks of MC rows × KC packed into 6-row panels (a
// block stays in L2), and a 6×16 micro-kernel with 12 accumulators in registers that broadcasts 6
// values of the A panel and loads 16 of the B panel per step of the inner dimension t.
//
// Each C element is one FMA chain, c = fma(a[t], b[t], c) for t = 0, 1, …, k−1 in order, from its
// initial value (stored and reloaded between KC blocks, which is exact): blocking, tiles and threads
// never change the bits.
#include "SIMD.h"

enum { ROWS = 6, COLUMNS = 16, KC_MAX = 512, MC_MAX = 240, NC_MAX = 1024 };
static long KC = 256, MC = 120, NC = 1024;
void dino_gemm_blocking(long kc, long mc, long nc) { KC = kc; MC = mc; NC = nc; }

long dino_gemm_scratch_count(void) {
    return (long)KC_MAX * NC_MAX + (long)MC_MAX * KC_MAX + 64 + 16;  // + alignment and packAAVX2's overrun
}

// MARK: - Packing

/// Rows [i0, i0 + mc) × t [t0, t0 + kc) of op(A) into 6-row panels: panel p holds, for each t,
/// op(A)[i0 + 6p + r][t0 + t] at p·6·kc + t·6 + r (0 past mc).
static void packAPortable(float *packed, const float *a, long lda, int transA, long i0, long mc, long t0, long kc) {
    for (long p = 0; p * ROWS < mc; p++) {
        float *panel = packed + p * ROWS * kc;
        long rows = mc - p * ROWS < ROWS ? mc - p * ROWS : ROWS;
        long first = i0 + p * ROWS;
        for (long t = 0; t < kc; t++) {
            for (long r = 0; r < ROWS; r++) {
                panel[t * ROWS + r] = r >= rows ? 0 : transA ? a[(t0 + t) * lda + first + r] : a[(first + r) * lda + t0 + t];
            }
        }
    }
}

/// t [t0, t0 + kc) × columns [j0, j0 + nc) of op(B) into 16-column panels: panel q holds, for each
/// t, op(B)[t0 + t][j0 + 16q + j] at q·16·kc + t·16 + j (0 past nc).
static void packBPortable(float *packed, const float *b, long ldb, int transB, long t0, long kc, long j0, long nc) {
    for (long q = 0; q * COLUMNS < nc; q++) {
        float *panel = packed + q * COLUMNS * kc;
        long columns = nc - q * COLUMNS < COLUMNS ? nc - q * COLUMNS : COLUMNS;
        long first = j0 + q * COLUMNS;
        for (long t = 0; t < kc; t++) {
            for (long j = 0; j < COLUMNS; j++) {
                panel[t * COLUMNS + j] = j >= columns ? 0 : transB ? b[(first + j) * ldb + t0 + t] : b[(t0 + t) * ldb + first + j];
            }
        }
    }
}

#if DINO_X86

/// Transposes the 8×8 block in r[0..8) in place: afterwards r[u][v] is the old r[v][u].
AVX2 static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/// packAPortable's layout; rows of A stored along t (not transA) are read 8 t at a time and
/// transposed in registers. Writes up to 2 floats past the packed block (scratch keeps room).
AVX2 static void packAAVX2(float *packed, const float *a, long lda, int transA, long i0, long mc, long t0, long kc) {
    for (long p = 0; p * ROWS < mc; p++) {
        float *panel = packed + p * ROWS * kc;
        long rows = mc - p * ROWS < ROWS ? mc - p * ROWS : ROWS;
        long first = i0 + p * ROWS;
        long t = 0;
        if (rows == ROWS && transA) {
            // 6 consecutive values per t: one 8-wide store each, the next t overwriting the last 2.
            for (; t + 1 < kc; t++) _mm256_storeu_ps(panel + t * ROWS, _mm256_loadu_ps(a + (t0 + t) * lda + first));
        } else if (rows == ROWS) {
            const float *source = a + first * lda + t0;
            for (; t + 8 <= kc; t += 8) {
                __m256 r[8];
                for (int v = 0; v < ROWS; v++) r[v] = _mm256_loadu_ps(source + v * lda + t);
                r[6] = r[7] = _mm256_setzero_ps();
                transpose8(r);
                for (int u = 0; u < 8; u++) _mm256_storeu_ps(panel + (t + u) * ROWS, r[u]);
            }
        }
        for (; t < kc; t++) {
            for (long r = 0; r < ROWS; r++) {
                panel[t * ROWS + r] = r >= rows ? 0 : transA ? a[(t0 + t) * lda + first + r] : a[(first + r) * lda + t0 + t];
            }
        }
    }
}

/// packBPortable's layout; columns of B stored along t (transB: nn.Linear's weight) are read 8 t
/// at a time, 8 columns per register block, and transposed in registers.
AVX2 static void packBAVX2(float *packed, const float *b, long ldb, int transB, long t0, long kc, long j0, long nc) {
    for (long q = 0; q * COLUMNS < nc; q++) {
        float *panel = packed + q * COLUMNS * kc;
        long columns = nc - q * COLUMNS < COLUMNS ? nc - q * COLUMNS : COLUMNS;
        long first = j0 + q * COLUMNS;
        long t = 0;
        if (columns == COLUMNS && !transB) {
            for (; t < kc; t++) {
                const float *source = b + (t0 + t) * ldb + first;
                _mm256_storeu_ps(panel + t * COLUMNS, _mm256_loadu_ps(source));
                _mm256_storeu_ps(panel + t * COLUMNS + 8, _mm256_loadu_ps(source + 8));
            }
        } else if (columns == COLUMNS) {
            for (; t + 8 <= kc; t += 8) {
                for (int half = 0; half < 2; half++) {
                    __m256 r[8];
                    for (int v = 0; v < 8; v++) r[v] = _mm256_loadu_ps(b + (first + 8 * half + v) * ldb + t0 + t);
                    transpose8(r);
                    for (int u = 0; u < 8; u++) _mm256_storeu_ps(panel + (t + u) * COLUMNS + 8 * half, r[u]);
                }
            }
        }
        for (; t < kc; t++) {
            for (long j = 0; j < COLUMNS; j++) {
                panel[t * COLUMNS + j] = j >= columns ? 0 : transB ? b[(first + j) * ldb + t0 + t] : b[(t0 + t) * ldb + first + j];
            }
        }
    }
}

#endif

// MARK: - Micro-kernels

// A micro-tile's accumulators start from C (`accumulate`), or from addend + bias (either may be NULL
// for 0; bias at the tile's first column, addend at its first element, rows at ldc). Passed as
// separate arguments, not a struct: a struct built field by field and then copied whole for the call
// stalled on store-to-load forwarding, 7% of a training step.

/// Portable: c (rows×columns at ldc) = start + Σ_{t<kc} a[t·6 + r]·b[t·16 + j].
static void microPortable(float *c, long ldc, const float *a, const float *b, long kc, long rows, long columns,
                          int accumulate, const float *bias, const float *addend) {
    for (long r = 0; r < rows; r++) {
        for (long j = 0; j < columns; j++) {
            float sum;
            if (accumulate) {
                sum = c[r * ldc + j];
            } else {
                sum = (addend ? addend[r * ldc + j] : 0) + (bias ? bias[j] : 0);
            }
            for (long t = 0; t < kc; t++) sum = fmaf(a[t * ROWS + r], b[t * COLUMNS + j], sum);
            c[r * ldc + j] = sum;
        }
    }
}

#if DINO_X86

/// The full 6×16 tile.
AVX2 static void micro6x16(float *c, long ldc, const float *a, const float *b, long kc,
                           int accumulate, const float *bias, const float *addend) {
    if (!accumulate) {  // C's lines are about to be written: fetch them while the products run
        for (int r = 0; r < ROWS; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
    }
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (accumulate) {
        c00 = _mm256_loadu_ps(c); c01 = _mm256_loadu_ps(c + 8);
        c10 = _mm256_loadu_ps(c + ldc); c11 = _mm256_loadu_ps(c + ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    } else {
        __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        if (addend) {
            const float *e = addend;
            c00 = _mm256_add_ps(_mm256_loadu_ps(e), b0); c01 = _mm256_add_ps(_mm256_loadu_ps(e + 8), b1);
            c10 = _mm256_add_ps(_mm256_loadu_ps(e + ldc), b0); c11 = _mm256_add_ps(_mm256_loadu_ps(e + ldc + 8), b1);
            c20 = _mm256_add_ps(_mm256_loadu_ps(e + 2 * ldc), b0); c21 = _mm256_add_ps(_mm256_loadu_ps(e + 2 * ldc + 8), b1);
            c30 = _mm256_add_ps(_mm256_loadu_ps(e + 3 * ldc), b0); c31 = _mm256_add_ps(_mm256_loadu_ps(e + 3 * ldc + 8), b1);
            c40 = _mm256_add_ps(_mm256_loadu_ps(e + 4 * ldc), b0); c41 = _mm256_add_ps(_mm256_loadu_ps(e + 4 * ldc + 8), b1);
            c50 = _mm256_add_ps(_mm256_loadu_ps(e + 5 * ldc), b0); c51 = _mm256_add_ps(_mm256_loadu_ps(e + 5 * ldc + 8), b1);
        } else {
            c00 = c10 = c20 = c30 = c40 = c50 = b0;
            c01 = c11 = c21 = c31 = c41 = c51 = b1;
        }
    }
#define STEP(u) { \
        const float *at = a + (t + (u)) * ROWS, *bt = b + (t + (u)) * COLUMNS; \
        __m256 b0 = _mm256_load_ps(bt), b1 = _mm256_load_ps(bt + 8), x; \
        x = _mm256_broadcast_ss(at); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01); \
        x = _mm256_broadcast_ss(at + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11); \
        x = _mm256_broadcast_ss(at + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21); \
        x = _mm256_broadcast_ss(at + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31); \
        x = _mm256_broadcast_ss(at + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41); \
        x = _mm256_broadcast_ss(at + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51); }
    long t = 0;
    for (; t + 4 <= kc; t += 4) {
        _mm_prefetch((const char *)(a + t * ROWS + 64), _MM_HINT_T0);  // the A panel streams from L2
        STEP(0) STEP(1) STEP(2) STEP(3)
    }
    for (; t < kc; t++) STEP(0)
#undef STEP
    _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
    _mm256_storeu_ps(c + ldc, c10); _mm256_storeu_ps(c + ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

/// A partial tile (rows < 6 or columns < 16): C, the bias and the addend read and written under a
/// mask, nothing touched past them. Each element takes the same operations as in a full tile.
AVX2 static void microEdge(float *c, long ldc, const float *a, const float *b, long kc, long rows, long columns,
                           int accumulate, const float *bias, const float *addend) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)columns), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)columns - 8), lane);
    __m256 acc[ROWS][2];
    __m256 b0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 b1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    for (long r = 0; r < ROWS; r++) {
        if (r >= rows) {
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        } else if (accumulate) {
            acc[r][0] = _mm256_maskload_ps(c + r * ldc, m0);
            acc[r][1] = _mm256_maskload_ps(c + r * ldc + 8, m1);
        } else if (addend) {
            acc[r][0] = _mm256_add_ps(_mm256_maskload_ps(addend + r * ldc, m0), b0);
            acc[r][1] = _mm256_add_ps(_mm256_maskload_ps(addend + r * ldc + 8, m1), b1);
        } else {
            acc[r][0] = b0;
            acc[r][1] = b1;
        }
    }
    for (long t = 0; t < kc; t++) {
        __m256 x0 = _mm256_loadu_ps(b + t * COLUMNS), x1 = _mm256_loadu_ps(b + t * COLUMNS + 8);
        for (long r = 0; r < ROWS; r++) {
            __m256 x = _mm256_broadcast_ss(a + t * ROWS + r);
            acc[r][0] = _mm256_fmadd_ps(x, x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, x1, acc[r][1]);
        }
    }
    for (long r = 0; r < rows; r++) {
        _mm256_maskstore_ps(c + r * ldc, m0, acc[r][0]);
        _mm256_maskstore_ps(c + r * ldc + 8, m1, acc[r][1]);
    }
}

#endif

// MARK: - Entry points

void dino_gemm_tile(float *c, long ldc, const float *a, long lda, int transA, const float *b, long ldb, int transB,
                    long k, long rowFirst, long rowLast, long columnFirst, long columnLast,
                    const float *bias, const float *addend, int accumulate, float *scratch,
                    dino_gemm_epilogue epilogue, void *context) {
    int avx2 = dino_kernels_use_avx2();
    // 64-byte aligned panels.
    float *packedB = (float *)(((unsigned long)scratch + 63) & ~63ul);
    float *packedA = packedB + (long)KC_MAX * NC_MAX;
    for (long j0 = columnFirst; j0 < columnLast; j0 += NC) {
        long nc = columnLast - j0 < NC ? columnLast - j0 : NC;
        for (long t0 = 0; t0 < k || t0 == 0; t0 += KC) {
            long kc = k - t0 < KC ? k - t0 : KC;
            int fromC = accumulate || t0 > 0;
            if (kc > 0) {
#if DINO_X86
                if (avx2) packBAVX2(packedB, b, ldb, transB, t0, kc, j0, nc); else
#endif
                packBPortable(packedB, b, ldb, transB, t0, kc, j0, nc);
            }
            for (long i0 = rowFirst; i0 < rowLast; i0 += MC) {
                long mc = rowLast - i0 < MC ? rowLast - i0 : MC;
                if (kc > 0) {
#if DINO_X86
                    if (avx2) packAAVX2(packedA, a, lda, transA, i0, mc, t0, kc); else
#endif
                    packAPortable(packedA, a, lda, transA, i0, mc, t0, kc);
                }
                for (long j = 0; j < nc; j += COLUMNS) {
                    long columns = nc - j < COLUMNS ? nc - j : COLUMNS;
                    const float *panelB = packedB + j * kc;
                    for (long i = 0; i < mc; i += ROWS) {
                        long rows = mc - i < ROWS ? mc - i : ROWS;
                        const float *panelA = packedA + i * kc;
                        float *tile = c + (i0 + i) * ldc + j0 + j;
                        const float *biasAt = fromC || !bias ? 0 : bias + j0 + j;
                        const float *addendAt = fromC || !addend ? 0 : addend + (i0 + i) * ldc + j0 + j;
#if DINO_X86
                        if (avx2) {
                            if (rows == ROWS && columns == COLUMNS) micro6x16(tile, ldc, panelA, panelB, kc, fromC, biasAt, addendAt);
                            else microEdge(tile, ldc, panelA, panelB, kc, rows, columns, fromC, biasAt, addendAt);
                            continue;
                        }
#endif
                        microPortable(tile, ldc, panelA, panelB, kc, rows, columns, fromC, biasAt, addendAt);
                    }
                }
                // The block is final after the last KC pass: its epilogue runs while it is in cache.
                if (epilogue && t0 + KC >= k) epilogue(context, i0, i0 + mc, j0, j0 + nc);
            }
            if (k == 0) break;
        }
    }
}
