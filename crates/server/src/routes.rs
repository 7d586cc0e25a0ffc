//! The routes. Request and response shapes follow vLLM's pooling protocol
//! (`vllm/entrypoints/pooling/*/protocol.py`), OpenRLHF's `serve_rm.py`, NVIDIA's reward NIM
//! docs and TEI's router; errors use each API's own error body.

use crate::batcher::Refused;
use crate::{AppState, Served};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rewardlens_core::{Message, Role};
use rewardlens_models::records::num;
use rewardlens_models::reward_model::EncodedInput;
use rewardlens_models::{ConversationScore, HeadKind, ModelError};
use serde_json::{json, Value};
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

type St = State<Arc<AppState>>;

/// An error in vLLM/OpenAI form (`{"error": {message, type, param, code}}`) or TEI form.
pub struct ApiError {
    status: StatusCode,
    message: String,
    tei: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), tei: false }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn tei(mut self) -> Self {
        self.tei = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.tei {
            let kind = match self.status.as_u16() {
                503 => "Unhealthy",
                429 => "Overloaded",
                _ => "Validation",
            };
            json!({"error": self.message, "error_type": kind})
        } else {
            let kind = match self.status.as_u16() {
                400 | 408 | 413 | 415 | 422 => "BadRequestError",
                403 | 421 => "PermissionDeniedError",
                401 => "AuthenticationError",
                404 => "NotFoundError",
                503 => "ServiceUnavailableError",
                _ => "InternalServerError",
            };
            json!({"error": {"message": self.message, "type": kind, "param": null, "code": self.status.as_u16()}})
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn model_error(e: ModelError) -> ApiError {
    match e {
        ModelError::InputTooLong { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{e}; the server's limit is --max-tokens, or what one pass of its backend holds"),
        ),
        ModelError::EmptyInput | ModelError::TokenOutOfVocab { .. } | ModelError::Core(_) => {
            ApiError::bad(e.to_string())
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    let cors = (!state.cfg.cors_origins.is_empty()).then(|| {
        let origins = &state.cfg.cors_origins;
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    });
    let mut r = Router::new()
        .route("/v1/models", get(models))
        .route("/pooling", post(pooling))
        .route("/classify", post(classify))
        .route("/get_reward", post(get_reward))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/predict", post(predict))
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/health", get(|| async { StatusCode::OK }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone());
    if let Some(c) = cors {
        r = r.layer(c);
    }
    r.layer(middleware::from_fn_with_state(state, check_host))
}

/// On a loopback bind, only requests addressed to a loopback name (or an `--allowed-host`):
/// a page whose own name was rebound to 127.0.0.1 sends its name as Host, not ours.
async fn check_host(State(s): St, req: Request, next: Next) -> Response {
    if s.cfg.check_host {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !host_allowed(host, &s.cfg.allowed_hosts) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host `{host}` is not served: this server is bound to loopback and answers requests for localhost, 127.0.0.1 and [::1] (add names with --allowed-host)"
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether `host` (a Host header: name or address, optional port) is a loopback name or one
/// of `allowed` (names, compared without port and case).
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().map(|n| format!("[{n}]")).unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host })
            .to_owned(),
    };
    let name = name.to_ascii_lowercase();
    ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str())
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

/// Byte strings equal, in time that depends only on their lengths (API keys).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A POST body must say it is JSON (so a cross-site form or `text/plain` fetch, which needs no
/// CORS preflight, is refused) and arrive whole within the body timeout and size limit.
async fn read_body(State(s): St, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let tei = req.uri().path() == "/predict";
    let wrap = |e: ApiError| if tei { e.tei() } else { e };
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        let shown = if ct.is_empty() { "none".to_owned() } else { format!("`{ct}`") };
        return wrap(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("request bodies must be JSON sent as `Content-Type: application/json` (got {shown})"),
        ))
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let limit = s.cfg.max_body_bytes;
    let bytes = match tokio::time::timeout(s.cfg.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return wrap(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s", s.cfg.body_timeout.as_secs_f64()),
            ))
            .into_response()
        }
        Ok(Err(_)) => {
            return wrap(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the limit of {limit} bytes (--max-body-mib), or was cut off"),
            ))
            .into_response()
        }
        Ok(Ok(b)) => b,
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

async fn auth(State(s): St, req: Request, next: Next) -> Response {
    if let Some(key) = &s.cfg.api_key {
        let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, format!("Bearer {key}").as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (send `Authorization: Bearer <key>`)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The body as JSON, with a message naming the problem (axum's own rejection is plain text).
fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("request body is not valid JSON: {e}")))
}

fn pick(s: &AppState, body: &Value) -> Result<usize, ApiError> {
    match body.get("model").and_then(Value::as_str) {
        None => Ok(0),
        Some(name) => s
            .models
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("The model `{name}` does not exist."))),
    }
}

