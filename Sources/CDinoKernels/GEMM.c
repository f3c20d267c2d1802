// A single-precision GEMM for the ViT's tall, thin products (rows = tokens in the thousands, inner
// and output sizes 96-3072): C = init + A·B with A read in place (row-major, never packed) and B
// packed once per call into 16-column panels. A 6×16 AVX2 micro-kernel keeps 12 accumulators in
// registers, broadcasting one A value per row and loading 16 B values per inner step.
//
// Why not only OpenBLAS: it packs A on every call (a full pass over the activations, ~8% of a
// feature-extraction step) and, with β = 0, zeroes C in a separate pass; the bias then needs one
// more. Here the bias initializes the accumulators.
//
// Every C element is init + Σ_t a[i][t]·b[t][j] accumulated in t order with FMA, in blocks of
// DINO_GEMM_KC along t, whatever rows a caller's range holds: the same bits on any thread split.
#include "CDinoKernels.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))

// KC: inner-dimension block (a 6×KC block of A stays in L1; C is loaded once per block, so one block
// covers ViT-T's inner sizes 192-768). NC: columns per pass (KC×NC of packed B stays in L2). Measured on
// ViT-T/4 shapes against 256×256, 512×128 and 768×256.
enum { PANEL = 16, ROWS = 6, KC = 768, NC = 128 };

long dino_gemm_packed_count(long n, long k) { return ((n + PANEL - 1) / PANEL) * PANEL * k; }

void dino_gemm_pack_transposed(float *packed, const float *w, long ldw, long n, long k) {
    // Panel p, row t: w[p·16 + j][t] for j < 16 (0 past n).
    for (long p = 0; p * PANEL < n; p++) {
        float *panel = packed + p * PANEL * k;
        long columns = n - p * PANEL < PANEL ? n - p * PANEL : PANEL;
        for (long j = 0; j < columns; j++) {
            const float *row = w + (p * PANEL + j) * ldw;
            for (long t = 0; t < k; t++) panel[t * PANEL + j] = row[t];
        }
        for (long j = columns; j < PANEL; j++) for (long t = 0; t < k; t++) panel[t * PANEL + j] = 0;
    }
}

void dino_gemm_pack(float *packed, const float *b, long ldb, long k, long n) {
    // Panel p, row t: b[t][p·16 + j] for j < 16 (0 past n).
    for (long p = 0; p * PANEL < n; p++) {
        float *panel = packed + p * PANEL * k;
        long columns = n - p * PANEL < PANEL ? n - p * PANEL : PANEL;
        for (long t = 0; t < k; t++) {
            memcpy(panel + t * PANEL, b + t * ldb + p * PANEL, (size_t)columns * sizeof(float));
            for (long j = columns; j < PANEL; j++) panel[t * PANEL + j] = 0;
        }
    }
}

/// c (6×16 at ldc) = start + Σ_{t<kc} a[r][t]·b[t][·], start = c (mode 2), bias row (mode 1) or 0.
AVX2 static void micro6x16(float *c, long ldc, const float *a, long lda, const float *b, long kc,
                           const float *bias, int mode) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (mode == 2) {
        c00 = _mm256_loadu_ps(c); c01 = _mm256_loadu_ps(c + 8);
        c10 = _mm256_loadu_ps(c + ldc); c11 = _mm256_loadu_ps(c + ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    } else {
        __m256 z0 = mode == 1 ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        __m256 z1 = mode == 1 ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        c00 = c10 = c20 = c30 = c40 = c50 = z0;
        c01 = c11 = c21 = c31 = c41 = c51 = z1;
    }
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    for (long t = 0; t < kc; t++) {
        __m256 b0 = _mm256_loadu_ps(b + t * PANEL), b1 = _mm256_loadu_ps(b + t * PANEL + 8), x;
        x = _mm256_broadcast_ss(a0 + t); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + t); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + t); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + t); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + t); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + t); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
    _mm256_storeu_ps(c + ldc, c10); _mm256_storeu_ps(c + ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

/// A partial tile (fewer than 6 rows or 16 columns): computed in a padded 6×16 copy, so its
/// elements take the same operations as a full tile's.
AVX2 static void edgeTile(float *c, long ldc, const float *a, long lda, const float *b, long kc,
                          const float *bias, int mode, long rows, long columns) {
    float tile[ROWS * PANEL];
    float aCopy[ROWS * KC];
    float biasCopy[PANEL];
    for (long r = 0; r < ROWS; r++) {
        for (long t = 0; t < kc; t++) aCopy[r * KC + t] = r < rows ? a[r * lda + t] : 0;
        for (long j = 0; j < PANEL; j++) tile[r * PANEL + j] = (mode == 2 && r < rows && j < columns) ? c[r * ldc + j] : 0;
    }
    for (long j = 0; j < PANEL; j++) biasCopy[j] = (mode == 1 && j < columns) ? bias[j] : 0;
    micro6x16(tile, PANEL, aCopy, KC, b, kc, biasCopy, mode);
    for (long r = 0; r < rows; r++) memcpy(c + r * ldc, tile + r * PANEL, (size_t)columns * sizeof(float));
}

AVX2 void dino_gemm_packed_rows(float *c, long ldc, const float *a, long lda, const float *packed,
                                const float *bias, int accumulate, long n, long k, long firstRow, long lastRow) {
    for (long t0 = 0; t0 < k; t0 += KC) {
        long kc = k - t0 < KC ? k - t0 : KC;
        int mode = (t0 > 0 || accumulate) ? 2 : (bias ? 1 : 0);
        for (long j0 = 0; j0 < n; j0 += NC) {
            long jEnd = j0 + NC < n ? j0 + NC : n;
            for (long i = firstRow; i < lastRow; i += ROWS) {
                long rows = lastRow - i < ROWS ? lastRow - i : ROWS;
                const float *aBlock = a + i * lda + t0;
                for (long j = j0; j < jEnd; j += PANEL) {
                    const float *panel = packed + j * k + t0 * PANEL;  // panel j/16 starts at j·k
                    long columns = n - j < PANEL ? n - j : PANEL;
                    const float *biasAt = bias ? bias + j : 0;
                    if (rows == ROWS && columns == PANEL) {
                        micro6x16(c + i * ldc + j, ldc, aBlock, lda, panel, kc, biasAt, mode);
                    } else {
                        edgeTile(c + i * ldc + j, ldc, aBlock, lda, panel, kc, biasAt, mode, rows, columns);
                    }
                }
            }
        }
    }
}

int dino_gemm_available(void) { return dino_kernels_use_avx2(); }

#else

long dino_gemm_packed_count(long n, long k) { return ((n + 15) / 16) * 16 * k; }
void dino_gemm_pack_transposed(float *packed, const float *w, long ldw, long n, long k) {}
void dino_gemm_pack(float *packed, const float *b, long ldb, long k, long n) {}
void dino_gemm_packed_rows(float *c, long ldc, const float *a, long lda, const float *packed,
                           const float *bias, int accumulate, long n, long k, long firstRow, long lastRow) {}
int dino_gemm_available(void) { return 0; }

#endif
