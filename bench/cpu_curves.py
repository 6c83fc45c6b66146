"""CPU throughput curves of the engine (issue targets: decode tokens/s vs batch 1..64 and
prefill tokens/s vs batch on a ~100M model), written as JSON + a PNG plot.

usage: cpu_curves.py BUILD_DIR MODEL_DIR OUT_PREFIX [--mode auto|base|swiftkv]
Runs build/bench/engine_bench once per point (a fresh process each, so one point's memory
does not affect the next) and plots tokens/s against batch size.
"""
import json
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bench(build, model, mode, args):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [f"{build}/bench/engine_bench", "--model", model, "--mode", mode, "--json", f.name] + args
        subprocess.run(cmd, check=True, capture_output=True)
        return json.load(open(f.name)), " ".join(cmd[:5] + cmd[7:])


def main():
    build, model, out = sys.argv[1:4]
    mode = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--mode" else "auto"
    decode, prefill, cmds = [], [], []
    for b in (1, 2, 4, 8, 16, 32, 64):
        r, cmd = bench(build, model, mode, ["--prefill-batch", "1", "--prompt-len", "16",
                                             "--decode-batch", str(b), "--context", "256",
                                             "--steps", "5"])
        decode.append(r["decode"][0])
        cmds.append(cmd)
    for b in (1, 2, 4, 8):
        r, cmd = bench(build, model, mode, ["--prefill-batch", str(b), "--prompt-len", "256",
                                             "--decode-batch", "1", "--context", "16",
                                             "--steps", "3"])
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