/// Refuses a request of more sequences than allowed, before any is tokenized.
fn check_count(s: &AppState, n: usize) -> Result<(), ApiError> {
    let max = s.cfg.request.max_sequences;
    if n > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request of {n} sequences exceeds the limit of {max} sequences per request (--max-request-sequences)"
            ),
        ));
    }
    Ok(())
}

/// Tokenizes on a blocking thread (at most one per core at once), then checks the request's
/// sequence and token totals against the request limits.
async fn encode<F>(s: &Arc<AppState>, f: F) -> Result<Vec<EncodedInput>, ApiError>
where
    F: FnOnce(&AppState) -> Result<Vec<EncodedInput>, ApiError> + Send + 'static,
{
    // The permit moves into the blocking task: a client that hangs up drops this future, but
    // not the tokenizing it started, which must keep holding its slot until it ends.
    let permit = s
        .tokenizers
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
    let st = s.clone();
    let inputs = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&st)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "tokenizing the request failed"))??;
    check_count(s, inputs.len())?;
    let tokens: usize = inputs.iter().map(|i| i.ids.len()).sum();
    let max = s.cfg.request.max_tokens;
    if tokens > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request of {tokens} tokens exceeds the limit of {max} tokens per request (--max-request-tokens)"),
        ));
    }
    Ok(inputs)
}

async fn models(State(s): St) -> Json<Value> {
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|m| {
            json!({"id": m.name, "object": "model", "created": s.started, "owned_by": "rewardlens", "root": m.name,
                   "parent": null, "max_model_len": m.batcher.model.token_limit(&m.length), "permission": []})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// The sequences of a vLLM-style body: `messages` (one conversation) or `input` (text, texts,
/// token ids or lists of token ids).
fn encode_inputs(s: &AppState, m: &Served, body: &Value) -> Result<Vec<EncodedInput>, ApiError> {
    let model = &m.batcher.model;
    if let Some(Value::Array(a)) = body.get("input") {
        if !a.first().is_some_and(Value::is_number) {
            check_count(s, a.len())?;
        }
    }
    let policy = &m.length;
    if let Some(msgs) = body.get("messages") {
        let msgs = messages(msgs)?;
        return Ok(vec![model.encode(&msgs, policy).map_err(model_error)?]);
    }
    let input = body.get("input").ok_or_else(|| ApiError::bad("the body needs `input` or `messages`"))?;
    let ids = |v: &Value| -> Result<EncodedInput, ApiError> {
        let ids: Vec<u32> =
            serde_json::from_value(v.clone()).map_err(|_| ApiError::bad("`input` token ids must be integers"))?;
        if ids.is_empty() {
            return Err(ApiError::bad("`input` is empty"));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= model.config().vocab_size) {
            return Err(ApiError::bad(format!("token id {bad} is outside the vocabulary")));
        }
        let limit = model.token_limit(policy);
        if ids.len() > limit {
            return Err(model_error(ModelError::InputTooLong { tokens: ids.len(), limit }));
        }
        Ok(EncodedInput { ids, truncated_tokens: 0 })
    };
    let text = |t: &str| -> Result<EncodedInput, ApiError> {
        if t.is_empty() {
            return Err(ApiError::bad("`input` is empty"));
        }
        model.encode_text(t, policy).map_err(model_error)
    };
    match input {
        Value::String(t) => Ok(vec![text(t)?]),
        Value::Array(a) if a.is_empty() => Err(ApiError::bad("`input` is empty")),
        Value::Array(a) if a[0].is_number() => Ok(vec![ids(input)?]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(t) => text(t),
                Value::Array(_) => ids(x),
                _ => Err(ApiError::bad("`input` items must be strings or lists of token ids")),
            })
            .collect(),
        _ => Err(ApiError::bad("`input` must be a string, a list of strings or token ids")),
    }
}

fn messages(v: &Value) -> Result<Vec<Message>, ApiError> {
    // OpenAI content may be a list of parts; keep the text parts.
    let arr = v.as_array().ok_or_else(|| ApiError::bad("`messages` must be a list"))?;
    let mut out = Vec::new();
    for (i, m) in arr.iter().enumerate() {
        let mut m = m.clone();
        if let Some(parts) = m.get("content").and_then(Value::as_array) {
            let text: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            m["content"] = Value::String(text);
        }
        out.push(
            serde_json::from_value::<Message>(m)
                .map_err(|e| ApiError::bad(format!("`messages[{i}]` is not a {{role, content}} message: {e}")))?,
        );
    }
    if out.is_empty() {
        return Err(ApiError::bad("`messages` is empty"));
    }
    Ok(out)
}

async fn run(m: &Served, inputs: Vec<EncodedInput>, tei: bool) -> Result<Vec<ConversationScore>, ApiError> {
    let wrap = |e: ApiError| if tei { e.tei() } else { e };
    let rx = m.batcher.submit(inputs).map_err(|r| {
        wrap(match r {
            Refused::QueueFull => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is at capacity; retry shortly")
            }
            Refused::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is shutting down"),
        })
    })?;
    rx.await
        .map_err(|_| wrap(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the scoring thread stopped")))?
        .map_err(|e| wrap(model_error(e)))
}

/// vLLM's activation: sigmoid for one label, softmax for several.
fn activate(v: &[f32], on: bool) -> Vec<f32> {
    if !on {
        return v.to_vec();
    }
    if v.len() == 1 {
        return vec![1.0 / (1.0 + (-v[0]).exp())];
    }
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

fn use_activation(body: &Value) -> bool {
    ["use_activation", "activation", "softmax"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_bool))
        .unwrap_or(true)
}

fn usage(scores: &[ConversationScore]) -> Value {
    let t: usize = scores.iter().map(|s| s.tokens).sum();
    json!({"prompt_tokens": t, "total_tokens": t, "completion_tokens": 0, "prompt_tokens_details": null})
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{:x}{:08x}", now(), N.fetch_add(1, Ordering::Relaxed))
}

async fn pooling(State(s): St, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let mi = pick(&s, &body)?;
    let m = &s.models[mi];
    let head = m.batcher.model.config().architecture.head;
    let task = body.get("task").and_then(Value::as_str).unwrap_or(match head {
        HeadKind::Sequence => "classify",
        HeadKind::Token => "token_classify",
    });
    if task != "classify" && !(task == "token_classify" && head == HeadKind::Token) {
        return Err(ApiError::bad(format!(
            "Task {task} is not supported, it must be one of ({}).",
            if head == HeadKind::Token { "classify, token_classify" } else { "classify" }
        )));
    }
    let act = use_activation(&body);
    let b = body.clone();
    let inputs = encode(&s, move |s| encode_inputs(s, &s.models[mi], &b)).await?;
    let scores = run(m, inputs, false).await?;
    let data: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let d = if task == "token_classify" {
                let rows = sc.token_logits.as_deref().unwrap_or_default();
                json!(rows.iter().map(|r| activate(r, act)).collect::<Vec<_>>())
            } else {
                json!(activate(&sc.logits, act))
            };
            json!({"index": i, "object": "pooling", "data": d})
        })
        .collect();
    Ok(Json(
        json!({"id": request_id("pool"), "object": "list", "created": now(), "model": m.name, "data": data, "usage": usage(&scores)}),
    ))
}

