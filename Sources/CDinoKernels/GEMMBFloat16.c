// C = α·op(A)·op(B) + β·C with A and B rounded to bfloat16 and the products summed in float: the
// "bf16 matmul, float accumulate" of mixed-precision training. The AVX-512 BF16 instruction
// vdpbf16ps multiplies 32 bfloat16 pairs into 16 float sums per instruction, twice the multiply-adds
// of a float FMA; on CPUs without it only the portable twin runs (tests), and the Swift side keeps
// float32 GEMMs.
#include "SIMD.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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
/// float), then y = α·s, y = biasⱼ + y (with a bias), and β·C + y. The kernel sums the same products in
/// another order (pairs, passes over k).
void dino_gemm_bf16_bias_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a,
                                   long lda, const float *b, long ldb, float beta, float *c, long ldc,
                                   const float *bias) {
    for (long i = 0; i < m; i++) {
        for (long j = 0; j < n; j++) {
            float sum = 0;
            for (long p = 0; p < k; p++) {
                float x = transA ? a[p * lda + i] : a[i * lda + p];
                float y = transB ? b[j * ldb + p] : b[p * ldb + j];
                sum += dino_round_to_bfloat16(x) * dino_round_to_bfloat16(y);
            }
            float *out = c + i * ldc + j, y = alpha * sum;
            if (bias) y = bias[j] + y;
            *out = beta == 0 ? y : y + beta * *out;
        }
    }
}

void dino_gemm_bf16_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                              const float *b, long ldb, float beta, float *c, long ldc) {
    dino_gemm_bf16_bias_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
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

/// The 16 pair words (bf16(x0ⱼ) in the low half, bf16(x1ⱼ) in the high half) of two rows of 16 floats:
/// one conversion of all 32 (x0 to the low 16 bfloat16, x1 to the high 16) and one permutation that
/// interleaves them (two conversions, two widenings, a shift and an or would give the same bits).
BF16 static inline __m512i pairWordsOf(__m512 x0, __m512 x1) {
    static const uint16_t interleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                            8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(interleave), (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

/// r[0..<16], 16 words each, transposed in place (r[i]'s word t ← r[t]'s word i): words within 128-bit
/// lanes (two unpack stages), then the lanes across vectors (two shuffle stages).
BF16 static inline __attribute__((always_inline)) void transpose16x16(__m512i r[16]) {
    __m512i t[16], u[16];
#pragma clang loop unroll(full)
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], lane l: rows 4g..<4g + 4 at column 4l + c.
#pragma clang loop unroll(full)
    for (int g = 0; g < 4; g++) {
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
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
        // 16 rows of b at a time, converted row by row, then turned into 16 columns of `out` in 16×16
        // register transposes (each word row of `out` gets 64 contiguous bytes per block).
        for (long j0 = 0; j0 < n; j0 += 16) {
            long count = n - j0 < 16 ? n - j0 : 16, q = 0;
            for (long t = 0; t < count; t++) pairWords(row + t * pairs, b + (j0 + t) * ldb, k, q0, pairs);
            if (count == 16) {
                for (; q + 16 <= pairs; q += 16) {
                    __m512i r[16];
#pragma clang loop unroll(full)
                    for (int t = 0; t < 16; t++) r[t] = _mm512_loadu_si512(row + t * pairs + q);
                    transpose16x16(r);
#pragma clang loop unroll(full)
                    for (int t = 0; t < 16; t++) _mm512_storeu_si512(out + (q + t) * width + j0, r[t]);
                }
            }
            for (; q < pairs; q++)
                for (long t = 0; t < count; t++) out[q * width + j0 + t] = row[t * pairs + q];
        }
    } else {
        for (long q = 0; q < pairs; q++) {
            long p = 2 * (q0 + q);
            const float *r0 = b + p * ldb, *r1 = p + 1 < k ? r0 + ldb : NULL;
            uint32_t *words = out + q * width;
            long j = 0;
            for (; j + 16 <= n; j += 16)
                _mm512_storeu_si512(words + j, pairWordsOf(_mm512_loadu_ps(r0 + j), r1 ? _mm512_loadu_ps(r1 + j) : _mm512_setzero_ps()));
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
            __m512 x1 = p + 1 < k ? _mm512_maskz_loadu_ps(valid, a + (p + 1) * lda + i0) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(out + q * ROWS, (__mmask16)0x0fff,
                                     pairWordsOf(_mm512_maskz_loadu_ps(valid, a + p * lda + i0), x1));
        }
    }
}

/// One row of a finished tile's sums (s0: columns 0–15, s1: 16–31) to C's first `columns` columns: (bias +
/// α·s) + β·C on the first pass over k (C not read when β = 0; `bias` the tile's first column's, or NULL),
/// C + α·s on later passes. The bias here saves the pass that would write it into C before the product.
BF16 static inline __attribute__((always_inline)) void storeRow(float *out, __m512 s0, __m512 s1, long columns, float alpha,
                                                                float beta, int first, const float *bias) {
    __mmask16 m0 = columns >= 16 ? 0xffff : (__mmask16)((1u << columns) - 1);
    __mmask16 m1 = columns >= 32 ? 0xffff : columns <= 16 ? 0 : (__mmask16)((1u << (columns - 16)) - 1);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 y0 = _mm512_mul_ps(va, s0), y1 = _mm512_mul_ps(va, s1);
    if (first && bias) {
        y0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, bias), y0);
        y1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, bias + 16), y1);
    }
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

