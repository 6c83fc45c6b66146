/*
 * router_validate.c: request checks with field-naming messages (see router_validate.h).
 *
 * Ranges: temperature >= 0; top_k >= 0; top_p, min_p in [0, 1]; presence and frequency
 * penalties in [-2, 2] (the OpenAI range); repetition_penalty >= 0 (0 and 1 are off); every
 * float finite. Stop strings: at most SKV_STOP_MAX_STRINGS, each 1..SKV_STOP_MAX_BYTES bytes.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "router/router_stop.h"
#include "router/router_validate.h"

/* Writes a message and returns INVALID_ARGUMENT. */
static skv_status_t __attribute__((format(printf, 3, 4)))
skv_router_bad(char *msg, size_t msg_bytes, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msg_bytes, fmt, ap);
    va_end(ap);
    return SKV_STATUS_INVALID_ARGUMENT;
}

/* Checks lo <= v <= hi and finiteness of a float field. */
static skv_status_t skv_router_check_float(const char *field, float v, float lo, float hi,
                                           char *msg, size_t msg_bytes)
{
    if (!isfinite(v) || v < lo || v > hi) {
        return skv_router_bad(msg, msg_bytes, "%s must be in [%g, %g], got %g", field, lo, hi,
                              (double)v);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_router_check_sampling(const Skv__V1__SamplingParams *s, char *msg,
                                              size_t msg_bytes)
{
    if (s == NULL) {
        return SKV_STATUS_OK;
    }
    SKV_CHECK(skv_router_check_float("sampling.temperature", s->temperature, 0.0f, INFINITY, msg,
                                     msg_bytes));
    if (s->top_k < 0) {
        return skv_router_bad(msg, msg_bytes, "sampling.top_k must be >= 0, got %d", s->top_k);
    }
    SKV_CHECK(skv_router_check_float("sampling.top_p", s->top_p, 0.0f, 1.0f, msg, msg_bytes));
    SKV_CHECK(skv_router_check_float("sampling.min_p", s->min_p, 0.0f, 1.0f, msg, msg_bytes));
    SKV_CHECK(skv_router_check_float("sampling.presence_penalty", s->presence_penalty, -2.0f, 2.0f,
                                     msg, msg_bytes));
    SKV_CHECK(skv_router_check_float("sampling.frequency_penalty", s->frequency_penalty, -2.0f,
                                     2.0f, msg, msg_bytes));
    return skv_router_check_float("sampling.repetition_penalty", s->repetition_penalty, 0.0f,
                                  INFINITY, msg, msg_bytes);
}

static skv_status_t skv_router_check_stop(const Skv__V1__StopCriteria *s,
                                          const skv_router_model_t *model, char *msg,
                                          size_t msg_bytes)
{
    if (s == NULL) {
        return SKV_STATUS_OK;
    }
    if (s->n_stop > SKV_STOP_MAX_STRINGS) {
        return skv_router_bad(msg, msg_bytes, "stop.stop has %zu strings; at most %d", s->n_stop,
                              SKV_STOP_MAX_STRINGS);
    }
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t n = strlen(s->stop[i]);
        if (n == 0 || n > SKV_STOP_MAX_BYTES) {
            return skv_router_bad(msg, msg_bytes, "stop.stop[%zu] must be 1..%d bytes, got %zu", i,
                                  SKV_STOP_MAX_BYTES, n);
        }
    }
    if (s->n_stop_token_ids > SKV_ROUTER_MAX_STOP_IDS) {
        return skv_router_bad(msg, msg_bytes, "stop.stop_token_ids has %zu ids; at most %d",
                              s->n_stop_token_ids, SKV_ROUTER_MAX_STOP_IDS);
    }
    for (size_t i = 0; i < s->n_stop_token_ids; i++) {
        int32_t id = s->stop_token_ids[i];
        if (id < 0 || (uint32_t)id >= model->vocab_size) {
            return skv_router_bad(msg, msg_bytes,
                                  "stop.stop_token_ids[%zu] = %d is outside the vocabulary [0, %u)",
                                  i, id, model->vocab_size);
        }
    }
    if (s->max_tokens > 0 && s->min_tokens > s->max_tokens) {
        return skv_router_bad(msg, msg_bytes, "stop.min_tokens (%u) exceeds stop.max_tokens (%u)",
                              s->min_tokens, s->max_tokens);
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_router_validate_params(const Skv__V1__GenerateRequest *req,
                                        const skv_router_model_t *model, char *msg,
                                        size_t msg_bytes)
{
    if (strlen(req->request_id) > SKV_ROUTER_MAX_REQUEST_ID) {
        return skv_router_bad(msg, msg_bytes, "request_id is longer than %d bytes",
                              SKV_ROUTER_MAX_REQUEST_ID);
    }
    if (req->logprobs > SKV_ROUTER_MAX_LOGPROBS) {
        return skv_router_bad(msg, msg_bytes, "logprobs must be at most %d, got %u",
                              SKV_ROUTER_MAX_LOGPROBS, req->logprobs);
    }
    SKV_CHECK(skv_router_check_sampling(req->sampling, msg, msg_bytes));
    return skv_router_check_stop(req->stop, model, msg, msg_bytes);
}

skv_status_t skv_router_encode_text(const skv_tokenizer_t *tok, const char *text, int add_special,
                                    int32_t **ids_p, size_t *n_p, char *msg, size_t msg_bytes)
{
    unsigned flags = add_special ? SKV_TOKENIZER_ENCODE_ADD_BOS : 0;
    skv_status_t st = skv_tokenizer_encode(tok, text, strlen(text), flags, ids_p, n_p);
    if (st == SKV_STATUS_INVALID_ARGUMENT) {
        return skv_router_bad(msg, msg_bytes, "text is not valid UTF-8");
    }
    if (st != SKV_STATUS_OK) {
        snprintf(msg, msg_bytes, "tokenizing the text failed: %s", skv_status_str(st));
    }
    return st;
}

skv_status_t skv_router_encode_chat(const skv_tokenizer_t *tok, const Skv__V1__ChatMessages *chat,
                                    int32_t **ids_p, size_t *n_p, char *msg, size_t msg_bytes)
{
    if (chat == NULL || chat->n_messages == 0) {
        return skv_router_bad(msg, msg_bytes, "chat.messages is empty");
    }
    skv_chat_msg_t *msgs = skv_calloc(chat->n_messages, sizeof(*msgs));
    if (msgs == NULL) {
        snprintf(msg, msg_bytes, "no memory for %zu chat messages", chat->n_messages);
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t st = SKV_STATUS_OK;
    for (size_t i = 0; i < chat->n_messages && st == SKV_STATUS_OK; i++) {
        msgs[i].role = chat->messages[i]->role;
        msgs[i].content = chat->messages[i]->content;
        if (msgs[i].role[0] == '\0') {
            st = skv_router_bad(msg, msg_bytes, "chat.messages[%zu].role is empty", i);
        }
    }
    if (st == SKV_STATUS_OK) {
        st = skv_tokenizer_chat_encode(tok, msgs, chat->n_messages, 1, ids_p, n_p);
        if (st == SKV_STATUS_UNSUPPORTED) {
            snprintf(msg, msg_bytes, "chat: the model's tokenizer has no supported chat format");
        } else if (st != SKV_STATUS_OK) {
            snprintf(msg, msg_bytes, "chat: encoding failed: %s", skv_status_str(st));
        }
    }
    skv_free(msgs);
    return st;
}

/* Copies and range-checks the token_ids input. */
static skv_status_t skv_router_input_ids(const Skv__V1__TokenIds *t,
                                         const skv_router_model_t *model, int32_t **ids_p,
                                         size_t *n_p, char *msg, size_t msg_bytes)
{
    if (t == NULL || t->n_ids == 0) {
        return skv_router_bad(msg, msg_bytes, "token_ids is empty");
    }
    for (size_t i = 0; i < t->n_ids; i++) {
        if (t->ids[i] < 0 || (uint32_t)t->ids[i] >= model->vocab_size) {
            return skv_router_bad(msg, msg_bytes,
                                  "token_ids.ids[%zu] = %d is outside the vocabulary [0, %u)", i,
                                  t->ids[i], model->vocab_size);
        }
    }
    int32_t *ids = skv_mallocn(t->n_ids, sizeof(*ids));
    if (ids == NULL) {
        snprintf(msg, msg_bytes, "no memory for %zu token ids", t->n_ids);
        return SKV_STATUS_NO_MEMORY;
    }
    memcpy(ids, t->ids, t->n_ids * sizeof(*ids));
    *ids_p = ids;
    *n_p = t->n_ids;
    return SKV_STATUS_OK;
}

/* Tokenizes or copies the input into ids. */
static skv_status_t skv_router_input(const Skv__V1__GenerateRequest *req,
                                     const skv_tokenizer_t *tok, const skv_router_model_t *model,
                                     int32_t **ids_p, size_t *n_p, char *msg, size_t msg_bytes)
{
    switch (req->input_case) {
    case SKV__V1__GENERATE_REQUEST__INPUT_TEXT:
        if (req->text[0] == '\0') {
            return skv_router_bad(msg, msg_bytes, "text is empty");
        }
        return skv_router_encode_text(tok, req->text, 1, ids_p, n_p, msg, msg_bytes);
    case SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS:
        return skv_router_input_ids(req->token_ids, model, ids_p, n_p, msg, msg_bytes);
    case SKV__V1__GENERATE_REQUEST__INPUT_CHAT:
        return skv_router_encode_chat(tok, req->chat, ids_p, n_p, msg, msg_bytes);
    default:
        return skv_router_bad(msg, msg_bytes, "input: one of text, token_ids, chat is required");
    }
}

/* Checks prompt (+ max_tokens) against the context; sets the effective max_tokens. */
static skv_status_t skv_router_check_context(size_t n_prompt, uint32_t max_tokens,
                                             const skv_router_model_t *model, uint32_t *eff_p,
                                             char *msg, size_t msg_bytes)
{
    uint64_t ctx = model->context_length;
    if (n_prompt >= ctx) {
        snprintf(msg, msg_bytes, "the prompt has %zu tokens; the model's context length is %u",
                 n_prompt, model->context_length);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    if (!skv_request_fits_context((int64_t)n_prompt, max_tokens, (int64_t)ctx)) {
        snprintf(msg, msg_bytes,
                 "the prompt (%zu tokens) + stop.max_tokens (%u) exceeds the context length %u",
                 n_prompt, max_tokens, model->context_length);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    *eff_p = max_tokens > 0 ? max_tokens : (uint32_t)(ctx - n_prompt);
    return SKV_STATUS_OK;
}

skv_status_t skv_router_validate_request(const Skv__V1__GenerateRequest *req,
                                         const skv_tokenizer_t *tok,
                                         const skv_router_model_t *model,
                                         skv_router_prompt_t *prompt, char *msg, size_t msg_bytes)
{
    int32_t *ids = NULL;
    size_t n = 0;
    uint32_t eff = 0;
    SKV_CHECK(skv_router_validate_params(req, model, msg, msg_bytes));
    SKV_CHECK(skv_router_input(req, tok, model, &ids, &n, msg, msg_bytes));
    uint32_t max_tokens = req->stop != NULL ? req->stop->max_tokens : 0;
    skv_status_t st = skv_router_check_context(n, max_tokens, model, &eff, msg, msg_bytes);
    if (st == SKV_STATUS_OK && req->stop != NULL && req->stop->min_tokens > eff) {
        st = skv_router_bad(msg, msg_bytes,
                            "stop.min_tokens (%u) exceeds the %u tokens left in the context",
                            req->stop->min_tokens, eff);
    }
    if (st != SKV_STATUS_OK) {
        skv_free(ids);
        return st;
    }
    prompt->ids = ids;
    prompt->n_ids = n;
    prompt->max_tokens = eff;
    return SKV_STATUS_OK;
}
