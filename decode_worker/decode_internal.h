/*
 * decode_internal.h: what the decode role's files share (decode.c: reservations, KV admission
 * and the role table; stream.c: streamed answers of Worker.Generate and Decode.Decode). Not a
 * public header: the serving core reaches the role only through skv_decode_role (decode.h).
 */
#ifndef SKV_DECODE_WORKER_DECODE_INTERNAL_H
#define SKV_DECODE_WORKER_DECODE_INTERNAL_H

#include "common/serve/worker_internal.h"

/* stream.c */
skv_status_t skv_worker_stream_submit(skv_worker_t *w, skv_wreq_t *r, skv_request_desc_t *d,
                                      const char **why);
void skv_worker_stream_flush(skv_worker_t *w, skv_wreq_t *r);
void skv_worker_stream_fail(skv_worker_t *w, skv_wreq_t *r, skv_status_t st, const char *why);
skv_status_t skv_worker_stop_from_msg(const skv_worker_t *w, const Skv__V1__StopCriteria *m,
                                      int32_t n_prompt, skv_request_desc_t *d, const char **why);
void skv_worker_start_generate(skv_worker_t *w, skv_wreq_t *r);
extern const skv_request_cbs_t skv_worker_stream_cbs;

#endif /* SKV_DECODE_WORKER_DECODE_INTERNAL_H */
