//! The multi-worker CPU pipeline's browser half (wasm32 only; the plan, messages and byte
//! pieces are in [`crate::pipeline`], tested natively).
//!
//! Two roles of the one worker script: a *stage* ([`start`]: a worker named with
//! [`STAGE_NAME_PREFIX`]) holds a contiguous slice of the decoder's layers and runs chunks
//! through them; the *coordinator* ([`Pipeline`], inside the engine worker the page talks to)
//! spawns the stages with `new Worker(self.location.href)`, lends the downloaded model files to
//! one stage after another (transferred, never copied: each stage reads the byte ranges its
//! tensors need and hands the files back), wires stage `i`'s output port to stage
//! `i + 1`'s input (the last one's to itself), and collects the head's logits. A stage's
//! `error`/`messageerror` event (a wasm trap or panic) fails the running job; the pipeline is
//! then marked broken and the engine loads the model again.

use crate::pipeline::{plan, Collector, InputSeqs, Piece, PieceBytes, Pieces, StageMsg, StageReply, Step};
use crate::protocol::UserError;
use crate::worker::error::WorkerError;
use candle_core::Device;
use js_sys::{Array, Float32Array, Promise, Reflect, Uint8Array};
use rewardlens_models::gguf::{ByteSource, GgufFile};
use rewardlens_models::pipeline::{DecoderStage, StageInput, StageKv, StageOutput};
use rewardlens_models::quantized::{self, QuantType};
use rewardlens_models::weights::StreamedSafetensors;
use rewardlens_models::ModelConfig;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DedicatedWorkerGlobalScope, ErrorEvent, MessageChannel, MessageEvent, MessagePort, Worker, WorkerOptions,
};

/// How long a stage worker may take to start its wasm and to load its layers.
const STAGE_START_MS: f64 = 120_000.0;
/// How often a job waiting on the pipeline looks at its cancel flag.
const POLL_MS: i32 = 50;

/// A piece of a model file held by a stage, outside wasm memory.
struct JsPiece(Uint8Array);

impl PieceBytes for JsPiece {
    fn piece_len(&self) -> u64 {
        self.0.length() as u64
    }
    fn copy_to(&self, start: u64, buf: &mut [u8]) {
        self.0.subarray(start as u32, (start + buf.len() as u64) as u32).copy_to(buf);
    }
}

/// A file's pieces as a byte source (a stage's GGUF or safetensors shard).
struct JsPieces(Pieces<JsPiece>);

// SAFETY: no wasm threads in this build (no atomics): the arrays never leave this worker's one
// thread; the readers' `Send + Sync` bound is for native multi-threaded use.
unsafe impl Send for JsPieces {}
unsafe impl Sync for JsPieces {}

impl ByteSource for JsPieces {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_at(offset, buf)
    }
}

fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| Reflect::get(v, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// Stage workers are named `<prefix><index>` (WorkerOptions.name), which is how `worker::start`
/// knows to run [`start`] instead of the engine.
pub const STAGE_NAME_PREFIX: &str = "rewardlens-stage-";
/// What a stage worker posts once its wasm runs (messages sent before would find no handler).
const STARTED: &str = "stage-started";

/// A stage worker's entry point: waits for its init message, then becomes that stage.
pub fn start(scope: DedicatedWorkerGlobalScope) {
    let s = scope.clone();
    let once = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        s.set_onmessage(None);
        run_stage(s.clone(), ev.data());
    });
    scope.set_onmessage(Some(once.as_ref().unchecked_ref()));
    once.forget();
    let _ = scope.post_message(&JsValue::from_str(STARTED));
}

/// Posts `{msg, buf?}` on a port, transferring the buffer.
fn post_port(port: &MessagePort, msg: &impl serde::Serialize, buf: Option<&Float32Array>) {
    let obj = js_sys::Object::new();
    let text = serde_json::to_string(msg).expect("messages serialize");
    let _ = Reflect::set(&obj, &"msg".into(), &JsValue::from_str(&text));
    let transfer = Array::new();
    if let Some(b) = buf {
        let _ = Reflect::set(&obj, &"buf".into(), b);
        transfer.push(&b.buffer());
    }
    let _ = port.post_message_with_transferable(&obj, &transfer);
}

/// What a stage holds once loaded.
struct Stage {
    index: usize,
    model: DecoderStage,
    /// Keys/values per sequence, kept until the coordinator's `Free` (or `Reset`).
    kv: RefCell<HashMap<u64, StageKv>>,
    output: MessagePort,
    trap: Cell<bool>,
}

