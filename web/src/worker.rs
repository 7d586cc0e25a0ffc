//! The engine's side of the Web Worker: downloads (with progress and the browser cache),
//! model building and scoring, so none of it blocks the page.
//!
//! Jobs run as futures on the worker's event loop and yield between sequences, which is where
//! a `Cancel` message is seen. Downloaded files stay in JS memory (`Uint8Array`s) and weights
//! are copied into wasm memory one tensor at a time.

use crate::protocol::*;
use candle_core::Device;
use js_sys::{Array, Promise, Reflect, Uint8Array};
use rewardlens_core::types::prompt_response;
use rewardlens_core::{ChatTemplate, Message};
use rewardlens_gpu::{Gpu, GpuRewardModel, WeightFormat};
use rewardlens_models::batching::shared_prompt_runs;
use rewardlens_models::gguf::{ByteSource, GgufFile};
use rewardlens_models::memory::{pick_storage, MemoryEstimate, WeightStorage, WASM32_MEMORY_LIMIT};
use rewardlens_models::prm::{problem_and_answer, token_rewards, StepConvention};
use rewardlens_models::quantized::{self, QuantType};
use rewardlens_models::records::{annotate, parse_record};
use rewardlens_models::weights::StreamedSafetensors;
use rewardlens_models::ConversationScore;
use rewardlens_models::EncodedInput;
use rewardlens_models::{files, CheckpointText, InputEncoder, LengthPolicy, ModelConfig, ModelError, RewardModel};
use rewardlens_remote::{Protocol, RemoteConfig, RemoteInput, RemoteScorer};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{
    Cache, DedicatedWorkerGlobalScope, File, Headers, MessageEvent, ReadableStreamDefaultReader, RequestInit, Response,
    ResponseInit,
};

const CACHE_NAME: &str = "rewardlens-models-v1";
/// Header recording an entry's size, so the cache size is known without reading bodies.
const SIZE_HEADER: &str = "x-rewardlens-bytes";
/// wasm memory kept free for the tokenizer, the program and allocator slack.
const RESERVE: u64 = 512 << 20;
/// Longest sequence the memory estimate plans for.
const PLANNED_TOKENS: usize = 4096;
/// Names the worker build that runs (index.html picks it): results and model info show it.
pub const BACKEND: &str =
    if cfg!(target_feature = "relaxed-simd") { "WASM CPU (simd128 + relaxed-simd)" } else { "WASM CPU (simd128)" };

/// A downloaded file, outside wasm memory.
struct JsBytes(Uint8Array);

// SAFETY: this build has no wasm threads (no atomics), so the array never leaves the worker's
// one thread; the GGUF reader's `Send + Sync` bound is for native multi-threaded use.
unsafe impl Send for JsBytes {}
unsafe impl Sync for JsBytes {}

impl ByteSource for JsBytes {
    fn len(&self) -> u64 {
        self.0.length() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len());
        let end = end.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        self.0.subarray(offset as u32, end as u32).copy_to(buf);
        Ok(())
    }
}

/// What scores: the engine here, or a remote endpoint.
// One per loaded model, behind an Rc: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Scorer {
    Local(RewardModel),
    /// Our WGSL kernels on the browser's WebGPU; inputs are encoded here, on the CPU.
    WebGpu {
        inputs: InputEncoder,
        model: GpuRewardModel,
    },
    Remote {
        client: RemoteScorer,
        template: Option<ChatTemplate>,
    },
    /// The CPU engine split over several workers, a contiguous slice of layers each
    /// (`stage.rs`); inputs are encoded here, as for WebGPU.
    Pipeline {
        inputs: InputEncoder,
        config: ModelConfig,
        pipeline: crate::stage::Pipeline,
    },
}

/// The pipeline settings of the last `Load` (`?workers=`, `?chunk=`, the crash test hook).
#[derive(Debug, Clone, Copy, Default)]
struct PipeOpts {
    workers: Option<usize>,
    chunk_tokens: Option<usize>,
    crash_stage: Option<usize>,
}

/// Sequences packed into one WebGPU pass (and scored between two cancel checks).
const GPU_BATCH: usize = 8;
/// Most responses to one prompt scored together on the CPU, which computes their shared
/// prompt once; other inputs go one at a time (cancellation and progress per sequence).
const CPU_SHARED_BATCH: usize = 4;

/// How WebGPU holds the weights for a storage choice: f16 by default (half the f32 bytes,
/// scores within 1e-3 on the fixtures); the quantized choices map to the kernels' formats.
fn gpu_format(choice: StorageChoice) -> WeightFormat {
    match choice {
        StorageChoice::Auto => WeightFormat::F16,
        StorageChoice::F32 => WeightFormat::F32,
        StorageChoice::Q8_0 => WeightFormat::Q8_0,
        StorageChoice::Q4K => WeightFormat::Q4_0,
    }
}

/// The backend's name in results.
fn webgpu_backend(model: &GpuRewardModel) -> String {
    // The adapter label ends in "(WebGPU)" already; keep the weight format.
    format!("WebGPU: {}, {} weights", model.adapter(), model.format().name())
}

/// What the page shows about a model loaded in this tab; who scores (backend, workers, kernel)
/// is read off the scorer, so no load path can report it differently.
struct LocalInfo<'a> {
    source: &'a ModelSource,
    config: &'a ModelConfig,
    storage: String,
    estimated_bytes: u64,
    load_ms: f64,
    stats: (u64, u64),
    gpu_fallback_reason: Option<String>,
}

impl LocalInfo<'_> {
    fn describe(self, scorer: &Scorer) -> ModelInfo {
        let (backend, workers, kernel) = match scorer {
            Scorer::Local(model) => (BACKEND.to_owned(), 1, model.linear_kernel()),
            Scorer::Pipeline { pipeline, .. } => (pipeline_backend(scorer), pipeline.stages(), pipeline.kernel()),
            Scorer::WebGpu { model, .. } => (webgpu_backend(model), 1, String::new()),
            // Remote loads describe themselves (no local config); kept for completeness.
            Scorer::Remote { client, .. } => (client.url().to_owned(), 1, String::new()),
        };
        ModelInfo {
            source: self.source.label(),
            architecture: self.config.architecture.name(),
            labels: self.config.labels.clone(),
            parameters: MemoryEstimate::new(self.config, WeightStorage::F32, PLANNED_TOKENS).parameters,
            storage: self.storage,
            estimated_bytes: self.estimated_bytes,
            max_tokens: self.config.max_position_embeddings,
            load_ms: self.load_ms,
            downloaded_bytes: self.stats.0,
            cached_bytes: self.stats.1,
            backend,
            fallback_reason: None,
            gpu_fallback_reason: self.gpu_fallback_reason,
            step_convention: None,
            workers,
            kernel,
        }
    }
}

/// A GGUF loaded on the CPU (one engine or the pipeline): the file is the weights in memory.
fn gguf_info<'a>(
    source: &'a ModelSource,
    config: &'a ModelConfig,
    types_text: &str,
    file_bytes: u64,
    load_ms: f64,
    stats: (u64, u64),
    gpu_fallback_reason: Option<String>,
) -> LocalInfo<'a> {
    let estimate = MemoryEstimate::new(config, WeightStorage::F32, PLANNED_TOKENS);
    LocalInfo {
        source,
        config,
        storage: format!("GGUF ({types_text})"),
        estimated_bytes: file_bytes + estimate.activations,
        load_ms,
        stats,
        gpu_fallback_reason,
    }
}

struct Loaded {
    scorer: Scorer,
    info: ModelInfo,
}

/// Who may get the Hugging Face token: see `protocol::token_allowed`.
#[derive(Clone, Copy)]
struct Auth<'a> {
    token: &'a str,
    hub: &'a str,
    hub_from_link: bool,
}

impl Auth<'_> {
    fn allowed(&self, url: &str) -> bool {
        token_allowed(url, self.hub, self.hub_from_link)
    }
}

struct Engine {
    scope: DedicatedWorkerGlobalScope,
    model: RefCell<Option<Rc<Loaded>>>,
    cancelled: RefCell<HashSet<u64>>,
    /// Jobs run one at a time, in arrival order (a cache query must not overtake a clear).
    queue: RefCell<std::collections::VecDeque<(ToWorker, Vec<File>)>>,
    running: std::cell::Cell<bool>,
    pipe: std::cell::Cell<PipeOpts>,
    /// The last load (without its crash hook), run again when a pipeline worker crashed.
    last_load: RefCell<Option<(ToWorker, Vec<File>)>>,
}

type Res<T> = Result<T, UserError>;

fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| Reflect::get(v, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn model_error(e: ModelError) -> UserError {
    match e {
        ModelError::UnsupportedArchitecture(_) => UserError::new("unsupported_architecture", e.to_string()),
        ModelError::Config(_) => UserError::new("bad_config", e.to_string()),
        ModelError::MissingTensor { .. } | ModelError::TensorShape { .. } | ModelError::Weights(_) => UserError::new(
            "corrupted",
            format!(
                "the model files are damaged or incomplete: {e}. Clear the cache and load again, or check the files."
            ),
        ),
        ModelError::InputTooLong { .. } => UserError::new("too_long", e.to_string()),
        other => UserError::new("engine", other.to_string()),
    }
}

fn gpu_error(e: rewardlens_gpu::GpuError) -> UserError {
    UserError::new("webgpu", format!("WebGPU: {e}"))
}

fn sequence_result(s: ConversationScore, ms: f64) -> SequenceResult {
    SequenceResult {
        score: s.score(),
        logits: s.logits,
        tokens: s.tokens,
        truncated_tokens: s.truncated_tokens,
        ms,
        steps: None,
        token_scores: None,
        step_error: None,
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Engine {
    fn post(&self, msg: &FromWorker) {
        let text = serde_json::to_string(msg).expect("messages serialize");
        let _ = self.scope.post_message(&JsValue::from_str(&text));
    }

    fn now(&self) -> f64 {
        js_sys::Date::now()
    }

    fn check_cancel(&self, id: u64) -> Res<()> {
        if self.cancelled.borrow_mut().remove(&id) {
            return Err(UserError::new("cancelled", "cancelled"));
        }
        Ok(())
    }

    /// Lets the event loop run (and deliver `Cancel`) between long synchronous steps.
    async fn yield_now(&self) {
        let scope = self.scope.clone();
        let p = Promise::new(&mut |resolve, _| {
            let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        });
        let _ = JsFuture::from(p).await;
    }

    /// Posts a job's outcome (its answer, `Cancelled`, or `Failed`) and forgets its cancel flag.
    fn finish(&self, id: u64, result: Res<FromWorker>) {
        match result {
            Ok(msg) => self.post(&msg),
            Err(e) if e.code == "cancelled" => self.post(&FromWorker::Cancelled { id }),
            Err(error) => {
                if error.code == "worker_crashed" {
                    // The pipeline lost a stage: load the model again before the next job (its
                    // `Loaded` carries the old load's id, so the page keeps its model info).
                    *self.model.borrow_mut() = None;
                    if let Some(load) = self.last_load.borrow().clone() {
                        self.queue.borrow_mut().push_front(load);
                    }
                }
                self.post(&FromWorker::Failed { id, error })
            }
        }
        self.cancelled.borrow_mut().remove(&id);
    }

    /// Items (or bytes) per second since `started` (ms).
    fn per_second(&self, count: f64, started: f64) -> f64 {
        count / ((self.now() - started).max(1.0) / 1000.0)
    }

    async fn run_queue(self: Rc<Self>) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some((msg, files)) = next else { break };
            self.handle(msg, files).await;
        }
        self.running.set(false);
    }

    async fn handle(&self, msg: ToWorker, files: Vec<File>) {
        match msg {
            ToWorker::Load {
                id,
                source,
                storage,
                backend,
                token,
                hub,
                hub_from_link,
                remote,
                remote_only,
                workers,
                chunk_tokens,
                crash_stage,
            } => {
                self.pipe.set(PipeOpts { workers, chunk_tokens, crash_stage });
                let again = ToWorker::Load {
                    id,
                    source: source.clone(),
                    storage,
                    backend,
                    token: token.clone(),
                    hub: hub.clone(),
                    hub_from_link,
                    remote: remote.clone(),
                    remote_only,
                    workers,
                    chunk_tokens,
                    crash_stage: None,
                };
                *self.last_load.borrow_mut() = Some((again, files.clone()));
                let checked = source.validate().map_err(|e| UserError::new("bad_source", e)).and_then(|_| {
                    hub.as_deref()
                        .map_or(Ok(HUB.to_owned()), check_hub_url)
                        .map_err(|e| UserError::new("bad_source", e))
                });
                let hub = match checked {
                    Ok(hub) => hub,
                    Err(e) => return self.finish(id, Err(e)),
                };
                let auth = Auth { token: token.as_deref().unwrap_or(""), hub: &hub, hub_from_link };
                let remote = remote.filter(RemoteSettings::is_set);
                let result = match (&remote, remote_only) {
                    (Some(r), true) => self.load_remote(id, &source, r, None, auth).await,
                    _ => match self.load(id, &source, storage, backend, auth, files).await {
                        Err(e) if e.code != "cancelled" && remote.is_some() => {
                            // The browser cannot hold or load it: score on the configured endpoint.
                            let r = remote.as_ref().expect("checked");
                            self.load_remote(id, &source, r, Some(e.message), auth).await
                        }
                        other => other,
                    },
                };
                let result = result.map(|mut loaded| {
                    let config = match &loaded.scorer {
                        Scorer::Local(m) => Some(m.config()),
                        Scorer::WebGpu { model, .. } => Some(model.config()),
                        Scorer::Pipeline { config, .. } => Some(config),
                        Scorer::Remote { .. } => None,
                    };
                    loaded.info.step_convention =
                        config.and_then(StepConvention::of_architecture).map(|c| c.name().to_owned());
                    let info = loaded.info.clone();
                    *self.model.borrow_mut() = Some(Rc::new(loaded));
                    FromWorker::Loaded { id, info }
                });
                self.finish(id, result);
            }
            ToWorker::Score { id, job, truncate, steps } => {
                let started = self.now();
                let backend = self.model.borrow().as_ref().map(|l| l.info.backend.clone()).unwrap_or_default();
                let result = self.score(id, job, truncate, steps.as_ref()).await;
                self.finish(
                    id,
                    result.map(|output| FromWorker::Scored { id, output, backend, ms: self.now() - started }),
                );
            }
            ToWorker::Bench { id, lengths, iters, batch } => {
                let result = self.bench(id, &lengths, iters, batch).await;
                self.finish(id, result.map(|rows| FromWorker::Benched { id, rows }));
            }
            // Recorded on arrival in `start`, never queued behind the job it cancels.
            ToWorker::Cancel { .. } => {}
            ToWorker::CacheInfo => {
                let (bytes, entries) = self.cache_size().await.unwrap_or((0, 0));
                self.post(&FromWorker::CacheInfo { bytes, entries });
            }
            ToWorker::ClearCache => {
                if let Ok(caches) = self.scope.caches() {
                    let _ = JsFuture::from(caches.delete(CACHE_NAME)).await;
                }
                let (bytes, entries) = self.cache_size().await.unwrap_or((0, 0));
                self.post(&FromWorker::CacheInfo { bytes, entries });
            }
            ToWorker::KernelSelfTest { id } => self.post(&kernel_self_test(id)),
        }
    }

    async fn cache(&self) -> Option<Cache> {
        let caches = self.scope.caches().ok()?;
        JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
    }

    async fn cache_size(&self) -> Option<(u64, u64)> {
        let cache = self.cache().await?;
        let keys: Array = JsFuture::from(cache.keys()).await.ok()?.dyn_into().ok()?;
        let mut bytes = 0;
        for req in keys.iter() {
            let req: web_sys::Request = req.dyn_into().ok()?;
            let resp: Response = JsFuture::from(cache.match_with_str(&req.url())).await.ok()?.dyn_into().ok()?;
            bytes += resp.headers().get(SIZE_HEADER).ok().flatten().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Some((bytes, keys.length() as u64))
    }

    /// Fetches `url` (from the cache when it is there), at most `cap` bytes. `Ok(None)`: an
    /// optional file that does not exist. The token is only sent where `auth` allows.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        id: u64,
        url: &str,
        label: &str,
        auth: Auth<'_>,
        optional: bool,
        cap: u64,
        stats: &mut (u64, u64),
    ) -> Res<Option<Uint8Array>> {
        let mut budget = DownloadBudget::new(label, cap);
        let cache = self.cache().await;
        if let Some(cache) = &cache {
            if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
                if let Ok(resp) = hit.dyn_into::<Response>() {
                    if resp.status() == 404 && optional {
                        return Ok(None);
                    }
                    if resp.ok() {
                        let size = resp.headers().get(SIZE_HEADER).ok().flatten().and_then(|v| v.parse::<u64>().ok());
                        budget.declared(size)?;
                        let buf =
                            JsFuture::from(resp.array_buffer().map_err(|e| UserError::new("cache", js_text(&e)))?)
                                .await
                                .map_err(|e| UserError::new("cache", js_text(&e)))?;
                        let bytes = Uint8Array::new(&buf);
                        // An entry without the size header (an older version's) is capped here.
                        budget.add(bytes.length() as u64)?;
                        stats.1 += bytes.length() as u64;
                        return Ok(Some(bytes));
                    }
                }
            }
        }

        let init = RequestInit::new();
        let hub = auth.allowed(url);
        if hub && !auth.token.is_empty() {
            let h = Headers::new().map_err(|e| UserError::new("network", js_text(&e)))?;
            let _ = h.set("Authorization", &format!("Bearer {}", auth.token));
            init.set_headers(&h);
        }
        let fetched = JsFuture::from(self.scope.fetch_with_str_and_init(url, &init)).await;
        if fetched.is_err() && optional {
            // Some hosts answer a missing file without CORS headers, which fetch reports as a
            // network error; an optional file is then treated as absent (a required file
            // still reports the error).
            return Ok(None);
        }
        let resp: Response = fetched
            .map_err(|e| {
                UserError::new(
                    "network",
                    format!(
                        "could not fetch {url}: the server is unreachable or refused cross-origin access (CORS). \
                         A server hosting models for the browser must send Access-Control-Allow-Origin. ({})",
                        js_text(&e)
                    ),
                )
            })?
            .dyn_into()
            .map_err(|_| UserError::new("network", "fetch did not return a Response"))?;
        let status = resp.status();
        if status == 404 {
            if optional {
                if let Some(cache) = &cache {
                    // Remember the absence too, so a cached model loads with no request at all.
                    let init = ResponseInit::new();
                    init.set_status(404);
                    if let Ok(r) = Response::new_with_opt_str_and_init(None, &init) {
                        let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
                    }
                }
                return Ok(None);
            }
            return Err(UserError::new(
                "not_found",
                format!("{label} was not found at {url} (HTTP 404): check the repo id, revision and file names"),
            ));
        }
        if status == 401 || status == 403 {
            let no_token = auth.token.is_empty();
            let msg = if hub && no_token {
                format!("{url} needs authorization (HTTP {status}): the repo is gated or private. Accept its terms on huggingface.co and enter an access token.")
            } else if hub {
                format!("{url} refused the access token (HTTP {status}): check that it is valid and that you accepted the repo's terms.")
            } else {
                // Not the Hub: no token was sent, and none is asked for (a link's host could
                // otherwise phish for one).
                format!("{url} refused access (HTTP {status}); a Hugging Face token is never sent to {}", url_host(url))
            };
            return Err(UserError::new("unauthorized", msg));
        }
        if !resp.ok() {
            return Err(UserError::new("http", format!("{url} answered HTTP {status} {}", resp.status_text())));
        }
        let total = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
        budget.declared(total)?;
        let body = resp.body().ok_or_else(|| UserError::new("http", format!("{url}: empty response body")))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        // With a Content-Length (checked above) the bytes go straight into one array of that
        // size; without one they are kept as chunks (at most `cap` bytes) and joined at the end.
        let whole = total.map(|t| Uint8Array::new_with_length(t as u32));
        let chunks = Array::new();
        let (mut done_bytes, started, mut last_post) = (0u64, self.now(), 0f64);
        loop {
            let chunk = JsFuture::from(reader.read())
                .await
                .map_err(|e| UserError::new("network", format!("download of {url} broke off: {}", js_text(&e))))?;
            if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
                break;
            }
            let value: Uint8Array = Reflect::get(&chunk, &"value".into())
                .map_err(|e| UserError::new("network", js_text(&e)))?
                .unchecked_into();
            let n = value.length() as u64;
            if let Err(e) = budget.add(n) {
                let _ = reader.cancel();
                return Err(e);
            }
            match (&whole, total) {
                (Some(all), Some(t)) if done_bytes + n <= t => all.set(&value, done_bytes as u32),
                (Some(_), Some(t)) => {
                    let _ = reader.cancel();
                    return Err(UserError::new(
                        "network",
                        format!("{url} sent more than the {t} bytes its Content-Length announced"),
                    ));
                }
                _ => {
                    chunks.push(&value);
                }
            }
            done_bytes += n;
            let now = self.now();
            if now - last_post > 100.0 {
                last_post = now;
                let rate = self.per_second(done_bytes as f64, started);
                self.post(&FromWorker::Progress { id, stage: label.into(), done: done_bytes, total, rate });
                if self.cancelled.borrow().contains(&id) {
                    let _ = reader.cancel();
                    self.check_cancel(id)?;
                }
            }
        }
        if let Some(t) = total.filter(|&t| t != done_bytes) {
            return Err(UserError::new(
                "network",
                format!("download of {url} ended after {done_bytes} of {t} bytes; try again"),
            ));
        }
        let rate = self.per_second(done_bytes as f64, started);
        self.post(&FromWorker::Progress { id, stage: label.into(), done: done_bytes, total: Some(done_bytes), rate });
        stats.0 += done_bytes;
        // One contiguous array (a Blob of a large download may be paged to disk by the browser
        // and then fail to read back).
        let all = match whole {
            Some(all) => all,
            None => {
                // `done_bytes` is within the budget, so within u32.
                let all = Uint8Array::new_with_length(done_bytes as u32);
                let mut at = 0u32;
                for c in chunks.iter() {
                    let c: Uint8Array = c.unchecked_into();
                    all.set(&c, at);
                    at += c.length();
                }
                all
            }
        };
        drop(chunks);
        if let Some(cache) = &cache {
            let init = ResponseInit::new();
            init.set_status(200);
            if let Ok(h) = Headers::new() {
                let _ = h.set(SIZE_HEADER, &done_bytes.to_string());
                init.set_headers(&h);
            }
            if let Ok(r) = streamed_response(&all, &init) {
                // A full disk (quota) only costs the next reload a download.
                let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
            }
        }
        Ok(Some(all))
    }

    /// The WebGPU device to load on, or why not: `Ok((None, reason))` runs on the CPU (reason
    /// is None when the CPU was chosen); an error when WebGPU was required and is missing.
    async fn webgpu(&self, backend: BackendChoice) -> Res<(Option<Gpu>, Option<String>)> {
        if backend == BackendChoice::Cpu {
            return Ok((None, None));
        }
        let has_api = Reflect::get(&self.scope.navigator(), &"gpu".into()).map(|g| !g.is_undefined()).unwrap_or(false);
        let result = if has_api {
            Gpu::new().await.map_err(|e| match e {
                rewardlens_gpu::GpuError::NoAdapter(_) => "this browser offers no WebGPU adapter".to_owned(),
                other => format!("WebGPU gave no device ({other})"),
            })
        } else {
            Err("this browser has no WebGPU (navigator.gpu is missing)".to_owned())
        };
        match (result, backend) {
            (Ok(gpu), _) => Ok((Some(gpu), None)),
            (Err(reason), BackendChoice::WebGpu) => {
                Err(UserError::new("webgpu", format!("{reason}; choose WASM CPU or auto")))
            }
            (Err(reason), _) => Ok((None, Some(reason))),
        }
    }

    /// Builds the GPU model (and waits until the device holds it), or in auto mode says why the
    /// CPU takes over.
    async fn load_on_gpu(
        &self,
        gpu: Gpu,
        config: ModelConfig,
        inputs: InputEncoder,
        weights: &dyn rewardlens_models::weights::WeightSource,
        format: WeightFormat,
        backend: BackendChoice,
    ) -> Res<Result<Scorer, String>> {
        let loaded = match GpuRewardModel::load(gpu, config, weights, format) {
            Ok(model) => model.gpu().check().await.map(|_| model),
            Err(e) => Err(e),
        };
        match loaded {
            Ok(model) => Ok(Ok(Scorer::WebGpu { inputs, model })),
            Err(e) if backend == BackendChoice::Auto => Ok(Err(format!("WebGPU could not hold the model ({e})"))),
            Err(e) => Err(UserError::new("webgpu", format!("WebGPU could not hold the model: {e}"))),
        }
    }

    /// A model loaded on WebGPU, described (from a checkpoint or a GGUF alike).
    fn gpu_loaded(
        &self,
        scorer: Scorer,
        config: &ModelConfig,
        source: &ModelSource,
        storage: String,
        started: f64,
        stats: (u64, u64),
    ) -> Loaded {
        let Scorer::WebGpu { model, .. } = &scorer else { unreachable!("a GPU scorer") };
        let info = LocalInfo {
            source,
            config,
            storage,
            estimated_bytes: model.weight_bytes(),
            load_ms: self.now() - started,
            stats,
            gpu_fallback_reason: None,
        }
        .describe(&scorer);
        Loaded { scorer, info }
    }

    #[allow(clippy::too_many_arguments)]
    async fn load(
        &self,
        id: u64,
        source: &ModelSource,
        choice: StorageChoice,
        backend: BackendChoice,
        auth: Auth<'_>,
        files: Vec<File>,
    ) -> Res<Loaded> {
        let started = self.now();
        let mut stats = (0u64, 0u64);
        // Known first: whether the CPU must hold a GGUF decides how large a download may be.
        let (gpu, gpu_reason) = self.webgpu(backend).await?;
        let gguf_cap = if gpu.is_none() { WASM32_MEMORY_LIMIT - RESERVE } else { FILE_CAP };
        let mut picked = std::collections::HashMap::new();
        for f in &files {
            if is_gguf_name(&f.name()) {
                DownloadBudget::new(&f.name(), gguf_cap).declared(Some(f.size() as u64))?;
            }
            let buf = JsFuture::from(f.array_buffer())
                .await
                .map_err(|e| UserError::new("file", format!("cannot read {}: {}", f.name(), js_text(&e))))?;
            picked.insert(f.name(), Uint8Array::new(&buf));
        }
        // Either one GGUF, or a checkpoint folder's files.
        let gguf: Option<(String, Uint8Array)> = match source {
            ModelSource::Files { .. } => {
                picked.iter().find(|(n, _)| is_gguf_name(n)).map(|(n, b)| (n.clone(), b.clone()))
            }
            _ => {
                let base = source.base_url(auth.hub).expect("URL sources have one");
                if is_gguf_name(&base) {
                    let name = base.rsplit('/').next().unwrap_or("model.gguf").to_owned();
                    let b = self.fetch(id, &base, &name, auth, false, gguf_cap, &mut stats).await?.expect("required");
                    Some((name, b))
                } else {
                    None
                }
            }
        };
        if let Some((name, bytes)) = gguf {
            return self.load_gguf(id, source, &name, bytes, started, stats, (gpu, gpu_reason), backend).await;
        }

        // A safetensors checkpoint: small files first, so a bad config or a model too big
        // for the tab is refused before the weights are downloaded.
        let base = source.base_url(auth.hub);
        let get = async |name: &str, optional: bool, cap: u64, stats: &mut (u64, u64)| -> Res<Option<Uint8Array>> {
            match &base {
                Some(b) => self.fetch(id, &format!("{b}{name}"), name, auth, optional, cap, stats).await,
                None => match picked.get(name) {
                    Some(v) => Ok(Some(v.clone())),
                    None if optional => Ok(None),
                    None => Err(UserError::new(
                        "missing_files",
                        format!(
                            "{name} is missing: pick a GGUF file, or a checkpoint's config.json, tokenizer.json, \
                             tokenizer_config.json and .safetensors file(s) together"
                        ),
                    )),
                },
            }
        };
        let text = |b: Uint8Array, name: &str| -> Res<String> {
            String::from_utf8(b.to_vec()).map_err(|_| UserError::new("corrupted", format!("{name} is not UTF-8 text")))
        };
        let config_json =
            text(get(files::CONFIG, false, TEXT_FILE_CAP, &mut stats).await?.expect("required"), files::CONFIG)?;
        let config = ModelConfig::from_json(&config_json).map_err(model_error)?;
        let (mut gpu, mut gpu_reason) = (gpu, gpu_reason);
        // On the GPU only one tensor at a time passes through wasm memory; the CPU engine must
        // hold them all, so its size check waits until the CPU is certain to be used.
        let cpu_storage = if gpu.is_none() { Some(choose_storage(&config, choice)?) } else { None };
        self.check_cancel(id)?;
        let tokenizer_config = text(
            get(files::TOKENIZER_CONFIG, false, TEXT_FILE_CAP, &mut stats).await?.expect("required"),
            files::TOKENIZER_CONFIG,
        )?;
        let tokenizer = get(files::TOKENIZER, false, TOKENIZER_CAP, &mut stats).await?.expect("required").to_vec();
        let template = match get(files::CHAT_TEMPLATE, true, TEXT_FILE_CAP, &mut stats).await? {
            Some(b) => Some(text(b, files::CHAT_TEMPLATE)?),
            None => None,
        };
        let shard_names = match get(files::WEIGHTS_INDEX, true, TEXT_FILE_CAP, &mut stats).await? {
            Some(index) => files::shard_names(&text(index, files::WEIGHTS_INDEX)?).map_err(model_error)?,
            None if base.is_none() => {
                let mut names: Vec<String> = picked.keys().filter(|n| n.ends_with(".safetensors")).cloned().collect();
                names.sort();
                if names.is_empty() {
                    return Err(UserError::new("missing_files", "no .safetensors file among the picked files"));
                }
                names
            }
            None => vec![files::SINGLE_WEIGHTS.to_owned()],
        };
        // The shards may hold no more than config.json's parameters can need, in all.
        let counted = rewardlens_models::memory::ParameterCount::of(&config);
        let (parameters, cap) = (counted.total(), weights_cap(counted.total(), counted.embedding));
        if shard_names.len() > max_shards(config.num_hidden_layers) {
            return Err(UserError::new(
                "corrupted",
                format!(
                    "{} lists {} weight shards, more than a {}-layer model can have ({} at most)",
                    files::WEIGHTS_INDEX,
                    shard_names.len(),
                    config.num_hidden_layers,
                    max_shards(config.num_hidden_layers)
                ),
            ));
        }
        let mut left = cap;
        let mut shards: Vec<(String, Box<dyn ByteSource>)> = Vec::new();
        let mut shard_arrays: Vec<(String, Uint8Array)> = Vec::new();
        for name in &shard_names {
            self.check_cancel(id)?;
            let bytes = get(name, false, left, &mut stats).await?.expect("required");
            let n = bytes.length() as u64;
            if n > left {
                return Err(UserError::new(
                    "too_large",
                    format!(
                        "the weight files hold more than the {cap} bytes a model with {parameters} parameters \
                         (config.json) can need"
                    ),
                ));
            }
            left -= n;
            shard_arrays.push((name.clone(), bytes.clone()));
            shards.push((name.clone(), Box::new(JsBytes(bytes))));
        }
        self.post(&FromWorker::Progress { id, stage: "building the model".into(), done: 0, total: None, rate: 0.0 });
        self.yield_now().await;
        let weights = StreamedSafetensors::new(shards).map_err(model_error)?;
        let text = CheckpointText {
            config_json: &config_json,
            tokenizer_json: &tokenizer,
            tokenizer_config_json: &tokenizer_config,
            chat_template_jinja: template.as_deref(),
        };
        if let Some(g) = gpu.take() {
            let (cfg, inputs) = InputEncoder::from_checkpoint(&text).map_err(model_error)?;
            let format = gpu_format(choice);
            match self.load_on_gpu(g, cfg, inputs, &weights, format, backend).await? {
                Ok(scorer) => {
                    let storage = format!("{} on the GPU", format.name());
                    return Ok(self.gpu_loaded(scorer, &config, source, storage, started, stats));
                }
                Err(reason) => gpu_reason = Some(reason),
            }
        }
        let (storage, estimate) = match cpu_storage {
            Some(s) => s,
            None => choose_storage(&config, choice)?,
        };
        let quantize = match storage {
            WeightStorage::F32 => None,
            WeightStorage::Quantized(q) => Some(q),
        };
        let storage_text = match storage {
            WeightStorage::F32 => "f32".into(),
            WeightStorage::Quantized(q) => format!("{} (quantized on load)", q.name()),
        };
        let n = self.pipeline_width(estimate.total(), config.num_hidden_layers);
        if n > 1 {
            let (cfg, inputs) = InputEncoder::from_checkpoint(&text).map_err(model_error)?;
            let sources: Vec<JsBytes> = shard_arrays.iter().map(|(_, a)| JsBytes(a.clone())).collect();
            let refs: Vec<&dyn ByteSource> = sources.iter().map(|s| s as &dyn ByteSource).collect();
            let shard_list: Vec<(String, u64)> =
                shard_arrays.iter().map(|(name, a)| (name.clone(), a.length() as u64)).collect();
            let mut inits = Vec::new();
            let layer_ranges = rewardlens_models::pipeline::stage_layers(cfg.num_hidden_layers, n);
            for (i, layers) in layer_ranges.iter().enumerate() {
                let per_shard = rewardlens_models::pipeline::stage_byte_ranges_safetensors(&refs, &cfg, layers.clone())
                    .map_err(model_error)?;
                let pieces: Vec<_> =
                    per_shard.iter().enumerate().flat_map(|(f, ranges)| crate::stage::pieces_of(f, ranges)).collect();
                inits.push(crate::pipeline::StageMsg::Init {
                    index: i,
                    stages: layer_ranges.len(),
                    layers: layers.clone(),
                    gguf: false,
                    shards: shard_list.clone(),
                    pieces,
                    config_json: Some(config_json.clone()),
                    quantize: quantize.map(|q| q.name().to_owned()),
                    trap: self.pipe.get().crash_stage == Some(i),
                });
            }
            let files = shard_arrays.iter().map(|(_, a)| a.clone()).collect();
            drop((weights, sources, shard_arrays));
            let plans = crate::stage::StagePlan { inits, files };
            let scorer = self.spawn_pipeline(id, cfg, inputs, plans).await?;
            let info = LocalInfo {
                source,
                config: &config,
                storage: storage_text.clone(),
                estimated_bytes: estimate.total(),
                load_ms: self.now() - started,
                stats,
                gpu_fallback_reason: gpu_reason,
            }
            .describe(&scorer);
            return Ok(Loaded { scorer, info });
        }
        let model = RewardModel::from_checkpoint(&text, &weights, quantize, &Device::Cpu).map_err(model_error)?;
        let scorer = Scorer::Local(model);
        let info = LocalInfo {
            source,
            config: &config,
            storage: storage_text,
            estimated_bytes: estimate.total(),
            load_ms: self.now() - started,
            stats,
            gpu_fallback_reason: gpu_reason,
        }
        .describe(&scorer);
        Ok(Loaded { scorer, info })
    }

    #[allow(clippy::too_many_arguments)]
    async fn load_gguf(
        &self,
        id: u64,
        source: &ModelSource,
        name: &str,
        bytes: Uint8Array,
        started: f64,
        stats: (u64, u64),
        (gpu, mut gpu_reason): (Option<Gpu>, Option<String>),
        backend: BackendChoice,
    ) -> Res<Loaded> {
        let len = bytes.length() as u64;
        // GGUF tensors are copied into wasm memory as they are: the file size is the weights.
        if gpu.is_none() && len + RESERVE > WASM32_MEMORY_LIMIT {
            return Err(too_large(name, len + RESERVE));
        }
        self.post(&FromWorker::Progress { id, stage: "building the model".into(), done: 0, total: None, rate: 0.0 });
        self.yield_now().await;
        let parse = |bytes: Uint8Array| {
            GgufFile::parse(Box::new(JsBytes(bytes)))
                .map_err(|e| UserError::new("corrupted", format!("{name} is not a valid GGUF file: {e}")))
        };
        // A handle to the same JS bytes, to parse again for the CPU if the GPU refuses the model.
        let file = parse(bytes.clone())?;
        let config = quantized::gguf_config(&file).map_err(model_error)?;
        let types: std::collections::BTreeSet<String> =
            file.tensors.values().map(|t| format!("{:?}", t.dtype).to_lowercase()).collect();
        let types_text = types.iter().cloned().collect::<Vec<_>>().join(", ");
        if let Some(g) = gpu {
            // The GPU keeps a GGUF's precision class: 4-bit files as Q4_0, 8-bit as Q8_0, else f16.
            let format = if types.iter().any(|t| t.starts_with("q4")) {
                WeightFormat::Q4_0
            } else if types.iter().any(|t| t.starts_with("q8") || t.starts_with("q5") || t.starts_with("q6")) {
                WeightFormat::Q8_0
            } else {
                WeightFormat::F16
            };
            let (cfg, inputs) = InputEncoder::from_gguf(&file, None).map_err(model_error)?;
            let weights = quantized::GgufWeights::new(file, cfg.clone());
            match self.load_on_gpu(g, cfg, inputs, &weights, format, backend).await? {
                Ok(scorer) => {
                    let storage = format!("GGUF ({types_text}) as {} on the GPU", format.name());
                    return Ok(self.gpu_loaded(scorer, &config, source, storage, started, stats));
                }
                Err(reason) => {
                    if len + RESERVE > WASM32_MEMORY_LIMIT {
                        return Err(too_large(name, len + RESERVE));
                    }
                    gpu_reason = Some(reason);
                    let file = parse(bytes.clone())?;
                    if let Some(l) =
                        self.gguf_pipeline(id, &file, &bytes, source, started, stats, &gpu_reason, &types_text).await?
                    {
                        return Ok(l);
                    }
                    return self.load_gguf_cpu(file, source, len, started, stats, gpu_reason, types_text);
                }
            }
        }
        if let Some(l) = self.gguf_pipeline(id, &file, &bytes, source, started, stats, &gpu_reason, &types_text).await?
        {
            return Ok(l);
        }
        self.load_gguf_cpu(file, source, len, started, stats, gpu_reason, types_text)
    }

    /// How many pipeline workers to run for a model of `bytes` in memory and `layers` layers
    /// (1: the single engine).
    fn pipeline_width(&self, bytes: u64, layers: usize) -> usize {
        let nav = self.scope.navigator();
        let cores = nav.hardware_concurrency() as usize;
        // `navigator.deviceMemory` (GiB, Chromium only) where the browser tells it.
        let memory = Reflect::get(&nav, &"deviceMemory".into())
            .ok()
            .and_then(|m| m.as_f64())
            .map(|gib| (gib * (1u64 << 30) as f64) as u64);
        crate::pipeline::worker_count(self.pipe.get().workers, cores, memory, bytes, layers)
    }

    /// A GGUF on the CPU pipeline when more than one worker is to run; None: the single engine.
    #[allow(clippy::too_many_arguments)]
    async fn gguf_pipeline(
        &self,
        id: u64,
        file: &GgufFile,
        bytes: &Uint8Array,
        source: &ModelSource,
        started: f64,
        stats: (u64, u64),
        gpu_reason: &Option<String>,
        types_text: &str,
    ) -> Res<Option<Loaded>> {
        let len = bytes.length() as u64;
        let config = quantized::gguf_config(file).map_err(model_error)?;
        let estimate = MemoryEstimate::new(&config, WeightStorage::F32, PLANNED_TOKENS);
        let n = self.pipeline_width(len + estimate.activations, config.num_hidden_layers);
        if n <= 1 {
            return Ok(None);
        }
        let (cfg, inputs) = InputEncoder::from_gguf(file, None).map_err(model_error)?;
        let layer_ranges = rewardlens_models::pipeline::stage_layers(cfg.num_hidden_layers, n);
        let mut inits = Vec::new();
        for (i, layers) in layer_ranges.iter().enumerate() {
            let ranges =
                rewardlens_models::pipeline::stage_byte_ranges_gguf(file, &cfg, layers.clone()).map_err(model_error)?;
            inits.push(crate::pipeline::StageMsg::Init {
                index: i,
                stages: layer_ranges.len(),
                layers: layers.clone(),
                gguf: true,
                shards: vec![("model.gguf".into(), len)],
                pieces: crate::stage::pieces_of(0, &ranges),
                config_json: None,
                quantize: None,
                trap: self.pipe.get().crash_stage == Some(i),
            });
        }
        let plans = crate::stage::StagePlan { inits, files: vec![bytes.clone()] };
        let scorer = self.spawn_pipeline(id, cfg, inputs, plans).await?;
        let info = gguf_info(source, &config, types_text, len, self.now() - started, stats, gpu_reason.clone())
            .describe(&scorer);
        Ok(Some(Loaded { scorer, info }))
    }

    /// Starts the stage workers of `plans` and wraps them as a scorer.
    async fn spawn_pipeline(
        &self,
        id: u64,
        config: ModelConfig,
        inputs: InputEncoder,
        plans: crate::stage::StagePlan,
    ) -> Res<Scorer> {
        let stage = format!("starting {} engine workers", plans.inits.len());
        self.post(&FromWorker::Progress { id, stage, done: 0, total: None, rate: 0.0 });
        let chunk = self.pipe.get().chunk_tokens.unwrap_or(crate::pipeline::DEFAULT_CHUNK_TOKENS);
        let pipeline = crate::stage::Pipeline::spawn(&self.scope, plans, chunk).await?;
        Ok(Scorer::Pipeline { inputs, config, pipeline })
    }

    /// The head at every position of each row on the pipeline, polling `id`'s cancel flag.
    async fn pipeline_positions(
        &self,
        id: u64,
        pipeline: &crate::stage::Pipeline,
        rows: &[&[u32]],
        groups: &[std::ops::Range<usize>],
    ) -> Res<Vec<Vec<Vec<f32>>>> {
        let check = || {
            if self.cancelled.borrow().contains(&id) {
                self.check_cancel(id)
            } else {
                Ok(())
            }
        };
        pipeline.run(rows, groups, &check).await
    }

    #[allow(clippy::too_many_arguments)]
    fn load_gguf_cpu(
        &self,
        file: GgufFile,
        source: &ModelSource,
        len: u64,
        started: f64,
        stats: (u64, u64),
        gpu_reason: Option<String>,
        types_text: String,
    ) -> Res<Loaded> {
        let config = quantized::gguf_config(&file).map_err(model_error)?;
        let model = RewardModel::from_gguf(file, None, &Device::Cpu).map_err(model_error)?;
        let scorer = Scorer::Local(model);
        let info =
            gguf_info(source, &config, &types_text, len, self.now() - started, stats, gpu_reason).describe(&scorer);
        Ok(Loaded { scorer, info })
    }

    async fn score(&self, id: u64, job: ScoreJob, truncate: bool, steps: Option<&StepRequest>) -> Res<ScoreOutput> {
        let loaded =
            self.model.borrow().clone().ok_or_else(|| UserError::new("no_model", "load a model before scoring"))?;
        let policy = LengthPolicy { max_tokens: None, truncate };
        match job {
            ScoreJob::Responses { prompt, responses } => {
                if responses.is_empty() {
                    return Err(UserError::new("no_input", "add at least one response"));
                }
                let convs: Vec<Vec<Message>> = responses.iter().map(|r| prompt_response(&prompt, r)).collect();
                let mut results = self.score_sequences(id, &loaded, &convs, policy, true).await?;
                if let Some(req) = steps {
                    self.add_step_details(id, &loaded, &convs, &mut results, req, &policy).await?;
                }
                Ok(ScoreOutput::Sequences { labels: self.labels(&loaded, &results), results })
            }
            ScoreJob::Conversation { messages } => {
                if messages.is_empty() {
                    return Err(UserError::new("no_input", "the conversation has no messages"));
                }
                let convs = [messages];
                let mut results = self.score_sequences(id, &loaded, &convs, policy, true).await?;
                if let Some(req) = steps {
                    self.add_step_details(id, &loaded, &convs, &mut results, req, &policy).await?;
                }
                Ok(ScoreOutput::Sequences { labels: self.labels(&loaded, &results), results })
            }
            ScoreJob::Jsonl { text } => self.score_jsonl(id, &loaded, &text, policy).await,
        }
    }

    /// Adds step rewards and token scores to each result; a sequence whose steps cannot be
    /// scored gets `step_error` instead (its score stays).
    async fn add_step_details(
        &self,
        id: u64,
        loaded: &Loaded,
        convs: &[Vec<Message>],
        results: &mut [SequenceResult],
        req: &StepRequest,
        policy: &LengthPolicy,
    ) -> Res<()> {
        for (i, (conv, r)) in convs.iter().zip(results.iter_mut()).enumerate() {
            self.post(&FromWorker::Progress {
                id,
                stage: "step rewards".into(),
                done: i as u64,
                total: Some(convs.len() as u64),
                rate: 0.0,
            });
            match self.step_details(loaded, conv, req, policy).await {
                Ok((steps, tokens, token_error)) => {
                    r.steps = steps;
                    r.token_scores = tokens;
                    r.step_error = token_error;
                }
                Err(e) if e.code == "remote" => return Err(e),
                Err(e) => r.step_error = Some(e.message),
            }
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(())
    }

    /// The head at every position of `ids`, on whichever engine holds the model.
    async fn positions(&self, loaded: &Loaded, ids: &[u32]) -> Res<Vec<Vec<f32>>> {
        match &loaded.scorer {
            Scorer::Local(model) => model.forward_positions(ids).map_err(model_error),
            Scorer::WebGpu { model, .. } => model.forward_positions(ids).await.map_err(gpu_error),
            Scorer::Pipeline { pipeline, .. } => {
                let mut rows =
                    self.pipeline_positions(u64::MAX, pipeline, &[ids], std::slice::from_ref(&(0..1))).await?;
                Ok(rows.pop().unwrap_or_default())
            }
            Scorer::Remote { .. } => Err(UserError::new("remote", "step rewards need the model in this browser")),
        }
    }

    /// Step rewards of `conv`'s answer, and with `req.tokens` the answer's token scores; a
    /// failure of the token heatmap alone keeps the steps (and says why in the third value).
    async fn step_details(
        &self,
        loaded: &Loaded,
        conv: &[Message],
        req: &StepRequest,
        policy: &LengthPolicy,
    ) -> Res<(Option<StepView>, Option<Vec<TokenScore>>, Option<String>)> {
        let (inputs, config) = match &loaded.scorer {
            Scorer::Local(model) => (model.inputs(), model.config()),
            Scorer::WebGpu { inputs, model } => (inputs, model.config()),
            Scorer::Pipeline { inputs, config, .. } => (inputs, config),
            Scorer::Remote { .. } => {
                return Err(UserError::new(
                    "remote",
                    "step rewards need the model in this browser, not a remote endpoint",
                ))
            }
        };
        let bad = |e: rewardlens_core::CoreError| UserError::new("steps", e.to_string());
        let convention = match &req.convention {
            Some(name) => StepConvention::parse(name).map_err(model_error)?,
            None => StepConvention::of_architecture(config).unwrap_or(StepConvention::Prefix),
        };
        convention.check(config).map_err(model_error)?;
        let (_, answer) = problem_and_answer(conv).map_err(model_error)?;
        let steps = req.split.split(&answer).map_err(bad)?;
        let input = inputs.encode_steps(&convention, conv, &steps, policy).map_err(model_error)?;
        let rows = self.positions(loaded, &input.ids).await?;
        let view = StepView {
            convention: convention.name().into(),
            scores: convention.rewards(&rows, &input.positions),
            steps,
        };
        if !req.tokens {
            return Ok((Some(view), None, None));
        }
        // Token scores read the head the way the model's convention does (raw for prefix).
        let declared = StepConvention::of_architecture(config).or(req.convention.as_ref().map(|_| convention.clone()));
        let reading = declared.filter(|c| *c != StepConvention::Prefix);
        match self.token_details(loaded, inputs, conv, &answer, reading.as_ref()).await {
            Ok(tokens) => Ok((Some(view), Some(tokens), None)),
            Err(e) => Ok((Some(view), None, Some(format!("no token heatmap: {}", e.message)))),
        }
    }

    /// The answer's tokens in the conversation as scored, found by their offsets, each with the
    /// head's reward there.
    async fn token_details(
        &self,
        loaded: &Loaded,
        inputs: &InputEncoder,
        conv: &[Message],
        answer: &str,
        reading: Option<&StepConvention>,
    ) -> Res<Vec<TokenScore>> {
        let bad = |e: rewardlens_core::CoreError| UserError::new("steps", e.to_string());
        let text = inputs.render(conv).map_err(model_error)?;
        let start = text.rfind(answer).filter(|_| !answer.is_empty()).ok_or_else(|| {
            UserError::new("steps", "the chat template rewrites the answer, so its tokens cannot be located")
        })?;
        let (ids, offsets) = inputs.text_encoder().encode_with_offsets(&text).map_err(bad)?;
        let rows = self.positions(loaded, &ids).await?;
        let values = token_rewards(reading, &rows);
        let texts = inputs.text_encoder().token_texts(&ids);
        Ok(offsets
            .iter()
            .zip(texts.into_iter().zip(values))
            .filter(|(o, _)| o.0 >= start && o.0 < start + answer.len())
            .map(|(_, (text, score))| TokenScore { text, score })
            .collect())
    }

    /// Label names: the model's, or for a remote endpoint what it named (else LABEL_i).
    fn labels(&self, loaded: &Loaded, results: &[SequenceResult]) -> Vec<String> {
        if !loaded.info.labels.is_empty() {
            return loaded.info.labels.clone();
        }
        let n = results.first().map_or(1, |r| r.logits.len());
        (0..n).map(|i| format!("LABEL_{i}")).collect()
    }

    /// Times `iters` passes (after a warm-up) per length over `batch` sequences of `bench_ids`;
    /// several sequences share their first three quarters (one prompt, several answers), as the
    /// native `rewardlens bench --shared` does.
    async fn bench(&self, id: u64, lengths: &[usize], iters: usize, batch: usize) -> Res<Vec<BenchRow>> {
        let loaded = self
            .model
            .borrow()
            .clone()
            .ok_or_else(|| UserError::new("no_model", "load a model before benchmarking"))?;
        let vocab = match &loaded.scorer {
            Scorer::Local(model) => model.config().vocab_size,
            Scorer::WebGpu { model, .. } => model.config().vocab_size,
            Scorer::Pipeline { config, .. } => config.vocab_size,
            Scorer::Remote { .. } => {
                return Err(UserError::new(
                    "remote",
                    "the benchmark measures the engine in this browser, not a remote endpoint",
                ))
            }
        };
        let mut rows = Vec::new();
        for (n, &len) in lengths.iter().enumerate() {
            let batch = batch.max(1);
            let shared = if batch > 1 { len * 3 / 4 } else { 0 };
            let seqs: Vec<Vec<u32>> =
                (0..batch).map(|r| rewardlens_models::synthetic::bench_ids_shared(len, r, vocab, shared)).collect();
            let rows_in: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let mut times = Vec::new();
            let mut profile = Vec::new();
            let mut first_scores_at_ms = 0.0;
            for i in 0..=iters.max(1) {
                let t0 = self.now();
                match &loaded.scorer {
                    // The last pass also records where the time goes, per kind of op.
                    Scorer::Local(model) if i == iters.max(1) => {
                        let (r, p) = rewardlens_models::profile::record(performance_now, || {
                            model.forward_padded(&rows_in, rewardlens_models::Padding::Right)
                        });
                        r.map_err(model_error)?;
                        profile = p.rows();
                    }
                    Scorer::Local(model) => {
                        model.forward_padded(&rows_in, rewardlens_models::Padding::Right).map_err(model_error)?;
                    }
                    Scorer::WebGpu { model, .. } => {
                        model.forward(&rows_in).await.map_err(gpu_error)?;
                    }
                    // All rows back to back through the stages, one shared-prompt group.
                    Scorer::Pipeline { pipeline, .. } => {
                        // One group: every row continues the same shared prompt.
                        let all = 0..rows_in.len();
                        let groups = vec![all];
                        self.pipeline_positions(id, pipeline, &rows_in, &groups).await?;
                    }
                    Scorer::Remote { .. } => unreachable!("refused above"),
                }
                if i > 0 {
                    times.push(self.now() - t0);
                } else {
                    first_scores_at_ms = js_sys::Date::now();
                }
                self.post(&FromWorker::Progress {
                    id,
                    stage: format!("benchmark {len} tokens"),
                    done: n as u64,
                    total: Some(lengths.len() as u64),
                    rate: 0.0,
                });
                self.yield_now().await;
                self.check_cancel(id)?;
            }
            times.sort_by(f64::total_cmp);
            let median_ms = times[times.len() / 2];
            rows.push(BenchRow {
                tokens: len,
                batch,
                workers: match &loaded.scorer {
                    Scorer::Pipeline { pipeline, .. } => pipeline.stages(),
                    _ => 1,
                },
                median_ms,
                tokens_per_s: (len * batch) as f64 / (median_ms / 1000.0),
                profile,
                first_scores_at_ms,
            });
        }
        Ok(rows)
    }

    /// Scores conversations, in order: here one at a time (yielding between them, so the job
    /// can be cancelled), or remotely in batches.
    async fn score_sequences(
        &self,
        id: u64,
        loaded: &Loaded,
        convs: &[Vec<Message>],
        policy: LengthPolicy,
        progress: bool,
    ) -> Res<Vec<SequenceResult>> {
        let mut out = Vec::with_capacity(convs.len());
        let started = self.now();
        // On the CPU, consecutive inputs sharing a prompt form one group (scored as one batch);
        // elsewhere fixed-size batches.
        let (encoded, groups): (Vec<EncodedInput>, Vec<std::ops::Range<usize>>) = match &loaded.scorer {
            Scorer::Local(model) => {
                let enc = convs
                    .iter()
                    .map(|c| model.encode(c, &policy))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(model_error)?;
                let rows: Vec<&[u32]> = enc.iter().map(|e| e.ids.as_slice()).collect();
                let groups = shared_prompt_runs(&rows, model.prefix_reuse(), CPU_SHARED_BATCH);
                (enc, groups)
            }
            Scorer::WebGpu { .. } => (vec![], fixed_groups(convs.len(), GPU_BATCH)),
            Scorer::Remote { client, .. } => (vec![], fixed_groups(convs.len(), client.config().batch_size)),
            Scorer::Pipeline { inputs, config, pipeline } => {
                // Every input goes down the pipeline back to back (its stages stay busy), the
                // responses to one prompt continuing one prompt pass.
                let enc = convs
                    .iter()
                    .map(|c| inputs.encode(c, &policy))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(model_error)?;
                let rows: Vec<&[u32]> = enc.iter().map(|e| e.ids.as_slice()).collect();
                let groups =
                    shared_prompt_runs(&rows, Some(rewardlens_models::plan::MIN_SHARED_PREFIX), PIPELINE_SHARED_BATCH);
                let t0 = self.now();
                let positions = self.pipeline_positions(id, pipeline, &rows, &groups).await?;
                let ms = (self.now() - t0) / convs.len().max(1) as f64;
                for (e, p) in enc.iter().zip(positions) {
                    let head = rewardlens_models::pipeline::head_output(config, &e.ids, p).map_err(model_error)?;
                    out.push(sequence_result(ConversationScore::from_head(head, e), ms));
                }
                if progress {
                    let rate = self.per_second(out.len() as f64, started);
                    let (done, total) = (out.len() as u64, Some(convs.len() as u64));
                    self.post(&FromWorker::Progress { id, stage: "scoring".into(), done, total, rate });
                }
                return Ok(out);
            }
        };
        for range in groups {
            let chunk = &convs[range.clone()];
            let t0 = self.now();
            match &loaded.scorer {
                Scorer::Pipeline { .. } => unreachable!("scored above"),
                Scorer::Local(model) => {
                    let scores = model.score_encoded(&encoded[range.clone()], chunk.len()).map_err(model_error)?;
                    let ms = (self.now() - t0) / chunk.len() as f64;
                    out.extend(scores.into_iter().map(|s| sequence_result(s, ms)));
                }
                Scorer::WebGpu { inputs, model } => {
                    let encoded = chunk
                        .iter()
                        .map(|c| inputs.encode(c, &policy))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(model_error)?;
                    let rows: Vec<&[u32]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
                    let heads = model.forward(&rows).await.map_err(gpu_error)?;
                    let ms = (self.now() - t0) / chunk.len() as f64;
                    out.extend(
                        heads
                            .into_iter()
                            .zip(&encoded)
                            .map(|(h, e)| sequence_result(ConversationScore::from_head(h, e), ms)),
                    );
                }
                Scorer::Remote { client, template } => {
                    let inputs = chunk
                        .iter()
                        .map(|c| RemoteInput::from_conversation(c, template.as_ref(), client.config().protocol))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| UserError::new(e.code(), e.to_string()))?;
                    let scores = client.score(&inputs).await.map_err(|e| UserError::new(e.code(), e.to_string()))?;
                    let ms = (self.now() - t0) / chunk.len() as f64;
                    out.extend(scores.into_iter().map(|s| SequenceResult {
                        score: s.score(),
                        logits: s.values,
                        tokens: 0,
                        truncated_tokens: 0,
                        ms,
                        steps: None,
                        token_scores: None,
                        step_error: None,
                    }));
                }
            }
            if progress {
                let rate = self.per_second(out.len() as f64, started);
                let (done, total) = (out.len() as u64, Some(convs.len() as u64));
                self.post(&FromWorker::Progress { id, stage: "scoring".into(), done, total, rate });
            }
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(out)
    }

    async fn score_jsonl(&self, id: u64, loaded: &Loaded, text: &str, policy: LengthPolicy) -> Res<ScoreOutput> {
        let lines: Vec<&str> = text.lines().collect();
        let (mut out, mut skipped, mut scored) = (String::new(), Vec::new(), 0);
        let started = self.now();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
                .map_err(|e| format!("not a JSON object: {e}"))
                .and_then(|obj| parse_record(&obj).map(|r| (obj, r)).map_err(|e| e.to_string()));
            match parsed {
                Ok((mut obj, record)) => {
                    let convs: Vec<Vec<Message>> = record.conversations().iter().map(|c| c.to_vec()).collect();
                    match self.score_sequences(id, loaded, &convs, policy, false).await {
                        Ok(results) => {
                            let labels = self.labels(loaded, &results);
                            let scores: Vec<ConversationScore> = results
                                .into_iter()
                                .map(|r| ConversationScore {
                                    logits: r.logits,
                                    token_logits: None,
                                    tokens: r.tokens,
                                    truncated_tokens: r.truncated_tokens,
                                })
                                .collect();
                            annotate(&mut obj, &record, &scores, &labels);
                            out.push_str(&serde_json::to_string(&obj).expect("JSON values serialize"));
                            out.push('\n');
                            scored += 1;
                        }
                        Err(e) if e.code == "cancelled" => return Err(e),
                        Err(e) => skipped.push(format!("line {}: {}", i + 1, e.message)),
                    }
                }
                Err(e) => skipped.push(format!("line {}: {e}", i + 1)),
            }
            let rate = self.per_second((i + 1) as f64, started);
            self.post(&FromWorker::Progress {
                id,
                stage: "scoring lines".into(),
                done: i as u64 + 1,
                total: Some(lines.len() as u64),
                rate,
            });
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(ScoreOutput::Jsonl { text: out, scored, skipped })
    }

    /// Scoring on a remote endpoint (chosen, or because the model cannot run here). Protocols
    /// that take rendered text use the model's chat template when its source has one.
    async fn load_remote(
        &self,
        id: u64,
        source: &ModelSource,
        r: &RemoteSettings,
        reason: Option<String>,
        auth: Auth<'_>,
    ) -> Res<Loaded> {
        let protocol = Protocol::parse_name(&r.protocol).map_err(|e| UserError::new("remote", e))?;
        let mut cfg = RemoteConfig::new(r.endpoint.trim(), protocol);
        cfg.model = Some(r.model.trim().to_owned()).filter(|m| !m.is_empty());
        cfg.api_key = Some(r.api_key.trim().to_owned()).filter(|k| !k.is_empty());
        cfg.timeout = std::time::Duration::from_secs(120);
        let client = RemoteScorer::new(cfg).map_err(|e| UserError::new("remote", e.to_string()))?;
        let template = if protocol.takes_chat() {
            None
        } else {
            let base = source.base_url(auth.hub).filter(|b| !is_gguf_name(b)).ok_or_else(|| {
                UserError::new(
                    "remote",
                    format!(
                        "the {} protocol takes text rendered with the model's chat template; choose a Hub repo or folder URL as the model, or the vllm/nim protocol",
                        protocol.name()
                    ),
                )
            })?;
            let mut stats = (0, 0);
            let cfg_text = self
                .fetch(
                    id,
                    &format!("{base}{}", files::TOKENIZER_CONFIG),
                    files::TOKENIZER_CONFIG,
                    auth,
                    false,
                    TEXT_FILE_CAP,
                    &mut stats,
                )
                .await?
                .expect("required");
            let jinja = self
                .fetch(
                    id,
                    &format!("{base}{}", files::CHAT_TEMPLATE),
                    files::CHAT_TEMPLATE,
                    auth,
                    true,
                    TEXT_FILE_CAP,
                    &mut stats,
                )
                .await?
                .map(|b| String::from_utf8_lossy(&b.to_vec()).into_owned());
            let text = String::from_utf8_lossy(&cfg_text.to_vec()).into_owned();
            Some(
                ChatTemplate::from_tokenizer_config(&text, jinja.as_deref())
                    .map_err(|e| UserError::new("bad_config", e.to_string()))?,
            )
        };
        let backend = format!("Remote ({} at {})", protocol.name(), client.url());
        Ok(Loaded {
            info: ModelInfo {
                source: source.label(),
                architecture: "remote".into(),
                labels: Vec::new(),
                parameters: 0,
                storage: "on the server".into(),
                estimated_bytes: 0,
                max_tokens: 0,
                load_ms: 0.0,
                downloaded_bytes: 0,
                cached_bytes: 0,
                backend,
                fallback_reason: reason,
                gpu_fallback_reason: None,
                step_convention: None,
                workers: 1,
                kernel: String::new(),
            },
            scorer: Scorer::Remote { client, template },
        })
    }
}

