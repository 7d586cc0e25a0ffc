//! What to score: a prompt with responses, a conversation, or a JSONL batch. Everything typed
//! is saved to localStorage as it changes, so a reload loses nothing.

use super::engine::{Engine, Phase, Submitted};
use super::ModelChoice;
use crate::protocol::{ScoreJob, StorageChoice};
use crate::share::{self, SharedInputs};
use leptos::prelude::*;
use rewardlens_core::Message;
use serde::{Deserialize, Serialize};

const STORAGE_KEY: &str = "rewardlens.inputs.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Responses,
    Conversation,
    Jsonl,
    /// A benchmark suite (the Evaluate view).
    Evaluate,
}

/// What localStorage keeps.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
struct Saved {
    mode: Mode,
    prompt: String,
    responses: Vec<String>,
    conversation: String,
    truncate: bool,
    model: Option<String>,
    revision: String,
    storage: String,
    backend: String,
    remote: crate::protocol::RemoteSettings,
    remember_key: bool,
}

#[derive(Clone, Copy)]
pub struct Inputs {
    pub mode: RwSignal<Mode>,
    pub prompt: RwSignal<String>,
    /// Images with the prompt, as data URLs, for a multimodal endpoint (not saved: they can be
    /// large).
    pub prompt_images: RwSignal<Vec<String>>,
    /// (stable key, text), so reordering keeps each editor's identity.
    pub responses: RwSignal<Vec<(u64, String)>>,
    next_key: StoredValue<u64>,
    pub conversation: RwSignal<String>,
    pub jsonl: RwSignal<Option<(String, String)>>,
    pub truncate: RwSignal<bool>,
    pub steps: StepOptions,
    saved: StoredValue<Saved>,
    /// A link's `#in=` inputs: shown, but not saved over the user's draft unless edited.
    linked: StoredValue<Option<SharedInputs>>,
}

/// Step-reward controls: on/off, convention, how answers split, the "bad step" threshold and
/// the token heatmap.
#[derive(Clone, Copy)]
pub struct StepOptions {
    pub on: RwSignal<bool>,
    /// `auto` or a convention name.
    pub convention: RwSignal<String>,
    /// `blank`, `lines`, `markers`, `sep`, `regex`.
    pub split: RwSignal<String>,
    /// The separator or pattern for `sep` / `regex`.
    pub split_value: RwSignal<String>,
    pub threshold: RwSignal<f32>,
    pub tokens: RwSignal<bool>,
}

impl StepOptions {
    /// The request for the worker, or an error naming what is wrong with the split.
    pub fn request(&self) -> Result<Option<crate::protocol::StepRequest>, String> {
        if !self.on.get_untracked() {
            return Ok(None);
        }
        let v = self.split_value.get_untracked();
        let spec = match self.split.get_untracked().as_str() {
            "sep" | "regex" if v.is_empty() => return Err("give the step separator or pattern".into()),
            "sep" => format!("sep:{v}"),
            "regex" => format!("regex:{v}"),
            other => other.to_owned(),
        };
        let split = rewardlens_core::StepSplit::parse(&spec).map_err(|e| e.to_string())?;
        let c = self.convention.get_untracked();
        Ok(Some(crate::protocol::StepRequest {
            convention: (c != "auto").then_some(c),
            split,
            tokens: self.tokens.get_untracked(),
            // The page marks the first bad step itself, against its live threshold slider.
            threshold: None,
        }))
    }
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

const EXAMPLE_CONVERSATION: &str = r#"[
  {"role": "user", "content": "What is the capital of France?"},
  {"role": "assistant", "content": "Paris."},
  {"role": "user", "content": "And of Italy?"},
  {"role": "assistant", "content": "Rome."}
]"#;

