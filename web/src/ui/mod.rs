//! The page: model picker, inputs, results. Small components over the signals of
//! [`engine::Engine`]; every piece of user or model text is rendered as text, never as HTML.

pub mod engine;
mod evaluate;
mod inputs;
mod results;

use crate::presets::{preset_for, DEFAULT_MODEL, PRESETS};
use crate::protocol::{BackendChoice, ModelSource, RemoteSettings, StorageChoice};
use crate::share;
use engine::{Engine, Phase};
use inputs::{InputPanel, Inputs};
use leptos::prelude::*;
use results::{BatchView, ResultsView};
use wasm_bindgen::JsCast;
use web_sys::File;

pub fn mount() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// Formats a byte count for people.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn simd_supported() -> bool {
    // The smallest module using a v128 instruction: it validates only where simd128 is supported.
    const PROBE: [u8; 30] =
        [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98];
    let mut bytes = PROBE.to_vec();
    bytes.push(11);
    js_sys::WebAssembly::validate(&js_sys::Uint8Array::from(bytes.as_slice()).into()).unwrap_or(false)
}

/// The worker build index.html chose (`simd128` or `relaxed`), for the page and its tests.
fn kernel_build() -> String {
    kernel_probe("build").unwrap_or_else(|| "simd128".into())
}

/// A string field of index.html's `window.rewardlensKernel` probe.
fn kernel_probe(field: &str) -> Option<String> {
    let window: wasm_bindgen::JsValue = web_sys::window()?.into();
    let k = js_sys::Reflect::get(&window, &"rewardlensKernel".into()).ok()?;
    js_sys::Reflect::get(&k, &field.into()).ok()?.as_string()
}

/// The model picker's state.
#[derive(Clone, Copy)]
pub struct ModelChoice {
    pub model: RwSignal<String>,
    pub revision: RwSignal<String>,
    pub storage: RwSignal<StorageChoice>,
    pub backend: RwSignal<BackendChoice>,
    /// Kept in memory only: never written to storage or links.
    pub token: RwSignal<String>,
    pub files: StoredValue<Vec<File>, LocalStorage>,
    pub file_names: RwSignal<Vec<String>>,
    /// A Hub mirror from `?hub=` (same URL layout as huggingface.co): used for downloads,
    /// never sent the token.
    pub link_hub: StoredValue<Option<String>>,
    /// A Hub mirror the user typed into the page: it gets the token, as huggingface.co does.
    pub mirror: RwSignal<String>,
    pub remote: RwSignal<RemoteSettings>,
    /// Keep the API key in localStorage too (off: memory only).
    pub remember_key: RwSignal<bool>,
    /// Score on the endpoint even when the model would fit here.
    pub remote_only: RwSignal<bool>,
    /// Engine workers for the WASM CPU pipeline: None is auto (`?workers=N` sets it).
    pub workers: RwSignal<Option<usize>>,
}

