/*
 * safetensors.c: mmap + header validation for safetensors files and sharded indexes.
 *
 * Format: 8-byte little-endian header length n, n bytes of JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the data; offsets are relative
 * to the end of the header. Tensors are kept in an array sorted by name for bsearch.
 */
#include "common/model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/json.h"
#include "base/log.h"

typedef struct {
    void *map;
    size_t size;
} skv_st_file_t;

struct skv_st {
    skv_st_file_t *files;
    size_t n_files;
    skv_st_tensor_t *tensors;
    size_t n_tensors;
    size_t cap_tensors;
    char **names; /* owned copies of tensor names */
};

/* Largest header we accept: real 405B shards have headers of a few hundred KB. */
#define SKV_ST_MAX_HEADER (100u * 1024u * 1024u)

static skv_status_t skv_st_map_file(const char *path, skv_st_file_t *f)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        SKV_LOG_ERROR("cannot open %s: %s", path, strerror(errno));
        return errno == ENOENT ? SKV_STATUS_NOT_FOUND : SKV_STATUS_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
        SKV_LOG_ERROR("%s: file too small to be safetensors (%lld bytes)", path,
                      (long long)sb.st_size);
        close(fd);
        return SKV_STATUS_FORMAT;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        SKV_LOG_ERROR("cannot mmap %s: %s", path, strerror(errno));
        return SKV_STATUS_IO;
    }
    f->map = map;
    f->size = (size_t)sb.st_size;
    return SKV_STATUS_OK;
}

static skv_status_t skv_st_parse_dtype(const char *s, skv_dtype_t *dtype_p)
{
    if (strcmp(s, "F32") == 0) {
        *dtype_p = SKV_DTYPE_F32;
    } else if (strcmp(s, "F16") == 0) {
        *dtype_p = SKV_DTYPE_F16;
    } else if (strcmp(s, "BF16") == 0) {
        *dtype_p = SKV_DTYPE_BF16;
    } else {
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_st_push(skv_st_t *st, const skv_st_tensor_t *t)
{
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 256;
        skv_st_tensor_t *nt = skv_realloc(st->tensors, cap * sizeof(*nt));
        if (nt == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        st->tensors = nt;
        char **nn = skv_realloc(st->names, cap * sizeof(*nn));
        if (nn == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        st->names = nn;
        st->cap_tensors = cap;
    }
    char *name = skv_strdup(t->name);
    if (name == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    st->names[st->n_tensors] = name;
    st->tensors[st->n_tensors] = *t;
    st->tensors[st->n_tensors].name = name;
    st->n_tensors++;
    return SKV_STATUS_OK;
}

/* Validates one header entry and fills *t (data pointing into the mapping). */
static skv_status_t skv_st_parse_entry(const char *path, const char *name, json_t *e,
                                       const uint8_t *data, size_t data_bytes, skv_st_tensor_t *t)
{
    json_t *jd = json_object_get(e, "dtype");
    json_t *js = json_object_get(e, "shape");
    json_t *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
        json_array_size(jo) != 2 || json_array_size(js) > SKV_ST_MAX_DIMS) {
        SKV_LOG_ERROR("%s: tensor '%s' has a malformed header entry", path, name);
        return SKV_STATUS_FORMAT;
    }
    memset(t, 0, sizeof(*t));
    t->name = name;
    if (skv_st_parse_dtype(json_string_value(jd), &t->dtype) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("%s: tensor '%s' has dtype %s; only F32, F16 and BF16 are supported",
                      path, name, json_string_value(jd));
        return SKV_STATUS_UNSUPPORTED;
    }
    uint64_t elems = 1;
    t->n_dims = (int32_t)json_array_size(js);
    for (int32_t d = 0; d < t->n_dims; d++) {
        json_t *v = json_array_get(js, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > (1LL << 40)) {
            SKV_LOG_ERROR("%s: tensor '%s' has an invalid shape", path, name);
            return SKV_STATUS_FORMAT;
        }
        t->shape[d] = json_integer_value(v);
        elems *= (uint64_t)t->shape[d];
    }
    json_t *b = json_array_get(jo, 0);
    json_t *en = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b) ||
        (uint64_t)json_integer_value(en) > data_bytes) {
        SKV_LOG_ERROR("%s: tensor '%s' has data offsets outside the file (truncated?)", path,
                      name);
        return SKV_STATUS_FORMAT;
    }
    t->bytes = (size_t)(json_integer_value(en) - json_integer_value(b));
    if (elems > SIZE_MAX / 4 || elems * skv_dtype_size(t->dtype) != t->bytes) {
        SKV_LOG_ERROR("%s: tensor '%s' shape needs %llu elements but its data has %zu bytes",
                      path, name, (unsigned long long)elems, t->bytes);
        return SKV_STATUS_FORMAT;
    }
    t->data = data + json_integer_value(b);
    return SKV_STATUS_OK;
}

/* Maps one file and appends its tensors. */
static skv_status_t skv_st_add_file(skv_st_t *st, const char *path)
{
    skv_st_file_t *f = &st->files[st->n_files];
    SKV_CHECK(skv_st_map_file(path, f));
    st->n_files++;
    uint64_t hlen = 0;
    memcpy(&hlen, f->map, 8); /* little-endian hosts only (x86-64, aarch64) */
    if (hlen == 0 || hlen > SKV_ST_MAX_HEADER || hlen > f->size - 8) {
        SKV_LOG_ERROR("%s: header length %llu does not fit the file of %zu bytes", path,
                      (unsigned long long)hlen, f->size);
        return SKV_STATUS_FORMAT;
    }
    json_error_t err;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(root)) {
        SKV_LOG_ERROR("%s: header is not a JSON object: %s", path, err.text);
        json_decref(root);
        return SKV_STATUS_FORMAT;
    }
    const uint8_t *data = (const uint8_t *)f->map + 8 + hlen;
    size_t data_bytes = f->size - 8 - (size_t)hlen;
    skv_status_t status = SKV_STATUS_OK;
    const char *name;
    json_t *e;
    json_object_foreach(root, name, e)
    {
        if (strcmp(name, "__metadata__") == 0) {
            continue;
        }
        skv_st_tensor_t t;
        if (!json_is_object(e)) {
            SKV_LOG_ERROR("%s: tensor '%s' entry is not an object", path, name);
            status = SKV_STATUS_FORMAT;
            break;
        }
        SKV_CHECK_GOTO(skv_st_parse_entry(path, name, e, data, data_bytes, &t), out);
        SKV_CHECK_GOTO(skv_st_push(st, &t), out);
    }
out:
    json_decref(root);
    return status;
}

