//! Pooling in the browser: a Llama-3 reward model whose pad token is `<|eot_id|>`
//! (tests/fixtures/models/llama-eot-seq) ends every rendered conversation with its pad token, so
//! transformers pools the token before it. The page's scores on WebGPU and on the WASM CPU equal
//! transformers' goldens, which differ from the last token's score (crates/models/tests/golden.rs).
//! Run by `cargo xtask test` after `cargo xtask dist` (ignored in a plain `cargo test`).

use rewardlens_browser_tests::{dist_dir, fixtures_dir, Browser, StaticServer, PAGE_TIMEOUT};
use serde_json::Value;
use std::time::Duration;

const LOAD: Duration = PAGE_TIMEOUT;
const MODEL: &str = "llama-eot-seq";

fn golden_score(g: &Value, case: &str) -> f64 {
    g["conversations"][case]["logits"][0].as_f64().unwrap()
}

/// The golden answers to "What is the capital of France?" (`simple`, `wrong`) through the
/// responses tab, then the golden `multi_turn` conversation pasted as JSON, each within 1e-3 of
/// transformers.
fn check_scores(b: &Browser, g: &Value, backend: &str) {
    let conv = |case: &str| &g["conversations"][case]["messages"];
    b.click("#tab-responses");
    b.fill("#prompt", conv("simple")[0]["content"].as_str().unwrap());
    while b.attrs("#responses textarea", "aria-label").len() < 2 {
        b.click("#add-response");
    }
    while b.attrs("#responses textarea", "aria-label").len() > 2 {
        b.click("#responses .remove");
    }
    for (i, case) in ["simple", "wrong"].iter().enumerate() {
        b.fill(&format!("#responses li:nth-child({}) textarea", i + 1), conv(case)[1]["content"].as_str().unwrap());
    }
    b.click("#score");
    b.wait_for_results();
    let mut shown = b.attrs("#scores td.score", "data-score");
    assert_eq!(shown.len(), 2, "{backend}: one score per response");

    b.click("#tab-conversation");
    b.fill("#conversation", &serde_json::to_string(conv("multi_turn")).unwrap());
    b.click("#score");
    b.wait_for_results();
    shown.extend(b.attrs("#scores td.score", "data-score"));
    for (s, case) in shown.iter().zip(["simple", "wrong", "multi_turn"]) {
        let v: f64 = s.parse().unwrap_or_else(|_| panic!("{backend} {case}: `{s}` is not a number"));
        let e = golden_score(g, case);
        assert!((v - e).abs() <= 1e-3 * e.abs().max(1.0), "{backend} {case}: shown {v}, transformers {e}");
    }
    assert!(b.text("#backend").contains(backend), "results name {backend}: {}", b.text("#backend"));
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn a_pad_token_ending_each_turn_is_pooled_like_transformers_on_webgpu_and_cpu() {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(MODEL).join("golden.json")).unwrap())
            .unwrap();
    let srv = StaticServer::start(vec![("/fixtures/".into(), fixtures_dir()), ("/".into(), dist_dir())], true);
    let b = Browser::start_with_webgpu();
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#simd", LOAD);
    let url = format!("{}/fixtures/{MODEL}", srv.url);

    b.fill("#storage", "f32");
    b.load_model(&url);
    assert_eq!(
        b.attr("#model-info", "data-backend").as_deref(),
        Some("webgpu"),
        "{}\nconsole:\n{}",
        b.text("#model-info"),
        b.console()
    );
    check_scores(&b, &g, "WebGPU");

    b.fill("#run-on", "cpu");
    b.load_model(&url);
    assert_eq!(b.attr("#model-info", "data-backend").as_deref(), Some("cpu"));
    check_scores(&b, &g, "WASM CPU");
}
