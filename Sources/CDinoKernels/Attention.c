// Fused attention per (image, head) block: Q·Kᵀ, the scaled softmax and P·V in one pass, and its backward.
#include "SIMD.h"

// MARK: - Portable

static void attentionForwardPortable(float *out, long outStride, float *p, const float *q, const float *k,
                                     const float *v, long rowStride, long queries, long n, long d, float scale) {
    for (long i = 0; i < queries; i++) {
        float *row = p + i * n, m = -INFINITY;
        for (long j = 0; j < n; j++) {
            float s = 0;
            for (long t = 0; t < d; t++) s += q[i * rowStride + t] * k[j * rowStride + t];
            row[j] = s * scale;
            if (row[j] > m) m = row[j];
        }
        float total = 0;
        for (long j = 0; j < n; j++) { row[j] = expf(row[j] - m); total += row[j]; }
        float inverse = 1 / total;
        for (long j = 0; j < n; j++) row[j] *= inverse;
        float *o = out + i * outStride;
        for (long t = 0; t < d; t++) o[t] = 0;
        for (long j = 0; j < n; j++)
            for (long t = 0; t < d; t++) o[t] += row[j] * v[j * rowStride + t];
    }
}

static void attentionBackwardPortable(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                      const float *q, const float *k, const float *v, long rowStride,
                                      const float *p, long queries, long n, long d, float scale, float *dp) {
    for (long i = 0; i < queries; i++) {
        const float *g = dOut + i * dOutStride, *row = p + i * n;
        float weighted = 0;
        for (long j = 0; j < n; j++) {
            float s = 0;
            for (long t = 0; t < d; t++) s += g[t] * v[j * rowStride + t];
            dp[j] = s;
            weighted += row[j] * s;
        }
        for (long j = 0; j < n; j++) {
            float ds = row[j] * (dp[j] - weighted) * scale;
            for (long t = 0; t < d; t++) {
                dq[i * rowStride + t] += ds * k[j * rowStride + t];
                dk[j * rowStride + t] += ds * q[i * rowStride + t];
                dv[j * rowStride + t] += row[j] * g[t];
            }
        }
    }
}

#if DINO_X86

// MARK: - AVX2

static void transposeRows(float *dst, long width, const float *src, long rowStride, long n, long d) {
    for (long t = 0; t < d; t++) {
        float *out = dst + t * width;
        for (long j = 0; j < n; j++) out[j] = src[j * rowStride + t];
        for (long j = n; j < width; j++) out[j] = 0;
    }
}

/// out[r][j] = Σₜ a[r][t]·bt[t][j] for r < rows, j < width (a multiple of 16); a rows at lda.
/// Tiles of 4 rows × 16 columns; every element is the same FMA chain over t.
AVX2 static void rowsTimesTransposed(float *out, long ldo, const float *a, long lda, const float *bt, long width,
                                     long rows, long d) {
    for (long r0 = 0; r0 < rows; r0 += 4) {
        long count = rows - r0 < 4 ? rows - r0 : 4;
        const float *a0 = a + r0 * lda;
        const float *a1 = a + (r0 + (count > 1 ? 1 : 0)) * lda;
        const float *a2 = a + (r0 + (count > 2 ? 2 : 0)) * lda;
        const float *a3 = a + (r0 + (count > 3 ? 3 : 0)) * lda;
        for (long j0 = 0; j0 < width; j0 += 16) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            const float *b = bt + j0;
            for (long t = 0; t < d; t++, b += width) {
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
                __m256 x = _mm256_broadcast_ss(a0 + t);
                c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
                x = _mm256_broadcast_ss(a1 + t);
                c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
                x = _mm256_broadcast_ss(a2 + t);
                c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
                x = _mm256_broadcast_ss(a3 + t);
                c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
            }
            float *o = out + r0 * ldo + j0;
            _mm256_storeu_ps(o, c00); _mm256_storeu_ps(o + 8, c01);
            if (count > 1) { _mm256_storeu_ps(o + ldo, c10); _mm256_storeu_ps(o + ldo + 8, c11); }
            if (count > 2) { _mm256_storeu_ps(o + 2 * ldo, c20); _mm256_storeu_ps(o + 2 * ldo + 8, c21); }
            if (count > 3) { _mm256_storeu_ps(o + 3 * ldo, c30); _mm256_storeu_ps(o + 3 * ldo + 8, c31); }
        }
    }
}

