// The exact-erf GELU, x·Φ(x), and its derivative.
#include "SIMD.h"

// MARK: - Portable

static const float inverseSqrt2 = 0.70710678118654752f;
static const float inverseSqrt2Pi = 0.39894228040143268f;

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

#if DINO_X86

// MARK: - AVX2

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

// MARK: - AVX-512: the AVX2 functions' operations on 16 lanes (the same bits per element)

AVX512 static inline __m512 erf16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
    __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.60960333262415e-02f));
    p = _mm512_mul_ps(p, x);
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.42647390514189e-02f));
    return _mm512_div_ps(p, q);
}

AVX512 static inline __m512 geluForward16(__m512 x) {
    __m512 half = _mm512_set1_ps(0.5f);
    __m512 cdf = _mm512_fmadd_ps(half, erf16(_mm512_mul_ps(x, _mm512_set1_ps(inverseSqrt2))), half);
    return _mm512_mul_ps(x, cdf);
}

AVX512 static inline __m512 geluDerivative16(__m512 x) {
    __m512 half = _mm512_set1_ps(0.5f);
    __m512 cdf = _mm512_fmadd_ps(half, erf16(_mm512_mul_ps(x, _mm512_set1_ps(inverseSqrt2))), half);
    __m512 pdf = _mm512_mul_ps(exp16(_mm512_mul_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(-0.5f))),
                               _mm512_set1_ps(inverseSqrt2Pi));
    return _mm512_fmadd_ps(x, pdf, cdf);
}

AVX512 static void geluForwardAVX512(float *out, const float *in, long count) {
    long i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(out + i, geluForward16(_mm512_loadu_ps(in + i)));
    if (i < count) geluForwardAVX2(out + i, in + i, count - i);
}

AVX512 static void geluBackwardAVX512(float *dIn, const float *dOut, const float *in, long count, int accumulate) {
    long i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 d = _mm512_mul_ps(_mm512_loadu_ps(dOut + i), geluDerivative16(_mm512_loadu_ps(in + i)));
        _mm512_storeu_ps(dIn + i, accumulate ? _mm512_add_ps(_mm512_loadu_ps(dIn + i), d) : d);
    }
    if (i < count) geluBackwardAVX2(dIn + i, dOut + i, in + i, count - i, accumulate);
}

#endif

// MARK: - Entry points

void dino_gelu_forward(float *out, const float *in, long count) {
#if DINO_X86
    if (dino_kernels_use_avx512()) { geluForwardAVX512(out, in, count); return; }
    if (dino_kernels_use_avx2()) { geluForwardAVX2(out, in, count); return; }
#endif
    geluForwardPortable(out, in, count);
}

void dino_gelu_backward(float *dIn, const float *dOut, const float *in, long count, int accumulate) {
#if DINO_X86
    if (dino_kernels_use_avx512()) { geluBackwardAVX512(dIn, dOut, in, count, accumulate); return; }
    if (dino_kernels_use_avx2()) { geluBackwardAVX2(dIn, dOut, in, count, accumulate); return; }
#endif
    geluBackwardPortable(dIn, dOut, in, count, accumulate);
}