impl Inputs {
    pub fn restore() -> Self {
        let saved: Saved = local_storage()
            .and_then(|s| s.get_item(STORAGE_KEY).ok().flatten())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| Saved {
                prompt: "What is 2 + 2?".into(),
                responses: vec!["2 + 2 = 4.".into(), "2 + 2 = 5.".into()],
                conversation: EXAMPLE_CONVERSATION.into(),
                ..Saved::default()
            });
        let responses: Vec<(u64, String)> =
            saved.responses.iter().enumerate().map(|(i, r)| (i as u64, r.clone())).collect();
        Self {
            mode: RwSignal::new(saved.mode),
            prompt: RwSignal::new(saved.prompt.clone()),
            prompt_images: RwSignal::new(Vec::new()),
            next_key: StoredValue::new(responses.len() as u64),
            responses: RwSignal::new(responses),
            conversation: RwSignal::new(saved.conversation.clone()),
            jsonl: RwSignal::new(None),
            truncate: RwSignal::new(saved.truncate),
            steps: StepOptions {
                on: RwSignal::new(false),
                convention: RwSignal::new("auto".into()),
                split: RwSignal::new("blank".into()),
                split_value: RwSignal::new(String::new()),
                threshold: RwSignal::new(0.5),
                tokens: RwSignal::new(false),
            },
            saved: StoredValue::new(saved),
            linked: StoredValue::new(None),
        }
    }

    pub fn saved_model(&self) -> Option<String> {
        self.saved.with_value(|s| s.model.clone()).filter(|m| !m.trim().is_empty())
    }
    pub fn saved_revision(&self) -> String {
        self.saved.with_value(|s| s.revision.clone())
    }
    pub fn saved_remote(&self) -> crate::protocol::RemoteSettings {
        self.saved.with_value(|s| s.remote.clone())
    }
    pub fn saved_remember_key(&self) -> bool {
        self.saved.with_value(|s| s.remember_key)
    }
    pub fn saved_storage(&self) -> StorageChoice {
        self.saved.with_value(|s| StorageChoice::from_key(&s.storage))
    }
    pub fn saved_backend(&self) -> crate::protocol::BackendChoice {
        self.saved.with_value(|s| crate::protocol::BackendChoice::from_key(&s.backend))
    }

    pub fn apply_shared(&self, shared: SharedInputs) {
        self.linked.set_value(Some(shared.clone()));
        self.mode.set(Mode::Responses);
        self.prompt.set(shared.prompt);
        let list: Vec<(u64, String)> = shared.responses.into_iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
        self.next_key.set_value(list.len() as u64);
        self.responses.set(list);
    }

    /// Saves the inputs and the model choice whenever they change (never the Hub token; the
    /// remote API key only when the user asked to remember it).
    pub fn persist(self, choice: ModelChoice) {
        Effect::new(move |_| {
            let (mut mode, mut prompt) = (self.mode.get(), self.prompt.get());
            let mut responses: Vec<String> = self.responses.get().into_iter().map(|(_, r)| r).collect();
            let unedited_link = self.linked.with_value(|l| {
                l.as_ref().is_some_and(|l| mode == Mode::Responses && l.prompt == prompt && l.responses == responses)
            });
            if unedited_link {
                // Keep the draft the user had before opening the link.
                self.saved.with_value(|s| {
                    (mode, prompt, responses) = (s.mode, s.prompt.clone(), s.responses.clone());
                });
            }
            let saved = Saved {
                mode,
                prompt,
                responses,
                conversation: self.conversation.get(),
                truncate: self.truncate.get(),
                model: Some(choice.model.get()),
                revision: choice.revision.get(),
                storage: choice.storage.get().key().to_owned(),
                backend: choice.backend.get().key().to_owned(),
                remote: {
                    let mut r = choice.remote.get();
                    if !choice.remember_key.get() {
                        r.api_key.clear();
                    }
                    r
                },
                remember_key: choice.remember_key.get(),
            };
            if let (Some(s), Ok(text)) = (local_storage(), serde_json::to_string(&saved)) {
                let _ = s.set_item(STORAGE_KEY, &text);
            }
        });
    }

    /// Reads picked image files into data URLs with the prompt (the type is read from the bytes:
    /// a file that is no PNG, JPEG, GIF or WebP is refused by name).
    pub fn add_images(self, list: web_sys::FileList, engine: Engine) {
        // Taken now: the list is live, and the picker is cleared right after.
        let files: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        wasm_bindgen_futures::spawn_local(async move {
            for f in files {
                let read = wasm_bindgen_futures::JsFuture::from(f.array_buffer()).await;
                let url = read.map_err(|_| "the browser could not read it".to_owned()).and_then(|buf| {
                    rewardlens_core::image::data_url(&js_sys::Uint8Array::new(&buf).to_vec()).map_err(|e| e.to_string())
                });
                match url {
                    Ok(url) => self.prompt_images.update(|l| l.push(url)),
                    Err(e) => engine
                        .state
                        .error
                        .set(Some(crate::protocol::UserError::new("image", format!("{}: {e}", f.name())))),
                }
            }
        });
    }

    /// Puts a prompt and its responses in the editor (replacing what is there).
    pub fn set_responses(&self, prompt: String, responses: Vec<String>) {
        let first = self.next_key.get_value();
        self.next_key.set_value(first + responses.len() as u64);
        self.prompt.set(prompt);
        self.responses.set(responses.into_iter().enumerate().map(|(i, r)| (first + i as u64, r)).collect());
    }

    fn add_response(&self) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        self.responses.update(|r| r.push((key, String::new())));
    }

    /// Sends the current mode's job.
    pub fn score(self, engine: Engine) {
        let truncate = self.truncate.get_untracked();
        let steps = match self.steps.request() {
            Ok(s) => s,
            Err(e) => {
                engine.state.error.set(Some(crate::protocol::UserError::new("steps", e)));
                return;
            }
        };
        match self.mode.get_untracked() {
            Mode::Responses => {
                let prompt = self.prompt.get_untracked();
                let images = self.prompt_images.get_untracked();
                let responses: Vec<String> = self.responses.get_untracked().into_iter().map(|(_, r)| r).collect();
                let submitted = Submitted { prompt: prompt.clone(), responses: responses.clone() };
                engine.score(ScoreJob::Responses { prompt, images, responses }, truncate, steps, submitted);
            }
            Mode::Conversation => {
                let text = self.conversation.get_untracked();
                match serde_json::from_str::<Vec<Message>>(&text) {
                    Ok(messages) => {
                        let last = messages.last().map(|m| m.content.clone()).unwrap_or_default();
                        let prompt = messages
                            .iter()
                            .rev()
                            .find(|m| matches!(m.role, rewardlens_core::Role::User))
                            .map(|m| m.content.clone())
                            .unwrap_or_default();
                        let submitted = Submitted { prompt, responses: vec![last] };
                        engine.score(ScoreJob::Conversation { messages }, truncate, steps, submitted);
                    }
                    Err(e) => engine.state.error.set(Some(crate::protocol::UserError::new(
                        "bad_conversation",
                        format!("the conversation must be a JSON list of {{\"role\", \"content\"}} messages: {e}"),
                    ))),
                }
            }
            Mode::Evaluate => {
                let choice = expect_context::<super::ModelChoice>();
                expect_context::<super::evaluate::EvalState>().run(engine, choice, truncate);
            }
            Mode::Jsonl => match self.jsonl.get_untracked() {
                Some((_, text)) => engine.score(
                    ScoreJob::Jsonl { text },
                    truncate,
                    None,
                    Submitted { prompt: String::new(), responses: vec![] },
                ),
                None => engine
                    .state
                    .error
                    .set(Some(crate::protocol::UserError::new("no_input", "pick a JSONL file to score first"))),
            },
        }
    }

    fn share_link(&self, choice: ModelChoice) -> Option<String> {
        let loc = web_sys::window()?.location();
        let base = format!("{}{}", loc.origin().ok()?, loc.pathname().ok()?);
        let shared = SharedInputs {
            prompt: self.prompt.get_untracked(),
            responses: self.responses.get_untracked().into_iter().map(|(_, r)| r).collect(),
        };
        Some(format!(
            "{base}{}#{}",
            share::model_query(&choice.model.get_untracked(), &choice.revision.get_untracked()),
            share::encode_fragment(&shared)
        ))
    }
}

