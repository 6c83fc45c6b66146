#!/usr/bin/env python3
"""skv_bench_serve end to end: decode worker + prefill worker + router on a tiny model as real
processes on loopback, loaded by skv_bench_serve; the checks read its --json file.

Checks: fixed concurrency 4 with 8 prompts and a Poisson rate (capped in flight, after a
warm-up) each complete 8 of 8 with exactly 8 * output_len tokens out and 8 * input_len in,
percentiles ordered (p50 <= p90 <= p99 <= max), TTFT > 0, the in-flight cap kept; a JSONL
workload (text and token-id prompts) produces each line's max_tokens; requests past their
deadline are counted as DEADLINE_EXCEEDED, the run ends and exits 1; a 2-rate sweep writes
both points and bench/plot_serve.py draws its PNG (skipped without matplotlib).
Exit 77 (skip) without grpcio-tools (the shared helpers need them).
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skv_e2e import Proc, check, make_model, parse_args, start_workers  # noqa: E402

IN_LEN, OUT_LEN, N = 32, 16, 8


def bench(args, router, tmp, name, flags, want_rc=0):
    """Runs skv_bench_serve with flags; checks its exit status; returns the JSON document."""
    out = os.path.join(tmp, f"{name}.json")
    argv = [args.bench, "--target", router.addr, "--timeout-ms", "60000", "--no-progress",
            "--json", out] + flags
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    print(res.stdout, res.stderr, sep="\n", flush=True)
    check(res.returncode == want_rc, f"{name}: exit {res.returncode} (want {want_rc})")
    with open(out) as f:
        return json.load(f)


def check_dists(point, what):
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        d = point[m]
        check(0 <= d["p50"] <= d["p90"] <= d["p99"] <= d["max"] and d["mean"] <= d["max"],
              f"{what}: {m} p50 {d['p50']:.2f} <= p90 <= p99 <= max {d['max']:.2f}")
    check(point["ttft_ms"]["p50"] > 0 and point["ttft_ms"]["count"] == point["completed"],
          f"{what}: TTFT > 0 for every completed request")
    check(point["e2el_ms"]["p50"] >= point["ttft_ms"]["p50"], f"{what}: E2E >= TTFT")


def check_full(doc, what, limit):
    check(doc["completed"] == N and doc["failed"] == 0 and len(doc["points"]) == 1,
          f"{what}: completed == {N}, failed == 0")
    p = doc["points"][0]
    check(p["total_output_tokens"] == N * OUT_LEN and p["total_input_tokens"] == N * IN_LEN,
          f"{what}: {N} * {OUT_LEN} tokens out, {N} * {IN_LEN} in")
    check(0 < p["itl_ms"]["count"] <= N * (OUT_LEN - 1),
          f"{what}: {p['itl_ms']['count']} inter-token gaps (one per token chunk after the first)")
    check(1 <= p["peak_inflight"] <= limit,
          f"{what}: peak in flight {p['peak_inflight']} <= {limit}")
    check(p["request_throughput"] > 0 and p["output_throughput"] > 0 and p["duration_s"] > 0,
          f"{what}: throughput and duration > 0")
    check_dists(p, what)
    return p


def test_concurrency(args, router, tmp):
    doc = bench(args, router, tmp, "concurrency",
                ["--concurrency", "4", "--num-prompts", str(N), "--input-len", str(IN_LEN),
                 "--output-len", str(OUT_LEN)])
    check_full(doc, "concurrency 4", 4)
    check(doc["parameters"]["mode"] == "concurrency" and doc["model"]["vocab_size"] > 0,
          "parameters and model in the JSON")


def test_rate(args, router, tmp):
    doc = bench(args, router, tmp, "rate",
                ["--request-rate", "20", "--max-concurrency", "3", "--num-prompts", str(N),
                 "--input-len", str(IN_LEN), "--output-len", str(OUT_LEN), "--warmup", "2",
                 "--seed", "7", "--goodput", "ttft:60000", "tpot:60000"])
    p = check_full(doc, "Poisson rate 20, at most 3 in flight, 2 warm-up", 3)
    check(p["request_rate"] == 20 and p["good_requests"] == N and
          abs(p["request_goodput"] - p["request_throughput"]) < 1e-6,
          "goodput with loose limits == request throughput")


def test_workload(args, router, tmp):
    path = os.path.join(tmp, "workload.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"prompt": "hello there, how are you doing today", "max_tokens": 5}))
        f.write("\n\n")
        f.write(json.dumps({"prompt_token_ids": [1000] + list(range(40, 60)), "max_tokens": 7}))
        f.write("\n")
    doc = bench(args, router, tmp, "workload", ["--workload", path, "--concurrency", "2"])
    p = doc["points"][0]
    check(p["completed"] == 2 and p["total_output_tokens"] == 12 and p["total_input_tokens"] > 21,
          "JSONL workload: text and token-id lines, each line's max_tokens")
    doc = bench(args, router, tmp, "workload6",
                ["--workload", path, "--concurrency", "2", "--num-prompts", "6"])
    check(doc["points"][0]["total_output_tokens"] == 36, "--num-prompts 6 cycles the 2 lines")


def test_deadline(args, router, tmp):
    doc = bench(args, router, tmp, "deadline",
                ["--concurrency", "2", "--num-prompts", "4", "--input-len", str(IN_LEN),
                 "--output-len", "1000", "--timeout-ms", "100"], want_rc=1)
    p = doc["points"][0]
    check(p["failed"] == 4 and p["completed"] == 0 and p["errors"] == {"DEADLINE_EXCEEDED": 4},
          "past the deadline: 4 failed, DEADLINE_EXCEEDED, exit 1")


def test_sweep(args, router, tmp):
    doc = bench(args, router, tmp, "sweep",
                ["--sweep-rates", "10,40", "--num-prompts", "4", "--input-len", str(IN_LEN),
                 "--output-len", str(OUT_LEN)])
    pts = doc["points"]
    check([p["request_rate"] for p in pts] == [10, 40] and all(p["completed"] == 4 for p in pts)
          and doc["failed"] == 0, "sweep 10,40: two points of 4 requests")
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib missing: the plot is not checked")
        return
    png = os.path.join(tmp, "sweep.png")
    subprocess.run([sys.executable, args.plot, os.path.join(tmp, "sweep.json"), "--out", png],
                   check=True, timeout=120)
    check(os.path.getsize(png) > 1000, "plot_serve.py wrote the sweep's PNG")


def main():
    args = parse_args(("--bench", "--plot", "--router", "--decode-worker", "--prefill-worker",
                       "--make-model"))
    with tempfile.TemporaryDirectory() as tmp:
        args.model = make_model(args, os.path.join(tmp, "model"))
        dec, pre = start_workers(args, tmp)
        procs = [dec, pre]
        try:
            router = Proc([args.router, "--tokenizer", args.model, "--decode", dec.addr,
                           "--prefill", pre.addr, "--disagg-min-tokens", "16"], tmp, "router")
            procs.insert(0, router)
            test_concurrency(args, router, tmp)
            test_rate(args, router, tmp)
            test_workload(args, router, tmp)
            test_deadline(args, router, tmp)
            test_sweep(args, router, tmp)
            for p in procs:
                check(p.stop() == 0, f"{p.name} exited 0 after SIGTERM")
        except BaseException:
            for p in procs:
                print(f"---- {p.name}\n{p.tail()}")
                if p.proc.poll() is None:
                    p.proc.kill()
            raise
    print("all skv_bench_serve end-to-end checks passed")


if __name__ == "__main__":
    main()
