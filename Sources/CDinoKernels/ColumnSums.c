// Column sums for the bias and LayerNorm parameter gradients over a range of columns.
#include "SIMD.h"

// MARK: - Portable

static void columnSumsPortable(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                               const float *rstd, long rows, long c, long first, long last) {
    for (long j = first; j < last; j++) {
        float dw = 0, db = 0;
        for (long r = 0; r < rows; r++) {
            float dy = dOut[r * c + j];
            if (in) dw += dy * (in[r * c + j] - mean[r]) * rstd[r];
            db += dy;
        }
        if (dWeight) dWeight[j] += dw;
        if (dBias) dBias[j] += db;
    }
}

#if DINO_X86

// MARK: - AVX2

/// Rows in order, each read once from start to end (sequential memory, which the prefetchers
/// stream), into running sums of up to GROUP columns kept in L1 (8 KiB for both). Reading a 32-column
/// block at a time down all the rows instead (sums in registers, the block's rows a stride apart) ran
/// 2x slower at 192 columns and 3-5x slower on the MLP's 768-wide gradients, which come from memory,
/// not cache: 2-3% of a training step. Each column's sums take the same operations in the same order
/// either way: the same bits.
enum { GROUP = 1024 };

AVX2 static void columnSumsAVX2(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                                const float *rstd, long rows, long c, long first, long last) {
    long vectorEnd = first + (last - first) / 8 * 8;
    for (long g0 = first; g0 < vectorEnd; g0 += GROUP) {
        long vectors = (vectorEnd - g0 < GROUP ? vectorEnd - g0 : GROUP) / 8;
        __m256 w[GROUP / 8], b[GROUP / 8];
        for (long v = 0; v < vectors; v++) { w[v] = _mm256_setzero_ps(); b[v] = _mm256_setzero_ps(); }
        for (long r = 0; r < rows; r++) {
            const float *dy = dOut + r * c + g0;
            if (in) {
                const float *x = in + r * c + g0;
                __m256 mu = _mm256_set1_ps(mean[r]), s = _mm256_set1_ps(rstd[r]);
                for (long v = 0; v < vectors; v++) {
                    __m256 g = _mm256_loadu_ps(dy + 8 * v);
                    w[v] = _mm256_fmadd_ps(g, _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * v), mu), s), w[v]);
                    b[v] = _mm256_add_ps(b[v], g);
                }
            } else {
                for (long v = 0; v < vectors; v++) b[v] = _mm256_add_ps(b[v], _mm256_loadu_ps(dy + 8 * v));
            }
        }
        for (long v = 0; v < vectors; v++) {
            long j = g0 + 8 * v;
            if (dWeight && in) _mm256_storeu_ps(dWeight + j, _mm256_add_ps(_mm256_loadu_ps(dWeight + j), w[v]));
            if (dBias) _mm256_storeu_ps(dBias + j, _mm256_add_ps(_mm256_loadu_ps(dBias + j), b[v]));
        }
    }
    if (vectorEnd < last) columnSumsPortable(dWeight, dBias, dOut, in, mean, rstd, rows, c, vectorEnd, last);
}

#endif

// MARK: - Entry points

void dino_column_sums(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                      const float *rstd, long rows, long columns, long first, long last) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { columnSumsAVX2(dWeight, dBias, dOut, in, mean, rstd, rows, columns, first, last); return; }
#endif
    columnSumsPortable(dWeight, dBias, dOut, in, mean, rstd, rows, columns, first, last);
}
