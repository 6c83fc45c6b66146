#!/usr/bin/env bash
# gpu_check.sh: one pass on a GPU machine: configure + build the CUDA backend, run the gpu
# tests (CUDA vs the CPU reference), compute-sanitizer memcheck on a small op table, and the
# Llama-3-8B engine benchmarks on random weights (plain and SwiftKV Lk = 16), and the
# attention op alone (attn_bench).
#
#   scripts/gpu_check.sh [OUT_DIR]      (OUT_DIR defaults to build-gpu/out; logs land there)
#
# Needs nvcc, cmake, ninja and cuBLAS. jansson comes from .carry/jansson (include/ and
# lib/libjansson.a) when pkg-config has none. SKV_GPU_STEPS=skip-tests,skip-bench,skip-prof
# skip-attn (any of them) trims the run. Every step after the build runs under a deadline
# (bounded, scripts/lib/bounded.sh): Ctrl-C or SIGTERM stops the running step's processes and
# ends the pass.
set -u -o pipefail
# shellcheck source=scripts/lib/bounded.sh
source "$(dirname "$0")/lib/bounded.sh"
trap stop_children EXIT
out=${1:-build-gpu/out}
mkdir -p "$out"
build=build-gpu
jroot=()
[ -f .carry/jansson/lib/libjansson.a ] && jroot=(-DSKV_JANSSON_ROOT=.carry/jansson)
steps=${SKV_GPU_STEPS:-}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    nvcc --version | tail -1
} 2>&1 | tee "$out/env.txt"

t0=$(date +%s)
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    "${jroot[@]}" >"$build.log" 2>&1 &&
    cmake --build $build -j16 --target test_cuda_ops test_cuda_model engine_bench attn_bench \
        >>"$build.log" 2>&1
rc=$?
echo "build rc=$rc in $(($(date +%s) - t0)) s"
if [ $rc -ne 0 ]; then
    cp "$build.log" "$out/build.log" # only on failure: at most 8 files come back
    tail -40 "$build.log"
    exit 1
fi

if [[ $steps != *skip-tests* ]]; then
    (cd $build && bounded 300 ctest -L gpu -V) >"$out/ctest.log" 2>&1
    echo "ctest rc=$?"
    grep -E "(FAIL|note|ok   tiny|ok   attention|ok   sample)|checks failed|case\(s\) failed|tests passed" \
        "$out/ctest.log" | cut -c1-150 | head -40
    bounded 240 compute-sanitizer --tool memcheck --leak-check no \
        $build/tests/gpu/test_cuda_ops --quick >"$build/memcheck.log" 2>&1
    echo "memcheck rc=$?" | tee -a "$out/ctest.log"
    grep -E "ERROR SUMMARY|checks failed" "$build/memcheck.log" | tail -3 | tee -a "$out/ctest.log"
fi

if [[ $steps != *skip-bench* ]]; then
    for preset in llama3-8b llama3-8b-swiftkv; do
        bounded 200 $build/bench/engine_bench --random-preset $preset --backend cuda \
            --prompt-len 2048 --prefill-batch 8,1 --decode-batch 1,16,64 --context 1024,2048 \
            --steps 5 --json "$out/bench-$preset.json" $([ $preset = llama3-8b ] && echo --upload) \
            2>&1 | tee -a "$out/bench.txt"
        echo "bench $preset rc=$?"
    done
    # The fp8 (E4M3) KV cache: prefill 8 x 2048 and decode at batch 1 and 64.
    for preset in llama3-8b llama3-8b-swiftkv; do
        bounded 150 $build/bench/engine_bench --random-preset $preset --backend cuda \
            --prompt-len 2048 --prefill-batch 8 --decode-batch 1,64 --context 1024,2048 \
            --steps 5 --kv-dtype fp8 2>&1 | grep -E "^(prefill|decode)" |
            sed "s/^/fp8 KV $preset /" | tee -a "$out/bench-ab.txt"
    done
    # Sampling on the GPU: greedy against temperature with top-p or top-k, batch 1 and 64.
    for sp in "--temperature 0" "--temperature 0.8 --top-p 0.9" "--temperature 0.8 --top-k 50"; do
        bounded 60 $build/bench/engine_bench --random-preset llama3-8b --backend cuda \
            --prompt-len 64 --prefill-batch 1 --decode-batch 1,64 --context 2048 --steps 10 \
            $sp 2>&1 | grep -E "^decode" | sed "s/^/[$sp] /" | tee -a "$out/bench-ab.txt"
    done
    # A/B in the same run: decode with cuBLAS for every GEMM (the few-row GEMV kernel off).
    SKV_GEMV_MAX_ROWS=0 bounded 100 $build/bench/engine_bench --random-preset llama3-8b \
        --backend cuda --prompt-len 64 --prefill-batch 1 --decode-batch 1,4 \
        --context 1024,2048 --steps 10 2>&1 | sed "s/^/SKV_GEMV_MAX_ROWS=0 /" | tee -a "$out/bench-ab.txt"