impl Stage {
    fn handle(&self, data: &JsValue) {
        let text = Reflect::get(data, &"msg".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
        let Ok(msg) = serde_json::from_str::<StageMsg>(&text) else {
            // A failure from an earlier stage (or anything else): passed on in order.
            if let Ok(reply) = serde_json::from_str::<StageReply>(&text) {
                post_port(&self.output, &reply, None);
            }
            return;
        };
        match msg {
            StageMsg::Chunk { seq, chunk, fork_from, ids, tokens, end } => {
                if self.trap.replace(false) {
                    // The documented test hook (`?crash_stage=K`): a real trap, as a bug would be.
                    panic!("test hook: pipeline stage {} traps (crash_stage)", self.index);
                }
                let hidden: Option<Vec<f32>> = Reflect::get(data, &"buf".into())
                    .ok()
                    .filter(|b| !b.is_undefined())
                    .map(|b| b.unchecked_into::<Float32Array>().to_vec());
                match self.run(seq, chunk, fork_from, ids.as_deref(), hidden.as_deref(), tokens) {
                    Ok(StageOutput::Hidden(h)) => {
                        let buf = Float32Array::from(h.as_slice());
                        drop(h);
                        let next = StageMsg::Chunk { seq, chunk, fork_from, ids: None, tokens, end };
                        post_port(&self.output, &next, Some(&buf));
                    }
                    Ok(StageOutput::Logits(logits)) => {
                        post_port(&self.output, &StageReply::Logits { seq, chunk, logits }, None)
                    }
                    Err(message) => {
                        post_port(&self.output, &StageReply::Failed { seq, index: self.index, message }, None)
                    }
                }
            }
            StageMsg::Free { seq } => {
                self.kv.borrow_mut().remove(&seq);
                if !self.model.is_last() {
                    post_port(&self.output, &StageMsg::Free { seq }, None);
                }
            }
            StageMsg::Reset => {
                self.kv.borrow_mut().clear();
                if !self.model.is_last() {
                    post_port(&self.output, &StageMsg::Reset, None);
                }
            }
            StageMsg::Init { .. } => {}
        }
    }

    fn run(
        &self,
        seq: u64,
        chunk: u32,
        fork_from: Option<u64>,
        ids: Option<&[u32]>,
        hidden: Option<&[f32]>,
        tokens: usize,
    ) -> Result<StageOutput, String> {
        let mut kv = match fork_from {
            Some(p) => self.kv.borrow().get(&p).cloned().ok_or_else(|| format!("sequence {p} to fork from is gone"))?,
            None if chunk == 0 => StageKv::default(),
            None => self.kv.borrow_mut().remove(&seq).ok_or_else(|| format!("sequence {seq} has no earlier chunks"))?,
        };
        let input = match (ids, hidden) {
            (Some(ids), _) if self.model.is_first() => StageInput::Ids(ids),
            (_, Some(data)) if !self.model.is_first() => StageInput::Hidden { data, tokens },
            _ => return Err("a chunk without the input this stage takes".into()),
        };
        let out = self.model.forward_chunk(&mut kv, input).map_err(|e| e.to_string())?;
        self.kv.borrow_mut().insert(seq, kv);
        Ok(out)
    }
}

/// Builds this worker's stage from its `Init` message and the model files it was lent (whole
/// files, in `shards` order); it reads only the ranges its `pieces` name, through views (no copy).
fn load_stage(init: &StageMsg, files: &Array) -> Result<DecoderStage, (String, String)> {
    let StageMsg::Init { layers, gguf, shards, pieces: described, config_json, quantize, .. } = init else {
        return Err(("engine".into(), "not an init message".into()));
    };
    let lent = files.iter().map(|f| f.unchecked_into::<Uint8Array>().length() as u64);
    if !shards.iter().map(|s| s.1).eq(lent) {
        return Err(("engine".into(), "the lent files differ from the init's shards".into()));
    }
    let mut parts: Vec<Vec<(u64, JsPiece)>> = (0..shards.len()).map(|_| Vec::new()).collect();
    for (i, p) in described.iter().enumerate() {
        let file = (p.file < parts.len()).then(|| files.get(p.file as u32).unchecked_into::<Uint8Array>());
        let inside = file.as_ref().is_some_and(|f| p.offset.checked_add(p.len).is_some_and(|e| e <= f.length() as u64));
        match file {
            Some(f) if inside => {
                let view = f.subarray(p.offset as u32, (p.offset + p.len) as u32);
                parts[p.file].push((p.offset, JsPiece(view)));
            }
            _ => return Err(("engine".into(), format!("piece {i} does not match its description"))),
        }
    }
    let bad = |e: rewardlens_models::ModelError| ("corrupted".to_owned(), e.to_string());
    let mut sources: Vec<(String, JsPieces)> = shards
        .iter()
        .zip(parts)
        .map(|((name, len), parts)| (name.clone(), JsPieces(Pieces::new(*len, parts))))
        .collect();
    if *gguf {
        let (_, src) = sources.pop().ok_or_else(|| ("engine".to_owned(), "no GGUF pieces".to_owned()))?;
        let file = GgufFile::parse(Box::new(src)).map_err(bad)?;
        let config = quantized::gguf_config(&file).map_err(bad)?;
        let weights = quantized::GgufWeights::new(file, config.clone());
        DecoderStage::load(config, &weights, &Device::Cpu, layers.clone()).map_err(bad)
    } else {
        let config = ModelConfig::from_json(config_json.as_deref().unwrap_or("")).map_err(bad)?;
        let shards: Vec<(String, Box<dyn ByteSource>)> =
            sources.into_iter().map(|(n, s)| (n, Box::new(s) as Box<dyn ByteSource>)).collect();
        let weights = StreamedSafetensors::new(shards).map_err(bad)?;
        match quantize.as_deref().map(QuantType::parse).transpose().map_err(bad)? {
            Some(qtype) => {
                let q = quantized::QuantizeOnLoad { inner: &weights, qtype };
                DecoderStage::load(config, &q, &Device::Cpu, layers.clone()).map_err(bad)
            }
            None => DecoderStage::load(config, &weights, &Device::Cpu, layers.clone()).map_err(bad),
        }
    }
}

/// Turns this worker into a pipeline stage (its first message is the stage's init): loads its
/// layers, says `Ready` (or `LoadFailed`) to the coordinator, then serves its input port.
pub fn run_stage(scope: DedicatedWorkerGlobalScope, data: JsValue) {
    let text = Reflect::get(&data, &"msg".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
    let reply = |r: &StageReply| {
        let _ = scope.post_message(&JsValue::from_str(&serde_json::to_string(r).expect("messages serialize")));
    };
    let init = match serde_json::from_str::<StageMsg>(&text) {
        Ok(m @ StageMsg::Init { .. }) => m,
        _ => {
            return reply(&StageReply::LoadFailed { index: 0, code: "engine".into(), message: "bad stage init".into() })
        }
    };
    let StageMsg::Init { index, trap, .. } = &init else { unreachable!("matched above") };
    let (index, trap) = (*index, *trap);
    let get = |k: &str| Reflect::get(&data, &k.into()).ok();
    let files: Array = get("files").and_then(|p| p.dyn_into().ok()).unwrap_or_default();
    let (Some(input), Some(output)) = (
        get("input").and_then(|p| p.dyn_into::<MessagePort>().ok()),
        get("output").and_then(|p| p.dyn_into::<MessagePort>().ok()),
    ) else {
        return reply(&StageReply::LoadFailed { index, code: "engine".into(), message: "stage ports missing".into() });
    };
    let model = match load_stage(&init, &files) {
        Ok(m) => m,
        Err((code, message)) => return reply(&StageReply::LoadFailed { index, code, message }),
    };
    drop(data);
    let kernel = model.linear_kernel();
    let stage = Rc::new(Stage { index, model, kv: RefCell::default(), output, trap: Cell::new(trap) });
    let on_input = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| stage.handle(&ev.data()));
    input.set_onmessage(Some(on_input.as_ref().unchecked_ref()));
    on_input.forget();
    // The files go back with `Ready` (transferred: no copy) for the next stage to load from.
    let obj = js_sys::Object::new();
    let text = serde_json::to_string(&StageReply::Ready { index, kernel }).expect("messages serialize");
    let _ = Reflect::set(&obj, &"msg".into(), &JsValue::from_str(&text));
    let _ = Reflect::set(&obj, &"files".into(), &files);
    let transfer: Array = files.iter().map(|f| f.unchecked_into::<Uint8Array>().buffer()).collect::<Array>();
    if let Err(e) = scope.post_message_with_transfer(&obj, &transfer) {
        reply(&StageReply::LoadFailed { index, code: "engine".into(), message: js_text(&e) });
    }
}

/// What the coordinator hears from its stages.
enum Event {
    /// A stage's wasm started (its `Ready` as an engine).
    Started(usize),
    Reply(StageReply),
    Crash {
        index: usize,
        message: String,
    },
}

#[derive(Default)]
struct Mailbox {
    events: VecDeque<Event>,
    wake: Option<js_sys::Function>,
    /// The model files a stage handed back with its `Ready`.
    returned: Option<Vec<Uint8Array>>,
}

fn push(mb: &Rc<RefCell<Mailbox>>, ev: Event) {
    let wake = {
        let mut m = mb.borrow_mut();
        m.events.push_back(ev);
        m.wake.take()
    };
    if let Some(w) = wake {
        let _ = w.call0(&JsValue::NULL);
    }
}

/// The next event, or None after `POLL_MS` without one.
async fn next_event(scope: &DedicatedWorkerGlobalScope, mb: &Rc<RefCell<Mailbox>>) -> Option<Event> {
    if let Some(ev) = mb.borrow_mut().events.pop_front() {
        return Some(ev);
    }
    let p = Promise::new(&mut |resolve, _| {
        let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, POLL_MS);
        mb.borrow_mut().wake = Some(resolve);
    });
    let _ = JsFuture::from(p).await;
    mb.borrow_mut().wake = None;
    mb.borrow_mut().events.pop_front()
}

