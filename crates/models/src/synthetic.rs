//! Deterministic token ids for benchmarks: the same ids feed the native CLI, the browser's
//! worker and `tests/bench/torch_bench.py`, so their timings compare.

/// Row `row` of `len` ids, spread over a `vocab`-sized vocabulary (avoiding its first 100 and
/// last 900 ids, where special tokens live).
pub fn bench_ids(len: usize, row: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + row * 104_729 + 13) % (vocab - 1000)) as u32 + 100).collect()
}

/// Row `row` of a batch whose rows all start with the same `shared` ids (a prompt answered
/// several ways): row 0's first `shared` ids, then row `row`'s own. Row 0 equals `bench_ids`.
pub fn bench_ids_shared(len: usize, row: usize, vocab: usize, shared: usize) -> Vec<u32> {
    let mut ids = bench_ids(len, 0, vocab);
    let own = bench_ids(len, row, vocab);
    let shared = shared.min(len);
    ids[shared..].copy_from_slice(&own[shared..]);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rows_share_exactly_their_prompt() {
        let rows: Vec<Vec<u32>> = (0..4).map(|r| bench_ids_shared(64, r, 151_936, 48)).collect();
        assert_eq!(rows[0], bench_ids(64, 0, 151_936));
        for r in &rows[1..] {
            assert_eq!(r[..48], rows[0][..48]);
            assert_ne!(r[48], rows[0][48]);
            assert_eq!(r.len(), 64);
        }
        assert_eq!(bench_ids_shared(8, 2, 2000, 100), bench_ids(8, 0, 2000));
    }
}
