// One AdamW update over a range of one tensor, with the teacher's EMA in the same pass.
#include "SIMD.h"

// Every vector lane takes the plain loop's operations in its order, with no fused multiply-add, so each
// element gets the same bits on every path: runs do not depend on the CPU's vector width.
#pragma STDC FP_CONTRACT OFF

/// The plain loop, with `clipped` (store the scaled gradient back) and `withTeacher` constant in each
/// specialization below, so that the compiler sees a loop without branches. √ as the elementwise builtin:
/// sqrtf's errno would keep the loop scalar, and v ≥ 0 never sets it.
static inline __attribute__((always_inline)) void adamWLoop(float *restrict p, float *restrict g, float *restrict m,
                                                          float *restrict v, float *restrict teacher, long count,
                                                          const DinoAdamWScalars *s, const int clipped,
                                                          const int withTeacher) {
    const float scale = s->gradientScale, decay = s->decay, b1c = s->oneMinusBeta1, b2 = s->beta2, b2c = s->oneMinusBeta2;
    const float stepSize = s->stepSize, root = s->secondMomentCorrectionRoot, eps = s->epsilon;
    const float tm = s->teacherMomentum, tmc = s->oneMinusTeacherMomentum;
    for (long i = 0; i < count; i++) {
        float grad = g[i] * scale;
        if (clipped) g[i] = grad;
        float mi = m[i] + (grad - m[i]) * b1c;
        float vi = v[i] * b2 + b2c * grad * grad;
        m[i] = mi;
        v[i] = vi;
        float parameter = p[i] * decay - stepSize * mi / (__builtin_elementwise_sqrt(vi) / root + eps);
        p[i] = parameter;
        if (withTeacher) teacher[i] = teacher[i] * tm + tmc * parameter;
    }
}

/// adamWLoop specialized on its two conditions (an unclipped gradient is left as it is: no store).
static inline __attribute__((always_inline)) void adamWLoops(float *p, float *g, float *m, float *v, float *teacher,
                                                           long count, const DinoAdamWScalars *s) {
    int clipped = s->gradientScale != 1.0f;
    if (clipped && teacher) adamWLoop(p, g, m, v, teacher, count, s, 1, 1);
    else if (clipped) adamWLoop(p, g, m, v, teacher, count, s, 1, 0);
    else if (teacher) adamWLoop(p, g, m, v, teacher, count, s, 0, 1);
    else adamWLoop(p, g, m, v, teacher, count, s, 0, 0);
}

static void adamWPortable(float *p, float *g, float *m, float *v, float *teacher, long count, const DinoAdamWScalars *s) {
    adamWLoops(p, g, m, v, teacher, count, s);
}

#if DINO_X86
AVX2 static void adamWAVX2(float *p, float *g, float *m, float *v, float *teacher, long count, const DinoAdamWScalars *s) {
    adamWLoops(p, g, m, v, teacher, count, s);
}

AVX512 static void adamWAVX512(float *p, float *g, float *m, float *v, float *teacher, long count, const DinoAdamWScalars *s) {
    adamWLoops(p, g, m, v, teacher, count, s);
}
#endif

void dino_adamw_update(float *parameters, float *gradients, float *firstMoment, float *secondMoment, float *teacher,
                       long count, const DinoAdamWScalars *scalars) {
#if DINO_X86
    if (dino_kernels_use_avx512()) { adamWAVX512(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars); return; }
    if (dino_kernels_use_avx2()) { adamWAVX2(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars); return; }
#endif
    adamWPortable(parameters, gradients, firstMoment, secondMoment, teacher, count, scalars);
}
