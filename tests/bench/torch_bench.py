#!/usr/bin/env python3
"""PyTorch `transformers` on the CPU, f32, on the same token ids as `rewardlens bench`
(crates/cli/src/bench.rs `bench_ids`): the reference speed rewardlens is compared with.

    python tests/bench/torch_bench.py --model DIR --threads 2 --lengths 128,512,2048 [--batch B --shared S]

Prints the same table as `rewardlens bench`, the time from process start to the first scores
and the peak RSS.
"""
import time

T_START = time.time()  # before importing torch: a user waits for that too

import argparse
import resource
import statistics

import torch
import transformers
from transformers import AutoModelForSequenceClassification


def bench_ids(n, row, vocab):
    return [((i * 7919 + row * 104729 + 13) % (vocab - 1000)) + 100 for i in range(n)]


def bench_ids_shared(n, row, vocab, shared):
    """rewardlens_models::synthetic::bench_ids_shared: row 0's first `shared` ids, then row's own."""
    shared = min(shared, n)
    return bench_ids(n, 0, vocab)[:shared] + bench_ids(n, row, vocab)[shared:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--shared", type=int, default=0, help="leading tokens every row shares")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes before the timed ones")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"loaded in {time.time() - t0:.2f}s")
    print("| tokens | batch | median s | tokens/s |")
    print("|---:|---:|---:|---:|")
    first_score = None
    for n in map(int, args.lengths.split(",")):
        ids = torch.tensor([bench_ids_shared(n, r, vocab, args.shared) for r in range(args.batch)])
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + args.iters):
                t = time.perf_counter()
                model(input_ids=ids)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
                if first_score is None:
                    first_score = time.time() - T_START
        med = statistics.median(times)
        print(f"| {n} | {args.batch} | {med:.3f} | {n * args.batch / med:.1f} |")
    print(f"first score after: {first_score:.2f}s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
