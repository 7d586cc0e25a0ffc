//! What scores the CLI's JSONL: the local engine, or a remote endpoint through
//! `rewardlens-remote` (same input forms, same output fields).

use crate::{source, DeviceArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use rewardlens_core::{ChatTemplate, Message};
use rewardlens_models::{files, EncodedInput};
use rewardlens_models::{CheckpointText, ConversationScore, InputEncoder, LengthPolicy, ModelConfig, RewardModel};
use rewardlens_remote::fleet::{BreakerPolicy, Fleet, MemberReport};
use rewardlens_remote::{Protocol, RemoteConfig, RemoteError, RemoteInput, RemoteScore, RemoteScorer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where scores come from, as given on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// A checkpoint folder, GGUF file or Hub repo id; with --endpoint, the served model's name.
    #[arg(long)]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// For a GGUF without an embedded tokenizer (llama.cpp's): the tokenizer folder.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Score through a remote endpoint instead (base URL, or the full URL of the route);
    /// repeat it to spread the work over several servers of the same model.
    #[arg(long)]
    pub endpoint: Vec<String>,
    /// A file of endpoints, one per line: `URL [protocol [model]]` (protocol and model default
    /// to --protocol and --model; `#` starts a comment).
    #[arg(long)]
    pub endpoints: Option<PathBuf>,
    /// Requests in flight per endpoint (several endpoints); by default a short probe of each
    /// endpoint before the run picks it (2 to 16).
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Go on when the endpoints score the canary line differently (by default a run over
    /// several endpoints refuses: a different model, revision or dtype behind one URL).
    #[arg(long)]
    pub allow_mismatch: bool,
    /// The endpoint's protocol: vllm (/pooling), vllm-classify, nim, openrlhf, tei.
    #[arg(long, default_value = "vllm", value_parser = |s: &str| Protocol::parse_name(s))]
    pub protocol: Protocol,
    /// Bearer token for the endpoint.
    #[arg(long, env = "REWARDLENS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// For protocols that take rendered text (openrlhf, tei): the checkpoint folder or Hub repo
    /// whose chat template renders the conversations.
    #[arg(long)]
    pub template: Option<String>,
    /// Seconds before a remote request is abandoned (and retried).
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Tries per remote request (network errors, 429 and 5xx are retried).
    #[arg(long, default_value_t = 5)]
    pub tries: u32,
    /// The response key holding rewards (openrlhf).
    #[arg(long, default_value = "rewards")]
    pub score_key: String,
}

/// How sequences are batched and bounded: shared by `score` and `eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct PassArgs {
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Token limit per sequence (default and ceiling: the model's max_position_embeddings).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Cut over-long sequences to the limit (reported as `truncated_tokens`; `eval` counts the
    /// rows cut) instead of failing them.
    #[arg(long)]
    pub truncate: bool,
}

impl PassArgs {
    pub fn policy(&self) -> LengthPolicy {
        LengthPolicy { max_tokens: self.max_tokens, truncate: self.truncate }
    }

    /// Records the options that change scores in `scored_with`.
    pub fn record(&self, o: &mut serde_json::Map<String, serde_json::Value>) {
        o.insert("max_tokens".into(), self.max_tokens.into());
        o.insert("truncate".into(), self.truncate.into());
    }
}

/// One sequence, ready for its backend.
#[derive(Clone)]
pub enum Prepared {
    Local(EncodedInput),
    Remote(RemoteInput),
}

// One per process: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Local(RewardModel),
    Remote {
        /// The endpoints (one or more), routed by least outstanding tokens.
        fleet: Arc<Fleet>,
        template: Option<ChatTemplate>,
        /// From `--template`: the served model's config and tokenizer, for step rewards.
        checkpoint: Option<(ModelConfig, InputEncoder)>,
        runtime: tokio::runtime::Runtime,
    },
}

/// Whether `e` says the endpoint is unreachable, refusing us or overloaded (after the client's
/// retries), rather than that one input is bad: then no line can be scored, and the run stops
/// where `--resume` can continue it instead of marking every later line as failed.
pub fn endpoint_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<EndpointsDown>().is_some())
        || e.chain().any(|c| {
            matches!(
                c.downcast_ref::<RemoteError>(),
                Some(
                    RemoteError::Network { .. }
                        | RemoteError::Timeout { .. }
                        | RemoteError::RetryAfter { .. }
                        | RemoteError::Status { status: 401 | 403 | 408 | 429 | 502 | 503 | 504, .. }
                )
            )
        })
}

