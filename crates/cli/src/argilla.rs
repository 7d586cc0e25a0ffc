//! `rewardlens argilla`: a reward model's suggestions on an Argilla 2.x dataset through its REST
//! API (`/api/v1`, `X-Argilla-Api-Key`): each record's responses scored after its prompt, the
//! suggestion written with `PUT /api/v1/records/{id}/suggestions` (`type: model`,
//! `agent: rewardlens/<model>`), as the question needs it — a ranking of the responses, the
//! label of the best one, or a rating of one response. Records that already carry this agent's
//! suggestion for the question are skipped, so an interrupted run is continued by running it again.

use crate::backend::{Backend, BackendArgs, PassArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_core::types::prompt_response;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(clap::Args)]
// `--api-key` is Argilla's here; a scoring endpoint's key is --endpoint-api-key (or
// REWARDLENS_API_KEY).
#[command(mut_arg("api_key", |a| a.long("endpoint-api-key")))]
pub struct ArgillaArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// The Argilla server, e.g. http://localhost:6900.
    #[arg(long)]
    api_url: String,
    /// An Argilla API key (sent as X-Argilla-Api-Key).
    #[arg(
        long = "api-key",
        id = "argilla_api_key",
        value_name = "KEY",
        env = "ARGILLA_API_KEY",
        hide_env_values = true
    )]
    argilla_api_key: String,
    /// The dataset's name.
    #[arg(long)]
    dataset: String,
    /// The workspace's name, when several have a dataset of that name.
    #[arg(long)]
    workspace: Option<String>,
    /// The question to suggest for: ranking (the responses ranked), label_selection (one label
    /// per response: the best one's) or rating (one response, rated on its scale).
    #[arg(long)]
    question: String,
    /// The text field holding the prompt [default: prompt, question, instruction, input, query].
    #[arg(long)]
    prompt_field: Option<String>,
    /// The text fields holding the responses, in the question's option order (comma-separated)
    /// [default: the ranking options that name fields, else the other text fields].
    #[arg(long, value_delimiter = ',')]
    response_fields: Vec<String>,
    /// Print the suggestions as JSON lines instead of writing them.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    pass: PassArgs,
}

const PROMPT_FIELDS: [&str; 5] = ["prompt", "question", "instruction", "input", "query"];
/// Records per page (Argilla allows 1 to 1000).
const PAGE: usize = 100;

/// The question and how its suggestion is built.
enum Kind {
    /// Options in order, each a response.
    Ranking(Vec<String>),
    /// Options in order, each a response.
    Label(Vec<String>),
    /// The rating scale (sorted).
    Rating(Vec<i64>),
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        self.runtime.block_on(async {
            let mut req = self.http.request(method.clone(), &url).header("X-Argilla-Api-Key", &self.key);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let text = resp.text().await.with_context(|| format!("{method} {url}: reading the answer"))?;
            if !status.is_success() {
                let detail = serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("detail").cloned());
                bail!("{method} {url}: HTTP {status}: {}", detail.map_or(text, |d| d.to_string()));
            }
            serde_json::from_str(&text).with_context(|| format!("{method} {url}: the answer is not JSON"))
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }

