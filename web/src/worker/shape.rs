//! The worker's answers, shaped: one sequence's result, label names, the model info, benchmark
//! rows, JSONL lines, and the CLI's record of a scored job (via `records`, as `rewardlens score`
//! writes it), so the page and the web component read results instead of recomputing them.

use crate::protocol::{BenchRow, ModelInfo, ModelSource, ScoreJob, SequenceResult};
use rewardlens_models::memory::{MemoryEstimate, WeightStorage};
use rewardlens_models::prm::StepScores;
use rewardlens_models::records::{annotate, annotate_steps, parse_record, Record, STEP_ERROR_FIELD};
use rewardlens_models::{ConversationScore, ModelConfig};
use serde_json::{Map, Value};

use super::storage::PLANNED_TOKENS;

pub fn sequence_result(s: ConversationScore, ms: f64) -> SequenceResult {
    SequenceResult {
        score: s.score(),
        logits: s.logits,
        tokens: s.tokens,
        truncated_tokens: s.truncated_tokens,
        ms,
        steps: None,
        token_scores: None,
        step_error: None,
    }
}

/// A remote endpoint's values for one sequence (the first is the score); it reports no tokens.
pub fn remote_result(values: Vec<f32>, ms: f64) -> SequenceResult {
    SequenceResult {
        score: values[0],
        logits: values,
        tokens: 0,
        truncated_tokens: 0,
        ms,
        steps: None,
        token_scores: None,
        step_error: None,
    }
}

/// Results back as the engine's scores, for `records`.
pub fn scores_of(results: &[SequenceResult]) -> Vec<ConversationScore> {
    results
        .iter()
        .map(|r| ConversationScore {
            logits: r.logits.clone(),
            token_logits: None,
            tokens: r.tokens,
            truncated_tokens: r.truncated_tokens,
        })
        .collect()
}

/// Label names: the model's, or for a remote endpoint (which names none here) LABEL_i.
pub fn labels(model_labels: &[String], results: &[SequenceResult]) -> Vec<String> {
    if !model_labels.is_empty() {
        return model_labels.to_vec();
    }
    let n = results.first().map_or(1, |r| r.logits.len());
    (0..n).map(|i| format!("LABEL_{i}")).collect()
}

/// Who scores a loaded model, read off its scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsOn {
    /// `WASM CPU (simd128)`, `WebGPU: <adapter>, <format> weights`, ...
    pub backend: String,
    /// Engine workers (the pipeline's stages; 1 otherwise).
    pub workers: usize,
    /// The CPU engine's matrix-multiply kernel; empty elsewhere.
    pub kernel: String,
}

/// What the page shows about a model loaded in this tab; who scores (backend, workers, kernel)
/// comes from the scorer, so no load path can report it differently.
pub struct LocalInfo<'a> {
    pub source: &'a ModelSource,
    pub config: &'a ModelConfig,
    pub storage: String,
    pub estimated_bytes: u64,
    pub load_ms: f64,
    /// Bytes downloaded, bytes read from the cache.
    pub stats: (u64, u64),
    pub gpu_fallback_reason: Option<String>,
}

impl LocalInfo<'_> {
    pub fn describe(self, runs_on: RunsOn) -> ModelInfo {
        ModelInfo {
            source: self.source.label(),
            architecture: self.config.architecture.name(),
            labels: self.config.labels.clone(),
            parameters: MemoryEstimate::new(self.config, WeightStorage::F32, PLANNED_TOKENS).parameters,
            storage: self.storage,
            estimated_bytes: self.estimated_bytes,
            max_tokens: self.config.max_position_embeddings,
            load_ms: self.load_ms,
            downloaded_bytes: self.stats.0,
            cached_bytes: self.stats.1,
            backend: runs_on.backend,
            fallback_reason: None,
            gpu_fallback_reason: self.gpu_fallback_reason,
            step_convention: None,
            workers: runs_on.workers,
            kernel: runs_on.kernel,
        }
    }
}

