/*
 * safetensors.h: read-only, memory-mapped access to HF safetensors checkpoints.
 *
 * A checkpoint is one model.safetensors or shards listed by model.safetensors.index.json.
 * Files are mapped once (MAP_PRIVATE, read-only); tensor data pointers borrow the mapping and
 * stay valid until skv_st_close. Every header is validated before use: offsets inside the
 * file and in order, shapes matching the byte ranges, known dtypes, no duplicate names, the
 * index naming only files that exist. A truncated or malformed file is SKV_STATUS_FORMAT with
 * a message naming the file and tensor; never a crash.
 */
#ifndef SKV_COMMON_SAFETENSORS_H
#define SKV_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/ops.h"

#define SKV_ST_MAX_DIMS 4

typedef struct {
    const char *name;
    skv_dtype_t dtype;
    int32_t n_dims;
    int64_t shape[SKV_ST_MAX_DIMS];
    const void *data; /* borrowed from the mapping */
    size_t bytes;
    int used; /* set by the model loader to detect unexpected extra tensors */
} skv_st_tensor_t;

typedef struct skv_st skv_st_t;

/* Opens every safetensors file of the model folder `dir` (index or single file).
 * On success *st_p owns the mappings. NOT_FOUND when neither file exists; FORMAT on any
 * inconsistency (logged once with the file and tensor name); UNSUPPORTED for a dtype we do
 * not read (only F32, F16, BF16 are accepted). */
skv_status_t skv_st_open(const char *dir, skv_st_t **st_p);

/* Unmaps everything. Tensors borrowed from st become invalid. */
void skv_st_close(skv_st_t *st);

/* Returns the tensor named `name`, or NULL when absent. */
skv_st_tensor_t *skv_st_find(skv_st_t *st, const char *name);

/* Returns the number of tensors and the i-th one (for iteration over unused tensors). */
size_t skv_st_count(const skv_st_t *st);
skv_st_tensor_t *skv_st_at(skv_st_t *st, size_t i);

#endif /* SKV_COMMON_SAFETENSORS_H */