/// A response whose body is `bytes`, for the cache, without a second copy of them in this
/// worker's memory. `new Response(bytes)` copies the whole file into the JS heap, and in a
/// pipeline that copy is garbage no one collects while it matters: the coordinator allocates
/// nothing more (the stages grow their own heaps), so it stayed alive through every stage's
/// load, one file's worth of the N-worker page's peak. A stream's chunk is read by reference,
/// in pieces, by the cache's writer.
fn streamed_response(bytes: &Uint8Array, init: &ResponseInit) -> Result<Response, JsValue> {
    let chunk = bytes.clone();
    let start = Closure::once_into_js(move |controller: web_sys::ReadableStreamDefaultController| {
        // A non-byte stream: the chunk is enqueued as it is, not transferred (the caller keeps
        // `bytes` usable).
        let _ = controller.enqueue_with_chunk(&chunk);
        let _ = controller.close();
    });
    let source = js_sys::Object::new();
    Reflect::set(&source, &"start".into(), &start)?;
    let stream = web_sys::ReadableStream::new_with_underlying_source(&source)?;
    Response::new_with_opt_readable_stream_and_init(Some(&stream), init)
}

fn too_large(what: &str, need: u64) -> UserError {
    UserError::new(
        "too_large",
        format!(
            "{what} needs about {} of memory, more than the {} a browser tab's WebAssembly can address \
             (less {} kept for the program). Choose q4_k storage or a smaller model, or score it on a \
             server (rewardlens serve) when remote scoring is configured.",
            gib(need),
            gib(WASM32_MEMORY_LIMIT),
            gib(RESERVE)
        ),
    )
}