/// out[r][:d] (+)= Σⱼ w[r][j]·x[j][:d] for r < rows, j < inner; w rows at ldw, x rows at ldx.
/// Tiles of 2 rows × 32 columns, then 2 × 8, then scalar columns.
AVX2 static void weightsTimesRows(float *out, long ldo, const float *w, long ldw, const float *x, long ldx,
                                  long rows, long inner, long d, int accumulate) {
    for (long r0 = 0; r0 < rows; r0 += 2) {
        int pair = rows - r0 > 1;
        const float *w0 = w + r0 * ldw, *w1 = w + (r0 + pair) * ldw;
        float *o0 = out + r0 * ldo, *o1 = out + (r0 + pair) * ldo;
        long c0 = 0;
        for (; c0 + 32 <= d; c0 += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            const float *xr = x + c0;
            for (long j = 0; j < inner; j++, xr += ldx) {
                __m256 x0 = _mm256_loadu_ps(xr), x1 = _mm256_loadu_ps(xr + 8);
                __m256 x2 = _mm256_loadu_ps(xr + 16), x3 = _mm256_loadu_ps(xr + 24);
                __m256 s = _mm256_broadcast_ss(w0 + j);
                a0 = _mm256_fmadd_ps(s, x0, a0); a1 = _mm256_fmadd_ps(s, x1, a1);
                a2 = _mm256_fmadd_ps(s, x2, a2); a3 = _mm256_fmadd_ps(s, x3, a3);
                s = _mm256_broadcast_ss(w1 + j);
                b0 = _mm256_fmadd_ps(s, x0, b0); b1 = _mm256_fmadd_ps(s, x1, b1);
                b2 = _mm256_fmadd_ps(s, x2, b2); b3 = _mm256_fmadd_ps(s, x3, b3);
            }
            if (accumulate) {
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(o0 + c0)); a1 = _mm256_add_ps(a1, _mm256_loadu_ps(o0 + c0 + 8));
                a2 = _mm256_add_ps(a2, _mm256_loadu_ps(o0 + c0 + 16)); a3 = _mm256_add_ps(a3, _mm256_loadu_ps(o0 + c0 + 24));
            }
            _mm256_storeu_ps(o0 + c0, a0); _mm256_storeu_ps(o0 + c0 + 8, a1);
            _mm256_storeu_ps(o0 + c0 + 16, a2); _mm256_storeu_ps(o0 + c0 + 24, a3);
            if (pair) {
                if (accumulate) {
                    b0 = _mm256_add_ps(b0, _mm256_loadu_ps(o1 + c0)); b1 = _mm256_add_ps(b1, _mm256_loadu_ps(o1 + c0 + 8));
                    b2 = _mm256_add_ps(b2, _mm256_loadu_ps(o1 + c0 + 16)); b3 = _mm256_add_ps(b3, _mm256_loadu_ps(o1 + c0 + 24));
                }
                _mm256_storeu_ps(o1 + c0, b0); _mm256_storeu_ps(o1 + c0 + 8, b1);
                _mm256_storeu_ps(o1 + c0 + 16, b2); _mm256_storeu_ps(o1 + c0 + 24, b3);
            }
        }
        for (; c0 + 8 <= d; c0 += 8) {
            __m256 a0 = _mm256_setzero_ps(), b0 = a0;
            const float *xr = x + c0;
            for (long j = 0; j < inner; j++, xr += ldx) {
                __m256 x0 = _mm256_loadu_ps(xr);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + j), x0, a0);
                b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w1 + j), x0, b0);
            }
            if (accumulate) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(o0 + c0));
            _mm256_storeu_ps(o0 + c0, a0);
            if (pair) {
                if (accumulate) b0 = _mm256_add_ps(b0, _mm256_loadu_ps(o1 + c0));
                _mm256_storeu_ps(o1 + c0, b0);
            }
        }
        for (; c0 < d; c0++) {
            for (long r = 0; r <= pair; r++) {
                const float *wr = r ? w1 : w0;
                float s = 0;
                for (long j = 0; j < inner; j++) s = fmaf(wr[j], x[j * ldx + c0], s);
                float *o = r ? o1 : o0;
                o[c0] = accumulate ? o[c0] + s : s;
            }
        }
    }
}

