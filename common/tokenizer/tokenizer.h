/*
 * tokenizer.h: byte-level BPE tokenizer that reads a Hugging Face tokenizer.json (Llama-3 and
 * GPT-2 style) and gives the same ids as HF `tokenizers` for the same text.
 *
 * Owns: the vocabulary, merge ranks, added (special) tokens, the pre-tokenizer regexes (PCRE2,
 * UTF + UCP, JIT when available), the post-processor template (BOS) and the chat format.
 * Supported tokenizer.json: normalizer null; pre_tokenizer ByteLevel, or Sequence of Split
 * (Regex/String, behavior Isolated) followed by one ByteLevel; model BPE (no dropout, no
 * byte_fallback, no subword prefix/suffix); decoder ByteLevel; post_processor null, ByteLevel,
 * TemplateProcessing or a Sequence of those. Anything else fails to load with
 * SKV_STATUS_UNSUPPORTED naming the field; a malformed file fails with SKV_STATUS_FORMAT.
 *
 * Invalid UTF-8 policy: encode rejects text that is not valid UTF-8 (overlong forms, surrogates,
 * truncated sequences, bytes F5..FF) with SKV_STATUS_INVALID_ARGUMENT; it never guesses.
 * Decoding is lossy exactly like HF (Rust String::from_utf8_lossy / Python
 * bytes.decode("utf-8", "replace")): each maximal invalid subpart becomes U+FFFD.
 *
 * Threads: a loaded tokenizer is immutable; every function taking a const tokenizer may be
 * called from any number of threads at once. A skv_detok_t belongs to one thread at a time.
 */
#ifndef SKV_COMMON_TOKENIZER_H
#define SKV_COMMON_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct skv_tokenizer skv_tokenizer_t;

/* Encode flags. */
enum {
    /* Apply the post-processor template's tokens around the text (Llama-3: BOS in front).
     * Same as HF encode(..., add_special_tokens=True). */
    SKV_TOKENIZER_ENCODE_ADD_BOS = 1u << 0,
    /* Turn special added-token strings found in the text ("<|eot_id|>") into their ids. Off:
     * they are encoded as plain text (HF `encode_special_tokens = True`), which is what
     * untrusted user text needs. Non-special added tokens are always matched, as in HF. */
    SKV_TOKENIZER_ENCODE_PARSE_SPECIAL = 1u << 1,
};

/* Decode flags. */
enum {
    /* Drop special added tokens (HF skip_special_tokens). */
    SKV_TOKENIZER_DECODE_SKIP_SPECIAL = 1u << 0,
};

/* Loads a tokenizer from a model directory (reads tokenizer.json and, when present,
 * tokenizer_config.json) or from a tokenizer.json path (tokenizer_config.json is then looked for
 * beside it). On success *tok_p owns a new tokenizer (skv_tokenizer_destroy). Returns NOT_FOUND
 * (no tokenizer.json), FORMAT (malformed JSON or a field of the wrong type, logged with the
 * field), UNSUPPORTED (a feature this loader does not implement, logged with the field),
 * NO_MEMORY. Any thread. */
skv_status_t skv_tokenizer_load(const char *model_dir_or_file, skv_tokenizer_t **tok_p);

/* Same as skv_tokenizer_load, from tokenizer.json text in memory (len bytes) and an optional
 * tokenizer_config.json text (config may be NULL). Borrows both buffers. Any thread. */
skv_status_t skv_tokenizer_load_mem(const char *json, size_t len, const char *config,
                                    size_t config_len, skv_tokenizer_t **tok_p);

/* Frees a tokenizer; NULL is a no-op. No other thread may be using it. */
void skv_tokenizer_destroy(skv_tokenizer_t *tok);

/* Encodes len bytes of UTF-8 text (NUL bytes allowed) into token ids. flags: ENCODE_*. On
 * success *ids_p is a new array of *n_p ids owned by the caller (skv_free; non-NULL even when
 * *n_p is 0). Returns INVALID_ARGUMENT for invalid UTF-8 (see the policy above), NO_MEMORY,
 * INTERNAL when PCRE2 fails to match (logged). Any thread. */
skv_status_t skv_tokenizer_encode(const skv_tokenizer_t *tok, const char *text, size_t len,
                                  unsigned flags, int32_t **ids_p, size_t *n_p);

/* Decodes n ids into UTF-8 text. flags: DECODE_*. On success *text_p is a new NUL-terminated
 * string of *len_p bytes owned by the caller (skv_free). Invalid UTF-8 produced by the byte
 * tokens becomes U+FFFD as in HF. Returns INVALID_ARGUMENT for an id outside the vocabulary
 * (HF silently drops it; a server should hear about it), NO_MEMORY. Any thread. */
skv_status_t skv_tokenizer_decode(const skv_tokenizer_t *tok, const int32_t *ids, size_t n,
                                  unsigned flags, char **text_p, size_t *len_p);

