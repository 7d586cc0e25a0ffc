//! Messages between the page and the engine's Web Worker, sent as JSON text (local files
//! travel next to the text as `File` objects, which the browser clones without copying).

use rewardlens_core::Message;
use serde::{Deserialize, Serialize};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A Hugging Face Hub repository at a revision (branch, tag or commit).
    Hub { repo: String, revision: String },
    /// A folder URL holding a checkpoint's files, or the URL of one GGUF file.
    Url { url: String },
    /// Files the user picked or dropped, sent alongside the message.
    Files { names: Vec<String> },
}

impl ModelSource {
    /// A repo id (`owner/name`), a URL, or a path on this origin, as typed by a user or put
    /// in a `?model=` link.
    pub fn parse(text: &str, revision: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("no model given: enter a Hub repo id (owner/name) or a URL".into());
        }
        if t.starts_with("https://") || t.starts_with("http://") || t.starts_with('/') || t.starts_with("./") {
            return Ok(Self::Url { url: t.to_owned() });
        }
        let parts: Vec<&str> = t.split('/').collect();
        let valid = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if parts.len() == 2 && parts.iter().all(|p| valid(p)) {
            let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
            return Ok(Self::Hub { repo: t.to_owned(), revision: revision.to_owned() });
        }
        Err(format!("`{t}` is neither a Hub repo id (owner/name) nor a URL (https://…)"))
    }

    /// The base URL files are fetched from, or the GGUF's URL; Hub repos resolve against
    /// `hub` (the Hugging Face Hub, or a mirror with the same URL layout).
    pub fn base_url(&self, hub: &str) -> Option<String> {
        match self {
            Self::Hub { repo, revision } => Some(format!("{}/{repo}/resolve/{revision}/", hub.trim_end_matches('/'))),
            Self::Url { url } if is_gguf_name(url) => Some(url.clone()),
            Self::Url { url } if url.ends_with('/') => Some(url.clone()),
            Self::Url { url } => Some(format!("{url}/")),
            Self::Files { .. } => None,
        }
    }

    /// How the source is shown to the user.
    pub fn label(&self) -> String {
        match self {
            Self::Hub { repo, revision } if revision == "main" => repo.clone(),
            Self::Hub { repo, revision } => format!("{repo}@{revision}"),
            Self::Url { url } => url.clone(),
            Self::Files { names } => names.join(", "),
        }
    }
}

/// Where Hub repo ids are fetched from unless a mirror is configured.
pub const HUB: &str = "https://huggingface.co";

pub fn is_gguf_name(name: &str) -> bool {
    name.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase().ends_with(".gguf")
}

/// How the weights are held in wasm memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StorageChoice {
    /// f32 when it fits, else q8_0, else q4_k; GGUF files stay as they are.
    #[default]
    Auto,
    F32,
    Q8_0,
    Q4K,
}

impl StorageChoice {
    pub const ALL: [(Self, &'static str); 4] = [
        (Self::Auto, "auto (f32 if it fits, else q8_0, else q4_k)"),
        (Self::F32, "f32 (exact)"),
        (Self::Q8_0, "q8_0 (quantized on load)"),
        (Self::Q4K, "q4_k (quantized on load)"),
    ];

    pub fn key(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4_k",
        }
    }

    pub fn from_key(k: &str) -> Self {
        Self::ALL.iter().map(|(s, _)| *s).find(|s| s.key() == k).unwrap_or_default()
    }
}

/// Where the model runs in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// WebGPU when the browser offers an adapter that can hold the model, else the wasm CPU
    /// engine (the reason is shown).
    #[default]
    Auto,
    #[serde(rename = "webgpu")]
    WebGpu,
    Cpu,
}

impl BackendChoice {
    pub const ALL: [(Self, &'static str); 3] =
        [(Self::Auto, "auto (WebGPU when available)"), (Self::WebGpu, "WebGPU"), (Self::Cpu, "WASM CPU")];

    pub fn key(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::WebGpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }

    pub fn from_key(k: &str) -> Self {
        Self::ALL.iter().map(|(s, _)| *s).find(|s| s.key() == k).unwrap_or_default()
    }
}

/// A remote scoring endpoint, as the user configured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RemoteSettings {
    pub endpoint: String,
    /// `vllm`, `vllm-classify`, `nim`, `openrlhf` or `tei`.
    pub protocol: String,
    /// The served model's name (the `model` field); empty for the server's default.
    pub model: String,
    /// Held in memory (and in localStorage only if the user asked to remember it).
    pub api_key: String,
}

impl RemoteSettings {
    pub fn is_set(&self) -> bool {
        !self.endpoint.trim().is_empty()
    }
}

/// What to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScoreJob {
    /// One prompt, several responses.
    Responses { prompt: String, responses: Vec<String> },
    /// One multi-turn conversation.
    Conversation { messages: Vec<Message> },
    /// A JSONL file in the CLI's formats; answered with the annotated lines.
    Jsonl { text: String },
}

