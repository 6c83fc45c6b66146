/*
 * cuda_attn_mma.cu: causal GQA prefill attention over the paged KV cache (bf16 or fp8) on the
 * tensor cores with mma.sync (m16n8k16, bf16 operands, fp32 accumulation), flash-attention style.
 *
 * A block of W warps takes 16 R W consecutive query rows of one sequence and one query head;
 * warp w owns R fragments of 16 rows (rows 16 R w .. 16 R (w + 1) - 1), so each K/V fragment
 * it reads from shared memory serves R mma. Default: 8 warps x 2 fragments (256 rows). Q stays
 * in shared memory for the whole kernel; the block walks 64-key tiles of the sequence's cache
 * up to its last row's position.
 * K and V tiles are brought into shared memory with cp.async, one barrier per tile: from a
 * bf16 pool in three stages (tile j + 2 loads while tile j's S = Q K^T, softmax and O += P V
 * run); from an fp8 pool in two raw stages (tile j + 1 loads while tile j runs), each thread
 * widening its own chunks of tile j to bf16 before the barrier.
 * S, P and O never leave registers: the accumulator layout of S is the A-operand layout of P
 * (two adjacent 8-key tiles make one 16-key fragment), so P V needs no shuffle. B fragments
 * come from shared memory with ldmatrix (.trans for V). Rows are padded by 16 bytes, which
 * makes the 8 row addresses of every ldmatrix phase hit distinct banks.
 * Online softmax per row in fp32 in the log2 domain (exp2 of scaled scores); each thread keeps
 * a partial row sum of its own columns, reduced over the row's 4 lanes at the end.
 * Masking is applied only on tiles that cross a row's position; a warp whose rows are all
 * before a tile skips its math (it still joins the loads and barriers).
 * Blocks are ordered heaviest first (the last query tiles of the sequences launch first) and
 * the query heads of one kv head are adjacent in the grid, so their K/V reads share L2.
 * (Packing a GQA group's heads into one block, so each K/V tile serves all of them, measured
 * no faster on the H100 at 8 x 2048: the kernel is not L2-bound.)
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_attn.h"
#include "kernels/cuda/cuda_kv.h"

typedef __nv_bfloat16 bf16;

#define SKV_MMA_BK 64 /* keys per tile */

/* Shared memory of a block with F16 fragments of 16 query rows: Q [16 F16][LD], then STAGES
 * stages of K [BK][LD] and V [BK][LD], all bf16: three for a bf16 pool (KB 2: tile j in
 * stage j % 3), two for an fp8 pool (KB 1: tile j widened into stage j % 2), whose two raw
 * stages, K [BK][HD] and V [BK][HD] bytes, follow. */
template <int HD, int F16, int KB = 2> struct skv_mma_smem {
    static constexpr int LD = HD + 8; /* bf16 row stride: +16 bytes against bank conflicts */
    static constexpr int Q_OFF = 0;
    static constexpr int KV_OFF = 16 * F16 * LD;
    static constexpr int TILE = SKV_MMA_BK * LD; /* one K or V tile */
    static constexpr int STAGES = KB == 2 ? 3 : 2;
    static constexpr int RAW_OFF = (KV_OFF + 2 * STAGES * TILE) * 2; /* bytes */
    static constexpr int RAW_TILE = SKV_MMA_BK * HD;                 /* bytes of one raw tile */
    static constexpr int BYTES = RAW_OFF + (KB == 1 ? 4 * RAW_TILE : 0);
};

static __device__ __forceinline__ uint32_t skv_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, bypassing L1; src_bytes 0 fills the destination with zeros. */
static __device__ __forceinline__ void skv_cp_async16(void *dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(skv_smem_addr(dst)),
                 "l"(src), "r"(src_bytes));
}

static __device__ __forceinline__ void skv_cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}

/* Waits until at most N of this thread's committed groups are still in flight. */
template <int N> static __device__ __forceinline__ void skv_cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void skv_ldmatrix_x4(uint32_t *r, const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(skv_smem_addr(p)));
}

