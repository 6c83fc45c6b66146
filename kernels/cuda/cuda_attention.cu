/*
 * cuda_attention.cu: causal GQA attention over the paged bf16 KV cache.
 *
 * Kernels behind one op:
 *  - prefill: skv_attn_prefill_mma_kernel (cuda_attn_mma.cu: mma.sync, cp.async-pipelined K/V
 *    tiles, S/P/O in registers) for head_dim 64/128; the older WMMA kernel below
 *    (skv_attn_prefill2_kernel: 128 query rows x 64-key tiles per block, S in WMMA fragments,
 *    P through shared memory) stays for A/B timing (SKV_ATTN_PREFILL=2) and for q/out views
 *    the mma kernel cannot take (unaligned for 16-byte loads).
 *  - decode (skv_attn_decode_kernel): one block of 4 warps per (query row, kv head, context
 *    split) for head_dim 64/128 and up to 8 query heads per kv head; each warp streams its
 *    own keys with no barrier in the loop, then lane groups, warps and splits are merged.
 *    Used for decode, the SwiftKV logit rows and short chunks; SKV_ATTN_DECODE=0 selects the
 *    rows kernel instead (A/B).
 *  - rows (skv_attn_rows_kernel): one block per (query row, kv head, context split), all query
 *    heads of the kv head together so K/V are read once. Used for decode, the SwiftKV logit
 *    rows, short chunks and any head_dim (even, <= 256). Long contexts are split across
 *    blocks; partial (max, sum, unnormalized output) go to the backend's preallocated
 *    workspace and a combine kernel merges them. The split count is cut to fit the workspace.
 * Precision: scores and softmax in fp32; the prefill kernel rounds P to bf16 for the tensor
 * cores (normalizing by the sum of the rounded P), as flash attention does.
 */
#include <math.h>
#include <mma.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_attn.h"
#include "kernels/cuda/cuda_kv.h"

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

#define SKV_ATTN_THREADS         128
#define SKV_ATTN_ROWS_TILE       128 /* keys per tile in the rows kernel */
#define SKV_ATTN_ROWS_MAX_HEADS  8   /* query heads per block in the rows kernel */
#define SKV_ATTN_MIN_SPLIT       64  /* fewest keys worth a split of their own */
#define SKV_ATTN_BQ              128 /* query rows per prefill block (16 per warp) */
#define SKV_ATTN_PREFILL_THREADS (SKV_ATTN_BQ / 16 * 32)
#define SKV_ATTN_BK              64 /* keys per prefill tile */

