// Run-time choice between the AVX2+FMA kernels and the portable ones.
#include "SIMD.h"

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
