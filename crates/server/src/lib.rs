//! `rewardlens serve`: loaded reward models behind the HTTP APIs their users already call —
//! vLLM's `/pooling`, `/classify`, `/v1/models` and `/health`; OpenRLHF's `/get_reward`
//! (LightRFT's `queries` too); NIM-style `/v1/chat/completions` answering `name:score,...`;
//! TEI's `/predict` — scored by the same engine as the CLI and the browser, with dynamic
//! batching, a bounded queue (503 when full), a request size limit, bearer auth, CORS and
//! graceful shutdown.

mod batcher;
mod routes;

pub use batcher::BatchPolicy;

use axum::Router;
use batcher::Batcher;
use rewardlens_models::{LengthPolicy, RewardModel};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A model and the name requests select it by (`model` field; the first is the default).
pub struct NamedModel {
    pub name: String,
    pub model: RewardModel,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required as `Authorization: Bearer …` on every route but `/health`.
    pub api_key: Option<String>,
    /// Origins allowed to call from a browser (`*` for any); none: no CORS headers.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub batch: BatchPolicy,
    pub length: LengthPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            cors_origins: Vec::new(),
            max_body_bytes: 16 << 20,
            batch: BatchPolicy { queue: 256, max_sequences: 64, wait: Duration::from_millis(5), forward_batch: 8 },
            length: LengthPolicy::default(),
        }
    }
}

pub(crate) struct Served {
    pub name: String,
    pub batcher: Batcher,
}

pub(crate) struct AppState {
    pub models: Vec<Served>,
    pub cfg: ServerConfig,
    pub started: u64,
}

/// The HTTP application (routes, auth, CORS, limits) over `models`.
pub fn app(models: Vec<NamedModel>, cfg: ServerConfig) -> Router {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let models =
        models.into_iter().map(|m| Served { name: m.name, batcher: Batcher::start(m.model, cfg.batch) }).collect();
    routes::router(Arc::new(AppState { models, cfg, started }))
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    models: Vec<NamedModel>,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(models, cfg)).with_graceful_shutdown(shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
