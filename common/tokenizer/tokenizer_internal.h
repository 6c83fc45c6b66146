/*
 * tokenizer_internal.h: the tokenizer's data layout, shared by the tokenizer_*.c files only.
 *
 * Tokens are kept as raw bytes: a byte-level token string ("Ġthe") is mapped back to the bytes
 * it stands for (" the") at load, so BPE runs on the text's bytes with no per-char mapping at
 * encode time. Strings that are not byte-level spellings (added tokens such as "<|eot_id|>" are,
 * CJK added tokens are not) keep their UTF-8 bytes and live in a separate small map.
 * Invariant after load: every field is immutable, so encode/decode are thread-safe.
 */
#ifndef SKV_COMMON_TOKENIZER_INTERNAL_H
#define SKV_COMMON_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

#include "base/status.h"
#include "common/tokenizer/tokenizer.h"

/* One slot of the byte-string map: the id and 32 bits of the key's hash, so a probe rarely
 * has to touch the key bytes. */
typedef struct {
    int32_t id1;   /* id + 1, 0 = empty */
    uint32_t hash; /* high half of the key's hash */
} skv_tok_strslot_t;

/* Byte string -> id, open addressing over ids; keys live in the tokenizer's token table. */
typedef struct {
    skv_tok_strslot_t *slots;
    size_t mask; /* n_slots - 1, n_slots a power of two */
    size_t n_used;
    const char *const *key_ptr; /* borrowed from the owner: bytes of id */
    const uint32_t *key_len;    /* borrowed: byte length of id */
} skv_tok_strmap_t;

/* One slot of the merge map: 16 bytes, so a lookup is one cache line. */
typedef struct {
    uint64_t key; /* (left << 32 | right) + 1, 0 = empty */
    uint32_t rank;
    int32_t merged;
} skv_tok_pairslot_t;

/* (left id, right id) -> merge rank and merged id, open addressing. */
typedef struct {
    skv_tok_pairslot_t *slots;
    size_t mask;
    size_t n_used;
} skv_tok_pairmap_t;

/* One added token (tokenizer.json "added_tokens"). */
typedef struct {
    int32_t id;
    char *content; /* UTF-8, owned */
    size_t len;
    int special;
    int lstrip, rstrip, normalized;
    char *dec; /* bytes the decoder makes of it (byte-level unmapped when possible), owned */
} skv_tok_added_t;

/* Chat formats recognised from tokenizer_config.json's chat_template. */
typedef enum {
    SKV_TOK_CHAT_NONE = 0, /* no template */
    SKV_TOK_CHAT_UNKNOWN,  /* a template we do not implement */
    SKV_TOK_CHAT_LLAMA3,
} skv_tok_chat_t;

#define SKV_TOK_MAX_SPLITS 4 /* Split pre-tokenizers before the ByteLevel one */

struct skv_tokenizer {
    /* Per id of model.vocab: the token's bytes (byte-level unmapped); keys of bytes_map. */
    size_t n_ids;
    char **vocab_bytes; /* owned array; strings point into `arena`; NULL for unused ids */
    uint32_t *vocab_len;
    char *arena; /* bytes of all vocabulary tokens */
    /* Per id: what the decoder makes of it (the added token's content wins over vocab). */
    char **tok_bytes; /* owned array; strings point into `arena` or added[].dec */
    uint32_t *tok_len;
    uint8_t *tok_flags; /* SKV_TOK_F_* */

    skv_tok_strmap_t bytes_map; /* byte-level vocabulary: token bytes -> id */
    skv_tok_pairmap_t merges;
    int32_t byte_id[256]; /* id of each single byte, -1 when absent */
    int32_t unk_id;       /* -1 when none */
    int fuse_unk;
    int ignore_merges;

    skv_tok_added_t *added; /* owned, n_added entries */
    size_t n_added;
    uint8_t added_first[256];  /* 1 when some added token starts with this byte */
    uint32_t *added_order;     /* added indices sorted by (first byte, length descending) */
    uint32_t added_begin[257]; /* added_order range of each first byte */

    pcre2_general_context *pcre_gctx; /* routes PCRE2's allocations through skv_malloc */
    pcre2_compile_context *pcre_cctx;
    pcre2_code *split_re[SKV_TOK_MAX_SPLITS]; /* Split regexes in order */
    size_t n_split;
    pcre2_code *bytelevel_re; /* GPT-2 regex when ByteLevel use_regex, else NULL */
    int add_prefix_space;
    int jit; /* regexes were JIT compiled */

