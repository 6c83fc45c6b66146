#!/usr/bin/env python3
"""check_make_model.py: validates skv_make_model output with numpy + safetensors only.

Runs the tool on a few configurations in a temporary folder and checks, independently of the
tool's own code: safetensors headers (8-byte little-endian length, JSON with dtype/shape/
data_offsets, __metadata__ format pt, 8-byte aligned contiguous data filling the file); the
tensor names, shapes and dtype implied by config.json (plain Llama and SwiftKV with AcrossKV);
the sharded index; the init statistics (SwiftKV init + perturbation); that the same seed gives
identical bytes and a different seed different weights; that bad flags fail with exit 2 and a
message naming the flag; and that --help prints to stdout with exit 0.
Usage: check_make_model.py PATH/TO/skv_make_model. Exit 77 (skip) without numpy/safetensors.
"""
import glob
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors import safe_open
except ImportError:
    print("numpy/safetensors not available: skipping")
    sys.exit(77)

DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}


def run_tool(tool, out, args):
    return subprocess.run([tool, "--out", out] + args, capture_output=True, text=True)


def expected_tensors(cfg):
    """Name -> shape implied by an HF Llama / LlamaSwiftKV config."""
    h, hd = cfg["hidden_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    inter, v, n = cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    lk = cfg.get("num_key_value_layers", 0) if cfg.get("swiftkv") else 0
    g = cfg.get("key_value_group_size", 1)
    t = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = [v, h]
    for i in range(n):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                  p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
                  p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
                  p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                  p + "mlp.down_proj.weight": [h, inter]})
        if lk and i >= lk:
            t[p + "self_attn.q_proj_swiftkv.weight"] = [q, h]
            if (i - lk) % g == 0:
                t[p + "self_attn.k_proj_swiftkv.weight"] = [kv, h]
                t[p + "self_attn.v_proj_swiftkv.weight"] = [kv, h]
    if lk:
        t["model.norm_swiftkv.weight"] = [h]
    return t


def parse_safetensors(path, st_dtype, esz):
    """Checks one file's layout; returns name -> (shape, raw bytes)."""
    data = open(path, "rb").read()
    (hlen,) = struct.unpack("<Q", data[:8])
    assert (8 + hlen) % 8 == 0, f"{path}: data section not 8-byte aligned"
    header = json.loads(data[8: 8 + hlen])
    assert header.pop("__metadata__") == {"format": "pt"}, path
    spans = []
    out = {}
    for name, info in header.items():
        assert info["dtype"] == st_dtype, (name, info["dtype"])
        a, b = info["data_offsets"]
        assert b - a == int(np.prod(info["shape"])) * esz, name
        assert a % 8 == 0, f"{name} not aligned"
        spans.append((a, b))
        out[name] = (info["shape"], data[8 + hlen + a: 8 + hlen + b])
    spans.sort()
    pos = 0
    for a, b in spans:  # contiguous up to alignment padding, no overlap
        assert pos <= a < pos + 8, (path, pos, a)
        pos = b
    assert len(data) - 8 - hlen - pos < 8, f"{path}: trailing bytes"
    return out


def to_f32(raw, st_dtype, shape):
    if st_dtype == "F32":
        return np.frombuffer(raw, "<f4").reshape(shape)
    if st_dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(np.float32).reshape(shape)
    u = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
    return u.view(np.float32).reshape(shape)


