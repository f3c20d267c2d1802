// Row softmax at a temperature and the DINO loss's per-row cross-entropy and gradient: the loss's
// exponentials (tens of thousands per row group) through a vector exp instead of libm's scalar one.
#include "SIMD.h"

// MARK: - Portable

static void softmaxRowPortable(float *y, float *logNormalizer, const float *x, const float *shift,
                               float inverseTemperature, long k, int logarithm) {
    float m = -INFINITY;
    for (long i = 0; i < k; i++) {
        y[i] = (x[i] - (shift ? shift[i] : 0.0f)) * inverseTemperature;
        m = y[i] > m ? y[i] : m;
    }
    float total = 0;
    for (long i = 0; i < k; i++) total += expf(y[i] - m);
    float logTotal = logf(total) + m;
    if (logNormalizer) *logNormalizer = logTotal;
    if (logarithm) {
        for (long i = 0; i < k; i++) y[i] -= logTotal;
    } else {
        float inverse = 1.0f / total;
        for (long i = 0; i < k; i++) y[i] = expf(y[i] - m) * inverse;
    }
}

static void crossEntropyRowPortable(float *d, double *c0, double *c1, const float *lp, const float *q0,
                                    const float *q1, long k, int view, float scale) {
    double a = 0, b = 0;
    for (long j = 0; j < k; j++) { a -= (double)(q0[j] * lp[j]); b -= (double)(q1[j] * lp[j]); }
    *c0 = a; *c1 = b;
    for (long j = 0; j < k; j++) {
        float p = expf(lp[j]);
        d[j] = view == 0 ? scale * (p - q1[j]) : view == 1 ? scale * (p - q0[j]) : scale * (2 * p - q0[j] - q1[j]);
    }
}

#if DINO_X86

// MARK: - AVX2

/// Lanes [0, count) of x, the others `fill`.
AVX2 static inline __m256 loadPartial(const float *x, long count, float fill) {
    float buffer[8] = {fill, fill, fill, fill, fill, fill, fill, fill};
    memcpy(buffer, x, (size_t)count * sizeof(float));
    return _mm256_loadu_ps(buffer);
}

AVX2 static inline void storePartial(float *y, __m256 v, long count) {
    float buffer[8];
    _mm256_storeu_ps(buffer, v);
    memcpy(y, buffer, (size_t)count * sizeof(float));
}

/// The largest of 8 lanes.
AVX2 static inline float max8(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/// Adds the 8 float products a·b to 4 + 4 double lanes.
AVX2 static inline void accumulateProducts(__m256d *low, __m256d *high, __m256 a, __m256 b) {
    __m256 p = _mm256_mul_ps(a, b);
    *low = _mm256_add_pd(*low, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
    *high = _mm256_add_pd(*high, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
}

AVX2 static inline double sum4d(__m256d low, __m256d high) {
    double lanes[8];
    _mm256_storeu_pd(lanes, low);
    _mm256_storeu_pd(lanes + 4, high);
    return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}

AVX2 static void softmaxRowAVX2(float *y, float *logNormalizer, const float *x, const float *shift,
                                float inverseTemperature, long k, int logarithm) {
    const __m256 t = _mm256_set1_ps(inverseTemperature);
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    long i = 0, tail = k % 8, body = k - tail;
    for (; i < body; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (shift) v = _mm256_sub_ps(v, _mm256_loadu_ps(shift + i));
        v = _mm256_mul_ps(v, t);
        _mm256_storeu_ps(y + i, v);
        m8 = _mm256_max_ps(m8, v);
    }
    if (tail) {
        __m256 v = loadPartial(x + body, tail, 0);
        if (shift) v = _mm256_sub_ps(v, loadPartial(shift + body, tail, 0));
        v = _mm256_mul_ps(v, t);
        storePartial(y + body, v, tail);
        m8 = _mm256_max_ps(m8, loadPartial(y + body, tail, -INFINITY));
    }
    const float m = max8(m8);
    const __m256 mv = _mm256_set1_ps(m);
    __m256 total8 = _mm256_setzero_ps();
    for (i = 0; i < body; i += 8) total8 = _mm256_add_ps(total8, exp8(_mm256_sub_ps(_mm256_loadu_ps(y + i), mv)));
    if (tail) total8 = _mm256_add_ps(total8, exp8(_mm256_sub_ps(loadPartial(y + body, tail, -INFINITY), mv)));
    const float total = sum8(total8);
    const float logTotal = logf(total) + m;
    if (logNormalizer) *logNormalizer = logTotal;
    if (logarithm) {
        const __m256 l = _mm256_set1_ps(logTotal);
        for (i = 0; i < body; i += 8) _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_loadu_ps(y + i), l));
        for (; i < k; i++) y[i] -= logTotal;
    } else {
        const __m256 inverse = _mm256_set1_ps(1.0f / total);
        for (i = 0; i < body; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(y + i), mv)), inverse));
        if (tail) storePartial(y + body, _mm256_mul_ps(exp8(_mm256_sub_ps(loadPartial(y + body, tail, 0), mv)), inverse), tail);
    }
}

