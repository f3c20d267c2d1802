// Fused attention per (image, head) block: Q·Kᵀ, the scaled softmax and P·V in one pass, and its backward.
#include "SIMD.h"

/// The padded row length of the score blocks: whole 8-lane vectors (tiles of 16 and 8 columns give every
/// score the same FMA chain, so the padding changes no value; 8 rather than 16 halves a 5-token crop's work).
static inline long paddedWidth(long n) { return (n + 7) & ~7L; }

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

/// The 8 × 8 block in r[0..<8] (row u = r[u]) transposed in place.
AVX2 static inline __attribute__((always_inline)) void transpose8x8(__m256 r[8]) {
    __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
    __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
    __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
    __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
    r[0] = _mm256_permute2f128_ps(b0, b4, 0x20); r[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
    r[2] = _mm256_permute2f128_ps(b2, b6, 0x20); r[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
    r[4] = _mm256_permute2f128_ps(b0, b4, 0x31); r[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
    r[6] = _mm256_permute2f128_ps(b2, b6, 0x31); r[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}

/// dst[t·width + j] = src[j·rowStride + t] `(d, width)` for the n rows of src `(n, d)`, columns n..<width
/// zero (width a multiple of 8). Head sizes that are multiples of 8 go in 8 × 8 register blocks (contiguous
/// loads of src's rows, whole rows of dst stored); others element by element. A copy: the same values.
AVX2 static void transposeRows(float *dst, long width, const float *src, long rowStride, long n, long d) {
    if (d % 8 != 0) {
        for (long t = 0; t < d; t++) {
            float *out = dst + t * width;
            for (long j = 0; j < n; j++) out[j] = src[j * rowStride + t];
            for (long j = n; j < width; j++) out[j] = 0;
        }
        return;
    }
    for (long j0 = 0; j0 < width; j0 += 8) {
        if (j0 >= n) {
            for (long t = 0; t < d; t++) _mm256_storeu_ps(dst + t * width + j0, _mm256_setzero_ps());
            continue;
        }
        for (long t0 = 0; t0 < d; t0 += 8) {
            __m256 r[8];
            for (int u = 0; u < 8; u++)
                r[u] = j0 + u < n ? _mm256_loadu_ps(src + (j0 + u) * rowStride + t0) : _mm256_setzero_ps();
            transpose8x8(r);
            for (int u = 0; u < 8; u++) _mm256_storeu_ps(dst + (t0 + u) * width + j0, r[u]);
        }
    }
}

/// R rows (1 ≤ R ≤ 6, a constant at each call site) of `rowsTimesMatrix`, starting at row r0: 16-column
/// tiles of R × 2 accumulators, then 8 columns, then scalar columns.
AVX2 static inline __attribute__((always_inline))
void rowTile(const int R, float *out, long ldo, const float *a, long lda, const float *b, long ldb,
             long columns, long inner, int accumulate) {
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
#define FMA16(i) if (R > i) { __m256 x = _mm256_broadcast_ss(a##i + t); \
                   c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0); c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1); }
#define STORE16(i) if (R > i) { float *o = out + i * ldo + c0; \
        if (accumulate) { c##i##0 = _mm256_add_ps(c##i##0, _mm256_loadu_ps(o)); \
                          c##i##1 = _mm256_add_ps(c##i##1, _mm256_loadu_ps(o + 8)); } \
        _mm256_storeu_ps(o, c##i##0); _mm256_storeu_ps(o + 8, c##i##1); }
#define FMA8(i) if (R > i) c##i##0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a##i + t), b0, c##i##0);
#define STORE8(i) if (R > i) { float *o = out + i * ldo + c0; \
        if (accumulate) c##i##0 = _mm256_add_ps(c##i##0, _mm256_loadu_ps(o)); \
        _mm256_storeu_ps(o, c##i##0); }
    long c0 = 0;
    for (; c0 + 16 <= columns; c0 += 16) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *bt = b + c0;
        for (long t = 0; t < inner; t++, bt += ldb) {
            __m256 b0 = _mm256_loadu_ps(bt), b1 = _mm256_loadu_ps(bt + 8);
            FMA16(0) FMA16(1) FMA16(2) FMA16(3) FMA16(4) FMA16(5)
        }
        STORE16(0) STORE16(1) STORE16(2) STORE16(3) STORE16(4) STORE16(5)
    }
    for (; c0 + 8 <= columns; c0 += 8) {
        __m256 c00 = _mm256_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00;
        const float *bt = b + c0;
        for (long t = 0; t < inner; t++, bt += ldb) {
            __m256 b0 = _mm256_loadu_ps(bt);
            FMA8(0) FMA8(1) FMA8(2) FMA8(3) FMA8(4) FMA8(5)
        }
        STORE8(0) STORE8(1) STORE8(2) STORE8(3) STORE8(4) STORE8(5)
    }
    for (; c0 < columns; c0++) {
        for (long r = 0; r < R; r++) {
            float sum = 0;
            for (long t = 0; t < inner; t++) sum = fmaf(a[r * lda + t], b[t * ldb + c0], sum);
            float *o = out + r * ldo + c0;
            *o = accumulate ? *o + sum : sum;
        }
    }
#undef FMA16
#undef STORE16
#undef FMA8
#undef STORE8
}

/// out[r][c] (+)= Σₜ a[r·lda + t]·b[t·ldb + c] for r < rows, c < columns, t < inner: the entries of A are
/// broadcast, the rows of B loaded as vectors. Tiles of 6 rows × 16 columns (12 accumulators, 2 loads
/// and 6 broadcasts per 12 FMAs), the last rows in one tile of exactly the rows left. Every element is
/// one FMA chain over t in order from zero, added to out when accumulating, whatever the tile.
AVX2 static void rowsTimesMatrixAVX2(float *out, long ldo, const float *a, long lda, const float *b, long ldb,
                                     long rows, long columns, long inner, int accumulate) {
    long r0 = 0;
    for (; r0 + 6 <= rows; r0 += 6)
        rowTile(6, out + r0 * ldo, ldo, a + r0 * lda, lda, b, ldb, columns, inner, accumulate);
    float *o = out + r0 * ldo;
    const float *ar = a + r0 * lda;
    switch (rows - r0) {
    case 5: rowTile(5, o, ldo, ar, lda, b, ldb, columns, inner, accumulate); break;
    case 4: rowTile(4, o, ldo, ar, lda, b, ldb, columns, inner, accumulate); break;
    case 3: rowTile(3, o, ldo, ar, lda, b, ldb, columns, inner, accumulate); break;
    case 2: rowTile(2, o, ldo, ar, lda, b, ldb, columns, inner, accumulate); break;
    case 1: rowTile(1, o, ldo, ar, lda, b, ldb, columns, inner, accumulate); break;
    default: break;
    }
}

/// R rows of `rowsTimesMatrix` on AVX-512: 32-column tiles of R × 2 accumulators for the first
/// `columns` (a multiple of 32). Each element is the same FMA chain as in `rowTile`: the same bits.
AVX512 static inline __attribute__((always_inline))
void rowTile32(const int R, float *out, long ldo, const float *a, long lda, const float *b, long ldb,
               long columns, long inner, int accumulate) {
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
#define FMA32(i) if (R > i) { __m512 x = _mm512_set1_ps(a##i[t]); \
                   c##i##0 = _mm512_fmadd_ps(x, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(x, b1, c##i##1); }
#define STORE32(i) if (R > i) { float *o = out + i * ldo + c0; \
        if (accumulate) { c##i##0 = _mm512_add_ps(c##i##0, _mm512_loadu_ps(o)); \
                          c##i##1 = _mm512_add_ps(c##i##1, _mm512_loadu_ps(o + 16)); } \
        _mm512_storeu_ps(o, c##i##0); _mm512_storeu_ps(o + 16, c##i##1); }
    for (long c0 = 0; c0 < columns; c0 += 32) {
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
        __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        const float *bt = b + c0;
        for (long t = 0; t < inner; t++, bt += ldb) {
            __m512 b0 = _mm512_loadu_ps(bt), b1 = _mm512_loadu_ps(bt + 16);
            FMA32(0) FMA32(1) FMA32(2) FMA32(3) FMA32(4) FMA32(5)
        }
        STORE32(0) STORE32(1) STORE32(2) STORE32(3) STORE32(4) STORE32(5)
    }
#undef FMA32
#undef STORE32
}

/// `rowsTimesMatrix` with the columns up to a multiple of 32 in AVX-512 tiles and the rest in AVX2's.
AVX512 static void rowsTimesMatrixAVX512(float *out, long ldo, const float *a, long lda, const float *b, long ldb,
                                         long rows, long columns, long inner, int accumulate) {
    long wide = columns & ~31L, rest = columns - wide;
    long r0 = 0;
    for (; r0 + 6 <= rows; r0 += 6) {
        rowTile32(6, out + r0 * ldo, ldo, a + r0 * lda, lda, b, ldb, wide, inner, accumulate);
        if (rest) rowTile(6, out + r0 * ldo + wide, ldo, a + r0 * lda, lda, b + wide, ldb, rest, inner, accumulate);
    }
    float *o = out + r0 * ldo;
    const float *ar = a + r0 * lda;
#define TAIL(R) rowTile32(R, o, ldo, ar, lda, b, ldb, wide, inner, accumulate); \
                if (rest) rowTile(R, o + wide, ldo, ar, lda, b + wide, ldb, rest, inner, accumulate);
    switch (rows - r0) {
    case 5: TAIL(5) break;
    case 4: TAIL(4) break;
    case 3: TAIL(3) break;
    case 2: TAIL(2) break;
    case 1: TAIL(1) break;
    default: break;
    }
#undef TAIL
}

/// rowsTimesMatrixAVX2 or, where allowed, its AVX-512 form (the same bits).
AVX2 static void rowsTimesMatrix(float *out, long ldo, const float *a, long lda, const float *b, long ldb,
                                 long rows, long columns, long inner, int accumulate) {
    if (columns >= 32 && dino_kernels_use_avx512())
        rowsTimesMatrixAVX512(out, ldo, a, lda, b, ldb, rows, columns, inner, accumulate);
    else
        rowsTimesMatrixAVX2(out, ldo, a, lda, b, ldb, rows, columns, inner, accumulate);
}

AVX2 static void attentionForwardAVX2(float *out, long outStride, float *p, const float *q, const float *k,
                                      const float *v, long rowStride, long queries, long n, long d, float scale,
                                      float *scratch) {
    long width = paddedWidth(n);
    float *kt = scratch, *s = scratch + d * width;
    transposeRows(kt, width, k, rowStride, n, d);
    rowsTimesMatrix(s, width, q, rowStride, kt, width, queries, width, d, 0);
    __m256 scale8 = _mm256_set1_ps(scale);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (long i = 0; i < queries; i++) {
        float *row = s + i * width, *prow = p + i * n;
        // The maximum of the unscaled scores: rounding is monotone, so fl(scale·max) = max of fl(scale·s).
        __m256 m8 = _mm256_set1_ps(-INFINITY);
        long j = 0;
        for (; j + 8 <= n; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(row + j));
        float lanes[8];
        _mm256_storeu_ps(lanes, m8);
        float m = lanes[0];
        for (int l = 1; l < 8; l++) if (lanes[l] > m) m = lanes[l];
        for (; j < n; j++) if (row[j] > m) m = row[j];
        __m256 scaledMax = _mm256_set1_ps(m * scale), total8 = _mm256_setzero_ps();
        for (j = 0; j < width; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j), scale8), scaledMax));
            if (j + 8 > n) {  // padding columns: drop them from the sum
                __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)), lane);
                e = _mm256_and_ps(e, _mm256_castsi256_ps(keep));
            }
            _mm256_storeu_ps(row + j, e);
            total8 = _mm256_add_ps(total8, e);
        }
        __m256 inverse8 = _mm256_set1_ps(1 / sum8(total8));
        for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(prow + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inverse8));
        float inverse = 1 / sum8(total8);
        for (; j < n; j++) prow[j] = row[j] * inverse;
    }
    rowsTimesMatrix(out, outStride, p, n, v, rowStride, queries, d, n, 0);
}

