// LayerNorm forward and input gradient, one row at a time.
#include "SIMD.h"

// MARK: - Portable

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

#if DINO_X86

// MARK: - AVX2

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

#endif

// MARK: - Entry points

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
