#!/usr/bin/env python3
"""Router end to end: decode worker + prefill worker + router as real processes on loopback,
driven through the public skv.v1.Generation API by Python grpcio (e2e_client.py).

Checks: greedy tokens through the router (disaggregated for long prompts, Worker.Generate for
short ones) equal the single-process CLI; text prompts: ids = Tokenize, text = Detokenize of
the ids; stop strings trim the text (with and without include_stop_string) and free the KV;
64 concurrent streams equal their solo runs; client cancel and deadline leave zero reserved
and zero used blocks (router Stats); bad inputs get the right codes naming the field;
--max-inflight answers RESOURCE_EXHAUSTED; a dead prefill worker falls back to the decode
worker; SIGTERM on the router lets an in-flight stream finish and exits 0; a prefill worker
with a saturated KV link (--push-backlog-ms) hands prompts back and the router decodes them
alone, every request still identical to its solo run.
Exit 77 (skip) without grpcio-tools.
"""
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skv_e2e import (Proc, check, cli_tokens, expect_code, parse_args, prepare,  # noqa: E402
                     start_workers, wait_until)
import grpc  # noqa: E402
import e2e_client as E  # noqa: E402

C = grpc.StatusCode
DISAGG_MIN = 8
PROMPTS = [[1000] + [(37 * i + 11 * k) % 1000 for k in range(2 + 5 * i)] for i in range(8)]


class Cluster:
    def __init__(self, args, tmp, max_inflight=256, prefill_extra=()):
        self.dec, self.pre = start_workers(args, tmp, prefill_extra)
        self.router = Proc([args.router, "--tokenizer", args.model, "--decode", self.dec.addr,
                            "--prefill", f"localhost:{self.pre.port}", "--backoff-ms", "60000",
                            "--disagg-min-tokens", str(DISAGG_MIN), "--max-inflight",
                            str(max_inflight)], tmp, "router")
        self.r = E.Router(self.router.addr)
        self.info = self.r.stub.ModelInfo(self.r.G.ModelInfoRequest(), timeout=5)

    def procs(self):
        return [self.router, self.dec, self.pre]


def expect_idle(cl, what):
    wait_until(lambda: E.idle(cl.r), 10, what)
    check(True, f"{what}: router Stats shows zero reserved and zero used KV blocks")


def test_identity(args, cl):
    for i in (0, 1, 3, 6):
        prompt = PROMPTS[i]
        res = E.generate(cl.r, token_ids=prompt, max_tokens=20)
        path = "disaggregated" if len(prompt) >= DISAGG_MIN else "combined"
        check(res.ids == cli_tokens(args.generate, args.model, prompt, 20),
              f"prompt {i} ({len(prompt)} tokens, {path}): greedy == CLI")
        last = res.last
        check(last.finish_reason == cl.r.G.FINISH_REASON_LENGTH and
              last.usage.completion_tokens == 20 and last.usage.prompt_tokens == len(prompt) and
              last.timings.ttft_us > 0 and last.timings.total_us >= last.timings.ttft_us,
              "last chunk: LENGTH, usage, router timings")
    s = E.stats(cl.r)
    check(s.role == "router" and len(s.workers) == 2 and s.requests_total >= 4, "Stats: router + 2 workers")


def test_c_client(args, cl):
    """Our C client against the router: same text as the Python client, clear errors."""
    text = "the C client asks the same question"
    want = E.generate(cl.r, text=text, max_tokens=16).text
    base = [args.client, "--target", cl.router.addr, "--timeout-ms", "30000"]
    out = subprocess.run(base + ["generate", "--prompt", text, "--max-tokens", "16"],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 0 and out.stdout == want and "finish=length" in out.stderr,
          "C client generate: exit 0, same text as the Python client, finish reason")
    bad = subprocess.run(base + ["generate", "--prompt", text, "--top-p", "3"],
                         capture_output=True, text=True, timeout=60)
    check(bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "top_p" in bad.stderr,
          "C client: a bad top_p exits 1 with INVALID_ARGUMENT naming the field")
    health = subprocess.run(base + ["health"], capture_output=True, text=True, timeout=30)
    check(health.returncode == 0 and "SERVING" in health.stdout, "C client health: SERVING")


