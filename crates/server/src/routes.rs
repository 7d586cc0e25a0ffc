//! The routes. Request and response bodies are the `rewardlens_core::wire` types, which
//! `rewardlens-remote` sends and reads too: vLLM's pooling protocol, OpenRLHF's `serve_rm.py`,
//! NVIDIA's reward NIM and TEI's `/predict`; errors use each API's own error body.

use crate::batcher::Refused;
use crate::label_studio::LabelingConfig;
use crate::{AppState, Served};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rewardlens_core::activation::label_probabilities;
use rewardlens_core::wire::{self, nim, openrlhf, tei, vllm, ChatMessage};
use rewardlens_core::{Message, Role};
use rewardlens_models::EncodedInput;
use rewardlens_models::{ConversationScore, HeadKind, ModelError};
use serde::de::DeserializeOwned;
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
        let status = self.status;
        let mut r = if self.tei {
            let kind = match status.as_u16() {
                503 => "Unhealthy",
                429 => "Overloaded",
                _ => "Validation",
            };
            (status, Json(tei::ErrorResponse { error: self.message, error_type: kind.into() })).into_response()
        } else {
            let kind = match status.as_u16() {
                400 | 408 | 413 | 415 | 422 => "BadRequestError",
                403 | 421 => "PermissionDeniedError",
                401 => "AuthenticationError",
                404 => "NotFoundError",
                503 => "ServiceUnavailableError",
                _ => "InternalServerError",
            };
            let error =
                vllm::ErrorInfo { message: self.message, kind: kind.into(), param: None, code: status.as_u16() };
            (status, Json(vllm::ErrorResponse { error })).into_response()
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
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
        ModelError::EmptyInput
        | ModelError::TokenOutOfVocab { .. }
        | ModelError::Images { .. }
        | ModelError::Core(_) => ApiError::bad(e.to_string()),
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
        .route("/health", get(|| async { StatusCode::OK }));
    if state.cfg.label_studio.is_some() {
        // Under a prefix: Label Studio's `/predict` would collide with TEI's.
        let mut ls = Router::new();
        for base in ["/label-studio", "/label-studio/{model}"] {
            ls = ls
                .route(base, get(ls_health))
                .route(&format!("{base}/health"), get(ls_health))
                .route(&format!("{base}/setup"), post(ls_setup))
                .route(&format!("{base}/predict"), post(ls_predict))
                .route(&format!("{base}/webhook"), post(ls_webhook));
        }
        r = r.merge(
            ls.layer(middleware::from_fn_with_state(state.clone(), read_body))
                .layer(middleware::from_fn_with_state(state.clone(), ls_auth)),
        );
    }
    let mut r = r.layer(DefaultBodyLimit::max(limit)).with_state(state.clone());
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

/// Label Studio's routes: its basic auth (`--label-studio-auth`, or the API key as password),
/// or the other routes' bearer key; open when neither is set.
async fn ls_auth(State(s): St, req: Request, next: Next) -> Response {
    let basic = s.cfg.label_studio.as_ref().and_then(|l| l.basic.clone());
    if basic.is_none() && s.cfg.api_key.is_none() {
        return next.run(req).await;
    }
    let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
    let bearer = s.cfg.api_key.as_ref().is_some_and(|k| constant_time_eq(given, format!("Bearer {k}").as_bytes()));
    let credentials = given
        .strip_prefix(b"Basic ")
        .and_then(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .and_then(|d| String::from_utf8(d).ok());
    let basic_ok = credentials.as_deref().and_then(|c| c.split_once(':')).is_some_and(|(user, pass)| {
        let configured = basic.as_ref().is_some_and(|(u, p)| {
            constant_time_eq(user.as_bytes(), u.as_bytes()) & constant_time_eq(pass.as_bytes(), p.as_bytes())
        });
        configured || s.cfg.api_key.as_ref().is_some_and(|k| constant_time_eq(pass.as_bytes(), k.as_bytes()))
    });
    if bearer || basic_ok {
        return next.run(req).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Label Studio must send the basic auth set with --label-studio-auth (or any user with the API key as password)",
    )
    .into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"rewardlens\""));
    r
}

