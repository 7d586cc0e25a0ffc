//! The multi-worker CPU pipeline in headless Chromium (the CPU workers setting or `?workers=N`): every fixture scored through
//! 2 and 3 stage workers against transformers' goldens — f32 and q8_0 (int8 kernels), the
//! 900-token `long` case cut into chunks (`?chunk=64`), two responses continuing one prompt —, and
//! a stage worker that traps mid-pipeline (`?crash_stage=K`, a test hook): the job fails with an
//! error naming the crash, and the next score works on a reloaded pipeline.
//! Run by `cargo xtask test` after `cargo xtask dist` (ignored in a plain `cargo test`).

use rewardlens_browser_tests::{Browser, StaticServer, PAGE_TIMEOUT};

const FIXTURES: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];

fn server() -> StaticServer {
    StaticServer::app_with_fixtures()
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn every_fixture_scores_like_transformers_through_the_worker_pipeline() {
    let srv = server();
    // The fixtures have 2 layers: at most 2 stages.
    // f32 picks the width with the page's setting, q8_0 with the link parameter.
    for (workers, storage, tol, by_link) in [(2, "f32", 1e-3, false), (2, "q8_0", 0.06, true)] {
        let b = Browser::start();
        let link = if by_link { format!("&workers={workers}") } else { String::new() };
        b.goto(&format!("{}/?chunk=64&storage={storage}{link}", srv.url));
        b.fill("#run-on", "cpu");
        if !by_link {
            b.fill("#workers", &workers.to_string());
        }
        for fixture in FIXTURES {
            b.load_model(&format!("{}/fixtures/{fixture}", srv.url));
            let backend = b.text("#model-backend");
            assert!(backend.contains(&format!(", {workers} workers")), "{fixture}: runs on {backend:?}");
            assert_eq!(b.attr("#model-kernel", "data-workers").as_deref(), Some(workers.to_string().as_str()));
            b.assert_golden_scores(fixture, tol, &format!("{workers} workers, {storage}"));
        }
        if by_link {
            // The setting overrides the link: one worker, the single engine.
            b.fill("#workers", "1");
            b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
            assert_eq!(b.attr("#model-kernel", "data-workers").as_deref(), Some("1"));
            b.assert_golden_scores("qwen3-seq", tol, "1 worker (the setting), q8_0");
        }
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn a_crashed_stage_worker_fails_the_job_and_the_pipeline_comes_back() {
    let srv = server();
    let b = Browser::start();
    b.goto(&format!("{}/?workers=2&crash_stage=1", srv.url));
    b.fill("#run-on", "cpu");
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    b.click("#tab-responses");
    b.fill("#prompt", "What is the capital of France?");
    b.fill("#responses li:nth-child(1) textarea", "Paris.");
    b.click("#score");
    if let Err(e) = b.wait_for_either("#error", "#results", PAGE_TIMEOUT) {
        panic!("no error after a stage crashed: {e}\n{}", b.console());
    }
    let error = b.text("#error");
    assert!(error.contains("crashed"), "the page says: {error}");
    // The engine reloads the pipeline without the hook; scoring works again.
    b.wait_for("#status[data-phase='idle']", PAGE_TIMEOUT);
    b.score_responses("What is the capital of France?", &["Paris."]);
    assert_eq!(b.attrs("#scores td.score", "data-score").len(), 1);
}