/* Number of ids: one more than the largest id of the vocabulary and added tokens. Any thread. */
size_t skv_tokenizer_n_vocab(const skv_tokenizer_t *tok);

/* Looks up the id of a token by its tokenizer.json spelling ("<|eot_id|>", "Ġthe"); added
 * tokens first, then the vocabulary. Returns NOT_FOUND (silent) when absent. Any thread. */
skv_status_t skv_tokenizer_token_id(const skv_tokenizer_t *tok, const char *token, int32_t *id_p);

/* Beginning/end of sequence ids from tokenizer_config.json (bos_token / eos_token); the BOS
 * falls back to the post-processor's first template token. -1 when unknown. Any thread. */
int32_t skv_tokenizer_bos_id(const skv_tokenizer_t *tok);
int32_t skv_tokenizer_eos_id(const skv_tokenizer_t *tok);

/* Returns non-zero when id is a special added token (e.g. to stop on <|eot_id|>). Any thread. */
int skv_tokenizer_is_special(const skv_tokenizer_t *tok, int32_t id);

/* ---- Chat format ---------------------------------------------------------------------- */

/* One chat message; both strings are borrowed, NUL-terminated UTF-8. */
typedef struct {
    const char *role;    /* "system", "user", "assistant" (any role is passed through) */
    const char *content; /* trimmed of surrounding white space, as the Llama-3 template does */
} skv_chat_msg_t;

/* Renders messages with the model's chat format into text, as the Jinja template in
 * tokenizer_config.json would (Llama-3: per message
 * "<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>" with BOS before the first,
 * then the assistant header when add_generation_prompt). *text_p: new NUL-terminated string of *len_p bytes (skv_free).
 * Returns UNSUPPORTED when the tokenizer has no chat_template or one that is not recognised as
 * Llama-3 (logged once at load), INVALID_ARGUMENT for a NULL role/content or invalid UTF-8,
 * NO_MEMORY. Any thread. */
skv_status_t skv_tokenizer_chat_render(const skv_tokenizer_t *tok, const skv_chat_msg_t *msgs,
                                       size_t n_msgs, int add_generation_prompt, char **text_p,
                                       size_t *len_p);

/* Renders and encodes messages into ids in one step. The format's markers become their special
 * ids while roles and contents are encoded with special-token parsing OFF, so a user cannot
 * inject "<|eot_id|>"; for contents without such strings the ids equal
 * encode(render(msgs), PARSE_SPECIAL) (what HF apply_chat_template gives). Ownership and
 * returns as skv_tokenizer_encode plus those of skv_tokenizer_chat_render. Any thread. */
skv_status_t skv_tokenizer_chat_encode(const skv_tokenizer_t *tok, const skv_chat_msg_t *msgs,
                                       size_t n_msgs, int add_generation_prompt, int32_t **ids_p,
                                       size_t *n_p);

/* ---- Streaming detokenizer ------------------------------------------------------------ */

/* Turns a stream of ids into UTF-8 text pieces. A token may end in the middle of a UTF-8
 * character (byte-level pieces only make sense with their neighbours); such bytes are held
 * until the character completes, so every piece returned is whole, valid UTF-8. The
 * concatenation of all pieces plus the flush equals skv_tokenizer_decode of all ids.
 * Lives in caller storage: skv_detok_init / skv_detok_cleanup. */
typedef struct {
    const skv_tokenizer_t *tok; /* borrowed; must outlive the detokenizer */
    unsigned flags;             /* DECODE_* */
    unsigned char pending[4];   /* bytes of an incomplete UTF-8 character */
    size_t n_pending;           /* bytes in pending (at most 3) */
    char *out;                  /* output buffer, owned */
    size_t out_cap;             /* bytes allocated at out */
} skv_detok_t;

/* Prepares a detokenizer over tok (borrowed) with DECODE_* flags. Cannot fail. */
void skv_detok_init(skv_detok_t *dt, const skv_tokenizer_t *tok, unsigned flags);

/* Feeds one id. On success *text_p points at *len_p bytes of newly complete UTF-8 text (maybe
 * 0 bytes), valid until the next call on dt; not NUL-terminated. Returns INVALID_ARGUMENT for
 * an id outside the vocabulary (dt unchanged), NO_MEMORY. */
skv_status_t skv_detok_push(skv_detok_t *dt, int32_t id, const char **text_p, size_t *len_p);

/* Ends the stream: held bytes of an unfinished character come out as U+FFFD (as a full decode
 * would give). Same output contract as skv_detok_push. dt can be reused afterwards. */
skv_status_t skv_detok_flush(skv_detok_t *dt, const char **text_p, size_t *len_p);

/* Frees the detokenizer's buffer. */
void skv_detok_cleanup(skv_detok_t *dt);

#endif /* SKV_COMMON_TOKENIZER_H */