/// Picks how to hold the weights and checks that it fits, before any weight is downloaded.
fn choose_storage(config: &ModelConfig, choice: StorageChoice) -> Res<(WeightStorage, MemoryEstimate)> {
    let candidates: Vec<WeightStorage> = match choice {
        StorageChoice::Auto => rewardlens_models::memory::AUTO_CPU_STORAGE.to_vec(),
        StorageChoice::F32 => vec![WeightStorage::F32],
        StorageChoice::Q8_0 => vec![WeightStorage::Quantized(QuantType::Q8_0)],
        StorageChoice::Q4K => vec![WeightStorage::Quantized(QuantType::Q4K)],
    };
    pick_storage(config, &candidates, PLANNED_TOKENS, RESERVE).map_err(|last| {
        let what = format!("this model ({:.2}B parameters)", last.parameters as f64 / 1e9);
        too_large(&what, last.total() + RESERVE)
    })
}

/// Starts the worker: listens for `ToWorker` messages (JSON text in `msg`, picked files in
/// `files`) and says `Ready`.
pub fn start() {
    console_error_panic_hook::set_once();
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    // The same build also runs the CPU pipeline's stages (`stage.rs`), named by the coordinator.
    if scope.name().starts_with(crate::stage::STAGE_NAME_PREFIX) {
        return crate::stage::start(scope);
    }
    let engine = Rc::new(Engine {
        scope: scope.clone(),
        model: RefCell::new(None),
        cancelled: RefCell::default(),
        queue: RefCell::default(),
        running: std::cell::Cell::new(false),
        pipe: std::cell::Cell::new(PipeOpts::default()),
        last_load: RefCell::new(None),
    });
    let e = engine.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let data = ev.data();
        let text = Reflect::get(&data, &"msg".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
        let files: Vec<File> = Reflect::get(&data, &"files".into())
            .ok()
            .and_then(|f| f.dyn_into::<Array>().ok())
            .map(|a| a.iter().filter_map(|f| f.dyn_into::<File>().ok()).collect())
            .unwrap_or_default();
        match parse_request(&text) {
            // Cancellation is recorded at once; the running job sees it at its next yield.
            Ok(ToWorker::Cancel { id }) => {
                e.cancelled.borrow_mut().insert(id);
            }
            Ok(msg) => {
                e.queue.borrow_mut().push_back((msg, files));
                if !e.running.replace(true) {
                    spawn_local(e.clone().run_queue());
                }
            }
            Err((id, error)) => e.post(&FromWorker::Failed { id, error }),
        }
    });
    scope.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    engine.post(&FromWorker::Ready);
}