#[component]
fn App() -> impl IntoView {
    let engine = Engine::start();
    provide_context(engine);
    let window = web_sys::window().expect("a window");
    let location = window.location();
    let query = location.search().unwrap_or_default();
    let fragment = location.hash().unwrap_or_default();

    let inputs = Inputs::restore();
    provide_context(evaluate::EvalState::new());
    let choice = ModelChoice {
        model: RwSignal::new(inputs.saved_model().unwrap_or_else(|| DEFAULT_MODEL.to_owned())),
        revision: RwSignal::new(inputs.saved_revision()),
        storage: RwSignal::new(inputs.saved_storage()),
        backend: RwSignal::new(inputs.saved_backend()),
        token: RwSignal::new(String::new()),
        files: StoredValue::new_local(Vec::new()),
        file_names: RwSignal::new(Vec::new()),
        link_hub: StoredValue::new(share::query_param(&query, "hub").filter(|h| !h.trim().is_empty())),
        mirror: RwSignal::new(String::new()),
        remote: RwSignal::new(inputs.saved_remote()),
        remember_key: RwSignal::new(inputs.saved_remember_key()),
        remote_only: RwSignal::new(false),
        workers: RwSignal::new(share::query_param(&query, "workers").and_then(|w| w.trim().parse().ok())),
    };
    provide_context(choice);

    // Deep links: `?model=&revision=` pick the model and load it; `#in=` carries inputs,
    // which are scored as soon as the model is loaded.
    let linked_model = share::query_param(&query, "model");
    if let Some(m) = &linked_model {
        choice.model.set(m.clone());
        choice.revision.set(share::query_param(&query, "revision").unwrap_or_default());
    }
    // `?backend=webgpu|cpu|auto` and `?storage=f32|q8_0|q4_k|auto` (benchmarks, shared links).
    if let Some(b) = share::query_param(&query, "backend") {
        choice.backend.set(BackendChoice::from_key(&b));
    }
    if let Some(s) = share::query_param(&query, "storage") {
        choice.storage.set(StorageChoice::from_key(&s));
    }
    // A process reward model turns the step view on when it loads.
    Effect::new(move |_| {
        if engine.state.model.get().is_some_and(|m| m.step_convention.is_some()) {
            inputs.steps.on.set(true);
        }
    });
    let mut score_when_loaded = false;
    match share::decode_fragment(&fragment) {
        Ok(Some(shared)) => {
            inputs.apply_shared(shared);
            score_when_loaded = true;
        }
        Ok(None) => {}
        Err(e) => engine.state.notice.set(Some(format!("The link's inputs could not be read: {e}"))),
    }
    inputs.persist(choice);
    // A model named by a link downloads only once the user agrees (unless this site serves it).
    let pending_link = RwSignal::new(None::<String>);
    if let Some(m) = &linked_model {
        let origin = location.origin().unwrap_or_default();
        if share::linked_model_needs_confirmation(m, &origin) {
            pending_link.set(Some(m.clone()));
        } else {
            load_model(engine, choice, true);
        }
    }
    if score_when_loaded {
        let done = StoredValue::new(false);
        Effect::new(move |_| {
            if engine.state.loads.get() > 0 && !done.get_value() {
                done.set_value(true);
                inputs.score(engine);
            }
        });
    }

    // `?bench=128,512,2048`: time the forward pass once the model is loaded (`cargo xtask
    // bench-web` reads the table).
    let bench = share::bench_request(&query).unwrap_or_else(|e| {
        engine.state.notice.set(Some(format!("The link's benchmark was not run: {e}")));
        None
    });
    if let Some((lengths, iters, batch)) = bench {
        let started = StoredValue::new(false);
        Effect::new(move |_| {
            if engine.state.loads.get() > 0 && !started.get_value() {
                started.set_value(true);
                engine.bench(lengths.clone(), iters, batch);
            }
        });
    }

    // `?selftest=1`: the int8 kernels' reference test in the chosen worker build (browser tests).
    if share::query_param(&query, "selftest").as_deref() == Some("1") {
        engine.self_test();
    }

    let simd = simd_supported();
    view! {
        <header>
            <h1>"rewardlens"</h1>
            <p class="tagline">"Reward-model scores computed in your browser: your text never leaves this machine."</p>
        </header>
        <main>
            <LinkedModel engine choice pending=pending_link />
            <ModelPanel engine choice />
            <InputPanel engine inputs choice />
            <StatusLine engine />
            <ResultsView engine threshold=inputs.steps.threshold />
            <BatchView engine />
            <evaluate::EvalView engine inputs />
            <BenchView engine />
            <SelfTestView engine />
        </main>
        <footer>
            <span id="simd" data-supported=simd.to_string()>
                {if simd { "WebAssembly SIMD (simd128): supported" } else { "WebAssembly SIMD (simd128): NOT supported" }}
            </span>
            " · "
            <span id="kernel-build" data-build=kernel_build() data-relaxed-dot=kernel_probe("relaxedDotHighBit")>
                {format!("Engine build: {}", kernel_build())}
                {kernel_probe("relaxedDotHighBit").map(|d| format!(" (relaxed dot reads a high i7 bit {d})"))}
            </span>
            " · "
            <CacheLine engine />
        </footer>
    }
}

/// Asks before loading the model a link names: which model, from which host.
#[component]
fn LinkedModel(engine: Engine, choice: ModelChoice, pending: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        pending.get().map(|model| {
            let host = match ModelSource::parse(&model, &choice.revision.get_untracked()) {
                Ok(ModelSource::Url { url }) => crate::protocol::url_host(&url).to_owned(),
                Ok(_) => hub_for(choice)
                    .0
                    .map(|h| crate::protocol::url_host(&h).to_owned())
                    .unwrap_or_else(|| crate::protocol::HUB.to_owned()),
                Err(_) => String::new(),
            };
            view! {
                <section class="panel" id="linked-model" role="alertdialog" aria-labelledby="linked-heading">
                    <h2 id="linked-heading">"This link names a model"</h2>
                    <p>
                        "Load " <code id="linked-name">{model.clone()}</code> " from " <code id="linked-host">{host}</code>
                        "? Its files are downloaded into this browser (its size is checked against its config first)."
                    </p>
                    <button
                        id="load-linked"
                        on:click=move |_| {
                            pending.set(None);
                            load_model(engine, choice, true);
                        }
                    >
                        "Load it"
                    </button>
                    <button id="dismiss-linked" on:click=move |_| pending.set(None)>"Not now"</button>
                </section>
            }
        })
    }
}

