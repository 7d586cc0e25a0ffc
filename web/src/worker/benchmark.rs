//! Benchmark jobs (the page's Evaluate view): each row of a suite scored as `rewardlens eval`
//! scores it — a preference row's answers as sequences after its prompt, a ProcessBench row's
//! steps under the model's step convention — with progress by rows and a cancel check
//! between chunks.

use super::error::{Res, WorkerError};
use super::queue::{Engine, Loaded};
use crate::protocol::{BenchmarkRow, FromWorker, ScoreOutput, StepRequest};
use rewardlens_core::Message;
use rewardlens_eval::{stored_score, Row, RowScores, ScoredRow, Suite};
use rewardlens_models::prm::StepConvention;
use rewardlens_models::records::parse_record;
use rewardlens_models::LengthPolicy;

/// Sequences scored between progress reports and cancel checks.
const CHUNK_SEQUENCES: usize = 16;

fn bad(row: &Row, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Benchmark(format!("row {} of {}: {e}", row.id(), row.subset()))
}

fn kept(row: &Row, v: f32) -> Res<f64> {
    stored_score(v).ok_or_else(|| bad(row, format!("the model gave a non-finite score ({v})")))
}

impl Engine {
    pub(super) async fn score_benchmark(
        &self,
        id: u64,
        loaded: &Loaded,
        suite: Suite,
        rows: &[BenchmarkRow],
        policy: LengthPolicy,
        steps: Option<&StepRequest>,
    ) -> Res<ScoreOutput> {
        if rows.is_empty() {
            return Err(WorkerError::NoInput("the benchmark file has no rows"));
        }
        let rows: Vec<Row> = rows
            .iter()
            .map(|r| suite.row(&r.row, &r.split).map_err(|e| WorkerError::Benchmark(e.to_string())))
            .collect::<Res<_>>()?;
        let convention = match suite {
            Suite::ProcessBench => Some(self.benchmark_convention(loaded, steps)?),
            _ => None,
        };
        let started = self.now();
        let mut out: Vec<ScoredRow> = Vec::with_capacity(rows.len());
        let mut at = 0;
        while at < rows.len() {
            let chunk_start = at;
            let mut convs: Vec<Vec<Message>> = Vec::new();
            let mut counts = Vec::new();
            while at < rows.len() && (convs.len() < CHUNK_SEQUENCES || at == chunk_start) {
                let row = &rows[at];
                match (row, &convention) {
                    (Row::Preference(p), _) => {
                        let record = parse_record(&p.score_line()).map_err(|e| bad(row, e))?;
                        let c = record.conversations();
                        counts.push(c.len());
                        convs.extend(c.into_iter().map(<[Message]>::to_vec));
                    }
                    (Row::Steps(s), Some(c)) => {
                        let (inputs, _) = loaded.scorer.local().expect("checked in benchmark_convention");
                        let (conv, steps) = s.conversation();
                        let input = inputs.encode_steps(c, &conv, &steps, &policy).map_err(|e| bad(row, e))?;
                        let positions = loaded.scorer.positions(&input.ids).await?;
                        let step_scores = c
                            .rewards(&positions, &input.positions)
                            .into_iter()
                            .map(|v| kept(row, v))
                            .collect::<Res<_>>()?;
                        out.push(row.scored(suite, RowScores::Steps { step_scores }).map_err(|e| bad(row, e))?);
                        counts.push(1);
                    }
                    (Row::Steps(_), None) => unreachable!("ProcessBench has a convention"),
                }
                at += 1;
            }
            if !convs.is_empty() {
                let results = self.score_sequences(id, loaded, &convs, policy, false).await?;
                let mut k = 0;
                for (row, n) in rows[chunk_start..at].iter().zip(counts) {
                    let Row::Preference(p) = row else { continue };
                    let all = results[k..k + n].iter().map(|r| kept(row, r.score)).collect::<Res<Vec<_>>>()?;
                    k += n;
                    let (chosen, rejected) = all.split_at(p.chosen.len());
                    let scores =
                        RowScores::Preference { chosen_scores: chosen.to_vec(), rejected_scores: rejected.to_vec() };
                    out.push(row.scored(suite, scores).map_err(|e| bad(row, e))?);
                }
            }
            self.post(&FromWorker::Progress {
                id,
                stage: "scoring rows".into(),
                done: at as u64,
                total: Some(rows.len() as u64),
                rate: self.per_second(at as f64, started),
            });
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(ScoreOutput::Benchmark { rows: out })
    }

    /// ProcessBench's step convention: the page's choice, else the one the architecture
    /// declares; step rewards need the model in this tab.
    fn benchmark_convention(&self, loaded: &Loaded, steps: Option<&StepRequest>) -> Res<StepConvention> {
        let (_, config) = loaded.scorer.local().ok_or_else(|| {
            WorkerError::Remote(
                "ProcessBench's step rewards need the model in this browser, not a remote endpoint".into(),
            )
        })?;
        let convention = match steps.and_then(|s| s.convention.as_deref()) {
            Some(name) => StepConvention::parse(name)?,
            None => StepConvention::of_architecture(config).ok_or_else(|| {
                WorkerError::Benchmark(
                    "ProcessBench needs step rewards: this model's architecture declares no step convention; pick one \
                     (qwen, shepherd, value, or prefix for an outcome model)"
                        .into(),
                )
            })?,
        };
        convention.check(config)?;
        Ok(convention)
    }
}
