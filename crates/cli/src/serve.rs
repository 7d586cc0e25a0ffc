//! `rewardlens serve`: the vLLM/OpenRLHF/NIM/TEI-compatible server over local models.

use crate::{source, DeviceArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use rewardlens_models::LengthPolicy;
use rewardlens_server::{BatchPolicy, LabelStudioAuth, NamedModel, RequestLimits, ServerConfig, DEFAULT_MAX_TOKENS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// A checkpoint folder, GGUF file or Hub repo id; repeat to serve several (requests pick
    /// one by its `model` field; the first is the default).
    #[arg(long, required = true)]
    model: Vec<String>,
    /// The names the models are served under (default: as given to --model).
    #[arg(long)]
    served_model_name: Vec<String>,
    /// Hub revision for Hub repo ids.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Tokenizer folder for GGUFs without one (llama.cpp's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Require `Authorization: Bearer KEY` (all routes but /health).
    #[arg(long, env = "REWARDLENS_API_KEY")]
    api_key: Option<String>,
    /// Allow browser calls from this origin (repeatable; `*` for any).
    #[arg(long)]
    cors_origin: Vec<String>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 16)]
    max_body_mib: usize,
    /// Requests waiting per model at most; more are answered 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Sequences scored together (one scheduling round) at most.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Tokens scored together at most (one round; also the padded tokens of one forward pass).
    /// A longer single sequence runs alone.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// How long a request waits for others to batch with, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
    /// Token limit per sequence, at most the model's max_position_embeddings
    /// [default: 8192]. Attention memory and time grow with its square.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Tokens per request at most, all its sequences together (more: 413).
    #[arg(long, default_value_t = 65536)]
    max_request_tokens: usize,
    /// Sequences per request at most (more: 413).
    #[arg(long, default_value_t = 256)]
    max_request_sequences: usize,
    /// Seconds a connection has to send a request's headers (also closes idle keep-alive
    /// connections).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a request's whole body has to arrive (then 408).
    #[arg(long, default_value_t = 30)]
    body_timeout_secs: u64,
    /// Open connections at most; more are answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// A Host name answered besides localhost, 127.0.0.1 and [::1] when bound to loopback
    /// (repeatable; requests for other names are refused against DNS rebinding).
    #[arg(long)]
    allowed_host: Vec<String>,
    /// Cut over-long inputs instead of answering 400.
    #[arg(long)]
    truncate: bool,
    /// Also be a Label Studio ML backend: connect http://HOST:PORT/label-studio (or
    /// /label-studio/<served model name>) in a project's Model settings.
    #[arg(long)]
    label_studio: bool,
    /// USER:PASSWORD Label Studio must send (its ML backend's basic auth); with --api-key, any
    /// user name with the key as password is accepted too.
    #[arg(long, env = "REWARDLENS_LABEL_STUDIO_AUTH", requires = "label_studio")]
    label_studio_auth: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    if !args.served_model_name.is_empty() && args.served_model_name.len() != args.model.len() {
        bail!(
            "give one --served-model-name per --model ({} names for {} models)",
            args.served_model_name.len(),
            args.model.len()
        );
    }
    let mut models = Vec::new();
    for (i, m) in args.model.iter().enumerate() {
        let margs = ModelArgs {
            model: m.clone(),
            revision: args.revision.clone(),
            tokenizer: args.tokenizer.clone(),
            device: args.device.clone(),
        };
        let model = source::load_model(&margs)?;
        let name = args.served_model_name.get(i).cloned().unwrap_or_else(|| m.clone());
        eprintln!("loaded {name} ({}) on {}", model.config().architecture.name(), model.backend());
        models.push(NamedModel { name, model });
    }
    let cfg = ServerConfig {
        api_key: args.api_key.filter(|k| !k.is_empty()),
        cors_origins: args.cors_origin,
        max_body_bytes: args.max_body_mib << 20,
        batch: BatchPolicy {
            queue: args.queue,
            // Room for a few of the largest requests at once.
            queue_tokens: args.max_request_tokens.max(1).saturating_mul(4),
            max_sequences: args.max_batch.max(1),
            batch_tokens: args.max_batch_tokens.max(1),
            wait: Duration::from_millis(args.batch_wait_ms),
            forward_batch: 8,
        },
        length: LengthPolicy {
            max_tokens: Some(args.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            truncate: args.truncate,
        },
        request: RequestLimits {
            max_sequences: args.max_request_sequences.max(1),
            max_tokens: args.max_request_tokens.max(1),
        },
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections: args.max_connections.max(1),
        check_host: false,
        allowed_hosts: args.allowed_host,
        label_studio: match (args.label_studio, args.label_studio_auth) {
            (false, _) => None,
            (true, None) => Some(LabelStudioAuth::default()),
            (true, Some(a)) => match a.split_once(':') {
                Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                    Some(LabelStudioAuth { basic: Some((user.to_owned(), pass.to_owned())) })
                }
                _ => bail!("--label-studio-auth must be USER:PASSWORD"),
            },
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        // Tests and scripts read this line to learn the port (with --port 0).
        println!("listening on http://{}", listener.local_addr()?);
        rewardlens_server::serve(listener, models, cfg, rewardlens_server::shutdown_signal()).await?;
        eprintln!("shut down");
        Ok(ExitCode::SUCCESS)
    })
}
