/*
 * router_validate.h: checks of a public GenerateRequest and its prompt, with messages that
 * name the field, before any worker is involved.
 *
 * Owns nothing beyond the prompt ids it returns. Codes: malformed or out-of-domain fields are
 * INVALID_ARGUMENT; a prompt (plus max_tokens) beyond the model's context is OUT_OF_RANGE.
 * Pure functions of their arguments; any thread.
 */
#ifndef SKV_ROUTER_VALIDATE_H
#define SKV_ROUTER_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "common/request_limits.h"
#include "common/tokenizer/tokenizer.h"
#include "skv/v1/generate.pb-c.h"

#define SKV_ROUTER_MAX_EOS        8
#define SKV_ROUTER_MAX_LOGPROBS   SKV_MAX_LOGPROBS
#define SKV_ROUTER_MAX_STOP_IDS   SKV_MAX_STOP_TOKEN_IDS
#define SKV_ROUTER_MAX_REQUEST_ID 128

/* What the router knows of the model (from a decode worker's ModelInfo). */
typedef struct {
    uint32_t context_length;
    uint32_t vocab_size;
    int32_t eos_ids[SKV_ROUTER_MAX_EOS];
    size_t n_eos;
} skv_router_model_t;

/* A validated prompt: ids owned by the caller (skv_free) and the effective max_tokens (the
 * request's, or what is left of the context when it was 0; always >= 1). */
typedef struct {
    int32_t *ids;
    size_t n_ids;
    uint32_t max_tokens;
} skv_router_prompt_t;

/* Checks sampling, stop criteria, logprobs and request_id (not the input). On error msg holds
 * a sentence naming the field. Returns OK or INVALID_ARGUMENT. */
skv_status_t skv_router_validate_params(const Skv__V1__GenerateRequest *req,
                                        const skv_router_model_t *model, char *msg,
                                        size_t msg_bytes);

/* Encodes text (BOS per the tokenizer's post-processor when add_special; special-token
 * strings in the text stay plain text, as for the engine CLI) into *ids_p / *n_p (skv_free).
 * Returns OK, INVALID_ARGUMENT (msg set), NO_MEMORY. */
skv_status_t skv_router_encode_text(const skv_tokenizer_t *tok, const char *text, int add_special,
                                    int32_t **ids_p, size_t *n_p, char *msg, size_t msg_bytes);

/* Applies the chat format (generation prompt added) and encodes. Returns OK,
 * INVALID_ARGUMENT (no messages, empty role; msg set), UNSUPPORTED (the tokenizer has no chat
 * format), NO_MEMORY. */
skv_status_t skv_router_encode_chat(const skv_tokenizer_t *tok, const Skv__V1__ChatMessages *chat,
                                    int32_t **ids_p, size_t *n_p, char *msg, size_t msg_bytes);

/* Validates the whole request and builds its prompt: params as above, the input (text
 * non-empty, token ids non-empty and within the vocabulary, chat), then the context check.
 * Returns OK (*prompt filled), INVALID_ARGUMENT, OUT_OF_RANGE, UNSUPPORTED, NO_MEMORY; msg
 * set on every error. */
skv_status_t skv_router_validate_request(const Skv__V1__GenerateRequest *req,
                                         const skv_tokenizer_t *tok,
                                         const skv_router_model_t *model,
                                         skv_router_prompt_t *prompt, char *msg, size_t msg_bytes);

#endif /* SKV_ROUTER_VALIDATE_H */