/// The Hub base URL for a load, and whether it came from a link: the user's mirror, else the
/// link's `?hub=`, else huggingface.co (None).
fn hub_for(choice: ModelChoice) -> (Option<String>, bool) {
    let typed = choice.mirror.get_untracked();
    if !typed.trim().is_empty() {
        return (Some(typed.trim().to_owned()), false);
    }
    match choice.link_hub.get_value() {
        Some(h) => (Some(h), true),
        None => (None, false),
    }
}

/// Loads the chosen model; `from_link`: a link named it, so a failure is shown instead of
/// falling back to a saved remote endpoint (with its remembered key).
fn load_model(engine: Engine, choice: ModelChoice, from_link: bool) {
    let names = choice.file_names.get_untracked();
    let (source, files) = if !names.is_empty() && choice.model.get_untracked().is_empty() {
        (ModelSource::Files { names }, choice.files.get_value())
    } else {
        match ModelSource::parse(&choice.model.get_untracked(), &choice.revision.get_untracked()) {
            Ok(s) => (s, Vec::new()),
            Err(e) => {
                engine.state.error.set(Some(crate::protocol::UserError::new("bad_source", e)));
                return;
            }
        }
    };
    let token = Some(choice.token.get_untracked()).filter(|t| !t.trim().is_empty());
    let remote = Some(choice.remote.get_untracked()).filter(|r| r.is_set() && !from_link).map(|mut r| {
        // The protocol menu shows vLLM until changed.
        if r.protocol.is_empty() {
            r.protocol = "vllm".into();
        }
        r
    });
    let remote_only = remote.is_some() && choice.remote_only.get_untracked();
    let (storage, backend) = (choice.storage.get_untracked(), choice.backend.get_untracked());
    let (hub, hub_from_link) = hub_for(choice);
    let workers = choice.workers.get_untracked();
    engine.load(source, storage, backend, token, hub, hub_from_link, remote, remote_only, workers, files);
}

/// The worker counts the setting offers: 1 up to the browser's cores (at least 2, at most 8), and a count
/// a link asked for.
fn worker_choices(linked: Option<usize>) -> Vec<usize> {
    let cores = web_sys::window().map_or(1, |w| w.navigator().hardware_concurrency() as usize);
    let mut choices: Vec<usize> = (1..=cores.clamp(2, 8)).collect();
    if let Some(w) = linked.filter(|w| *w > 0 && !choices.contains(w)) {
        choices.push(w);
    }
    choices
}

