#!/usr/bin/env python3
"""Workers end to end: a decode worker and a prefill worker as real processes on loopback,
driven over their internal gRPC APIs (skv.v1.Decode / Prefill / Worker) by Python grpcio.

Checks: the disaggregated path (Reserve -> Prefill with KV pushed over UCX -> Decode) and the
combined path give exactly the tokens of the single-process CLI (greedy and seeded sampling);
32 concurrent disaggregated requests equal their solo runs; client cancel, deadline, Release
and lease expiry leave zero reserved and zero used KV blocks on both workers; bad input gets
the right status code; logprobs; SIGTERM drains an in-flight stream and exits 0.
Exit 77 (skip) without grpcio-tools.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skv_e2e import (check, cli_tokens, expect_code, parse_args, prepare,  # noqa: E402
                     run_threads, start_workers, wait_until)
import grpc  # noqa: E402

C = grpc.StatusCode
PROMPTS = [[1000] + [(37 * i + 11 * k) % 1000 for k in range(3 + 5 * i)] for i in range(8)]


class Cluster:
    def __init__(self, args, tmp):
        from skv.v1 import worker_pb2_grpc as WG
        self.dec, self.pre = start_workers(args, tmp)
        self.dch = grpc.insecure_channel(self.dec.addr)
        self.pch = grpc.insecure_channel(self.pre.addr)
        self.worker = WG.WorkerStub(self.dch)
        self.decode = WG.DecodeStub(self.dch)
        self.prefill = WG.PrefillStub(self.pch)


def sampling(temperature=0.0, seed=None):
    from skv.v1 import generate_pb2 as G
    s = G.SamplingParams(temperature=temperature)
    if seed is not None:
        s.seed = seed
    return s


def combined(cl, rid, prompt, n, samp=None, logprobs=0, timeout=60):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    req = W.WorkerGenerateRequest(request_id=rid, token_ids=prompt, sampling=samp or sampling(),
                                  stop=G.StopCriteria(max_tokens=n, ignore_eos=True),
                                  logprobs=logprobs)
    toks, chunks = [], list(cl.worker.Generate(req, timeout=timeout))
    for c in chunks:
        toks += list(c.token_ids)
    return toks, chunks


def disagg(cl, rid, prompt, n, samp=None, lease_ms=10000):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    res = cl.decode.Reserve(W.ReserveRequest(request_id=rid, prompt_token_ids=prompt, max_tokens=n,
                                             lease_ms=lease_ms), timeout=10)
    pr = cl.prefill.Prefill(W.PrefillRequest(request_id=rid, token_ids=prompt,
                                             sampling=samp or sampling(), target=res.target),
                            timeout=60)
    toks = [pr.first_token]
    req = W.DecodeRequest(request_id=rid, first_token=pr.first_token, sampling=samp or sampling(),
                          stop=G.StopCriteria(max_tokens=n, ignore_eos=True),
                          n_prompt_tokens=len(prompt))
    last = None
    for c in cl.decode.Decode(req, timeout=60):
        toks += list(c.token_ids)
        last = c
    return toks, last, pr


def stats(stub):
    from skv.v1 import generate_pb2 as G
    return stub.Stats(G.StatsRequest(), timeout=5)


def expect_idle(cl, what):
    """Both workers: every KV block free, nothing reserved, nothing running."""
    def idle():
        d, p = stats(cl.decode), stats(cl.prefill)
        return (d.kv_blocks_free == d.kv_blocks_total and d.kv_blocks_reserved == 0 and
                d.running_requests == 0 and p.kv_blocks_free == p.kv_blocks_total)
    wait_until(idle, 10, what)
    check(True, f"{what}: zero reserved and zero used KV blocks on both workers")


def test_identity(args, cl):
    for i, prompt in enumerate(PROMPTS[:4]):
        ref = cli_tokens(args.generate, args.model, prompt, 24)
        c, _ = combined(cl, f"c{i}", prompt, 24)
        d, last, _ = disagg(cl, f"d{i}", prompt, 24)
        check(c == ref and d == ref, f"prompt {i} ({len(prompt)} tokens): combined and "
                                     f"disaggregated greedy == CLI")
        check(last.completion_tokens == 24 and last.finish_reason == 2, "length finish, 24 tokens")
    ref = cli_tokens(args.generate, args.model, PROMPTS[5], 20, temperature=0.8, seed=7)
    c, _ = combined(cl, "cs", PROMPTS[5], 20, sampling(0.8, 7))
    d, _, _ = disagg(cl, "ds", PROMPTS[5], 20, sampling(0.8, 7))
    check(c == ref and d == ref, "seeded sampling: combined == disaggregated == CLI")
    expect_idle(cl, "after identity runs")


def test_concurrent(args, cl, n=32):
    solo = {i: combined(cl, f"solo{i}", PROMPTS[i % 8], 12)[0] for i in range(8)}
    out, errs = run_threads(n, lambda i: disagg(cl, f"conc{i}", PROMPTS[i % 8], 12)[0])
    check(not errs, f"{n} concurrent disaggregated requests completed {errs[:3]}")
    check(all(out[i] == solo[i % 8] for i in range(n)), f"{n} concurrent == solo")
    expect_idle(cl, "after concurrent runs")


def test_cancel_deadline(cl):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    res = cl.decode.Reserve(W.ReserveRequest(request_id="cx", prompt_token_ids=PROMPTS[3],
                                             max_tokens=1500), timeout=10)
    pr = cl.prefill.Prefill(W.PrefillRequest(request_id="cx", token_ids=PROMPTS[3],
                                             target=res.target), timeout=60)
    call = cl.decode.Decode(W.DecodeRequest(request_id="cx", first_token=pr.first_token,
                                            stop=G.StopCriteria(max_tokens=1500, ignore_eos=True)),
                            timeout=60)
    got = 0
    for c in call:
        got += len(c.token_ids)
        if got >= 3:
            call.cancel()
            break
    check(got >= 3, "decode stream started before the cancel")
    expect_idle(cl, "client cancel of a decode stream")
    expect_code(lambda: combined(cl, "dl", PROMPTS[2], 1500, timeout=0.3), C.DEADLINE_EXCEEDED,
                "deadline on a long combined stream")
    expect_idle(cl, "deadline")
    r = cl.decode.Release(W.ReleaseRequest(request_id="nobody"), timeout=5)
    check(not r.released, "Release of an unknown id says released=false")
    cl.decode.Reserve(W.ReserveRequest(request_id="rel", prompt_token_ids=PROMPTS[4]), timeout=5)
    check(stats(cl.decode).kv_blocks_reserved > 0, "a reservation shows in Stats")
    check(cl.decode.Release(W.ReleaseRequest(request_id="rel"), timeout=5).released, "Release")
    expect_idle(cl, "Release")
    cl.decode.Reserve(W.ReserveRequest(request_id="exp", prompt_token_ids=PROMPTS[4],
                                       lease_ms=300), timeout=5)
    expect_idle(cl, "lease expiry without a prefill")
    expect_code(lambda: list(cl.decode.Decode(W.DecodeRequest(request_id="exp", first_token=5),
                                              timeout=5)),
                C.NOT_FOUND, "Decode after the lease expired")


def test_bad_input(cl):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    bad = [
        ([], sampling(), 4, 0, C.INVALID_ARGUMENT, "empty prompt"),
        ([1, 5000], sampling(), 4, 0, C.INVALID_ARGUMENT, "token id outside the vocabulary"),
        ([1, 2], sampling(), 5000, 0, C.OUT_OF_RANGE, "prompt + max_tokens beyond the context"),
        ([1, 2], G.SamplingParams(top_p=2.0), 4, 0, C.INVALID_ARGUMENT, "top_p = 2"),
        ([1, 2], G.SamplingParams(temperature=-1), 4, 0, C.INVALID_ARGUMENT, "temperature < 0"),
        ([1, 2], sampling(), 4, 50, C.INVALID_ARGUMENT, "logprobs = 50"),
    ]
    for prompt, samp, n, lp, code, what in bad:
        req = W.WorkerGenerateRequest(token_ids=prompt, sampling=samp, logprobs=lp,
                                      stop=G.StopCriteria(max_tokens=n))
        expect_code(lambda: list(cl.worker.Generate(req, timeout=10)), code, what)
    expect_code(lambda: cl.decode.Reserve(W.ReserveRequest(request_id="fp", prompt_token_ids=[1, 2],
                                                           layout_fingerprint=12345), timeout=5),
                C.FAILED_PRECONDITION, "Reserve with another KV layout fingerprint")
    res = cl.decode.Reserve(W.ReserveRequest(request_id="garbage", prompt_token_ids=[1, 2, 3]),
                            timeout=5)
    tgt = W.TransferTarget()
    tgt.CopyFrom(res.target)
    tgt.descriptor = b"\x00" * 64
    expect_code(lambda: cl.prefill.Prefill(W.PrefillRequest(request_id="garbage",
                                                            token_ids=[1, 2, 3], target=tgt),
                                           timeout=10),
                C.INVALID_ARGUMENT, "Prefill with a garbage descriptor")
    tgt.CopyFrom(res.target)
    tgt.layout_fingerprint ^= 1
    expect_code(lambda: cl.prefill.Prefill(W.PrefillRequest(request_id="garbage",
                                                            token_ids=[1, 2, 3], target=tgt),
                                           timeout=10),
                C.FAILED_PRECONDITION, "Prefill into another KV layout")
    cl.decode.Release(W.ReleaseRequest(request_id="garbage"), timeout=5)
    expect_code(lambda: list(cl.decode.Decode(W.DecodeRequest(request_id="none", first_token=1),
                                              timeout=5)),
                C.NOT_FOUND, "Decode without a reservation")
    expect_code(lambda: cl.dch.unary_unary("/skv.v1.Decode/Reserve")(b"\xff\xff\xff", timeout=5),
                C.INVALID_ARGUMENT, "malformed protobuf bytes")
    expect_idle(cl, "after bad input")


def test_logprobs(cl):
    toks, chunks = combined(cl, "lp", PROMPTS[1], 6, logprobs=3)
    lps = [lp for c in chunks for lp in c.logprobs]
    check(len(lps) == 6 and all(len(lp.top) == 3 for lp in lps) and
          all(lp.token_id == t for lp, t in zip(lps, toks)) and
          all(lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob for lp in lps),
          "logprobs: one per token, 3 tops each, best first")


def test_drain(cl):
    from skv.v1 import generate_pb2 as G, worker_pb2 as W
    req = W.WorkerGenerateRequest(token_ids=PROMPTS[0], stop=G.StopCriteria(max_tokens=64,
                                                                            ignore_eos=True))
    call = cl.worker.Generate(req, timeout=60)
    first = next(call)
    cl.dec.proc.send_signal(15)
    rest = list(call)
    n = len(first.token_ids) + sum(len(c.token_ids) for c in rest)
    check(n == 64, "SIGTERM: the in-flight stream finished all 64 tokens")
    check(cl.dec.stop() == 0, "decode worker exited 0 after the drain")
    check(cl.pre.stop() == 0, "prefill worker exited 0")


def main():
    args = parse_args(("--decode-worker", "--prefill-worker", "--generate", "--make-model"))
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args, tmp)
        cl = Cluster(args, tmp)
        try:
            test_identity(args, cl)
            test_concurrent(args, cl)
            test_cancel_deadline(cl)
            test_bad_input(cl)
            test_logprobs(cl)
            test_drain(cl)
        except BaseException:
            print(cl.dec.tail(), cl.pre.tail(), sep="\n----\n")
            cl.dec.kill()
            cl.pre.kill()
            raise
    print("all worker end-to-end checks passed")


if __name__ == "__main__":
    main()