/// The body as the route's wire type, with a message naming the field that did not fit
/// (axum's own rejection is plain text).
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    wire::from_slice(bytes).map_err(|e| {
        ApiError::bad(if e.is_syntax() {
            format!("request body is not valid JSON: {e}")
        } else {
            format!("invalid request body: {e}")
        })
    })
}

fn pick(s: &AppState, model: Option<&str>) -> Result<usize, ApiError> {
    match model {
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

async fn models(State(s): St) -> Json<vllm::ModelList> {
    let data = s
        .models
        .iter()
        .map(|m| vllm::ModelCard {
            id: m.name.clone(),
            object: "model".into(),
            created: s.started,
            owned_by: "rewardlens".into(),
            root: Some(m.name.clone()),
            parent: None,
            max_model_len: Some(m.batcher.model.token_limit(&m.length)),
            permission: Vec::new(),
        })
        .collect();
    Json(vllm::ModelList { object: "list".into(), data })
}

/// The sequences of a vLLM-style body: `messages` (one conversation) or `input` (text, texts,
/// token ids or lists of token ids).
fn encode_inputs(m: &Served, req: vllm::PoolingRequest) -> Result<Vec<EncodedInput>, ApiError> {
    let model = &m.batcher.model;
    let policy = &m.length;
    if let Some(msgs) = req.messages {
        return Ok(vec![model.encode(&messages(msgs)?, policy).map_err(model_error)?]);
    }
    let ids = |ids: Vec<u32>| -> Result<EncodedInput, ApiError> {
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
    match req.input.ok_or_else(|| ApiError::bad("the body needs `input` or `messages`"))? {
        vllm::PoolingInput::Text(t) => Ok(vec![text(&t)?]),
        vllm::PoolingInput::Tokens(t) => Ok(vec![ids(t)?]),
        vllm::PoolingInput::Batch(items) => items
            .into_iter()
            .map(|item| match item {
                vllm::PoolingInputItem::Text(t) => text(&t),
                vllm::PoolingInputItem::Tokens(t) => ids(t),
            })
            .collect(),
    }
}

/// The conversation to score: text parts joined, `image_url` parts kept as the message's
/// images (which a text-only model then refuses by name), any other part refused.
fn messages(msgs: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::bad("`messages` is empty"));
    }
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| {
            Message::try_from(m)
                .map_err(|e| ApiError::bad(format!("`messages[{i}].content[{}]`: {}", e.index, e.reason)))
        })
        .collect()
}

