// Small C kernels for the inner loops that BLAS does not cover, one file per kernel: fused attention
// per (image, head) block (Attention.c), the exact-erf GELU (GELU.c), LayerNorm (LayerNorm.c), the
// bias / LayerNorm parameter column sums (ColumnSums.c), the loss's softmax rows (Softmax.c), a
// bfloat16 GEMM with float sums (GEMMBFloat16.c: AVX-512 BF16 or its portable twin), and the AdamW update
// with the teacher's EMA (AdamW.c).
// Each function has an AVX2+FMA version, chosen at run time when the CPU has it (Dispatch.c), some with
// AVX-512 parts that give the same bits, and a portable scalar version. Each computes every
// output element by a fixed sequence of operations, so results do not depend on how callers split
// work over threads.
#ifndef CDINO_KERNELS_H
#define CDINO_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the AVX2+FMA kernels are in use, 0 for the portable ones.
int dino_kernels_use_avx2(void);
/// Forces the portable kernels (1) or restores automatic selection (0); for tests and benchmarks.
void dino_kernels_force_portable(int portable);
/// 1 when the AVX2 kernels also run their AVX-512 parts: 16 lanes for the per-element operations
/// and a 32-column tile for attention's small products, each lane or element computed by the same
/// operations as in AVX2, so the results are the same bits.
int dino_kernels_use_avx512(void);
/// Allows the AVX-512 parts (1, the default, where the CPU has AVX-512 F) or keeps to AVX2 (0);
/// for tests and benchmarks.
void dino_kernels_allow_avx512(int allow);
/// What the CPU (and OS) run, whatever the kernels above are allowed: 2 for the AVX-512 of Skylake-SP
/// on (F, BW, DQ, VL), 1 for AVX2 + FMA, 0 otherwise. For choosing OpenBLAS's kernel set.
int dino_cpu_vector_level(void);

/// out[i] = x·Φ(x) with x = in[i], Φ the standard normal CDF (exact erf form). count values.
void dino_gelu_forward(float *out, const float *in, long count);

/// d[i] = g[i]·(Φ(x) + x·φ(x)) with x = in[i], written to dIn when accumulate is 0 or added to it
/// when 1. dIn may alias dOut (the in-place form used by the MLP backward).
void dino_gelu_backward(float *dIn, const float *dOut, const float *in, long count, int accumulate);

/// Floats of scratch one attention block needs (forward or backward) for n tokens of head size d.
long dino_attention_scratch_count(long n, long d);

/// One (image, head) block of attention forward: P = softmax(scale·Q·Kᵀ), O = P·V, for the first
/// `queries` ≤ n query rows against all n keys (queries = 1: the class token alone).
/// q, k, v: n rows of d floats, row i at q + i·rowStride; out: `queries` rows at out + i·outStride;
/// probabilities: rows 0..<queries of an n×n dense block.
void dino_attention_forward_block(float *out, long outStride, float *probabilities,
                                  const float *q, const float *k, const float *v, long rowStride,
                                  long queries, long n, long d, float scale, float *scratch);

/// One (image, head) block of attention backward, accumulating into dq, dk, dv (rows at
/// rowStride): dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale, dV += Pᵀ·dO, dQ += dS·K,
/// dK += dSᵀ·Q, for the first `queries` query rows (dOut has `queries` rows; dk and dv get all n).
void dino_attention_backward_block(float *dq, float *dk, float *dv, const float *dOut, long dOutStride,
                                   const float *q, const float *k, const float *v, long rowStride,
                                   const float *probabilities, long queries, long n, long d, float scale,
                                   float *scratch);

/// LayerNorm forward for rows [0, rows): y = (x − μ)·rstd·w + b, rstd = 1/√(σ² + eps), σ² from
/// centred values; saves μ and rstd per row. Rows of `columns` floats, dense.
void dino_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *weight,
                            const float *bias, long rows, long columns, float epsilon);

/// LayerNorm input gradient for rows [0, rows), accumulated: with x̂ = (x − μ)·rstd and g = dy·w,
/// dx += rstd·(g − mean(g) − x̂·mean(g·x̂)).
void dino_layernorm_backward_input(float *dIn, const float *dOut, const float *in, const float *weight,
                                   const float *mean, const float *rstd, long rows, long columns);

/// Column sums over all rows for columns [first, last): dWeight[j] += Σᵣ dy·x̂ and dBias[j] += Σᵣ dy
/// (x̂ from in, mean, rstd; either output may be NULL). With in == NULL: dBias[j] += Σᵣ dy only
/// (a linear layer's bias gradient). Each column sums its rows in order.
void dino_column_sums(float *dWeight, float *dBias, const float *dOut, const float *in, const float *mean,
                      const float *rstd, long rows, long columns, long first, long last);

