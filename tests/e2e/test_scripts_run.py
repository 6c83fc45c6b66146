#!/usr/bin/env python3
"""README command 1 (scripts/run) run as a user runs it; then nothing it started may be left.

scripts/run runs with SKV_SKIP_SETUP=1, SKV_BUILD_DIR set to a temporary build tree whose
binaries are links to the ones under test (nothing is rebuilt; logs and port files land in the
temporary tree) and SKV_RUN_MODEL in the temporary directory. --variant picks the run:
  ok            the real client: exit 0 with a whole answer
  client_fails  the client step fails (a stand-in client exits 3): the script exits 3
  sigint        Ctrl-C (SIGINT to the script's process group) while the client step runs: the
                script ends by SIGINT once everything is stopped
  sigterm       SIGTERM to the script's pid alone while the client step runs: ends by SIGTERM
  stuck_server  a prefill worker that ignores SIGTERM: killed (SIGKILL) after
                SKV_RUN_STOP_TIMEOUT_S; the script exits 1 and says so
Checks, the moment the script has returned: its exit status, the three port files
(decode, prefill, router) in the tree's run-logs/, no live process whose command line names the
temporary tree, and none of the port files' ports listening (/proc/net/tcp and tcp6).
Leftovers are killed (SIGKILL) before the test fails. Every wait has a deadline.
"""
import argparse
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SERVERS = ("decode", "prefill", "router")
# Exit statuses (Popen's: -N is "ended by signal N", as a shell should after Ctrl-C).
EXPECTED_RC = {"ok": 0, "client_fails": 3, "sigint": -signal.SIGINT, "sigterm": -signal.SIGTERM,
               "stuck_server": 1}

# A stand-in skv_client: "generate" fails (fail), blocks after leaving a marker file (block) or
# succeeds at once (pass); every other command succeeds at once.
FAKE_CLIENT = """
import sys, time
mode, marker = {mode!r}, {marker!r}
if "generate" in sys.argv:
    if mode == "fail":
        sys.exit(3)
    if mode == "block":
        open(marker, "w").close()
        time.sleep(120)
"""

# A stand-in server that ignores SIGTERM and SIGINT: listens on a free loopback port, writes it
# to --port-file (through a rename, as the real servers do) and sleeps.
STUCK_SERVER = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
port_file = sys.argv[sys.argv.index("--port-file") + 1]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
with open(port_file + ".tmp", "w") as f:
    f.write("%d\\n" % s.getsockname()[1])
os.rename(port_file + ".tmp", port_file)
time.sleep(300)
"""


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


def python_script(path, body):
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\n{body}")
    os.chmod(path, 0o755)


def build_tree(args, tmp):
    """A build tree laid out as CMake's (what scripts/run expects) with the binaries under test
    linked in, or stand-ins for the variant."""
    build = os.path.join(tmp, "build")
    bins = {"tools/skv_make_model": args.make_model, "tools/skv_client": args.client,
            "decode_worker/skv_decode_worker": args.decode_worker,
            "prefill_worker/skv_prefill_worker": args.prefill_worker,
            "router/skv_router": args.router}
    for rel, target in bins.items():
        os.makedirs(os.path.dirname(os.path.join(build, rel)), exist_ok=True)
        os.symlink(os.path.abspath(target), os.path.join(build, rel))
    if args.variant != "ok":
        mode = {"client_fails": "fail", "stuck_server": "pass"}.get(args.variant, "block")
        os.unlink(os.path.join(build, "tools/skv_client"))
        python_script(os.path.join(build, "tools/skv_client"),
                      FAKE_CLIENT.format(mode=mode, marker=os.path.join(tmp, "client-started")))
    if args.variant == "stuck_server":
        os.unlink(os.path.join(build, "prefill_worker/skv_prefill_worker"))
        python_script(os.path.join(build, "prefill_worker/skv_prefill_worker"), STUCK_SERVER)
    return build


def procs_naming(path):
    """Pids of the live processes (other than this one) whose command line contains path."""
    out, key = [], path.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()  # empty for zombies and kernel threads
        except OSError:
            continue
        if key in cmd:
            out.append((int(d), cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
    return out


def sock_addr(hexaddr):
    """An address of /proc/net/tcp{,6} (32-bit words in host byte order) -> ip_address; an
    IPv4-mapped IPv6 address as its IPv4 address."""
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def listening(ports):
    """The sockets in LISTEN state on 127.0.0.1 or a wildcard address (where the run's servers
    listen) at one of ports: ["addr:port (inode N)"]. Sockets of other addresses are not
    looked at: another process may listen on the same port of another address."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            hexaddr, hexport = fields[1].split(":")
            ip, port = sock_addr(hexaddr), int(hexport, 16)
            if (fields[3] == "0A" and port in ports and
                    (ip == ipaddress.ip_address("127.0.0.1") or ip.is_unspecified)):
                found.append(f"{ip}:{port} (inode {fields[9]})")
    return found