static __device__ __forceinline__ void skv_ldmatrix_x4_trans(uint32_t *r, const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(skv_smem_addr(p)));
}

/* c[16x8] += a[16x16] b[16x8] (bf16 in, f32 accumulate). */
static __device__ __forceinline__ void skv_mma_bf16(float *c, const uint32_t *a, uint32_t b0,
                                                    uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t skv_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lower column */
    return *(uint32_t *)&v;
}

/* The pool offset of this thread's key of the tile at k0 (TPK threads share a key: thread t
 * loads key t / TPK of every tile), or -1 past n_keys: computed once per tile, used for its
 * K and its V. */
template <int TPK>
static __device__ __forceinline__ int64_t skv_mma_key_off(const skv_attn_args_t &a,
                                                          const int32_t *bt, int32_t kh, int32_t k0,
                                                          int32_t n_keys)
{
    int32_t p = k0 + (int32_t)threadIdx.x / TPK;
    return p < n_keys ? skv_attn_koff(a, bt, p, kh) : -1;
}

/* Issues the cp.async copies of this thread's share of one 64-key tile of K (v_delta 0) or V
 * of element type T (bf16, or the raw bytes of an fp8 pool) into dst [BK][DLD] (row stride
 * DLD): key threadIdx / TPK, every TPK-th 16-byte chunk from threadIdx % TPK, so a warp
 * instruction reads 32 / TPK keys x 16 * TPK contiguous bytes (whole sectors). A key past
 * n_keys (off -1) is zero-filled without a read. An fp8 tile's chunks are widened later by
 * the thread that loaded them (skv_mma_widen_kv), so no barrier sits between the two. */
template <typename T, int HD, int TPK, int DLD>
static __device__ __forceinline__ void skv_mma_load_kv(const T *base, int64_t off, int64_t v_delta,
                                                       T *dst)
{
    constexpr int EPC = 16 / (int)sizeof(T); /* elements per 16-byte chunk */
    int key = threadIdx.x / TPK, c0 = threadIdx.x % TPK;
    const T *src = off >= 0 ? base + off + v_delta : base;
    int bytes = off >= 0 ? 16 : 0;
#pragma unroll
    for (int j = 0; j < HD / EPC / TPK; j++) {
        int c = c0 + TPK * j;
        skv_cp_async16(dst + key * DLD + c * EPC, src + (off >= 0 ? c * EPC : 0), bytes);
    }
}

/* Widens this thread's chunks of a raw tile (as skv_mma_load_kv placed them) to bf16 rows of
 * dst [BK][LD] (exact: every E4M3 value is a bf16 value). */
template <int HD, int TPK, int LD>
static __device__ __forceinline__ void skv_mma_widen_kv(const skv_fp8_t *raw, bf16 *dst)
{
    int key = threadIdx.x / TPK, c0 = threadIdx.x % TPK;
#pragma unroll
    for (int j = 0; j < HD / 16 / TPK; j++) {
        int c = c0 + TPK * j;
        uint4 u = *(const uint4 *)(raw + key * HD + c * 16);
        const uint32_t *w = (const uint32_t *)&u;
        uint32_t o[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
                (__nv_fp8x2_storage_t)(w[i / 2] >> (16 * (i % 2))), __NV_E4M3);
            float2 f = __half22float2(*(const __half2 *)&h);
            o[i] = skv_pack_bf16(f.x, f.y);
        }
        uint4 *d = (uint4 *)(dst + key * LD + c * 16);
        d[0] = make_uint4(o[0], o[1], o[2], o[3]);
        d[1] = make_uint4(o[4], o[5], o[6], o[7]);
    }
}

static __device__ __forceinline__ float skv_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x)); /* exp2(-inf) = 0 */
    return y;
}

