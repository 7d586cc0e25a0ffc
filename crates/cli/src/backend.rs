//! What scores the CLI's JSONL: the local engine, or a remote endpoint through
//! `rewardlens-remote` (same input forms, same output fields).

use crate::{source, DeviceArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use rewardlens_core::{ChatTemplate, Message};
use rewardlens_models::EncodedInput;
use rewardlens_models::{CheckpointText, ConversationScore, InputEncoder, LengthPolicy, ModelConfig, RewardModel};
use rewardlens_remote::{Protocol, RemoteConfig, RemoteError, RemoteInput, RemoteScorer};
use std::path::PathBuf;
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
    /// Score through a remote endpoint instead (base URL, or the full URL of the route).
    #[arg(long)]
    pub endpoint: Option<String>,
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
        client: RemoteScorer,
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
    e.chain().any(|c| {
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

impl Backend {
    /// The backend, and the Hub commit of the model (or of `--template`) when one was downloaded.
    pub fn open(args: &BackendArgs) -> Result<(Self, Option<String>)> {
        match &args.endpoint {
            None => {
                let model = args.model.clone().context("give --model (a folder, GGUF or Hub repo id) or --endpoint")?;
                let m = ModelArgs {
                    model,
                    revision: args.revision.clone(),
                    tokenizer: args.tokenizer.clone(),
                    device: args.device.clone(),
                };
                let (model, commit) = source::load_model_and_commit(&m)?;
                Ok((Self::Local(model), commit))
            }
            Some(endpoint) => {
                let mut cfg = RemoteConfig::new(endpoint.clone(), args.protocol);
                cfg.model = args.model.clone();
                cfg.api_key = args.api_key.clone().filter(|k| !k.is_empty());
                cfg.timeout = Duration::from_secs(args.timeout.max(1));
                cfg.max_tries = args.tries.max(1);
                cfg.score_key = args.score_key.clone();
                let (mut checkpoint, mut commit) = (None, None);
                let template = match &args.template {
                    Some(t) => {
                        let m = ModelArgs {
                            model: t.clone(),
                            revision: args.revision.clone(),
                            tokenizer: None,
                            device: DeviceArgs::default(),
                        };
                        let dir = source::resolve_dir(&m)?;
                        commit = source::hub_commit(&m, &dir);
                        let ck = rewardlens_models::CheckpointFiles::from_dir(&dir)?;
                        let text = CheckpointText {
                            config_json: &ck.config_json,
                            tokenizer_json: &ck.tokenizer_json,
                            tokenizer_config_json: &ck.tokenizer_config_json,
                            chat_template_jinja: ck.chat_template_jinja.as_deref(),
                        };
                        checkpoint = InputEncoder::from_checkpoint(&text).ok();
                        Some(ChatTemplate::from_tokenizer_config(&ck.tokenizer_config_json, ck.chat_template_jinja.as_deref())?)
                    }
                    None if !args.protocol.takes_chat() => bail!(
                        "the {} protocol takes text rendered with the model's chat template: give --template <folder or Hub repo>",
                        args.protocol.name()
                    ),
                    None => None,
                };
                let client = RemoteScorer::new(cfg)?;
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                Ok((Self::Remote { client, template, checkpoint, runtime }, commit))
            }
        }
    }

    pub fn prepare(&self, conv: &[Message], policy: &LengthPolicy) -> Result<Prepared> {
        match self {
            Self::Local(m) => Ok(Prepared::Local(m.encode(conv, policy)?)),
            Self::Remote { client, template, .. } => {
                Ok(Prepared::Remote(RemoteInput::from_conversation(conv, template.as_ref(), client.config().protocol)?))
            }
        }
    }

    /// Scores prepared sequences, in order; the label names of the answer.
    pub fn score(&self, items: Vec<Prepared>, batch_size: usize) -> Result<(Vec<ConversationScore>, Vec<String>)> {
        match self {
            Self::Local(m) => {
                let inputs: Vec<EncodedInput> = items
                    .into_iter()
                    .map(|p| match p {
                        Prepared::Local(e) => e,
                        Prepared::Remote(_) => unreachable!("prepared by this backend"),
                    })
                    .collect();
                Ok((m.score_encoded(&inputs, batch_size)?, m.labels().to_vec()))
            }
            Self::Remote { client, runtime, .. } => {
                let inputs: Vec<RemoteInput> = items
                    .into_iter()
                    .map(|p| match p {
                        Prepared::Remote(r) => r,
                        Prepared::Local(_) => unreachable!("prepared by this backend"),
                    })
                    .collect();
                let scores = runtime.block_on(client.score(&inputs))?;
                let labels =
                    scores.iter().find(|s| !s.labels.is_empty()).map(|s| s.labels.clone()).unwrap_or_else(|| {
                        (0..scores.first().map_or(1, |s| s.values.len())).map(|i| format!("LABEL_{i}")).collect()
                    });
                let out = scores
                    .into_iter()
                    .map(|s| ConversationScore { logits: s.values, token_logits: None, tokens: 0, truncated_tokens: 0 })
                    .collect();
                Ok((out, labels))
            }
        }
    }
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