/// The 12×32 tile: acc[r] += Σ_q A(r, q) · B(q, 0..<32) over `pairs` pairs, A's word (q, r) at
/// pa[q·pairStride + r·rowStride], then stored to C as `storeRow` does, for `rows` rows and `columns`
/// columns. Always inlined into the two layouts' kernels below, so that the strides are constants and the
/// 12 broadcasts are fixed offsets from one pointer.
BF16 static inline __attribute__((always_inline)) void
tile(float *c, long ldc, const uint32_t *pa, long pairStride, long rowStride, const uint32_t *pb, long width, long pairs,
     long rows, long columns, float alpha, float beta, int first, const float *bias) {
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
    for (long r = 0; r < rows; r++) storeRow(c + r * ldc, acc[r][0], acc[r][1], columns, alpha, beta, first, bias);
}

/// A packed row by row (untransposed A).
BF16 static void microkernelRows(float *c, long ldc, const uint32_t *pa, const uint32_t *pb, long width, long pairs,
                                 long rows, long columns, float alpha, float beta, int first, const float *bias) {
    tile(c, ldc, pa, 1, PAIRS, pb, width, pairs, rows, columns, alpha, beta, first, bias);
}

/// A packed pair by pair (transposed A).
BF16 static void microkernelPairs(float *c, long ldc, const uint32_t *pa, const uint32_t *pb, long width, long pairs,
                                  long rows, long columns, float alpha, float beta, int first, const float *bias) {
    tile(c, ldc, pa, ROWS, 1, pb, width, pairs, rows, columns, alpha, beta, first, bias);
}

BF16 static void gemmBFloat16AVX512(int transA, int transB, long m, long n, long k, float alpha, const float *a,
                                    long lda, const float *b, long ldb, float beta, float *c, long ldc,
                                    const float *bias) {
    long totalPairs = (k + 1) / 2;
    long width = (n + COLUMNS - 1) / COLUMNS * COLUMNS;
    long chunk = totalPairs < PAIRS ? totalPairs : PAIRS;
    uint32_t *memory = panels(chunk * width + ROWS * PAIRS + 16 * chunk);
    if (!memory) {
        dino_gemm_bf16_bias_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
        return;
    }
    uint32_t *pb = memory, *pa = memory + chunk * width, *row = pa + ROWS * PAIRS;
    for (long q0 = 0; q0 < totalPairs; q0 += PAIRS) {
        long pairs = totalPairs - q0 < PAIRS ? totalPairs - q0 : PAIRS;
        packB(pb, row, transB, b, ldb, n, k, q0, pairs, width);
        for (long i0 = 0; i0 < m; i0 += ROWS) {
            packA(pa, transA, a, lda, m, k, i0, q0, pairs);
            long rows = m - i0 < ROWS ? m - i0 : ROWS;
            for (long j0 = 0; j0 < n; j0 += COLUMNS) {
                const float *columnBias = bias ? bias + j0 : NULL;
                if (transA)
                    microkernelPairs(c + i0 * ldc + j0, ldc, pa, pb + j0, width, pairs, rows, n - j0, alpha, beta, q0 == 0,
                                     columnBias);
                else
                    microkernelRows(c + i0 * ldc + j0, ldc, pa, pb + j0, width, pairs, rows, n - j0, alpha, beta, q0 == 0,
                                    columnBias);
            }
        }
    }
}