/* Online softmax of one 16-row fragment over one 64-key tile. sf: the fragment's raw scores
 * S = Q K^T (accumulator layout: [n][0..1] row lo = g, [n][2..3] row hi = g + 8, columns
 * n * 8 + 2t + {0, 1}); pos_lo / pos_hi: the two rows' positions; wmin: the warp's lowest
 * row position (tiles entirely at or below it need no mask). Updates the running max m, the
 * thread's partial row sums l and rescales the output o [HD/8][4]; leaves P in pf as bf16
 * A fragments (two adjacent 8-key accumulator tiles make one 16-key fragment). */
template <int NO>
static __device__ __forceinline__ void
skv_mma_softmax_tile(float (&sf)[SKV_MMA_BK / 8][4], uint32_t (&pf)[SKV_MMA_BK / 16][4],
                     float (&o)[NO][4], int32_t k0, int32_t wmin, int32_t pos_lo, int32_t pos_hi,
                     int t, float scale_log2, float &m_lo, float &m_hi, float &l_lo, float &l_hi)
{
    /* Max on raw scores (scale > 0), then p = exp2(s * scale_log2 - m * scale_log2): one FFMA
     * per score; masked scores are -inf and give 0. */
    if (k0 + SKV_MMA_BK - 1 > wmin) {
#pragma unroll
        for (int n = 0; n < SKV_MMA_BK / 8; n++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int32_t key = k0 + n * 8 + 2 * t + (i & 1);
                sf[n][i] = key <= (i < 2 ? pos_lo : pos_hi) ? sf[n][i] : -INFINITY;
            }
        }
    }
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int n = 0; n < SKV_MMA_BK / 8; n++) {
        mx_lo = fmaxf(mx_lo, fmaxf(sf[n][0], sf[n][1]));
        mx_hi = fmaxf(mx_hi, fmaxf(sf[n][2], sf[n][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    /* Every row sees key 0 on the first tile, so m is finite from then on. A fragment of a
     * warp that is active but whose rows all precede this tile has mx -inf: m stays, c is 1
     * and every p is 0. */
    float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    float c_lo = skv_exp2((m_lo - mn_lo) * scale_log2);
    float c_hi = skv_exp2((m_hi - mn_hi) * scale_log2);
    m_lo = mn_lo;
    m_hi = mn_hi;
    float ms_lo = mn_lo * scale_log2, ms_hi = mn_hi * scale_log2;
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int n = 0; n < SKV_MMA_BK / 8; n++) {
        sf[n][0] = skv_exp2(fmaf(sf[n][0], scale_log2, -ms_lo));
        sf[n][1] = skv_exp2(fmaf(sf[n][1], scale_log2, -ms_lo));
        sf[n][2] = skv_exp2(fmaf(sf[n][2], scale_log2, -ms_hi));
        sf[n][3] = skv_exp2(fmaf(sf[n][3], scale_log2, -ms_hi));
        sum_lo += sf[n][0] + sf[n][1];
        sum_hi += sf[n][2] + sf[n][3];
    }
    l_lo = l_lo * c_lo + sum_lo;
    l_hi = l_hi * c_hi + sum_hi;
    if (!__all_sync(0xffffffffu, c_lo == 1.0f && c_hi == 1.0f)) {
#pragma unroll
        for (int n = 0; n < NO; n++) {
            o[n][0] *= c_lo;
            o[n][1] *= c_lo;
            o[n][2] *= c_hi;
            o[n][3] *= c_hi;
        }
    }
#pragma unroll
    for (int kk = 0; kk < SKV_MMA_BK / 16; kk++) {
        pf[kk][0] = skv_pack_bf16(sf[2 * kk][0], sf[2 * kk][1]);
        pf[kk][1] = skv_pack_bf16(sf[2 * kk][2], sf[2 * kk][3]);
        pf[kk][2] = skv_pack_bf16(sf[2 * kk + 1][0], sf[2 * kk + 1][1]);
        pf[kk][3] = skv_pack_bf16(sf[2 * kk + 1][2], sf[2 * kk + 1][3]);
    }
}

/* Writes one 16-row fragment's output rows r0 + row_lo and r0 + row_lo + 8 (those below nq)
 * of head h: o [HD/8][4] divided by the row sums (the 4 lanes of a row reduce theirs here). */
template <int HD>
static __device__ __forceinline__ void
skv_mma_store_rows(bf16 *out, int64_t ldo, int32_t r0, int32_t row_lo, int32_t nq, int32_t h, int t,
                   const float (&o)[HD / 8][4], float l_lo, float l_hi)
{
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
    }
    float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
    int32_t row_hi = row_lo + 8;
    bf16 *out_lo = out + (int64_t)(r0 + row_lo) * ldo + (int64_t)h * HD + 2 * t;
    bf16 *out_hi = out + (int64_t)(r0 + row_hi) * ldo + (int64_t)h * HD + 2 * t;
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        if (row_lo < nq) {
            *(__nv_bfloat162 *)(out_lo + n * 8) =
                __floats2bfloat162_rn(o[n][0] * inv_lo, o[n][1] * inv_lo);
        }
        if (row_hi < nq) {
            *(__nv_bfloat162 *)(out_hi + n * 8) =
                __floats2bfloat162_rn(o[n][2] * inv_hi, o[n][3] * inv_hi);
        }
    }
}