/// Every endpoint of the run is out (each failed after its retries, its probes too).
#[derive(Debug)]
pub struct EndpointsDown(pub Vec<MemberReport>);

impl std::fmt::Display for EndpointsDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "every endpoint failed: ")?;
        for (i, m) in self.0.iter().enumerate() {
            let sep = if i > 0 { "; " } else { "" };
            write!(f, "{sep}{}: {}", m.name, m.last_error.as_deref().unwrap_or("no answer"))?;
        }
        Ok(())
    }
}

impl std::error::Error for EndpointsDown {}

/// Whether `e` is the endpoint's fault (down, overloaded, refusing us, answering nonsense)
/// rather than the input's: then the work goes to another endpoint.
fn endpoint_fault(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::Network { .. }
            | RemoteError::Timeout { .. }
            | RemoteError::RetryAfter { .. }
            | RemoteError::Malformed { .. }
            | RemoteError::Status { status: 401 | 403 | 404 | 408 | 429 | 500..=599, .. }
    )
}

/// One endpoint as given: URL, protocol, served model name.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub url: String,
    pub protocol: Protocol,
    pub model: Option<String>,
}

impl BackendArgs {
    /// The endpoints of `--endpoint` (each with --protocol and --model) and `--endpoints FILE`.
    pub fn endpoint_specs(&self) -> Result<Vec<EndpointSpec>> {
        let mut out: Vec<EndpointSpec> = self
            .endpoint
            .iter()
            .map(|url| EndpointSpec { url: url.clone(), protocol: self.protocol, model: self.model.clone() })
            .collect();
        if let Some(path) = &self.endpoints {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading --endpoints {}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let url = parts.next().expect("a non-empty line has a word").to_owned();
                let protocol = match parts.next() {
                    Some(p) => Protocol::parse_name(p)
                        .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))?,
                    None => self.protocol,
                };
                let model = parts.next().map(str::to_owned).or_else(|| self.model.clone());
                if parts.next().is_some() {
                    bail!("{} line {}: expected `URL [protocol [model]]`", path.display(), i + 1);
                }
                out.push(EndpointSpec { url, protocol, model });
            }
            if out.is_empty() {
                bail!("--endpoints {} names no endpoint", path.display());
            }
        }
        Ok(out)
    }

    /// Whether scores come from endpoints rather than a model here.
    pub fn remote(&self) -> bool {
        !self.endpoint.is_empty() || self.endpoints.is_some()
    }
}

