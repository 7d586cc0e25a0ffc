//! Scores per response: rank, raw score, a bar scaled across the responses, attribute bars for
//! multi-label models, the pairwise preference matrix, timing, and exports.

use super::engine::Engine;
use super::{download, human_bytes};
use crate::export::Comparison;
use crate::protocol::{StepView, TokenScore};
use leptos::prelude::*;

/// Width of each bar in percent: scores mapped linearly from the lowest (5%) to the highest (100%).
fn bar_widths(scores: &[f32]) -> Vec<f32> {
    let (lo, hi) = scores.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &s| (l.min(s), h.max(s)));
    scores.iter().map(|&s| if hi > lo { 5.0 + 95.0 * (s - lo) / (hi - lo) } else { 100.0 }).collect()
}

#[component]
pub fn ResultsView(engine: Engine, threshold: RwSignal<f32>) -> impl IntoView {
    move || engine.state.results.get().map(|c| view! { <ComparisonView c threshold /> })
}

/// Background for a reward: red to green. Probabilities (the PRM conventions) map as they are;
/// raw scores (prefix, token logits) are spread over their own range.
fn reward_color(v: f32, lo: f32, hi: f32) -> String {
    let t = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
    format!("hsl({:.0}, 70%, 78%)", 120.0 * t)
}