/* Issues the copies of this thread's share of the K and V tiles whose pool offset is koff
 * into stage `stage`: straight into the bf16 tiles, or (fp8 pool) into the raw tiles. */
template <int HD, int TPK, typename L>
static __device__ __forceinline__ void skv_mma_load_tile(const void *base, int64_t koff,
                                                         int64_t v_delta, bf16 *smem,
                                                         skv_fp8_t *raw, int stage)
{
    if (L::BYTES > L::RAW_OFF) {
        skv_fp8_t *rk = raw + 2 * stage * L::RAW_TILE;
        const skv_fp8_t *b8 = (const skv_fp8_t *)base;
        skv_mma_load_kv<skv_fp8_t, HD, TPK, HD>(b8, koff, 0, rk);
        skv_mma_load_kv<skv_fp8_t, HD, TPK, HD>(b8, koff, v_delta, rk + L::RAW_TILE);
    } else {
        bf16 *kd = smem + L::KV_OFF + 2 * stage * L::TILE;
        skv_mma_load_kv<bf16, HD, TPK, L::LD>((const bf16 *)base, koff, 0, kd);
        skv_mma_load_kv<bf16, HD, TPK, L::LD>((const bf16 *)base, koff, v_delta, kd + L::TILE);
    }
}

/* grid (n_heads, n_seqs, query tiles of 16 R W rows of the longest sequence), 32 W threads;
 * warp w owns rows 16 R w .. 16 R (w + 1) - 1 as R fragments of 16. R 2 makes every K/V
 * fragment read from shared memory serve two mma (half the ldmatrix traffic per FLOP) and gives
 * each warp two independent mma chains. Blocks per SM: 3 for W 4 R 1 (registers <= 168),
 * 2 for W 4 R 2 (<= 255), 1 for W 8. */
template <int HD, int W, int R> struct skv_mma_cfg {
    static constexpr int MIN_BLOCKS = W == 8 ? 1 : (R == 1 ? 3 : 2);
    /* Q fragments in registers: only with one 16-row fragment per warp and 8 warps (one
     * block per SM either way); otherwise re-read from shared memory per tile. */
    static constexpr bool QREG = W == 8 && R == 1;
};