/// A GGUF loaded on the CPU (one engine or the pipeline): the file is the weights in memory.
pub fn gguf_info<'a>(
    source: &'a ModelSource,
    config: &'a ModelConfig,
    types_text: &str,
    file_bytes: u64,
    load_ms: f64,
    stats: (u64, u64),
    gpu_fallback_reason: Option<String>,
) -> LocalInfo<'a> {
    let estimate = MemoryEstimate::new(config, WeightStorage::F32, PLANNED_TOKENS);
    LocalInfo {
        source,
        config,
        storage: format!("GGUF ({types_text})"),
        estimated_bytes: file_bytes + estimate.activations,
        load_ms,
        stats,
        gpu_fallback_reason,
    }
}

/// A model scored on a remote endpoint: `backend` names it, `reason` says why it is not here.
pub fn remote_info(source: &ModelSource, backend: String, reason: Option<String>) -> ModelInfo {
    ModelInfo {
        source: source.label(),
        architecture: "remote".into(),
        labels: Vec::new(),
        parameters: 0,
        storage: "on the server".into(),
        estimated_bytes: 0,
        max_tokens: 0,
        load_ms: 0.0,
        downloaded_bytes: 0,
        cached_bytes: 0,
        backend,
        fallback_reason: reason,
        gpu_fallback_reason: None,
        step_convention: None,
        workers: 1,
        kernel: String::new(),
    }
}

/// One line of a JSONL job, understood: the object (its keys kept in order) and what it asks
/// for; the error is the line's reason to be skipped.
pub fn parse_line(line: &str) -> Result<(Map<String, Value>, Record), String> {
    serde_json::from_str::<Map<String, Value>>(line)
        .map_err(|e| format!("not a JSON object: {e}"))
        .and_then(|obj| parse_record(&obj).map(|r| (obj, r)).map_err(|e| e.to_string()))
}

/// A JSONL line with its scores added, as the CLI writes it (without the newline).
pub fn annotated_line(
    mut obj: Map<String, Value>,
    record: &Record,
    results: &[SequenceResult],
    labels: &[String],
) -> String {
    annotate(&mut obj, record, &scores_of(results), labels);
    serde_json::to_string(&obj).expect("JSON values serialize")
}

/// The CLI's record of a `Responses` or `Conversation` job: the input (`prompt` and `responses`,
/// or `conversation`), then what `records::annotate` adds (`scores` and `ranking`, or `score`;
/// `attributes` for multi-label models; `truncated_tokens` when cut) and with step rewards what
/// `records::annotate_steps` adds (`step_convention`, `steps`, `step_scores`, `first_bad_step`:
/// the first step below `threshold`). A response whose steps could not be scored has null in
/// each step list, and the first such reason is `step_error`. None for JSONL jobs.
pub fn record(
    job: &ScoreJob,
    results: &[SequenceResult],
    labels: &[String],
    threshold: f32,
) -> Option<Map<String, Value>> {
    let mut obj = Map::new();
    let record = match job {
        ScoreJob::Responses { prompt, images, responses } => {
            obj.insert("prompt".into(), prompt.clone().into());
            if !images.is_empty() {
                obj.insert("images".into(), images.clone().into());
            }
            obj.insert("responses".into(), responses.clone().into());
            Record::Responses(job.conversations())
        }
        ScoreJob::Conversation { messages } => {
            obj.insert("conversation".into(), serde_json::to_value(messages).expect("messages serialize"));
            Record::Single(messages.clone())
        }
        ScoreJob::Jsonl { .. } | ScoreJob::Benchmark { .. } => return None,
    };
    annotate(&mut obj, &record, &scores_of(results), labels);
    if let Some(first) = results.iter().find_map(|r| r.steps.as_ref()) {
        let steps: Vec<StepScores> = results
            .iter()
            .map(|r| match &r.steps {
                Some(v) => StepScores { convention: "", steps: v.steps.clone(), scores: v.scores.clone() },
                None => StepScores { convention: "", steps: Vec::new(), scores: Vec::new() },
            })
            .collect();
        annotate_steps(&mut obj, &record, &steps, threshold);
        // The convention as the engine named it (replaced in place: the key keeps its position).
        obj.insert("step_convention".into(), first.convention.clone().into());
        for key in ["steps", "step_scores", "first_bad_step"] {
            if let Some(Value::Array(per_response)) = obj.get_mut(key) {
                for (v, r) in per_response.iter_mut().zip(results) {
                    if r.steps.is_none() {
                        *v = Value::Null;
                    }
                }
            }
        }
    }
    if let Some(e) = results.iter().filter_map(|r| r.step_error.as_deref()).find(|e| !e.is_empty()) {
        obj.insert(STEP_ERROR_FIELD.into(), e.into());
    }
    Some(obj)
}