impl Backend {
    /// The backend, and the Hub commit of the model (or of `--template`) when one was downloaded.
    pub fn open(args: &BackendArgs) -> Result<(Self, Option<String>)> {
        if !args.remote() {
            let model = args.model.clone().context("give --model (a folder, GGUF or Hub repo id) or --endpoint")?;
            let m = ModelArgs {
                model,
                revision: args.revision.clone(),
                tokenizer: args.tokenizer.clone(),
                device: args.device.clone(),
            };
            let (model, commit) = source::load_model_and_commit(&m)?;
            return Ok((Self::Local(model), commit));
        }
        let specs = args.endpoint_specs()?;
        let (mut checkpoint, mut commit) = (None, None);
        let template = match &args.template {
            Some(t) => {
                let m = ModelArgs {
                    model: t.clone(),
                    revision: args.revision.clone(),
                    tokenizer: None,
                    device: DeviceArgs::default(),
                };
                let dir = source::resolve_text_dir(&m)?;
                commit = source::hub_commit(&m, &dir);
                let read = |name: &str| std::fs::read(dir.join(name)).ok();
                let tokenizer_config = read(files::TOKENIZER_CONFIG)
                    .with_context(|| format!("--template {t}: no {}", files::TOKENIZER_CONFIG))?;
                let tokenizer_config = String::from_utf8(tokenizer_config)
                    .with_context(|| format!("--template {t}: {} is not UTF-8", files::TOKENIZER_CONFIG))?;
                let jinja = read(files::CHAT_TEMPLATE).map(|b| String::from_utf8_lossy(&b).into_owned());
                // Step rewards also need the served model's config and tokenizer.
                if let (Some(config), Some(tokenizer)) = (read(files::CONFIG), read(files::TOKENIZER)) {
                    let config = String::from_utf8_lossy(&config);
                    let text = CheckpointText {
                        config_json: &config,
                        tokenizer_json: &tokenizer,
                        tokenizer_config_json: &tokenizer_config,
                        chat_template_jinja: jinja.as_deref(),
                    };
                    checkpoint = InputEncoder::from_checkpoint(&text).ok();
                }
                Some(ChatTemplate::from_tokenizer_config(&tokenizer_config, jinja.as_deref())?)
            }
            None => None,
        };
        let mut members = Vec::with_capacity(specs.len());
        for spec in &specs {
            if template.is_none() && !spec.protocol.takes_chat() {
                bail!(
                    "the {} protocol takes text rendered with the model's chat template: give --template <folder or Hub repo>",
                    spec.protocol.name()
                );
            }
            let mut cfg = RemoteConfig::new(spec.url.clone(), spec.protocol);
            cfg.model = spec.model.clone();
            cfg.api_key = args.api_key.clone().filter(|k| !k.is_empty());
            cfg.timeout = Duration::from_secs(args.timeout.max(1));
            cfg.max_tries = args.tries.max(1);
            cfg.score_key = args.score_key.clone();
            members.push((crate::jsonl::without_userinfo(&spec.url), RemoteScorer::new(cfg)?));
        }
        let fleet = Fleet::new(members, args.in_flight.unwrap_or(FALLBACK_IN_FLIGHT), BreakerPolicy::default());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok((Self::Remote { fleet, template, checkpoint, runtime }, commit))
    }

    pub fn prepare(&self, conv: &[Message], policy: &LengthPolicy) -> Result<Prepared> {
        match self {
            Self::Local(m) => Ok(Prepared::Local(m.encode(conv, policy)?)),
            Self::Remote { fleet, template, .. } => {
                // Rendered text when an endpoint needs it (vLLM takes text as well as chat).
                let protocol = fleet.members().map(|(_, s)| s.config().protocol).find(|p| !p.takes_chat());
                let protocol =
                    protocol.unwrap_or_else(|| fleet.members().next().expect("one endpoint").1.config().protocol);
                Ok(Prepared::Remote(RemoteInput::from_conversation(conv, template.as_ref(), protocol)?))
            }
        }
    }

    /// Scores prepared sequences, in order; the label names of the answer.
    pub fn score(&self, items: Vec<Prepared>, batch_size: usize) -> Result<(Vec<ConversationScore>, Vec<String>)> {
        let scored = match self.launch(items, batch_size) {
            Launched::Ready(r) => r?,
            Launched::Running(handle) => self.wait(handle)?,
        };
        Ok((scored.scores, scored.labels))
    }

    /// Starts scoring `items`: at once here, or as a task over the endpoints (several may be
    /// running; `wait` for each in the order wanted).
    pub fn launch(&self, items: Vec<Prepared>, batch_size: usize) -> Launched {
        match self {
            Self::Local(m) => {
                let inputs: Vec<EncodedInput> = items
                    .into_iter()
                    .map(|p| match p {
                        Prepared::Local(e) => e,
                        Prepared::Remote(_) => unreachable!("prepared by this backend"),
                    })
                    .collect();
                Launched::Ready(
                    m.score_encoded(&inputs, batch_size)
                        .map(|scores| Scored { scores, labels: m.labels().to_vec(), scored_by: None })
                        .map_err(Into::into),
                )
            }
            Self::Remote { fleet, runtime, .. } => {
                let inputs: Vec<RemoteInput> = items
                    .into_iter()
                    .map(|p| match p {
                        Prepared::Remote(r) => r,
                        Prepared::Local(_) => unreachable!("prepared by this backend"),
                    })
                    .collect();
                Launched::Running(runtime.spawn(score_on_fleet(fleet.clone(), inputs)))
            }
        }
    }