AVX2 static void attentionBackwardAVX2(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                       const float *q, const float *k, const float *v, long rowStride,
                                       const float *p, long queries, long n, long d, float scale, float *scratch) {
    long width = paddedWidth(n);
    float *vt = scratch, *ds = scratch + d * width, *transposed = ds + n * width;
    transposeRows(vt, width, v, rowStride, n, d);
    rowsTimesMatrix(ds, width, dOut, dOutStride, vt, width, queries, width, d, 0);  // dP
    for (long i = 0; i < queries; i++) {
        float *row = ds + i * width;
        const float *prow = p + i * n;
        float weighted = 0;
        for (long j = 0; j < n; j++) weighted += prow[j] * row[j];
        for (long j = 0; j < n; j++) row[j] = prow[j] * (row[j] - weighted) * scale;
    }
    rowsTimesMatrix(dq, rowStride, ds, width, k, rowStride, queries, d, n, 1);
    for (long i = 0; i < queries; i++)
        for (long j = 0; j < n; j++) transposed[j * queries + i] = ds[i * width + j];
    rowsTimesMatrix(dk, rowStride, transposed, queries, q, rowStride, n, d, queries, 1);
    for (long i = 0; i < queries; i++)
        for (long j = 0; j < n; j++) transposed[j * queries + i] = p[i * n + j];
    rowsTimesMatrix(dv, rowStride, transposed, queries, dOut, dOutStride, n, d, queries, 1);
}

#endif

// MARK: - Entry points

long dino_attention_scratch_count(long n, long d) {
    long width = paddedWidth(n);
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
