//! `rewardlens argilla` against a stand-in for Argilla 2.x's REST API (its server needs
//! Elasticsearch, which no package registry here provides): the stand-in answers the
//! documented shapes of `/api/v1/me/datasets`, `/datasets/{id}/questions|fields|records` (paged)
//! and records every `PUT /records/{id}/suggestions` body, which must be exactly what Argilla's
//! schema takes, with the fixture model's transformers goldens as the rewards.

mod common;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const KEY: &str = "argilla.apikey";
const PROMPT: &str = "What is the capital of France?";
const PARIS: &str = "The capital of France is Paris.";
const BERLIN: &str = "The capital of France is Berlin.";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen3-seq")
}

fn agent() -> String {
    format!("rewardlens/{}", fixture().display())
}

type Puts = Arc<Mutex<Vec<(String, Value)>>>;

fn record(id: &str, a: &str, b: &str, suggestions: Value) -> Value {
    json!({"id": id, "status": "pending", "fields": {"prompt": PROMPT, "response_1": a, "response_2": b},
           "metadata": null, "external_id": null, "suggestions": suggestions, "dataset_id": "ds-1",
           "inserted_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:00"})
}

/// The stand-in: three records served two per page; r2 already has this model's ranking.
fn stand_in() -> (String, Puts) {
    let puts: Puts = Arc::default();
    let seen = puts.clone();
    let records = [
        record("r1", PARIS, BERLIN, json!([])),
        record(
            "r2",
            BERLIN,
            PARIS,
            json!([{"id": "s", "question_id": "q-rank", "type": "model", "agent": agent(),
                                             "value": [], "score": null}]),
        ),
        record(
            "r3",
            PARIS,
            BERLIN,
            json!([{"id": "s", "question_id": "q-rank", "type": "model", "agent": "someone-else",
                                             "value": [], "score": null}]),
        ),
    ];
    let url = common::stand_in_server(move |req| {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let param = |k: &str| {
            query.split('&').find_map(|p| p.strip_prefix(&format!("{k}="))).map(str::to_owned).unwrap_or_default()
        };
        let (status, answer) = if req.header("x-argilla-api-key") != Some(KEY) {
            (401, json!({"detail": "Could not validate credentials"}))
        } else {
            match (req.method.as_str(), path) {
                ("GET", "/api/v1/me/datasets") => (
                    200,
                    json!({"items": [
                    {"id": "ds-1", "name": "prefs", "workspace_id": "ws-1", "status": "ready"},
                    {"id": "ds-2", "name": "other", "workspace_id": "ws-1", "status": "ready"}]}),
                ),
                ("GET", "/api/v1/datasets/ds-1/questions") => (
                    200,
                    json!({"items": [
                    {"id": "q-rank", "name": "rank", "settings": {"type": "ranking", "options": [
                        {"value": "response_1", "text": "Response 1"}, {"value": "response_2", "text": "Response 2"}]}},
                    {"id": "q-best", "name": "best", "settings": {"type": "label_selection", "options": [
                        {"value": "A", "text": "A"}, {"value": "B", "text": "B"}]}},
                    {"id": "q-why", "name": "why", "settings": {"type": "text", "use_markdown": false}}]}),
                ),
                ("GET", "/api/v1/datasets/ds-1/fields") => (
                    200,
                    json!({"items": [
                    {"id": "f1", "name": "prompt", "settings": {"type": "text", "use_markdown": false}},
                    {"id": "f2", "name": "response_1", "settings": {"type": "text", "use_markdown": false}},
                    {"id": "f3", "name": "response_2", "settings": {"type": "text", "use_markdown": false}}]}),
                ),
                ("GET", "/api/v1/datasets/ds-1/records") => {
                    assert_eq!(param("include"), "suggestions");
                    let offset: usize = param("offset").parse().unwrap();
                    let page: Vec<Value> = records.iter().skip(offset).take(2).cloned().collect();
                    (200, json!({"items": page, "total": records.len()}))
                }
                ("PUT", p) if p.starts_with("/api/v1/records/") && p.ends_with("/suggestions") => {
                    let id = p.trim_start_matches("/api/v1/records/").trim_end_matches("/suggestions").to_owned();
                    let body: Value = serde_json::from_slice(&req.body).unwrap();
                    seen.lock().unwrap().push((id, body.clone()));
                    (
                        201,
                        json!({"id": "new", "question_id": body["question_id"], "type": body["type"],
                                 "value": body["value"], "agent": body["agent"], "score": body["score"]}),
                    )
                }
                (method, _) => (404, json!({"detail": format!("no route {method} {path}")})),
            }
        };
        (status, "application/json", answer.to_string().into_bytes())
    });
    (url, puts)
}

