#!/usr/bin/env python3
"""Tensor-parallel workers end to end: prefill and decode workers started with --tp 1, 2 and 4
(CPU ranks as threads) as real processes on loopback, with KV moved between different head
splits over UCX (each prefill rank pushes the head ranges every decode rank needs).

Checks, on a tiny GQA model (8 query heads on 4 KV heads, so TP 1/2/4 all divide it):
- prefill tp -> decode tp for 2->1, 1->2, 2->4 and 4->2: greedy and seeded tokens equal the
  single-process CLI at TP 1;
- the layout fingerprint of a transfer target is the same at every decode TP size; ModelInfo
  and Stats report each worker's tp_size;
- 12 concurrent disaggregated requests over those four pairs equal their solo runs;
- afterwards zero used and zero reserved KV blocks on every worker;
- a decode worker of another KV layout (head_dim 8) is refused with FAILED_PRECONDITION by
  the prefill worker (and at Reserve), and a router in front of that pair falls back to
  Worker.Generate on the decode worker; a router over prefill tp 2 -> decode tp 4 serves the
  request disaggregated with the CLI's tokens;
- --tp 3 (does not divide the 4 KV heads) fails at startup with a message naming them.
Exit 77 (skip) without grpcio-tools.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skv_e2e import (Pair, Proc, Worker, check, cli_tokens, dump_and_kill,  # noqa: E402
                     expect_code, expect_workers_idle, make_model, parse_args, prepare,
                     run_threads, stop_workers, wait_until)
import grpc  # noqa: E402
from test_workers import disagg as disagg_full, sampling, stats  # noqa: E402
import e2e_client as E  # noqa: E402

C = grpc.StatusCode
GQA = ["--heads", "8", "--kv-heads", "4", "--head-dim", "16"]
PAIRS = [(2, 1), (1, 2), (2, 4), (4, 2)]  # (prefill tp, decode tp)
PROMPTS = [[1000] + [(41 * i + 13 * k) % 1000 for k in range(5 + 9 * i)] for i in range(4)]
N_TOKENS = 16


def disagg(pair, rid, prompt, n, samp=None):
    """Reserve on D -> Prefill on P (KV pushed over UCX) -> Decode on D: the tokens."""
    return disagg_full(pair, rid, prompt, n, samp)[0]


def test_info(dec, pre):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    for tp, w in dec.items():
        info = w.worker.ModelInfo(G.ModelInfoRequest(), timeout=5)
        check(info.tp_size == tp and info.n_kv_heads == 4 and stats(w.decode).tp_size == tp,
              f"decode --tp {tp}: ModelInfo and Stats report tp_size {tp}, 4 KV heads")
    for tp, w in pre.items():
        check(stats(w.prefill).tp_size == tp, f"prefill --tp {tp}: Stats reports tp_size {tp}")
    fps = set()
    for tp, w in dec.items():
        res = w.decode.Reserve(W.ReserveRequest(request_id="fp", prompt_token_ids=[1, 2, 3]),
                               timeout=5)
        fps.add(res.target.layout_fingerprint)
        w.decode.Release(W.ReleaseRequest(request_id="fp"), timeout=5)
    check(len(fps) == 1, "the transfer target's layout fingerprint is the same at TP 1, 2, 4")
    return fps.pop()


def test_pairs(args, dec, pre, refs, seeded_ref):
    for p, d in PAIRS:
        pair = Pair(pre[p], dec[d])
        for i, prompt in enumerate(PROMPTS[:3]):
            got = disagg(pair, f"g{p}{d}{i}", prompt, N_TOKENS)
            check(got == refs[i], f"prefill tp {p} -> decode tp {d}, prompt {i} "
                                  f"({len(prompt)} tokens): greedy == CLI at tp 1")
        got = disagg(pair, f"s{p}{d}", PROMPTS[3], N_TOKENS, sampling(0.8, 11))
        check(got == seeded_ref, f"prefill tp {p} -> decode tp {d}: seeded sampling == CLI")


def test_concurrent(dec, pre, refs, n=12):
    def run(i):
        p, d = PAIRS[i % len(PAIRS)]
        return disagg(Pair(pre[p], dec[d]), f"c{i}", PROMPTS[i % 3], N_TOKENS)

    out, errs = run_threads(n, run)
    check(not errs, f"{n} concurrent requests over the four TP pairs completed {errs[:3]}")
    check(all(out[i] == refs[i % 3] for i in range(n)), f"{n} concurrent == solo (CLI)")


def test_mismatch(other, pre2, fingerprint):
    from skv.v1 import worker_pb2 as W
    res = other.decode.Reserve(W.ReserveRequest(request_id="mm", prompt_token_ids=PROMPTS[1],
                                                max_tokens=4), timeout=5)
    check(res.target.layout_fingerprint != fingerprint,
          "a model with another head_dim has another layout fingerprint")
    before = stats(pre2.prefill).requests_total
    expect_code(lambda: pre2.prefill.Prefill(W.PrefillRequest(request_id="mm",
                                                              token_ids=PROMPTS[1],
                                                              target=res.target), timeout=10),
                C.FAILED_PRECONDITION, "prefill tp 2 into a decode worker of another KV layout")
    check(stats(pre2.prefill).requests_total == before, "the refused prefill never ran")
    other.decode.Release(W.ReleaseRequest(request_id="mm"), timeout=5)
    expect_code(lambda: other.decode.Reserve(W.ReserveRequest(request_id="mm2",
                                                              prompt_token_ids=[1, 2],
                                                              layout_fingerprint=fingerprint),
                                             timeout=5),
                C.FAILED_PRECONDITION, "Reserve stating the other model's fingerprint")


def test_routers(args, tmp, dec4, pre2, other, refs, other_ref):
    """Router over P tp2 -> D tp4: disaggregated; over P tp2 -> D of another layout: the
    prefill refuses (FAILED_PRECONDITION) and the router falls back to D alone."""
    prompt = PROMPTS[2]
    for name, dw, want in (("router-tp", dec4, refs[2]), ("router-mm", other, other_ref)):
        rp = Proc([args.router, "--tokenizer", args.model, "--decode", dw.proc.addr,
                   "--prefill", pre2.proc.addr, "--disagg-min-tokens", "4"], tmp, name)
        r = E.Router(rp.addr)
        try:
            before = stats(pre2.prefill).requests_total
            res = E.generate(r, token_ids=prompt, max_tokens=N_TOKENS)
            ran = stats(pre2.prefill).requests_total - before
            if name == "router-tp":
                check(res.ids == want and ran == 1,
                      "router: prefill tp 2 -> decode tp 4, disaggregated, tokens == CLI")
            else:
                check(res.ids == want and ran == 0,
                      "router: KV layout mismatch falls back to the decode worker, tokens == "
                      "its CLI")
            wait_until(lambda: E.idle(r), 10, f"{name} idle")
        finally:
            r.close()
            check(rp.stop() == 0, f"{name} exited 0")


def test_bad_tp(args):
    p = subprocess.run([args.decode_worker, "--model", args.model, "--tp", "3", "--threads", "1",
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and "does not divide num_key_value_heads" in p.stderr,
          f"--tp 3 on 4 KV heads fails at startup (exit {p.returncode})")


def main():
    args = parse_args(("--decode-worker", "--prefill-worker", "--generate", "--make-model",
                       "--router"))
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args, tmp, GQA)
        other_model = make_model(args, os.path.join(tmp, "other"),
                                 ["--heads", "8", "--kv-heads", "4", "--head-dim", "8"])
        test_bad_tp(args)
        refs = [cli_tokens(args.generate, args.model, p, N_TOKENS) for p in PROMPTS[:3]]
        seeded_ref = cli_tokens(args.generate, args.model, PROMPTS[3], N_TOKENS, 0.8, 11)
        other_ref = cli_tokens(args.generate, other_model, PROMPTS[2], N_TOKENS)
        procs = []
        try:
            dec = {tp: Worker(args.decode_worker, args.model, tmp, f"decode{tp}", ["--tp", str(tp)], kv_mb=2)
                   for tp in (1, 2, 4)}
            procs += dec.values()
            pre = {tp: Worker(args.prefill_worker, args.model, tmp, f"prefill{tp}", ["--tp", str(tp)], kv_mb=2)
                   for tp in (1, 2, 4)}
            procs += pre.values()
            other = Worker(args.decode_worker, other_model, tmp, "decode-other", ["--tp", "2"], kv_mb=2)
            procs.append(other)
            fingerprint = test_info(dec, pre)
            test_pairs(args, dec, pre, refs, seeded_ref)
            test_concurrent(dec, pre, refs)
            expect_workers_idle(procs, "after the TP pairs")
            test_mismatch(other, pre[2], fingerprint)
            test_routers(args, tmp, dec[4], pre[2], other, refs, other_ref)
            expect_workers_idle(procs, "after the mismatch and router cases")
            stop_workers(procs)
        except BaseException:
            dump_and_kill(procs)
            raise
    print("all tensor-parallel worker checks passed")


if __name__ == "__main__":
    main()
