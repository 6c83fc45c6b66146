#!/usr/bin/env python3
"""make_goldens.py: writes the model-engine golden files in tests/model/goldens.

For each case of the table below it runs skv_make_model (path given on the command line) into
a temporary folder, then computes in float32:
  mode "base":    Hugging Face LlamaForCausalLM (the plain Llama model, or the teacher of a
                  SwiftKV checkpoint: swiftkv tensors ignored);
  mode "swiftkv": swiftkv_ref.SwiftKVRef (SingleInputKV / AcrossKV path).
It records the prompt, 32 greedy tokens (no EOS stop) and the logits of one full causal forward
over prompt + greedy, and picks the model seed deterministically (first seed from 1 upwards)
so that every greedy decision has a top1-top2 logit margin above MIN_MARGIN in every golden
of the case. Before writing anything it checks the reference itself (see sanity_checks).

Usage: make_goldens.py PATH/TO/skv_make_model [--out DIR] [--only NAME ...]
Needs torch, transformers and safetensors (see README.md).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swiftkv_ref import SwiftKVRef  # noqa: E402

N_GREEDY = 32
MIN_MARGIN = 0.02   # required top1-top2 gap at every greedy decision (logit units)
MAX_SEEDS = 200
BOS = 1000          # <|begin_of_text|> of the tiny tokenizer
N_TEXT_TOKENS = 1000  # prompts draw from the BPE ids 0..999
HF_TOL = 1e-4       # max |HF - reference| accepted in the sanity checks (logits of std ~2)

TINY = ["--preset", "tiny"]
TINY_SKV = ["--preset", "tiny-swiftkv"]

# (name, skv_make_model args without --out/--seed, n_prompt, modes)
CASES = [
    ("llama_gqa1_p7", TINY + ["--kv-heads", "4"], 7, ["base"]),
    ("llama_gqa2_p13", TINY, 13, ["base"]),
    ("llama_gqa4_p31", TINY + ["--kv-heads", "1"], 31, ["base"]),
    ("llama_p1", TINY, 1, ["base"]),
    ("llama_rope_linear_p13", TINY + ["--rope", "linear", "--rope-factor", "4"], 13, ["base"]),
    ("llama_rope_none_p13", TINY + ["--rope", "none"], 13, ["base"]),
    ("llama_tied_p7", TINY + ["--tie", "1"], 7, ["base"]),
    ("llama_bf16_p13", TINY + ["--dtype", "bf16"], 13, ["base"]),
    ("llama_h96_gqa3_i200_p13",
     TINY + ["--hidden", "96", "--heads", "6", "--kv-heads", "2", "--intermediate", "200"],
     13, ["base"]),
    ("llama_h128_hd32_l2_sharded_p21",
     TINY + ["--hidden", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2",
             "--head-dim", "32", "--intermediate", "352", "--rope-theta", "500000",
             "--rope-orig-max", "8192", "--shard-mb", "1"], 21, ["base"]),
    ("swiftkv_lk1_g1_p7", TINY_SKV + ["--swiftkv-layers", "1"], 7, ["swiftkv", "base"]),
    ("swiftkv_lk2_g1_p13", TINY_SKV, 13, ["swiftkv", "base"]),
    ("swiftkv_lk3_g1_p21", TINY_SKV + ["--swiftkv-layers", "3"], 21, ["swiftkv", "base"]),
    ("swiftkv_lk2_g2_p13", TINY_SKV + ["--group", "2"], 13, ["swiftkv", "base"]),
    ("swiftkv_lk2_g2_gqa4_p1", TINY_SKV + ["--group", "2", "--kv-heads", "1"], 1,
     ["swiftkv", "base"]),
]


def make_model(tool, args, out):
    subprocess.run([tool, "--out", out] + args, check=True)


def load_hf(folder):
    """LlamaForCausalLM in float32, eager attention; SwiftKV fields and tensors ignored."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    for k in ("swiftkv", "num_key_value_layers", "key_value_group_size"):
        cfg.pop(k, None)
    cfg["model_type"] = "llama"
    cfg["architectures"] = ["LlamaForCausalLM"]
    config = LlamaConfig(**cfg)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32)
    return model.eval()


def hf_forward(model):
    @torch.no_grad()
    def fwd(ids):
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].float()
    return fwd


def prompt_ids(name, n):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    rest = torch.randint(0, N_TEXT_TOKENS, (n - 1,), generator=g).tolist()
    return [BOS] + rest


def margins(logits):
    top2 = logits.topk(2, dim=-1).values
    return top2[:, 0] - top2[:, 1]


def run_greedy(fwd, prompt):
    """32 greedy steps (full forward each), then one forward over prompt + all 32 tokens."""
    seq = list(prompt)
    greedy = []
    for _ in range(N_GREEDY):
        nxt = int(fwd(seq)[-1].argmax())
        greedy.append(nxt)
        seq.append(nxt)
    logits = fwd(seq)
    n = len(prompt)
    decide = logits[n - 1: n - 1 + N_GREEDY]
    if decide.argmax(-1).tolist() != greedy:
        raise RuntimeError("full-forward argmax disagrees with the step-by-step greedy tokens")
    m = margins(logits)
    return greedy, logits, float(m[n - 1: n - 1 + N_GREEDY].min()), float(m.min())


def forwards_for(folder):
    hf = load_hf(folder)
    ref = SwiftKVRef(folder)
    return {"base": hf_forward(hf), "swiftkv": lambda ids: ref.forward(ids, swiftkv=True),
            "ref_base": lambda ids: ref.forward(ids, swiftkv=False)}