#[component]
pub fn InputPanel(engine: Engine, inputs: Inputs, choice: ModelChoice) -> impl IntoView {
    let link = RwSignal::new(None::<String>);
    let busy = move || engine.state.phase.get() != Phase::Idle;
    let no_model = move || engine.state.model.get().is_none();
    let tab = move |mode: Mode, label: &'static str, id: &'static str| {
        view! {
            <button
                id=id
                role="tab"
                aria-selected=move || (inputs.mode.get() == mode).to_string()
                class:active=move || inputs.mode.get() == mode
                on:click=move |_| inputs.mode.set(mode)
            >
                {label}
            </button>
        }
    };
    view! {
        <section class="panel" id="input-panel" aria-labelledby="input-heading">
            <h2 id="input-heading">"Input"</h2>
            <div role="tablist" class="tabs">
                {tab(Mode::Responses, "Prompt + responses", "tab-responses")}
                {tab(Mode::Conversation, "Conversation (JSON)", "tab-conversation")}
                {tab(Mode::Jsonl, "JSONL batch", "tab-jsonl")}
                {tab(Mode::Evaluate, "Benchmark", "tab-eval")}
            </div>
            <Show when=move || inputs.mode.get() == Mode::Evaluate>
                <super::evaluate::EvaluateInputs />
            </Show>
            <Show when=move || inputs.mode.get() == Mode::Responses>
                <ResponsesEditor inputs />
            </Show>
            <Show when=move || inputs.mode.get() == Mode::Conversation>
                <label class="block">
                    "Conversation, in the CLI's `conversation` format (the last assistant turn is scored)"
                    <textarea
                        id="conversation"
                        rows="10"
                        prop:value=move || inputs.conversation.get()
                        on:input=move |ev| inputs.conversation.set(event_target_value(&ev))
                    ></textarea>
                </label>
            </Show>
            <Show when=move || inputs.mode.get() == Mode::Jsonl>
                <label class="block">
                    "A JSONL file in any of the CLI's forms (conversation; instruction + response; prompt + responses; prompt + chosen + rejected, each side an answer or a list of answers, with an optional margin): "
                    <input
                        id="jsonl-file"
                        type="file"
                        accept=".jsonl,.json,.txt"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            if let Some(f) = input.files().and_then(|l| l.get(0)) {
                                let name = f.name();
                                wasm_bindgen_futures::spawn_local(async move {
                                    if let Ok(t) = wasm_bindgen_futures::JsFuture::from(f.text()).await {
                                        inputs.jsonl.set(t.as_string().map(|t| (name, t)));
                                    }
                                });
                            }
                        }
                    />
                </label>
                <p>
                    {move || {
                        inputs
                            .jsonl
                            .get()
                            .map(|(n, t)| format!("{n}: {} lines", t.lines().filter(|l| !l.trim().is_empty()).count()))
                    }}
                </p>
            </Show>
            <div class="row">
                <label>
                    <input
                        type="checkbox"
                        prop:checked=move || inputs.truncate.get()
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            inputs.truncate.set(input.checked());
                        }
                    />
                    " Truncate over-long inputs instead of refusing them"
                </label>
            </div>
            <Show when=move || inputs.mode.get() != Mode::Evaluate>
                <StepControls steps=inputs.steps />
            </Show>
            <div class="row">
                <button
                    id="score"
                    class="primary"
                    on:click=move |_| inputs.score(engine)
                    disabled=move || busy() || no_model()
                    title=move || if no_model() { "Load a model first" } else { "" }
                >
                    "Score"
                </button>
                <Show when=move || engine.state.phase.get() == Phase::Scoring>
                    <button id="cancel" on:click=move |_| engine.cancel()>"Cancel"</button>
                </Show>
                <button
                    id="copy-link"
                    on:click=move |_| {
                        let l = inputs.share_link(choice);
                        if let (Some(l), Some(w)) = (&l, web_sys::window()) {
                            let _ = w.navigator().clipboard().write_text(l);
                        }
                        link.set(l);
                    }
                >
                    "Copy link"
                </button>
            </div>
            <Show when=move || link.get().is_some()>
                <label class="block">
                    "Link with the model and these inputs (the inputs ride in the #fragment, which is never sent to a server):"
                    <input id="share-link" type="text" readonly=true prop:value=move || link.get().unwrap_or_default() />
                </label>
            </Show>
        </section>
    }
}

