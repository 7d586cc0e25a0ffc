//! `rewardlens serve`: loaded reward models behind the HTTP APIs their users already call —
//! vLLM's `/pooling`, `/classify`, `/v1/models` and `/health`; OpenRLHF's `/get_reward`
//! (LightRFT's `queries` too); NIM-style `/v1/chat/completions` answering `name:score,...`;
//! TEI's `/predict` — scored by the same engine as the CLI and the browser, with dynamic
//! batching, a queue bounded in requests and tokens (503 when full), per-request limits on
//! body size, sequences and tokens (413), header/body read timeouts, a connection limit, bearer
//! auth, CORS, JSON-only bodies, a Host check on loopback binds and graceful shutdown; and
//! optionally a Label Studio ML backend (`label_studio`).

mod batcher;
pub mod label_studio;
mod routes;

pub use batcher::BatchPolicy;

use axum::Router;
use batcher::Batcher;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rewardlens_models::{LengthPolicy, RewardModel};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Tokens per sequence when `--max-tokens` is not given (or the model's
/// `max_position_embeddings`, if smaller). Memory and time grow with its square.
pub const DEFAULT_MAX_TOKENS: usize = 8192;

/// A model and the name requests select it by (`model` field; the first is the default).
pub struct NamedModel {
    pub name: String,
    pub model: RewardModel,
}

/// What one request may ask for (beyond it: 413 naming the limit).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Sequences in one request.
    pub max_sequences: usize,
    /// Tokens in one request, all its sequences together.
    pub max_tokens: usize,
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
    pub request: RequestLimits,
    /// A connection must send a request's headers within this (also bounds idle keep-alive).
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this after its headers.
    pub body_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Answer only requests whose Host is a loopback name (`localhost`, `127.0.0.1`, `[::1]`)
    /// or one of `allowed_hosts`: against DNS rebinding. [`serve`] turns it on for loopback binds.
    pub check_host: bool,
    pub allowed_hosts: Vec<String>,
    /// Serve a Label Studio ML backend under `/label-studio` (`--label-studio`).
    pub label_studio: Option<LabelStudioAuth>,
}

/// Who may call the Label Studio routes. Label Studio sends only HTTP basic auth (its ML
/// backend settings): these credentials, or any user name with the API key as password; the
/// other routes' `Authorization: Bearer` key works too. Neither set: open, like the other routes.
#[derive(Debug, Clone, Default)]
pub struct LabelStudioAuth {
    pub basic: Option<(String, String)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            cors_origins: Vec::new(),
            max_body_bytes: 16 << 20,
            batch: BatchPolicy {
                queue: 256,
                queue_tokens: 4 * 65536,
                max_sequences: 64,
                batch_tokens: 16384,
                wait: Duration::from_millis(5),
                forward_batch: 8,
            },
            length: LengthPolicy { max_tokens: Some(DEFAULT_MAX_TOKENS), truncate: false },
            request: RequestLimits { max_sequences: 256, max_tokens: 65536 },
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            check_host: false,
            allowed_hosts: Vec::new(),
            label_studio: None,
        }
    }
}

pub(crate) struct Served {
    pub name: String,
    pub batcher: Batcher,
    /// The server's length policy, limited to what the backend holds in one pass (a GPU's),
    /// so a longer input is refused (or cut) at admission instead of failing in a batch.
    pub length: LengthPolicy,
}

pub(crate) struct AppState {
    pub models: Vec<Served>,
    pub cfg: ServerConfig,
    pub started: u64,
    /// Tokenization runs on blocking threads, this many at once, so long texts never stall
    /// the async workers that serve other connections.
    pub tokenizers: Arc<Semaphore>,
}

/// The HTTP application (routes, auth, CORS, limits) over `models`.
pub fn app(models: Vec<NamedModel>, cfg: ServerConfig) -> Router {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let models = models
        .into_iter()
        .map(|m| {
            let max_tokens = match (cfg.length.max_tokens, m.model.max_sequence_tokens()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let length = LengthPolicy { max_tokens, ..cfg.length };
            Served { name: m.name, batcher: Batcher::start(m.model, cfg.batch), length }
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    routes::router(Arc::new(AppState { models, cfg, started, tokenizers: Arc::new(Semaphore::new(threads)) }))
}

/// Serves until `shutdown` resolves, then finishes the requests in flight. Each connection
/// holds one of `max_connections` slots; one arriving when none is free gets a 503 and is closed.
pub async fn serve(
    listener: TcpListener,
    models: Vec<NamedModel>,
    mut cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if listener.local_addr()?.ip().is_loopback() {
        cfg.check_host = true;
    }
    let slots = cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let header_timeout = cfg.header_timeout;
    let app = app(models, cfg);
    let free = Arc::new(Semaphore::new(slots));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait for connections to close.
                    eprintln!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = free.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back: every connection has finished.
    let _ = free.acquire_many(slots as u32).await;
    Ok(())
}

/// Answers a connection over the limit with a 503 and closes it. The request is read (briefly)
/// first and the write side shut before closing, so the client sees the answer, not a reset.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":{"message":"too many open connections; retry shortly","type":"ServiceUnavailableError","param":null,"code":503}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let io = async {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), io).await;
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
