"""Shared helpers of the end-to-end tests: stub generation, process start/stop, checks.

Processes are started with --listen 127.0.0.1:0 and --port-file, so tests never collide on
ports; every wait has a deadline. A process still running when the test exits, however it
exits (a failed check, an exception before a test's cleanup, SIGINT, SIGTERM), is killed then:
importing this module makes SIGTERM raise SystemExit, so cleanup code runs. Nothing here knows
the tests' expectations. Importing this module without grpcio / grpcio-tools exits 77 (ctest's
skip code), so the tests import it before anything else that needs grpc.
"""
import argparse
import atexit
import os
import signal
import subprocess
import sys
import threading
import time

try:
    import grpc
    from grpc_tools import protoc
except ImportError:
    print("grpcio / grpcio-tools missing: skipping")
    sys.exit(77)

PROTOS = ["skv/v1/generate.proto", "skv/v1/worker.proto", "grpc/health/v1/health.proto"]

_running = []  # every Proc started and not yet stopped or killed


def _kill_running():
    for p in list(_running):
        p.kill()


atexit.register(_kill_running)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def gen_stubs(include_dirs, out_dir):
    """Generates Python stubs of our protos into out_dir and makes them importable."""
    args = ["protoc"] + [f"-I{d}" for d in include_dirs]
    args += [f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + PROTOS
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    for root, _dirs, _files in os.walk(out_dir):
        open(os.path.join(root, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    grpc.__path__.append(os.path.join(out_dir, "grpc"))  # generated grpc.health next to grpcio


def parse_args(binaries):
    """The tests' command line: each of binaries (e.g. "--router") is a required path; --preset
    names the tiny model preset; -I (repeated) are the proto include dirs."""
    ap = argparse.ArgumentParser()
    for a in binaries:
        ap.add_argument(a, required=True)
    ap.add_argument("--preset", default="tiny-swiftkv")
    ap.add_argument("-I", dest="includes", action="append", default=[])
    return ap.parse_args()


def make_model(args, out, extra=()):
    """Writes a tiny model of args.preset (plus the skv_make_model flags in extra) to out."""
    subprocess.run([args.make_model, "--out", out, "--preset", args.preset] + list(extra),
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    return out


def prepare(args, tmp, extra=()):
    """Generates the stubs into tmp and writes the test model to tmp/model (args.model)."""
    gen_stubs(args.includes, tmp)
    args.model = make_model(args, os.path.join(tmp, "model"), extra)


def start_workers(args, tmp, prefill_extra=()):
    """A decode and a prefill worker (1 thread, 4 MiB of KV) on args.model -> (decode, prefill);
    prefill_extra: further flags of the prefill worker."""
    common = ["--model", args.model, "--kv-mem-mb", "4", "--threads", "1"]
    return (Proc([args.decode_worker] + common, tmp, "decode"),
            Proc([args.prefill_worker] + common + list(prefill_extra), tmp, "prefill"))


def cli_tokens(generate, model, prompt, n, temperature=0.0, seed=0, extra=()):
    """The single-process engine CLI's tokens for a prompt of ids (the reference output);
    extra: further skv_generate flags (e.g. ["--kv-dtype", "fp8"])."""
    argv = [generate, "--model", model, "--tokens", ",".join(map(str, prompt)),
            "--max-tokens", str(n), "--ignore-eos"] + list(extra)
    if temperature > 0:
        argv += ["--temperature", str(temperature), "--seed", str(seed)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    return [int(t) for t in out.strip().split(",")]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def expect_code(fn, code, what):
    """Calls fn (which must raise grpc.RpcError) and checks the status code."""
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code and bool(e.details()), f"{what}: {e.code()} ({e.details()})")
        return e
    raise AssertionError(f"{what}: expected {code}, the call succeeded")


class Proc:
    """A server process started with a port file; stop() sends SIGTERM and waits, kill() kills
    it. One that is still running when the test exits is killed then."""

    def __init__(self, argv, tmp, name, env=None):
        self.name = name
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv + ["--listen", "127.0.0.1:0", "--port-file", self.port_file],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        _running.append(self)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.tail()
                self.kill()
                raise SystemExit(f"{name} did not start:\n{log}")
            time.sleep(0.05)
        self.port = int(open(self.port_file).read())
        self.addr = f"127.0.0.1:{self.port}"

    def tail(self):
        if not self.log.closed:
            self.log.flush()
        return open(self.log_path).read()[-3000:]

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log = self.tail()
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM:\n{log}")
        self._done()
        return rc

    def kill(self):
        """SIGKILL unless it has exited; waits (10 s at most) for it to be gone."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"{self.name} (pid {self.proc.pid}) still there 10 s after SIGKILL", flush=True)
        self._done()

    def _done(self):
        self.log.close()
        if self in _running:
            _running.remove(self)


def run_threads(n, fn, timeout=120):
    """Calls fn(i) for i in 0..n-1 on n threads at once; each join waits up to timeout s.
    Returns ({i: fn(i)}, ["i: error", ...]) -- the errors are the caller's to check."""
    out, errs = {}, []

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # reported by the caller
            errs.append(f"{i}: {e}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return out, errs


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


class Worker:
    """One worker process (1 thread, kv_mb MiB of KV, extra flags) and its stubs on one channel."""

    def __init__(self, binary, model, tmp, name, extra=(), env=None, kv_mb=4):
        from skv.v1 import worker_pb2_grpc as WG
        self.proc = Proc([binary, "--model", model, "--threads", "1", "--kv-mem-mb", str(kv_mb)] +
                         list(extra), tmp, name, env)
        self.channel = grpc.insecure_channel(self.proc.addr)
        self.decode = WG.DecodeStub(self.channel)
        self.prefill = WG.PrefillStub(self.channel)
        self.worker = WG.WorkerStub(self.channel)


class Pair:
    """The prefill stub of one worker with the decode and worker stubs of another: what one
    disaggregated request uses."""

    def __init__(self, pre, dec):
        self.prefill, self.decode, self.worker = pre.prefill, dec.decode, dec.worker


def expect_workers_idle(workers, what):
    """Every worker (Worker): every KV block free, nothing reserved, nothing running."""
    from skv.v1 import generate_pb2 as G

    def idle():
        for w in workers:
            stub = w.prefill if w.proc.name.startswith("prefill") else w.decode
            s = stub.Stats(G.StatsRequest(), timeout=5)
            if (s.kv_blocks_free != s.kv_blocks_total or s.kv_blocks_reserved != 0 or
                    s.running_requests != 0):
                return False
        return True
    wait_until(idle, 10, what)
    check(True, f"{what}: zero reserved and zero used KV blocks on all {len(workers)} workers")


def stop_workers(workers):
    """Closes each worker's channel (an open client connection holds the drain for seconds) and
    stops it with SIGTERM; each must exit 0."""
    for w in workers:
        w.channel.close()
        check(w.proc.stop() == 0, f"{w.proc.name} exited 0 after SIGTERM")


def dump_and_kill(workers):
    """After a failure: prints each worker's log tail and kills it."""
    for w in workers:
        print(f"---- {w.proc.name}\n{w.proc.tail()}")
        w.proc.kill()