    /// The result of a running launch.
    pub fn wait(&self, handle: tokio::task::JoinHandle<Result<Scored>>) -> Result<Scored> {
        match self {
            Self::Remote { runtime, .. } => runtime.block_on(handle).context("a scoring task failed")?,
            Self::Local(_) => unreachable!("local scoring does not run as a task"),
        }
    }

    /// Requests a run may have out at once (1 here).
    pub fn capacity(&self) -> usize {
        match self {
            Self::Local(_) => 1,
            Self::Remote { fleet, .. } => fleet.capacity(),
        }
    }

    /// Scores `input` on every endpoint and refuses (or, with `allow`, warns) when they
    /// disagree by more than 1e-3 (relative above 1): a different model, revision or dtype
    /// behind one URL. Nothing to compare with one endpoint.
    pub fn canary(&self, input: &Prepared, allow: bool) -> Result<()> {
        let Self::Remote { fleet, runtime, .. } = self else { return Ok(()) };
        let Prepared::Remote(input) = input else { unreachable!("prepared by this backend") };
        if fleet.members().count() < 2 {
            return Ok(());
        }
        let mut scores: Vec<(String, f32)> = Vec::new();
        for (name, client) in fleet.members() {
            match runtime.block_on(client.score(std::slice::from_ref(input))) {
                Ok(s) => scores.push((name.to_owned(), s[0].score())),
                // A dead endpoint is the breaker's business, not a mismatch.
                Err(e) => eprintln!("canary: {name} did not answer ({e}); it is checked again when it scores"),
            }
        }
        let Some((first, reference)) = scores.first().cloned() else { return Ok(()) };
        let off: Vec<String> = scores
            .iter()
            .filter(|(_, v)| (v - reference).abs() > 1e-3 * reference.abs().max(1.0) || v.is_nan())
            .map(|(n, v)| format!("{n} gives {v}"))
            .collect();
        if off.is_empty() {
            return Ok(());
        }
        let msg = format!(
            "the endpoints disagree on the first line: {first} gives {reference}, {}: a different model, revision or \
             dtype behind one URL?",
            off.join(", ")
        );
        if allow {
            eprintln!("warning: {msg} (going on: --allow-mismatch)");
            Ok(())
        } else {
            bail!("{msg} Fix the endpoints, or pass --allow-mismatch to score anyway")
        }
    }

    /// Probes how many requests each endpoint serves at once (several endpoints, no
    /// `--in-flight`), with `input` (the canary line), and says what it found.
    pub fn probe_in_flight(&self, input: &Prepared) {
        let Self::Remote { fleet, runtime, .. } = self else { return };
        let Prepared::Remote(input) = input else { unreachable!("prepared by this backend") };
        if fleet.members().count() < 2 {
            return;
        }
        for (i, (name, _)) in fleet.members().enumerate() {
            let probe = runtime.block_on(fleet.probe_in_flight(i, input, MAX_PROBED_IN_FLIGHT, FALLBACK_IN_FLIGHT));
            fleet.set_in_flight(i, probe.in_flight);
            let rates: Vec<String> = probe.rates.iter().map(|(n, r)| format!("{n}: {r:.1}/s")).collect();
            match &probe.failed {
                None => eprintln!("{name}: {} requests in flight (probe: {})", probe.in_flight, rates.join(", ")),
                Some(e) => eprintln!("{name}: {} requests in flight (the probe failed: {e})", probe.in_flight),
            }
        }
    }

