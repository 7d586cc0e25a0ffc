//! Clients for reward models served elsewhere, speaking the protocols people already run:
//! vLLM pooling models (`/pooling`, `/classify`), NVIDIA NIM reward models
//! (`/v1/chat/completions` answering `attribute:score,...`), OpenRLHF/LightRFT reward servers
//! (`{"query": [...]}` -> `{"rewards": [...]}`) and Hugging Face TEI (`/predict`).
//!
//! One [`RemoteScorer`] per endpoint: timeouts, retries with exponential backoff and jitter for
//! network errors, 429 and 5xx (never for other 4xx), batching, and errors that name the
//! endpoint, the status and the field that was missing. Builds natively and for wasm32.
//! Request and response bodies are the `rewardlens_core::wire` types, the ones
//! `rewardlens serve` reads and answers with.
//!
//! What a server can make the client do is bounded: a response body is read as a stream (in the
//! browser: refused by its Content-Length, else cut after fetch) and
//! abandoned past [`RemoteConfig::max_body_bytes`] (error bodies past [`ERROR_BODY_LIMIT`]); a
//! `Retry-After` (seconds or an HTTP date) replaces the backoff up to
//! [`RemoteConfig::max_retry_after`], and a longer one fails at once; a request that timed out
//! is retried at most [`RemoteConfig::timeout_tries`] times in all, each retry after waiting
//! the timeout again (at most 30 s), since the server is probably still computing the
//! abandoned request and an immediate resend would only double its work.

#[cfg(not(target_arch = "wasm32"))]
pub mod fleet;
pub mod protocol;

use futures_util::future::join_all;
use rewardlens_core::wire::vllm;
use rewardlens_core::Message;
use serde::Serialize;
use std::time::Duration;

pub use protocol::{Protocol, RequestBody};

/// Something to score.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteInput {
    /// A conversation; the server applies the model's chat template.
    Chat(Vec<Message>),
    /// Text already rendered with the model's chat template, and the prompt part of it
    /// (OpenRLHF/LightRFT servers receive both), with the conversation's images in order (data
    /// URLs; LightRFT's servers receive them beside the text).
    Text { text: String, prompt: String, images: Vec<String> },
}

impl RemoteInput {
    /// How `protocol` takes a conversation: as is, or rendered with the model's chat `template`
    /// (with the prompt part, everything before the last assistant turn, rendered as the
    /// model would be prompted).
    pub fn from_conversation(
        conversation: &[Message],
        template: Option<&rewardlens_core::ChatTemplate>,
        protocol: Protocol,
    ) -> Result<Self> {
        match template {
            Some(t) if !protocol.takes_chat() => {
                let render = |msgs: &[Message], gen: bool| {
                    t.render(msgs, gen).map_err(|e| RemoteError::Input(format!("chat template: {e}")))
                };
                let cut = conversation
                    .iter()
                    .rposition(|m| m.role == rewardlens_core::Role::Assistant)
                    .unwrap_or(conversation.len());
                // The prompt is informational (OpenRLHF servers ignore it): a template that
                // cannot render a conversation without its answer leaves it empty.
                let prompt = render(&conversation[..cut], true).unwrap_or_default();
                let images = conversation.iter().flat_map(|m| m.images.iter().cloned()).collect();
                Ok(Self::Text { text: render(conversation, false)?, prompt, images })
            }
            None if !protocol.takes_chat() => Err(RemoteError::Input(format!(
                "the {} protocol takes text rendered with the model's chat template, and none was given",
                protocol.name()
            ))),
            _ => Ok(Self::Chat(conversation.to_vec())),
        }
    }
}

/// The scores of one input: one value per label (`values[0]` is the reward).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteScore {
    pub values: Vec<f32>,
    /// Label names when the server gives them (NIM attributes, vLLM/TEI labels).
    pub labels: Vec<String>,
}

impl RemoteScore {
    pub fn score(&self) -> f32 {
        self.values[0]
    }
}

/// How to reach an endpoint.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URL (`http://host:8000`) or the full URL of the scoring route.
    pub endpoint: String,
    pub protocol: Protocol,
    /// The `model` field, where the protocol has one.
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Tries per request, the first included (LightRFT's `request_api_wrapper` makes 5).
    pub max_tries: u32,
    /// First backoff; doubled per retry, with ±50% jitter, at most 30 s.
    pub backoff: Duration,
    /// Sequences per request (protocols that batch) or requests in flight (those that don't).
    pub batch_size: usize,
    /// The response key holding the rewards (OpenRLHF-style servers).
    pub score_key: String,
    /// Largest successful response body read, in bytes; a larger one is an error
    /// ([`RemoteError::TooLarge`]) without being read further.
    pub max_body_bytes: usize,
    /// Longest `Retry-After` waited for; a server asking for longer fails the request at once
    /// ([`RemoteError::RetryAfter`]).
    pub max_retry_after: Duration,
    /// Tries of a request that keeps timing out, the first included (within `max_tries`).
    pub timeout_tries: u32,
}