/// The prompt's images: a picker and a thumbnail of each with a remove button. Only an endpoint
/// serving a multimodal reward model can score them; a model in this tab refuses them.
#[component]
fn PromptImages(inputs: Inputs) -> impl IntoView {
    let engine = expect_context::<Engine>();
    let numbered = move || -> Vec<(usize, String)> { inputs.prompt_images.get().into_iter().enumerate().collect() };
    view! {
        <div id="prompt-images" class="row">
            <label>
                "Image with the prompt (multimodal endpoints only): "
                <input
                    id="prompt-image"
                    type="file"
                    accept="image/png,image/jpeg,image/gif,image/webp"
                    multiple=true
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        if let Some(list) = input.files() {
                            inputs.add_images(list, engine);
                        }
                        input.set_value("");
                    }
                />
            </label>
            <For
                each=numbered
                key=|(i, url)| (*i, url.len())
                children=move |(i, url)| {
                    view! {
                        <span class="prompt-image">
                            <img src=url alt=format!("Prompt image {}", i + 1) height="48" />
                            <button
                                class="remove"
                                aria-label=format!("Remove prompt image {}", i + 1)
                                on:click=move |_| inputs.prompt_images.update(|l| {
                                    if i < l.len() {
                                        l.remove(i);
                                    }
                                })
                            >
                                "×"
                            </button>
                        </span>
                    }
                }
            />
        </div>
    }
}

