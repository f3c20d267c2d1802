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

/// Columns in blocks of 32 (four vectors of dw and of db in registers), rows in order.
AVX2 static void columnSumsAVX2(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                                const float *rstd, long rows, long c, long first, long last) {
    long j = first;
    for (; j + 8 <= last; ) {
        long width = last - j >= 32 ? 4 : 1;  // vectors in this block
        __m256 w[4], b[4];
        for (int v = 0; v < 4; v++) { w[v] = _mm256_setzero_ps(); b[v] = _mm256_setzero_ps(); }
        for (long r = 0; r < rows; r++) {
            const float *dy = dOut + r * c + j;
            if (in) {
                const float *x = in + r * c + j;
                __m256 mu = _mm256_set1_ps(mean[r]), s = _mm256_set1_ps(rstd[r]);
                for (long v = 0; v < width; v++) {
                    __m256 g = _mm256_loadu_ps(dy + 8 * v);
                    w[v] = _mm256_fmadd_ps(g, _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * v), mu), s), w[v]);
                    b[v] = _mm256_add_ps(b[v], g);
                }
            } else {
                for (long v = 0; v < width; v++) b[v] = _mm256_add_ps(b[v], _mm256_loadu_ps(dy + 8 * v));
            }
        }
        for (long v = 0; v < width; v++) {
            if (dWeight && in) _mm256_storeu_ps(dWeight + j + 8 * v, _mm256_add_ps(_mm256_loadu_ps(dWeight + j + 8 * v), w[v]));
            if (dBias) _mm256_storeu_ps(dBias + j + 8 * v, _mm256_add_ps(_mm256_loadu_ps(dBias + j + 8 * v), b[v]));
        }
        j += 8 * width;
    }
    if (j < last) columnSumsPortable(dWeight, dBias, dOut, in, mean, rstd, rows, c, j, last);
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