// MARK: - AMX tiles

// Intel's AMX (Xeon of the 4th generation on) multiplies a 16×32 bfloat16 tile by a 32×16 one into a
// 16×16 float tile in one instruction, with the same float sums of exact pair products as vdpbf16ps: up
// to 8x the multiply-adds per cycle of two vdpbf16ps ports. Its B tile is the packed B above as it is
// (16 pair rows of 16 columns), its A tile 16 rows of 16 pair words, so A is packed row by row for both
// transposes. Four C tiles make a 32×32 block (tiles 0–3), with A in tiles 4–5 and B in 6–7.
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

enum { BLOCK = 32, TILE_PAIRS = 16 };

/// LDTILECFG's 64-byte operand: palette 1, then bytes per row and rows of each of the 16 tile registers.
struct TileConfig { uint8_t palette, startRow, reserved[14]; uint16_t bytesPerRow[16]; uint8_t rows[16]; };

AMX static void loadTileConfig(void) {
    struct TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) { config.rows[t] = 16; config.bytesPerRow[t] = 64; }
    _tile_loadconfig(&config);
}

/// Rows [i0, i0 + count) of op(A) (count ≤ 32) for pairs [q0, q0 + pairs), word (r, q) at out[r·PAIRS + q],
/// pairs up to `padded` (a multiple of 16) and rows up to a multiple of 16 zeros.
AMX static void packARows(uint32_t *out, int transA, const float *a, long lda, long m, long k, long i0, long q0,
                          long pairs, long padded) {
    long count = m - i0 < BLOCK ? m - i0 : BLOCK, filled = count > 16 ? BLOCK : 16;
    if (!transA) {
        for (long r = 0; r < filled; r++) {
            if (r < count) pairWords(out + r * PAIRS, a + (i0 + r) * lda, k, q0, pairs);
            else memset(out + r * PAIRS, 0, (size_t)pairs * sizeof *out);
            memset(out + r * PAIRS + pairs, 0, (size_t)(padded - pairs) * sizeof *out);
        }
        return;
    }
    // Transposed: one pair of A's rows gives 16 words, one per output row, scattered PAIRS apart.
    const __m512i rowOffsets = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                  _mm512_set1_epi32(PAIRS));
    for (long half = 0; half < filled; half += 16) {
        long rows = count - half < 16 ? (count - half > 0 ? count - half : 0) : 16;
        __mmask16 valid = (__mmask16)((1u << rows) - 1);
        uint32_t *base = out + half * PAIRS;
        for (long q = 0; q < padded; q++) {
            __m512i words = _mm512_setzero_si512();
            if (q < pairs) {
                long p = 2 * (q0 + q);
                const float *r0 = a + p * lda + i0 + half;
                __m512 x1 = p + 1 < k ? _mm512_maskz_loadu_ps(valid, r0 + lda) : _mm512_setzero_ps();
                words = pairWordsOf(_mm512_maskz_loadu_ps(valid, r0), x1);
            }
            _mm512_i32scatter_epi32(base + q, rowOffsets, words, 4);
        }
    }
}