    fn items(&self, path: &str) -> Result<Vec<Value>> {
        let v = self.get(path)?;
        v.get("items").and_then(Value::as_array).cloned().with_context(|| format!("{path}: no `items` in {v}"))
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The agent name Argilla accepts (letters, digits, `-_:./` and spaces; at most 200).
fn agent(model: &str) -> String {
    let clean: String =
        model.chars().map(|c| if c.is_ascii_alphanumeric() || "-_:./ ".contains(c) { c } else { '_' }).collect();
    format!("rewardlens/{clean}").chars().take(200).collect()
}

pub fn run(args: ArgillaArgs) -> Result<ExitCode> {
    let client = Client {
        base: args.api_url.trim_end_matches('/').to_owned(),
        key: args.argilla_api_key.clone(),
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?,
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };

    // The dataset, by name (and workspace).
    let mut datasets: Vec<Value> =
        client.items("/me/datasets")?.into_iter().filter(|d| str_of(d, "name") == args.dataset).collect();
    if let Some(w) = &args.workspace {
        let ids: Vec<String> = client
            .items("/me/workspaces")?
            .iter()
            .filter(|x| str_of(x, "name") == w)
            .map(|x| str_of(x, "id").to_owned())
            .collect();
        datasets.retain(|d| ids.iter().any(|id| id == str_of(d, "workspace_id")));
    }
    let dataset = match datasets.as_slice() {
        [one] => str_of(one, "id").to_owned(),
        [] => bail!("no dataset named `{}`{} that this API key can see", args.dataset, in_workspace(&args.workspace)),
        _ => bail!("{} datasets are named `{}`: give --workspace", datasets.len(), args.dataset),
    };

    // The question and the fields.
    let questions = client.items(&format!("/datasets/{dataset}/questions"))?;
    let question = questions.iter().find(|q| str_of(q, "name") == args.question).with_context(|| {
        let names: Vec<&str> = questions.iter().map(|q| str_of(q, "name")).collect();
        format!("the dataset has no question `{}` (its questions: {})", args.question, names.join(", "))
    })?;
    let question_id = str_of(question, "id").to_owned();
    let settings = &question["settings"];
    let options: Vec<Value> = settings["options"].as_array().cloned().unwrap_or_default();
    let option_values = || options.iter().map(|o| o["value"].as_str().unwrap_or_default().to_owned()).collect();
    let kind = match str_of(settings, "type") {
        "ranking" => Kind::Ranking(option_values()),
        "label_selection" => Kind::Label(option_values()),
        "rating" => {
            let mut scale: Vec<i64> = options.iter().filter_map(|o| o["value"].as_i64()).collect();
            scale.sort_unstable();
            Kind::Rating(scale)
        }
        other => bail!(
            "question `{}` is of type `{other}`; rewardlens suggests for ranking, label_selection and rating questions",
            args.question
        ),
    };
    let fields = client.items(&format!("/datasets/{dataset}/fields"))?;
    let text_fields: Vec<String> = fields
        .iter()
        .filter(|f| str_of(&f["settings"], "type") == "text")
        .map(|f| str_of(f, "name").to_owned())
        .collect();
    let prompt_field = match &args.prompt_field {
        Some(p) => p.clone(),
        None => {
            PROMPT_FIELDS.iter().find(|p| text_fields.iter().any(|f| f == *p)).map(|p| p.to_string()).with_context(
                || format!("no prompt field: give --prompt-field (text fields: {})", text_fields.join(", ")),
            )?
        }
    };
    let others: Vec<String> = text_fields.iter().filter(|f| **f != prompt_field).cloned().collect();
    let response_fields = if !args.response_fields.is_empty() {
        args.response_fields.clone()
    } else {
        match &kind {
            Kind::Ranking(opts) if opts.iter().all(|o| text_fields.contains(o)) => opts.clone(),
            _ => others.clone(),
        }
    };
    for f in std::iter::once(&prompt_field).chain(&response_fields) {
        if !text_fields.contains(f) {
            bail!("`{f}` is not a text field of the dataset (text fields: {})", text_fields.join(", "));
        }
    }
    match &kind {
        Kind::Ranking(opts) | Kind::Label(opts) if opts.len() != response_fields.len() => bail!(
            "question `{}` has {} options ({}) for {} response fields ({}): give --response-fields in option order",
            args.question,
            opts.len(),
            opts.join(", "),
            response_fields.len(),
            response_fields.join(", ")
        ),
        Kind::Rating(_) if response_fields.len() != 1 => bail!(
            "a rating question rates one response; the dataset has {} response fields ({}): give --response-fields",
            response_fields.len(),
            response_fields.join(", ")
        ),
        Kind::Rating(scale) if scale.is_empty() => bail!("question `{}` has no rating options", args.question),
        _ => {}
    }

    let (backend, _) = Backend::open(&args.backend)?;
    let model = args.backend.model.clone().unwrap_or_else(|| "endpoint".into());
    let agent = agent(&model);
    let policy = args.pass.policy();

    let (mut offset, mut total) = (0usize, None::<usize>);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records (eta {eta})")
            .expect("valid template"),
    );
    let (mut written, mut skipped_ours) = (0usize, 0usize);
    loop {
        let page =
            client.get(&format!("/datasets/{dataset}/records?include=suggestions&offset={offset}&limit={PAGE}"))?;
        let records = page["items"].as_array().cloned().unwrap_or_default();
        if total.is_none() {
            let t = page["total"].as_u64().unwrap_or(records.len() as u64) as usize;
            bar.set_length(t as u64);
            total = Some(t);
        }
        if records.is_empty() {
            break;
        }
        offset += records.len();
        for record in &records {
            bar.inc(1);
            let id = str_of(record, "id").to_owned();
            let ours = record["suggestions"].as_array().is_some_and(|s| {
                s.iter().any(|x| str_of(x, "question_id") == question_id && str_of(x, "agent") == agent)
            });
            if ours {
                skipped_ours += 1;
                continue;
            }
            let text = |f: &str| -> Result<String> {
                record["fields"][f]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("record {id}: field `{f}` is missing or not text"))
            };
            let prompt = text(&prompt_field)?;
            let prepared = response_fields
                .iter()
                .map(|f| backend.prepare(&prompt_response(&prompt, &text(f)?), &policy))
                .collect::<Result<Vec<_>>>()?;
            let (scores, _) = backend.score(prepared, args.pass.batch_size).with_context(|| format!("record {id}"))?;
            let rewards: Vec<f32> = scores.iter().map(|s| s.score()).collect();
            let mut suggestion = suggestion(&kind, &rewards);
            suggestion["question_id"] = json!(question_id);
            suggestion["type"] = json!("model");
            suggestion["agent"] = json!(agent);
            if args.dry_run {
                bar.suspend(|| println!("{}", json!({"record_id": id, "suggestion": suggestion})));
            } else {
                client.call(reqwest::Method::PUT, &format!("/records/{id}/suggestions"), Some(&suggestion))?;
            }
            written += 1;
        }
        if offset >= total.unwrap_or(0) {
            break;
        }
    }
    bar.finish_and_clear();
    let verb = if args.dry_run { "would write" } else { "wrote" };
    eprintln!(
        "{verb} {written} suggestion(s) for `{}` as {agent}; {skipped_ours} record(s) already had one",
        args.question
    );
    Ok(ExitCode::SUCCESS)
}