def test_text(cl):
    G = cl.r.G
    text = "hello there, how are you doing today my friend? tell me more"
    ids = list(cl.r.stub.Tokenize(G.TokenizeRequest(text=text, add_special_tokens=True),
                                  timeout=5).ids)
    res = E.generate(cl.r, text=text, max_tokens=24)
    full = cl.r.stub.Detokenize(G.DetokenizeRequest(ids=res.ids), timeout=5).text
    check(ids[0] == cl.info.bos_token_id and res.text == full,
          "text prompt: BOS added, streamed text == Detokenize(ids)")
    # a stop string taken from the middle of the greedy text
    pos = len(full) // 2
    stop = full[pos:pos + 3]
    first = full.find(stop)
    res2 = E.generate(cl.r, text=text, max_tokens=24, stop=[stop])
    check(res2.text == full[:first] and res2.last.finish_reason == G.FINISH_REASON_STOP and
          res2.last.finish_detail == stop and res2.last.usage.completion_tokens < 24,
          f"stop string {stop!r}: text trimmed before it, STOP, detail")
    res3 = E.generate(cl.r, text=text, max_tokens=24, stop=[stop], include_stop_string=True)
    check(res3.text == full[:first + len(stop)], "include_stop_string keeps the stop string")
    chat = E.generate(cl.r, chat=[("user", "hi there")], max_tokens=4)
    check(len(chat.ids) == 4, "chat input")
    expect_idle(cl, "after stop strings")


def test_concurrent(cl, n=64):
    G = cl.r.G
    solo = {i: E.generate(cl.r, token_ids=PROMPTS[i], max_tokens=12).ids for i in range(8)}
    reqs = [E.request(G, token_ids=PROMPTS[i % 8], max_tokens=12) for i in range(n)]
    out = E.run_concurrent(cl.r, reqs)
    errs = [o for o in out if not isinstance(o, E.Result)]
    check(not errs, f"{n} concurrent streams completed {errs[:2]}")
    check(all(out[i].ids == solo[i % 8] for i in range(n)), f"{n} concurrent == solo")
    expect_idle(cl, "after concurrent streams")


def test_cancel_deadline(cl):
    G = cl.r.G
    for i in (0, 5):  # combined and disaggregated
        req = E.request(G, token_ids=PROMPTS[i], max_tokens=1500)
        check(E.cancel_mid_stream(cl.r, req, 3) >= 3, f"prompt {i}: stream started, then cancelled")
        expect_idle(cl, f"client cancel (prompt {i})")
        code = E.deadline(cl.r, E.request(G, token_ids=PROMPTS[i], max_tokens=1500), 0.3)
        check(code == C.DEADLINE_EXCEEDED, f"prompt {i}: deadline -> {code}")
        expect_idle(cl, f"deadline (prompt {i})")


def test_short_deadlines(cl):
    """Requests whose deadline (1-3 ms) or cancel lands while Reserve, Prefill or the start
    of Decode is in flight leave no KV held: the router releases the reservation, which the
    decode worker may have made after the call ended, instead of leaving it to its lease."""
    G = cl.r.G
    threads = []
    for k in range(30):
        req = E.request(G, token_ids=PROMPTS[6 + k % 2], max_tokens=4)
        t = threading.Thread(target=E.deadline, args=(cl.r, req, 0.001 + 0.001 * (k % 3)))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(30)
    # Bound: a push the deadline cut short ends when its endpoint is closed (a few seconds
    # under the sanitizers); the lease it would otherwise wait for is 30 s.
    wait_until(lambda: E.idle(cl.r), 10, "KV of short-deadline requests released within 10 s")
    check(True, "30 requests with 1-3 ms deadlines: no KV held 10 s later (the lease is 30 s)")


def test_bad_input(cl):
    for what, ok, code, details in E.check_bad_inputs(cl.r, cl.info.vocab_size,
                                                        cl.info.context_length):
        check(ok, f"{what}: {code} ({details})")
    expect_code(lambda: cl.r.stub.Detokenize(cl.r.G.DetokenizeRequest(ids=[cl.info.vocab_size]),
                                             timeout=5), C.INVALID_ARGUMENT, "Detokenize bad id")