/// Refuses a batched `input` of more sequences than allowed before anything is tokenized.
fn check_input_count(s: &AppState, req: &vllm::PoolingRequest) -> Result<(), ApiError> {
    match &req.input {
        Some(vllm::PoolingInput::Batch(items)) => check_count(s, items.len()),
        _ => Ok(()),
    }
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

/// vLLM's `use_activation` and TEI's default: sigmoid for one label, softmax for several.
fn activate(v: &[f32], on: bool) -> Vec<f32> {
    if on {
        label_probabilities(v)
    } else {
        v.to_vec()
    }
}

fn usage(scores: &[ConversationScore]) -> vllm::Usage {
    let t: usize = scores.iter().map(|s| s.tokens).sum();
    vllm::Usage { prompt_tokens: t, total_tokens: t, completion_tokens: 0, prompt_tokens_details: None }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{:x}{:08x}", now(), N.fetch_add(1, Ordering::Relaxed))
}

async fn pooling(State(s): St, body: axum::body::Bytes) -> Result<Json<vllm::PoolingResponse>, ApiError> {
    let req: vllm::PoolingRequest = parse_body(&body)?;
    let mi = pick(&s, req.model.as_deref())?;
    let m = &s.models[mi];
    let head = m.batcher.model.config().architecture.head;
    let task = req.task.clone().unwrap_or(match head {
        HeadKind::Sequence => vllm::PoolingTask::Classify,
        HeadKind::Token => vllm::PoolingTask::TokenClassify,
    });
    let per_token = match (&task, head) {
        (vllm::PoolingTask::Classify, _) => false,
        (vllm::PoolingTask::TokenClassify, HeadKind::Token) => true,
        (other, _) => {
            return Err(ApiError::bad(format!(
                "Task {} is not supported, it must be one of ({}).",
                other.as_str(),
                if head == HeadKind::Token { "classify, token_classify" } else { "classify" }
            )))
        }
    };
    let act = req.activation_on();
    check_input_count(&s, &req)?;
    let inputs = encode(&s, move |s| encode_inputs(&s.models[mi], req)).await?;
    let scores = run(m, inputs, false).await?;
    let data = scores
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let data = if per_token {
                let rows = sc.token_logits.as_deref().unwrap_or_default();
                vllm::PoolingData::TokenRows(rows.iter().map(|r| activate(r, act)).collect())
            } else {
                vllm::PoolingData::Values(activate(&sc.logits, act))
            };
            vllm::PoolingItem { index: Some(i), object: Some("pooling".into()), data }
        })
        .collect();
    Ok(Json(vllm::PoolingResponse {
        id: Some(request_id("pool")),
        object: Some("list".into()),
        created: Some(now()),
        model: Some(m.name.clone()),
        data,
        usage: Some(usage(&scores)),
    }))
}

async fn classify(State(s): St, body: axum::body::Bytes) -> Result<Json<vllm::ClassifyResponse>, ApiError> {
    let req: vllm::PoolingRequest = parse_body(&body)?;
    let mi = pick(&s, req.model.as_deref())?;
    let m = &s.models[mi];
    let act = req.activation_on();
    check_input_count(&s, &req)?;
    let inputs = encode(&s, move |s| encode_inputs(&s.models[mi], req)).await?;
    let scores = run(m, inputs, false).await?;
    let labels = &m.batcher.model.config().labels;
    let data = scores
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let probs = activate(&sc.logits, act);
            let best = probs.iter().enumerate().fold(0, |b, (j, &p)| if p > probs[b] { j } else { b });
            vllm::ClassifyItem {
                index: Some(i),
                label: labels.get(best).cloned(),
                num_classes: Some(probs.len()),
                probs: wire::LabelValues::List(probs),
            }
        })
        .collect();
    Ok(Json(vllm::ClassifyResponse {
        id: Some(request_id("classify")),
        object: Some("list".into()),
        created: Some(now()),
        model: Some(m.name.clone()),
        data,
        usage: Some(usage(&scores)),
    }))
}

/// OpenRLHF's and LightRFT's answer: the rewards, under both of `serve_rm.py`'s keys.
fn reward_response(rewards: Vec<f32>) -> openrlhf::RewardResponse {
    let rewards = openrlhf::Rewards::PerQuery(rewards.into_iter().map(wire::LabelValues::Bare).collect());
    openrlhf::RewardResponse {
        scores: Some(rewards.clone()),
        rewards: Some(rewards),
        extra_logs: Some(Default::default()),
        other: Default::default(),
    }
}