AVX2 static void crossEntropyRowAVX2(float *d, double *c0, double *c1, const float *lp, const float *q0,
                                     const float *q1, long k, int view, float scale) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), b0 = _mm256_setzero_pd(), b1 = _mm256_setzero_pd();
    const __m256 s = _mm256_set1_ps(scale), two = _mm256_set1_ps(2.0f);
    long tail = k % 8, body = k - tail;
    for (long j = 0; j <= body; j += 8) {
        long count = j < body ? 8 : tail;
        if (count == 0) break;
        __m256 l = count == 8 ? _mm256_loadu_ps(lp + j) : loadPartial(lp + j, count, -INFINITY);
        __m256 p0 = count == 8 ? _mm256_loadu_ps(q0 + j) : loadPartial(q0 + j, count, 0);
        __m256 p1 = count == 8 ? _mm256_loadu_ps(q1 + j) : loadPartial(q1 + j, count, 0);
        // 0·(−∞) in padding lanes would be NaN: use 0 there for the products.
        __m256 lFinite = count == 8 ? l : loadPartial(lp + j, count, 0);
        accumulateProducts(&a0, &a1, p0, lFinite);
        accumulateProducts(&b0, &b1, p1, lFinite);
        __m256 p = exp8(l), g;
        if (view == 0) g = _mm256_mul_ps(s, _mm256_sub_ps(p, p1));
        else if (view == 1) g = _mm256_mul_ps(s, _mm256_sub_ps(p, p0));
        else g = _mm256_mul_ps(s, _mm256_sub_ps(_mm256_fmsub_ps(two, p, p0), p1));
        if (count == 8) _mm256_storeu_ps(d + j, g); else storePartial(d + j, g, count);
    }
    *c0 = -sum4d(a0, a1);
    *c1 = -sum4d(b0, b1);
}

#endif

// MARK: - Dispatch

void dino_softmax_rows(float *out, float *logNormalizers, const float *in, const float *shift,
                       float inverseTemperature, long rows, long k, int logarithm) {
#if DINO_X86
    if (dino_kernels_use_avx2()) {
        for (long r = 0; r < rows; r++)
            softmaxRowAVX2(out + r * k, logNormalizers ? logNormalizers + r : 0, in + r * k, shift, inverseTemperature, k, logarithm);
        return;
    }
#endif
    for (long r = 0; r < rows; r++)
        softmaxRowPortable(out + r * k, logNormalizers ? logNormalizers + r : 0, in + r * k, shift, inverseTemperature, k, logarithm);
}

void dino_cross_entropy_row(float *d, double *c0, double *c1, const float *lp, const float *q0, const float *q1,
                            long k, int view, float scale) {
#if DINO_X86
    if (dino_kernels_use_avx2()) { crossEntropyRowAVX2(d, c0, c1, lp, q0, q1, k, view, scale); return; }
#endif
    crossEntropyRowPortable(d, c0, c1, lp, q0, q1, k, view, scale);
}