static __device__ int32_t skv_attn_seq_of_row(const skv_attn_args_t &a, int32_t r)
{
    int32_t lo = 0, hi = a.n_seqs - 1; /* last s with seq_rows[s] <= r */
    while (lo < hi) {
        int32_t mid = (lo + hi + 1) / 2;
        if (a.seq_rows[mid] <= r) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

/* ---- rows kernel (decode) ------------------------------------------------------------- */

/* VEC: head_dim elements per thread and key in the P V phase (8 when head_dim % 8 == 0).
 * HDC: head_dim known at compile time (64, 128: loops unroll, so a key's loads are all in
 * flight), or 0 for any even head_dim <= 256. KT: the pool's element type (cuda_kv.h). */
template <int VEC, int HDC, typename KT>
__global__ void __launch_bounds__(SKV_ATTN_THREADS)
    skv_attn_rows_kernel(skv_attn_args_t a, bf16 *out, int64_t ldo, const bf16 *q, int64_t ldq,
                         int32_t n_heads, int32_t n_head_chunks, float scale, int32_t chunk,
                         int32_t n_splits, float *ws_o, float *ws_ml)
{
    __shared__ __align__(16) float qs[SKV_ATTN_ROWS_MAX_HEADS][256];
    __shared__ float sc[SKV_ATTN_ROWS_MAX_HEADS][SKV_ATTN_ROWS_TILE];
    __shared__ float red[8192]; /* kgroups * heads * head_dim <= 8192 (see below) */
    __shared__ int64_t koff[SKV_ATTN_ROWS_TILE];
    __shared__ float m_s[SKV_ATTN_ROWS_MAX_HEADS], l_s[SKV_ATTN_ROWS_MAX_HEADS],
        corr_s[SKV_ATTN_ROWS_MAX_HEADS];

    int32_t r = blockIdx.x, kh = blockIdx.y / n_head_chunks, hc = blockIdx.y % n_head_chunks;
    skv_pdl_trigger();
    skv_pdl_wait();
    const int32_t hd = HDC ? HDC : a.head_dim;
    int32_t split = blockIdx.z, group = n_heads / a.n_kv_heads;
    int32_t h0 = kh * group + hc * SKV_ATTN_ROWS_MAX_HEADS;
    int32_t nh = min(SKV_ATTN_ROWS_MAX_HEADS, group - hc * SKV_ATTN_ROWS_MAX_HEADS);
    int32_t s = skv_attn_seq_of_row(a, r);
    const int32_t *bt = a.block_table + (int64_t)s * a.max_blocks;
    int32_t ctx = a.row_pos[r] + 1;
    int32_t p_begin = split * chunk, p_end = min(ctx, p_begin + chunk);
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int64_t v_delta = (int64_t)a.n_kv_heads * a.block_size * hd;
    int32_t npairs = hd / 2;
    const KT *kvb = (const KT *)a.base;

    for (int i = tid; i < nh * hd; i += blockDim.x) {
        qs[i / hd][i % hd] =
            __bfloat162float(q[(int64_t)r * ldq + (int64_t)(h0 + i / hd) * hd + i % hd]);
    }
    if (tid < SKV_ATTN_ROWS_MAX_HEADS) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    /* Phase 3 layout: thread = (key group kg, chunk j of VEC dims); hd / VEC chunks and
     * 128 / (hd / VEC) groups, so groups * heads * hd <= 128 * VEC * 8 = 8192 floats of red. */
    int32_t nchunks = hd / VEC, n_kg = SKV_ATTN_THREADS / nchunks;
    int32_t j = tid % nchunks, kg = tid / nchunks;
    float acc[SKV_ATTN_ROWS_MAX_HEADS][VEC];
#pragma unroll
    for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            acc[g][e] = 0.0f;
        }
    }
    __syncthreads();

    for (int32_t t0 = p_begin; t0 < p_end; t0 += SKV_ATTN_ROWS_TILE) {
        int32_t nt = min(SKV_ATTN_ROWS_TILE, p_end - t0);
        for (int i = tid; i < nt; i += blockDim.x) {
            koff[i] = skv_attn_koff(a, bt, t0 + i, kh);
        }
        __syncthreads();
        /* Phase 1: a thread per key: no shuffles, and the key's 16-byte loads are all in
         * flight at once; q comes from shared memory as 16-byte broadcasts. */
        for (int i = tid; i < nt; i += blockDim.x) {
            float dot[SKV_ATTN_ROWS_MAX_HEADS];
#pragma unroll
            for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                dot[g] = 0.0f;
            }
            const KT *kp = kvb + koff[i];
            if (hd % 8 == 0) {
#pragma unroll 4
                for (int c = 0; c < hd / 8; c++) {
                    float k[8];
                    skv_kv_load<KT, 8>(kp + c * 8, k);
#pragma unroll
                    for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                        if (g < nh) {
                            float4 qa = *(const float4 *)&qs[g][c * 8];
                            float4 qb = *(const float4 *)&qs[g][c * 8 + 4];
                            dot[g] += qa.x * k[0] + qa.y * k[1] + qa.z * k[2] + qa.w * k[3] +
                                      qb.x * k[4] + qb.y * k[5] + qb.z * k[6] + qb.w * k[7];
                        }
                    }
                }
            } else {
                for (int jj = 0; jj < npairs; jj++) {
                    float kf[2];
                    skv_kv_load<KT, 2>(kp + 2 * jj, kf);
#pragma unroll
                    for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                        if (g < nh) {
                            dot[g] += qs[g][2 * jj] * kf[0] + qs[g][2 * jj + 1] * kf[1];
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                if (g < nh) {
                    sc[g][i] = dot[g] * scale;
                }
            }
        }
        __syncthreads();
        /* Phase 2: a warp per head: tile max, rescale factor, probabilities, sum. */
        for (int g = warp; g < nh; g += SKV_ATTN_THREADS / 32) {
            float mx = -INFINITY;
            for (int i = lane; i < nt; i += 32) {
                mx = fmaxf(mx, sc[g][i]);
            }
            for (int o = 16; o > 0; o >>= 1) {
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            }
            float m_new = fmaxf(m_s[g], mx);
            float sum = 0.0f;
            for (int i = lane; i < nt; i += 32) {
                float e = expf(sc[g][i] - m_new);
                sc[g][i] = e;
                sum += e;
            }
            for (int o = 16; o > 0; o >>= 1) {
                sum += __shfl_xor_sync(0xffffffffu, sum, o);
            }
            __syncwarp();
            if (lane == 0) {
                float corr = expf(m_s[g] - m_new); /* 0 on the first tile (m = -inf) */
                corr_s[g] = corr;
                l_s[g] = l_s[g] * corr + sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();
        /* Phase 3: acc = acc * corr + sum_i p_i v_i over this thread's keys. */
        if (kg < n_kg) {
#pragma unroll
            for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                if (g < nh) {
#pragma unroll
                    for (int e = 0; e < VEC; e++) {
                        acc[g][e] *= corr_s[g];
                    }
                }
            }
#pragma unroll 2
            for (int i = kg; i < nt; i += n_kg) {
                float vf[VEC];
                skv_kv_load<KT, VEC>(kvb + koff[i] + v_delta + j * VEC, vf);
#pragma unroll
                for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
                    if (g < nh) {
                        float p = sc[g][i];
#pragma unroll
                        for (int e = 0; e < VEC; e++) {
                            acc[g][e] += p * vf[e];
                        }
                    }
                }
            }
        }
        __syncthreads(); /* sc and koff are rewritten by the next tile */
    }
    /* Reduce the key groups, then write the output (or this split's partial). */
    if (kg < n_kg) {
#pragma unroll
        for (int g = 0; g < SKV_ATTN_ROWS_MAX_HEADS; g++) {
            if (g < nh) {
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    red[(kg * SKV_ATTN_ROWS_MAX_HEADS + g) * hd + j * VEC + e] = acc[g][e];
                }
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < nh * hd; i += blockDim.x) {
        int g = i / hd, d = i % hd;
        float o = 0.0f;
        for (int k = 0; k < n_kg; k++) {
            o += red[(k * SKV_ATTN_ROWS_MAX_HEADS + g) * hd + d];
        }
        int32_t h = h0 + g;
        if (n_splits == 1) {
            out[(int64_t)r * ldo + (int64_t)h * hd + d] = __float2bfloat16(o / l_s[g]);
        } else {
            int64_t w = ((int64_t)r * n_heads + h) * n_splits + split;
            ws_o[w * hd + d] = o;
            if (d == 0) {
                ws_ml[2 * w] = m_s[g]; /* -inf and 0 for an empty split */
                ws_ml[2 * w + 1] = l_s[g];
            }
        }
    }
}

/* grid (rows, heads), hd threads: merges the splits of one (row, head). */
__global__ void skv_attn_combine_kernel(bf16 *out, int64_t ldo, int32_t n_heads, int32_t hd,
                                        int32_t n_splits, const float *ws_o, const float *ws_ml)
{
    int32_t r = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    skv_pdl_trigger();
    skv_pdl_wait();
    int64_t w0 = ((int64_t)r * n_heads + h) * n_splits;
    float m = -INFINITY;
    for (int z = 0; z < n_splits; z++) {
        m = fmaxf(m, ws_ml[2 * (w0 + z)]);
    }
    float l = 0.0f, o = 0.0f;
    for (int z = 0; z < n_splits; z++) {
        float lz = ws_ml[2 * (w0 + z) + 1];
        if (lz > 0.0f) {
            float f = expf(ws_ml[2 * (w0 + z)] - m);
            l += lz * f;
            o += ws_o[(w0 + z) * hd + d] * f;
        }
    }
    out[(int64_t)r * ldo + (int64_t)h * hd + d] = __float2bfloat16(o / l);
}

/* ---- decode kernel (skv_attn_decode_kernel) ------------------------------------------ */

/* Lane layout of the decode kernel for head_dim HD and up to G query heads per kv head:
 * a key's head_dim vector is spread over LPK lanes of DPL dims each (BYTES = DPL elements of
 * K and of V per lane and key), a warp holds KPW keys side by side and takes U such rows per
 * step, so every lane has 2 * U * BYTES bytes of loads in flight before the first use; an fp8
 * pool takes twice the keys per step, so the bytes in flight stay those of bf16. DPL shrinks
 * for G 8 so that q and the accumulators (2 * G * DPL floats) stay in registers. */
/* Build-time tuning knobs (measured in bench/results/cuda-h100-2026-11-23-3.md; the defaults
 * were fastest there): DPL dims per lane, UDIM dims per lane and step (U = UDIM / DPL keys per
 * lane group and step), WAVE blocks per SM the split count aims at, MIN_BLOCKS the
 * __launch_bounds__ occupancy floor, MIN_SPLIT the fewest keys per split. */
#ifndef SKV_DEC_DPL
#define SKV_DEC_DPL 16
#endif
#ifndef SKV_DEC_UDIM
#define SKV_DEC_UDIM 32
#endif
#ifndef SKV_DEC_WAVE
#define SKV_DEC_WAVE 2
#endif
#ifndef SKV_DEC_MIN_BLOCKS
#define SKV_DEC_MIN_BLOCKS 1
#endif
#ifndef SKV_DEC_MIN_SPLIT
#define SKV_DEC_MIN_SPLIT 64 /* fewest keys worth a split of their own */
#endif

template <int HD, int G, typename KT> struct skv_dec_cfg {
    static constexpr int DPL = G * SKV_DEC_DPL <= 64 ? SKV_DEC_DPL : 8;
    static constexpr int LPK = HD / DPL;
    static constexpr int KPW = 32 / LPK;
    static constexpr int U = SKV_DEC_UDIM / DPL;
    static constexpr int BYTES = DPL * (int)sizeof(KT); /* one lane's share of a K or V vector */
    static constexpr int NW = BYTES / 4;                /* ... in 32-bit words */
    static constexpr int KPS = KPW * U;                 /* keys per warp and step */
    /* Prefetch: the next step's K/V words load while this step computes (twice the raw
     * registers; G 8 has none to spare). */
    static constexpr bool PF = G <= 4;
};

/* Issues the loads of one decode step's keys p0 + u * KPW + kg (u < U) of this lane into kw,
 * vw (zero past p_end). */
template <typename C, typename KT>
static __device__ __forceinline__ void
skv_dec_load_step(const skv_attn_args_t &a, const int32_t *bt, int32_t kh, int32_t p0,
                  int32_t p_end, int kg, int sub, int64_t v_delta, uint32_t (&kw)[C::U][C::NW],
                  uint32_t (&vw)[C::U][C::NW])
{
#pragma unroll
    for (int u = 0; u < C::U; u++) {
        int32_t p = p0 + u * C::KPW + kg;
        if (p < p_end) {
            const KT *kp = (const KT *)a.base + skv_attn_koff(a, bt, p, kh) + sub * C::DPL;
            skv_kv_ldg<C::BYTES>(kp, kw[u]);
            skv_kv_ldg<C::BYTES>(kp + v_delta, vw[u]);
        } else {
#pragma unroll
            for (int w = 0; w < C::NW; w++) {
                kw[u][w] = vw[u][w] = 0;
            }
        }
    }
}
#define SKV_DEC_WARPS 4

/* grid (rows, kv heads, context splits), 4 warps. Every warp streams its own keys of the
 * split (steps of KPS keys, interleaved across the warps) with its own running softmax per
 * lane group, so the main loop has no barrier; the lane groups, then the warps (through
 * shared memory), then the splits (combine kernel, through the workspace) are merged at the
 * end. Scores are kept in log2 units (q pre-scaled by scale * log2 e). */
template <int HD, int G, typename KT>
__global__ void __launch_bounds__(SKV_DEC_WARPS * 32, SKV_DEC_MIN_BLOCKS)
    skv_attn_decode_kernel(skv_attn_args_t a, bf16 *out, int64_t ldo, const bf16 *q, int64_t ldq,
                           int32_t n_heads, float scale_log2, int32_t chunk, int32_t n_splits,
                           float *ws_o, float *ws_ml)
{
    typedef skv_dec_cfg<HD, G, KT> C;
    __shared__ float red_o[SKV_DEC_WARPS][G][HD];
    __shared__ float red_m[SKV_DEC_WARPS][G], red_l[SKV_DEC_WARPS][G];
    int32_t r = blockIdx.x, kh = blockIdx.y, split = blockIdx.z;
    skv_pdl_trigger();
    skv_pdl_wait();
    int32_t group = n_heads / a.n_kv_heads, h0 = kh * group;
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int sub = lane % C::LPK, kg = lane / C::LPK;
    int32_t s = skv_attn_seq_of_row(a, r);
    const int32_t *bt = a.block_table + (int64_t)s * a.max_blocks;
    int32_t ctx = a.row_pos[r] + 1;
    int32_t p_begin = split * chunk, p_end = min(ctx, p_begin + chunk);
    int64_t v_delta = (int64_t)a.n_kv_heads * a.block_size * HD;

    float qf[G][C::DPL], acc[G][C::DPL], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const bf16 *qp = q + (int64_t)r * ldq + (int64_t)(h0 + g) * HD + sub * C::DPL;
#pragma unroll
        for (int e = 0; e < C::DPL; e++) {
            qf[g][e] = g < group ? __bfloat162float(qp[e]) * scale_log2 : 0.0f;
            acc[g][e] = 0.0f;
        }
        m[g] = -1e30f; /* finite: exp2(m - m_new) stays 1 while no key was seen */
        l[g] = 0.0f;
    }

    constexpr int32_t STRIDE = SKV_DEC_WARPS * C::KPS;
    uint32_t kw[C::U][C::NW], vw[C::U][C::NW];
    if (C::PF) {
        skv_dec_load_step<C, KT>(a, bt, kh, p_begin + warp * C::KPS, p_end, kg, sub, v_delta, kw,
                                 vw);
    }
    for (int32_t p0 = p_begin + warp * C::KPS; p0 < p_end; p0 += STRIDE) {
        uint32_t kn[C::PF ? C::U : 1][C::NW], vn[C::PF ? C::U : 1][C::NW];
        if constexpr (C::PF) {
            if (p0 + STRIDE < p_end) {
                skv_dec_load_step<C, KT>(a, bt, kh, p0 + STRIDE, p_end, kg, sub, v_delta, kn, vn);
            }
        } else {
            skv_dec_load_step<C, KT>(a, bt, kh, p0, p_end, kg, sub, v_delta, kw, vw);
        }
        float sc[C::U][G];
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float kf[C::DPL];
            skv_kv_widen_words<KT, C::DPL>(kw[u], kf);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < C::DPL; e++) {
                    d += qf[g][e] * kf[e];
                }
#pragma unroll
                for (int o = C::LPK / 2; o > 0; o >>= 1) {
                    d += __shfl_xor_sync(0xffffffffu, d, o);
                }
                sc[u][g] = p0 + u * C::KPW + kg < p_end ? d : -INFINITY;
            }
        }
        /* Softmax of the step's scores (sc becomes the probabilities), then P V one key at a
         * time, so only one key's V is held widened. */
