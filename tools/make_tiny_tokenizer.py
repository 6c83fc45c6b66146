#!/usr/bin/env python3
"""make_tiny_tokenizer.py: builds the 1024-token test tokenizer in tools/data/tiny-tokenizer.

A byte-level BPE trained with HF `tokenizers` on the small corpus embedded below, assembled
like Llama-3's tokenizer.json: pre_tokenizer Sequence[Split(Llama-3 regex, Isolated),
ByteLevel(no prefix space, no regex)], ByteLevel decoder, a post-processor that prepends
<|begin_of_text|>. Ids 0..999 are BPE tokens (256 bytes + 744 merges); ids 1000..1023 are
special tokens in Llama-3.1's order. Output is deterministic: running it again rewrites the
same bytes (the committed files are checked in; rerun only when changing the corpus).
Needs only the `tokenizers` package. Usage: make_tiny_tokenizer.py [OUT_DIR]
"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 1024
N_SPECIAL = 24
N_BPE = VOCAB_SIZE - N_SPECIAL

# Llama-3's pre-tokenizer split pattern (contractions, words, 1-3 digit numbers, punctuation,
# newlines, spaces).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama-3.1 places its named specials among reserved ones at 128000..; we keep that order.
NAMED_SPECIALS = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}

# The Llama-3 instruct chat template: bos once, then per message
# <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>, then the assistant header
# when add_generation_prompt is set.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

CORPUS = [
    """The quick brown fox jumps over the lazy dog. A model reads tokens one at a time and
predicts the next one. Serving a large language model means batching many requests, keeping
their keys and values in a cache, and answering each user as fast as the hardware allows.
It's not magic: it's matrix multiplication, memory bandwidth, and careful scheduling.
We'll measure throughput in tokens per second, and latency as time to first token.""",
    """Once upon a time, in a small village by the sea, there lived an old fisherman who
told stories to the children every evening. They would gather around the fire, listening to
tales of storms and stars, of ships that sailed beyond the edge of the world. "Where do the
waves go at night?" asked a girl. He smiled and said, "They go home, like you should."
The children laughed, and the moon rose over the quiet harbor.""",
    """Prefill processes the whole prompt in parallel; decode produces one token per step.
SwiftKV reuses the hidden state of a middle layer to compute the keys and values of the
later layers, so prompt tokens skip about half of the model. The attention still sees every
position, and the output quality stays close to the original model after distillation.""",
    """def greedy_decode(model, tokens, n_steps):
    for step in range(n_steps):
        logits = model(tokens)
        next_id = int(logits[-1].argmax())
        tokens.append(next_id)
    return tokens

for (int i = 0; i < n; i++) {
    sum += a[i] * b[i];
}
if (status != SKV_STATUS_OK) {
    goto cleanup;
}
{"name": "llama", "hidden_size": 4096, "num_layers": 32, "vocab_size": 128256}
SELECT id, name FROM users WHERE age >= 21 ORDER BY name;
$ cmake -S . -B build -G Ninja && cmake --build build -j2""",
    """Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 4096 65536 3.14159 2.71828
Dates: 2024-07-23, 1999-12-31, 12:30:45. Prices: $19.99, 5 EUR, 100%.
Questions? Answers! Lists: apples, oranges, pears; cats & dogs; A/B tests (n=1000).""",
    """Dear team, thank you for your patience. The new release fixes several bugs, improves
performance on long prompts, and adds support for grouped-query attention. Please update
your configuration files and restart the service. If you have any questions, contact us.
Best regards, the engineering group.""",
    """Il était une fois un petit prince. Der schnelle braune Fuchs springt über den faulen
Hund. El rápido zorro marrón salta sobre el perro perezoso. Привет, мир!
こんにちは世界。今日はいい天気ですね。你好，世界！我们一起学习。안녕하세요.
Emoji: 🙂 🚀 🎉 ❤️ 👍 — café, naïve, résumé, façade, Zürich.""",
    """The history of computing is full of small ideas that changed everything: the stored
program, the transistor, the compiler, the network. Each one made the next possible. Today
we train models on trillions of words, and we serve them to millions of people. The
engineering problems are old ones in new clothes: caching, batching, scheduling, and
moving data to where the work happens. Good systems are simple, measured, and tested.""",
    """Q: What is the capital of France?
A: The capital of France is Paris.
Q: How many legs does a spider have?
A: A spider has eight legs.
Q: Can you write a haiku about autumn?
A: Red leaves drift and fall / the cold wind hums a low song / the year breathes out slow.""",
    """import numpy as np
x = np.zeros((4, 8), dtype=np.float32)
y = x @ x.T + 1.0
print(f"shape={y.shape} mean={y.mean():.3f}")
class Cache:
    def __init__(self, n_blocks):
        self.free = list(range(n_blocks))
    def alloc(self):
        return self.free.pop() if self.free else None""",
]


def build_tokenizer():
    """Trains the BPE part on the corpus and adds the special tokens at the top ids."""
    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=N_BPE, min_frequency=1, show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Repetition makes frequent words win merges; order and content are fixed.
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    if tok.get_vocab_size() != N_BPE:
        raise SystemExit(f"BPE vocab is {tok.get_vocab_size()}, want {N_BPE}: grow the corpus")
    specials = []
    reserved = 0
    for i in range(N_SPECIAL):
        if i in NAMED_SPECIALS:
            specials.append(NAMED_SPECIALS[i])
        else:
            specials.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    tok.add_special_tokens(specials)
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == N_BPE + i, s
    bos = NAMED_SPECIALS[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, N_BPE)]),
    ])
    return tok


def tokenizer_config():
    """The tokenizer_config.json content, Llama-3.1 style."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "pad_token": None,
        "clean_up_tokenization_spaces": True,
        "model_max_length": 131072,
        "model_input_names": ["input_ids", "attention_mask"],
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "data", "tiny-tokenizer")
    os.makedirs(out, exist_ok=True)
    tok = build_tokenizer()
    # Re-serialize through json with sorted-free, fixed formatting so the bytes do not depend
    # on the tokenizers version's pretty printer.
    data = json.loads(tok.to_str())
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(), f, ensure_ascii=False, indent=2)
        f.write("\n")
    enc = tok.encode("Hello world! SwiftKV 🙂 こんにちは")
    print(f"wrote {out}: vocab {tok.get_vocab_size()}, sample ids {enc.ids}")


if __name__ == "__main__":
    main()