/// Row softmax of y = (in − shift)·inverseTemperature over rows of k floats (shift: k values or NULL),
/// or with `logarithm` its logarithm y − log Σ exp y; logNormalizers (NULL or one per row) gets
/// log Σ exp y, from which the entropy of a softmax row is log Σ exp y − Σ p·y.
void dino_softmax_rows(float *out, float *logNormalizers, const float *in, const float *shift,
                       float inverseTemperature, long rows, long k, int logarithm);

/// One student row of the DINO loss: c0 = −Σ q0·lp and c1 = −Σ q1·lp (float products summed in
/// double), and d = scale·(n·exp(lp) − Σ the teacher rows compared with this view): q1 for view 0,
/// q0 for view 1, both (n = 2) for any other view (`view` 2). k floats each.
void dino_cross_entropy_row(float *d, double *c0, double *c1, const float *lp, const float *q0, const float *q1,
                            long k, int view, float scale);

/// C = α·op(A)·op(B) + β·C (row-major; op = transpose when transA / transB is 1) with every element of A
/// and B rounded to bfloat16 (round to nearest even) and the products summed in float: AMX tiles or
/// AVX-512 BF16's vdpbf16ps where the CPU has them, dino_gemm_bf16_reference otherwise. β = 0 never reads C.
void dino_gemm_bf16(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                    const float *b, long ldb, float beta, float *c, long ldc);
/// dino_gemm_bf16 with a bias (n floats, or NULL) added to each row of the product in the kernel's store:
/// Cᵢⱼ = (biasⱼ + α·Σₚ…) + β·Cᵢⱼ, with no pass that writes the bias into C first.
void dino_gemm_bf16_bias(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                         const float *b, long ldb, float beta, float *c, long ldc, const float *bias);
/// The plain twin of dino_gemm_bf16: per element, Σₚ bf16(aᵢₚ)·bf16(bₚⱼ) in float, p in order.
void dino_gemm_bf16_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a, long lda,
                              const float *b, long ldb, float beta, float *c, long ldc);
/// The plain twin of dino_gemm_bf16_bias: the sum as dino_gemm_bf16_reference's, then (biasⱼ + α·s) + β·Cᵢⱼ.
void dino_gemm_bf16_bias_reference(int transA, int transB, long m, long n, long k, float alpha, const float *a,
                                   long lda, const float *b, long ldb, float beta, float *c, long ldc,
                                   const float *bias);
/// 1 when the CPU (and OS) run AVX-512 BF16, so that dino_gemm_bf16 takes the fast path.
int dino_gemm_bf16_available(void);
/// 1 when the CPU has AMX-BF16 and the OS granted the tile state: dino_gemm_bf16 then runs on AMX tiles
/// (up to 8x vdpbf16ps's multiply-adds per cycle, the same float sums of exact pair products).
int dino_gemm_bf16_amx_available(void);
/// Lets dino_gemm_bf16 use AMX where available (1, the default) or keeps it on AVX-512 BF16 (0); set it
/// between products. For comparisons: both kernels meet the same bound against the twin.
void dino_gemm_bf16_use_amx(int enabled);
/// 1 when dino_gemm_bf16 runs on AMX tiles now.
int dino_gemm_bf16_amx_in_use(void);
/// x rounded to the nearest bfloat16 (ties to even), as a float.
float dino_round_to_bfloat16(float x);

/// The per-tensor numbers of one AdamW step (`dino_adamw_update`), each already in float: the clipping
/// factor (1: not clipped), the decoupled decay factor 1 − lr·wd (1: not decayed), 1 − β₁, β₂, 1 − β₂,
/// lr/(1 − β₁ᵗ), √(1 − β₂ᵗ), eps, and the teacher's momentum m and 1 − m.
typedef struct {
    float gradientScale, decay, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, secondMomentCorrectionRoot, epsilon,
        teacherMomentum, oneMinusTeacherMomentum;
} DinoAdamWScalars;

/// One AdamW step over `count` elements of a tensor, per element in this order (float, no fused
/// multiply-add): g ← g·scale (stored back only when scale ≠ 1), m ← m + (g − m)·(1 − β₁),
/// v ← v·β₂ + (1 − β₂)·g·g, p ← p·decay − stepSize·m/(√v/√(1 − β₂ᵗ) + eps), and with a teacher (or NULL)
/// t ← t·m_t + (1 − m_t)·p. Every path gives the same bits.
void dino_adamw_update(float *parameters, float *gradients, float *firstMoment, float *secondMoment, float *teacher,
                       long count, const DinoAdamWScalars *scalars);

/// 1 while the calling thread runs a shard of `Parallel.forEachShard` (its kernels then run inline).
int dino_thread_inside_shard(void);
void dino_thread_set_inside_shard(int value);

#ifdef __cplusplus
}
#endif

#endif