#[component]
fn ModelPanel(engine: Engine, choice: ModelChoice) -> impl IntoView {
    let busy = move || engine.state.phase.get() == Phase::Loading;
    let on_files = move |list: Option<web_sys::FileList>| {
        let Some(list) = list else { return };
        let files: Vec<File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        if files.is_empty() {
            return;
        }
        choice.file_names.set(files.iter().map(|f| f.name()).collect());
        choice.files.set_value(files);
        choice.model.set(String::new());
    };
    view! {
        <section class="panel" id="model-panel" aria-labelledby="model-heading">
            <h2 id="model-heading">"Model"</h2>
            <div class="row">
                <label>
                    "Preset "
                    <select
                        id="preset"
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            if let Some(p) = PRESETS.iter().find(|p| p.model == v) {
                                choice.model.set(p.model.to_owned());
                                choice.storage.set(p.storage);
                                choice.file_names.set(vec![]);
                            }
                        }
                        prop:value=move || preset_for(&choice.model.get()).map(|p| p.model).unwrap_or("custom")
                    >
                        {PRESETS.iter().map(|p| view! { <option value=p.model>{p.label}</option> }).collect_view()}
                        <option value="custom">"custom"</option>
                    </select>
                </label>
                <label class="grow">
                    "Hub repo id or URL "
                    <input
                        id="model-input"
                        type="text"
                        placeholder="owner/name, https://…/folder/ or https://…/model.gguf"
                        prop:value=move || choice.model.get()
                        on:input=move |ev| {
                            choice.model.set(event_target_value(&ev));
                            choice.file_names.set(vec![]);
                        }
                    />
                </label>
                <label>
                    "Revision "
                    <input
                        id="revision"
                        type="text"
                        size="10"
                        placeholder="main"
                        prop:value=move || choice.revision.get()
                        on:input=move |ev| choice.revision.set(event_target_value(&ev))
                    />
                </label>
            </div>
            <div class="row">
                <label>
                    "Weights in memory "
                    <select
                        id="storage"
                        on:change=move |ev| choice.storage.set(StorageChoice::from_key(&event_target_value(&ev)))
                        prop:value=move || choice.storage.get().key()
                    >
                        {StorageChoice::ALL.iter().map(|(s, l)| view! { <option value=s.key()>{*l}</option> }).collect_view()}
                    </select>
                </label>
                <label>
                    "Run on "
                    <select
                        id="run-on"
                        on:change=move |ev| choice.backend.set(BackendChoice::from_key(&event_target_value(&ev)))
                        prop:value=move || choice.backend.get().key()
                    >
                        {BackendChoice::ALL.iter().map(|(b, l)| view! { <option value=b.key()>{*l}</option> }).collect_view()}
                    </select>
                </label>
                <label title="The CPU engine splits the model's layers over this many web workers (auto: one per core, capped by memory)">
                    "CPU workers "
                    <select
                        id="workers"
                        on:change=move |ev| choice.workers.set(event_target_value(&ev).parse().ok())
                        prop:value=move || choice.workers.get().map_or("auto".to_owned(), |w| w.to_string())
                    >
                        <option value="auto">"auto"</option>
                        {worker_choices(choice.workers.get_untracked())
                            .into_iter()
                            .map(|w| view! { <option value=w.to_string()>{w}</option> })
                            .collect_view()}
                    </select>
                </label>
                <label>
                    "HF token (gated repos; kept in memory only) "
                    <input
                        id="token"
                        type="password"
                        autocomplete="off"
                        prop:value=move || choice.token.get()
                        on:input=move |ev| choice.token.set(event_target_value(&ev))
                    />
                </label>
            </div>
            <div class="row">
                <label>
                    "Hub mirror (optional; gets your token) "
                    <input
                        id="hub-mirror"
                        type="text"
                        placeholder="https://huggingface.co"
                        prop:value=move || choice.mirror.get()
                        on:input=move |ev| choice.mirror.set(event_target_value(&ev))
                    />
                </label>
                <HubLine choice />
            </div>
            <div
                class="dropzone"
                on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    on_files(ev.data_transfer().and_then(|d| d.files()));
                }
            >
                <label>
                    "Or pick / drop local files (a GGUF, or config.json + tokenizer.json + tokenizer_config.json + .safetensors): "
                    <input
                        id="files"
                        type="file"
                        multiple=true
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            on_files(input.files());
                        }
                    />
                </label>
                <Show when=move || !choice.file_names.get().is_empty()>
                    <p class="files">"Picked: " {move || choice.file_names.get().join(", ")}</p>
                </Show>
            </div>
            <RemotePanel choice />
            <div class="row">
                <button id="load" on:click=move |_| load_model(engine, choice, false) disabled=busy>
                    "Load model"
                </button>
                <Show when=busy>
                    <button id="cancel-load" on:click=move |_| engine.cancel()>"Cancel"</button>
                </Show>
                <ModelSummary engine />
            </div>
        </section>
    }
}

/// Which host Hub repo ids come from, and whether it sees the token.
#[component]
fn HubLine(choice: ModelChoice) -> impl IntoView {
    move || {
        choice.mirror.track();
        let (hub, from_link) = hub_for(choice);
        let host = hub.as_deref().map(crate::protocol::url_host).unwrap_or(crate::protocol::HUB).to_owned();
        let (token, text) = if from_link {
            ("never", format!("Hub repos from {host} (named by this link; your token is never sent to it)"))
        } else {
            ("sent", format!("Hub repos from {host}"))
        };
        view! {
            <span id="hub-host" class="info" data-host=host data-token=token>
                {text}
            </span>
        }
    }
}