fn argilla(url: &str, key: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["argilla", "--api-url", url, "--api-key", key, "--dataset", "prefs", "--model"])
        .arg(fixture())
        .args(extra)
        .output()
        .unwrap()
}

fn rewards() -> (f64, f64) {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap()).unwrap();
    assert_eq!(g["conversations"]["simple"]["messages"][1]["content"], PARIS);
    assert_eq!(g["conversations"]["wrong"]["messages"][1]["content"], BERLIN);
    let logit = |case: &str| g["conversations"][case]["logits"][0].as_f64().unwrap();
    (logit("simple"), logit("wrong"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() <= 1e-4)
}

#[test]
fn rankings_and_labels_are_written_as_argillas_schema_takes_them() {
    let (url, puts) = stand_in();
    let (paris, berlin) = rewards();
    let o = argilla(&url, KEY, &["--question", "rank"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("wrote 2 suggestion(s) for `rank`") && err.contains("1 record(s) already had one"), "{err}");
    let got = std::mem::take(&mut *puts.lock().unwrap());
    assert_eq!(got.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["r1", "r3"], "r2 has this model's ranking");
    // r1 and r3: response_1 is Paris, response_2 Berlin; the softmax of the two rewards.
    let (first, second) = if paris > berlin { ("response_1", "response_2") } else { ("response_2", "response_1") };
    let p_best = 1.0 / (1.0 + (-(paris - berlin).abs()).exp());
    for (_, body) in &got {
        let mut b = body.clone();
        let score = b.as_object_mut().unwrap().remove("score").unwrap();
        assert_eq!(
            b,
            json!({"question_id": "q-rank", "type": "model", "agent": agent(),
                   "value": [{"value": first, "rank": 1}, {"value": second, "rank": 2}]})
        );
        assert!(close(&score[0], p_best) && close(&score[1], 1.0 - p_best), "{score}");
    }

    let o = argilla(&url, KEY, &["--question", "best", "--response-fields", "response_1,response_2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = std::mem::take(&mut *puts.lock().unwrap());
    assert_eq!(got.len(), 3, "no label suggestion yet on any record");
    for (id, body) in &got {
        let paris_first = id != "r2";
        let a_wins = (paris > berlin) == paris_first;
        assert_eq!(body["value"], if a_wins { "A" } else { "B" }, "{id}: {body}");
        assert!(close(&body["score"], p_best), "{id}: {body}");
        assert_eq!((body["question_id"].as_str(), body["type"].as_str()), (Some("q-best"), Some("model")));
    }

    // A dry run writes nothing and prints what it would write.
    let o = argilla(&url, KEY, &["--question", "best", "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(puts.lock().unwrap().is_empty());
    let lines: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["record_id"], "r1");
    assert_eq!(lines[0]["suggestion"]["question_id"], "q-best");
}

#[test]
fn wrong_names_types_and_keys_are_named() {
    let (url, puts) = stand_in();
    for (args, key, want) in [
        (vec!["--question", "nope"], KEY, "the dataset has no question `nope` (its questions: rank, best, why)"),
        (
            vec!["--question", "why"],
            KEY,
            "question `why` is of type `text`; rewardlens suggests for ranking, label_selection and rating",
        ),
        (vec!["--question", "rank"], "wrong", "HTTP 401 Unauthorized: \"Could not validate credentials\""),
        (
            vec!["--question", "rank", "--response-fields", "response_1"],
            KEY,
            "question `rank` has 2 options (response_1, response_2) for 1 response fields",
        ),
        (vec!["--question", "rank", "--prompt-field", "title"], KEY, "`title` is not a text field of the dataset"),
    ] {
        let o = argilla(&url, key, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
    assert!(puts.lock().unwrap().is_empty());
}