#pragma unroll
        for (int g = 0; g < G; g++) {
            float mx = m[g];
#pragma unroll
            for (int u = 0; u < C::U; u++) {
                mx = fmaxf(mx, sc[u][g]);
            }
            float corr = exp2f(m[g] - mx);
            m[g] = mx;
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < C::DPL; e++) {
                acc[g][e] *= corr;
            }
#pragma unroll
            for (int u = 0; u < C::U; u++) {
                sc[u][g] = exp2f(sc[u][g] - mx); /* 0 for a masked key */
                l[g] += sc[u][g];
            }
        }
#pragma unroll
        for (int u = 0; u < C::U; u++) {
            float vf[C::DPL];
            skv_kv_widen_words<KT, C::DPL>(vw[u], vf);
#pragma unroll
            for (int g = 0; g < G; g++) {
#pragma unroll
                for (int e = 0; e < C::DPL; e++) {
                    acc[g][e] += sc[u][g] * vf[e];
                }
            }
        }
        if (C::PF) {
#pragma unroll
            for (int u = 0; u < C::U; u++) {
#pragma unroll
                for (int w = 0; w < C::NW; w++) {
                    kw[u][w] = kn[C::PF ? u : 0][w];
                    vw[u][w] = vn[C::PF ? u : 0][w];
                }
            }
        }
    }
    /* Merge the lane groups of the warp (same dims, different keys). */
