//! The engine worker's state ([`Engine`]), its job queue and the dispatch of page messages;
//! [`start`] listens for them. Each job's outcome is posted once, in [`Engine::finish`], where a
//! [`WorkerError`] becomes the protocol's `UserError`.

use super::error::{Res, WorkerError};
use super::fetch::CACHE_NAME;
use super::scorer::Scorer;
use crate::protocol::*;
use js_sys::{Array, Promise, Reflect};
use rewardlens_models::prm::StepConvention;
use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent};

/// The pipeline settings of the last `Load` (`?workers=`, `?chunk=`, the crash test hook).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PipeOpts {
    pub workers: Option<usize>,
    pub chunk_tokens: Option<usize>,
    pub crash_stage: Option<usize>,
}

pub(super) struct Loaded {
    pub scorer: Scorer,
    pub info: ModelInfo,
}

/// Who may get the Hugging Face token: see `protocol::token_allowed`.
#[derive(Clone, Copy)]
pub(super) struct Auth<'a> {
    pub token: &'a str,
    pub hub: &'a str,
    pub hub_from_link: bool,
}

impl Auth<'_> {
    pub fn allowed(&self, url: &str) -> bool {
        token_allowed(url, self.hub, self.hub_from_link)
    }
}

pub(super) struct Engine {
    pub scope: DedicatedWorkerGlobalScope,
    pub model: RefCell<Option<Rc<Loaded>>>,
    pub cancelled: RefCell<HashSet<u64>>,
    /// Jobs run one at a time, in arrival order (a cache query must not overtake a clear).
    queue: RefCell<VecDeque<(ToWorker, Vec<File>)>>,
    running: Cell<bool>,
    pub pipe: Cell<PipeOpts>,
    /// The last load (without its crash hook), run again when a pipeline worker crashed.
    last_load: RefCell<Option<(ToWorker, Vec<File>)>>,
}

pub(super) fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| Reflect::get(v, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

impl Engine {
    pub fn post(&self, msg: &FromWorker) {
        let text = serde_json::to_string(msg).expect("messages serialize");
        let _ = self.scope.post_message(&JsValue::from_str(&text));
    }

    pub fn now(&self) -> f64 {
        js_sys::Date::now()
    }

    pub fn check_cancel(&self, id: u64) -> Res<()> {
        if self.cancelled.borrow_mut().remove(&id) {
            return Err(WorkerError::Cancelled);
        }
        Ok(())
    }

    /// `check_cancel` for jobs that poll while they wait (the pipeline): the flag is only
    /// consumed when it is set.
    pub fn cancel_poll(&self, id: u64) -> impl Fn() -> Res<()> + '_ {
        move || {
            if self.cancelled.borrow().contains(&id) {
                self.check_cancel(id)
            } else {
                Ok(())
            }
        }
    }

    /// Lets the event loop run (and deliver `Cancel`) between long synchronous steps.
    pub async fn yield_now(&self) {
        let scope = self.scope.clone();
        let p = Promise::new(&mut |resolve, _| {
            let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        });
        let _ = JsFuture::from(p).await;
    }

    /// Items (or bytes) per second since `started` (ms).
    pub fn per_second(&self, count: f64, started: f64) -> f64 {
        count / ((self.now() - started).max(1.0) / 1000.0)
    }

    /// The loaded model, or `NoModel` naming what needed it.
    pub fn loaded(&self, before: &'static str) -> Res<Rc<Loaded>> {
        self.model.borrow().clone().ok_or(WorkerError::NoModel(before))
    }

    /// Posts a job's outcome (its answer, `Cancelled`, or `Failed`) and forgets its cancel flag.
    fn finish(&self, id: u64, result: Res<FromWorker>) {
        match result {
            Ok(msg) => self.post(&msg),
            Err(WorkerError::Cancelled) => self.post(&FromWorker::Cancelled { id }),
            Err(error) => {
                if let WorkerError::WorkerCrashed(_) = error {
                    // The pipeline lost a stage: load the model again before the next job (its
                    // `Loaded` carries the old load's id, so the page keeps its model info).
                    *self.model.borrow_mut() = None;
                    if let Some(load) = self.last_load.borrow().clone() {
                        self.queue.borrow_mut().push_front(load);
                    }
                }
                self.post(&FromWorker::Failed { id, error: error.into() })
            }
        }
        self.cancelled.borrow_mut().remove(&id);
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
                let checked = source
                    .validate()
                    .and_then(|_| hub.as_deref().map_or(Ok(HUB.to_owned()), check_hub_url))
                    .map_err(WorkerError::BadSource);
                let hub = match checked {
                    Ok(hub) => hub,
                    Err(e) => return self.finish(id, Err(e)),
                };
                let auth = Auth { token: token.as_deref().unwrap_or(""), hub: &hub, hub_from_link };
                let remote = remote.filter(RemoteSettings::is_set);
                let result = match (&remote, remote_only) {
                    (Some(r), true) => self.load_remote(id, &source, r, None, auth).await,
                    _ => match self.load(id, &source, storage, backend, auth, files).await {
                        Err(e) if !matches!(e, WorkerError::Cancelled) && remote.is_some() => {
                            // The browser cannot hold or load it: score on the configured endpoint.
                            let r = remote.as_ref().expect("checked");
                            self.load_remote(id, &source, r, Some(e.to_string()), auth).await
                        }
                        other => other,
                    },
                };
                let result = result.map(|mut loaded| {
                    loaded.info.step_convention =
                        loaded.scorer.config().and_then(StepConvention::of_architecture).map(|c| c.name().to_owned());
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
                // The results line says what the GPU holds (WebGPU): weights and the peak.
                let memory = self.model.borrow().as_ref().and_then(|l| l.scorer.device_memory());
                let backend = match memory {
                    Some(m) => format!("{backend} · GPU memory: {m}"),
                    None => backend,
                };
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
        running: Cell::new(false),
        pipe: Cell::new(PipeOpts::default()),
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
fn kernel_self_test(id: u64) -> FromWorker {
    // The int8 kernels' reference check, run inside this build (simd128 or relaxed-simd).
    let (passed, summary) = match rewardlens_kernels::self_test(js_sys::Date::now() as u64) {
        Ok(s) => (true, s),
        Err(e) => (false, e),
    };
    FromWorker::SelfTest { id, kernel: rewardlens_kernels::kernel().name().into(), passed, summary }
}