    int32_t *post_prefix; /* template tokens before $A (owned) */
    size_t n_post_prefix;
    int32_t *post_suffix; /* template tokens after $A (owned) */
    size_t n_post_suffix;

    int32_t bos_id, eos_id;
    char *bos_text; /* owned; bos_token string for the chat format, may be NULL */
    skv_tok_chat_t chat;
};

#define SKV_TOK_F_SPECIAL 1u /* special added token */
#define SKV_TOK_F_ADDED   2u /* any added token */
#define SKV_TOK_F_RAW     4u /* vocab entry that is not a byte-level spelling (not in bytes_map) */

/* ---- tokenizer_map.c ---- */
#define SKV_TOK_BATCH_MAX 96 /* keys per batched map call */
skv_status_t skv_tok_strmap_init(skv_tok_strmap_t *m, size_t n_expected, const char *const *key_ptr,
                                 const uint32_t *key_len);
void skv_tok_strmap_cleanup(skv_tok_strmap_t *m);
/* Inserts n <= SKV_TOK_BATCH_MAX ids under their keys, in order, overlapping their cache
 * misses; an existing equal key is replaced (later entries win, as in HF). */
void skv_tok_strmap_put_batch(skv_tok_strmap_t *m, size_t n, const int32_t *ids);
/* Returns the id of bytes s[0..len) or -1. */
int32_t skv_tok_strmap_get(const skv_tok_strmap_t *m, const char *s, size_t len);
/* Looks up n <= SKV_TOK_BATCH_MAX keys at once, overlapping their cache misses (load time is
 * bound by memory latency, not work). ids[i] = id of keys[i] or -1. */
void skv_tok_strmap_get_batch(const skv_tok_strmap_t *m, size_t n, const char *const *keys,
                              const size_t *lens, int32_t *ids);

skv_status_t skv_tok_pairmap_init(skv_tok_pairmap_t *m, size_t n_expected);
void skv_tok_pairmap_cleanup(skv_tok_pairmap_t *m);
void skv_tok_pairmap_put(skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t rank,
                         int32_t merged);
/* Starts loading the slot of (left, right) ahead of a put. */
void skv_tok_pairmap_prefetch(const skv_tok_pairmap_t *m, int32_t left, int32_t right);
/* Returns 1 and fills rank/merged when the pair merges, else 0. */
int skv_tok_pairmap_get(const skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t *rank_p,
                        int32_t *merged_p);

/* ---- tokenizer_bytelevel.c ---- */
/* Maps a byte-level spelling (UTF-8) to the bytes it stands for. Returns the byte count, or -1
 * when some character is not in the byte-level alphabet. out needs len bytes. */
long skv_tok_bytelevel_unmap(const char *s, size_t len, char *out);
/* Validates UTF-8 (strict: no overlongs, surrogates or values above U+10FFFF). Returns the
 * offset of the first invalid byte, or len when all is valid. */
size_t skv_tok_utf8_check(const char *s, size_t len);

/* ---- tokenizer_bpe.c ---- */
/* Growable id vector used by the encoder. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} skv_tok_ids_t;
skv_status_t skv_tok_ids_push(skv_tok_ids_t *v, int32_t id);

/* Scratch space for BPE, reused across words of one encode call. */
typedef struct {
    int32_t *sym;  /* symbol ids */
    int32_t *next; /* linked list over symbols */
    int32_t *prev;
    uint32_t *rank; /* rank of the pair starting at each symbol (UINT32_MAX: none) */
    uint64_t *heap; /* heap entries (rank << 32 | position) for long words */
    size_t cap;
} skv_tok_bpe_ws_t;
void skv_tok_bpe_ws_cleanup(skv_tok_bpe_ws_t *ws);
/* BPE-encodes one pre-token (raw bytes) and appends its ids to out. */
skv_status_t skv_tok_bpe_word(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, const char *w,
                              size_t len, skv_tok_ids_t *out);

/* ---- tokenizer_load.c ---- */
/* Fills tok from the parsed tokenizer.json (root) and tokenizer_config.json (config, may be
 * NULL); both borrowed. Returns FORMAT / UNSUPPORTED / NO_MEMORY, logged with the field. */
skv_status_t skv_tok_load_json(skv_tokenizer_t *tok, const json_t *root, const json_t *config);

/* ---- chat_template.c ---- */
/* Classifies a chat_template string. */
skv_tok_chat_t skv_tok_chat_classify(const char *tmpl);

#endif /* SKV_COMMON_TOKENIZER_INTERNAL_H */
