#!/usr/bin/env python3
"""Interop: Python grpcio against our C server process, and our C client CLI.

Generates Python stubs from our .proto files with grpcio-tools into a temp dir, starts
skv_echo_server (Echo + fake Generation), and checks: unary, streaming, cancellation,
UNIMPLEMENTED, INVALID_ARGUMENT for malformed bytes, standard health Check/Watch, the
skv.v1.Generation stubs, the skv_client commands, and a SIGTERM drain that lets an in-flight
stream finish before the process exits 0. Every wait has a deadline; the server is killed
whenever the test ends early (a failure, SIGINT, SIGTERM). Exit 77 (skip) without grpcio-tools.
"""
import argparse
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

try:
    import grpc
    from grpc_tools import protoc
except ImportError:
    print("grpcio / grpcio-tools missing: skipping")
    sys.exit(77)

PROTOS = ["echo.proto", "skv/v1/generate.proto", "skv/v1/worker.proto", "grpc/health/v1/health.proto"]


def gen_stubs(include_dirs, out_dir):
    args = ["protoc"] + [f"-I{d}" for d in include_dirs]
    args += [f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + PROTOS
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    for root, _dirs, _files in os.walk(out_dir):  # make generated packages importable
        open(os.path.join(root, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    # The generated grpc/health/v1 package shares its top name with grpcio: graft it on.
    grpc.__path__.append(os.path.join(out_dir, "grpc"))


def start_server(binary, timeout=60):
    """Starts the server and reads its "PORT n" line, waiting up to timeout s for it."""
    proc = subprocess.Popen([binary], stdout=subprocess.PIPE)
    line, deadline = b"", time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready = select.select([proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
        chunk = os.read(proc.stdout.fileno(), 1) if ready else b""
        if not chunk:  # deadline passed, or the server closed its stdout (exited)
            break
        line += chunk
    if not line.startswith(b"PORT "):
        kill(proc)
        raise SystemExit(f"server did not report its port (waited at most {timeout} s, exit "
                         f"status {proc.returncode}): {line!r}")
    return proc, int(line.split()[1])


def kill(proc):
    """SIGKILL unless it has exited; waits (10 s at most) for it to be gone."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


def test_echo(channel, echo_pb2, echo_grpc):
    stub = echo_grpc.EchoStub(channel)
    r = stub.Unary(echo_pb2.EchoRequest(text="héllo"), timeout=5)
    check(r.text == "héllo", "unary round trip with UTF-8")
    replies = list(stub.Stream(echo_pb2.EchoRequest(text="s", count=500, payload_bytes=1000), timeout=30))
    check([x.index for x in replies] == list(range(500)), "500 streamed replies in order")

    it = stub.Hang(echo_pb2.EchoRequest(text="h"), timeout=30)
    check(next(it).text == "hanging", "first message of a hanging stream")
    it.cancel()
    try:
        next(it)
        check(False, "cancelled stream ends")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.CANCELLED, "client cancel -> CANCELLED")

    try:
        stub.SlowUnary(echo_pb2.EchoRequest(), timeout=0.2)
        check(False, "deadline")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "deadline -> DEADLINE_EXCEEDED")

    raw = channel.unary_unary("/skv.test.Echo/Nope")
    try:
        raw(b"", timeout=5)
        check(False, "unknown method")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNIMPLEMENTED, "unknown method -> UNIMPLEMENTED")
    raw = channel.unary_unary("/skv.test.Echo/Unary")
    try:
        raw(b"\x0a\x05a", timeout=5)
        check(False, "malformed")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in e.details(),
              "malformed payload -> INVALID_ARGUMENT with a reason")


def test_health(channel, health_pb2, health_grpc):
    stub = health_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    check(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == serving, "health '' SERVING")
    check(stub.Check(health_pb2.HealthCheckRequest(service="skv.v1.Generation"), timeout=5).status == serving,
          "health skv.v1.Generation SERVING")
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        check(False, "unknown service")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "health unknown service -> NOT_FOUND")
    w = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    check(next(w).status == serving, "health Watch first message SERVING")
    w.cancel()


def test_generation(channel, gen_pb2, gen_grpc):
    stub = gen_grpc.GenerationStub(channel)
    req = gen_pb2.GenerateRequest(text="the quick brown fox", stop=gen_pb2.StopCriteria(max_tokens=3))
    req.sampling.seed = 7  # oneof presence
    chunks = list(stub.Generate(req, timeout=10))
    text = "".join(c.text for c in chunks)
    check(text == "the quick brown", f"Generate streamed text {text!r}")
    check(chunks[-1].finish_reason == gen_pb2.FINISH_REASON_LENGTH and chunks[-1].usage.completion_tokens == 3,
          "Generate final chunk: LENGTH, usage")
    info = stub.ModelInfo(gen_pb2.ModelInfoRequest(), timeout=5)
    check(info.swiftkv_lk == 2 and info.context_length == 4096, "ModelInfo fields")


def run_client(client, port, *args):
    cmd = [client, "--target", f"127.0.0.1:{port}", "--timeout-ms", "10000"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_cli(client, port):
    r = run_client(client, port, "generate", "--prompt", "a b c d", "--max-tokens", "3", "--temperature", "0.5")
    check(r.returncode == 0 and r.stdout.strip() == "a b c" and "finish=length" in r.stderr,
          f"skv_client generate: {r.stdout!r} {r.stderr!r}")
    r = run_client(client, port, "tokenize", "--text", "AB")
    check(r.returncode == 0 and r.stdout.strip() == "65 66", f"skv_client tokenize: {r.stdout!r}")
    r = run_client(client, port, "model-info")
    check(r.returncode == 0 and "swiftkv_lk: 2" in r.stdout, "skv_client model-info")
    r = run_client(client, port, "stats")
    check(r.returncode == 0 and "kv_blocks_total: 64" in r.stdout, "skv_client stats")
    r = run_client(client, port, "health")
    check(r.returncode == 0 and r.stdout.strip() == "SERVING", "skv_client health")
    r = run_client(client, port, "detokenize", "--ids", "1,2")
    check(r.returncode == 1 and "UNSUPPORTED" in r.stderr, "skv_client reports UNIMPLEMENTED Detokenize")


def test_sigterm_drain(proc, channel, echo_pb2, echo_grpc):
    stub = echo_grpc.EchoStub(channel)
    got = []
    err = []

    def reader():
        try:
            for r in stub.Stream(echo_pb2.EchoRequest(text="d", count=20, delay_ms=50), timeout=30):
                got.append(r.index)
        except grpc.RpcError as e:
            err.append(e)

    t = threading.Thread(target=reader)
    t.start()
    deadline = time.monotonic() + 30
    while not got and not err and time.monotonic() < deadline:
        time.sleep(0.01)
    check(bool(got), f"the stream started before the drain ({err})")
    proc.send_signal(signal.SIGTERM)
    t.join(30)
    check(not err and got == list(range(20)), f"in-flight stream finished during drain ({len(got)} msgs, {err})")
    check(proc.wait(timeout=30) == 0, "server exited 0 after draining")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("-I", dest="includes", action="append", required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # runs the finally
    with tempfile.TemporaryDirectory() as tmp:
        gen_stubs(a.includes, tmp)
        import echo_pb2, echo_pb2_grpc  # noqa: E401
        from skv.v1 import generate_pb2, generate_pb2_grpc
        from grpc.health.v1 import health_pb2, health_pb2_grpc
        proc, port = start_server(a.server)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            test_echo(channel, echo_pb2, echo_pb2_grpc)
            test_health(channel, health_pb2, health_pb2_grpc)
            test_generation(channel, generate_pb2, generate_pb2_grpc)
            test_cli(a.client, port)
            test_sigterm_drain(proc, channel, echo_pb2, echo_pb2_grpc)
            channel.close()
        finally:
            kill(proc)
    print("python interop: all passed")


if __name__ == "__main__":
    main()