template <int HD, int W, int R, typename KT>
__global__ void __launch_bounds__(W * 32, (skv_mma_cfg<HD, W, R>::MIN_BLOCKS))
    skv_attn_prefill_mma_kernel(skv_attn_args_t a, bf16 *out, int64_t ldo, const bf16 *q,
                                int64_t ldq, int32_t n_heads, float scale_log2)
{
    constexpr bool F8 = sizeof(KT) == 1;
    typedef skv_mma_smem<HD, W * R, (int)sizeof(KT)> L;
    constexpr int BQ = 16 * R * W, THREADS = 32 * W, TPK = THREADS / SKV_MMA_BK;
    constexpr bool QREG = skv_mma_cfg<HD, W, R>::QREG;
    static_assert(THREADS % SKV_MMA_BK == 0 && (HD / 16) % TPK == 0, "key split");
    extern __shared__ __align__(128) unsigned char smem_raw[];
    bf16 *smem = (bf16 *)smem_raw;
    bf16 *Qs = smem + L::Q_OFF;
    skv_fp8_t *raw = (skv_fp8_t *)(smem_raw + L::RAW_OFF);

    int32_t h = blockIdx.x, s = blockIdx.y, kh = h / (n_heads / a.n_kv_heads);
    int32_t tile = gridDim.z - 1 - blockIdx.z; /* heaviest (last) tiles first */
    int32_t r0 = a.seq_rows[s] + tile * BQ, r_end = a.seq_rows[s + 1];
    if (r0 >= r_end) {
        return;
    }
    int32_t nq = min(BQ, r_end - r0);
    const int32_t *bt = a.block_table + (int64_t)s * a.max_blocks;
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int g = lane / 4, t = lane % 4; /* fragment row group and column pair */
    /* Rows increase in position within a sequence, so the last real row bounds the keys. */
    int32_t n_keys = a.row_pos[r0 + nq - 1] + 1;

    /* Q tile (rows past nq zero-filled) and K/V tile 0 (stage 0), one cp.async group. */
    for (int i = tid; i < BQ * (HD / 8); i += THREADS) {
        int row = i / (HD / 8), c = i % (HD / 8);
        const bf16 *src = row < nq ? q + (int64_t)(r0 + row) * ldq + (int64_t)h * HD + c * 8 : q;
        skv_cp_async16(Qs + row * L::LD + c * 8, src, row < nq ? 16 : 0);
    }
    int64_t v_delta = (int64_t)a.n_kv_heads * a.block_size * HD;
    int64_t koff = skv_mma_key_off<TPK>(a, bt, kh, 0, n_keys); /* this thread's key of the tile */
    skv_mma_load_tile<HD, TPK, L>(a.base, koff, v_delta, smem, raw, 0);
    skv_cp_async_commit();
    if (!F8) { /* bf16: tile 1 too (stage 1), its own group, possibly empty */
        if (SKV_MMA_BK < n_keys) {
            koff = skv_mma_key_off<TPK>(a, bt, kh, SKV_MMA_BK, n_keys);
            skv_mma_load_tile<HD, TPK, L>(a.base, koff, v_delta, smem, raw, 1);
        }
        skv_cp_async_commit();
    }

    /* Fragment r's rows: lo = 16 (R warp + r) + g, hi = lo + 8. Padding rows take the last
     * real row's position: finite softmax, never written. */
    int32_t pos_lo[R], pos_hi[R];
    int32_t wmin = INT32_MAX, wmax = 0;
#pragma unroll
    for (int r = 0; r < R; r++) {
        int32_t row_lo = (R * warp + r) * 16 + g;
        pos_lo[r] = a.row_pos[r0 + min(row_lo, nq - 1)];
        pos_hi[r] = a.row_pos[r0 + min(row_lo + 8, nq - 1)];
        wmin = min(wmin, min(pos_lo[r], pos_hi[r]));
        wmax = max(wmax, max(pos_lo[r], pos_hi[r]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        wmin = min(wmin, __shfl_xor_sync(0xffffffffu, wmin, o));
        wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
    }

    const bf16 *q_lane = Qs + (R * warp * 16 + (lane & 15)) * L::LD + (lane >> 4) * 8;
    uint32_t qreg[QREG ? HD / 16 : 1][4];

    float o[R][HD / 8][4];
    float m_lo[R], m_hi[R], l_lo[R], l_hi[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int n = 0; n < HD / 8; n++) {
            o[r][n][0] = o[r][n][1] = o[r][n][2] = o[r][n][3] = 0.0f;
        }
        m_lo[r] = m_hi[r] = -INFINITY;
        l_lo[r] = l_hi[r] = 0.0f;
    }

    /* One barrier per tile. bf16: tile j + 2 loads into stage (j + 2) % 3 right after the
     * barrier of tile j, by which every warp is done with tile j - 1, the stage's last user.
     * fp8: tile j + 1 loads raw into raw stage (j + 1) % 2; before the barrier of tile j each
     * thread widens its own raw chunks of tile j (its own cp.async, visible to it after the
     * wait) into stage j % 2, whose last user, tile j - 2, every warp left before the barrier
     * of tile j - 1; a raw chunk is refilled only by the thread that widened it. */
    for (int32_t k0 = 0, stage = 0; k0 < n_keys; k0 += SKV_MMA_BK) {
        bf16 *Ks = smem + L::KV_OFF + 2 * stage * L::TILE, *Vs = Ks + L::TILE;
        if (F8) {
            int raw_stage = (k0 / SKV_MMA_BK) % 2;
            if (k0 + SKV_MMA_BK < n_keys) {
                koff = skv_mma_key_off<TPK>(a, bt, kh, k0 + SKV_MMA_BK, n_keys);
                skv_mma_load_tile<HD, TPK, L>(a.base, koff, v_delta, smem, raw, raw_stage ^ 1);
            }
            skv_cp_async_commit();  /* possibly empty: keeps the group count uniform */
            skv_cp_async_wait<1>(); /* tile k0 (and Q) has landed; the next may be in flight */
            const skv_fp8_t *rk = raw + 2 * raw_stage * L::RAW_TILE;
            skv_mma_widen_kv<HD, TPK, L::LD>(rk, Ks);
            skv_mma_widen_kv<HD, TPK, L::LD>(rk + L::RAW_TILE, Vs);
            __syncthreads();
        } else {
            skv_cp_async_wait<1>(); /* tile k0 (and Q) has landed; k0 + 1 may be in flight */
            __syncthreads();
            if (k0 + 2 * SKV_MMA_BK < n_keys) {
                int next = stage == 0 ? 2 : stage - 1; /* (stage + 2) % 3 */
                koff = skv_mma_key_off<TPK>(a, bt, kh, k0 + 2 * SKV_MMA_BK, n_keys);
                skv_mma_load_tile<HD, TPK, L>(a.base, koff, v_delta, smem, raw, next);
            }
            skv_cp_async_commit(); /* possibly empty: keeps the group count uniform */
        }
        stage = stage + 1 == L::STAGES ? 0 : stage + 1;
        if (QREG && k0 == 0) {
#pragma unroll
            for (int kk = 0; kk < (QREG ? HD / 16 : 1); kk++) {
                skv_ldmatrix_x4(qreg[kk], q_lane + kk * 16);
            }
        }
        if (k0 <= wmax) { /* warp-uniform: some row of this warp sees a key of the tile */
            float sf[R][SKV_MMA_BK / 8][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
#pragma unroll
                for (int n = 0; n < SKV_MMA_BK / 8; n++) {
                    sf[r][n][0] = sf[r][n][1] = sf[r][n][2] = sf[r][n][3] = 0.0f;
                }
            }
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                uint32_t qf[R][4];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    if (QREG) {
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            qf[r][i] = qreg[QREG ? kk : 0][i];
                        }
                    } else {
                        skv_ldmatrix_x4(qf[r], q_lane + r * 16 * L::LD + kk * 16);
                    }
                }
#pragma unroll
                for (int nn = 0; nn < SKV_MMA_BK / 16; nn++) {
                    uint32_t b[4];
                    int key = nn * 16 + (lane & 7) + ((lane >> 4) << 3);
                    skv_ldmatrix_x4(b, Ks + key * L::LD + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        skv_mma_bf16(sf[r][2 * nn], qf[r], b[0], b[1]);
                        skv_mma_bf16(sf[r][2 * nn + 1], qf[r], b[2], b[3]);
                    }
                }
            }
            uint32_t pf[R][SKV_MMA_BK / 16][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
                skv_mma_softmax_tile(sf[r], pf[r], o[r], k0, wmin, pos_lo[r], pos_hi[r], t,
                                     scale_log2, m_lo[r], m_hi[r], l_lo[r], l_hi[r]);
            }
#pragma unroll
            for (int kk = 0; kk < SKV_MMA_BK / 16; kk++) {
#pragma unroll
                for (int nn = 0; nn < HD / 16; nn++) {
                    uint32_t b[4];
                    int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    skv_ldmatrix_x4_trans(b, Vs + key * L::LD + nn * 16 + (lane >> 4) * 8);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        skv_mma_bf16(o[r][2 * nn], pf[r][kk], b[0], b[1]);
                        skv_mma_bf16(o[r][2 * nn + 1], pf[r][kk], b[2], b[3]);
                    }
                }
            }
        }
    }
    skv_cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < R; r++) {
        int32_t row_lo = (R * warp + r) * 16 + g;
        skv_mma_store_rows<HD>(out, ldo, r0, row_lo, nq, h, t, o[r], l_lo[r], l_hi[r]);
    }
}

