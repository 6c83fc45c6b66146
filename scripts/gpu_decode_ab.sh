#!/usr/bin/env bash
# gpu_decode_ab.sh: decode attention A/B on a GPU machine: builds the CUDA targets, runs the
# op table against the CPU reference, then attn_bench (decode, batch 1/16/64, ctx 1k/2k) and
# engine_bench decode steps with the decode kernel (default) and the rows kernel
# (SKV_ATTN_DECODE=0).
#
#   scripts/gpu_decode_ab.sh [OUT_DIR]
# SKV_GPU_STEPS=skip-tests,skip-engine trims it; rows-tests adds the op table on the rows
# kernel. Every step after the build runs under a deadline (bounded, scripts/lib/bounded.sh):
# Ctrl-C or SIGTERM stops the running step's processes and ends the run.
set -u -o pipefail
# shellcheck source=scripts/lib/bounded.sh
source "$(dirname "$0")/lib/bounded.sh"
trap stop_children EXIT
out=${1:-build-gpu/out}
mkdir -p "$out"
build=build-gpu
steps=${SKV_GPU_STEPS:-}
jroot=()
[ -f .carry/jansson/lib/libjansson.a ] && jroot=(-DSKV_JANSSON_ROOT=.carry/jansson)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
t0=$(date +%s)
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    "${jroot[@]}" >"$build.log" 2>&1 &&
    cmake --build $build -j16 --target test_cuda_ops test_cuda_model engine_bench attn_bench >>"$build.log" 2>&1 ||
    {
        tail -30 "$build.log"
        exit 1
    }
echo "build $(($(date +%s) - t0)) s"
if [[ $steps != *skip-tests* ]]; then
    bounded 200 $build/tests/gpu/test_cuda_ops >"$out/ops.log" 2>&1
    echo "test_cuda_ops rc=$?"
    grep -E "FAIL|checks failed" "$out/ops.log" | head -20
    if [[ $steps == *rows-tests* ]]; then
        SKV_ATTN_DECODE=0 bounded 200 $build/tests/gpu/test_cuda_ops >"$out/ops-rows.log" 2>&1
        echo "test_cuda_ops (rows kernel) rc=$?"
        grep -E "FAIL|checks failed" "$out/ops-rows.log" | head -5
    fi
    bounded 200 $build/tests/gpu/test_cuda_model >"$out/model.log" 2>&1
    echo "test_cuda_model rc=$?"
    tail -3 "$out/model.log"
    bounded 80 compute-sanitizer --tool memcheck --leak-check no \
        $build/tests/gpu/test_cuda_ops --quick >"$out/memcheck.log" 2>&1
    echo "memcheck rc=$?"
    grep -E "ERROR SUMMARY|checks failed" "$out/memcheck.log" | tail -3
fi
for v in SKV_ATTN_DECODE=1 SKV_ATTN_DECODE=0; do
    for b in 1 16 64; do
        for c in 1024 2048; do
            bounded 60 env $v $build/bench/attn_bench --seqs $b --prompt-len 0 --context $c \
                --reps 20 | sed "s/^/$v /"
        done
    done
done 2>&1 | tee "$out/attn.txt"
if [[ $steps != *skip-engine* ]]; then
    for v in SKV_ATTN_DECODE=1 SKV_ATTN_DECODE=0; do
        bounded 200 env $v $build/bench/engine_bench --random-preset llama3-8b --backend cuda \
            --prompt-len 64 --prefill-batch 1 --decode-batch 1,16,64 --context 1024,2048 \
            --steps 10 2>&1 | grep -E "^decode" | sed "s/^/$v /"
    done 2>&1 | tee "$out/engine.txt"
    bounded 200 $build/bench/engine_bench --random-preset llama3-8b-swiftkv --backend cuda \
        --prompt-len 64 --prefill-batch 1 --decode-batch 1,64 --context 1024,2048 --steps 10 \
        2>&1 | grep -E "^decode" | sed "s/^/swiftkv /" | tee -a "$out/engine.txt"
fi
echo "total $(($(date +%s) - t0)) s"