async fn classify(State(s): St, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let mi = pick(&s, &body)?;
    let m = &s.models[mi];
    let act = use_activation(&body);
    let b = body.clone();
    let inputs = encode(&s, move |s| encode_inputs(s, &s.models[mi], &b)).await?;
    let scores = run(m, inputs, false).await?;
    let labels = &m.batcher.model.config().labels;
    let data: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let probs = activate(&sc.logits, act);
            let best = probs.iter().enumerate().fold(0, |b, (j, &p)| if p > probs[b] { j } else { b });
            json!({"index": i, "label": labels.get(best), "probs": probs, "num_classes": probs.len()})
        })
        .collect();
    Ok(Json(
        json!({"id": request_id("classify"), "object": "list", "created": now(), "model": m.name, "data": data, "usage": usage(&scores)}),
    ))
}

/// OpenRLHF's `{"query": [...]}` (or LightRFT's `queries`): texts already rendered with the
/// chat template; raw rewards (the first label's logit) come back.
async fn get_reward(State(s): St, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let mi = pick(&s, &body)?;
    let m = &s.models[mi];
    let q = body
        .get("query")
        .or_else(|| body.get("queries"))
        .ok_or_else(|| ApiError::bad("the body needs `query` (a list of strings)"))?;
    let texts: Vec<String> = match q {
        Value::String(t) => vec![t.clone()],
        v => serde_json::from_value(v.clone()).map_err(|_| ApiError::bad("`query` must be a list of strings"))?,
    };
    if texts.is_empty() {
        return Ok(Json(json!({"rewards": [], "scores": [], "extra_logs": {}})));
    }
    check_count(&s, texts.len())?;
    let inputs = encode(&s, move |s| {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                s.models[mi].batcher.model.encode_text(t, &s.models[mi].length).map_err(|e| {
                    let mut err = model_error(e);
                    err.message = format!("query[{i}]: {}", err.message);
                    err
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let scores = run(m, inputs, false).await?;
    let rewards: Vec<f32> = scores.iter().map(ConversationScore::score).collect();
    Ok(Json(json!({"rewards": rewards, "scores": rewards, "extra_logs": {}})))
}

/// NIM reward models: the conversation ends with the assistant turn to score; the answer's
/// content is `name:score,...` (`reward:x` for a one-label model) and the same pairs are in
/// `logprobs.content`.
async fn chat_completions(State(s): St, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    let mi = pick(&s, &body)?;
    let m = &s.models[mi];
    let msgs = messages(body.get("messages").ok_or_else(|| ApiError::bad("the body needs `messages`"))?)?;
    if msgs.last().map(|x| &x.role) != Some(&Role::Assistant) {
        return Err(ApiError::bad("a reward model scores the last message, which must be the assistant's"));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad("streaming is not supported by reward models"));
    }
    let inputs = encode(&s, move |s| {
        Ok(vec![s.models[mi].batcher.model.encode(&msgs, &s.models[mi].length).map_err(model_error)?])
    })
    .await?;
    let scores = run(m, inputs, false).await?;
    let sc = &scores[0];
    let labels = &m.batcher.model.config().labels;
    let names: Vec<String> = if labels.len() == 1 { vec!["reward".to_owned()] } else { labels.clone() };
    let content = names.iter().zip(&sc.logits).map(|(n, v)| format!("{n}:{v}")).collect::<Vec<_>>().join(",");
    let logprobs: Vec<Value> = names
        .iter()
        .zip(&sc.logits)
        .map(|(n, v)| json!({"token": n, "logprob": num(*v), "bytes": null, "top_logprobs": []}))
        .collect();
    Ok(Json(json!({
        "id": request_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": m.name,
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": logprobs}}],
        "usage": {"prompt_tokens": sc.tokens, "completion_tokens": 1, "total_tokens": sc.tokens + 1}
    })))
}

/// TEI `/predict`: `inputs` is a text, or a batch `[[text], ...]` (two bare strings are a
/// sentence pair, which decoder reward models do not take).
async fn predict(State(s): St, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body).map_err(ApiError::tei)?;
    let mi = pick(&s, &body).map_err(ApiError::tei)?;
    let m = &s.models[mi];
    let raw = body.get("raw_scores").and_then(Value::as_bool).unwrap_or(false);
    let inputs = body.get("inputs").ok_or_else(|| ApiError::bad("the body needs `inputs`").tei())?;
    let (texts, batch): (Vec<String>, bool) = match inputs {
        Value::String(t) => (vec![t.clone()], false),
        Value::Array(a) if a.iter().all(Value::is_array) && !a.is_empty() => {
            let mut out = Vec::new();
            for (i, x) in a.iter().enumerate() {
                match x.as_array().map(Vec::as_slice) {
                    Some([Value::String(t)]) => out.push(t.clone()),
                    _ => {
                        return Err(ApiError::bad(format!(
                            "`inputs[{i}]` must be a one-text list (pairs are not supported)"
                        ))
                        .tei())
                    }
                }
            }
            (out, true)
        }
        _ => return Err(ApiError::bad("`inputs` must be a text or a batch [[text], ...]").tei()),
    };
    check_count(&s, texts.len()).map_err(ApiError::tei)?;
    let encoded = encode(&s, move |s| {
        texts
            .iter()
            .map(|t| s.models[mi].batcher.model.encode_text(t, &s.models[mi].length).map_err(model_error))
            .collect()
    })
    .await
    .map_err(ApiError::tei)?;
    let scores = run(m, encoded, true).await?;
    let labels = &m.batcher.model.config().labels;
    let rows: Vec<Value> = scores
        .iter()
        .map(|sc| {
            let vals = activate(&sc.logits, !raw);
            let mut preds: Vec<(f32, &String)> = vals.into_iter().zip(labels).collect();
            preds.sort_by(|a, b| b.0.total_cmp(&a.0));
            json!(preds.iter().map(|(s, l)| json!({"score": s, "label": l})).collect::<Vec<_>>())
        })
        .collect();
    Ok(Json(if batch { json!(rows) } else { rows.into_iter().next().unwrap_or(json!([])) }))
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, host_allowed};

    #[test]
    fn loopback_hosts_and_allowed_names() {
        let extra = vec!["scorer.internal".to_owned()];
        for ok in ["localhost", "localhost:8000", "127.0.0.1:1", "[::1]", "[::1]:8000", "Scorer.Internal:80"] {
            assert!(host_allowed(ok, &extra), "{ok}");
        }
        for bad in ["", "evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io", "[::2]:80"] {
            assert!(!host_allowed(bad, &extra), "{bad}");
        }
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"Bearer k", b"Bearer k"));
        assert!(!constant_time_eq(b"Bearer k", b"Bearer j"));
        assert!(!constant_time_eq(b"Bearer k", b"Bearer k2"));
        assert!(!constant_time_eq(b"", b"Bearer k"));
    }
}
