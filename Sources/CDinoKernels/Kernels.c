// Fused attention blocks and the exact-erf GELU, AVX2+FMA with a portable fallback.
// Shapes are in the header. Every output element is computed by a fixed sequence of operations
// that depends only on the problem (n, d, count), never on which thread or range computes it.
#include "CDinoKernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define DINO_X86 1
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define DINO_X86 0
#endif

// MARK: - Selection

static int forcedPortable = 0;
static int detected = -1;

int dino_kernels_use_avx2(void) {
#if DINO_X86
    if (__atomic_load_n(&forcedPortable, __ATOMIC_RELAXED)) return 0;
    int value = __atomic_load_n(&detected, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&detected, value, __ATOMIC_RELAXED);
    }
    return value;
#else
    return 0;
#endif
}

void dino_kernels_force_portable(int portable) { __atomic_store_n(&forcedPortable, portable, __ATOMIC_RELAXED); }

static const float inverseSqrt2 = 0.70710678118654752f;
static const float inverseSqrt2Pi = 0.39894228040143268f;

// MARK: - Portable kernels

static void geluForwardPortable(float *out, const float *in, long count) {
    for (long i = 0; i < count; i++) {
        float x = in[i];
        out[i] = 0.5f * x * (1.0f + erff(x * inverseSqrt2));
    }
}

static void geluBackwardPortable(float *dIn, const float *dOut, const float *in, long count, int accumulate) {
    for (long i = 0; i < count; i++) {
        float x = in[i];
        float cdf = 0.5f * (1.0f + erff(x * inverseSqrt2));
        float pdf = expf(-0.5f * x * x) * inverseSqrt2Pi;
        float g = dOut[i] * (cdf + x * pdf);
        dIn[i] = accumulate ? dIn[i] + g : g;
    }
}

static void attentionForwardPortable(float *out, long outStride, float *p, const float *q, const float *k,
                                     const float *v, long rowStride, long n, long d, float scale) {
    for (long i = 0; i < n; i++) {
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
                                      const float *p, long n, long d, float scale, float *dp) {
    for (long i = 0; i < n; i++) {
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

static void layerNormForwardPortable(float *out, float *mean, float *rstd, const float *in, const float *weight,
                                     const float *bias, long rows, long c, float epsilon) {
    for (long r = 0; r < rows; r++) {
        const float *x = in + r * c;
        float *y = out + r * c;
        float total = 0;
        for (long i = 0; i < c; i++) total += x[i];
        float mu = total / (float)c, variance = 0;
        for (long i = 0; i < c; i++) { float d = x[i] - mu; variance += d * d; }
        float s = 1 / sqrtf(variance / (float)c + epsilon);
        for (long i = 0; i < c; i++) y[i] = (x[i] - mu) * s * weight[i] + bias[i];
        mean[r] = mu; rstd[r] = s;
    }
}

static void layerNormBackwardInputPortable(float *dIn, const float *dOut, const float *in, const float *weight,
                                           const float *mean, const float *rstd, long rows, long c) {
    for (long r = 0; r < rows; r++) {
        const float *x = in + r * c, *dy = dOut + r * c;
        float *dx = dIn + r * c, mu = mean[r], s = rstd[r], meanG = 0, meanGX = 0;
        for (long i = 0; i < c; i++) { float g = dy[i] * weight[i]; meanG += g; meanGX += g * (x[i] - mu) * s; }
        meanG /= (float)c; meanGX /= (float)c;
        for (long i = 0; i < c; i++) dx[i] += s * (dy[i] * weight[i] - meanG - (x[i] - mu) * s * meanGX);
    }
}

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

// MARK: - AVX2 building blocks

/// e^x, Cephes' range reduction and degree-6 polynomial (about 1 ulp); 0 below -87.3.
AVX2 static inline __m256 exp8(__m256 x) {
    const __m256 low = _mm256_set1_ps(-87.3f);
    __m256 underflow = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, low), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(underflow, y);
}

/// erf(x) as a ratio of an odd degree-13 and an even degree-8 polynomial on [-4, 4] (clamped
/// outside, where erf is ±1 in float); absolute error below 5e-7.
AVX2 static inline __m256 erf8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.60960333262415e-02f));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.42647390514189e-02f));
    return _mm256_div_ps(p, q);
}

AVX2 static inline __m256 geluForward8(__m256 x) {
    __m256 half = _mm256_set1_ps(0.5f);
    __m256 cdf = _mm256_fmadd_ps(half, erf8(_mm256_mul_ps(x, _mm256_set1_ps(inverseSqrt2))), half);
    return _mm256_mul_ps(x, cdf);
}

/// Φ(x) + x·φ(x), the derivative of x·Φ(x).
AVX2 static inline __m256 geluDerivative8(__m256 x) {
    __m256 half = _mm256_set1_ps(0.5f);
    __m256 cdf = _mm256_fmadd_ps(half, erf8(_mm256_mul_ps(x, _mm256_set1_ps(inverseSqrt2))), half);
    __m256 pdf = _mm256_mul_ps(exp8(_mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f))),
                               _mm256_set1_ps(inverseSqrt2Pi));
    return _mm256_fmadd_ps(x, pdf, cdf);
}