/// Page -> worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Load {
        id: u64,
        source: ModelSource,
        storage: StorageChoice,
        #[serde(default)]
        backend: BackendChoice,
        /// A Hugging Face token for gated repos; kept in memory only.
        token: Option<String>,
        /// The Hub endpoint (a mirror, or a local stand-in in tests); `HUB` when absent.
        hub: Option<String>,
        /// A remote endpoint: used when the model cannot be loaded here (too large, failed),
        /// or always with `remote_only`.
        #[serde(default)]
        remote: Option<RemoteSettings>,
        #[serde(default)]
        remote_only: bool,
    },
    Score {
        id: u64,
        job: ScoreJob,
        truncate: bool,
        /// Step rewards and token scores too.
        #[serde(default)]
        steps: Option<StepRequest>,
    },
    /// Times the forward pass on `bench_ids` of each length (one warm-up, then `iters` runs).
    Bench {
        id: u64,
        lengths: Vec<usize>,
        iters: usize,
    },
    /// Stops the job `id` at the next sequence boundary.
    Cancel {
        id: u64,
    },
    CacheInfo,
    ClearCache,
}

/// A failure the user can act on: `code` is stable (tests and the web component match on it),
/// `message` is for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserError {
    pub code: String,
    pub message: String,
}

impl UserError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

/// A loaded model, described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub source: String,
    pub architecture: String,
    pub labels: Vec<String>,
    pub parameters: u64,
    /// `f32`, `q8_0`, … or `gguf:<types>`.
    pub storage: String,
    pub estimated_bytes: u64,
    pub max_tokens: usize,
    pub load_ms: f64,
    pub downloaded_bytes: u64,
    pub cached_bytes: u64,
    /// Who scores: `WebGPU (<adapter>)`, `WASM CPU (simd128)` or `Remote (<protocol> at <url>)`.
    pub backend: String,
    /// Why scoring went remote instead of running here.
    pub fallback_reason: Option<String>,
    /// Why the WASM CPU engine runs instead of WebGPU (auto mode).
    #[serde(default)]
    pub gpu_fallback_reason: Option<String>,
    /// The step convention the architecture implies (a PRM), if any.
    #[serde(default)]
    pub step_convention: Option<String>,
}

/// What step scoring the page asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepRequest {
    /// `qwen`, `shepherd`, `value`, `prefix`; None: what the model declares (PRM
    /// architectures), else prefix scores.
    pub convention: Option<String>,
    pub split: rewardlens_core::StepSplit,
    /// The head at every token of the answer (heatmap).
    pub tokens: bool,
}

/// Step rewards of one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub convention: String,
    pub steps: Vec<rewardlens_core::Step>,
    pub scores: Vec<f32>,
}

/// One token of the answer and the head's reward there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenScore {
    pub text: String,
    pub score: f32,
}

/// One scored sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceResult {
    pub score: f32,
    /// One value per label (equal to `[score]` for single-label models).
    pub logits: Vec<f32>,
    pub tokens: usize,
    pub truncated_tokens: usize,
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_scores: Option<Vec<TokenScore>>,
    /// Why steps or tokens could not be scored for this sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_error: Option<String>,
}

/// The answer to a `Score` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScoreOutput {
    Sequences {
        results: Vec<SequenceResult>,
        labels: Vec<String>,
    },
    /// Annotated JSONL text and how many lines were skipped (each with its reason).
    Jsonl {
        text: String,
        scored: usize,
        skipped: Vec<String>,
    },
}

/// One benchmark length's median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub tokens: usize,
    pub median_ms: f64,
    pub tokens_per_s: f64,
    /// When this length's first pass (warm-up) returned, in ms since the Unix epoch: with the
    /// page's `performance.timeOrigin`, the time from opening the page to the first scores.
    #[serde(default)]
    pub first_scores_at_ms: f64,
}

/// Worker -> page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's wasm started and listens.
    Ready,
    Progress {
        id: u64,
        /// What is happening: a file name being downloaded, "building", "scoring".
        stage: String,
        done: u64,
        total: Option<u64>,
        /// Bytes (or items) per second so far.
        rate: f64,
    },
    Loaded {
        id: u64,
        info: ModelInfo,
    },
    Scored {
        id: u64,
        output: ScoreOutput,
        backend: String,
        ms: f64,
    },
    Benched {
        id: u64,
        rows: Vec<BenchRow>,
    },
    Cancelled {
        id: u64,
    },
    Failed {
        id: u64,
        error: UserError,
    },
    CacheInfo {
        bytes: u64,
        entries: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            ModelSource::parse("Skywork/Skywork-Reward-V2-Qwen3-0.6B", "").unwrap().base_url(HUB).unwrap(),
            "https://huggingface.co/Skywork/Skywork-Reward-V2-Qwen3-0.6B/resolve/main/"
        );
        assert_eq!(
            ModelSource::parse("a/b", "refs/pr/1").unwrap(),
            ModelSource::Hub { repo: "a/b".into(), revision: "refs/pr/1".into() }
        );
        assert_eq!(ModelSource::parse("/fixtures/m", "").unwrap().base_url(HUB).unwrap(), "/fixtures/m/");
        assert_eq!(
            ModelSource::parse("https://x.org/m.Q8_0.gguf?download=1", "").unwrap().base_url(HUB).unwrap(),
            "https://x.org/m.Q8_0.gguf?download=1"
        );
        assert!(ModelSource::parse("not a model", "").unwrap_err().contains("neither"));
        assert!(ModelSource::parse("", "").is_err());
    }

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToWorker::Score {
            id: 3,
            job: ScoreJob::Responses { prompt: "p".into(), responses: vec!["a".into(), "<b>".into()] },
            truncate: false,
            steps: Some(StepRequest {
                convention: Some("qwen".into()),
                split: rewardlens_core::StepSplit::Separator("ки".into()),
                tokens: true,
            }),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""type":"score""#), "{text}");
        assert_eq!(serde_json::from_str::<ToWorker>(&text).unwrap(), m);
    }
}