/// The stages to start and the model files they load from.
pub struct StagePlan {
    /// One `Init` per stage, in order.
    pub inits: Vec<StageMsg>,
    /// The whole files (in `shards` order). They are lent to one stage after another by
    /// transfer (stage `i` hands them back with its `Ready`), so the weights exist once in
    /// JS memory however many stages load, and nothing is copied.
    pub files: Vec<Uint8Array>,
}

/// The pieces of `ranges` in file `file`.
pub fn pieces_of(file: usize, ranges: &[Range<u64>]) -> Vec<Piece> {
    ranges.iter().map(|r| Piece { file, offset: r.start, len: r.end - r.start }).collect()
}

/// `file` as the whole of its own buffer (what a transfer moves); a view into a larger buffer
/// is copied out, so lending it cannot detach bytes something else holds.
fn own_buffer(file: Uint8Array) -> Uint8Array {
    if file.byte_offset() == 0 && file.byte_length() == file.buffer().byte_length() {
        file
    } else {
        file.slice(0, file.length())
    }
}

/// The coordinator's handle on its stage workers.
pub struct Pipeline {
    scope: DedicatedWorkerGlobalScope,
    workers: Vec<Worker>,
    first: MessagePort,
    _last: MessagePort,
    mailbox: Rc<RefCell<Mailbox>>,
    next_seq: Cell<u64>,
    chunk_tokens: usize,
    /// Why the pipeline cannot run any more (a stage crashed).
    broken: RefCell<Option<String>>,
    /// What multiplies the linear layers (stage 0's report; every stage runs this build).
    kernel: String,
    _closures: Vec<JsValue>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for w in &self.workers {
            w.terminate();
        }
    }
}

