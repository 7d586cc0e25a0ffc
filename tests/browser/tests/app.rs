//! The web app in headless Chromium, against the scores transformers computed for the fixture
//! models. Run by `cargo xtask test` after `cargo xtask dist` (ignored in a plain `cargo test`,
//! which has neither the built app nor necessarily a browser).

use rewardlens_browser_tests::{dist_dir, repo_root, Browser, StaticServer};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const LOAD: Duration = Duration::from_secs(120);

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/models")
}

fn golden(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(model).join("golden.json")).unwrap()).unwrap()
}

fn golden_logits(g: &Value, case: &str) -> Vec<f64> {
    g["conversations"][case]["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn server() -> StaticServer {
    StaticServer::start(vec![("/fixtures/".into(), fixtures()), ("/".into(), dist_dir())], true)
}

fn artifacts() -> PathBuf {
    repo_root().join("target/browser-artifacts")
}

/// |shown - transformers| within 1e-3 (wasm's f32 sums differ from PyTorch's in the last bits).
fn assert_close(shown: &str, expected: f64, what: &str) {
    let v: f64 = shown.parse().unwrap_or_else(|_| panic!("{what}: `{shown}` is not a number"));
    assert!((v - expected).abs() <= 1e-3 * expected.abs().max(1.0), "{what}: shown {v}, transformers {expected}");
}

fn load(b: &Browser, model_url: &str) {
    b.wait_for("#status[data-phase='idle']", LOAD);
    b.fill("#model-input", model_url);
    b.click("#load");
    if let Err(e) = b.wait_for_either("#model-info", "#error", LOAD) {
        panic!("loading {model_url} failed: {e}\nconsole:\n{}", b.console());
    }
}

fn score_responses(b: &Browser, prompt: &str, responses: &[&str]) {
    b.click("#tab-responses");
    b.fill("#prompt", prompt);
    // Make exactly `responses.len()` editors.
    while b.attrs("#responses textarea", "aria-label").len() > responses.len() {
        b.click("#responses .remove");
    }
    while b.attrs("#responses textarea", "aria-label").len() < responses.len() {
        b.click("#add-response");
    }
    for (i, r) in responses.iter().enumerate() {
        b.fill(&format!("#responses li:nth-child({}) textarea", i + 1), r);
    }
    b.click("#score");
    if let Err(e) = b.wait_for_either("#results", "#error", LOAD) {
        panic!("scoring failed: {e}\nconsole:\n{}", b.console());
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn scores_in_the_page_match_transformers() {
    let srv = server();
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    assert_eq!(b.attr("#simd", "data-supported").as_deref(), Some("true"));

    // Qwen3, single safetensors file, through the UI.
    load(&b, &format!("{}/fixtures/qwen3-seq", srv.url));
    let g = golden("qwen3-seq");
    let paris = "The capital of France is Paris.";
    let berlin = "The capital of France is Berlin.";
    score_responses(&b, "What is the capital of France?", &[paris, berlin]);
    let shown = b.attrs("#scores td.score", "data-score");
    assert_eq!(shown.len(), 2, "one score per response");
    assert_close(&shown[0], golden_logits(&g, "simple")[0], "qwen3 Paris");
    assert_close(&shown[1], golden_logits(&g, "wrong")[0], "qwen3 Berlin");
    // Berlin scores higher on this random model: rank and preference matrix follow the scores.
    assert_eq!(b.attrs("#scores td.rank", "data-rank"), vec!["2", "1"]);
    let p: Vec<f64> = b.attrs("#preference-matrix td[data-p]", "data-p").iter().map(|s| s.parse().unwrap()).collect();
    let (s0, s1) = (golden_logits(&g, "simple")[0], golden_logits(&g, "wrong")[0]);
    assert!((p[1] - 1.0 / (1.0 + (s1 - s0).exp())).abs() < 1e-3, "P(1 > 2) = {}", p[1]);
    assert!(b.text("#backend").contains("WASM CPU"));
    b.screenshot(&artifacts().join("results.png"));

    // A multi-turn conversation pasted as JSON.
    b.click("#tab-conversation");
    let conv = serde_json::to_string(&g["conversations"]["multi_turn"]["messages"]).unwrap();
    b.fill("#conversation", &conv);
    b.click("#score");
    b.wait_for("#results", LOAD);
    assert_close(&b.attrs("#scores td.score", "data-score")[0], golden_logits(&g, "multi_turn")[0], "qwen3 multi_turn");

    // Llama: a sharded checkpoint with llama3 rope scaling.
    load(&b, &format!("{}/fixtures/llama-seq/", srv.url));
    let g = golden("llama-seq");
    score_responses(&b, "What is the capital of France?", &[paris, berlin]);
    let shown = b.attrs("#scores td.score", "data-score");
    assert_close(&shown[0], golden_logits(&g, "simple")[0], "llama Paris");
    assert_close(&shown[1], golden_logits(&g, "wrong")[0], "llama Berlin");

    // Qwen2 with three named labels: each attribute is shown.
    load(&b, &format!("{}/fixtures/qwen2-seq", srv.url));
    let g = golden("qwen2-seq");
    score_responses(&b, "What is the capital of France?", &[paris]);
    let values = b.attrs("#scores .attr-value", "data-value");
    let expected = golden_logits(&g, "simple");
    assert_eq!(values.len(), expected.len(), "one bar per label");
    for (v, e) in values.iter().zip(&expected) {
        assert_close(v, *e, "qwen2 attribute");
    }
}