#pragma unroll
    for (int o = C::LPK; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; g++) {
            float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
            float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
            float mn = fmaxf(m[g], mo), fs = exp2f(m[g] - mn), fo = exp2f(mo - mn);
            l[g] = l[g] * fs + lo * fo;
            m[g] = mn;
#pragma unroll
            for (int e = 0; e < C::DPL; e++) {
                float ao = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
                acc[g][e] = acc[g][e] * fs + ao * fo;
            }
        }
    }
    if (kg == 0) {
#pragma unroll
        for (int g = 0; g < G; g++) {
#pragma unroll
            for (int e = 0; e < C::DPL; e++) {
                red_o[warp][g][sub * C::DPL + e] = acc[g][e];
            }
            if (sub == 0) {
                red_m[warp][g] = m[g];
                red_l[warp][g] = l[g];
            }
        }
    }
    __syncthreads();
    /* Merge the warps; write the output, or this split's partial for the combine kernel. */
    for (int i = tid; i < group * HD; i += blockDim.x) {
        int g = i / HD, d = i % HD;
        float mx = -1e30f;
#pragma unroll
        for (int w = 0; w < SKV_DEC_WARPS; w++) {
            mx = fmaxf(mx, red_m[w][g]);
        }
        float o = 0.0f, lsum = 0.0f;
#pragma unroll
        for (int w = 0; w < SKV_DEC_WARPS; w++) {
            float f = exp2f(red_m[w][g] - mx);
            o += red_o[w][g][d] * f;
            lsum += red_l[w][g] * f;
        }
        int32_t h = h0 + g;
        if (n_splits == 1) {
            out[(int64_t)r * ldo + (int64_t)h * HD + d] = __float2bfloat16(o / lsum);
        } else {
            int64_t w = ((int64_t)r * n_heads + h) * n_splits + split;
            ws_o[w * HD + d] = o;
            if (d == 0) {
                ws_ml[2 * w] = mx * 0.69314718f; /* natural-log units, as the rows kernel */
                ws_ml[2 * w + 1] = lsum;         /* 0 for an empty split: skipped */
            }
        }
    }
}