fn range(values: &[f32], probability: bool) -> (f32, f32) {
    if probability {
        return (0.0, 1.0);
    }
    values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// Step rewards under one response: a cell per step (the first below the threshold marked),
/// a step table, and the token heatmap when asked for.
#[component]
fn StepsView(
    index: usize,
    steps: Option<StepView>,
    tokens: Option<Vec<TokenScore>>,
    error: Option<String>,
    threshold: RwSignal<f32>,
) -> impl IntoView {
    let error = error.map(|e| {
        let text = if steps.is_some() { e } else { format!("No step rewards: {e}") };
        view! { <p class="step-error" role="alert">{text}</p> }
    });
    let steps_view = steps.map(|sv| {
        let probability = sv.convention != "prefix";
        let (lo, hi) = range(&sv.scores, probability);
        let scores = sv.scores.clone();
        let first_bad = Memo::new(move |_| scores.iter().position(|&v| v < threshold.get()));
        let cells = sv
            .steps
            .iter()
            .zip(&sv.scores)
            .enumerate()
            .map(|(i, (step, &v))| {
                let is_bad = move || first_bad.get() == Some(i);
                let label = format!("Step {}: {:.3}. {}", i + 1, v, step.text);
                view! {
                    <span
                        class="step-cell"
                        class:first-bad=is_bad
                        tabindex="0"
                        role="listitem"
                        aria-label=label.clone()
                        title=label
                        data-step=i.to_string()
                        data-score=v.to_string()
                        style:background-color=reward_color(v, lo, hi)
                    >
                        {format!("{v:.2}")}
                        {move || is_bad().then(|| view! { <span class="first-bad-mark" aria-hidden="true">" ✗"</span> })}
                    </span>
                }
            })
            .collect_view();
        let table_rows = sv
            .steps
            .iter()
            .zip(&sv.scores)
            .enumerate()
            .map(|(i, (step, &v))| {
                view! {
                    <tr>
                        <td>{i + 1}</td>
                        <td class="step-score">{format!("{v:.4}")}</td>
                        <td class="step-text">{step.text.clone()}</td>
                    </tr>
                }
            })
            .collect_view();
        let summary = move || match first_bad.get() {
            Some(i) => format!("first step below {}: step {}", threshold.get(), i + 1),
            None => format!("no step below {}", threshold.get()),
        };
        view! {
            <div class="steps" data-convention=sv.convention.clone()>
                <span class="steps-label">{format!("Steps ({}):", sv.convention)}</span>
                <span class="step-cells" role="list">{cells}</span>
                <span class="first-bad-summary" data-first-bad=move || first_bad.get().map_or(String::new(), |i| i.to_string())>
                    {summary}
                </span>
                <details class="step-table">
                    <summary>"Step table"</summary>
                    <table>
                        <thead><tr><th scope="col">"Step"</th><th scope="col">"Reward"</th><th scope="col">"Text"</th></tr></thead>
                        <tbody>{table_rows}</tbody>
                    </table>
                </details>
            </div>
        }
    });
    let heatmap = tokens.map(|ts| {
        let values: Vec<f32> = ts.iter().map(|t| t.score).collect();
        let (lo, hi) = range(&values, false);
        view! {
            <div class="token-heatmap" aria-label="reward per token of the answer">
                {ts
                    .into_iter()
                    .map(|t| {
                        let title = format!("{:?}: {:.3}", t.text, t.score);
                        view! {
                            <span class="token" title=title data-score=t.score.to_string() style:background-color=reward_color(t.score, lo, hi)>
                                {t.text}
                            </span>
                        }
                    })
                    .collect_view()}
            </div>
        }
    });
    view! {
        <tr class="steps-row" data-index=index.to_string()>
            <td></td>
            <td colspan="7">{error}{steps_view}{heatmap}</td>
        </tr>
    }
}

#[component]
fn ComparisonView(c: Comparison, threshold: RwSignal<f32>) -> impl IntoView {
    let ranks = c.ranks();
    let widths = bar_widths(&c.scores());
    let multi = c.labels.len() > 1;
    let matrix = c.preference_matrix();
    let n = c.results.len();
    let json = serde_json::to_string_pretty(&c.to_json()).expect("JSON values serialize");
    let csv = c.to_csv();
    let attr_ranges: Vec<(f32, f32)> = (0..c.labels.len())
        .map(|j| {
            c.results
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), r| (l.min(r.logits[j]), h.max(r.logits[j])))
        })
        .collect();
    let rows = c
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let text = c.responses.get(i).cloned().unwrap_or_default();
            let tps = r.tokens as f64 / (r.ms / 1000.0).max(1e-9);
            let attrs = multi.then(|| {
                c.labels
                    .iter()
                    .zip(&r.logits)
                    .zip(&attr_ranges)
                    .map(|((l, &v), &(lo, hi))| {
                        let w = if hi > lo { 5.0 + 95.0 * (v - lo) / (hi - lo) } else { 100.0 };
                        view! {
                            <div class="attr">
                                <span class="attr-name">{l.clone()}</span>
                                <span class="bar" aria-hidden="true"><span style:width=format!("{w:.1}%")></span></span>
                                <span class="attr-value" data-label=l.clone() data-value=v.to_string()>{format!("{v:.3}")}</span>
                            </div>
                        }
                    })
                    .collect_view()
            });
            view! {
                <tr class="result" class:best=ranks[i] == 1 data-index=i.to_string()>
                    <td>{i + 1}</td>
                    <td class="rank" data-rank=ranks[i].to_string()>{format!("#{}", ranks[i])}</td>
                    <td class="score" data-score=r.score.to_string()>{format!("{:.4}", r.score)}</td>
                    <td class="bar-cell">
                        <span class="bar" role="img" aria-label=format!("score bar {:.0}%", widths[i])>
                            <span style:width=format!("{:.1}%", widths[i])></span>
                        </span>
                        {attrs}
                    </td>
                    <td class="tokens">
                        {r.tokens}
                        {(r.truncated_tokens > 0).then(|| format!(" (+{} cut)", r.truncated_tokens))}
                    </td>
                    <td>{format!("{:.0} ms", r.ms)}</td>
                    <td>{format!("{tps:.0}")}</td>
                    <td class="text">{text}</td>
                </tr>
                {(r.steps.is_some() || r.token_scores.is_some() || r.step_error.is_some()).then(|| {
                    view! {
                        <StepsView
                            index=i
                            steps=r.steps.clone()
                            tokens=r.token_scores.clone()
                            error=r.step_error.clone()
                            threshold
                        />
                    }
                })}
            }
        })
        .collect_view();
    let matrix_view = (n > 1).then(|| {
        view! {
            <h3>"Preference probability P(row ≻ column) = σ(r_row − r_column)"</h3>
            <table id="preference-matrix" class="matrix">
                <thead>
                    <tr>
                        <th></th>
                        {(0..n).map(|j| view! { <th scope="col">{j + 1}</th> }).collect_view()}
                    </tr>
                </thead>
                <tbody>
                    {matrix
                        .iter()
                        .enumerate()
                        .map(|(i, row)| {
                            view! {
                                <tr>
                                    <th scope="row">{i + 1}</th>
                                    {row
                                        .iter()
                                        .enumerate()
                                        .map(|(j, &p)| {
                                            let shade = format!("rgba(46, 125, 50, {:.2})", if i == j { 0.0 } else { p * 0.6 });
                                            view! {
                                                <td style:background-color=shade data-p=p.to_string()>
                                                    {if i == j { "—".to_owned() } else { format!("{p:.3}") }}
                                                </td>
                                            }
                                        })
                                        .collect_view()}
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        }
    });
    let total_tokens: usize = c.results.iter().map(|r| r.tokens).sum();
    let total_ms: f64 = c.results.iter().map(|r| r.ms).sum();
    view! {
        <section class="panel" id="results" aria-labelledby="results-heading" data-backend=c.backend.clone()>
            <h2 id="results-heading">"Results"</h2>
            <p class="info">
                "Scored by " <strong id="backend">{c.backend.clone()}</strong> " · " {c.model.clone()} " · "
                {format!(
                    "{total_tokens} tokens in {:.2} s ({:.0} tokens/s)",
                    total_ms / 1000.0,
                    total_tokens as f64 / (total_ms / 1000.0).max(1e-9)
                )}
            </p>
            <table id="scores">
                <thead>
                    <tr>
                        <th scope="col">"#"</th>
                        <th scope="col">"Rank"</th>
                        <th scope="col">"Score"</th>
                        <th scope="col">{if multi { "Score / attributes" } else { "Relative" }}</th>
                        <th scope="col">"Tokens"</th>
                        <th scope="col">"Time"</th>
                        <th scope="col">"Tokens/s"</th>
                        <th scope="col">"Response"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            {matrix_view}
            <div class="row">
                <button id="export-json" on:click=move |_| download("rewardlens-scores.json", "application/json", &json)>
                    "Export JSON"
                </button>
                <button id="export-csv" on:click=move |_| download("rewardlens-scores.csv", "text/csv", &csv)>
                    "Export CSV"
                </button>
            </div>
        </section>
    }
}

#[component]
pub fn BatchView(engine: Engine) -> impl IntoView {
    move || {
        engine.state.batch.get().map(|b| {
            let text = b.text.clone();
            let size = human_bytes(text.len() as u64);
            let preview: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
            view! {
                <section class="panel" id="batch" aria-labelledby="batch-heading">
                    <h2 id="batch-heading">"Batch results"</h2>
                    <p id="batch-summary" data-scored=b.scored.to_string() data-skipped=b.skipped.len().to_string()>
                        {format!("{} lines scored, {} skipped ({size})", b.scored, b.skipped.len())}
                    </p>
                    {b.preferences.clone().map(|p| view! { <p id="batch-preferences">{p}</p> })}
                    <ul class="skipped">{b.skipped.iter().map(|s| view! { <li>{s.clone()}</li> }).collect_view()}</ul>
                    <pre id="batch-output" class="preview">{preview}</pre>
                    <button
                        id="download-jsonl"
                        on:click=move |_| download("rewardlens-scored.jsonl", "application/x-ndjson", &text)
                    >
                        "Download scored JSONL"
                    </button>
                </section>
            }
        })
    }
}
