/*
 * ops_common.c: dtype helpers and tensor views shared by every backend and by tools.
 * Host-only code; conversions round to nearest even like PyTorch's (fp8 E4M3 saturates
 * instead of overflowing, like CUDA's __NV_SATFINITE conversion).
 */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "kernels/ops.h"

static const size_t skv_dtype_sizes[SKV_DTYPE_COUNT_] = {4, 2, 2, 4, 1};
static const char *const skv_dtype_names[SKV_DTYPE_COUNT_] = {"f32", "f16", "bf16", "i32",
                                                              "f8e4m3"};

size_t skv_dtype_size(skv_dtype_t dtype)
{
    SKV_ASSERT((unsigned)dtype < SKV_DTYPE_COUNT_);
    return skv_dtype_sizes[dtype];
}

const char *skv_dtype_name(skv_dtype_t dtype)
{
    return (unsigned)dtype < SKV_DTYPE_COUNT_ ? skv_dtype_names[dtype] : "invalid";
}

/* Writes the names of the dtypes in mask ("f32, f8e4m3") into buf. */
static void skv_dtype_mask_names(uint32_t mask, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int d = 0; d < SKV_DTYPE_COUNT_ && n < cap; d++) {
        if (mask & (1u << d)) {
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", skv_dtype_names[d]);
        }
    }
}

skv_status_t skv_kv_dtype_resolve(const skv_ops_t *ops, const char *name, skv_dtype_t *dtype_p)
{
    char accepted[64];
    skv_dtype_mask_names(ops->kv_dtypes, accepted, sizeof(accepted));
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0) {
        *dtype_p = ops->kv_dtype;
        return SKV_STATUS_OK;
    }
    int found = strcmp(name, "fp8") == 0 ? SKV_DTYPE_F8E4M3 : -1;
    for (int d = 0; d < SKV_DTYPE_COUNT_ && found < 0; d++) {
        found = strcmp(name, skv_dtype_names[d]) == 0 ? d : -1;
    }
    if (found < 0) {
        SKV_LOG_ERROR("KV cache dtype '%s' is not a dtype: use auto, fp8 or one of %s", name,
                      accepted);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if ((ops->kv_dtypes & (1u << found)) == 0) {
        SKV_LOG_ERROR("KV cache dtype %s is not supported by the %s backend (it accepts %s)",
                      skv_dtype_names[found], ops->name, accepted);
        return SKV_STATUS_UNSUPPORTED;
    }
    *dtype_p = (skv_dtype_t)found;
    return SKV_STATUS_OK;
}

skv_tensor_t skv_tensor_make(void *data, skv_dtype_t dtype, int64_t rows, int64_t cols)
{
    skv_tensor_t t = {data, dtype, rows, cols, cols};
    return t;
}

skv_tensor_t skv_tensor_rows(const skv_tensor_t *t, int64_t row0, int64_t n)
{
    SKV_ASSERT(row0 >= 0 && n >= 0 && row0 + n <= t->rows);
    skv_tensor_t v = *t;
    v.data = (char *)t->data + (size_t)(row0 * t->ld) * skv_dtype_size(t->dtype);
    v.rows = n;
    return v;
}

skv_tensor_t skv_tensor_cols(const skv_tensor_t *t, int64_t col0, int64_t n)
{
    SKV_ASSERT(col0 >= 0 && n >= 0 && col0 + n <= t->cols);
    skv_tensor_t v = *t;
    v.data = (char *)t->data + (size_t)col0 * skv_dtype_size(t->dtype);
    v.cols = n;
    return v;
}

float skv_bf16_to_f32(uint16_t v)
{
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t skv_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    }
    bits += 0x7fffu + ((bits >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(bits >> 16);
}

float skv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t skv_f32_to_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t sign = (bits >> 16) & 0x8000u;
    int32_t exp = (int32_t)((bits >> 23) & 0xff) - 127 + 15;
    uint32_t mant = bits & 0x7fffffu;
    if (((bits >> 23) & 0xff) == 0xff) {
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    }
    if (exp >= 31) {
        return (uint16_t)(sign | 0x7c00u);
    }
    if (exp <= 0) {
        if (exp < -10) {
            return (uint16_t)sign;
        }
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) {
            half++;
        }
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) {
        half++; /* may carry into the exponent, which is the correct rounding */
    }
    return (uint16_t)half;
}

float skv_f8e4m3_to_f32(uint8_t v)
{
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t exp = (v >> 3) & 0xfu;
    uint32_t mant = v & 0x7u;
    uint32_t bits;
    if (exp == 0xfu && mant == 0x7u) {
        bits = sign | 0x7fc00000u; /* the format's only NaN code (no infinities) */
    } else if (exp == 0) {
        float f = (float)mant * 0.001953125f; /* subnormal: mant * 2^-9, exact */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else {
        bits = sign | ((exp + 127 - 7) << 23) | (mant << 20);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint8_t skv_f32_to_f8e4m3(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) {
        return sign | 0x7fu; /* NaN */
    }
    if (abs >= 0x43e00000u) { /* >= 448 (infinity included): saturate to the largest finite */
        return sign | 0x7eu;
    }
    uint32_t e = abs >> 23;
    if (e >= 127 - 6) { /* normal in E4M3 (>= 2^-6): keep 3 of 23 mantissa bits, RNE */
        uint32_t r = (abs + 0x7ffffu + ((abs >> 20) & 1u)) >> 20; /* may carry into exp */
        return sign | (uint8_t)(r - ((127u - 7u) << 3));          /* < 448 stays <= 0x7e */
    }
    /* Subnormal in E4M3: the nearest multiple of 2^-9 (8 of them reach the smallest normal,
     * whose code 0x08 follows 0x07). The value is m * 2^(e - 150) with the implicit bit in m,
     * that is m >> shift units of 2^-9 with shift = 141 - e (>= 21). */
    if (e == 0) {
        return sign; /* f32 subnormals are far below half of 2^-9 */
    }
    uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 141u - e;
    if (shift > 24) {
        return sign; /* below 2^-10 (half the smallest subnormal): rounds to zero */
    }
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) {
        q++;
    }
    return sign | (uint8_t)q;
}