/* ---- prefill kernel (WMMA; the mma.sync kernel of cuda_attn_mma.cu is the default) ---- */

template <int HD> struct skv_prefill2_smem {
    static constexpr int LDB = HD + 8;
    static constexpr int LDP = SKV_ATTN_BK + 8;
    static constexpr int LDO = HD + 4;
    static constexpr int OFF_K = SKV_ATTN_BQ * LDB * 2; /* Q stays for the whole kernel */
    static constexpr int OFF_V = OFF_K + SKV_ATTN_BK * LDB * 2;
    static constexpr int OFF_P = OFF_V + SKV_ATTN_BK * LDB * 2;
    static constexpr int O_BYTES = SKV_ATTN_BQ * LDO * 4; /* final O reuses Q, K and V */
    static_assert(O_BYTES <= OFF_P, "output tile must fit in the Q, K and V space");
    static constexpr int OFF_KOFF = OFF_P + SKV_ATTN_BQ * LDP * 2;
    static constexpr int OFF_POS = OFF_KOFF + SKV_ATTN_BK * 8;
    static constexpr int OFF_L = OFF_POS + SKV_ATTN_BQ * 4;
    static constexpr int BYTES = OFF_L + SKV_ATTN_BQ * 4;
};

/* grid (query tiles, sequences, heads), 8 warps; warp w owns query rows 16w..16w+15 of the
 * 128-row tile. S stays in registers: lane l of a warp holds rows l/4 and l/4 + 8 of its 16
 * (the sm_80+ accumulator layout), so the row max and sum reduce over the 4 lanes of a row with two
 * shuffles and S never goes through shared memory. Q fragments are re-read from shared memory per
 * tile. */