/// How much of an error response's body is read (its start is quoted in the error).
pub const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The longest wait after a timeout before the request is sent again.
const MAX_TIMEOUT_WAIT: Duration = Duration::from_secs(30);

impl RemoteConfig {
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            model: None,
            api_key: None,
            timeout: Duration::from_secs(180),
            max_tries: 5,
            backoff: Duration::from_millis(500),
            batch_size: 16,
            score_key: "rewards".into(),
            max_body_bytes: 64 << 20,
            max_retry_after: Duration::from_secs(60),
            timeout_tries: 2,
        }
    }

    /// The URL requests go to: the endpoint as given when it has a path, else the protocol's route.
    pub fn url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        let has_path = e.split("://").nth(1).is_some_and(|rest| rest.contains('/'));
        if has_path {
            e.to_owned()
        } else {
            format!("{e}{}", self.protocol.route())
        }
    }
}

/// Why a remote score failed; every variant names the URL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {message} (after {tries} tries)")]
    Network { url: String, message: String, tries: u32 },
    #[error("{url}: no answer within {secs:.0} s (after {tries} tries)")]
    Timeout { url: String, secs: f64, tries: u32 },
    #[error("{url}: HTTP {status}{}: {body}", if *.tries > 1 { format!(" (after {} tries)", .tries) } else { String::new() })]
    Status { url: String, status: u16, body: String, tries: u32 },
    #[error("{url}: unexpected response: {what}")]
    Malformed { url: String, what: String },
    #[error("{url}: response body larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: HTTP {status}: the server asks to retry after {secs} s, longer than the {limit_secs} s this client waits")]
    RetryAfter { url: String, status: u16, secs: u64, limit_secs: u64 },
    #[error("{0}")]
    Input(String),
}

impl RemoteError {
    /// A stable code for programs (the web app, the web component).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Network { .. } => "network",
            Self::Timeout { .. } => "timeout",
            Self::Status { status: 401 | 403, .. } => "unauthorized",
            Self::Status { .. } => "http",
            Self::Malformed { .. } => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::RetryAfter { .. } => "rate_limited",
            Self::Input(_) => "input",
        }
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// A client for one endpoint.
#[derive(Debug, Clone)]
pub struct RemoteScorer {
    cfg: RemoteConfig,
    http: reqwest::Client,
    url: String,
}

async fn sleep(d: Duration) {
    #[cfg(not(target_arch = "wasm32"))]
    tokio::time::sleep(d).await;
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen_futures::JsFuture;
        // setTimeout exists on both Window and WorkerGlobalScope.
        let p = js_sys::Promise::new(&mut |resolve, _| {
            let global = js_sys::global();
            if let Ok(f) = js_sys::Reflect::get(&global, &"setTimeout".into()) {
                let f: js_sys::Function = f.into();
                let _ = f.call2(&global, &resolve, &(d.as_millis() as f64).into());
            }
        });
        let _ = JsFuture::from(p).await;
    }
}

/// Uniform in [0, 1): jitter spreads retries of many clients apart.
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before retry `n` (1-based).
pub fn backoff_delay(base: Duration, n: u32) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(16) as i32);
    Duration::from_secs_f64((exp * (0.5 + jitter())).min(30.0))
}