def load_folder(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    st_dtype, esz = DTYPES[cfg["torch_dtype"]]
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    tensors, where = {}, {}
    for f in files:
        for name, (shape, raw) in parse_safetensors(f, st_dtype, esz).items():
            assert name not in tensors, f"{name} twice"
            tensors[name] = to_f32(raw, st_dtype, shape)
            where[name] = os.path.basename(f)
    if st_dtype != "BF16":  # cross-check our parser with the safetensors library
        for f in files:
            with safe_open(f, framework="numpy") as sf:
                for k in sf.keys():
                    assert np.array_equal(sf.get_tensor(k).astype(np.float32), tensors[k]), k
    return cfg, tensors, where, files


def check_index(folder, tensors, where, files, esz):
    idx_path = os.path.join(folder, "model.safetensors.index.json")
    if len(files) == 1:
        assert os.path.basename(files[0]) == "model.safetensors"
        assert not os.path.exists(idx_path)
        return
    n = len(files)
    want = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert [os.path.basename(f) for f in files] == want, files
    idx = json.load(open(idx_path))
    assert idx["weight_map"] == where, "index weight_map does not match the shards"
    assert idx["metadata"]["total_size"] == sum(t.size * esz for t in tensors.values())


def check_init(cfg, t):
    """Init statistics: matrices ~ N(0, std), norms ~ 1, SwiftKV = documented init + noise."""
    std = cfg["initializer_range"]
    e = t["model.embed_tokens.weight"]
    assert abs(e.std() / std - 1) < 0.05 and abs(e.mean()) < 0.05 * std, e.std()
    ln = t["model.layers.0.input_layernorm.weight"]
    assert abs(ln.mean() - 1) < 0.05 and 0.05 < ln.std() < 0.15, (ln.mean(), ln.std())
    assert not np.array_equal(t["model.layers.0.self_attn.k_proj.weight"],
                              t["model.layers.0.self_attn.v_proj.weight"])
    lk = cfg.get("num_key_value_layers", 0) if cfg.get("swiftkv") else 0
    if not lk:
        return
    g, n = cfg["key_value_group_size"], cfg["num_hidden_layers"]
    d = t["model.norm_swiftkv.weight"] - t[f"model.layers.{lk}.input_layernorm.weight"]
    assert 0.05 < d.std() < 0.15, d.std()
    for j in range(lk, n):
        p = f"model.layers.{j}.self_attn."
        d = t[p + "q_proj_swiftkv.weight"] - t[p + "q_proj.weight"]
        assert 0.15 * std < d.std() < 0.35 * std, (j, d.std())
        if (j - lk) % g == 0:
            for w in "kv":
                mean = np.mean([t[f"model.layers.{j + m}.self_attn.{w}_proj.weight"]
                                for m in range(g)], axis=0)
                d = t[p + f"{w}_proj_swiftkv.weight"] - mean
                assert 0.15 * std < d.std() < 0.35 * std, (j, w, d.std())


def check_config(cfg, args_swiftkv, folder):
    if args_swiftkv:
        assert cfg["architectures"] == ["LlamaSwiftKVForCausalLM"]
        assert cfg["model_type"] == "llama_swiftkv" and cfg["swiftkv"] is True
    else:
        assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
        assert "swiftkv" not in cfg and "num_key_value_layers" not in cfg
    assert cfg["hidden_act"] == "silu" and cfg["attention_bias"] is False
    assert cfg["mlp_bias"] is False
    gen = json.load(open(os.path.join(folder, "generation_config.json")))
    assert gen["eos_token_id"] == cfg["eos_token_id"]
    if cfg["vocab_size"] == 1024:  # the tiny tokenizer was copied and its ids taken
        tok = json.load(open(os.path.join(folder, "tokenizer.json")))
        ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
        assert cfg["bos_token_id"] == ids["<|begin_of_text|>"]
        assert cfg["eos_token_id"] == [ids["<|end_of_text|>"], ids["<|eom_id|>"],
                                       ids["<|eot_id|>"]]


def check_one(tool, tmp, name, args, swiftkv):
    folder = os.path.join(tmp, name)
    r = run_tool(tool, folder, args)
    assert r.returncode == 0, r.stderr
    cfg, tensors, where, files = load_folder(folder)
    check_config(cfg, swiftkv, folder)
    want = expected_tensors(cfg)
    assert set(tensors) == set(want), set(tensors) ^ set(want)
    for k, shape in want.items():
        assert list(tensors[k].shape) == shape, (k, tensors[k].shape, shape)
        assert np.isfinite(tensors[k]).all(), k
    check_index(folder, tensors, where, files, DTYPES[cfg["torch_dtype"]][1])
    check_init(cfg, tensors)
    print(f"ok {name}: {len(tensors)} tensors in {len(files)} file(s)")
    return folder


def folder_digest(folder):
    h = hashlib.sha256()
    for f in sorted(os.listdir(folder)):
        h.update(f.encode())
        h.update(open(os.path.join(folder, f), "rb").read())
    return h.hexdigest()


def main():
    tool = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        check_one(tool, tmp, "plain_f32", ["--preset", "tiny", "--seed", "3"], False)
        check_one(tool, tmp, "plain_tied_f16", ["--preset", "tiny", "--tie", "1", "--dtype", "f16",
                                                "--kv-heads", "1", "--rope", "none"], False)
        a = check_one(tool, tmp, "skv_g2_bf16_sharded",
                      ["--preset", "tiny-swiftkv", "--layers", "6", "--swiftkv-layers", "2",
                       "--group", "2", "--hidden", "128", "--dtype", "bf16", "--shard-mb", "1"],
                      True)
        b = check_one(tool, tmp, "skv_g2_bf16_sharded_again",
                      ["--preset", "tiny-swiftkv", "--layers", "6", "--swiftkv-layers", "2",
                       "--group", "2", "--hidden", "128", "--dtype", "bf16", "--shard-mb", "1",
                       "--threads", "1"], True)
        assert folder_digest(a) == folder_digest(b), "same seed gave different bytes"
        c = check_one(tool, tmp, "skv_g1_seed9", ["--preset", "tiny-swiftkv", "--seed", "9"], True)
        d = check_one(tool, tmp, "skv_g1_seed10", ["--preset", "tiny-swiftkv", "--seed", "10"],
                      True)
        assert folder_digest(c) != folder_digest(d), "different seeds gave the same bytes"
        check_one(tool, tmp, "no_tokenizer", ["--preset", "tiny", "--vocab", "1000"], False)
        assert not os.path.exists(os.path.join(tmp, "no_tokenizer", "tokenizer.json"))
        bad = [["--preset", "nope"], ["--heads", "3"], ["--kv-heads", "3"],
               ["--swiftkv-layers", "1", "--group", "2"], ["--swiftkv-layers", "9"],
               ["--dtype", "f8"], ["--hidden", "abc"], ["--hidden", "64x"], ["--bogus", "1"],
               ["--rope", "yarn"], ["--rms-eps", "1e-5x"], ["--seed", "-1"]]
        for args in bad:  # exit 2, and the message names the flag
            r = run_tool(tool, os.path.join(tmp, "bad"), args)
            assert r.returncode == 2 and args[0][2:] in r.stderr, (args, r.returncode, r.stderr)
        r = subprocess.run([tool, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "--swiftkv-layers" in r.stdout and not r.stderr
        r = subprocess.run([tool, "--preset", "tiny"], capture_output=True, text=True)
        assert r.returncode == 2 and "--out" in r.stderr
    print("check_make_model: all checks passed")


if __name__ == "__main__":
    main()