template <int HD>
__global__ void __launch_bounds__(SKV_ATTN_PREFILL_THREADS, 2) /* 2 blocks/SM: <= 128 regs */
    skv_attn_prefill2_kernel(skv_attn_args_t a, bf16 *out, int64_t ldo, const bf16 *q, int64_t ldq,
                             int32_t n_heads, float scale)
{
    typedef skv_prefill2_smem<HD> L;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem;
    bf16 *Ks = (bf16 *)(smem + L::OFF_K);
    bf16 *Vs = (bf16 *)(smem + L::OFF_V);
    bf16 *Ps = (bf16 *)(smem + L::OFF_P);
    float *Os = (float *)smem;
    int64_t *koff = (int64_t *)(smem + L::OFF_KOFF);
    int32_t *rpos = (int32_t *)(smem + L::OFF_POS);
    float *l_s = (float *)(smem + L::OFF_L);

    int32_t s = blockIdx.y, h = blockIdx.z, kh = h / (n_heads / a.n_kv_heads);
    int32_t r0 = a.seq_rows[s] + blockIdx.x * SKV_ATTN_BQ, r_end = a.seq_rows[s + 1];
    if (r0 >= r_end) {
        return;
    }
    int32_t nq = min(SKV_ATTN_BQ, r_end - r0);
    const int32_t *bt = a.block_table + (int64_t)s * a.max_blocks;
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int64_t v_delta = (int64_t)a.n_kv_heads * a.block_size * HD;

    for (int i = tid; i < SKV_ATTN_BQ * HD; i += blockDim.x) {
        int row = i / HD, d = i % HD;
        Qs[row * L::LDB + d] =
            row < nq ? q[(int64_t)(r0 + row) * ldq + (int64_t)h * HD + d] : __float2bfloat16(0.0f);
    }
    if (tid < SKV_ATTN_BQ) {
        rpos[tid] = a.row_pos[r0 + min(tid, nq - 1)];
    }
    __syncthreads();
    int32_t row_lo = warp * 16 + lane / 4, row_hi = row_lo + 8;
    int32_t pos_lo = rpos[row_lo], pos_hi = rpos[row_hi];
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> of[HD / 16];
#pragma unroll
    for (int nb = 0; nb < HD / 16; nb++) {
        wmma::fill_fragment(of[nb], 0.0f);
    }
    int32_t n_keys = rpos[nq - 1] + 1;

    for (int32_t k0 = 0; k0 < n_keys; k0 += SKV_ATTN_BK) {
        if (tid < SKV_ATTN_BK) {
            koff[tid] = k0 + tid < n_keys ? skv_attn_koff(a, bt, k0 + tid, kh) : -1;
        }
        __syncthreads();
        for (int i = tid; i < SKV_ATTN_BK * HD / 8; i += blockDim.x) {
            int key = i / (HD / 8), c = i % (HD / 8);
            uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
            if (koff[key] >= 0) {
                kv4 = *(const uint4 *)((const bf16 *)a.base + koff[key] + c * 8);
                vv4 = *(const uint4 *)((const bf16 *)a.base + koff[key] + v_delta + c * 8);
            }
            *(uint4 *)(Ks + key * L::LDB + c * 8) = kv4;
            *(uint4 *)(Vs + key * L::LDB + c * 8) = vv4;
        }
        __syncthreads();
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf[SKV_ATTN_BK / 16];
#pragma unroll
        for (int nb = 0; nb < SKV_ATTN_BK / 16; nb++) {
            wmma::fill_fragment(sf[nb], 0.0f);
        }
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> qa;
            wmma::load_matrix_sync(qa, Qs + warp * 16 * L::LDB + kk * 16, L::LDB);
#pragma unroll
            for (int nb = 0; nb < SKV_ATTN_BK / 16; nb++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kf;
                wmma::load_matrix_sync(kf, Ks + nb * 16 * L::LDB + kk * 16, L::LDB);
                wmma::mma_sync(sf[nb], qa, kf, sf[nb]);
            }
        }
        /* Mask, row max over this lane's 16 values per row, then over the row's 4 lanes. */
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < SKV_ATTN_BK / 16; nb++) {
#pragma unroll
            for (int i = 0; i < sf[nb].num_elements; i++) {
                int col = nb * 16 + 2 * (lane % 4) + (i & 1) + 8 * (i >> 2);
                bool hi = (i >> 1) & 1;
                float v = sf[nb].x[i] * scale;
                v = k0 + col <= (hi ? pos_hi : pos_lo) ? v : -INFINITY;
                sf[nb].x[i] = v;
                if (hi) {
                    mx_hi = fmaxf(mx_hi, v);
                } else {
                    mx_lo = fmaxf(mx_lo, v);
                }
            }
        }
        for (int o = 1; o <= 2; o <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
        }
        float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        float c_lo = __expf(m_lo - mn_lo), c_hi = __expf(m_hi - mn_hi);
        float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
        for (int nb = 0; nb < SKV_ATTN_BK / 16; nb++) {
#pragma unroll
            for (int i = 0; i < sf[nb].num_elements; i++) {
                int col = nb * 16 + 2 * (lane % 4) + (i & 1) + 8 * (i >> 2);
                bool hi = (i >> 1) & 1;
                bf16 p = __float2bfloat16(__expf(sf[nb].x[i] - (hi ? mn_hi : mn_lo)));
                Ps[(hi ? row_hi : row_lo) * L::LDP + col] = p;
                if (hi) {
                    sum_hi += __bfloat162float(p);
                } else {
                    sum_lo += __bfloat162float(p);
                }
            }
        }
        for (int o = 1; o <= 2; o <<= 1) {
            sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, o);
            sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, o);
        }
        l_lo = l_lo * c_lo + sum_lo;
        l_hi = l_hi * c_hi + sum_hi;
        m_lo = mn_lo;
        m_hi = mn_hi;
        if (!__all_sync(0xffffffffu, c_lo == 1.0f && c_hi == 1.0f)) {
#pragma unroll
            for (int nb = 0; nb < HD / 16; nb++) {
#pragma unroll
                for (int i = 0; i < of[nb].num_elements; i++) {
                    of[nb].x[i] *= ((i >> 1) & 1) ? c_hi : c_lo;
                }
            }
        }
        __syncwarp();
#pragma unroll
        for (int kk = 0; kk < SKV_ATTN_BK / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pf;
            wmma::load_matrix_sync(pf, Ps + warp * 16 * L::LDP + kk * 16, L::LDP);
#pragma unroll
            for (int nb = 0; nb < HD / 16; nb++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vf;
                wmma::load_matrix_sync(vf, Vs + kk * 16 * L::LDB + nb * 16, L::LDB);
                wmma::mma_sync(of[nb], pf, vf, of[nb]);
            }
        }
        __syncthreads(); /* K, V, P and koff are rewritten by the next tile */
    }
    if (lane % 4 == 0) {
        l_s[row_lo] = l_lo;
        l_s[row_hi] = l_hi;
    }
    __syncthreads(); /* O overwrites Q, K and V */
#pragma unroll
    for (int nb = 0; nb < HD / 16; nb++) {
        wmma::store_matrix_sync(Os + warp * 16 * L::LDO + nb * 16, of[nb], L::LDO,
                                wmma::mem_row_major);
    }
    __syncwarp();
    for (int row = warp * 16; row < warp * 16 + 16 && row < nq; row++) {
        float inv = 1.0f / l_s[row];
        for (int d = lane; d < HD; d += 32) {
            out[(int64_t)(r0 + row) * ldo + (int64_t)h * HD + d] =
                __float2bfloat16(Os[row * L::LDO + d] * inv);
        }
    }
}

/* SKV_ATTN_PREFILL=2 selects the WMMA prefill kernel for A/B timing; the mma.sync kernel is
 * the default. */
static int g_skv_attn_prefill_wmma;
/* SKV_ATTN_DECODE=0 sends decode to the rows kernel instead of the decode kernel (A/B). */
static int g_skv_attn_decode_rows;

