/*
 * tiny_tokenizer.h: builds a small byte-level BPE tokenizer.json in memory for tests and fuzz
 * drivers (no files, no Python): the 256 byte tokens (id = byte), a few merges (" t", "he",
 * " the", "ll", "hello"), Llama-3 specials (300..303), one non-special added token "<tool>"
 * (304), the Llama-3 Split regex + ByteLevel pre-tokenizer and a BOS template.
 * Header-only (static functions) so each test binary carries its own copy.
 */
#ifndef SKV_TESTS_TINY_TOKENIZER_H
#define SKV_TESTS_TINY_TOKENIZER_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define SKV_TINY_LLAMA3_RE                                                                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#define SKV_TINY_LLAMA3_TEMPLATE                                                                   \
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "        \
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "   \
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"       \
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "                        \
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"

/* Writes the byte-level spelling of byte b (UTF-8, NUL-terminated) into out[3]. */
static void skv_tiny_byte_str(unsigned b, char out[3])
{
    int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = b, n = 0;
    if (!printable) {
        for (unsigned k = 0; k < b; k++) {
            n += !((k >= 0x21 && k <= 0x7E) || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE);
        }
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

static json_t *skv_tiny_added(int id, const char *content, int special)
{
    return json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", content, "single_word",
                     0, "lstrip", 0, "rstrip", 0, "normalized", !special, "special", special);
}

/* Returns a new tokenizer.json tree (json_decref it). */
static json_t *skv_tiny_tokenizer_json(void)
{
    json_t *vocab = json_object();
    char s[3];
    for (unsigned b = 0; b < 256; b++) {
        skv_tiny_byte_str(b, s);
        json_object_set_new(vocab, s, json_integer(b));
    }
    static const char *const extra[][3] = {{"Ġ", "t", "Ġt"},     {"h", "e", "he"},
                                           {"Ġt", "he", "Ġthe"}, {"l", "l", "ll"},
                                           {"he", "ll", "hell"}, {"hell", "o", "hello"}};
    json_t *merges = json_array();
    for (int i = 0; i < 6; i++) {
        json_object_set_new(vocab, extra[i][2], json_integer(256 + i));
        char m[32];
        snprintf(m, sizeof(m), "%s %s", extra[i][0], extra[i][1]);
        json_array_append_new(merges, json_string(m));
    }
    json_t *added = json_pack(
        "[o,o,o,o,o,o]", skv_tiny_added(300, "<|begin_of_text|>", 1),
        skv_tiny_added(301, "<|eot_id|>", 1), skv_tiny_added(302, "<|start_header_id|>", 1),
        skv_tiny_added(303, "<|end_header_id|>", 1), skv_tiny_added(304, "<tool>", 0),
        skv_tiny_added(305, "<|end_of_text|>", 1));
    json_t *pre = json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Split", "pattern", "Regex",
                            SKV_TINY_LLAMA3_RE, "behavior", "Isolated", "invert", 0, "type",
                            "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
    json_t *post = json_pack("{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i],s:[s]}}}",
                             "type", "TemplateProcessing", "single", "SpecialToken", "id",
                             "<|begin_of_text|>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                             "special_tokens", "<|begin_of_text|>", "id", "<|begin_of_text|>",
                             "ids", 300, "tokens", "<|begin_of_text|>");
    return json_pack("{s:s,s:n,s:n,s:o,s:n,s:o,s:o,s:{s:s},s:{s:s,s:n,s:n,s:b,s:b,s:o,s:o}}",
                     "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                     "pre_tokenizer", pre, "post_processor", post, "decoder", "type", "ByteLevel",
                     "model", "type", "BPE", "unk_token", "continuing_subword_prefix", "fuse_unk",
                     0, "byte_fallback", 0, "vocab", vocab, "merges", merges);
}

/* Returns a new tokenizer_config.json tree with the Llama-3 chat template. */
static json_t *skv_tiny_config_json(const char *tmpl)
{
    return json_pack("{s:s,s:s,s:s}", "bos_token", "<|begin_of_text|>", "eos_token", "<|eot_id|>",
                     "chat_template", tmpl);
}

#endif /* SKV_TESTS_TINY_TOKENIZER_H */