fi
if [[ $steps != *skip-bench* && $steps != *skip-attn* ]]; then
    # The attention op alone (attn_bench): prefill TFLOP/s and decode KV GB/s, mma kernel at
    # its default block shape (256 rows, 32 per warp), 128 rows of 16 per warp, and the WMMA
    # kernel (SKV_ATTN_PREFILL=2).
    for v in "" "SKV_ATTN_MMA_ROWS=128 SKV_ATTN_MMA_WARP_ROWS=16" SKV_ATTN_PREFILL=2; do
        bounded 60 env $v $build/bench/attn_bench --seqs 8 --prompt-len 2048 --context 0 |
            sed "s/^/${v:-default} /"
        bounded 60 env $v $build/bench/attn_bench --head-dim 64 --seqs 8 --prompt-len 2048 \
            --context 0 | sed "s/^/${v:-default} /"
    done 2>&1 | tee "$out/attn-bench.txt"
    for kd in auto fp8; do
        for b in 1 16 64; do
            bounded 60 $build/bench/attn_bench --seqs $b --prompt-len 0 --context 2048 --kv-dtype $kd
        done
        bounded 60 $build/bench/attn_bench --seqs 8 --prompt-len 2048 --context 0 --kv-dtype $kd
    done 2>&1 | tee -a "$out/attn-bench.txt"
    # A/B on the whole prefill step: 128-row mma blocks of 16 rows per warp, and the WMMA kernel.
    for v in "SKV_ATTN_MMA_ROWS=128 SKV_ATTN_MMA_WARP_ROWS=16" SKV_ATTN_PREFILL=2; do
        for preset in llama3-8b llama3-8b-swiftkv; do
            bounded 100 env $v $build/bench/engine_bench --random-preset $preset \
                --backend cuda --prompt-len 2048 --prefill-batch 8 --decode-batch 1 \
                --context 16 --steps 5 2>&1 | grep -E "^prefill" | sed "s/^/$v $preset /" |
                tee -a "$out/bench-ab.txt"
        done
    done
fi
# Per-op device time (SKV_CUDA_PROFILE=1 wraps the ops table with events): decode batch 1
# and 64, and one 8 x 2048 prefill, plain and SwiftKV.
if [[ $steps != *skip-prof* ]]; then
    for preset in llama3-8b llama3-8b-swiftkv; do
        # Decode: create (1 sync) + 21 prefill forwards + 1 decode warm-up, then 20 timed.
        for b in 1 64; do
            echo "== $preset decode batch $b ctx 2048 (20 steps)" >>"$out/profile.txt"
            SKV_CUDA_PROFILE=24 bounded 120 $build/bench/engine_bench --random-preset $preset \
                --backend cuda --steps 20 --decode-batch $b --context 2048 --prefill-batch 1 \
                --prompt-len 64 >>"$out/profile.txt" 2>&1
        done
        # Prefill 8 x 2048: create + warm-up dropped, 2 timed forwards (+ 3 tiny decodes).
        echo "== $preset prefill 8 x 2048 (2 forwards)" >>"$out/profile.txt"
        SKV_CUDA_PROFILE=3 bounded 120 $build/bench/engine_bench --random-preset $preset \
            --backend cuda --steps 2 --decode-batch 1 --context 16 --prefill-batch 8 \
            --prompt-len 2048 >>"$out/profile.txt" 2>&1
    done
    grep -vE "^(prefill|model)" "$out/profile.txt" | cut -c1-110
fi
echo "total $(($(date +%s) - t0)) s"
