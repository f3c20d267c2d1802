// One AdamW update over a range of one tensor, with the teacher's EMA in the same pass.
#include "SIMD.h"

// Every vector lane takes the portable loop's operations in its order, with no fused multiply-add,
// so each element gets the same bits on every path: runs do not depend on the CPU's vector width.
#pragma STDC FP_CONTRACT OFF

// MARK: - Portable

static void adamWPortable(float *p, float *g, float *m, float *v, float *teacher, long count,
                          const DinoAdamWScalars *s) {
    int clipped = s->gradientScale != 1.0f;
    for (long i = 0; i < count; i++) {
        float grad = g[i] * s->gradientScale;
        if (clipped) g[i] = grad;
        float parameter = p[i] * s->decay;
        float mi = m[i] + (grad - m[i]) * s->oneMinusBeta1;
        float vi = v[i] * s->beta2 + s->oneMinusBeta2 * grad * grad;
        m[i] = mi;
        v[i] = vi;
        parameter -= s->stepSize * mi / (sqrtf(vi) / s->secondMomentCorrectionRoot + s->epsilon);
        p[i] = parameter;
        if (teacher) teacher[i] = teacher[i] * s->teacherMomentum + s->oneMinusTeacherMomentum * parameter;
    }
}

#if DINO_X86

// MARK: - AVX-512 (16 lanes; the tail on the portable loop)

AVX512 static void adamWAVX512(float *p, float *g, float *m, float *v, float *teacher, long count,
                               const DinoAdamWScalars *s) {
    int clipped = s->gradientScale != 1.0f;
    __m512 scale = _mm512_set1_ps(s->gradientScale), decay = _mm512_set1_ps(s->decay);
    __m512 b1c = _mm512_set1_ps(s->oneMinusBeta1), b2 = _mm512_set1_ps(s->beta2), b2c = _mm512_set1_ps(s->oneMinusBeta2);
    __m512 stepSize = _mm512_set1_ps(s->stepSize), root = _mm512_set1_ps(s->secondMomentCorrectionRoot);
    __m512 eps = _mm512_set1_ps(s->epsilon);
    __m512 tm = _mm512_set1_ps(s->teacherMomentum), tmc = _mm512_set1_ps(s->oneMinusTeacherMomentum);
    long i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 grad = _mm512_mul_ps(_mm512_loadu_ps(g + i), scale);
        if (clipped) _mm512_storeu_ps(g + i, grad);
        __m512 parameter = _mm512_mul_ps(_mm512_loadu_ps(p + i), decay);
        __m512 mi = _mm512_loadu_ps(m + i), vi = _mm512_loadu_ps(v + i);
        mi = _mm512_add_ps(mi, _mm512_mul_ps(_mm512_sub_ps(grad, mi), b1c));
        vi = _mm512_add_ps(_mm512_mul_ps(vi, b2), _mm512_mul_ps(_mm512_mul_ps(b2c, grad), grad));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        __m512 denominator = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), root), eps);
        parameter = _mm512_sub_ps(parameter, _mm512_div_ps(_mm512_mul_ps(stepSize, mi), denominator));
        _mm512_storeu_ps(p + i, parameter);
        if (teacher) {
            __m512 t = _mm512_mul_ps(_mm512_loadu_ps(teacher + i), tm);
            _mm512_storeu_ps(teacher + i, _mm512_add_ps(t, _mm512_mul_ps(tmc, parameter)));
        }
    }
    if (i < count) adamWPortable(p + i, g + i, m + i, v + i, teacher ? teacher + i : NULL, count - i, s);
}

// MARK: - AVX2 (8 lanes)

AVX2 static void adamWAVX2(float *p, float *g, float *m, float *v, float *teacher, long count,
                           const DinoAdamWScalars *s) {
    int clipped = s->gradientScale != 1.0f;
    __m256 scale = _mm256_set1_ps(s->gradientScale), decay = _mm256_set1_ps(s->decay);
    __m256 b1c = _mm256_set1_ps(s->oneMinusBeta1), b2 = _mm256_set1_ps(s->beta2), b2c = _mm256_set1_ps(s->oneMinusBeta2);
    __m256 stepSize = _mm256_set1_ps(s->stepSize), root = _mm256_set1_ps(s->secondMomentCorrectionRoot);
    __m256 eps = _mm256_set1_ps(s->epsilon);
    __m256 tm = _mm256_set1_ps(s->teacherMomentum), tmc = _mm256_set1_ps(s->oneMinusTeacherMomentum);
    long i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 grad = _mm256_mul_ps(_mm256_loadu_ps(g + i), scale);
        if (clipped) _mm256_storeu_ps(g + i, grad);
        __m256 parameter = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 mi = _mm256_loadu_ps(m + i), vi = _mm256_loadu_ps(v + i);
        mi = _mm256_add_ps(mi, _mm256_mul_ps(_mm256_sub_ps(grad, mi), b1c));
        vi = _mm256_add_ps(_mm256_mul_ps(vi, b2), _mm256_mul_ps(_mm256_mul_ps(b2c, grad), grad));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 denominator = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), root), eps);
        parameter = _mm256_sub_ps(parameter, _mm256_div_ps(_mm256_mul_ps(stepSize, mi), denominator));
        _mm256_storeu_ps(p + i, parameter);
        if (teacher) {
            __m256 t = _mm256_mul_ps(_mm256_loadu_ps(teacher + i), tm);
            _mm256_storeu_ps(teacher + i, _mm256_add_ps(t, _mm256_mul_ps(tmc, parameter)));
        }
    }
    if (i < count) adamWPortable(p + i, g + i, m + i, v + i, teacher ? teacher + i : NULL, count - i, s);
}

#endif

// MARK: - Entry point

void dino_adamw_update(float *parameters, float *gradients, float *firstMoment, float *secondMoment, float *teacher,
                       long count, const DinoAdamWScalars *scalars) {
#if DINO_X86
    if (dino_kernels_use_avx512()) { adamWAVX512(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars); return; }
    if (dino_kernels_use_avx2()) { adamWAVX2(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars); return; }
#endif
    adamWPortable(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars);
}
