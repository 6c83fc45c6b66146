/*
 * json.h: small helpers over jansson for reading config files with errors that name the
 * field and the file. Getters return SKV_STATUS_NOT_FOUND for an absent key (so callers can
 * apply defaults) and SKV_STATUS_FORMAT for a present key of the wrong type or range; both
 * log once with the field name. The jansson objects stay owned by the caller.
 */
#ifndef SKV_COMMON_JSON_H
#define SKV_COMMON_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "base/status.h"

/* Parses a JSON file; on success *root_p owns a new reference (json_decref it).
 * Returns NOT_FOUND when the file is missing, FORMAT when it is not valid JSON (logged with
 * line and column). */
skv_status_t skv_json_load_file(const char *path, json_t **root_p);

/* Reads an integer field `key` of `obj` into *out_p; `what` names the file in messages.
 * NOT_FOUND (silent) when absent or null; FORMAT when not an integer. */
skv_status_t skv_json_get_int(const json_t *obj, const char *key, const char *what, int64_t *out_p);

/* Reads a number (integer or real) field into *out_p. NOT_FOUND (silent) / FORMAT. */
skv_status_t skv_json_get_double(const json_t *obj, const char *key, const char *what,
                                 double *out_p);

/* Reads a boolean field into *out_p (0/1). NOT_FOUND (silent) / FORMAT. */
skv_status_t skv_json_get_bool(const json_t *obj, const char *key, const char *what, int *out_p);

/* Borrows a string field into *out_p (valid while obj lives). NOT_FOUND (silent) / FORMAT. */
skv_status_t skv_json_get_str(const json_t *obj, const char *key, const char *what,
                              const char **out_p);

/* Like skv_json_get_int but a missing field is an error (logged, NOT_FOUND). */
skv_status_t skv_json_require_int(const json_t *obj, const char *key, const char *what,
                                  int64_t *out_p);

#endif /* SKV_COMMON_JSON_H */