impl RemoteScorer {
    pub fn new(cfg: RemoteConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.max_tries == 0 || cfg.timeout_tries == 0 {
            return Err(RemoteError::Input("batch size and tries must be at least 1".into()));
        }
        let builder = reqwest::Client::builder();
        #[cfg(not(target_arch = "wasm32"))]
        let builder = builder.timeout(cfg.timeout);
        let http = builder.build().map_err(|e| RemoteError::Input(format!("HTTP client: {e}")))?;
        let url = cfg.url();
        Ok(Self { cfg, http, url })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.cfg
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` as JSON, retrying transient failures; the answer's body.
    async fn post(&self, body: &impl Serialize) -> Result<Vec<u8>> {
        let (mut tries, mut timeouts) = (0, 0);
        loop {
            tries += 1;
            let last = tries >= self.cfg.max_tries;
            let mut req = self.http.post(&self.url).json(body);
            if let Some(k) = &self.cfg.api_key {
                req = req.bearer_auth(k);
            }
            #[cfg(target_arch = "wasm32")]
            {
                req = req.timeout(self.cfg.timeout);
            }
            // What went wrong, and the wait the server asked for, if any.
            let (outcome, asked) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if (200..=299).contains(&status) {
                        if resp.content_length().is_some_and(|n| n > self.cfg.max_body_bytes as u64) {
                            return Err(self.too_large());
                        }
                        match read_capped(resp, self.cfg.max_body_bytes).await {
                            Ok((_, true)) => return Err(self.too_large()),
                            Ok((bytes, false)) => return Ok(bytes),
                            // Cut off mid-body: as transient as a failed connection.
                            Err(e) => (self.transport_error(&e, tries), None),
                        }
                    } else {
                        let asked = retry_after(resp.headers());
                        let body = read_capped(resp, ERROR_BODY_LIMIT)
                            .await
                            .map(|(b, _)| snippet(&String::from_utf8_lossy(&b)))
                            .unwrap_or_default();
                        let err = RemoteError::Status { url: self.url.clone(), status, body, tries };
                        if !(status == 429 || status >= 500) {
                            return Err(err);
                        }
                        if let Some(wait) = asked.filter(|w| *w > self.cfg.max_retry_after) {
                            return Err(RemoteError::RetryAfter {
                                url: self.url.clone(),
                                status,
                                secs: wait.as_secs(),
                                limit_secs: self.cfg.max_retry_after.as_secs(),
                            });
                        }
                        (err, asked)
                    }
                }
                Err(e) => (self.transport_error(&e, tries), None),
            };
            let timed_out = matches!(outcome, RemoteError::Timeout { .. });
            timeouts += u32::from(timed_out);
            if last || timeouts >= self.cfg.timeout_tries {
                return Err(outcome);
            }
            let backoff = backoff_delay(self.cfg.backoff, tries);
            let wait = match asked {
                Some(w) => w,
                // The server is likely still busy with the abandoned request: give it that long.
                None if timed_out => backoff.max(self.cfg.timeout.min(MAX_TIMEOUT_WAIT)),
                None => backoff,
            };
            sleep(wait).await;
        }
    }

    fn transport_error(&self, e: &reqwest::Error, tries: u32) -> RemoteError {
        if e.is_timeout() {
            RemoteError::Timeout { url: self.url.clone(), secs: self.cfg.timeout.as_secs_f64(), tries }
        } else {
            RemoteError::Network { url: self.url.clone(), message: error_chain(e), tries }
        }
    }

    fn too_large(&self) -> RemoteError {
        RemoteError::TooLarge { url: self.url.clone(), limit: self.cfg.max_body_bytes }
    }

    /// Scores `inputs`, in order.
    pub async fn score(&self, inputs: &[RemoteInput]) -> Result<Vec<RemoteScore>> {
        let p = self.cfg.protocol;
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.cfg.batch_size) {
            if p.batches_text() && chunk.iter().all(|i| matches!(i, RemoteInput::Text { .. })) {
                let body = p.text_request(chunk, &self.cfg)?;
                let resp = self.post(&body).await?;
                let scores = p.parse(&resp, chunk.len(), &self.cfg).map_err(|what| self.malformed(what))?;
                out.extend(scores);
            } else {
                // One request per input, `batch_size` in flight.
                let futs = chunk.iter().map(|input| async move {
                    let body = p.single_request(input, &self.cfg)?;
                    let resp = self.post(&body).await?;
                    let mut s = p.parse(&resp, 1, &self.cfg).map_err(|what| self.malformed(what))?;
                    Ok::<_, RemoteError>(s.remove(0))
                });
                for r in join_all(futs).await {
                    out.push(r?);
                }
            }
        }
        Ok(out)
    }

    /// Per-token head values for token-id inputs, through vLLM's `/pooling` with
    /// `task: token_classify` (what step rewards of a PRM served by vLLM read).
    pub async fn token_rows(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>> {
        if self.cfg.protocol != Protocol::VllmPooling {
            return Err(RemoteError::Input(format!(
                "per-token values need vLLM's /pooling (protocol vllm), not {}",
                self.cfg.protocol.name()
            )));
        }
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.cfg.batch_size.max(1)) {
            let body = vllm::PoolingRequest {
                model: self.cfg.model.clone(),
                input: Some(vllm::PoolingInput::Batch(
                    chunk.iter().map(|ids| vllm::PoolingInputItem::Tokens(ids.clone())).collect(),
                )),
                task: Some(vllm::PoolingTask::TokenClassify),
                use_activation: Some(false),
                ..Default::default()
            };
            let resp = self.post(&body).await?;
            let rows = protocol::token_rows(&resp, chunk.len()).map_err(|what| self.malformed(what))?;
            for (ids, r) in chunk.iter().zip(&rows) {
                if r.len() != ids.len() {
                    return Err(self.malformed(format!("{} token rows for {} tokens", r.len(), ids.len())));
                }
            }
            out.extend(rows);
        }
        Ok(out)
    }

    fn malformed(&self, what: String) -> RemoteError {
        RemoteError::Malformed { url: self.url.clone(), what }
    }
}

/// At most `limit` bytes of the body, read as it arrives; `true` when there was more (the rest
/// is not read: dropping the response closes the connection).
async fn read_capped(resp: reqwest::Response, limit: usize) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit as u64).min(1 << 20) as usize);
    let take = |chunk: &[u8], buf: &mut Vec<u8>| {
        let room = limit - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        chunk.len() > room
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await? {
            if take(&chunk, &mut buf) {
                return Ok((buf, true));
            }
        }
    }
    // In the browser reqwest streams a body only through its `stream` feature, whose
    // wasm-streams 0.4 clashes with Leptos' 0.5 (both export the same JS class). A declared
    // Content-Length over the cap is refused before this; a body without one is buffered by
    // fetch (outside wasm memory, bounded by the request timeout) and cut here.
    #[cfg(target_arch = "wasm32")]
    {
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Ok((buf, true));
        }
        if take(&resp.bytes().await?, &mut buf) {
            return Ok((buf, true));
        }
    }
    Ok((buf, false))
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (RFC 9110 10.2.3).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    // A date in the past means now.
    Some(when.duration_since(now()).unwrap_or(Duration::ZERO))
}

fn now() -> std::time::SystemTime {
    #[cfg(not(target_arch = "wasm32"))]
    return std::time::SystemTime::now();
    // std has no clock on wasm32-unknown-unknown.
    #[cfg(target_arch = "wasm32")]
    return std::time::UNIX_EPOCH + Duration::from_secs_f64(js_sys::Date::now() / 1000.0);
}

fn snippet(t: &str) -> String {
    let t = t.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_owned()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_protocol_route_unless_given_one() {
        let c = RemoteConfig::new("http://h:8000/", Protocol::VllmPooling);
        assert_eq!(c.url(), "http://h:8000/pooling");
        let c = RemoteConfig::new("http://h:5000/get_reward", Protocol::OpenRlhf);
        assert_eq!(c.url(), "http://h:5000/get_reward");
        let c = RemoteConfig::new("https://integrate.api.nvidia.com/v1/chat/completions", Protocol::Nim);
        assert_eq!(c.url(), "https://integrate.api.nvidia.com/v1/chat/completions");
        assert_eq!(RemoteConfig::new("http://h", Protocol::Tei).url(), "http://h/predict");
    }

    #[test]
    fn conversations_become_chat_or_rendered_text() {
        let t = rewardlens_core::ChatTemplate::from_tokenizer_config(
            r#"{"chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"}"#,
            None,
        )
        .unwrap();
        let conv = rewardlens_core::types::prompt_response("p", "r");
        assert_eq!(
            RemoteInput::from_conversation(&conv, Some(&t), Protocol::Nim).unwrap(),
            RemoteInput::Chat(conv.clone())
        );
        assert_eq!(
            RemoteInput::from_conversation(&conv, Some(&t), Protocol::OpenRlhf).unwrap(),
            RemoteInput::Text {
                text: "<user>p<assistant>r".into(),
                prompt: "<user>p<assistant>".into(),
                images: vec![]
            }
        );
        assert!(RemoteInput::from_conversation(&conv, None, Protocol::Tei)
            .unwrap_err()
            .to_string()
            .contains("chat template"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        for n in 1..6 {
            let d = backoff_delay(base, n).as_secs_f64();
            let nominal = 0.1 * 2f64.powi(n as i32 - 1);
            assert!(d >= nominal * 0.5 && d <= nominal * 1.5, "retry {n}: {d}");
        }
        assert!(backoff_delay(Duration::from_secs(10), 20) <= Duration::from_secs(30));
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            retry_after(&m)
        };
        assert_eq!(h("7"), Some(Duration::from_secs(7)));
        assert_eq!(h("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "a past date: now");
        let ahead = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let d = h(&ahead).unwrap();
        assert!(d > Duration::from_secs(3590) && d <= Duration::from_secs(3600), "{d:?}");
        assert_eq!(h("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
