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
        let plain = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if parts.len() == 2 && parts.iter().all(|p| plain(p)) {
            let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
            let source = Self::Hub { repo: t.to_owned(), revision: revision.to_owned() };
            source.validate()?;
            return Ok(source);
        }
        Err(format!("`{t}` is neither a Hub repo id (owner/name) nor a URL (https://…)"))
    }

    /// Refuses Hub repo ids and revisions that would resolve outside the repo's own files
    /// (`..` segments, odd characters): the worker checks every source it is sent, so a link or
    /// a page cannot load another repo under a trusted-looking label.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Hub { repo, revision } => {
                check_repo_id(repo)?;
                check_revision(revision)
            }
            Self::Url { .. } | Self::Files { .. } => Ok(()),
        }
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

/// The Hub's rules for each half of a repo id: letters, digits, `-`, `_`, `.`; no `--` or `..`;
/// neither starting nor ending with `-` or `.`; 96 characters at most.
pub fn check_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !p.contains("--")
            && !p.contains("..")
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    };
    if parts.len() == 2 && parts.iter().all(|p| ok(p)) {
        Ok(())
    } else {
        Err(format!("`{repo}` is not a valid Hub repo id (owner/name: letters, digits, `-`, `_`, `.`)"))
    }
}

/// A branch, tag, commit or `refs/pr/N`: `/`-separated names of letters, digits, `-`, `_`,
/// `.`, `+`, none empty, none starting with `.` (so no `.` or `..`), 255 characters at most.
pub fn check_revision(revision: &str) -> Result<(), String> {
    let ok = |seg: &str| {
        !seg.is_empty() && !seg.starts_with('.') && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    };
    if !revision.is_empty() && revision.len() <= 255 && !revision.contains("..") && revision.split('/').all(ok) {
        Ok(())
    } else {
        Err(format!(
            "`{revision}` is not a valid revision (a branch, tag or commit: letters, digits, `-`, `_`, `.`, `+`, `/`)"
        ))
    }
}

/// A Hub mirror's base URL as typed: `http(s)://host[:port][/path]`, without credentials,
/// query or fragment; returned without a trailing `/`.
pub fn check_hub_url(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('/');
    let rest = t.strip_prefix("https://").or_else(|| t.strip_prefix("http://"));
    let bad = || format!("`{t}` is not a Hub mirror URL (https://host[/path])");
    let rest = rest.ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or("");
    let odd = |c: char| c.is_whitespace() || c.is_control() || "@?#\\%".contains(c);
    if host.is_empty() || rest.chars().any(odd) || rest.split('/').skip(1).any(|s| s == ".." || s == ".") {
        return Err(bad());
    }
    Ok(t.to_owned())
}

/// `scheme://host[:port]` of a URL, as the page shows it.
pub fn url_host(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    &url[..end]
}