/* Block shapes (warps W x 16-row fragments per warp R) by head_dim, and the one in use.
 * SKV_ATTN_MMA_ROWS (rows per block: 64, 128, 256) and SKV_ATTN_MMA_WARP_ROWS (16 or 32)
 * force another, for A/B timing. */
typedef struct {
    int w, r;
} skv_mma_shape_t;

/* H100, 8 x 2048 causal (TFLOP/s, head_dim 128 / 64): 8 x 2 (256 rows) 245.7 / 204.5;
 * 4 x 2 (128 rows) 213.5 / 196.8; 8 x 1 (128 rows) 202.2 / 157.0; 4 x 1 (64 rows) 148.2 /
 * 157.2. 8 x 2 needs 255 registers and spills ~100 bytes, which costs less than it gains. */
static skv_mma_shape_t g_skv_mma_shape128 = {8, 2}, g_skv_mma_shape64 = {8, 2};

template <int HD, int W, int R> static skv_status_t skv_attn_mma_attr(void)
{
    SKV_CUDA_CHECK(cudaFuncSetAttribute(skv_attn_prefill_mma_kernel<HD, W, R, bf16>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        skv_mma_smem<HD, W * R>::BYTES));
    SKV_CUDA_CHECK(cudaFuncSetAttribute(skv_attn_prefill_mma_kernel<HD, W, R, skv_fp8_t>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        skv_mma_smem<HD, W * R, 1>::BYTES));
    return SKV_STATUS_OK;
}

