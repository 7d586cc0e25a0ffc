//! The page's handle on the engine worker: sends jobs, turns the worker's messages into
//! signal updates, and restarts the worker if it dies (out of memory traps the wasm instance)
//! or does not answer a cancel in time (stuck in one long synchronous step: a template render,
//! a forward pass), so Cancel always works.

use crate::export::Comparison;
use crate::protocol::*;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{File, MessageEvent, Worker};

/// Download or compute progress, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: String,
    pub done: u64,
    pub total: Option<u64>,
    pub rate: f64,
}

/// What the engine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Idle,
    Loading,
    Scoring,
}

impl Phase {
    pub fn key(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Idle => "idle",
            Phase::Loading => "loading",
            Phase::Scoring => "scoring",
        }
    }
}

/// A JSONL batch's result.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutput {
    pub text: String,
    pub scored: usize,
    pub skipped: Vec<String>,
    /// Accuracy, mean margin and rewards over the preference lines, as `rewardlens score` prints.
    pub preferences: Option<String>,
}

/// What a score request was about, kept to label its answer.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub prompt: String,
    pub responses: Vec<String>,
}

/// Signals the worker's messages update.
#[derive(Clone, Copy)]
pub struct EngineState {
    pub phase: RwSignal<Phase>,
    pub progress: RwSignal<Option<Progress>>,
    pub model: RwSignal<Option<ModelInfo>>,
    pub error: RwSignal<Option<UserError>>,
    pub notice: RwSignal<Option<String>>,
    pub results: RwSignal<Option<Comparison>>,
    pub batch: RwSignal<Option<BatchOutput>>,
    /// The scored rows of the last benchmark job (the Evaluate view counts them).
    pub benchmark: RwSignal<Option<Vec<rewardlens_eval::ScoredRow>>>,
    pub bench: RwSignal<Option<Vec<BenchRow>>>,
    pub cache: RwSignal<Option<(u64, u64)>>,
    /// Bumped whenever a model finishes loading (deep links score then).
    pub loads: RwSignal<u64>,
    /// The int8 kernels' reference test in the running worker build (`?selftest=1`).
    pub self_test: RwSignal<Option<SelfTestResult>>,
}

/// `FromWorker::SelfTest`, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestResult {
    pub kernel: String,
    pub passed: bool,
    pub summary: String,
}

/// How long a cancelled job may take to stop by itself before the worker is restarted: the
/// worker sees a cancel between sequences, which is well within this unless one step is long.
const CANCEL_GRACE_MS: i32 = 3000;

/// The worker and the job in flight.
#[derive(Clone, Copy)]
pub struct Engine {
    pub state: EngineState,
    worker: StoredValue<Option<Worker>, LocalStorage>,
    next_id: StoredValue<u64>,
    current: StoredValue<Option<(u64, Option<Submitted>)>>,
    queued: StoredValue<Vec<(String, Vec<File>)>, LocalStorage>,
    ready: StoredValue<bool>,
    /// The last load request, sent again after a restart so the model comes back (from the
    /// browser cache).
    last_load: StoredValue<Option<(ToWorker, Vec<File>)>, LocalStorage>,
}

impl Engine {
    /// Starts the worker; its `Ready` message flushes anything sent before.
    pub fn start() -> Self {
        let state = EngineState {
            phase: RwSignal::new(Phase::Starting),
            progress: RwSignal::new(None),
            model: RwSignal::new(None),
            error: RwSignal::new(None),
            notice: RwSignal::new(None),
            results: RwSignal::new(None),
            batch: RwSignal::new(None),
            benchmark: RwSignal::new(None),
            bench: RwSignal::new(None),
            cache: RwSignal::new(None),
            loads: RwSignal::new(0),
            self_test: RwSignal::new(None),
        };
        let engine = Self {
            state,
            worker: StoredValue::new_local(None),
            next_id: StoredValue::new(1),
            current: StoredValue::new(None),
            queued: StoredValue::new_local(Vec::new()),
            ready: StoredValue::new(false),
            last_load: StoredValue::new_local(None),
        };
        engine.spawn();
        engine
    }