AVX2 static void geluForwardAVX2(float *out, const float *in, long count) {
    long i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, geluForward8(_mm256_loadu_ps(in + i)));
    if (i < count) {  // the tail goes through the same vector code, so a value's result never depends on its position
        float buffer[8] = {0};
        memcpy(buffer, in + i, (size_t)(count - i) * sizeof(float));
        _mm256_storeu_ps(buffer, geluForward8(_mm256_loadu_ps(buffer)));
        memcpy(out + i, buffer, (size_t)(count - i) * sizeof(float));
    }
}

AVX2 static inline __m256 geluBackward8(__m256 x, __m256 g, __m256 previous, int accumulate) {
    __m256 d = _mm256_mul_ps(g, geluDerivative8(x));
    return accumulate ? _mm256_add_ps(previous, d) : d;
}

AVX2 static void geluBackwardAVX2(float *dIn, const float *dOut, const float *in, long count, int accumulate) {
    long i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 previous = accumulate ? _mm256_loadu_ps(dIn + i) : _mm256_setzero_ps();
        _mm256_storeu_ps(dIn + i, geluBackward8(_mm256_loadu_ps(in + i), _mm256_loadu_ps(dOut + i), previous, accumulate));
    }
    if (i < count) {
        float x[8] = {0}, g[8] = {0}, previous[8] = {0};
        size_t bytes = (size_t)(count - i) * sizeof(float);
        memcpy(x, in + i, bytes); memcpy(g, dOut + i, bytes);
        if (accumulate) memcpy(previous, dIn + i, bytes);
        _mm256_storeu_ps(previous, geluBackward8(_mm256_loadu_ps(x), _mm256_loadu_ps(g), _mm256_loadu_ps(previous), accumulate));
        memcpy(dIn + i, previous, bytes);
    }
}


/// Σ of 8 lanes in a fixed order.
AVX2 static inline float sum8(__m256 v) {
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}

AVX2 static void layerNormForwardAVX2(float *out, float *mean, float *rstd, const float *in, const float *weight,
                                      const float *bias, long rows, long c, float epsilon) {
    long c8 = c & ~7L;
    for (long r = 0; r < rows; r++) {
        const float *x = in + r * c;
        float *y = out + r * c;
        __m256 acc = _mm256_setzero_ps();
        for (long i = 0; i < c8; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
        float total = sum8(acc);
        for (long i = c8; i < c; i++) total += x[i];
        float mu = total / (float)c;
        __m256 mu8 = _mm256_set1_ps(mu);
        acc = _mm256_setzero_ps();
        for (long i = 0; i < c8; i += 8) { __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mu8); acc = _mm256_fmadd_ps(d, d, acc); }
        float variance = sum8(acc);
        for (long i = c8; i < c; i++) { float d = x[i] - mu; variance += d * d; }
        float s = 1 / sqrtf(variance / (float)c + epsilon);
        __m256 s8 = _mm256_set1_ps(s);
        for (long i = 0; i < c8; i += 8) {
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mu8), s8);
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(xhat, _mm256_loadu_ps(weight + i), _mm256_loadu_ps(bias + i)));
        }
        for (long i = c8; i < c; i++) y[i] = (x[i] - mu) * s * weight[i] + bias[i];
        mean[r] = mu; rstd[r] = s;
    }
}

AVX2 static void layerNormBackwardInputAVX2(float *dIn, const float *dOut, const float *in, const float *weight,
                                            const float *mean, const float *rstd, long rows, long c) {
    long c8 = c & ~7L;
    for (long r = 0; r < rows; r++) {
        const float *x = in + r * c, *dy = dOut + r * c;
        float *dx = dIn + r * c, mu = mean[r], s = rstd[r];
        __m256 mu8 = _mm256_set1_ps(mu), s8 = _mm256_set1_ps(s), g8 = _mm256_setzero_ps(), gx8 = _mm256_setzero_ps();
        for (long i = 0; i < c8; i += 8) {
            __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(weight + i));
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mu8), s8);
            g8 = _mm256_add_ps(g8, g);
            gx8 = _mm256_fmadd_ps(g, xhat, gx8);
        }
        float meanG = sum8(g8), meanGX = sum8(gx8);
        for (long i = c8; i < c; i++) { float g = dy[i] * weight[i]; meanG += g; meanGX += g * (x[i] - mu) * s; }
        meanG /= (float)c; meanGX /= (float)c;
        __m256 meanG8 = _mm256_set1_ps(meanG), meanGX8 = _mm256_set1_ps(meanGX);
        for (long i = 0; i < c8; i += 8) {
            __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(weight + i));
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mu8), s8);
            __m256 inner = _mm256_fnmadd_ps(xhat, meanGX8, _mm256_sub_ps(g, meanG8));
            _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(s8, inner, _mm256_loadu_ps(dx + i)));
        }
        for (long i = c8; i < c; i++) dx[i] += s * (dy[i] * weight[i] - meanG - (x[i] - mu) * s * meanGX);
    }
}

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