def test_max_inflight(args, tmp):
    cl = Cluster(args, tmp + "/mi", max_inflight=1)
    try:
        G = cl.r.G
        call = cl.r.stub.Generate(E.request(G, token_ids=PROMPTS[0], max_tokens=1000), timeout=60)
        next(call)
        expect_code(lambda: E.generate(cl.r, token_ids=PROMPTS[0], max_tokens=2),
                    C.RESOURCE_EXHAUSTED, "beyond --max-inflight")
        call.cancel()
    finally:
        for p in cl.procs():
            p.stop()


def test_push_backlog(args, tmp):
    """A prefill worker whose KV link is saturated (--push-backlog-ms 1: any queue of pushes is
    too long) refuses prompts UNAVAILABLE; the router decodes them on the decode worker alone,
    so every request still completes with the tokens it gets alone, and no KV stays held."""
    cl = Cluster(args, tmp, prefill_extra=["--push-backlog-ms", "1"])
    try:
        G = cl.r.G
        long = [i for i in range(8) if len(PROMPTS[i]) >= DISAGG_MIN]
        solo = {i: E.generate(cl.r, token_ids=PROMPTS[i], max_tokens=8).ids for i in long}
        reqs = [E.request(G, token_ids=PROMPTS[long[k % len(long)]], max_tokens=8)
                for k in range(24)]
        out = E.run_concurrent(cl.r, reqs)
        errs = [o for o in out if not isinstance(o, E.Result)]
        check(not errs, f"saturated KV link: 24 concurrent requests completed {errs[:2]}")
        check(all(out[k].ids == solo[long[k % len(long)]] for k in range(24)),
              "saturated KV link: every request == its solo run")
        with open(cl.router.log_path) as f:
            refused = sum(1 for line in f if "KV link to the decode worker is saturated" in line
                          and "alone" in line)
        check(refused > 0, f"saturated KV link: {refused} prompts refused by the prefill worker "
                           "and decoded by the decode worker alone")
        expect_idle(cl, "after the saturated link")
    finally:
        for p in cl.procs():
            p.stop()


def test_prefill_down(cl):
    check(cl.pre.stop() == 0, "prefill worker stopped")
    res = E.generate(cl.r, token_ids=PROMPTS[6], max_tokens=8)
    check(len(res.ids) == 8, "prefill worker down: the decode worker did the whole request")
    s = E.stats(cl.r)
    check(any(w.role == "unreachable" for w in s.workers), "Stats marks the prefill worker")


def test_router_drain(cl):
    call = cl.r.stub.Generate(E.request(cl.r.G, token_ids=PROMPTS[1], max_tokens=64), timeout=60)
    first = next(call)
    cl.router.proc.send_signal(15)
    n = len(first.token_ids) + sum(len(c.token_ids) for c in call)
    check(n == 64, "SIGTERM on the router: the in-flight stream finished")
    check(cl.router.stop() == 0, "router exited 0 after the drain")
    check(cl.dec.stop() == 0, "decode worker exited 0")


def main():
    args = parse_args(("--router", "--decode-worker", "--prefill-worker", "--generate",
                       "--make-model", "--client"))
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args, tmp)
        cl = Cluster(args, tmp)
        try:
            test_identity(args, cl)
            test_text(cl)
            test_c_client(args, cl)
            test_concurrent(cl)
            test_cancel_deadline(cl)
            test_short_deadlines(cl)
            test_bad_input(cl)
            test_prefill_down(cl)
            test_router_drain(cl)
            os.makedirs(tmp + "/mi")
            test_max_inflight(args, tmp)
            os.makedirs(tmp + "/backlog")
            test_push_backlog(args, tmp + "/backlog")
        except BaseException:
            for p in cl.procs():
                print(f"---- {p.name}\n{p.tail()}")
                p.kill()
            raise
    print("all router end-to-end checks passed")


if __name__ == "__main__":
    main()
