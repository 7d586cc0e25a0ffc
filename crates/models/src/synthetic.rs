//! Deterministic token ids for benchmarks: the same ids feed the native CLI, the browser's
//! worker and `tests/bench/torch_bench.py`, so their timings compare.

/// Row `row` of `len` ids, spread over a `vocab`-sized vocabulary (avoiding its first 100 and
/// last 900 ids, where special tokens live).
pub fn bench_ids(len: usize, row: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + row * 104_729 + 13) % (vocab - 1000)) as u32 + 100).collect()
}