/// The int8 kernels' reference test in this build (`ToWorker::KernelSelfTest`).
/// `performance.now()` of this worker (sub-millisecond, unlike `Date.now()`), for the profile.
fn performance_now() -> f64 {
    let global = js_sys::global();
    Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| {
            let now: js_sys::Function = Reflect::get(&p, &"now".into()).ok()?.dyn_into().ok()?;
            now.call0(&p).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

fn kernel_self_test(id: u64) -> FromWorker {
    // The int8 kernels' reference check, run inside this build (simd128 or relaxed-simd).
    let (passed, summary) = match rewardlens_int8::self_test(js_sys::Date::now() as u64) {
        Ok(s) => (true, s),
        Err(e) => (false, e),
    };
    FromWorker::SelfTest { id, kernel: rewardlens_int8::kernel().name().into(), passed, summary }
}

/// Most responses to one prompt that continue one prompt pass on the pipeline.
const PIPELINE_SHARED_BATCH: usize = 16;

/// The results line's backend for a pipeline: the build and how many workers ran.
fn pipeline_backend(scorer: &Scorer) -> String {
    format!("{BACKEND}, {} workers", pipeline_stages(scorer))
}

fn pipeline_stages(scorer: &Scorer) -> usize {
    match scorer {
        Scorer::Pipeline { pipeline, .. } => pipeline.stages(),
        _ => 1,
    }
}

/// `0..n` in consecutive ranges of `size`.
fn fixed_groups(n: usize, size: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}
