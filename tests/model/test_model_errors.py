"""Bad checkpoints give a clear error naming the field or tensor, never a crash.

Makes a tiny checkpoint with the model maker, then damages copies of it (truncated file, bad
JSON, missing/extra/misshapen tensors, unsupported dtype or architecture, a broken shard
index) and runs skv_generate on each: it must exit with status 1 (not a signal) and print a
message that names what is wrong.

usage: test_model_errors.py MAKE_MODEL GENERATE
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def run_generate(gen, model):
    p = subprocess.run([gen, "--model", model, "--tokens", "1,2,3", "--max-tokens", "2"],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def write_st(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def variant(base, tmp, name, edit):
    d = os.path.join(tmp, name)
    shutil.copytree(base, d)
    edit(d)
    return d


def edit_header(fn):
    def edit(d):
        p = os.path.join(d, "model.safetensors")
        header, data = read_st(p)
        data = fn(header, data)
        write_st(p, header, data)
    return edit


def drop_tensor(name):
    def fn(header, data):
        del header[name]
        return data
    return fn


def extra_tensor(header, data):
    off = len(data)
    header["model.layers.0.mlp.extra.weight"] = {"dtype": "F32", "shape": [4],
                                                 "data_offsets": [off, off + 16]}
    return data + b"\0" * 16


def bad_shape(header, data):
    e = header["model.layers.1.self_attn.o_proj.weight"]
    rows, cols = e["shape"]
    e["shape"] = [rows * 2, cols // 2]  # same byte count, wrong shape
    return data


def bad_dtype(header, data):
    header["model.norm.weight"]["dtype"] = "I8"
    return data


def offsets_past_end(header, data):
    e = header["model.embed_tokens.weight"]
    e["data_offsets"] = [e["data_offsets"][0], len(data) + 64]
    return data


def edit_config(fn):
    def edit(d):
        p = os.path.join(d, "config.json")
        with open(p) as f:
            cfg = json.load(f)
        fn(cfg)
        with open(p, "w") as f:
            json.dump(cfg, f)
    return edit


def truncate(d):
    p = os.path.join(d, "model.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)


def bad_json(d):
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "llama", "hidden_size": ')


def main():
    make_model, gen = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="skv_errors_")
    try:
        base = os.path.join(tmp, "base")
        subprocess.run([make_model, "--out", base, "--preset", "tiny", "--dtype", "f32"], check=True,
                       capture_output=True)
        rc, err = run_generate(gen, base)
        assert rc == 0, "the undamaged model must run: " + err
        cases = [
            ("truncated", truncate, "model.safetensors"),
            ("bad_json", bad_json, "config.json"),
            ("no_hidden", edit_config(lambda c: c.pop("hidden_size")), "hidden_size"),
            ("bad_type", edit_config(lambda c: c.update(model_type="gpt2")), "gpt2"),
            ("heads", edit_config(lambda c: c.update(num_key_value_heads=3)), "num_key_value_heads"),
            ("bias", edit_config(lambda c: c.update(attention_bias=True)), "attention_bias"),
            ("rope", edit_config(lambda c: c.update(rope_scaling={"rope_type": "yarn", "factor": 2})),
             "yarn"),
            ("missing", edit_header(drop_tensor("model.layers.1.mlp.up_proj.weight")),
             "model.layers.1.mlp.up_proj.weight"),
            ("extra", edit_header(extra_tensor), "model.layers.0.mlp.extra.weight"),
            ("shape", edit_header(bad_shape), "model.layers.1.self_attn.o_proj.weight"),
            ("dtype", edit_header(bad_dtype), "model.norm.weight"),
            ("offsets", edit_header(offsets_past_end), "model.embed_tokens.weight"),
            ("vocab", edit_config(lambda c: c.update(vocab_size=c["vocab_size"] + 1)),
             "model.embed_tokens.weight"),
        ]
        failures = 0
        for name, edit, needle in cases:
            d = variant(base, tmp, name, edit)
            rc, err = run_generate(gen, d)
            ok = rc == 1 and needle in err
            print(f"{'ok  ' if ok else 'FAIL'} {name:10s} exit {rc} :: {err.strip().splitlines()[0] if err.strip() else ''}")
            failures += not ok
        print(f"{len(cases) - failures} passed, {failures} failed")
        return 1 if failures else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