template <int HD> static skv_status_t skv_attn_mma_attrs(void)
{
    skv_status_t st = skv_attn_mma_attr<HD, 4, 1>();
    st = st == SKV_STATUS_OK ? skv_attn_mma_attr<HD, 8, 1>() : st;
    st = st == SKV_STATUS_OK ? skv_attn_mma_attr<HD, 4, 2>() : st;
    return st == SKV_STATUS_OK ? skv_attn_mma_attr<HD, 8, 2>() : st;
}

skv_status_t skv_attn_mma_init(void)
{
    const char *rows_env = getenv("SKV_ATTN_MMA_ROWS"), *wr_env = getenv("SKV_ATTN_MMA_WARP_ROWS");
    if (rows_env != NULL || wr_env != NULL) {
        int rows = rows_env != NULL ? atoi(rows_env) : 128;
        int r = wr_env != NULL && atoi(wr_env) == 32 ? 2 : 1;
        int w = rows / (16 * r);
        if ((w == 4 || w == 8) && w * 16 * r == rows) {
            g_skv_mma_shape128 = g_skv_mma_shape64 = (skv_mma_shape_t){w, r};
        } else {
            SKV_LOG_WARN("SKV_ATTN_MMA_ROWS=%d with %d rows per warp is not built; default kept",
                         rows, 16 * r);
        }
    }
    skv_status_t st = skv_attn_mma_attrs<64>();
    return st == SKV_STATUS_OK ? skv_attn_mma_attrs<128>() : st;
}