/// OpenRLHF's `{"query": [...]}` (or LightRFT's `queries`): texts already rendered with the
/// chat template; raw rewards (the first label's logit) come back.
async fn get_reward(State(s): St, body: axum::body::Bytes) -> Result<Json<openrlhf::RewardResponse>, ApiError> {
    let req: openrlhf::RewardRequest = parse_body(&body)?;
    let mi = pick(&s, req.model.as_deref())?;
    let m = &s.models[mi];
    if let Some(i) = req.images_at() {
        return Err(ApiError::bad(format!(
            "`images[{i}]`: model `{}` reads text only and cannot score images; serve a multimodal reward model for them",
            m.name
        )));
    }
    let texts = req.into_texts().ok_or_else(|| ApiError::bad("the body needs `query` (a list of strings)"))?;
    if texts.is_empty() {
        return Ok(Json(reward_response(Vec::new())));
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
    Ok(Json(reward_response(scores.iter().map(ConversationScore::score).collect())))
}

/// NIM reward models: the conversation ends with the assistant turn to score; the answer's
/// content is `name:score,...` (`reward:x` for a one-label model) and the same pairs are in
/// `logprobs.content`.
async fn chat_completions(
    State(s): St,
    body: axum::body::Bytes,
) -> Result<Json<nim::ChatCompletionResponse>, ApiError> {
    let req: nim::ChatCompletionRequest = parse_body(&body)?;
    let mi = pick(&s, req.model.as_deref())?;
    let m = &s.models[mi];
    let msgs = messages(req.messages)?;
    if msgs.last().map(|x| &x.role) != Some(&Role::Assistant) {
        return Err(ApiError::bad("a reward model scores the last message, which must be the assistant's"));
    }
    if req.stream == Some(true) {
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
    let content = nim::reward_content(names.iter().map(String::as_str).zip(sc.logits.iter().copied()));
    let logprobs = names
        .iter()
        .zip(&sc.logits)
        .map(|(n, &v)| nim::TokenLogprob { token: n.clone(), logprob: v, bytes: None, top_logprobs: Vec::new() })
        .collect();
    Ok(Json(nim::ChatCompletionResponse {
        id: Some(request_id("chatcmpl")),
        object: Some("chat.completion".into()),
        created: Some(now()),
        model: Some(m.name.clone()),
        choices: vec![nim::Choice {
            index: 0,
            finish_reason: Some("length".into()),
            message: Some(nim::ChoiceMessage { role: Some(Role::Assistant), content: Some(content) }),
            logprobs: Some(nim::ChoiceLogprobs { content: Some(logprobs) }),
        }],
        usage: Some(nim::Usage { prompt_tokens: sc.tokens, completion_tokens: 1, total_tokens: sc.tokens + 1 }),
    }))
}

/// TEI `/predict`: `inputs` is a text, or a batch `[[text], ...]` (two bare strings are a
/// sentence pair, which decoder reward models do not take).
async fn predict(State(s): St, body: axum::body::Bytes) -> Result<Json<tei::PredictResponse>, ApiError> {
    let req: tei::PredictRequest = parse_body(&body).map_err(ApiError::tei)?;
    let mi = pick(&s, req.model.as_deref()).map_err(ApiError::tei)?;
    let m = &s.models[mi];
    let (texts, batch): (Vec<String>, bool) = match req.inputs {
        tei::PredictInputs::Single(t) => (vec![t], false),
        tei::PredictInputs::Batch(items) if items.is_empty() => {
            return Err(ApiError::bad("`inputs` must be a text or a batch [[text], ...]").tei())
        }
        tei::PredictInputs::Batch(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let Ok([text]) = <[String; 1]>::try_from(item) else {
                    return Err(ApiError::bad(format!(
                        "`inputs[{i}]` must be a one-text list (pairs are not supported)"
                    ))
                    .tei());
                };
                out.push(text);
            }
            (out, true)
        }
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
    let mut rows: Vec<Vec<tei::Prediction>> = scores
        .iter()
        .map(|sc| {
            let mut preds: Vec<tei::Prediction> = activate(&sc.logits, !req.raw_scores)
                .into_iter()
                .zip(labels)
                .map(|(score, label)| tei::Prediction { score, label: label.clone() })
                .collect();
            preds.sort_by(|a, b| b.score.total_cmp(&a.score));
            preds
        })
        .collect();
    Ok(Json(if batch {
        tei::PredictResponse::Batch(rows)
    } else {
        tei::PredictResponse::Single(rows.pop().unwrap_or_default())
    }))
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

// Label Studio's ML backend (see `label_studio`).

type ModelPath = Option<axum::extract::Path<String>>;

fn ls_model(s: &AppState, model: ModelPath) -> Result<usize, ApiError> {
    pick(s, model.as_ref().map(|p| p.0.as_str()))
}

async fn ls_health(State(s): St, model: ModelPath) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &s.models[ls_model(&s, model)?];
    Ok(Json(serde_json::json!({"status": "UP", "model_class": "rewardlens", "model": m.name})))
}

#[derive(serde::Deserialize)]
struct SetupRequest {
    #[serde(default)]
    schema: Option<String>,
}

/// Label Studio calls `/setup` when the backend is connected and before predicting: the
/// project's labeling config is checked here, so a config the backend cannot fill is refused
/// when it is connected, by name.
async fn ls_setup(
    State(s): St,
    model: ModelPath,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &s.models[ls_model(&s, model)?];
    let req: SetupRequest = parse_body(&body)?;
    if let Some(schema) = req.schema.filter(|x| !x.trim().is_empty()) {
        LabelingConfig::parse(&schema).map_err(|e| logged("setup", ApiError::bad(e)))?;
    }
    Ok(Json(serde_json::json!({"model_version": m.name})))
}

#[derive(serde::Deserialize)]
struct PredictRequest {
    tasks: Vec<serde_json::Value>,
    label_config: Option<String>,
}

/// One prediction per task, in order: each task's responses scored after its prompt.
async fn ls_predict(
    State(s): St,
    model: ModelPath,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    ls_predictions(&s, model, &body).await.map(Json).map_err(|e| logged("predict", e))
}

/// Label Studio shows only the status of a failed call and points at the backend's console:
/// the reason goes there.
fn logged(route: &str, e: ApiError) -> ApiError {
    eprintln!("label studio /{route}: {} {}", e.status.as_u16(), e.message);
    e
}

async fn ls_predictions(s: &Arc<AppState>, model: ModelPath, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let mi = ls_model(s, model)?;
    let req: PredictRequest = parse_body(body)?;
    let config = req
        .label_config
        .ok_or_else(|| ApiError::bad("the body needs `label_config` (the project's labeling config)"))?;
    let config = LabelingConfig::parse(&config).map_err(ApiError::bad)?;
    let mut conversations: Vec<Vec<Message>> = Vec::new();
    for (i, task) in req.tasks.iter().enumerate() {
        let id = task.get("id").map_or_else(|| format!("#{i}"), |v| v.to_string());
        let data = task.get("data").ok_or_else(|| ApiError::bad(format!("task {id} has no `data`")))?;
        let (prompt, responses) = config.texts(data).map_err(|e| ApiError::bad(format!("task {id}: {e}")))?;
        conversations.extend(responses.iter().map(|r| rewardlens_core::types::prompt_response(&prompt, r)));
    }
    // In rounds of whole tasks within the request limit: Label Studio sends every task it wants
    // predicted in one request.
    let per_task = config.responses.len();
    let tasks_per_round = (s.cfg.request.max_sequences / per_task).max(1);
    let mut rewards = Vec::with_capacity(conversations.len());
    for round in conversations.chunks(tasks_per_round * per_task) {
        let round = round.to_vec();
        let inputs = encode(s, move |s| {
            let m = &s.models[mi];
            round.iter().map(|c| m.batcher.model.encode(c, &m.length).map_err(model_error)).collect()
        })
        .await?;
        rewards.extend(run(&s.models[mi], inputs, false).await?.iter().map(ConversationScore::score));
    }
    let version = &s.models[mi].name;
    let results: Vec<serde_json::Value> = rewards.chunks(per_task).map(|r| config.prediction(r, version)).collect();
    Ok(serde_json::json!({ "results": results }))
}

/// Label Studio's project events: nothing to train, so each is acknowledged.
async fn ls_webhook() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "Unknown event"}))
}