/// Whether `url` lies under `base` (a base URL without its trailing `/`).
fn under(url: &str, base: &str) -> bool {
    url.strip_prefix(base.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a Hugging Face token may be sent with `url`: only to huggingface.co itself, or
/// under a mirror the user typed into the page. A mirror named by a link (`?hub=`) never gets
/// it, nor does any other host; a 401 from those is not worded as a request for a token.
pub fn token_allowed(url: &str, hub: &str, hub_from_link: bool) -> bool {
    under(url, HUB) || (!hub_from_link && check_hub_url(hub).is_ok() && under(url, hub))
}

pub fn is_gguf_name(name: &str) -> bool {
    name.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase().ends_with(".gguf")
}

/// How the weights are held in wasm memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StorageChoice {
    /// On the CPU q8_0 (the int8 kernels: the fastest, `AUTO_CPU_STORAGE` says why), else
    /// q4_k when q8_0 does not fit; f16 on WebGPU; GGUF files stay as they are.
    #[default]
    Auto,
    F32,
    Q8_0,
    Q4K,
}

impl StorageChoice {
    pub const ALL: [(Self, &'static str); 4] = [
        (Self::Auto, "auto (CPU: q8_0, 2-2.6x f32's speed, same order on 96-99% of pairs; WebGPU: f16)"),
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
    Responses {
        prompt: String,
        /// Images with the prompt (data URLs or http(s) URLs), for a multimodal endpoint.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
        responses: Vec<String>,
    },
    /// One multi-turn conversation.
    Conversation { messages: Vec<Message> },
    /// A JSONL file in the CLI's formats; answered with the annotated lines.
    Jsonl { text: String },
    /// A benchmark suite's rows as published (each with the split its file names), scored as
    /// `rewardlens eval` scores them; answered with every row's scores.
    Benchmark { suite: rewardlens_eval::Suite, rows: Vec<BenchmarkRow> },
}

impl ScoreJob {
    /// The conversations a `Responses` or `Conversation` job stands for (the prompt's images on
    /// its user turn, as an input line's top-level `images`); none for the others.
    pub fn conversations(&self) -> Vec<Vec<Message>> {
        match self {
            Self::Responses { prompt, images, responses } => responses
                .iter()
                .map(|r| {
                    let mut c = rewardlens_core::types::prompt_response(prompt, r);
                    c[0].images = images.clone();
                    c
                })
                .collect(),
            Self::Conversation { messages } => vec![messages.clone()],
            Self::Jsonl { .. } | Self::Benchmark { .. } => vec![],
        }
    }
}

/// One row of a benchmark file and its split (ProcessBench's subset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkRow {
    pub split: String,
    pub row: serde_json::Map<String, serde_json::Value>,
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
        /// The mirror came from a link, not from the user: the token never goes to it.
        #[serde(default)]
        hub_from_link: bool,
        /// A remote endpoint: used when the model cannot be loaded here (too large, failed),
        /// or always with `remote_only`.
        #[serde(default)]
        remote: Option<RemoteSettings>,
        #[serde(default)]
        remote_only: bool,
        /// Engine workers for the WASM CPU pipeline (`?workers=N`, the page's setting): None
        /// is auto (navigator.hardwareConcurrency capped by memory and layers), 1 the
        /// single-worker engine.
        #[serde(default)]
        workers: Option<usize>,
        /// Test hook (`?crash_stage=K`, browser tests only): pipeline stage K traps on its
        /// first chunk, to check that a crashed worker fails the job and the engine restarts.
        #[serde(default)]
        crash_stage: Option<usize>,
        /// Most tokens per pipeline chunk (`?chunk=N`, tests: a long input in several chunks);
        /// None is `pipeline::DEFAULT_CHUNK_TOKENS`. Shorter sequences are cut finer
        /// (`pipeline::chunk_len`).
        #[serde(default)]
        chunk_tokens: Option<usize>,
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
        /// Sequences a pass (sharing a 3/4 prompt when more than one).
        #[serde(default = "one")]
        batch: usize,
    },
    /// Stops the job `id` at the next sequence boundary.
    Cancel {
        id: u64,
    },
    CacheInfo,
    ClearCache,
    /// Runs the int8 kernels' reference test inside this worker build (`?selftest=1`, the
    /// browser tests): answered by `SelfTest`.
    KernelSelfTest {
        id: u64,
    },
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

/// Reads a page message; an unreadable one is answered with its own `id` (when it has one),
/// so one element's bad request fails only that request, never every job on the page.
pub fn parse_request(text: &str) -> Result<ToWorker, (u64, UserError)> {
    serde_json::from_str::<ToWorker>(text).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v.get("id")?.as_u64()).unwrap_or(0);
        (id, UserError::new("bad_request", format!("the engine cannot read this request: {e}")))
    })
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
    /// Engine workers that score (the WASM CPU pipeline's stages; 1 for one worker).
    #[serde(default)]
    pub workers: usize,
    /// The matrix-multiply kernel the CPU engine runs (`int8 simd128`, ...); empty elsewhere.
    #[serde(default)]
    pub kernel: String,
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
    /// `first_bad_step` in the answer's `record` is the first step below this; None: 0.5, as
    /// the CLI's `--step-threshold`.
    #[serde(default)]
    pub threshold: Option<f32>,
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
        /// The job as `rewardlens score` writes its record (input, scores, ranking, steps with
        /// `first_bad_step`: `worker::shape::record`); the web component's output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// Annotated JSONL text and how many lines were skipped (each with its reason).
    Jsonl {
        text: String,
        scored: usize,
        skipped: Vec<String>,
        /// TRL's figures over the preference lines (`records::PreferenceSummary`, the line
        /// `rewardlens score` prints), when there are any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preferences: Option<String>,
    },
    /// Every row of a `Benchmark` job with its scores, in the job's order.
    Benchmark { rows: Vec<rewardlens_eval::ScoredRow> },
}

fn one() -> usize {
    1
}

