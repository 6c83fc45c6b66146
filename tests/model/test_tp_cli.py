"""skv_generate --tp N end to end: the same greedy tokens at TP=1, 2 and 4 (CPU ranks as
threads), for a plain Llama with grouped KV heads and a SwiftKV model with a chunked prefill;
a TP size that does not divide the KV heads exits with status 1 and a message naming them.

usage: test_tp_cli.py MAKE_MODEL GENERATE
"""
import subprocess
import sys
import tempfile

GQA = ["--heads", "8", "--kv-heads", "4", "--head-dim", "16"]


def generate(gen, model, tp):
    p = subprocess.run([gen, "--model", model, "--tokens", "5,17,300,42,9,77,512,3,88,100,6",
                        "--max-tokens", "32", "--ignore-eos", "--chunk", "4", "--threads", "1",
                        "--tp", str(tp)], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout.strip(), p.stderr


def main():
    make, gen = sys.argv[1], sys.argv[2]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("tiny", "tiny-swiftkv"):
            model = f"{tmp}/{preset}"
            subprocess.run([make, "--out", model, "--preset", preset] + GQA, check=True,
                           capture_output=True)
            outs = {}
            for tp in (1, 2, 4):
                rc, out, err = generate(gen, model, tp)
                if rc != 0 or len(out.split(",")) != 32:
                    print(f"FAIL {preset} --tp {tp}: rc {rc}, stdout {out!r}, stderr {err}")
                    failures += 1
                outs[tp] = out
            if len(set(outs.values())) != 1:
                print(f"FAIL {preset}: tokens differ across TP sizes: {outs}")
                failures += 1
            else:
                print(f"{preset}: --tp 1/2/4 give the same 32 tokens")
            rc, out, err = generate(gen, model, 3)
            if rc != 1 or "does not divide num_key_value_heads" not in err:
                print(f"FAIL {preset} --tp 3: rc {rc}, stderr {err!r}")
                failures += 1
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