int skv_attn_prefill_mma_ok(int32_t head_dim, const skv_tensor_t *q, const skv_tensor_t *out)
{
    /* cp.async moves 16 bytes of Q (8 bf16); the output is written as bf16 pairs. */
    return (head_dim == 64 || head_dim == 128) && q->ld % 8 == 0 && (uintptr_t)q->data % 16 == 0 &&
           out->ld % 2 == 0 && (uintptr_t)out->data % 4 == 0;
}

template <int HD, int W, int R>
static void skv_attn_mma_launch(cudaStream_t stream, const skv_attn_args_t *a, bool fp8,
                                const skv_tensor_t *out, const skv_tensor_t *q, int32_t n_heads,
                                float scale_log2, int32_t max_q)
{
    constexpr int BQ = 16 * W * R;
    dim3 grid((unsigned)n_heads, (unsigned)a->n_seqs, (unsigned)((max_q + BQ - 1) / BQ));
    bf16 *od = (bf16 *)out->data;
    const bf16 *qd = (const bf16 *)q->data;
    if (fp8) {
        skv_attn_prefill_mma_kernel<HD, W, R, skv_fp8_t>
            <<<grid, 32 * W, skv_mma_smem<HD, W * R, 1>::BYTES, stream>>>(
                *a, od, out->ld, qd, q->ld, n_heads, scale_log2);
    } else {
        skv_attn_prefill_mma_kernel<HD, W, R, bf16>
            <<<grid, 32 * W, skv_mma_smem<HD, W * R>::BYTES, stream>>>(*a, od, out->ld, qd, q->ld,
                                                                       n_heads, scale_log2);
    }
}

template <int HD>
static void skv_attn_mma_launch_shape(skv_mma_shape_t sh, cudaStream_t stream,
                                      const skv_attn_args_t *a, bool fp8, const skv_tensor_t *out,
                                      const skv_tensor_t *q, int32_t n_heads, float scale_log2,
                                      int32_t max_q)
{
    if (sh.r == 1) {
        if (sh.w == 4) {
            skv_attn_mma_launch<HD, 4, 1>(stream, a, fp8, out, q, n_heads, scale_log2, max_q);
        } else {
            skv_attn_mma_launch<HD, 8, 1>(stream, a, fp8, out, q, n_heads, scale_log2, max_q);
        }
    } else if (sh.w == 4) {
        skv_attn_mma_launch<HD, 4, 2>(stream, a, fp8, out, q, n_heads, scale_log2, max_q);
    } else {
        skv_attn_mma_launch<HD, 8, 2>(stream, a, fp8, out, q, n_heads, scale_log2, max_q);
    }
}

skv_status_t skv_attn_prefill_mma(cudaStream_t stream, const skv_attn_args_t *a, bool fp8,
                                  const skv_tensor_t *out, const skv_tensor_t *q, int32_t n_heads,
                                  float scale, int32_t max_q)
{
    float scale_log2 = scale * 1.4426950408889634f; /* softmax via exp2 */
    if (a->head_dim == 64) {
        skv_attn_mma_launch_shape<64>(g_skv_mma_shape64, stream, a, fp8, out, q, n_heads,
                                      scale_log2, max_q);
    } else {
        skv_attn_mma_launch_shape<128>(g_skv_mma_shape128, stream, a, fp8, out, q, n_heads,
                                       scale_log2, max_q);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}
