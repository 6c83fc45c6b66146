"""CPU throughput curves of the engine (issue targets: decode tokens/s vs batch 1..64 and
prefill tokens/s vs batch on a ~100M model), written as JSON + a PNG plot.

usage: cpu_curves.py BUILD_DIR MODEL OUT_PREFIX [--mode auto|base|swiftkv] [--repeat N]
MODEL is a model folder or preset:NAME (engine_bench --random-preset NAME, e.g. 100m-swiftkv).
Runs build/bench/engine_bench in a fresh process per point (one point's memory does not affect
the next), N times per point keeping the best (shared machines are noisy: the best of N is the
closest to what the hardware does), and plots tokens/s against batch size.
"""
import json
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bench_once(build, model, mode, args):
    src = ["--random-preset", model[7:]] if model.startswith("preset:") else ["--model", model]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [f"{build}/bench/engine_bench"] + src + ["--mode", mode, "--json", f.name] + args
        subprocess.run(cmd, check=True, capture_output=True)
        return json.load(open(f.name)), " ".join(cmd[:5] + cmd[7:])


def bench(build, model, mode, args, key, repeat=1):
    """Best of `repeat` runs (highest tokens/s of the `key` phase: decode or prefill)."""
    best = None
    for _ in range(repeat):
        r, cmd = bench_once(build, model, mode, args)
        if best is None or r[key][0]["tok_s"] > best[key][0]["tok_s"]:
            best = r
    return best, cmd


def main():
    build, model, out = sys.argv[1:4]
    opts = dict(zip(sys.argv[4::2], sys.argv[5::2]))
    mode = opts.get("--mode", "auto")
    repeat = int(opts.get("--repeat", "1"))
    decode, prefill, cmds = [], [], []
    for b in (1, 2, 4, 8, 16, 32, 64):
        r, cmd = bench(build, model, mode, ["--prefill-batch", "1", "--prompt-len", "16",
                                             "--decode-batch", str(b), "--context", "256",
                                             "--steps", "5"], "decode", repeat)
        decode.append(r["decode"][0])
        cmds.append(cmd)
    for b in (1, 2, 4, 8):
        r, cmd = bench(build, model, mode, ["--prefill-batch", str(b), "--prompt-len", "256",
                                             "--decode-batch", "1", "--context", "16",
                                             "--steps", "3"], "prefill", repeat)
        prefill.append(r["prefill"][0])
        cmds.append(cmd)
    json.dump({"mode": r["mode"], "decode": decode, "prefill": prefill, "commands": cmds},
              open(out + ".json", "w"), indent=1)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot([d["batch"] for d in decode], [d["tok_s"] for d in decode], "o-")
    ax[0].set(xscale="log", xlabel="decode batch (context 256)", ylabel="tokens/s",
              title="decode")
    ax[1].plot([p["batch"] for p in prefill], [p["tok_s"] for p in prefill], "o-")
    ax[1].set(xlabel="prompts of 256 tokens per step", ylabel="tokens/s", title="prefill")
    fig.suptitle(f"CPU engine, {r['mode']} mode")
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=100)
    for d in decode:
        print(f"decode batch {d['batch']:3d}: {d['tok_s']:8.1f} tok/s  {d['ms_step']:8.2f} ms/step")
    for p in prefill:
        print(f"prefill batch {p['batch']:3d}: {p['tok_s']:8.1f} tok/s  {p['gflops']:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