/// dst (d × width, zero-padded past n) = the transpose of n rows of d floats at rowStride.
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
                                      const float *v, long rowStride, long n, long d, float scale, float *scratch) {
    long width = roundUp16(n);
    float *kt = scratch, *s = scratch + d * width;
    transposeRows(kt, width, k, rowStride, n, d);
    rowsTimesTransposed(s, width, q, rowStride, kt, width, n, d);
    __m256 scale8 = _mm256_set1_ps(scale);
    for (long i = 0; i < n; i++) {
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
    weightsTimesRows(out, outStride, p, n, v, rowStride, n, n, d, 0);
}

AVX2 static void attentionBackwardAVX2(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                       const float *q, const float *k, const float *v, long rowStride,
                                       const float *p, long n, long d, float scale, float *scratch) {
    long width = roundUp16(n);
    float *vt = scratch, *ds = scratch + d * width, *transposed = ds + n * width;
    transposeRows(vt, width, v, rowStride, n, d);
    rowsTimesTransposed(ds, width, dOut, dOutStride, vt, width, n, d);  // dP
    for (long i = 0; i < n; i++) {
        float *row = ds + i * width;
        const float *prow = p + i * n;
        float weighted = 0;
        for (long j = 0; j < n; j++) weighted += prow[j] * row[j];
        for (long j = 0; j < n; j++) row[j] = prow[j] * (row[j] - weighted) * scale;
    }
    weightsTimesRows(dq, rowStride, ds, width, k, rowStride, n, n, d, 1);
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) transposed[j * n + i] = ds[i * width + j];
    weightsTimesRows(dk, rowStride, transposed, n, q, rowStride, n, n, d, 1);
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) transposed[j * n + i] = p[i * n + j];
    weightsTimesRows(dv, rowStride, transposed, n, dOut, dOutStride, n, n, d, 1);
}

#endif

// MARK: - Entry points

void dino_gelu_forward(float *out, const float *in, long count) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { geluForwardAVX2(out, in, count); return; }
#endif
    geluForwardPortable(out, in, count);
}

void dino_gelu_backward(float *dIn, const float *dOut, const float *in, long count, int accumulate) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { geluBackwardAVX2(dIn, dOut, in, count, accumulate); return; }
#endif
    geluBackwardPortable(dIn, dOut, in, count, accumulate);
}

long dino_attention_scratch_count(long n, long d) {
    long width = (n + 15) & ~15L;
    return d * width + n * width + n * n + 16;
}

void dino_attention_forward_block(float *out, long outStride, float *probabilities,
                                  const float *q, const float *k, const float *v, long rowStride,
                                  long n, long d, float scale, float *scratch) {
#if DINO_X86
    if (dino_kernels_use_avx2()) {
        attentionForwardAVX2(out, outStride, probabilities, q, k, v, rowStride, n, d, scale, scratch);
        return;
    }
#endif
    (void)scratch;
    attentionForwardPortable(out, outStride, probabilities, q, k, v, rowStride, n, d, scale);
}

void dino_attention_backward_block(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                   const float *q, const float *k, const float *v, long rowStride,
                                   const float *probabilities, long n, long d, float scale, float *scratch) {
#if DINO_X86
    if (dino_kernels_use_avx2()) {
        attentionBackwardAVX2(dq, dk, dv, dOut, dOutStride, q, k, v, rowStride, probabilities, n, d, scale, scratch);
        return;
    }
#endif
    attentionBackwardPortable(dq, dk, dv, dOut, dOutStride, q, k, v, rowStride, probabilities, n, d, scale, scratch);
}

void dino_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *weight,
                            const float *bias, long rows, long columns, float epsilon) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { layerNormForwardAVX2(out, mean, rstd, in, weight, bias, rows, columns, epsilon); return; }
#endif
    layerNormForwardPortable(out, mean, rstd, in, weight, bias, rows, columns, epsilon);
}

void dino_layernorm_backward_input(float *dIn, const float *dOut, const float *in, const float *weight,
                                   const float *mean, const float *rstd, long rows, long columns) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { layerNormBackwardInputAVX2(dIn, dOut, in, weight, mean, rstd, rows, columns); return; }
#endif
    layerNormBackwardInputPortable(dIn, dOut, in, weight, mean, rstd, rows, columns);
}

void dino_column_sums(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                      const float *rstd, long rows, long columns, long first, long last) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { columnSumsAVX2(dWeight, dBias, dOut, in, mean, rstd, rows, columns, first, last); return; }
#endif
    columnSumsPortable(dWeight, dBias, dOut, in, mean, rstd, rows, columns, first, last);
}