/// One 32×32 block of C (16 rows when `rows` ≤ 16): the tiles summed over `padded` pairs, A's words at
/// pa[r·PAIRS + q], B's at pb[q·width + j]; then through `scratch` (32×32 floats) to C as `storeRow` does,
/// for `rows` rows and `columns` columns.
AMX static void blockAMX(float *c, long ldc, const uint32_t *pa, const uint32_t *pb, long width, long padded, long rows,
                         long columns, float alpha, float beta, int first, const float *bias, float *scratch) {
    _tile_zero(0);
    _tile_zero(1);
    if (rows > 16) {
        _tile_zero(2);
        _tile_zero(3);
        for (long q = 0; q < padded; q += TILE_PAIRS) {
            _tile_loadd(4, pa + q, PAIRS * 4);
            _tile_loadd(5, pa + 16 * PAIRS + q, PAIRS * 4);
            _tile_loadd(6, pb + q * width, width * 4);
            _tile_loadd(7, pb + q * width + 16, width * 4);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(2, scratch + 16 * BLOCK, BLOCK * 4);
        _tile_stored(3, scratch + 16 * BLOCK + 16, BLOCK * 4);
    } else {
        for (long q = 0; q < padded; q += TILE_PAIRS) {
            _tile_loadd(4, pa + q, PAIRS * 4);
            _tile_loadd(6, pb + q * width, width * 4);
            _tile_loadd(7, pb + q * width + 16, width * 4);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
        }
    }
    _tile_stored(0, scratch, BLOCK * 4);
    _tile_stored(1, scratch + 16, BLOCK * 4);
    for (long r = 0; r < rows; r++)
        storeRow(c + r * ldc, _mm512_loadu_ps(scratch + r * BLOCK), _mm512_loadu_ps(scratch + r * BLOCK + 16), columns,
                 alpha, beta, first, bias);
}

/// The AVX-512 kernel's passes of 384 over k with AMX blocks: returns 0 (nothing written) when the
/// scratch cannot be had.
AMX static int gemmBFloat16AMX(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                               const float *b, long ldb, float beta, float *c, long ldc, const float *bias) {
    long totalPairs = (k + 1) / 2;
    long width = (n + BLOCK - 1) / BLOCK * BLOCK;
    long chunk = totalPairs < PAIRS ? totalPairs : PAIRS;
    long chunkPadded = (chunk + TILE_PAIRS - 1) / TILE_PAIRS * TILE_PAIRS;
    uint32_t *memory = panels(chunkPadded * width + BLOCK * PAIRS + 16 * chunk + BLOCK * BLOCK);
    if (!memory) return 0;
    uint32_t *pb = memory, *pa = pb + chunkPadded * width, *row = pa + BLOCK * PAIRS;
    float *scratch = (float *)(row + 16 * chunk);
    loadTileConfig();
    for (long q0 = 0; q0 < totalPairs; q0 += PAIRS) {
        long pairs = totalPairs - q0 < PAIRS ? totalPairs - q0 : PAIRS;
        long padded = (pairs + TILE_PAIRS - 1) / TILE_PAIRS * TILE_PAIRS;
        packB(pb, row, transB, b, ldb, n, k, q0, pairs, width);
        memset(pb + pairs * width, 0, (size_t)((padded - pairs) * width) * sizeof *pb);
        for (long i0 = 0; i0 < m; i0 += BLOCK) {
            long rows = m - i0 < BLOCK ? m - i0 : BLOCK;
            packARows(pa, transA, a, lda, m, k, i0, q0, pairs, padded);
            for (long j0 = 0; j0 < n; j0 += BLOCK)
                blockAMX(c + i0 * ldc + j0, ldc, pa, pb + j0, width, padded, rows, n - j0 < BLOCK ? n - j0 : BLOCK,
                         alpha, beta, q0 == 0, bias ? bias + j0 : NULL, scratch);
        }
    }
    _tile_release();
    return 1;
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

static int detectedAMX = -1, amxEnabled = 1;

int dino_gemm_bf16_amx_available(void) {
#if DINO_X86
    int value = __atomic_load_n(&detectedAMX, __ATOMIC_RELAXED);
    if (value < 0) {
        __builtin_cpu_init();
        // Linux hands out the 8 KB of tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM for
        // XFEATURE_XTILEDATA), once per process; a CPU or kernel without it answers non-zero.
        value = dino_gemm_bf16_available() && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
#if defined(__linux__)
        value = value && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
        value = 0;
#endif
        __atomic_store_n(&detectedAMX, value, __ATOMIC_RELAXED);
    }
    return value;
#else
    return 0;
#endif
}

void dino_gemm_bf16_use_amx(int enabled) { __atomic_store_n(&amxEnabled, enabled != 0, __ATOMIC_RELAXED); }

int dino_gemm_bf16_amx_in_use(void) {
    return __atomic_load_n(&amxEnabled, __ATOMIC_RELAXED) && dino_gemm_bf16_amx_available();
}

void dino_gemm_bf16_bias(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                         const float *b, long ldb, float beta, float *c, long ldc, const float *bias) {
    if (m <= 0 || n <= 0) return;
#if DINO_X86
    if (k > 0 && dino_gemm_bf16_amx_in_use() &&
        gemmBFloat16AMX(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias))
        return;
    if (dino_gemm_bf16_available() && k > 0) {
        gemmBFloat16AVX512(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
        return;
    }
#endif
    dino_gemm_bf16_bias_reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
}

void dino_gemm_bf16(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                    const float *b, long ldb, float beta, float *c, long ldc) {
    dino_gemm_bf16_bias(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}
