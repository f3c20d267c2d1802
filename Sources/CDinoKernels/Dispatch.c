// Run-time choice between the AVX2+FMA kernels and the portable ones.
#include "SIMD.h"

static int forcedPortable = 0;
static int detected = -1;
static int avx512Allowed = 1;
static int detected512 = -1;

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

int dino_kernels_use_avx512(void) {
#if DINO_X86
    if (!dino_kernels_use_avx2() || !__atomic_load_n(&avx512Allowed, __ATOMIC_RELAXED)) return 0;
    int value = __atomic_load_n(&detected512, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx512f");  // also checks that the OS saves the 512-bit state
        __atomic_store_n(&detected512, value, __ATOMIC_RELAXED);
    }
    return value;
#else
    return 0;
#endif
}

void dino_kernels_allow_avx512(int allow) { __atomic_store_n(&avx512Allowed, allow, __ATOMIC_RELAXED); }

void dino_kernels_force_portable(int portable) { __atomic_store_n(&forcedPortable, portable, __ATOMIC_RELAXED); }

int dino_cpu_vector_level(void) {
#if DINO_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
#else
    return 0;
#endif
}
