#!/usr/bin/env bash
# kvx_bench.sh: KV push bandwidth (bench/kvx_bench.c) next to `ucx_perftest -t ucp_put_bw`
# with the same transport, put size and bytes moved, on loopback. Prints a markdown table.
# Usage: bench/kvx_bench.sh [build-dir]   (needs ucx-utils; a benchmark, not a test)
# KVX_BENCH_TLS="tcp shm" picks transports; SKV_KVX_DATA=put|am forces the data path (see
# common/kvx/kvx.md; default: messages on tcp and shared memory, puts with native RMA).
# GB/s is 1e9 bytes/s; ucx_perftest prints MB/s with MB = 2^20 bytes, converted here.
# Every run has a deadline (bounded, scripts/lib/bounded.sh); the ucx_perftest server is
# stopped after each measurement and whenever the script ends (a failure, Ctrl-C, SIGTERM).
set -euo pipefail
# shellcheck source=scripts/lib/bounded.sh
source "$(dirname "$0")/../scripts/lib/bounded.sh"
build="${1:-build}"
bench="$build/bench/kvx_bench"
[[ -x "$bench" ]] || { echo "build kvx_bench first: cmake --build $build --target kvx_bench"; exit 1; }
iters="${KVX_BENCH_ITERS:-3}"
port=$((20000 + RANDOM % 20000))
tmp="$(mktemp -d)"
server="" # the ucx_perftest server (its timeout's pid) while one runs

# stop_server [SECONDS]: waits up to SECONDS (default 0) for the server to end by itself, then
# SIGTERMs it (its timeout passes that on to its group; SIGKILL 10 s later) and reaps it.
stop_server() {
  local tick
  [[ -n "$server" ]] || return 0
  for ((tick = 0; tick < ${1:-0} * 10; tick++)); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap 'stop_server; stop_children; rm -rf "$tmp"' EXIT

tls_env() { # transport name -> environment for both tools
  case "$1" in
    tcp) echo "UCX_TLS=tcp UCX_NET_DEVICES=lo" ;;
    shm) echo "UCX_TLS=posix,sysv UCX_MM_ERROR_HANDLING=y" ;;
  esac
}

perftest_gbs() { # VAR tls put_bytes n_puts: sets VAR to the GB/s of ucx_perftest
  local env mbs
  env=$(tls_env "$2")
  port=$((port + 1))
  # shellcheck disable=SC2086 # $env is a list of assignments
  env $env timeout -k 10 120 ucx_perftest -p "$port" >/dev/null 2>&1 &
  server=$!
  sleep 0.5
  # shellcheck disable=SC2086
  bounded 120 env $env ucx_perftest 127.0.0.1 -p "$port" -t ucp_put_bw -s "$3" -n "$4" -w 2 \
    >"$tmp/perftest.out" 2>&1
  mbs=$(awk '/^Final:/ {print $7}' "$tmp/perftest.out")
  stop_server 10 # it ends after its one test
  printf -v "$1" '%s' "$(awk -v m="$mbs" 'BEGIN { printf "%.3f", m * 1048576 / 1e9 }')"
}

kvx_gbs() { # VAR tls total_mib block_kib piece_kib [--staged]: sets VAR to kvx_bench's GB/s
  local env
  env=$(tls_env "$2")
  # shellcheck disable=SC2086
  bounded 300 env $env "$bench" --total "$3" --block "$4" --piece "$5" --iters "$iters" ${6:-} \
    >"$tmp/kvx.out"
  printf -v "$1" '%s' "$(sed -n 's/.*GB\/s=//p' "$tmp/kvx.out")"
}

# Two ucx_perftest references: "same footprint" puts the whole request size in one put per
# iteration (the same bytes and the same cold memory as kvx), "cache-hot" repeats puts of the
# kvx put size from one buffer that stays in cache (an upper bound kvx cannot see).
echo "| transport | request MiB | block KiB | put KiB | source | kvx GB/s | perftest same footprint GB/s | kvx/perftest | perftest cache-hot put-size GB/s |"
echo "|---|---|---|---|---|---|---|---|---|"
k="" p="" h=""
for tl in ${KVX_BENCH_TLS:-tcp shm}; do
  for cfg in "16 2048 2048" "64 2048 2048" "256 2048 2048" "256 2048 64" "256 2048 2048 --staged"; do
    # shellcheck disable=SC2086 # cfg is a list of numbers
    set -- $cfg
    kvx_gbs k "$tl" "$1" "$2" "$3" "${4:-}"
    perftest_gbs p "$tl" $(($1 * 1024 * 1024)) $((iters + 1))
    perftest_gbs h "$tl" $(($3 * 1024)) $(($1 * 1024 * iters / $3))
    src=host; [[ -n "${4:-}" ]] && src="staged (memcpy)"
    r=$(awk -v a="$k" -v b="$p" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }')
    echo "| $tl | $1 | $2 | $3 | $src | $k | $p | $r | $h |"
  done
done
