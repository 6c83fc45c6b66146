#!/usr/bin/env python3
"""Workers on an fp8 (E4M3) KV cache end to end: decode and prefill workers as real processes
on loopback, one started with --kv-dtype fp8 and the other with SKV_KV_DTYPE=fp8 in its
environment, beside a decode worker on the backend's default (f32 on the CPU).

Checks:
- ModelInfo (the workers' and the router's) reports the KV dtype (f8e4m3 / f32); 4 MiB of KV
  hold 4x the f32 worker's blocks (on the prefill worker too, which has no ModelInfo);
- disaggregated (Reserve -> Prefill with KV pushed over UCX -> Decode) and combined requests on
  the fp8 pair give exactly skv_generate --kv-dtype fp8's tokens (greedy and seeded), also 8
  concurrent ones, and a prefill worker at --tp 2 (fp8) into the decode worker at TP 1 gives
  them too; afterwards zero reserved and zero used KV blocks on every worker;
- the KV layout fingerprints differ: a prefill into the f32 decode worker is refused with
  FAILED_PRECONDITION (and so is a Reserve stating the fp8 fingerprint), and a router over
  prefill fp8 -> decode f32 falls back to Worker.Generate on the decode worker (its tokens ==
  skv_generate's f32 tokens), while a router over the fp8 pair serves disaggregated;
- a KV dtype the backend does not take (bf16 on the CPU) or no dtype at all fails at startup
  with a message naming it.
Exit 77 (skip) without grpcio-tools.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skv_e2e import (Pair, Proc, Worker, check, cli_tokens, dump_and_kill,  # noqa: E402
                     expect_code, expect_workers_idle, parse_args, prepare, run_threads,
                     stop_workers, wait_until)
import grpc  # noqa: E402
from test_workers import combined, disagg, sampling, stats  # noqa: E402
import e2e_client as E  # noqa: E402

C = grpc.StatusCode
PROMPTS = [[1000] + [(29 * i + 7 * k) % 1000 for k in range(4 + 6 * i)] for i in range(4)]
N_TOKENS = 16
FP8 = ["--kv-dtype", "fp8"]


def test_info(dec8, pre8, dec32):
    from skv.v1 import generate_pb2 as G
    for w, want in ((dec8, "f8e4m3"), (dec32, "f32")):
        info = w.worker.ModelInfo(G.ModelInfoRequest(), timeout=5)
        check(info.dtype == want, f"{w.proc.name}: ModelInfo dtype {info.dtype}")
    n8, n32 = stats(dec8.decode).kv_blocks_total, stats(dec32.decode).kv_blocks_total
    check(n8 == 4 * n32, f"4 MiB hold {n8} fp8 blocks, 4 x the {n32} f32 blocks")
    n_pre = stats(pre8.prefill).kv_blocks_total  # a prefill worker has no ModelInfo
    check(n_pre == n8, f"prefill worker (SKV_KV_DTYPE=fp8): {n_pre} blocks, as fp8")


def test_identity(args, pair, refs, seeded_ref):
    for i, prompt in enumerate(PROMPTS):
        d, last, _ = disagg(pair, f"d{i}", prompt, N_TOKENS)
        c, _ = combined(pair, f"c{i}", prompt, N_TOKENS)
        check(d == refs[i] and c == refs[i] and last.completion_tokens == N_TOKENS,
              f"prompt {i} ({len(prompt)} tokens): fp8 disaggregated and combined greedy == "
              f"skv_generate --kv-dtype fp8")
    d, _, _ = disagg(pair, "ds", PROMPTS[1], N_TOKENS, sampling(0.8, 5))
    check(d == seeded_ref, "seeded sampling: fp8 disaggregated == skv_generate --kv-dtype fp8")
    out, errs = run_threads(8, lambda i: disagg(pair, f"conc{i}", PROMPTS[i % 4], N_TOKENS)[0])
    check(not errs and all(out[i] == refs[i % 4] for i in range(8)),
          f"8 concurrent fp8 disaggregated requests == solo {errs[:2]}")


def test_tp(pair, refs):
    for i, prompt in enumerate(PROMPTS[:2]):
        d, _, _ = disagg(pair, f"tp{i}", prompt, N_TOKENS)
        check(d == refs[i], f"prompt {i}: prefill fp8 at --tp 2 -> decode fp8 at tp 1 == "
                            f"skv_generate --kv-dtype fp8")


def test_mismatch(pre8, dec8, dec32):
    from skv.v1 import worker_pb2 as W
    r8 = dec8.decode.Reserve(W.ReserveRequest(request_id="fp8", prompt_token_ids=[1, 2]),
                             timeout=5)
    dec8.decode.Release(W.ReleaseRequest(request_id="fp8"), timeout=5)
    res = dec32.decode.Reserve(W.ReserveRequest(request_id="mm", prompt_token_ids=PROMPTS[2],
                                                max_tokens=4), timeout=5)
    check(res.target.layout_fingerprint != r8.target.layout_fingerprint,
          "f32 and fp8 KV caches have different layout fingerprints")
    before = stats(pre8.prefill).requests_total
    expect_code(lambda: pre8.prefill.Prefill(W.PrefillRequest(request_id="mm",
                                                              token_ids=PROMPTS[2],
                                                              target=res.target), timeout=10),
                C.FAILED_PRECONDITION, "fp8 prefill into an f32 decode worker")
    check(stats(pre8.prefill).requests_total == before, "the refused prefill never ran")
    dec32.decode.Release(W.ReleaseRequest(request_id="mm"), timeout=5)
    expect_code(lambda: dec32.decode.Reserve(
        W.ReserveRequest(request_id="mm2", prompt_token_ids=[1, 2],
                         layout_fingerprint=r8.target.layout_fingerprint), timeout=5),
        C.FAILED_PRECONDITION, "Reserve on the f32 decode worker stating the fp8 fingerprint")


def test_routers(args, tmp, pre8, dec8, dec32, ref8, ref32):
    prompt = PROMPTS[3]
    for name, dw, want, disagg_runs in (("router-fp8", dec8, ref8, 1),
                                        ("router-mm", dec32, ref32, 0)):
        rp = Proc([args.router, "--tokenizer", args.model, "--decode", dw.proc.addr,
                   "--prefill", pre8.proc.addr, "--disagg-min-tokens", "4"], tmp, name)
        r = E.Router(rp.addr)
        try:
            info = r.stub.ModelInfo(r.G.ModelInfoRequest(), timeout=5)
            check(info.dtype == ("f8e4m3" if disagg_runs else "f32"),
                  f"{name}: the router's ModelInfo names its decode worker's KV dtype {info.dtype}")
            before = stats(pre8.prefill).requests_total
            res = E.generate(r, token_ids=prompt, max_tokens=N_TOKENS)
            ran = stats(pre8.prefill).requests_total - before
            check(res.ids == want and ran == disagg_runs,
                  f"{name}: tokens == skv_generate's, prefill worker ran {ran} (want "
                  f"{disagg_runs}: {'disaggregated' if disagg_runs else 'fallback to decode'})")
            wait_until(lambda: E.idle(r), 10, f"{name} idle")
        finally:
            r.close()
            check(rp.stop() == 0, f"{name} exited 0")


def test_bad_dtype(args):
    for value, words in (("bf16", "not supported by the cpu backend"), ("fp4", "is not a dtype")):
        p = subprocess.run([args.decode_worker, "--model", args.model, "--kv-dtype", value,
                            "--threads", "1", "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 1 and words in p.stderr,
              f"--kv-dtype {value} fails at startup (exit {p.returncode}): '{words}'")


def main():
    args = parse_args(("--decode-worker", "--prefill-worker", "--generate", "--make-model",
                       "--router"))
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args, tmp)
        test_bad_dtype(args)
        refs = [cli_tokens(args.generate, args.model, p, N_TOKENS, extra=FP8) for p in PROMPTS]
        seeded_ref = cli_tokens(args.generate, args.model, PROMPTS[1], N_TOKENS, 0.8, 5, FP8)
        ref32 = cli_tokens(args.generate, args.model, PROMPTS[3], N_TOKENS)
        procs = []
        try:
            dec8 = Worker(args.decode_worker, args.model, tmp, "decode-fp8", FP8)
            procs.append(dec8)
            pre8 = Worker(args.prefill_worker, args.model, tmp, "prefill-fp8",
                          env={"SKV_KV_DTYPE": "fp8"})
            procs.append(pre8)
            dec32 = Worker(args.decode_worker, args.model, tmp, "decode-f32")
            procs.append(dec32)
            pre8tp = Worker(args.prefill_worker, args.model, tmp, "prefill-fp8-tp2",
                            FP8 + ["--tp", "2"])
            procs.append(pre8tp)
            test_info(dec8, pre8, dec32)
            test_identity(args, Pair(pre8, dec8), refs, seeded_ref)
            test_tp(Pair(pre8tp, dec8), refs)
            expect_workers_idle(procs, "after the fp8 requests")
            test_mismatch(pre8, dec8, dec32)
            test_routers(args, tmp, pre8, dec8, dec32, refs[3], ref32)
            expect_workers_idle(procs, "after the mismatch and router cases")
            stop_workers(procs)
        except BaseException:
            dump_and_kill(procs)
            raise
    print("all fp8 KV worker checks passed")


if __name__ == "__main__":
    main()