#[component]
fn RemotePanel(choice: ModelChoice) -> impl IntoView {
    let r = choice.remote;
    let field = move |f: fn(&mut RemoteSettings) -> &mut String| {
        move |ev: web_sys::Event| {
            let v = event_target_value(&ev);
            r.update(|s| *f(s) = v);
        }
    };
    view! {
        <details id="remote-panel" open=move || r.with_untracked(RemoteSettings::is_set)>
            <summary>"Remote endpoint — for models too large for the browser"</summary>
            <p class="info">
                "When a model cannot fit or fails to load here, scoring goes to this endpoint (your text is then sent to it). "
                "Any server speaking these protocols works, e.g. vLLM, a NIM reward model, an OpenRLHF reward server, TEI, or "
                <code>"rewardlens serve --cors-origin <this page's origin>"</code> "."
            </p>
            <div class="row">
                <label class="grow">
                    "Endpoint URL "
                    <input
                        id="remote-endpoint"
                        type="text"
                        placeholder="http://127.0.0.1:8000"
                        prop:value=move || r.with(|s| s.endpoint.clone())
                        on:input=field(|s| &mut s.endpoint)
                    />
                </label>
                <label>
                    "Protocol "
                    <select
                        id="remote-protocol"
                        prop:value=move || r.with(|s| if s.protocol.is_empty() { "vllm".to_owned() } else { s.protocol.clone() })
                        on:change=field(|s| &mut s.protocol)
                    >
                        <option value="vllm">"vLLM /pooling"</option>
                        <option value="vllm-classify">"vLLM /classify"</option>
                        <option value="nim">"NVIDIA NIM reward"</option>
                        <option value="openrlhf">"OpenRLHF / LightRFT"</option>
                        <option value="tei">"HF TEI /predict"</option>
                    </select>
                </label>
            </div>
            <div class="row">
                <label>
                    "Model name "
                    <input
                        id="remote-model"
                        type="text"
                        placeholder="server default"
                        prop:value=move || r.with(|s| s.model.clone())
                        on:input=field(|s| &mut s.model)
                    />
                </label>
                <label>
                    "API key "
                    <input
                        id="remote-key"
                        type="password"
                        autocomplete="off"
                        prop:value=move || r.with(|s| s.api_key.clone())
                        on:input=field(|s| &mut s.api_key)
                    />
                </label>
                <label>
                    <input
                        id="remote-remember"
                        type="checkbox"
                        prop:checked=move || choice.remember_key.get()
                        on:change=move |ev| {
                            let i: web_sys::HtmlInputElement = event_target(&ev);
                            choice.remember_key.set(i.checked());
                        }
                    />
                    " remember the key on this device"
                </label>
                <label>
                    <input
                        id="remote-only"
                        type="checkbox"
                        prop:checked=move || choice.remote_only.get()
                        on:change=move |ev| {
                            let i: web_sys::HtmlInputElement = event_target(&ev);
                            choice.remote_only.set(i.checked());
                        }
                    />
                    " always score remotely"
                </label>
            </div>
        </details>
    }
}

#[component]
fn ModelSummary(engine: Engine) -> impl IntoView {
    move || {
        engine.state.model.get().map(|m| {
            if m.architecture == "remote" {
                let why = m.fallback_reason.clone().map(|r| format!(" — not in this browser: {r}")).unwrap_or_default();
                return view! {
                    <span id="model-info" class="info" data-architecture="remote">
                        {format!("{} · scored by {}{why}", m.source, m.backend)}
                    </span>
                }
                .into_any();
            }
            let labels = if m.labels.len() > 1 { format!(" · labels: {}", m.labels.join(", ")) } else { String::new() };
            let kind = if m.backend.starts_with("WebGPU") { "webgpu" } else { "cpu" };
            let why_cpu = m.gpu_fallback_reason.clone().map(|r| format!(" (not WebGPU: {r})")).unwrap_or_default();
            view! {
                <span id="model-info" class="info" data-architecture=m.architecture.clone() data-backend=kind>
                    {format!(
                        "Loaded {} · {} · {:.2}B parameters · {} · ~{} in memory · {:.1} s ({} downloaded, {} from cache){}",
                        m.source,
                        m.architecture,
                        m.parameters as f64 / 1e9,
                        m.storage,
                        human_bytes(m.estimated_bytes),
                        m.load_ms / 1000.0,
                        human_bytes(m.downloaded_bytes),
                        human_bytes(m.cached_bytes),
                        labels,
                    )}
                    " · runs on "
                    <span id="model-backend">{m.backend.clone()}</span>
                    <span id="model-kernel" data-kernel=m.kernel.clone() data-workers=m.workers.to_string()>
                        {(!m.kernel.is_empty()).then(|| format!(" · linear layers: {}", m.kernel))}
                    </span>
                    <span id="gpu-fallback">{why_cpu}</span>
                </span>
            }
            .into_any()
        })
    }
}