def try_seed(tool, tmp, name, args, n_prompt, modes, seed):
    """All goldens of a case for one seed, or None when a greedy margin is too small."""
    full_args = args + ["--seed", str(seed)]
    folder = os.path.join(tmp, f"{name}-{seed}")
    make_model(tool, full_args, folder)
    fw = forwards_for(folder)
    prompt = prompt_ids(name, n_prompt)
    out = {}
    for mode in modes:
        greedy, logits, min_margin, min_all = run_greedy(fw[mode], prompt)
        if min_margin < MIN_MARGIN:
            return None
        out[mode] = dict(greedy=greedy, logits=logits, min_margin=min_margin,
                         min_margin_all_rows=min_all)
    seq = prompt + out[modes[0]]["greedy"]
    # The reference's plain path must match HF on every checkpoint (its teacher / base model).
    diff = float((fw["ref_base"](seq) - fw["base"](seq)).abs().max())
    if diff > HF_TOL:
        raise RuntimeError(f"{name}: reference base path differs from HF by {diff}")
    for mode in modes:
        out[mode]["hf_vs_ref_base_max_abs_diff"] = diff
    if "swiftkv" in out:
        d = float((out["swiftkv"]["logits"] - fw["base"](prompt + out["swiftkv"]["greedy"]))
                  .abs().max())
        out["swiftkv"]["swiftkv_vs_base_max_abs_diff"] = d
    return full_args, prompt, out


def golden_name(name, mode, modes):
    return name if len(modes) == 1 or mode == "swiftkv" else f"{name}_teacher"


def write_golden(out_dir, name, mode, full_args, prompt, res):
    logits = res["logits"].contiguous().numpy().astype("<f4")
    logits_file = f"{name}.logits.f32"
    logits.tofile(os.path.join(out_dir, logits_file))
    doc = {
        "case": name,
        "make_model_args": full_args,
        "mode": mode,
        "reference": ("transformers.LlamaForCausalLM" if mode == "base"
                      else "tests/model/ref/swiftkv_ref.py"),
        "compute_dtype": "float32",
        "vocab": int(logits.shape[1]),
        "n_prompt": len(prompt),
        "prompt": prompt,
        "n_greedy": N_GREEDY,
        "greedy": res["greedy"],
        "min_margin": res["min_margin"],
        "min_margin_all_rows": res["min_margin_all_rows"],
        "logits_file": logits_file,
        "logits_shape": list(logits.shape),
        "hf_vs_ref_base_max_abs_diff": res["hf_vs_ref_base_max_abs_diff"],
        "torch_version": torch.__version__.split("+")[0],
        "transformers_version": transformers.__version__,
    }
    if "swiftkv_vs_base_max_abs_diff" in res:
        doc["swiftkv_vs_base_max_abs_diff"] = res["swiftkv_vs_base_max_abs_diff"]
    # One key per line, lists inline: easy to diff and to read by eye.
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items()]
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def sanity_checks(tool, tmp):
    """Checks the reference before trusting it:
    1. Lk = L (SwiftKV config whose swiftkv part is empty, so the SwiftKV model equals the
       base one): SwiftKVRef(swiftkv=True) == HF LlamaForCausalLM.
    2. SwiftKV path is causal and position-consistent: logits row i of a full forward equal
       the last row of a forward over the prefix 0..i.
    3. The SwiftKV path differs measurably from the base path when Lk < L."""
    folder = os.path.join(tmp, "sanity-lk-eq-l")
    make_model(tool, TINY_SKV + ["--swiftkv-layers", "4", "--seed", "7"], folder)
    fw = forwards_for(folder)
    ids = prompt_ids("sanity", 24)
    d1 = float((fw["swiftkv"](ids) - fw["base"](ids)).abs().max())
    folder = os.path.join(tmp, "sanity-lk2-g2")
    make_model(tool, TINY_SKV + ["--group", "2", "--seed", "7"], folder)
    fw = forwards_for(folder)
    full = fw["swiftkv"](ids)
    d2 = max(float((fw["swiftkv"](ids[: i + 1])[-1] - full[i]).abs().max())
             for i in range(len(ids)))
    d3 = float((full - fw["base"](ids)).abs().max())
    print(f"sanity: |ref(Lk=L) - HF| = {d1:.3g}, prefix consistency {d2:.3g}, "
          f"|swiftkv - base| = {d3:.3g}")
    if d1 > HF_TOL or d2 > HF_TOL or d3 < 0.1:
        raise SystemExit("sanity checks failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("make_model")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "goldens"))
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)  # bitwise-stable float32 reductions from run to run
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sanity_checks(a.make_model, tmp)
        for name, args, n_prompt, modes in CASES:
            if a.only and name not in a.only:
                continue
            for seed in range(1, MAX_SEEDS + 1):
                got = try_seed(a.make_model, tmp, name, args, n_prompt, modes, seed)
                if got is not None:
                    break
            else:
                raise SystemExit(f"{name}: no seed <= {MAX_SEEDS} gives margins > {MIN_MARGIN}")
            full_args, prompt, out = got
            for mode in modes:
                gname = golden_name(name, mode, modes)
                write_golden(a.out, gname, mode, full_args, prompt, out[mode])
                print(f"{gname}: seed {seed} mode {mode} min_margin "
                      f"{out[mode]['min_margin']:.4f} |hf-ref| "
                      f"{out[mode]['hf_vs_ref_base_max_abs_diff']:.2g}")


if __name__ == "__main__":
    main()