    fn spawn(self) {
        let opts = web_sys::WorkerOptions::new();
        let worker = match Worker::new_with_options(&worker_loader(), &opts) {
            Ok(w) => w,
            Err(e) => {
                self.state
                    .error
                    .set(Some(UserError::new("no_worker", format!("cannot start the engine's Web Worker: {e:?}"))));
                return;
            }
        };
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            if let Some(text) = ev.data().as_string() {
                match serde_json::from_str::<FromWorker>(&text) {
                    Ok(msg) => self.on_message(msg),
                    Err(e) => web_sys::console::error_1(&format!("bad worker message: {e}").into()),
                }
            }
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();
        let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
            ev.prevent_default();
            self.on_crash(ev.message());
        });
        worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        onerror.forget();
        self.ready.set_value(false);
        self.worker.set_value(Some(worker));
    }

    /// The worker died (a wasm trap: out of memory or a bug). Say so and start a fresh one.
    fn on_crash(self, message: String) {
        if let Some(w) = self.worker.get_value() {
            w.terminate();
        }
        let during = self.state.phase.get_untracked();
        let what = if during == Phase::Loading { "while loading the model" } else { "" };
        self.state.error.set(Some(UserError::new(
            "engine_crashed",
            format!(
                "The engine stopped {what} ({message}). This usually means the browser ran out of memory: \
                 choose q8_0 or q4_k storage, or a smaller model. The engine has been restarted."
            ),
        )));
        self.state.model.set(None);
        self.state.progress.set(None);
        self.current.set_value(None);
        self.state.phase.set(Phase::Starting);
        self.spawn();
    }

    fn on_message(self, msg: FromWorker) {
        let s = self.state;
        let current = self.current.get_value().map(|(id, _)| id);
        match msg {
            FromWorker::Ready => {
                self.ready.set_value(true);
                // A load queued before a restart keeps the page busy.
                if current.is_none() {
                    s.phase.set(Phase::Idle);
                }
                for (text, files) in self.queued.try_update_value(std::mem::take).unwrap_or_default() {
                    self.post_raw(&text, &files);
                }
                self.send(&ToWorker::CacheInfo, &[]);
            }
            FromWorker::Progress { id, stage, done, total, rate } if Some(id) == current => {
                s.progress.set(Some(Progress { stage, done, total, rate }));
            }
            FromWorker::Loaded { id, info } if Some(id) == current => {
                self.finish();
                s.model.set(Some(info));
                s.loads.update(|n| *n += 1);
                self.send(&ToWorker::CacheInfo, &[]);
            }
            FromWorker::Scored { id, output, backend, .. } if Some(id) == current => {
                let submitted = self.current.get_value().and_then(|(_, s)| s);
                self.finish();
                match output {
                    ScoreOutput::Sequences { results, labels, .. } => {
                        let sub = submitted.unwrap_or(Submitted { prompt: String::new(), responses: vec![] });
                        s.results.set(Some(Comparison {
                            model: s.model.get_untracked().map(|m| m.source).unwrap_or_default(),
                            backend,
                            prompt: sub.prompt,
                            responses: sub.responses,
                            results,
                            labels,
                        }));
                    }
                    ScoreOutput::Jsonl { text, scored, skipped, preferences } => {
                        s.batch.set(Some(BatchOutput { text, scored, skipped, preferences }));
                    }
                    ScoreOutput::Benchmark { rows } => s.benchmark.set(Some(rows)),
                }
            }
            FromWorker::Benched { id, rows } if Some(id) == current => {
                self.finish();
                s.bench.set(Some(rows));
            }
            FromWorker::Cancelled { id } if Some(id) == current => {
                self.finish();
                s.notice.set(Some("Cancelled.".into()));
            }
            FromWorker::Failed { id, error } if Some(id) == current || id == 0 => {
                self.finish();
                s.error.set(Some(error));
            }
            FromWorker::CacheInfo { bytes, entries } => s.cache.set(Some((bytes, entries))),
            FromWorker::SelfTest { kernel, passed, summary, .. } => {
                s.self_test.set(Some(SelfTestResult { kernel, passed, summary }))
            }
            _ => {} // a late message from a job that was replaced
        }
    }

    fn finish(self) {
        self.current.set_value(None);
        self.state.progress.set(None);
        self.state.phase.set(Phase::Idle);
    }

    fn post_raw(self, text: &str, files: &[File]) {
        if !self.ready.get_value() {
            self.queued.update_value(|q| q.push((text.to_owned(), files.to_vec())));
            return;
        }
        let msg = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&msg, &"msg".into(), &JsValue::from_str(text));
        let arr = js_sys::Array::new();
        for f in files {
            arr.push(f);
        }
        let _ = js_sys::Reflect::set(&msg, &"files".into(), &arr);
        self.worker.with_value(|w| {
            if let Some(w) = w {
                let _ = w.post_message(&msg);
            }
        });
    }

    fn send(self, msg: &ToWorker, files: &[File]) {
        self.post_raw(&serde_json::to_string(msg).expect("messages serialize"), files);
    }

    fn begin(self, phase: Phase, submitted: Option<Submitted>) -> u64 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        if let Some((old, _)) = self.current.get_value() {
            self.send(&ToWorker::Cancel { id: old }, &[]);
        }
        self.current.set_value(Some((id, submitted)));
        self.state.error.set(None);
        self.state.notice.set(None);
        self.state.progress.set(None);
        self.state.phase.set(phase);
        id
    }

    #[allow(clippy::too_many_arguments)]
    pub fn load(
        self,
        source: ModelSource,
        storage: StorageChoice,
        backend: BackendChoice,
        token: Option<String>,
        hub: Option<String>,
        hub_from_link: bool,
        remote: Option<RemoteSettings>,
        remote_only: bool,
        workers: Option<usize>,
        files: Vec<File>,
    ) {
        let (crash_stage, chunk_tokens) = (page_param("crash_stage"), page_param("chunk"));
        let msg = ToWorker::Load {
            id: 0,
            source,
            storage,
            backend,
            token,
            hub,
            hub_from_link,
            remote,
            remote_only,
            workers,
            crash_stage,
            chunk_tokens,
        };
        self.start_load(msg, files);
    }

    fn start_load(self, mut msg: ToWorker, files: Vec<File>) {
        let id = self.begin(Phase::Loading, None);
        if let ToWorker::Load { id: slot, .. } = &mut msg {
            *slot = id;
        }
        self.state.model.set(None);
        self.state.results.set(None);
        self.send(&msg, &files);
        self.last_load.set_value(Some((msg, files)));
    }

    pub fn score(self, job: ScoreJob, truncate: bool, steps: Option<StepRequest>, submitted: Submitted) {
        let id = self.begin(Phase::Scoring, Some(submitted));
        if matches!(job, ScoreJob::Jsonl { .. }) {
            self.state.batch.set(None);
        } else if matches!(job, ScoreJob::Benchmark { .. }) {
            self.state.benchmark.set(None);
        } else {
            self.state.results.set(None);
        }
        self.send(&ToWorker::Score { id, job, truncate, steps }, &[]);
    }

    /// Runs the int8 kernels' reference test in the worker; not a job (nothing is cancelled).
    pub fn self_test(self) {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        self.send(&ToWorker::KernelSelfTest { id }, &[]);
    }

    pub fn bench(self, lengths: Vec<usize>, iters: usize, batch: usize) {
        let id = self.begin(Phase::Scoring, None);
        self.send(&ToWorker::Bench { id, lengths, iters, batch }, &[]);
    }

    /// Asks the worker to stop the current job; if it has not answered within
    /// `CANCEL_GRACE_MS` (one long synchronous step), the worker is replaced and the job
    /// reported cancelled.
    pub fn cancel(self) {
        let Some((id, _)) = self.current.get_value() else { return };
        self.send(&ToWorker::Cancel { id }, &[]);
        let check = Closure::once_into_js(move || {
            if self.current.get_value().map(|(c, _)| c) == Some(id) {
                self.restart_after_cancel();
            }
        });
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(check.unchecked_ref(), CANCEL_GRACE_MS);
        }
    }

    /// The worker did not stop: terminate it, start a fresh one, and load the model it held
    /// again (a cancelled load is not repeated).
    fn restart_after_cancel(self) {
        let had_model = self.state.model.get_untracked().is_some();
        if let Some(w) = self.worker.get_value() {
            w.terminate();
        }
        self.finish();
        self.state.phase.set(Phase::Starting);
        self.spawn();
        let reload = if had_model { self.last_load.get_value() } else { None };
        let notice = match reload {
            Some((msg, files)) => {
                self.start_load(msg, files);
                "Cancelled. The engine was in the middle of one long step, so it was restarted; the model is loading again (from the browser cache)."
            }
            None => "Cancelled. The engine was in the middle of one long step, so it was restarted.",
        };
        self.state.notice.set(Some(notice.into()));
    }

    pub fn clear_cache(self) {
        self.send(&ToWorker::ClearCache, &[]);
    }
}

/// The worker build index.html chose before any wasm loaded (`window.rewardlensKernel`:
/// relaxed-simd where the browser has it, `?kernel=` forces one); simd128's loader otherwise.
fn worker_loader() -> String {
    web_sys::window()
        .and_then(|w| js_sys::Reflect::get(&w, &"rewardlensKernel".into()).ok())
        .and_then(|k| js_sys::Reflect::get(&k, &"loader".into()).ok())
        .and_then(|l| l.as_string())
        .unwrap_or_else(|| "./worker_loader.js".into())
}

/// A numeric page URL parameter: `?chunk=N` (the pipeline's chunk length) and the
/// `?crash_stage=K` test hook.
fn page_param(name: &str) -> Option<usize> {
    let search = web_sys::window()?.location().search().ok()?;
    crate::share::query_param(&search, name)?.trim().parse().ok()
}
