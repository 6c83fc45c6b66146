/*
 * json.c: jansson helpers with field-naming errors.
 */
#include "base/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

skv_status_t skv_json_load_file(const char *path, json_t **root_p)
{
    if (access(path, R_OK) != 0) {
        SKV_LOG_ERROR("cannot read %s: %s", path, strerror(errno));
        return SKV_STATUS_NOT_FOUND;
    }
    json_error_t err;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        SKV_LOG_ERROR("%s: invalid JSON at line %d column %d: %s", path, err.line, err.column,
                      err.text);
        return SKV_STATUS_FORMAT;
    }
    *root_p = root;
    return SKV_STATUS_OK;
}

/* Returns the member or NULL when absent or JSON null. */
static json_t *skv_json_member(const json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return (v == NULL || json_is_null(v)) ? NULL : v;
}

skv_status_t skv_json_get_int(const json_t *obj, const char *key, const char *what, int64_t *out_p)
{
    json_t *v = skv_json_member(obj, key);
    if (v == NULL) {
        return SKV_STATUS_NOT_FOUND;
    }
    if (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v)) {
        *out_p = (int64_t)json_real_value(v); /* 1.0 written by some tools for an int */
        return SKV_STATUS_OK;
    }
    if (!json_is_integer(v)) {
        SKV_LOG_ERROR("%s: field '%s' must be an integer", what, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = json_integer_value(v);
    return SKV_STATUS_OK;
}

skv_status_t skv_json_get_double(const json_t *obj, const char *key, const char *what,
                                 double *out_p)
{
    json_t *v = skv_json_member(obj, key);
    if (v == NULL) {
        return SKV_STATUS_NOT_FOUND;
    }
    if (!json_is_number(v)) {
        SKV_LOG_ERROR("%s: field '%s' must be a number", what, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = json_number_value(v);
    return SKV_STATUS_OK;
}

skv_status_t skv_json_get_bool(const json_t *obj, const char *key, const char *what, int *out_p)
{
    json_t *v = skv_json_member(obj, key);
    if (v == NULL) {
        return SKV_STATUS_NOT_FOUND;
    }
    if (!json_is_boolean(v)) {
        SKV_LOG_ERROR("%s: field '%s' must be true or false", what, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = json_is_true(v);
    return SKV_STATUS_OK;
}

skv_status_t skv_json_get_str(const json_t *obj, const char *key, const char *what,
                              const char **out_p)
{
    json_t *v = skv_json_member(obj, key);
    if (v == NULL) {
        return SKV_STATUS_NOT_FOUND;
    }
    if (!json_is_string(v)) {
        SKV_LOG_ERROR("%s: field '%s' must be a string", what, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = json_string_value(v);
    return SKV_STATUS_OK;
}

skv_status_t skv_json_require_int(const json_t *obj, const char *key, const char *what,
                                  int64_t *out_p)
{
    skv_status_t status = skv_json_get_int(obj, key, what, out_p);
    if (status == SKV_STATUS_NOT_FOUND) {
        SKV_LOG_ERROR("%s: required field '%s' is missing", what, key);
    }
    return status;
}
