//! The Evaluate view: a benchmark suite (RewardBench 1 or 2, RM-Bench, ProcessBench) from
//! dropped Parquet/JSON/JSONL files or a Hub dataset, scored by the loaded engine (WASM CPU,
//! WebGPU or a remote endpoint) and counted by `rewardlens-eval`'s reference formulas: the
//! table per subset and section with bars, the rows the model got wrong (each opens in the
//! normal response view), and the results JSON to download.

use super::engine::{Engine, Submitted};
use super::inputs::{Inputs, Mode};
use super::{download, ModelChoice};
use crate::protocol::{check_repo_id, BenchmarkRow, ScoreJob, StepRequest, UserError, HUB};
use leptos::prelude::*;
use rewardlens_eval::{evaluate, read_suite, Evaluation, Options, Row, ScoredRow, Suite};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The view's inputs, the rows sent and the scores back; given to components as context.
#[derive(Clone, Copy)]
pub struct EvalState {
    pub suite: RwSignal<Suite>,
    /// Picked files: (name, bytes), read when picked.
    files: StoredValue<Vec<(String, Vec<u8>)>, LocalStorage>,
    pub file_names: RwSignal<Vec<String>>,
    /// A Hub dataset id, used when no file is picked.
    pub hub_id: RwSignal<String>,
    /// ProcessBench: `auto` (the architecture's) or a step convention.
    pub convention: RwSignal<String>,
    pub threshold: RwSignal<f64>,
    /// The rows of the job in flight or last scored, and where they came from.
    rows: StoredValue<Vec<Row>>,
    source: StoredValue<String>,
}

impl EvalState {
    pub fn new() -> Self {
        Self {
            suite: RwSignal::new(Suite::RewardBench),
            files: StoredValue::new_local(Vec::new()),
            file_names: RwSignal::new(Vec::new()),
            hub_id: RwSignal::new(String::new()),
            convention: RwSignal::new("auto".into()),
            threshold: RwSignal::new(0.5),
            rows: StoredValue::new(Vec::new()),
            source: StoredValue::new(String::new()),
        }
    }

    /// Reads the picked files into memory (Parquet needs the whole file).
    pub fn pick(self, list: web_sys::FileList) {
        wasm_bindgen_futures::spawn_local(async move {
            let mut files = Vec::new();
            for i in 0..list.length() {
                let Some(f) = list.get(i) else { continue };
                if let Ok(buf) = JsFuture::from(f.array_buffer()).await {
                    files.push((f.name(), js_sys::Uint8Array::new(&buf).to_vec()));
                }
            }
            self.file_names
                .set(files.iter().map(|(n, b)| format!("{n} ({})", super::human_bytes(b.len() as u64))).collect());
            self.files.set_value(files);
        });
    }

    /// Reads the suite from the picked files or the Hub dataset and sends it to the engine.
    pub fn run(self, engine: Engine, choice: ModelChoice, truncate: bool) {
        let fail = move |code: &str, message: String| engine.state.error.set(Some(UserError::new(code, message)));
        let suite = self.suite.get_untracked();
        let files = self.files.get_value();
        let hub_id = self.hub_id.get_untracked().trim().to_owned();
        if files.is_empty() && hub_id.is_empty() {
            return fail("no_input", "pick the suite's Parquet, JSON or JSONL files, or name a Hub dataset".into());
        }
        wasm_bindgen_futures::spawn_local(async move {
            let (files, source) = if files.is_empty() {
                let hub = super::hub_for(choice).0.unwrap_or_else(|| HUB.to_owned());
                match hub_dataset_files(&hub, &hub_id).await {
                    Ok(f) => (f, format!("{hub_id} (Hub dataset)")),
                    Err(e) => return fail("dataset", e),
                }
            } else {
                let names = files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>().join(", ");
                (files, names)
            };
            let rows = match read_suite(suite, files) {
                Ok(r) => r,
                Err(e) => return fail("benchmark", e.to_string()),
            };
            let job_rows = rows.iter().map(|r| BenchmarkRow { split: r.split.clone(), row: r.json.clone() }).collect();
            self.rows.set_value(rows.into_iter().map(|r| r.row).collect());
            self.source.set_value(source);
            let convention = self.convention.get_untracked();
            let steps = (suite == Suite::ProcessBench && convention != "auto")
                .then(|| StepRequest { convention: Some(convention), ..StepRequest::default() });
            let submitted = Submitted { prompt: String::new(), responses: vec![] };
            engine.score(ScoreJob::Benchmark { suite, rows: job_rows }, truncate, steps, submitted);
        });
    }