def kill_leftovers(tmp):
    left = procs_naming(tmp)
    for pid, _cmd in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    wait_until(lambda: not procs_naming(tmp), 10, "leftover processes gone after SIGKILL")
    return left


def dump(tmp):
    logs = os.path.join(tmp, "build", "run-logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        if name.endswith(".log"):
            print(f"---- {name}\n" + open(os.path.join(logs, name), errors="replace").read()[-2000:])


def run(args, tmp):
    build = build_tree(args, tmp)
    logs = os.path.join(build, "run-logs")
    env = dict(os.environ, SKV_SKIP_SETUP="1", SKV_BUILD_DIR=build,
               SKV_RUN_MODEL=os.path.join(tmp, "model"))
    env["SKV_RUN_STOP_TIMEOUT_S"] = "3" if args.variant == "stuck_server" else "30"
    out_path = os.path.join(tmp, "run.out")
    with open(out_path, "w") as out:
        # A session of its own: SIGINT to its process group is what Ctrl-C at a terminal does.
        proc = subprocess.Popen([args.script, "hello from the test"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    try:
        if args.variant in ("sigint", "sigterm"):
            marker = os.path.join(tmp, "client-started")
            wait_until(lambda: os.path.exists(marker) or proc.poll() is not None, 180,
                       "the client step started")
            check(proc.poll() is None, "scripts/run is at its client step")
            running = procs_naming(tmp)
            check(len(running) >= len(SERVERS) + 1,
                  f"{len(running)} processes of the run seen while it runs (3 servers, client)")
            if args.variant == "sigint":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError("scripts/run did not return within 180 s")
        # Checked at once: scripts/run must not return before what it started is gone.
        left = procs_naming(tmp)
        ports = {}
        for name in SERVERS:
            path = os.path.join(logs, f"{name}.port")
            if os.path.exists(path):
                ports[name] = int(open(path).read())
        still = listening(set(ports.values()))
        output = open(out_path, errors="replace").read()
        print("---- scripts/run output\n" + output[-3000:], flush=True)
        check(rc == EXPECTED_RC[args.variant],
              f"scripts/run exited {rc} (expected {EXPECTED_RC[args.variant]})")
        check(sorted(ports) == sorted(SERVERS),
              f"port files of {', '.join(SERVERS)} in SKV_BUILD_DIR/run-logs (found {sorted(ports)})")
        check(not left, "no process of the run alive after it returned" +
              "".join(f"\n  left running: {pid} {cmd}" for pid, cmd in left))
        check(not still, f"none of the ports {sorted(ports.values())} listening on loopback after"
              " it returned" + (f" (still listening: {', '.join(still)})" if still else ""))
        if args.variant == "ok":
            check("finish=length" in output and "role: router" in output,
                  "the answer streamed through the router and its Stats were printed")
        if args.variant == "client_fails":
            check("scripts/run: failed (status 3)" in output, "scripts/run names the failed step")
        if args.variant == "stuck_server":
            check("prefill did not exit within 3 s of SIGTERM: killed (SIGKILL)" in output,
                  "scripts/run says it killed the prefill worker after the deadline")
    except BaseException:
        dump(tmp)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid, cmd in kill_leftovers(tmp):
            print(f"killed leftover {pid}: {cmd}")
        raise


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True, help="scripts/run")
    ap.add_argument("--variant", choices=sorted(EXPECTED_RC), default="ok")
    for a in ("--router", "--decode-worker", "--prefill-worker", "--client", "--make-model"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    # SIGTERM (ctest, a user) ends the test through its cleanup, as SIGINT does; SIGINT gets
    # its handler even where it was ignored at start, so that scripts/run starts with the
    # default (a signal ignored at a shell's start cannot be trapped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = tempfile.mkdtemp(prefix="skv-run-test-")
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"scripts/run ({args.variant}): stopped everything it started")


if __name__ == "__main__":
    main()