/// One benchmark length's median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub tokens: usize,
    /// Sequences a pass.
    #[serde(default = "one")]
    pub batch: usize,
    /// Engine workers that ran it (the pipeline's width; 1 for the single engine and WebGPU).
    #[serde(default = "one")]
    pub workers: usize,
    /// Milliseconds per kind of operation in the last timed pass (`rewardlens_models::profile`;
    /// the single CPU engine only).
    #[serde(default)]
    pub profile: Vec<(String, f64)>,
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
    /// The answer to `KernelSelfTest`: which int8 kernel this worker build runs, whether its
    /// reference test passed, and the test's summary (or what failed).
    SelfTest {
        id: u64,
        kernel: String,
        passed: bool,
        summary: String,
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
    fn hub_ids_and_revisions_stay_inside_their_repo() {
        for bad in ["../..", "a/..", "./b", "a/.b", "a-/b", "a/b--c", "a/b..c", "a/b/c"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(ModelSource::parse("../..", "").is_err());
        check_repo_id("Skywork/Skywork-Reward-V2-Qwen3-0.6B").unwrap();
        for bad in [
            "../../../../x/y/resolve/main",
            "a/../b",
            "refs//pr",
            "/main",
            "main/",
            ".hidden",
            "a?b",
            "a#b",
            "a b",
            "a%2e",
        ] {
            assert!(check_revision(bad).is_err(), "{bad}");
            assert!(ModelSource::parse("a/b", bad).is_err(), "{bad}");
        }
        for good in ["main", "v1.0", "refs/pr/12", "refs/convert/parquet", "0123abcd", "release+1"] {
            check_revision(good).unwrap();
        }
        // A source built by hand (the web component's messages) is checked by the worker too.
        let linked = ModelSource::Hub { repo: "a/b".into(), revision: "../../../../x/y/resolve/main".into() };
        assert!(linked.validate().unwrap_err().contains("not a valid revision"));
    }

    #[test]
    fn tokens_go_only_to_the_hub_or_a_mirror_the_user_typed() {
        let hf = "https://huggingface.co/a/b/resolve/main/config.json";
        assert!(token_allowed(hf, HUB, false));
        // The real Hub keeps its token even when a link names a mirror.
        assert!(token_allowed(hf, "https://evil.example", true));
        let m = "https://mirror.example/hf/a/b/resolve/main/config.json";
        assert!(token_allowed(m, "https://mirror.example/hf", false));
        assert!(!token_allowed(m, "https://mirror.example/hf", true), "a mirror from a link never gets it");
        assert!(!token_allowed("https://huggingface.co.evil.example/a", HUB, false));
        assert!(!token_allowed("https://huggingface.co@evil.example/a", HUB, false));
        assert!(!token_allowed("https://mirror.example/hfx/a", "https://mirror.example/hf", false));
        assert!(!token_allowed("http://x.org/a", "ftp://x.org", false));
        assert_eq!(check_hub_url(" https://m.example/hf/ ").unwrap(), "https://m.example/hf");
        for bad in ["m.example", "https://", "https://u:p@m.example", "https://m.example/?x", "javascript:alert(1)"] {
            assert!(check_hub_url(bad).is_err(), "{bad}");
        }
        assert_eq!(url_host("http://127.0.0.1:8080/hub/a"), "http://127.0.0.1:8080");
        assert_eq!(url_host("https://huggingface.co"), "https://huggingface.co");
    }

    #[test]
    fn an_unreadable_request_is_answered_with_its_own_id() {
        let (id, e) =
            parse_request(r#"{"type":"load","id":7,"source":{"kind":"url","url":"/m"},"storage":"q9"}"#).unwrap_err();
        assert_eq!((id, e.code.as_str()), (7, "bad_request"));
        assert!(e.message.contains("q9"), "{}", e.message);
        assert_eq!(parse_request("not json").unwrap_err().0, 0);
        assert!(matches!(parse_request(r#"{"type":"cancel","id":3}"#), Ok(ToWorker::Cancel { id: 3 })));
    }

    #[test]
    fn messages_round_trip_as_json() {
        let m = ToWorker::Score {
            id: 3,
            job: ScoreJob::Responses {
                prompt: "p".into(),
                images: vec!["data:image/png;base64,AA==".into()],
                responses: vec!["a".into(), "<b>".into()],
            },
            truncate: false,
            steps: Some(StepRequest {
                convention: Some("qwen".into()),
                split: rewardlens_core::StepSplit::Separator("ки".into()),
                tokens: true,
                threshold: Some(0.25),
            }),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""type":"score""#), "{text}");
        assert_eq!(serde_json::from_str::<ToWorker>(&text).unwrap(), m);
    }
}