/// One benchmark length's row from its timed passes (`times` in ms, at least one).
pub fn bench_row(
    tokens: usize,
    batch: usize,
    workers: usize,
    mut times: Vec<f64>,
    profile: Vec<(String, f64)>,
    first_scores_at_ms: f64,
) -> BenchRow {
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    BenchRow {
        tokens,
        batch,
        workers,
        median_ms,
        tokens_per_s: (tokens * batch) as f64 / (median_ms / 1000.0),
        profile,
        first_scores_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StepView;
    use rewardlens_core::{Message, Step};
    use serde_json::json;

    fn result(logits: &[f32], steps: Option<&[f32]>) -> SequenceResult {
        let mut r = sequence_result(
            ConversationScore { logits: logits.to_vec(), token_logits: None, tokens: 7, truncated_tokens: 0 },
            1.5,
        );
        r.steps = steps.map(|s| StepView {
            convention: "prefix".into(),
            steps: (0..s.len()).map(|i| Step { text: format!("s{i}"), start: i, end: i + 1 }).collect(),
            scores: s.to_vec(),
        });
        r
    }

    #[test]
    fn results_and_labels() {
        let r = result(&[0.25, -1.0], None);
        assert_eq!((r.score, r.logits.clone(), r.tokens, r.ms), (0.25, vec![0.25, -1.0], 7, 1.5));
        let remote = remote_result(vec![2.0, 3.0], 4.0);
        assert_eq!((remote.score, remote.tokens, remote.ms), (2.0, 0, 4.0));
        assert_eq!(labels(&["helpful".into()], std::slice::from_ref(&r)), vec!["helpful"]);
        assert_eq!(labels(&[], &[r]), vec!["LABEL_0", "LABEL_1"]);
        assert_eq!(labels(&[], &[]), vec!["LABEL_0"]);
        let back = scores_of(&[remote]);
        assert_eq!((back[0].logits.clone(), back[0].score()), (vec![2.0, 3.0], 2.0));
    }

    #[test]
    fn responses_get_the_clis_record_with_ranking_and_first_bad_step() {
        let job = ScoreJob::Responses {
            prompt: "2 + 2?".into(),
            images: vec![],
            responses: vec!["5".into(), "4".into(), "four".into()],
        };
        let results =
            vec![result(&[0.1], Some(&[0.9, 0.2, 0.1])), result(&[0.8], Some(&[0.7, 0.6])), result(&[f32::NAN], None)];
        let mut failed = results;
        failed[2].step_error = Some("no steps".into());
        let o = Value::Object(record(&job, &failed, &["LABEL_0".into()], 0.5).unwrap());
        assert_eq!(
            o,
            json!({
                "prompt": "2 + 2?",
                "responses": ["5", "4", "four"],
                "scores": [0.1, 0.8, null],
                // NaN last, as the CLI ranks.
                "ranking": [1, 0, 2],
                "step_convention": "prefix",
                "steps": [["s0", "s1", "s2"], ["s0", "s1"], null],
                "step_scores": [[0.9, 0.2, 0.1], [0.7, 0.6], null],
                "first_bad_step": [1, null, null],
                "step_error": "no steps",
            })
        );
        // The threshold is the caller's.
        let low = record(&job, &failed, &[], 0.15).unwrap();
        assert_eq!(low["first_bad_step"], json!([2, null, null]));
        // Key order is the CLI's: the input, scores, ranking, then steps.
        let keys: Vec<&str> = low.keys().map(String::as_str).collect();
        assert_eq!(keys[..5], ["prompt", "responses", "scores", "ranking", "step_convention"]);
    }

    #[test]
    fn conversations_get_one_score_and_multi_label_models_their_attributes() {
        let messages = vec![Message::user("Hi"), Message::assistant("Hello!")];
        let job = ScoreJob::Conversation { messages: messages.clone() };
        let labels = vec!["helpful".to_string(), "harmless".to_string()];
        let mut r = result(&[1.5, -0.5], None);
        r.truncated_tokens = 3;
        let o = Value::Object(record(&job, &[r], &labels, 0.5).unwrap());
        assert_eq!(
            o,
            json!({
                "conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                "score": 1.5,
                "attributes": {"helpful": 1.5, "harmless": -0.5},
                "truncated_tokens": 3,
            })
        );
        assert!(record(&ScoreJob::Jsonl { text: String::new() }, &[], &labels, 0.5).is_none());
        // Steps of one sequence are plain lists.
        let steps = record(&job, &[result(&[1.0, 0.0], Some(&[0.6, 0.4]))], &labels, 0.5).unwrap();
        assert_eq!(steps["first_bad_step"], json!(1));
        assert_eq!(steps["steps"], json!(["s0", "s1"]));
    }

    #[test]
    fn jsonl_lines_keep_their_fields_and_gain_the_clis() {
        let (obj, rec) = parse_line(r#"{"id": 3, "prompt": "q", "responses": ["a", "b"]}"#).unwrap();
        let line = annotated_line(obj, &rec, &[result(&[0.5], None), result(&[0.75], None)], &["LABEL_0".into()]);
        assert_eq!(line, r#"{"id":3,"prompt":"q","responses":["a","b"],"scores":[0.5,0.75],"ranking":[1,0]}"#);
        let reason = |line: &str| parse_line(line).err().unwrap();
        assert!(reason("[1]").starts_with("not a JSON object"));
        assert!(reason(r#"{"prompt": "q"}"#).starts_with("expected one of"));
    }

    #[test]
    fn model_info_and_bench_rows() {
        let config = super::super::storage::tests::small_config();
        let source = ModelSource::Hub { repo: "a/b".into(), revision: "v1".into() };
        let runs_on = RunsOn { backend: "WASM CPU (simd128), 2 workers".into(), workers: 2, kernel: "int8".into() };
        let info =
            gguf_info(&source, &config, "f32, q8_0", 1000, 12.0, (10, 20), Some("no WebGPU".into())).describe(runs_on);
        assert_eq!((info.source.as_str(), info.storage.as_str()), ("a/b@v1", "GGUF (f32, q8_0)"));
        assert_eq!((info.workers, info.kernel.as_str(), info.max_tokens), (2, "int8", 4096));
        let parameters = MemoryEstimate::new(&config, WeightStorage::F32, PLANNED_TOKENS).parameters;
        assert_eq!((info.downloaded_bytes, info.cached_bytes, info.parameters), (10, 20, parameters));
        assert!(info.estimated_bytes > 1000);
        assert_eq!(info.gpu_fallback_reason.as_deref(), Some("no WebGPU"));
        let remote = remote_info(&source, "Remote (nim at http://x)".into(), Some("too large".into()));
        assert_eq!((remote.architecture.as_str(), remote.workers), ("remote", 1));

        let row = bench_row(100, 2, 1, vec![30.0, 10.0, 20.0], vec![], 5.0);
        assert_eq!((row.median_ms, row.tokens_per_s), (20.0, 10_000.0));
    }
}
