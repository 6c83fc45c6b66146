/*
 * cuda_kv.h: element access to the paged KV pool for the CUDA write and attention kernels.
 *
 * A pool holds bf16 (SKV_DTYPE_BF16) or fp8 E4M3 (SKV_DTYPE_F8E4M3, unscaled) elements; the
 * kernels that touch it are templated on the element type KT (bf16 or skv_fp8_t) and go
 * through these helpers: widen N consecutive elements to floats (exact for both types), or
 * narrow bf16 / floats into the pool (fp8: round to nearest even, saturating to +-448, as
 * skv_f32_to_f8e4m3 on the host). Included only by the .cu files of kernels/cuda, after
 * cuda_internal.h.
 */
#ifndef SKV_KERNELS_CUDA_KV_H
#define SKV_KERNELS_CUDA_KV_H

#include <cuda_fp8.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"

typedef __nv_fp8_storage_t skv_fp8_t; /* one E4M3 byte */

/* Whether the CUDA kernels take a pool of this dtype. */
static inline bool skv_cuda_kv_dtype_ok(skv_dtype_t d)
{
    return d == SKV_DTYPE_BF16 || d == SKV_DTYPE_F8E4M3;
}

/* Loads BYTES bytes at p (aligned to min(BYTES, 16)) into words w[max(BYTES / 4, 1)] through
 * the read-only path; a 2-byte load fills the low half of w[0]. */
template <int BYTES> static __device__ __forceinline__ void skv_kv_ldg(const void *p, uint32_t *w)
{
    if (BYTES >= 16) {
#pragma unroll
        for (int i = 0; i < BYTES / 16; i++) {
            uint4 u = __ldg((const uint4 *)p + i);
            w[4 * i] = u.x, w[4 * i + 1] = u.y, w[4 * i + 2] = u.z, w[4 * i + 3] = u.w;
        }
    } else if (BYTES == 8) {
        uint2 u = __ldg((const uint2 *)p);
        w[0] = u.x, w[1] = u.y;
    } else if (BYTES == 4) {
        w[0] = __ldg((const unsigned int *)p);
    } else {
        w[0] = __ldg((const unsigned short *)p);
    }
}

/* Widens N elements of type KT held in words w (as skv_kv_ldg leaves them) to f[N]. */
template <typename KT, int N>
static __device__ __forceinline__ void skv_kv_widen_words(const uint32_t *w, float *f)
{
#pragma unroll
    for (int i = 0; i < N / 2; i++) {
        float2 t;
        if (sizeof(KT) == 2) {
            uint32_t x = w[i];
            t = __bfloat1622float2(*(const __nv_bfloat162 *)&x);
        } else {
            __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
                (__nv_fp8x2_storage_t)(w[i / 2] >> (16 * (i % 2))), __NV_E4M3);
            t = __half22float2(*(const __half2 *)&h);
        }
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

/* f[N] = the N elements at p (N even; p aligned to min(N * sizeof(KT), 16) bytes). */
template <typename KT, int N>
static __device__ __forceinline__ void skv_kv_load(const KT *p, float *f)
{
    constexpr int BYTES = N * (int)sizeof(KT);
    uint32_t w[BYTES / 4 > 0 ? BYTES / 4 : 1];
    skv_kv_ldg<BYTES>(p, w);
    skv_kv_widen_words<KT, N>(w, f);
}

/* dst[0..8) = the 8 bf16 of u (dst aligned to 8 * sizeof(KT) bytes). */
template <typename KT> static __device__ __forceinline__ void skv_kv_put8(KT *dst, const uint4 &u)
{
    if (sizeof(KT) == 2) {
        *(uint4 *)dst = u;
    } else {
        const __nv_bfloat162_raw *b = (const __nv_bfloat162_raw *)&u;
        uint32_t lo = __nv_cvt_bfloat16raw2_to_fp8x2(b[0], __NV_SATFINITE, __NV_E4M3) |
                      (uint32_t)__nv_cvt_bfloat16raw2_to_fp8x2(b[1], __NV_SATFINITE, __NV_E4M3)
                          << 16;
        uint32_t hi = __nv_cvt_bfloat16raw2_to_fp8x2(b[2], __NV_SATFINITE, __NV_E4M3) |
                      (uint32_t)__nv_cvt_bfloat16raw2_to_fp8x2(b[3], __NV_SATFINITE, __NV_E4M3)
                          << 16;
        *(uint2 *)dst = make_uint2(lo, hi);
    }
}

/* dst[0..8) = f[0..8) rounded once to KT (bf16: as __floats2bfloat162_rn). */
template <typename KT> static __device__ __forceinline__ void skv_kv_put8f(KT *dst, const float *f)
{
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 p = make_float2(f[2 * i], f[2 * i + 1]);
        if (sizeof(KT) == 2) {
            __nv_bfloat162 b = __float22bfloat162_rn(p);
            w[i] = *(const uint32_t *)&b;
        } else {
            w[i] = __nv_cvt_float2_to_fp8x2(p, __NV_SATFINITE, __NV_E4M3);
        }
    }
    if (sizeof(KT) == 2) {
        *(uint4 *)dst = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
        *(uint2 *)dst = make_uint2(w[0] | w[1] << 16, w[2] | w[3] << 16);
    }
}

/* *dst = f rounded once to KT. */
template <typename KT> static __device__ __forceinline__ void skv_kv_put1f(KT *dst, float f)
{
    if (sizeof(KT) == 2) {
        *(__nv_bfloat16 *)dst = __float2bfloat16(f);
    } else {
        *(skv_fp8_t *)dst = __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
    }
}

/* *dst = v. */
template <typename KT> static __device__ __forceinline__ void skv_kv_put1(KT *dst, __nv_bfloat16 v)
{
    if (sizeof(KT) == 2) {
        *(__nv_bfloat16 *)dst = v;
    } else {
        *(skv_fp8_t *)dst =
            __nv_cvt_bfloat16raw_to_fp8(*(const __nv_bfloat16_raw *)&v, __NV_SATFINITE, __NV_E4M3);
    }
}

#endif /* SKV_KERNELS_CUDA_KV_H */
