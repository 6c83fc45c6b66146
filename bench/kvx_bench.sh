#!/usr/bin/env bash
# kvx_bench.sh: KV push bandwidth (bench/kvx_bench.c) next to `ucx_perftest -t ucp_put_bw`
# with the same transport, put size and bytes moved, on loopback. Prints a markdown table.
# Usage: bench/kvx_bench.sh [build-dir]   (needs ucx-utils; a benchmark, not a test)
# KVX_BENCH_TLS="tcp shm" picks transports; SKV_KVX_DATA=put|am forces the data path (see
# common/kvx/kvx.md; default: messages on tcp and shared memory, puts with native RMA).
# GB/s is 1e9 bytes/s; ucx_perftest prints MB/s with MB = 2^20 bytes, converted here.
set -euo pipefail
build="${1:-build}"
bench="$build/bench/kvx_bench"
[[ -x "$bench" ]] || { echo "build kvx_bench first: cmake --build $build --target kvx_bench"; exit 1; }
iters="${KVX_BENCH_ITERS:-3}"
port=$((20000 + RANDOM % 20000))

tls_env() { # transport name -> environment for both tools
  case "$1" in
    tcp) echo "UCX_TLS=tcp UCX_NET_DEVICES=lo" ;;
    shm) echo "UCX_TLS=posix,sysv UCX_MM_ERROR_HANDLING=y" ;;
  esac
}

perftest_gbs() { # tls put_bytes n_puts -> GB/s
  local env; env=$(tls_env "$1")
  port=$((port + 1))
  env $env timeout 120 ucx_perftest -p "$port" >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  local out
  out=$(env $env timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t ucp_put_bw -s "$2" -n "$3" \
        -w 2 2>&1 | awk '/^Final:/ {print $7}')
  wait "$srv" || true
  awk -v m="$out" 'BEGIN { printf "%.3f", m * 1048576 / 1e9 }'
}

kvx_gbs() { # tls total_mib block_kib piece_kib [--staged]
  local env; env=$(tls_env "$1")
  env $env timeout 300 "$bench" --total "$2" --block "$3" --piece "$4" --iters "$iters" ${5:-} |
    sed -n 's/.*GB\/s=//p'
}

# Two ucx_perftest references: "same footprint" puts the whole request size in one put per
# iteration (the same bytes and the same cold memory as kvx), "cache-hot" repeats puts of the
# kvx put size from one buffer that stays in cache (an upper bound kvx cannot see).
echo "| transport | request MiB | block KiB | put KiB | source | kvx GB/s | perftest same footprint GB/s | kvx/perftest | perftest cache-hot put-size GB/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for tl in ${KVX_BENCH_TLS:-tcp shm}; do
  for cfg in "16 2048 2048" "64 2048 2048" "256 2048 2048" "256 2048 64" "256 2048 2048 --staged"; do
    set -- $cfg
    k=$(kvx_gbs "$tl" "$1" "$2" "$3" "${4:-}")
    p=$(perftest_gbs "$tl" $(( $1 * 1024 * 1024 )) $(( iters + 1 )))
    h=$(perftest_gbs "$tl" $(( $3 * 1024 )) $(( $1 * 1024 * iters / $3 )))
    src=host; [[ -n "${4:-}" ]] && src="staged (memcpy)"
    r=$(awk -v a="$k" -v b="$p" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }')
    echo "| $tl | $1 | $2 | $3 | $src | $k | $p | $r | $h |"
  done
done
