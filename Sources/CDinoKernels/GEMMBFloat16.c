// C = α·op(A)·op(B) + β·C with A and B rounded to bfloat16 and the products summed in float: the
// "bf16 matmul, float accumulate" of mixed-precision training. The AVX-512 BF16 instruction
// vdpbf16ps multiplies 32 bfloat16 pairs into 16 float sums per instruction, twice the multiply-adds
// of a float FMA; on CPUs without it only the portable twin runs (tests), and the Swift side keeps
// float32 GEMMs.
#include "SIMD.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/// float → bfloat16 bits as vcvtneps2bf16 does: round to nearest even, NaN kept quiet, subnormals
/// flushed to a zero of their sign.
static inline uint16_t bfloat16Bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float bfloat16Value(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

float dino_round_to_bfloat16(float x) { return bfloat16Value(bfloat16Bits(x)); }

// MARK: - Portable twin

/// Each element: s += bf16(aᵢₚ)·bf16(bₚⱼ) for p in order (a product of two bfloat16 values is exact in
/// float), then α·s + β·C. The kernel sums the same products in another order (pairs, passes over k).
void dino_gemm_bf16_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                              const float *b, long ldb, float beta, float *c, long ldc) {
    for (long i = 0; i < m; i++) {
        for (long j = 0; j < n; j++) {
            float sum = 0;
            for (long p = 0; p < k; p++) {
                float x = transA ? a[p * lda + i] : a[i * lda + p];
                float y = transB ? b[j * ldb + p] : b[p * ldb + j];
                sum += dino_round_to_bfloat16(x) * dino_round_to_bfloat16(y);
            }
            float *out = c + i * ldc + j;
            *out = beta == 0 ? alpha * sum : alpha * sum + beta * *out;
        }
    }
}

#if DINO_X86

#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

// Packed panels hold 32-bit words, each the bfloat16 pair (k = 2q in the low half, 2q + 1 in the
// high half) that one lane of vdpbf16ps takes; an odd k is padded with a zero.
enum { ROWS = 12, COLUMNS = 32, PAIRS = 192 };  // the microkernel's 12×32 tile; 384 of k per pass

/// Per-thread scratch for the packed panels, grown as needed and kept (no allocation per call once
/// warm), freed when the thread exits (the worker pool retires threads when the count changes).
struct Panels { uint32_t *memory; long capacity; };
static pthread_key_t panelKey;
static pthread_once_t panelKeyOnce = PTHREAD_ONCE_INIT;

static void freePanels(void *value) {
    struct Panels *panels = value;
    free(panels->memory);
    free(panels);
}

static void makePanelKey(void) { pthread_key_create(&panelKey, freePanels); }

static uint32_t *panels(long words) {
    pthread_once(&panelKeyOnce, makePanelKey);
    struct Panels *panels = pthread_getspecific(panelKey);
    if (!panels) {
        if (!(panels = calloc(1, sizeof *panels))) return NULL;
        pthread_setspecific(panelKey, panels);
    }
    if (words > panels->capacity) {
        free(panels->memory);
        panels->memory = aligned_alloc(64, (size_t)((words + 15) / 16 * 64));
        panels->capacity = panels->memory ? words : 0;
    }
    return panels->memory;
}

/// 16 floats → 16 bfloat16 in the low halves of 16 words.
BF16 static inline __m512i lowHalves(__m512 x) {
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
}

/// The pair words of `pairs` pairs from q0 of one row of floats (k values in all), odd k padded with a zero.
BF16 static inline void pairWords(uint32_t *out, const float *row, long k, long q0, long pairs) {
    long q = 0;
    for (; q + 16 <= pairs && 2 * (q0 + q + 16) <= k; q += 16) {
        // 32 floats → 32 bfloat16 in order = 16 pair words.
        const float *x = row + 2 * (q0 + q);
        _mm512_storeu_si512(out + q, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x)));
    }
    for (; q < pairs; q++) {
        long p = 2 * (q0 + q);
        out[q] = bfloat16Bits(row[p]) | (p + 1 < k ? (uint32_t)bfloat16Bits(row[p + 1]) << 16 : 0);
    }
}