impl Pipeline {
    /// Starts one worker per plan and loads each stage; fails (terminating them all) if any
    /// cannot start or load.
    pub async fn spawn(
        scope: &DedicatedWorkerGlobalScope,
        plan: StagePlan,
        chunk_tokens: usize,
    ) -> Result<Self, WorkerError> {
        let engine_err = WorkerError::Engine;
        let script = scope.location().href();
        let mailbox: Rc<RefCell<Mailbox>> = Rc::default();
        let mut closures = Vec::new();
        let mut workers = Vec::new();
        let StagePlan { inits, files } = plan;
        let mut files: Vec<Uint8Array> = files.into_iter().map(own_buffer).collect();
        for index in 0..inits.len() {
            let opts = WorkerOptions::new();
            opts.set_name(&format!("{STAGE_NAME_PREFIX}{index}"));
            let w = Worker::new_with_options(&script, &opts)
                .map_err(|e| engine_err(format!("cannot start pipeline worker {index}: {}", js_text(&e))))?;
            let mb = mailbox.clone();
            let on_msg = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                // A plain text reply, or `{msg, files}`: `Ready` handing the lent files back.
                let data = ev.data();
                let text = data
                    .as_string()
                    .or_else(|| Reflect::get(&data, &"msg".into()).ok().and_then(|m| m.as_string()))
                    .unwrap_or_default();
                if let Some(back) = Reflect::get(&data, &"files".into()).ok().and_then(|f| f.dyn_into::<Array>().ok()) {
                    mb.borrow_mut().returned = Some(back.iter().map(|f| f.unchecked_into()).collect());
                }
                if let Ok(reply) = serde_json::from_str::<StageReply>(&text) {
                    push(&mb, Event::Reply(reply));
                } else if text == STARTED {
                    push(&mb, Event::Started(index));
                }
            });
            w.set_onmessage(Some(on_msg.as_ref().unchecked_ref()));
            let mb = mailbox.clone();
            let on_err = Closure::<dyn FnMut(ErrorEvent)>::new(move |ev: ErrorEvent| {
                ev.prevent_default();
                push(&mb, Event::Crash { index, message: ev.message() });
            });
            w.set_onerror(Some(on_err.as_ref().unchecked_ref()));
            let mb = mailbox.clone();
            let on_msgerr = Closure::<dyn FnMut(MessageEvent)>::new(move |_| {
                push(&mb, Event::Crash { index, message: "a message could not be read (messageerror)".into() });
            });
            w.set_onmessageerror(Some(on_msgerr.as_ref().unchecked_ref()));
            closures.extend([on_msg.into_js_value(), on_err.into_js_value(), on_msgerr.into_js_value()]);
            workers.push(w);
        }
        let channels: Vec<MessageChannel> = (0..=inits.len())
            .map(|_| MessageChannel::new().map_err(|e| engine_err(js_text(&e))))
            .collect::<Result<_, _>>()?;
        let mb = mailbox.clone();
        let on_result = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let text = Reflect::get(&ev.data(), &"msg".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
            if let Ok(reply) = serde_json::from_str::<StageReply>(&text) {
                push(&mb, Event::Reply(reply));
            }
        });
        let last = channels[inits.len()].port2();
        last.set_onmessage(Some(on_result.as_ref().unchecked_ref()));
        closures.push(on_result.into_js_value());
        let mut pipeline = Pipeline {
            scope: scope.clone(),
            workers,
            first: channels[0].port1(),
            _last: last,
            mailbox,
            next_seq: Cell::new(1),
            chunk_tokens: chunk_tokens.max(1),
            broken: RefCell::new(None),
            kernel: String::new(),
            _closures: closures,
        };
        let started_at = js_sys::Date::now();
        let n = inits.len();
        // Every stage's wasm must be running before its init is posted (earlier messages
        // would find no handler).
        let mut started = HashSet::new();
        while started.len() < n {
            match pipeline.wait(started_at).await? {
                Event::Started(i) => {
                    started.insert(i);
                }
                Event::Crash { index, message } => {
                    return Err(engine_err(format!("pipeline worker {index} did not start: {message}")))
                }
                Event::Reply(_) => {}
            }
        }
        // One stage after another, each lent the whole files (moved, not copied) and handing
        // them back when loaded, so peak memory stays near one copy of the weights.
        for (i, init) in inits.iter().enumerate() {
            let obj = js_sys::Object::new();
            let text = serde_json::to_string(init).expect("messages serialize");
            let input = channels[i].port2();
            let output = channels[i + 1].port1();
            let lent: Array = files.iter().collect();
            let transfer = Array::new();
            transfer.push(&input);
            transfer.push(&output);
            for f in &files {
                transfer.push(&f.buffer());
            }
            let _ = Reflect::set(&obj, &"stage".into(), &JsValue::TRUE);
            let _ = Reflect::set(&obj, &"msg".into(), &JsValue::from_str(&text));
            let _ = Reflect::set(&obj, &"files".into(), &lent);
            let _ = Reflect::set(&obj, &"input".into(), &input);
            let _ = Reflect::set(&obj, &"output".into(), &output);
            pipeline.workers[i]
                .post_message_with_transfer(&obj, &transfer)
                .map_err(|e| engine_err(format!("cannot hand pipeline stage {i} its weights: {}", js_text(&e))))?;
            drop((lent, obj));
            let since = js_sys::Date::now();
            loop {
                match pipeline.wait(since).await? {
                    Event::Reply(StageReply::Ready { index, kernel }) if index == i => {
                        if index == 0 {
                            pipeline.kernel = kernel;
                        }
                        files = pipeline.mailbox.borrow_mut().returned.take().ok_or_else(|| {
                            engine_err(format!("pipeline stage {i} did not hand the model files back"))
                        })?;
                        break;
                    }
                    Event::Reply(StageReply::LoadFailed { index, code, message }) => {
                        return Err(WorkerError::Stage(UserError::new(
                            &code,
                            format!("pipeline stage {index}: {message}"),
                        )))
                    }
                    Event::Crash { index, message } => {
                        return Err(engine_err(format!(
                            "pipeline worker {index} stopped while loading its layers ({message}): \
                             the browser may be out of memory; try fewer workers or q8_0 storage"
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(pipeline)
    }

    /// The next event while starting, failing after `STAGE_START_MS`.
    async fn wait(&self, since: f64) -> Result<Event, WorkerError> {
        loop {
            if let Some(ev) = next_event(&self.scope, &self.mailbox).await {
                return Ok(ev);
            }
            if js_sys::Date::now() - since > STAGE_START_MS {
                return Err(WorkerError::Engine("the pipeline workers did not start in time".into()));
            }
        }
    }

    pub fn stages(&self) -> usize {
        self.workers.len()
    }

    pub fn kernel(&self) -> String {
        self.kernel.clone()
    }

    /// The head's logits at every position of each row, in input order. `groups`: consecutive
    /// rows sharing a prompt (their prompt runs once; `pad_token_id` is the model's, for the
    /// plan's prompt rule). `check` is called while waiting and stops the job with its error
    /// (cancellation).
    pub async fn run(
        &self,
        rows: &[&[u32]],
        groups: &[Range<usize>],
        pad_token_id: Option<u32>,
        check: &dyn Fn() -> Result<(), WorkerError>,
    ) -> Result<Vec<Vec<Vec<f32>>>, WorkerError> {
        if let Some(why) = self.broken.borrow().clone() {
            return Err(WorkerError::WorkerCrashed(why));
        }
        let mut next = self.next_seq.get();
        let (steps, seqs) = plan(rows, groups, pad_token_id, self.chunk_tokens, self.stages(), &mut next);
        self.next_seq.set(next);
        // Which sequences are this job's, and their last chunk.
        let mut last_chunk: HashMap<u64, u32> = HashMap::new();
        let own: HashSet<u64> = seqs.iter().map(|s| s.own).collect();
        for step in &steps {
            match step {
                Step::Chunk(c) => {
                    let ids = rows[c.input][c.ids.clone()].to_vec();
                    let tokens = ids.len();
                    let msg = StageMsg::Chunk {
                        seq: c.seq,
                        chunk: c.chunk,
                        fork_from: c.fork_from,
                        ids: Some(ids),
                        tokens,
                        end: c.end,
                    };
                    post_port(&self.first, &msg, None);
                    last_chunk.insert(c.seq, c.chunk);
                    // A response's keys/values are not needed after its last chunk.
                    if c.end && own.contains(&c.seq) {
                        post_port(&self.first, &StageMsg::Free { seq: c.seq }, None);
                    }
                }
                Step::Free(seq) => post_port(&self.first, &StageMsg::Free { seq: *seq }, None),
            }
        }
        let mut collector = Collector::default();
        let done = |c: &Collector, s: &InputSeqs| c.positions(s).is_some();
        while !seqs.iter().all(|s| done(&collector, s)) {
            let ev = next_event(&self.scope, &self.mailbox).await;
            match ev {
                None => {
                    if let Err(e) = check() {
                        post_port(&self.first, &StageMsg::Reset, None);
                        return Err(e);
                    }
                }
                Some(Event::Reply(StageReply::Logits { seq, chunk, logits })) => {
                    // Outputs of an abandoned job carry sequence ids this job does not have.
                    let Some(&last) = last_chunk.get(&seq) else { continue };
                    collector.add(seq, chunk, logits, chunk == last).map_err(WorkerError::Engine)?;
                }
                Some(Event::Reply(StageReply::Failed { seq, index, message })) if last_chunk.contains_key(&seq) => {
                    post_port(&self.first, &StageMsg::Reset, None);
                    return Err(WorkerError::Engine(format!("pipeline stage {index}: {message}")));
                }
                Some(Event::Crash { index, message }) => {
                    let why = format!(
                        "engine worker {} of {} (layers pipeline) crashed ({message}); the engine is \
                         loading the model again — score again once it is back",
                        index + 1,
                        self.workers.len()
                    );
                    *self.broken.borrow_mut() = Some(why.clone());
                    return Err(WorkerError::WorkerCrashed(why));
                }
                Some(_) => {}
            }
        }
        Ok(seqs.iter().map(|s| collector.positions(s).expect("checked done")).collect())
    }
}