skv_status_t skv_cuda_attention_init(skv_backend_t *be)
{
    SKV_CUDA_CHECK(cudaFuncSetAttribute(skv_attn_prefill2_kernel<64>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        skv_prefill2_smem<64>::BYTES));
    SKV_CUDA_CHECK(cudaFuncSetAttribute(skv_attn_prefill2_kernel<128>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        skv_prefill2_smem<128>::BYTES));
    const char *env = getenv("SKV_ATTN_PREFILL");
    g_skv_attn_prefill_wmma = env != NULL && env[0] == '2';
    env = getenv("SKV_ATTN_DECODE");
    g_skv_attn_decode_rows = env != NULL && env[0] == '0';
    (void)be;
    return skv_attn_mma_init();
}

/* Launches the decode kernel (head_dim 64 / 128, at most 8 query heads per kv head) with
 * enough context splits for about two waves of blocks (and that fit the workspace), then the
 * combine kernel when there is more than one split. */
template <typename KT>
static skv_status_t skv_attn_decode(skv_backend_t *be, const skv_attn_args_t *a,
                                    const skv_tensor_t *out, const skv_tensor_t *q, int32_t n_heads,
                                    float scale, int32_t n_rows, int32_t max_ctx)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    int32_t group = n_heads / a->n_kv_heads;
    int64_t base_blocks = (int64_t)n_rows * a->n_kv_heads;
    int64_t want = (SKV_DEC_WAVE * c->n_sms + base_blocks - 1) / base_blocks;
    int64_t most = (max_ctx + SKV_DEC_MIN_SPLIT - 1) / SKV_DEC_MIN_SPLIT;
    int64_t fit =
        (int64_t)(SKV_CUDA_ATTN_WS_FLOATS / ((size_t)n_rows * n_heads * (size_t)(a->head_dim + 2)));
    int64_t splits = want < most ? want : most;
    splits = splits < fit ? splits : fit;
    splits = splits < 1 ? 1 : splits;
    int32_t chunk = (int32_t)((max_ctx + splits - 1) / splits);
    splits = (max_ctx + chunk - 1) / chunk;
    float *ws_o = c->d_attn_ws;
    float *ws_ml = ws_o + (size_t)n_rows * n_heads * splits * a->head_dim;
    dim3 grid((unsigned)n_rows, (unsigned)a->n_kv_heads, (unsigned)splits);
    float scale_log2 = scale * 1.44269504f;
#define SKV_ATTN_DEC_LAUNCH(HD, G)                                                                 \
    skv_cuda_launch(skv_attn_decode_kernel<HD, G, KT>, grid, SKV_DEC_WARPS * 32, 0, c->stream, *a, \
                    (bf16 *)out->data, out->ld, (const bf16 *)q->data, q->ld, n_heads, scale_log2, \
                    chunk, (int32_t)splits, ws_o, ws_ml)
    if (a->head_dim == 128) {
        if (group <= 4) {
            SKV_ATTN_DEC_LAUNCH(128, 4);
        } else {
            SKV_ATTN_DEC_LAUNCH(128, 8);
        }
    } else if (group <= 4) {
        SKV_ATTN_DEC_LAUNCH(64, 4);
    } else {
        SKV_ATTN_DEC_LAUNCH(64, 8);
    }
#undef SKV_ATTN_DEC_LAUNCH
    SKV_CUDA_CHECK_LAUNCH();
    if (splits > 1) {
        dim3 g2((unsigned)n_rows, (unsigned)n_heads);
        skv_cuda_launch(skv_attn_combine_kernel, g2, a->head_dim, 0, c->stream, (bf16 *)out->data,
                        out->ld, n_heads, a->head_dim, (int32_t)splits, ws_o, ws_ml);
        SKV_CUDA_CHECK_LAUNCH();
    }
    return SKV_STATUS_OK;
}

/* Launches the rows kernel with as many context splits as fill the GPU (and fit the
 * workspace), then the combine kernel when there is more than one split. */