/// Pairs [q0, q0 + pairs) of op(B) (k×n: b[p·ldb + j], or b[j·ldb + p] when transposed) for columns
/// [0, n): word (q, j) at out[q·width + j], columns past n zeros. `row`: scratch for 16·pairs words.
BF16 static void packB(uint32_t *out, uint32_t *row, int transB, const float *b, long ldb, long n, long k, long q0,
                       long pairs, long width) {
    if (transB) {
        // 16 rows of b at a time, so that each word row of `out` gets 64 contiguous bytes per pass.
        for (long j0 = 0; j0 < n; j0 += 16) {
            long count = n - j0 < 16 ? n - j0 : 16;
            for (long t = 0; t < count; t++) pairWords(row + t * pairs, b + (j0 + t) * ldb, k, q0, pairs);
            for (long q = 0; q < pairs; q++)
                for (long t = 0; t < count; t++) out[q * width + j0 + t] = row[t * pairs + q];
        }
    } else {
        for (long q = 0; q < pairs; q++) {
            long p = 2 * (q0 + q);
            const float *r0 = b + p * ldb, *r1 = p + 1 < k ? r0 + ldb : NULL;
            uint32_t *words = out + q * width;
            long j = 0;
            for (; j + 16 <= n; j += 16) {
                __m512i lo = lowHalves(_mm512_loadu_ps(r0 + j));
                __m512i hi = r1 ? _mm512_slli_epi32(lowHalves(_mm512_loadu_ps(r1 + j)), 16) : _mm512_setzero_si512();
                _mm512_storeu_si512(words + j, _mm512_or_si512(lo, hi));
            }
            for (; j < n; j++) words[j] = bfloat16Bits(r0[j]) | (r1 ? (uint32_t)bfloat16Bits(r1[j]) << 16 : 0);
        }
    }
    for (long q = 0; q < pairs; q++)
        for (long j = n; j < width; j++) out[q * width + j] = 0;
}

/// Row block [i0, i0 + ROWS) of op(A) (m×k: a[i·lda + p], or a[p·lda + i] when transposed) for pairs
/// [q0, q0 + pairs), rows past m zeros. Untransposed A is packed row by row, word (q, r) at out[r·PAIRS + q]
/// (each row converted 32 floats at a time, no scatter); transposed A pair by pair, word (q, r) at
/// out[q·ROWS + r] (12 rows of one pair are 12 contiguous floats of A). The microkernel takes either.
BF16 static void packA(uint32_t *out, int transA, const float *a, long lda, long m, long k, long i0, long q0, long pairs) {
    if (!transA) {
        for (long r = 0; r < ROWS; r++) {
            long i = i0 + r;
            if (i < m) pairWords(out + r * PAIRS, a + i * lda, k, q0, pairs);
            else memset(out + r * PAIRS, 0, (size_t)pairs * sizeof *out);
        }
    } else {
        long rows = m - i0 < ROWS ? m - i0 : ROWS;
        __mmask16 valid = (__mmask16)((1u << rows) - 1);
        for (long q = 0; q < pairs; q++) {
            long p = 2 * (q0 + q);
            __m512i lo = lowHalves(_mm512_maskz_loadu_ps(valid, a + p * lda + i0));
            __m512i hi = p + 1 < k ? _mm512_slli_epi32(lowHalves(_mm512_maskz_loadu_ps(valid, a + (p + 1) * lda + i0)), 16)
                                   : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32(out + q * ROWS, (__mmask16)0x0fff, _mm512_or_si512(lo, hi));
        }
    }
}