    /// What each endpoint did, for the closing report (None for a model here).
    pub fn endpoint_report(&self) -> Option<Vec<MemberReport>> {
        match self {
            Self::Remote { fleet, .. } => Some(fleet.report()),
            Self::Local(_) => None,
        }
    }
}

/// Scores, their label names and which endpoint scored them.
pub struct Scored {
    pub scores: Vec<ConversationScore>,
    pub labels: Vec<String>,
    /// The endpoint's URL (without credentials), for `scored_by`.
    pub scored_by: Option<String>,
}

/// Scoring started by `Backend::launch`.
pub enum Launched {
    Ready(Result<Scored>),
    Running(tokio::task::JoinHandle<Result<Scored>>),
}

/// Scores `inputs` on one endpoint of the fleet (the least loaded); when the endpoint fails
/// (after its retries) the same inputs go to another, so a request is sent at least once and
/// its answer used once. With one endpoint its error is the run's, as before fleets.
async fn score_on_fleet(fleet: Arc<Fleet>, inputs: Vec<RemoteInput>) -> Result<Scored> {
    let tokens: usize = inputs.iter().map(estimated_tokens).sum();
    let single = fleet.members().count() == 1;
    loop {
        let Some(lease) = fleet.acquire(tokens).await else {
            return Err(EndpointsDown(fleet.report()).into());
        };
        match lease.scorer().score(&inputs).await {
            Ok(scores) => {
                let name = lease.name().to_owned();
                lease.done(scores.len());
                return Ok(Scored {
                    labels: labels_of(&scores),
                    scores: conversation_scores(scores),
                    scored_by: Some(name),
                });
            }
            Err(e) if endpoint_fault(&e) && !single => lease.failed(&e),
            Err(e) => {
                // The input's fault: the endpoint stays in rotation.
                lease.done(0);
                return Err(e.into());
            }
        }
    }
}

/// About how many tokens an input is (4 bytes of text a token, `IMAGE_TOKENS` an image):
/// what routing balances.
fn estimated_tokens(input: &RemoteInput) -> usize {
    let (bytes, images) = match input {
        RemoteInput::Text { text, images, .. } => (text.len(), images.len()),
        RemoteInput::Chat(messages) => {
            (messages.iter().map(|m| m.content.len()).sum(), rewardlens_core::types::image_count(messages))
        }
    };
    bytes / 4 + 1 + images * IMAGE_TOKENS
}

/// Requests in flight per endpoint when the probe fails.
const FALLBACK_IN_FLIGHT: usize = 4;
/// The most requests in flight the probe tries.
const MAX_PROBED_IN_FLIGHT: usize = 16;

/// Tokens an image stands for in routing: the order of a Qwen2-VL image at its default
/// resolution (the real count depends on the server's processor and the image's size).
const IMAGE_TOKENS: usize = 1024;

fn labels_of(scores: &[RemoteScore]) -> Vec<String> {
    scores
        .iter()
        .find(|s| !s.labels.is_empty())
        .map(|s| s.labels.clone())
        .unwrap_or_else(|| (0..scores.first().map_or(1, |s| s.values.len())).map(|i| format!("LABEL_{i}")).collect())
}

fn conversation_scores(scores: Vec<RemoteScore>) -> Vec<ConversationScore> {
    scores
        .into_iter()
        .map(|s| ConversationScore { logits: s.values, token_logits: None, tokens: 0, truncated_tokens: 0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server asking to wait longer than the client will is as unavailable as one that is
    /// down: the run stops (resumable) instead of writing every later line as failed.
    #[test]
    fn a_long_retry_after_stops_the_run() {
        let asked = RemoteError::RetryAfter { url: "http://rm".into(), status: 429, secs: 3600, limit_secs: 60 };
        assert!(endpoint_unavailable(&anyhow::Error::new(asked).context("scoring lines 1-8")));
        let bad_input = RemoteError::Status { url: "http://rm".into(), status: 400, body: String::new(), tries: 1 };
        assert!(!endpoint_unavailable(&anyhow::Error::new(bad_input)));
    }
}