#[component]
fn ResponsesEditor(inputs: Inputs) -> impl IntoView {
    let move_by = move |key: u64, delta: isize| {
        inputs.responses.update(|list| {
            if let Some(i) = list.iter().position(|(k, _)| *k == key) {
                let j = i as isize + delta;
                if j >= 0 && (j as usize) < list.len() {
                    list.swap(i, j as usize);
                }
            }
        })
    };
    view! {
        <label class="block">
            "Prompt"
            <textarea
                id="prompt"
                rows="3"
                prop:value=move || inputs.prompt.get()
                on:input=move |ev| inputs.prompt.set(event_target_value(&ev))
            ></textarea>
        </label>
        <PromptImages inputs=inputs />
        <ol id="responses">
            <For
                each=move || inputs.responses.get()
                key=|(k, _)| *k
                children=move |(key, text)| {
                    let index = move || {
                        inputs.responses.with(|l| l.iter().position(|(k, _)| *k == key).map(|i| i + 1).unwrap_or(0))
                    };
                    view! {
                        <li class="response">
                            <textarea
                                rows="3"
                                aria-label=move || format!("Response {}", index())
                                prop:value=text
                                on:input=move |ev| {
                                    let v = event_target_value(&ev);
                                    inputs.responses.update(|l| {
                                        if let Some(e) = l.iter_mut().find(|(k, _)| *k == key) {
                                            e.1 = v;
                                        }
                                    });
                                }
                            ></textarea>
                            <div class="response-tools">
                                <button on:click=move |_| move_by(key, -1) aria-label=move || format!("Move response {} up", index())>"↑"</button>
                                <button on:click=move |_| move_by(key, 1) aria-label=move || format!("Move response {} down", index())>"↓"</button>
                                <button
                                    class="remove"
                                    on:click=move |_| inputs.responses.update(|l| l.retain(|(k, _)| *k != key))
                                    aria-label=move || format!("Remove response {}", index())
                                >
                                    "Remove"
                                </button>
                            </div>
                        </li>
                    }
                }
            />
        </ol>
        <button id="add-response" on:click=move |_| inputs.add_response()>"Add response"</button>
    }
}

#[component]
fn StepControls(steps: StepOptions) -> impl IntoView {
    let checkbox = move |sig: RwSignal<bool>| {
        move |ev: leptos::ev::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            sig.set(input.checked());
        }
    };
    view! {
        <fieldset id="step-controls" class="row">
            <legend>"Steps"</legend>
            <label>
                <input id="steps-on" type="checkbox" prop:checked=move || steps.on.get() on:change=checkbox(steps.on) />
                " Step rewards"
            </label>
            <label>
                "Convention "
                <select
                    id="step-convention"
                    prop:value=move || steps.convention.get()
                    on:change=move |ev| steps.convention.set(event_target_value(&ev))
                >
                    <option value="auto">"auto (the model's, else prefix scores)"</option>
                    <option value="qwen">"Qwen2.5-Math-PRM (<extra_0>)"</option>
                    <option value="shepherd">"math-shepherd (ки, +/-)"</option>
                    <option value="value">"value head (Skywork-o1)"</option>
                    <option value="prefix">"prefix scores of an outcome RM (approximate)"</option>
                </select>
            </label>
            <label>
                "Split at "
                <select id="step-split" prop:value=move || steps.split.get() on:change=move |ev| steps.split.set(event_target_value(&ev))>
                    <option value="blank">"blank lines"</option>
                    <option value="lines">"every line"</option>
                    <option value="markers">"Step N: markers"</option>
                    <option value="sep">"a separator"</option>
                    <option value="regex">"a regex"</option>
                </select>
            </label>
            <Show when=move || matches!(steps.split.get().as_str(), "sep" | "regex")>
                <input
                    id="step-split-value"
                    type="text"
                    size="12"
                    aria-label="step separator or pattern"
                    prop:value=move || steps.split_value.get()
                    on:input=move |ev| steps.split_value.set(event_target_value(&ev))
                />
            </Show>
            <label>
                "Bad below "
                <input
                    id="step-threshold"
                    type="number"
                    step="0.05"
                    size="5"
                    prop:value=move || steps.threshold.get().to_string()
                    on:input=move |ev| {
                        if let Ok(v) = event_target_value(&ev).parse() {
                            steps.threshold.set(v)
                        }
                    }
                />
            </label>
            <label>
                <input id="token-heatmap" type="checkbox" prop:checked=move || steps.tokens.get() on:change=checkbox(steps.tokens) />
                " Token heatmap"
            </label>
        </fieldset>
    }
}