#[component]
fn StatusLine(engine: Engine) -> impl IntoView {
    let s = engine.state;
    view! {
        <section id="status" aria-live="polite" data-phase=move || s.phase.get().key()>
            {move || {
                s.progress.get().map(|p| {
                    let bytes = p.stage != "scoring" && p.stage != "scoring lines" && p.stage != "building the model";
                    let text = match (bytes, p.total) {
                        (true, Some(t)) => format!(
                            "{}: {} / {} · {}/s",
                            p.stage,
                            human_bytes(p.done),
                            human_bytes(t),
                            human_bytes(p.rate as u64)
                        ),
                        (true, None) => format!("{}: {} · {}/s", p.stage, human_bytes(p.done), human_bytes(p.rate as u64)),
                        (false, Some(t)) => format!("{}: {} / {} · {:.1}/s", p.stage, p.done, t, p.rate),
                        (false, None) => format!("{}…", p.stage),
                    };
                    view! {
                        <div class="progress">
                            <progress
                                max=p.total.unwrap_or(0).max(1).to_string()
                                value=move || if p.total.is_some() { p.done.to_string() } else { String::new() }
                            ></progress>
                            <span>{text}</span>
                        </div>
                    }
                })
            }}
            {move || {
                (s.phase.get() == Phase::Starting).then(|| view! { <p>"Starting the engine…"</p> })
            }}
            {move || s.notice.get().map(|n| view! { <p class="notice">{n}</p> })}
            {move || {
                s.error.get().map(|e| {
                    view! {
                        <div id="error" class="error" role="alert" data-code=e.code.clone()>
                            <strong>"Error: "</strong>
                            {e.message.clone()}
                            <button class="dismiss" on:click=move |_| s.error.set(None) aria-label="Dismiss error">
                                "×"
                            </button>
                        </div>
                    }
                })
            }}
        </section>
    }
}

#[component]
fn BenchView(engine: Engine) -> impl IntoView {
    move || {
        engine.state.bench.get().map(|rows| {
            view! {
                <section class="panel" id="bench">
                    <h2>"Benchmark (forward pass, this browser)"</h2>
                    <table>
                        <thead>
                            <tr>
                                <th>"tokens"</th>
                                <th>"sequences"</th>
                                <th>"workers"</th>
                                <th>"median ms"</th>
                                <th>"tokens/s"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {rows
                                .into_iter()
                                .map(|r| {
                                    view! {
                                        <tr
                                            class="bench-row"
                                            data-tokens=r.tokens.to_string()
                                            data-batch=r.batch.to_string()
                                            data-workers=r.workers.to_string()
                                            data-profile=serde_json::to_string(&r.profile).unwrap_or_default()
                                            data-ms=r.median_ms.to_string()
                                            data-first-scores-at=r.first_scores_at_ms.to_string()
                                        >
                                            <td>{r.tokens}</td>
                                            <td>{r.batch}</td>
                                            <td>{r.workers}</td>
                                            <td>{format!("{:.0}", r.median_ms)}</td>
                                            <td>{format!("{:.1}", r.tokens_per_s)}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                </section>
            }
        })
    }
}

#[component]
fn SelfTestView(engine: Engine) -> impl IntoView {
    move || {
        engine.state.self_test.get().map(|t| {
            view! {
                <p id="self-test" data-passed=t.passed.to_string() data-kernel=t.kernel.clone()>
                    {format!("{} reference test {}: {}", t.kernel, if t.passed { "passed" } else { "FAILED" }, t.summary)}
                </p>
            }
        })
    }
}

#[component]
fn CacheLine(engine: Engine) -> impl IntoView {
    view! {
        <span id="cache" data-bytes=move || engine.state.cache.get().map(|c| c.0).unwrap_or(0).to_string()>
            {move || match engine.state.cache.get() {
                Some((b, n)) => format!("Browser cache: {} in {n} files ", human_bytes(b)),
                None => "Browser cache: … ".to_owned(),
            }}
        </span>
        <button id="clear-cache" on:click=move |_| engine.clear_cache()>"Clear cache"</button>
    }
}

/// Starts a download of `text` as a file.
pub fn download(name: &str, mime: &str, text: &str) {
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    let doc = web_sys::window().and_then(|w| w.document()).expect("a document");
    if let Ok(a) = doc.create_element("a") {
        let a: web_sys::HtmlAnchorElement = a.unchecked_into();
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}