static int skv_st_cmp(const void *a, const void *b)
{
    return strcmp(((const skv_st_tensor_t *)a)->name, ((const skv_st_tensor_t *)b)->name);
}

/* Collects the distinct shard file names of an index into a JSON array (new reference). */
static skv_status_t skv_st_index_files(const char *index_path, json_t *index, json_t **files_p)
{
    json_t *map = json_object_get(index, "weight_map");
    if (!json_is_object(map)) {
        SKV_LOG_ERROR("%s: 'weight_map' is missing or not an object", index_path);
        return SKV_STATUS_FORMAT;
    }
    json_t *files = json_array();
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
    {
        const char *fname = json_string_value(v);
        if (fname == NULL || strchr(fname, '/') != NULL || fname[0] == '.') {
            SKV_LOG_ERROR("%s: weight_map entry for '%s' is not a plain file name", index_path,
                          name);
            json_decref(files);
            return SKV_STATUS_FORMAT;
        }
        int seen = 0;
        for (size_t i = 0; i < json_array_size(files); i++) {
            seen |= strcmp(json_string_value(json_array_get(files, i)), fname) == 0;
        }
        if (!seen) {
            json_array_append_new(files, json_string(fname));
        }
    }
    *files_p = files;
    return SKV_STATUS_OK;
}

/* Checks that every index entry names a tensor found in the file it points to. */
static skv_status_t skv_st_check_index(skv_st_t *st, const char *index_path, json_t *index)
{
    json_t *map = json_object_get(index, "weight_map");
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
    {
        if (skv_st_find(st, name) == NULL) {
            SKV_LOG_ERROR("%s: tensor '%s' is listed in the index but missing from %s",
                          index_path, name, json_string_value(v));
            return SKV_STATUS_FORMAT;
        }
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_st_open_files(skv_st_t *st, const char *dir, json_t *files)
{
    st->files = skv_calloc(json_array_size(files), sizeof(*st->files));
    if (st->files == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < json_array_size(files); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, json_string_value(json_array_get(files, i)));
        SKV_CHECK(skv_st_add_file(st, path));
    }
    qsort(st->tensors, st->n_tensors, sizeof(*st->tensors), skv_st_cmp);
    for (size_t i = 1; i < st->n_tensors; i++) {
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            SKV_LOG_ERROR("%s: tensor '%s' appears in more than one shard", dir,
                          st->tensors[i].name);
            return SKV_STATUS_FORMAT;
        }
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_st_open(const char *dir, skv_st_t **st_p)
{
    char index_path[PATH_MAX];
    snprintf(index_path, sizeof(index_path), "%s/model.safetensors.index.json", dir);
    skv_st_t *st = skv_calloc(1, sizeof(*st));
    json_t *index = NULL;
    json_t *files = NULL;
    skv_status_t status = SKV_STATUS_NO_MEMORY;
    if (st == NULL) {
        return status;
    }
    if (access(index_path, F_OK) == 0) {
        SKV_CHECK_GOTO(skv_json_load_file(index_path, &index), fail);
        SKV_CHECK_GOTO(skv_st_index_files(index_path, index, &files), fail);
    } else {
        files = json_array();
        json_array_append_new(files, json_string("model.safetensors"));
    }
    SKV_CHECK_GOTO(skv_st_open_files(st, dir, files), fail);
    if (index != NULL) {
        SKV_CHECK_GOTO(skv_st_check_index(st, index_path, index), fail);
    }
    json_decref(files);
    json_decref(index);
    *st_p = st;
    return SKV_STATUS_OK;
fail:
    json_decref(files);
    json_decref(index);
    skv_st_close(st);
    return status;
}

void skv_st_close(skv_st_t *st)
{
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->n_files; i++) {
        munmap(st->files[i].map, st->files[i].size);
    }
    for (size_t i = 0; i < st->n_tensors; i++) {
        skv_free(st->names[i]);
    }
    skv_free(st->names);
    skv_free(st->tensors);
    skv_free(st->files);
    skv_free(st);
}

skv_st_tensor_t *skv_st_find(skv_st_t *st, const char *name)
{
    skv_st_tensor_t key = {.name = name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof(key), skv_st_cmp);
}

size_t skv_st_count(const skv_st_t *st)
{
    return st->n_tensors;
}

skv_st_tensor_t *skv_st_at(skv_st_t *st, size_t i)
{
    return &st->tensors[i];
}