static inline long roundUp16(long n) { return (n + 15) & ~15L; }

AVX2 static void attentionForwardAVX2(float *out, long outStride, float *p, const float *q, const float *k,
                                      const float *v, long rowStride, long queries, long n, long d, float scale,
                                      float *scratch) {
    long width = roundUp16(n);
    float *kt = scratch, *s = scratch + d * width;
    transposeRows(kt, width, k, rowStride, n, d);
    rowsTimesTransposed(s, width, q, rowStride, kt, width, queries, d);
    __m256 scale8 = _mm256_set1_ps(scale);
    for (long i = 0; i < queries; i++) {
        float *row = s + i * width;
        for (long j = 0; j < width; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), scale8));
        float m = row[0];
        for (long j = 1; j < n; j++) if (row[j] > m) m = row[j];
        __m256 m8 = _mm256_set1_ps(m), total8 = _mm256_setzero_ps();
        for (long j = 0; j < width; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), m8));
            if (j + 8 > n) {  // padding columns hold 0 scores: drop them from the sum
                __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)), lane);
                e = _mm256_and_ps(e, _mm256_castsi256_ps(keep));
            }
            _mm256_storeu_ps(row + j, e);
            total8 = _mm256_add_ps(total8, e);
        }
        float inverse = 1 / sum8(total8);
        float *prow = p + i * n;
        for (long j = 0; j < n; j++) prow[j] = row[j] * inverse;
    }
    weightsTimesRows(out, outStride, p, n, v, rowStride, queries, n, d, 0);
}

AVX2 static void attentionBackwardAVX2(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                       const float *q, const float *k, const float *v, long rowStride,
                                       const float *p, long queries, long n, long d, float scale, float *scratch) {
    long width = roundUp16(n);
    float *vt = scratch, *ds = scratch + d * width, *transposed = ds + n * width;
    transposeRows(vt, width, v, rowStride, n, d);
    rowsTimesTransposed(ds, width, dOut, dOutStride, vt, width, queries, d);  // dP
    for (long i = 0; i < queries; i++) {
        float *row = ds + i * width;
        const float *prow = p + i * n;
        float weighted = 0;
        for (long j = 0; j < n; j++) weighted += prow[j] * row[j];
        for (long j = 0; j < n; j++) row[j] = prow[j] * (row[j] - weighted) * scale;
    }
    weightsTimesRows(dq, rowStride, ds, width, k, rowStride, queries, n, d, 1);
    for (long i = 0; i < queries; i++)
        for (long j = 0; j < n; j++) transposed[j * queries + i] = ds[i * width + j];
    weightsTimesRows(dk, rowStride, transposed, queries, q, rowStride, n, queries, d, 1);
    for (long i = 0; i < queries; i++)
        for (long j = 0; j < n; j++) transposed[j * queries + i] = p[i * n + j];
    weightsTimesRows(dv, rowStride, transposed, queries, dOut, dOutStride, n, queries, d, 1);
}

#endif

// MARK: - Entry points

long dino_attention_scratch_count(long n, long d) {
    long width = (n + 15) & ~15L;
    return d * width + n * width + n * n + 16;
}

void dino_attention_forward_block(float *out, long outStride, float *probabilities,
                                  const float *q, const float *k, const float *v, long rowStride,
                                  long queries, long n, long d, float scale, float *scratch) {
#if DINO_X86
    if (dino_kernels_use_avx2()) {
        attentionForwardAVX2(out, outStride, probabilities, q, k, v, rowStride, queries, n, d, scale, scratch);
        return;
    }
#endif
    (void)scratch;
    attentionForwardPortable(out, outStride, probabilities, q, k, v, rowStride, queries, n, d, scale);
}

void dino_attention_backward_block(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                   const float *q, const float *k, const float *v, long rowStride,
                                   const float *probabilities, long queries, long n, long d, float scale,
                                   float *scratch) {
#if DINO_X86
    if (dino_kernels_use_avx2()) {
        attentionBackwardAVX2(dq, dk, dv, dOut, dOutStride, q, k, v, rowStride, probabilities, queries, n, d, scale,
                              scratch);
        return;
    }
#endif
    attentionBackwardPortable(dq, dk, dv, dOut, dOutStride, q, k, v, rowStride, probabilities, queries, n, d, scale,
                              scratch);
}