    /// The suite's numbers for the engine's last benchmark scores.
    fn evaluation(&self, engine: Engine) -> Option<Result<Evaluation, String>> {
        let scored: Vec<ScoredRow> = engine.state.benchmark.get()?;
        let options = Options { step_threshold: self.threshold.get() };
        Some(evaluate(self.suite.get_untracked(), &scored, &options).map_err(|e| e.to_string()))
    }
}

/// A Hub dataset's data files (Parquet, JSON, JSONL), listed by the Hub API and fetched.
async fn hub_dataset_files(hub: &str, id: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    check_repo_id(id)?;
    let hub = hub.trim_end_matches('/');
    let listing = fetch_bytes(&format!("{hub}/api/datasets/{id}/revision/main")).await?;
    let info: serde_json::Value =
        serde_json::from_slice(&listing).map_err(|e| format!("the Hub's listing of {id} is not JSON: {e}"))?;
    let names: Vec<String> = info["siblings"]
        .as_array()
        .map(|s| s.iter().filter_map(|f| f["rfilename"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut files = Vec::new();
    for name in names.into_iter().filter(|n| rewardlens_eval::table::FileFormat::of_name(n).is_some()) {
        let bytes = fetch_bytes(&format!("{hub}/datasets/{id}/resolve/main/{name}")).await?;
        files.push((name, bytes));
    }
    if files.is_empty() {
        return Err(format!("dataset {id} has no Parquet, JSON or JSONL files"));
    }
    Ok(files)
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_str(url)).await.map_err(|e| format!("{url}: {e:?}"))?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| format!("{url}: not a response"))?;
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let buf = JsFuture::from(resp.array_buffer().map_err(|e| format!("{url}: {e:?}"))?)
        .await
        .map_err(|e| format!("{url}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// The Evaluate tab's controls.
#[component]
pub fn EvaluateInputs() -> impl IntoView {
    let eval = expect_context::<EvalState>();
    view! {
        <div class="row">
            <label>
                "Suite "
                <select
                    id="eval-suite"
                    on:change=move |ev| {
                        if let Ok(s) = Suite::parse(&event_target_value(&ev)) {
                            eval.suite.set(s);
                        }
                    }
                    prop:value=move || eval.suite.get().name()
                >
                    <option value="rewardbench">"RewardBench (allenai/reward-bench, filtered)"</option>
                    <option value="rewardbench2">"RewardBench 2 (allenai/reward-bench-2)"</option>
                    <option value="rm-bench">"RM-Bench (THU-KEG/RM-Bench)"</option>
                    <option value="processbench">"ProcessBench (Qwen/ProcessBench)"</option>
                </select>
            </label>
        </div>
        <label class="block">
            "The suite's files as published (Parquet, JSON or JSONL; several files are its splits): "
            <input
                id="eval-files"
                type="file"
                multiple=true
                accept=".parquet,.jsonl,.json"
                on:change=move |ev| {
                    let input: web_sys::HtmlInputElement = event_target(&ev);
                    if let Some(list) = input.files() {
                        eval.pick(list);
                    }
                }
            />
        </label>
        <p id="eval-file-names">{move || eval.file_names.get().join(", ")}</p>
        <label class="block">
            "…or a Hub dataset id (used when no file is picked): "
            <input
                id="eval-hub"
                type="text"
                placeholder="allenai/reward-bench-2"
                prop:value=move || eval.hub_id.get()
                on:input=move |ev| eval.hub_id.set(event_target_value(&ev))
            />
        </label>
        <Show when=move || eval.suite.get() == Suite::ProcessBench>
            <div class="row">
                <label>
                    "Step convention "
                    <select id="eval-prm" on:change=move |ev| eval.convention.set(event_target_value(&ev))>
                        <option value="auto">"the model's"</option>
                        <option value="qwen">"qwen"</option>
                        <option value="shepherd">"shepherd"</option>
                        <option value="value">"value"</option>
                        <option value="prefix">"prefix (outcome RM)"</option>
                    </select>
                </label>
                <label>
                    " First error: the first step below "
                    <input
                        id="eval-threshold"
                        type="number"
                        step="0.05"
                        prop:value=move || eval.threshold.get().to_string()
                        on:change=move |ev| {
                            if let Ok(t) = event_target_value(&ev).parse() {
                                eval.threshold.set(t);
                            }
                        }
                    />
                </label>
            </div>
        </Show>
    }
}

/// Opens a row in the normal response view: its answers (chosen first) scored after its
/// prompt, or a ProcessBench solution with its steps.
fn open_row(row: &Row, inputs: Inputs, engine: Engine) {
    match row {
        Row::Preference(p) => {
            let prompt = match &p.prompt {
                serde_json::Value::String(s) => s.clone(),
                other => other
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            };
            inputs.set_responses(prompt, p.chosen.iter().chain(&p.rejected).cloned().collect());
            inputs.steps.on.set(false);
        }
        Row::Steps(s) => {
            inputs.set_responses(s.problem.clone(), vec![s.answer_and_steps().0]);
            inputs.steps.on.set(true);
            inputs.steps.split.set("blank".into());
        }
    }
    inputs.mode.set(Mode::Responses);
    inputs.score(engine);
}

/// The results: table with bars, the wrong rows, the export.
#[component]
pub fn EvalView(engine: Engine, inputs: Inputs) -> impl IntoView {
    let eval = expect_context::<EvalState>();
    move || {
        let evaluation = eval.evaluation(engine)?;
        let e =
            match evaluation {
                Ok(e) => e,
                Err(message) => return Some(
                    view! { <section class="panel" id="eval"><p class="error" id="eval-error">{message}</p></section> }
                        .into_any(),
                ),
            };
        let rows = eval.rows.get_value();
        let lines = e.lines.iter().map(|l| {
            let width = format!("width: {:.1}%", l.score.clamp(0.0, 100.0));
            view! {
                <tr class:section=l.section data-name=l.name.clone() data-rows=l.rows.to_string() data-score=l.score.to_string()>
                    <td>{l.name.clone()}</td>
                    <td class="num">{l.rows}</td>
                    <td class="num">{format!("{:.2}", l.score)}</td>
                    <td class="bar-cell"><div class="bar" style=width></div></td>
                </tr>
            }
        }).collect_view();
        let wrong = e
            .wrong
            .iter()
            .take(500)
            .map(|(subset, id)| {
                let row = rows.iter().find(|r| r.subset() == subset && r.id() == id).cloned();
                let label = format!("{subset} · {id}");
                view! {
                    <li>
                        <button class="wrong-row link" data-subset=subset.clone() data-id=id.clone()
                            on:click=move |_| if let Some(r) = &row { open_row(r, inputs, engine) }>
                            {label}
                        </button>
                    </li>
                }
            })
            .collect_view();
        let export = results_document(&e, eval, engine);
        let (name, score) = e.headline.clone();
        Some(view! {
            <section class="panel" id="eval" aria-labelledby="eval-heading">
                <h2 id="eval-heading">{format!("{} results", e.suite)}</h2>
                <p id="eval-source">{eval.source.get_value()}</p>
                <table id="eval-table">
                    <thead><tr><th>"Subset"</th><th>"Rows"</th><th>{if e.suite == Suite::ProcessBench { "F1" } else { "Score (%)" }}</th><th></th></tr></thead>
                    <tbody>{lines}</tbody>
                </table>
                <p id="eval-headline" data-name=name.clone() data-score=score.to_string()>
                    <strong>{format!("{name}: {score:.2}")}</strong>
                </p>
                <details id="eval-wrong" data-count=e.wrong.len().to_string()>
                    <summary>{format!("{} rows the model got wrong (open one to see its scores)", e.wrong.len())}</summary>
                    <ul>{wrong}</ul>
                </details>
                <button id="eval-export" on:click=move |_| download("rewardlens-eval.json", "application/json", &export)>
                    "Download results JSON"
                </button>
            </section>
        }.into_any())
    }
}

/// The results JSON as `rewardlens eval --out` writes it: the reference layout, and ours under
/// `rewardlens`.
fn results_document(e: &Evaluation, eval: EvalState, engine: Engine) -> String {
    let mut results = e.results.clone();
    if let serde_json::Value::Object(o) = &mut results {
        let model = engine.state.model.get_untracked();
        o.insert(
            "rewardlens".into(),
            serde_json::json!({
                "suite": e.suite.name(),
                "data": eval.source.get_value(),
                "model": model.as_ref().map(|m| m.source.clone()),
                "backend": model.as_ref().map(|m| m.backend.clone()),
                "rows": eval.rows.with_value(Vec::len),
                "table": e.lines,
                "step_threshold": (e.suite == Suite::ProcessBench).then(|| eval.threshold.get_untracked()),
            }),
        );
    }
    serde_json::to_string_pretty(&results).expect("JSON values serialize") + "\n"
}
