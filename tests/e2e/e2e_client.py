"""A Python grpcio client of the router's public API (skv.v1.Generation) for end-to-end tests.

Stubs come from skv_e2e.gen_stubs (generated at test time). Every function takes a Router
(below), makes real calls with deadlines and returns what it saw; the checks against
expectations stay in the tests. Functions:
  generate(r, ...)              one stream -> Result (chunks, ids, text, last chunk)
  run_concurrent(r, reqs)       N streams at once on threads -> [Result | grpc.RpcError]
  cancel_mid_stream(r, req, k)  cancel after k tokens -> tokens seen before the cancel
  deadline(r, req, timeout_s)   a stream under a short deadline -> the grpc.StatusCode
  bad_inputs(G)                 table of (what, request, expected code, field named)
  check_bad_inputs(r)           runs that table -> [(what, ok, code, details)]
  stats(r) / idle(r)            router Stats; idle: no request running, every worker's KV free
"""
import threading

import grpc


class Router:
    """Channel and stubs of one router address."""

    def __init__(self, addr):
        from skv.v1 import generate_pb2, generate_pb2_grpc
        self.G = generate_pb2
        self.channel = grpc.insecure_channel(addr)
        self.stub = generate_pb2_grpc.GenerationStub(self.channel)

    def close(self):
        self.channel.close()


class Result:
    def __init__(self, chunks):
        self.chunks = chunks
        self.ids = [t for c in chunks for t in c.token_ids]
        self.text = "".join(c.text for c in chunks)
        self.last = chunks[-1] if chunks else None
        self.logprobs = [lp for c in chunks for lp in c.logprobs]


def request(G, text=None, token_ids=None, chat=None, max_tokens=16, temperature=0.0, seed=None,
            stop=(), stop_token_ids=(), ignore_eos=True, min_tokens=0, logprobs=0,
            skip_special_tokens=False, include_stop_string=False, request_id=""):
    """Builds a GenerateRequest; chat is a list of (role, content)."""
    req = G.GenerateRequest(request_id=request_id, logprobs=logprobs,
                            skip_special_tokens=skip_special_tokens,
                            include_stop_string=include_stop_string,
                            stop=G.StopCriteria(max_tokens=max_tokens, stop=list(stop),
                                                stop_token_ids=list(stop_token_ids),
                                                ignore_eos=ignore_eos, min_tokens=min_tokens),
                            sampling=G.SamplingParams(temperature=temperature))
    if seed is not None:
        req.sampling.seed = seed
    if text is not None:
        req.text = text
    elif token_ids is not None:
        req.token_ids.ids.extend(token_ids)
    elif chat is not None:
        req.chat.messages.extend(G.ChatMessage(role=r, content=c) for r, c in chat)
    return req


def generate(r, req=None, timeout=60, **kw):
    """Runs one Generate stream to its end; raises grpc.RpcError on a non-OK status."""
    req = req if req is not None else request(r.G, **kw)
    return Result(list(r.stub.Generate(req, timeout=timeout)))


def run_concurrent(r, reqs, timeout=120):
    """Runs every request on its own thread at once; returns results in order (a Result or
    the grpc.RpcError that ended that stream)."""
    out = [None] * len(reqs)

    def run(i):
        try:
            out[i] = generate(r, reqs[i], timeout=timeout)
        except grpc.RpcError as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


def cancel_mid_stream(r, req, after_tokens=3, timeout=60):
    """Cancels the stream once `after_tokens` tokens arrived; returns how many arrived."""
    call = r.stub.Generate(req, timeout=timeout)
    got = 0
    try:
        for c in call:
            got += len(c.token_ids)
            if got >= after_tokens:
                call.cancel()
                break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise
    return got


def deadline(r, req, timeout_s=0.3):
    """Runs a stream under a short deadline; returns its status code (OK when it finished)."""
    try:
        list(r.stub.Generate(req, timeout=timeout_s))
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def bad_inputs(G, vocab_size, context_length):
    """Requests the router must refuse: (what, request, code, substring of the details)."""
    C = grpc.StatusCode
    rq = lambda **kw: request(G, **kw)  # noqa: E731
    no_input = G.GenerateRequest(stop=G.StopCriteria(max_tokens=4))
    return [
        ("no input", no_input, C.INVALID_ARGUMENT, "input"),
        ("empty text", rq(text=""), C.INVALID_ARGUMENT, "text"),
        ("empty token ids", G.GenerateRequest(token_ids=G.TokenIds()), C.INVALID_ARGUMENT,
         "token_ids"),
        ("id outside the vocabulary", rq(token_ids=[1, vocab_size]), C.INVALID_ARGUMENT,
         "token_ids.ids[1]"),
        ("negative id", rq(token_ids=[-5]), C.INVALID_ARGUMENT, "token_ids.ids[0]"),
        ("negative temperature", rq(token_ids=[1], temperature=-1.0), C.INVALID_ARGUMENT,
         "sampling.temperature"),
        ("top_p = 2", G.GenerateRequest(token_ids=G.TokenIds(ids=[1]),
                                        sampling=G.SamplingParams(top_p=2.0)),
         C.INVALID_ARGUMENT, "sampling.top_p"),
        ("top_k < 0", G.GenerateRequest(token_ids=G.TokenIds(ids=[1]),
                                        sampling=G.SamplingParams(top_k=-3)),
         C.INVALID_ARGUMENT, "sampling.top_k"),
        ("empty stop string", rq(token_ids=[1], stop=["ok", ""]), C.INVALID_ARGUMENT,
         "stop.stop[1]"),
        ("stop token id outside the vocabulary", rq(token_ids=[1], stop_token_ids=[vocab_size]),
         C.INVALID_ARGUMENT, "stop.stop_token_ids[0]"),
        ("logprobs = 50", rq(token_ids=[1], logprobs=50), C.INVALID_ARGUMENT, "logprobs"),
        ("empty chat", G.GenerateRequest(chat=G.ChatMessages()), C.INVALID_ARGUMENT,
         "chat.messages"),
        ("prompt + max_tokens beyond the context", rq(token_ids=[1, 2], max_tokens=context_length),
         C.OUT_OF_RANGE, "context length"),
        ("prompt fills the context", rq(token_ids=[1] * context_length, max_tokens=0),
         C.OUT_OF_RANGE, "context length"),
    ]


def check_bad_inputs(r, vocab_size, context_length, timeout=10):
    """Runs bad_inputs; returns [(what, ok, code, details)] where ok means the expected code
    and a details string naming the field."""
    out = []
    for what, req, code, field in bad_inputs(r.G, vocab_size, context_length):
        try:
            list(r.stub.Generate(req, timeout=timeout))
            out.append((what, False, grpc.StatusCode.OK, ""))
        except grpc.RpcError as e:
            out.append((what, e.code() == code and field in (e.details() or ""), e.code(),
                        e.details()))
    return out


def stats(r, timeout=10):
    return r.stub.Stats(r.G.StatsRequest(), timeout=timeout)


def idle(r):
    """True when the router runs nothing and every worker answered with all KV blocks free and
    none reserved (the router's kv_blocks_* fields sum its decode workers)."""
    s = stats(r)
    workers_ok = all(w.role != "unreachable" and w.kv_blocks_reserved == 0 and
                     w.kv_blocks_free == w.kv_blocks_total and w.running_requests == 0
                     for w in s.workers)
    return (s.running_requests == 0 and workers_ok and s.kv_blocks_reserved == 0 and
            s.kv_blocks_free == s.kv_blocks_total)