template <typename KT>
static skv_status_t skv_attn_rows(skv_backend_t *be, const skv_attn_args_t *a,
                                  const skv_tensor_t *out, const skv_tensor_t *q, int32_t n_heads,
                                  float scale, int32_t n_rows, int32_t max_ctx)
{
    skv_cuda_backend_t *c = skv_cuda(be);
    int32_t group = n_heads / a->n_kv_heads;
    int32_t n_chunks = (group + SKV_ATTN_ROWS_MAX_HEADS - 1) / SKV_ATTN_ROWS_MAX_HEADS;
    int64_t base_blocks = (int64_t)n_rows * a->n_kv_heads * n_chunks;
    /* About 8 blocks per SM: enough independent loads in flight to stream the cache. */
    int64_t want = (8 * c->n_sms + base_blocks - 1) / base_blocks;
    int64_t most = (max_ctx + SKV_ATTN_MIN_SPLIT - 1) / SKV_ATTN_MIN_SPLIT;
    int64_t fit =
        (int64_t)(SKV_CUDA_ATTN_WS_FLOATS / ((size_t)n_rows * n_heads * (size_t)(a->head_dim + 2)));
    int64_t splits = want < most ? want : most;
    splits = splits < fit ? splits : fit;
    splits = splits < 1 ? 1 : splits;
    int32_t chunk = (int32_t)((max_ctx + splits - 1) / splits);
    splits = (max_ctx + chunk - 1) / chunk;
    float *ws_o = c->d_attn_ws;
    float *ws_ml = ws_o + (size_t)n_rows * n_heads * splits * a->head_dim;
    dim3 grid((unsigned)n_rows, (unsigned)(a->n_kv_heads * n_chunks), (unsigned)splits);
#define SKV_ATTN_ROWS_LAUNCH(VEC, HDC)                                                             \
    skv_cuda_launch(skv_attn_rows_kernel<VEC, HDC, KT>, grid, SKV_ATTN_THREADS, 0, c->stream, *a,  \
                    (bf16 *)out->data, out->ld, (const bf16 *)q->data, q->ld, n_heads, n_chunks,   \
                    scale, chunk, (int32_t)splits, ws_o, ws_ml)
    if (a->head_dim == 128) {
        SKV_ATTN_ROWS_LAUNCH(8, 128);
    } else if (a->head_dim == 64) {
        SKV_ATTN_ROWS_LAUNCH(8, 64);
    } else if (a->head_dim % 8 == 0) {
        SKV_ATTN_ROWS_LAUNCH(8, 0);
    } else {
        SKV_ATTN_ROWS_LAUNCH(2, 0);
    }
#undef SKV_ATTN_ROWS_LAUNCH
    SKV_CUDA_CHECK_LAUNCH();
    if (splits > 1) {
        dim3 g2((unsigned)n_rows, (unsigned)n_heads);
        skv_cuda_launch(skv_attn_combine_kernel, g2, a->head_dim, 0, c->stream, (bf16 *)out->data,
                        out->ld, n_heads, a->head_dim, (int32_t)splits, ws_o, ws_ml);
        SKV_CUDA_CHECK_LAUNCH();
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_cuda_attention(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *q,
                                const skv_kv_view_t *kv, int32_t cache_layer, int32_t n_heads,
                                float scale, const skv_attn_meta_t *meta)
{
    int32_t hd = kv->head_dim;
    SKV_ASSERT(q->cols == (int64_t)n_heads * hd && out->rows == q->rows);
    SKV_ASSERT(q->rows == meta->n_rows && n_heads % kv->n_kv_heads == 0);
    SKV_ASSERT(q->dtype == SKV_DTYPE_BF16);
    if (!skv_cuda_kv_dtype_ok(kv->dtype)) {
        SKV_LOG_ERROR("cuda attention: KV pool dtype %s unsupported (bf16, f8e4m3)",
                      skv_dtype_name(kv->dtype));
        return SKV_STATUS_UNSUPPORTED;
    }
    if (hd % 2 != 0 || hd > 256) {
        SKV_LOG_ERROR("cuda attention: head_dim %d unsupported (even, <= 256)", hd);
        return SKV_STATUS_UNSUPPORTED;
    }
    if (meta->n_rows == 0) {
        return SKV_STATUS_OK;
    }
    skv_attn_args_t a = {kv->base,
                         kv->block_size,
                         kv->n_kv_heads,
                         hd,
                         kv->n_cache_layers,
                         cache_layer,
                         (const int32_t *)meta->seq_rows.data,
                         (const int32_t *)meta->row_pos.data,
                         (const int32_t *)meta->block_table.data,
                         meta->max_blocks,
                         meta->n_seqs};
    int32_t max_q = 0;
    for (int32_t s = 0; s < meta->n_seqs; s++) {
        int32_t n = meta->h_seq_rows[s + 1] - meta->h_seq_rows[s];
        max_q = n > max_q ? n : max_q;
    }
    /* Few rows per sequence (decode, SwiftKV logit rows): the rows kernel reads each key once
     * per kv head and splits long contexts; the tensor-core tile pays off from ~16 rows. */
    bool fp8 = kv->dtype == SKV_DTYPE_F8E4M3;
    cudaStream_t st = skv_cuda(be)->stream;
    bool mma = skv_attn_prefill_mma_ok(hd, q, out) && (fp8 || !g_skv_attn_prefill_wmma);
    /* An fp8 pool goes to the mma or the rows kernel (the WMMA kernel reads bf16 only). */
    if (max_q <= 16 || (hd != 64 && hd != 128) || (fp8 && !mma)) {
        if (!g_skv_attn_decode_rows && (hd == 64 || hd == 128) && n_heads / kv->n_kv_heads <= 8) {
            return fp8 ? skv_attn_decode<skv_fp8_t>(be, &a, out, q, n_heads, scale, meta->n_rows,
                                                    meta->max_ctx)
                       : skv_attn_decode<bf16>(be, &a, out, q, n_heads, scale, meta->n_rows,
                                               meta->max_ctx);
        }
        return fp8 ? skv_attn_rows<skv_fp8_t>(be, &a, out, q, n_heads, scale, meta->n_rows,
                                              meta->max_ctx)
                   : skv_attn_rows<bf16>(be, &a, out, q, n_heads, scale, meta->n_rows,
                                         meta->max_ctx);
    }
    if (mma) {
        return skv_attn_prefill_mma(st, &a, fp8, out, q, n_heads, scale, max_q);
    }
    dim3 grid((unsigned)((max_q + SKV_ATTN_BQ - 1) / SKV_ATTN_BQ), (unsigned)meta->n_seqs,
              (unsigned)n_heads);
    if (hd == 64) {
        skv_attn_prefill2_kernel<64>
            <<<grid, SKV_ATTN_PREFILL_THREADS, skv_prefill2_smem<64>::BYTES, st>>>(
                a, (bf16 *)out->data, out->ld, (const bf16 *)q->data, q->ld, n_heads, scale);
    } else {
        skv_attn_prefill2_kernel<128>
            <<<grid, SKV_ATTN_PREFILL_THREADS, skv_prefill2_smem<128>::BYTES, st>>>(
                a, (bf16 *)out->data, out->ld, (const bf16 *)q->data, q->ld, n_heads, scale);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}
