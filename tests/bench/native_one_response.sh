#!/usr/bin/env bash
# One response at a time, natively, alternating backends per workload in one run (issue 23):
# rewardlens q8_0 with our kernels (the default on x86-64: bf16 AMX where the CPU and Linux allow
# it, else int8 AMX, VNNI, AVX2), the same forced to int8 AMX and to VNNI
# (REWARDLENS_INT8_KERNEL; a kernel the CPU lacks falls back to the default), rewardlens q8_0 with
# Candle's kernel, transformers.js q8 in Node (onnxruntime), rewardlens f32, PyTorch f32; 2 threads.
# Needs what `cargo xtask bench` sets up: target/bench-models/{skywork-rand,skywork-q8_0.gguf,
# skywork-rand-onnx}, target/tools/tjs, and PYTHON with torch + transformers.
#   ROUNDS=2 LENGTHS="64 512 2048" bash tests/bench/native_one_response.sh
set -u
cd "$(dirname "$0")/../.."
B=target/release/rewardlens; Q=target/bench-models/skywork-q8_0.gguf; F=target/bench-models/skywork-rand
PY=${PYTHON:-python3}
export TJS_MODULE=$PWD/target/tools/tjs/node_modules/@huggingface/transformers/dist/transformers.node.mjs
for round in $(seq 1 "${ROUNDS:-2}"); do
  for n in ${LENGTHS:-64 512 2048}; do
    it=3; [ "$n" -ge 2048 ] && it=2
    echo "== round $round, $n tokens: rewardlens q8_0, our default kernel"
    $B --threads 2 bench --model $Q --lengths "$n" --iters $it --warmup 1 --q8-kernel int8 | grep -E "^\| $n \|"
    echo "== round $round, $n tokens: rewardlens q8_0 int8, amx"
    REWARDLENS_INT8_KERNEL=amx $B --threads 2 bench --model $Q --lengths "$n" --iters $it --warmup 1 --q8-kernel int8 | grep -E "^\| $n \|"
    echo "== round $round, $n tokens: rewardlens q8_0 int8, vnni"
    REWARDLENS_INT8_KERNEL=vnni $B --threads 2 bench --model $Q --lengths "$n" --iters $it --warmup 1 --q8-kernel int8 | grep -E "^\| $n \|"
    echo "== round $round, $n tokens: rewardlens q8_0 candle"
    $B --threads 2 bench --model $Q --lengths "$n" --iters $it --warmup 1 --q8-kernel candle | grep -E "^\| $n \|"
    echo "== round $round, $n tokens: transformers.js q8 (Node), median ms"
    node tests/bench/peers/tjs_bench.mjs target/bench-models/skywork-rand-onnx q8 2 "${n}x1:0" $it 1 | grep -o '"median_ms":[0-9.]*'
    echo "== round $round, $n tokens: rewardlens f32"
    $B --threads 2 bench --model $F --lengths "$n" --iters $it --warmup 1 | grep -E "^\| $n \|"
    echo "== round $round, $n tokens: PyTorch f32"
    $PY tests/bench/torch_bench.py --threads 2 --lengths "$n" --batch 1 --iters $it --warmup 1 --shared 0 --model $F | grep -E "^\| $n \|"
  done
done
