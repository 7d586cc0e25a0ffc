//! The in-browser benchmark: forward passes timed per length on synthetic token ids.

use super::error::{Res, WorkerError};
use super::queue::Engine;
use super::shape::bench_row;
use crate::protocol::{BenchRow, FromWorker};
use js_sys::Reflect;
use wasm_bindgen::JsCast;

/// `performance.now()` of this worker (sub-millisecond, unlike `Date.now()`), for the profile.
pub(super) fn performance_now() -> f64 {
    let global = js_sys::global();
    Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| {
            let now: js_sys::Function = Reflect::get(&p, &"now".into()).ok()?.dyn_into().ok()?;
            now.call0(&p).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

impl Engine {
    /// Times `iters` passes (after a warm-up) per length over `batch` sequences of `bench_ids`;
    /// several sequences share their first three quarters (one prompt, several answers), as the
    /// native `rewardlens bench --shared` does.
    pub(super) async fn bench(&self, id: u64, lengths: &[usize], iters: usize, batch: usize) -> Res<Vec<BenchRow>> {
        let loaded = self.loaded("benchmarking")?;
        let vocab = loaded.scorer.config().map(|c| c.vocab_size).ok_or_else(|| {
            WorkerError::Remote("the benchmark measures the engine in this browser, not a remote endpoint".into())
        })?;
        let cancel = self.cancel_poll(id);
        let mut rows = Vec::new();
        for (n, &len) in lengths.iter().enumerate() {
            let batch = batch.max(1);
            let shared = if batch > 1 { len * 3 / 4 } else { 0 };
            let seqs: Vec<Vec<u32>> =
                (0..batch).map(|r| rewardlens_models::synthetic::bench_ids_shared(len, r, vocab, shared)).collect();
            let rows_in: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let mut times = Vec::new();
            let mut profile = Vec::new();
            let mut first_scores_at_ms = 0.0;
            for i in 0..=iters.max(1) {
                let t0 = self.now();
                // The last pass also records where the time goes, per kind of op.
                let last = i == iters.max(1);
                let p = loaded.scorer.bench_pass(&rows_in, last, &cancel).await?;
                if last {
                    profile = p;
                }
                if i > 0 {
                    times.push(self.now() - t0);
                } else {
                    first_scores_at_ms = js_sys::Date::now();
                }
                self.post(&FromWorker::Progress {
                    id,
                    stage: format!("benchmark {len} tokens"),
                    done: n as u64,
                    total: Some(lengths.len() as u64),
                    rate: 0.0,
                });
                self.yield_now().await;
                self.check_cancel(id)?;
            }
            rows.push(bench_row(len, batch, loaded.scorer.workers(), times, profile, first_scores_at_ms));
        }
        Ok(rows)
    }
}