/// The 12×32 tile: acc[r] += Σ_q A(r, q) · B(q, 0..<32) over `pairs` pairs, A's word (q, r) at
/// pa[q·pairStride + r·rowStride], then stored to C as α·acc + β·C (first pass over k) or C + α·acc (later
/// passes), for `rows` rows and `columns` columns. Always inlined into the two layouts' kernels below, so
/// that the strides are constants and the 12 broadcasts are fixed offsets from one pointer.
BF16 static inline __attribute__((always_inline)) void
tile(float *c, long ldc, const uint32_t *pa, long pairStride, long rowStride, const uint32_t *pb, long width, long pairs,
     long rows, long columns, float alpha, float beta, int first) {
    __m512 acc[ROWS][2];
#pragma clang loop unroll(full)
    for (int r = 0; r < ROWS; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
    for (long q = 0; q < pairs; q++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(pb + q * width);
        __m512bh b1 = (__m512bh)_mm512_load_si512(pb + q * width + 16);
#pragma clang loop unroll(full)
        for (int r = 0; r < ROWS; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)pa[q * pairStride + r * rowStride]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    __mmask16 m0 = columns >= 16 ? 0xffff : (__mmask16)((1u << columns) - 1);
    __mmask16 m1 = columns >= 32 ? 0xffff : columns <= 16 ? 0 : (__mmask16)((1u << (columns - 16)) - 1);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (long r = 0; r < rows; r++) {
        float *out = c + r * ldc;
        __m512 y0 = _mm512_mul_ps(va, acc[r][0]), y1 = _mm512_mul_ps(va, acc[r][1]);
        if (!first) {
            y0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, out), y0);
            y1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, out + 16), y1);
        } else if (beta != 0) {
            y0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, out), y0);
            y1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, out + 16), y1);
        }
        _mm512_mask_storeu_ps(out, m0, y0);
        _mm512_mask_storeu_ps(out + 16, m1, y1);
    }
}

/// A packed row by row (untransposed A).
BF16 static void microkernelRows(float *c, long ldc, const uint32_t *pa, const uint32_t *pb, long width, long pairs,
                                 long rows, long columns, float alpha, float beta, int first) {
    tile(c, ldc, pa, 1, PAIRS, pb, width, pairs, rows, columns, alpha, beta, first);
}

/// A packed pair by pair (transposed A).
BF16 static void microkernelPairs(float *c, long ldc, const uint32_t *pa, const uint32_t *pb, long width, long pairs,
                                  long rows, long columns, float alpha, float beta, int first) {
    tile(c, ldc, pa, ROWS, 1, pb, width, pairs, rows, columns, alpha, beta, first);
}

BF16 static void gemmBFloat16AVX512(int transA, int transB, long m, long n, long k, float alpha, const float *a,
                                    long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    long totalPairs = (k + 1) / 2;
    long width = (n + COLUMNS - 1) / COLUMNS * COLUMNS;
    long chunk = totalPairs < PAIRS ? totalPairs : PAIRS;
    uint32_t *memory = panels(chunk * width + ROWS * PAIRS + 16 * chunk);
    if (!memory) { dino_gemm_bf16_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); return; }
    uint32_t *pb = memory, *pa = memory + chunk * width, *row = pa + ROWS * PAIRS;
    for (long q0 = 0; q0 < totalPairs; q0 += PAIRS) {
        long pairs = totalPairs - q0 < PAIRS ? totalPairs - q0 : PAIRS;
        packB(pb, row, transB, b, ldb, n, k, q0, pairs, width);
        for (long i0 = 0; i0 < m; i0 += ROWS) {
            packA(pa, transA, a, lda, m, k, i0, q0, pairs);
            long rows = m - i0 < ROWS ? m - i0 : ROWS;
            for (long j0 = 0; j0 < n; j0 += COLUMNS) {
                if (transA) microkernelPairs(c + i0 * ldc + j0, ldc, pa, pb + j0, width, pairs, rows, n - j0, alpha, beta, q0 == 0);
                else microkernelRows(c + i0 * ldc + j0, ldc, pa, pb + j0, width, pairs, rows, n - j0, alpha, beta, q0 == 0);
            }
        }
    }
}

#endif

static int detectedBFloat16 = -1;

int dino_gemm_bf16_available(void) {
#if DINO_X86
    int value = __atomic_load_n(&detectedBFloat16, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512bf16");
        __atomic_store_n(&detectedBFloat16, value, __ATOMIC_RELAXED);
    }
    return value;
#else
    return 0;
#endif
}

void dino_gemm_bf16(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                    const float *b, long ldb, float beta, float *c, long ldc) {
    if (m <= 0 || n <= 0) return;
#if DINO_X86
    if (dino_gemm_bf16_available() && k > 0) {
        gemmBFloat16AVX512(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    dino_gemm_bf16_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