fn in_workspace(w: &Option<String>) -> String {
    w.as_ref().map(|w| format!(" in workspace `{w}`")).unwrap_or_default()
}

/// The suggestion's `value` and `score` (within [0, 1], as Argilla requires): a ranking with
/// each response's probability of being the best (softmax of the rewards); the best response's
/// label with the probability that it beats the runner-up; a rating on the question's scale
/// (the sigmoid of the reward spread over it) with that sigmoid.
fn suggestion(kind: &Kind, rewards: &[f32]) -> Value {
    match kind {
        Kind::Ranking(options) => {
            let order = rewardlens_core::ranking(rewards);
            let p = rewardlens_core::softmax(rewards);
            json!({
                "value": order.iter().enumerate().map(|(rank, &i)| json!({"value": options[i], "rank": rank + 1})).collect::<Vec<_>>(),
                "score": order.iter().map(|&i| f64::from(p[i])).collect::<Vec<_>>(),
            })
        }
        Kind::Label(options) => {
            let (best, confidence) = rewardlens_core::best_with_confidence(rewards);
            json!({"value": options[best], "score": f64::from(confidence)})
        }
        Kind::Rating(scale) => {
            let p = f64::from(rewardlens_core::sigmoid(rewards[0]));
            let (lo, hi) = (scale[0] as f64, scale[scale.len() - 1] as f64);
            let target = lo + p * (hi - lo);
            let value =
                scale.iter().copied().min_by(|a, b| (*a as f64 - target).abs().total_cmp(&(*b as f64 - target).abs()));
            json!({"value": value, "score": p})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_fit_each_question_type() {
        let r = suggestion(&Kind::Ranking(vec!["a".into(), "b".into(), "c".into()]), &[0.0, 2.0, 1.0]);
        assert_eq!(
            r["value"],
            json!([{"value": "b", "rank": 1}, {"value": "c", "rank": 2}, {"value": "a", "rank": 3}])
        );
        let s: Vec<f64> = r["score"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1]) && (s.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{s:?}");
        let l = suggestion(&Kind::Label(vec!["A".into(), "B".into()]), &[1.0, -1.0]);
        assert_eq!(l["value"], "A");
        assert!((l["score"].as_f64().unwrap() - f64::from(rewardlens_core::sigmoid(2.0))).abs() < 1e-6);
        let g = suggestion(&Kind::Rating(vec![1, 2, 3, 4, 5]), &[0.0]);
        assert_eq!((g["value"].clone(), g["score"].as_f64().unwrap()), (json!(3), 0.5));
        assert_eq!(suggestion(&Kind::Rating(vec![1, 2, 3, 4, 5]), &[10.0])["value"], 5);
        assert_eq!(agent("Skywork/Skywork-Reward-V2-Qwen3-0.6B"), "rewardlens/Skywork/Skywork-Reward-V2-Qwen3-0.6B");
        assert_eq!(agent("~/m+1"), "rewardlens/_/m_1");
    }
}
