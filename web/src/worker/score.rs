//! Scoring jobs: responses to a prompt or one conversation (answered with the results and the
//! CLI's record), and JSONL files (answered with the annotated lines), in batches with progress
//! and a cancel check between them.

use super::error::{Res, WorkerError};
use super::queue::{Engine, Loaded};
use super::shape::{annotated_line, labels, parse_line, record, scores_of};
use crate::protocol::{FromWorker, ScoreJob, ScoreOutput, SequenceResult, StepRequest};
use rewardlens_core::Message;
use rewardlens_models::LengthPolicy;

/// The CLI's `--step-threshold` default: `first_bad_step` is the first step below it.
const STEP_THRESHOLD: f32 = 0.5;

impl Engine {
    pub(super) async fn score(
        &self,
        id: u64,
        job: ScoreJob,
        truncate: bool,
        steps: Option<&StepRequest>,
    ) -> Res<ScoreOutput> {
        let loaded = self.loaded("scoring")?;
        let policy = LengthPolicy { max_tokens: None, truncate };
        let convs: Vec<Vec<Message>> = match &job {
            ScoreJob::Responses { responses, .. } if responses.is_empty() => {
                return Err(WorkerError::NoInput("add at least one response"));
            }
            ScoreJob::Conversation { messages } if messages.is_empty() => {
                return Err(WorkerError::NoInput("the conversation has no messages"));
            }
            ScoreJob::Responses { .. } | ScoreJob::Conversation { .. } => job.conversations(),
            ScoreJob::Jsonl { text } => return self.score_jsonl(id, &loaded, text, policy).await,
            ScoreJob::Benchmark { suite, rows } => {
                return self.score_benchmark(id, &loaded, *suite, rows, policy, steps).await
            }
        };
        let mut results = self.score_sequences(id, &loaded, &convs, policy, true).await?;
        if let Some(req) = steps {
            self.add_step_details(id, &loaded, &convs, &mut results, req, &policy).await?;
        }
        let labels = labels(&loaded.info.labels, &results);
        let threshold = steps.and_then(|s| s.threshold).unwrap_or(STEP_THRESHOLD);
        let record = record(&job, &results, &labels, threshold);
        Ok(ScoreOutput::Sequences { labels, results, record })
    }

    /// Scores conversations, in order, batch after batch (`Scorer::batches`), yielding between
    /// batches so the job can be cancelled.
    pub(super) async fn score_sequences(
        &self,
        id: u64,
        loaded: &Loaded,
        convs: &[Vec<Message>],
        policy: LengthPolicy,
        progress: bool,
    ) -> Res<Vec<SequenceResult>> {
        let mut out = Vec::with_capacity(convs.len());
        let started = self.now();
        // A local model refuses images when it encodes them; an endpoint gets them inline.
        let resolved;
        let convs = if matches!(loaded.scorer, super::scorer::Scorer::Remote { .. }) {
            resolved = self.with_data_urls(convs).await?;
            &resolved[..]
        } else {
            convs
        };
        let (encoded, batches) = loaded.scorer.batches(convs, &policy)?;
        let cancel = self.cancel_poll(id);
        for batch in batches {
            let range = batch.range.clone();
            let encoded = encoded.get(range.clone()).unwrap_or_default();
            let t0 = self.now();
            let mut results = loaded
                .scorer
                .score_batch(&convs[range.clone()], encoded, &batch.local_groups(), &policy, &cancel)
                .await?;
            let ms = (self.now() - t0) / range.len().max(1) as f64;
            results.iter_mut().for_each(|r| r.ms = ms);
            out.extend(results);
            if progress {
                let rate = self.per_second(out.len() as f64, started);
                let (done, total) = (out.len() as u64, Some(convs.len() as u64));
                self.post(&FromWorker::Progress { id, stage: "scoring".into(), done, total, rate });
            }
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(out)
    }

    async fn score_jsonl(&self, id: u64, loaded: &Loaded, text: &str, policy: LengthPolicy) -> Res<ScoreOutput> {
        let lines: Vec<&str> = text.lines().collect();
        let (mut out, mut skipped, mut scored) = (String::new(), Vec::new(), 0);
        let mut preferences = rewardlens_models::records::PreferenceSummary::default();
        let started = self.now();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok((obj, record)) => {
                    let convs: Vec<Vec<Message>> = record.conversations().iter().map(|c| c.to_vec()).collect();
                    match self.score_sequences(id, loaded, &convs, policy, false).await {
                        Ok(results) => {
                            let labels = labels(&loaded.info.labels, &results);
                            preferences.add(&record, &scores_of(&results));
                            out.push_str(&annotated_line(obj, &record, &results, &labels));
                            out.push('\n');
                            scored += 1;
                        }
                        Err(WorkerError::Cancelled) => return Err(WorkerError::Cancelled),
                        Err(e) => skipped.push(format!("line {}: {e}", i + 1)),
                    }
                }
                Err(e) => skipped.push(format!("line {}: {e}", i + 1)),
            }
            let rate = self.per_second((i + 1) as f64, started);
            self.post(&FromWorker::Progress {
                id,
                stage: "scoring lines".into(),
                done: i as u64 + 1,
                total: Some(lines.len() as u64),
                rate,
            });
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        let preferences = (preferences.records() > 0).then(|| preferences.to_string());
        Ok(ScoreOutput::Jsonl { text: out, scored, skipped, preferences })
    }
}
