/*
 * ops_common.c: dtype helpers and tensor views shared by every backend and by tools.
 * Host-only code; conversions round to nearest even like PyTorch's.
 */
#include <string.h>

#include "common/log.h"
#include "kernels/ops.h"

static const size_t skv_dtype_sizes[SKV_DTYPE_COUNT_] = {4, 2, 2, 4};
static const char *const skv_dtype_names[SKV_DTYPE_COUNT_] = {"f32", "f16", "bf16", "i32"};

size_t skv_dtype_size(skv_dtype_t dtype)
{
    SKV_ASSERT((unsigned)dtype < SKV_DTYPE_COUNT_);
    return skv_dtype_sizes[dtype];
}

const char *skv_dtype_name(skv_dtype_t dtype)
{
    return (unsigned)dtype < SKV_DTYPE_COUNT_ ? skv_dtype_names[dtype] : "invalid";
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
