//! The two engine worker builds (simd128; simd128 + relaxed-simd) in headless Chromium: the
//! page's start-up choice and `?kernel=` override, each build's int8 reference test run inside
//! it (`?selftest=1`), every fixture scored through each build against transformers' goldens
//! (f32 weights and q8_0, the int8 path), and a cross-origin isolated page (COOP/COEP).
//! Run by `cargo xtask test` after `cargo xtask dist` (ignored in a plain `cargo test`).

use rewardlens_browser_tests::{dist_dir, fixtures_dir, Browser, StaticServer, KERNEL_BUILDS, PAGE_TIMEOUT};
use serde_json::{json, Value};

/// Fixtures with one score per response (sequence heads, and token heads at the last token).
const FIXTURES: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];

fn server() -> StaticServer {
    StaticServer::app_with_fixtures()
}

fn probe(b: &Browser) -> Value {
    b.script("return window.rewardlensKernel;", json!([]))
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn the_page_picks_a_worker_build_and_each_passes_its_kernel_reference_test() {
    let srv = server();
    // Unforced: this Chromium has relaxed-simd, so the probe module validates and runs.
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#kernel-build", PAGE_TIMEOUT);
    let p = probe(&b);
    assert_eq!(p["relaxedSupported"], json!(true), "{p}");
    assert_eq!(p["build"], json!("relaxed"), "{p}");
    assert_eq!(p["forced"], json!(false), "{p}");
    // x86 engines read the i7 operand's high bit unsigned, Arm's signed; both are fine for us.
    let dot = p["relaxedDotHighBit"].as_str().unwrap_or("");
    assert!(dot == "signed" || dot == "unsigned", "relaxed dot probe: {p}");
    assert_eq!(b.attr("#kernel-build", "data-relaxed-dot").as_deref(), Some(dot));
    drop(b);

    for (build, label) in KERNEL_BUILDS {
        let b = Browser::start();
        b.goto(&format!("{}/?kernel={build}&selftest=1", srv.url));
        b.wait_for("#self-test", PAGE_TIMEOUT);
        assert_eq!(b.attr("#kernel-build", "data-build").as_deref(), Some(build));
        assert_eq!(probe(&b)["forced"], json!(true));
        let kernel = b.attr("#self-test", "data-kernel").unwrap_or_default();
        let expected = if build == "relaxed" { "relaxed-simd" } else { "simd128" };
        assert!(kernel.contains(expected), "{build}: the worker runs the {kernel} kernel");
        assert_eq!(
            b.attr("#self-test", "data-passed").as_deref(),
            Some("true"),
            "{build}: {}\nconsole:\n{}",
            b.text("#self-test"),
            b.console()
        );
        // relaxed-simd checks both dot forms ([`rewardlens_kernels::RelaxedDot`]); each build its
        // vector row quantizer against the scalar bytes.
        let summary = b.text("#self-test");
        assert!(summary.contains("row quantizer exact"), "{build}: {summary}");
        assert_eq!(summary.contains("both relaxed dot forms"), build == "relaxed", "{build}: {summary}");
        // The model info and the results line name the build that ran.
        b.fill("#run-on", "cpu");
        b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
        assert!(b.text("#model-backend").starts_with(label), "{build}: {}", b.text("#model-backend"));
        b.score_responses("What is the capital of France?", &["The capital of France is Paris."]);
        assert!(b.text("#backend").starts_with(label), "{build}: {}", b.text("#backend"));
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn every_fixture_scores_like_transformers_in_both_worker_builds() {
    let srv = server();
    for (build, label) in KERNEL_BUILDS {
        let b = Browser::start();
        b.goto(&format!("{}/?kernel={build}", srv.url));
        b.wait_for("#kernel-build", PAGE_TIMEOUT);
        b.fill("#run-on", "cpu");
        for name in FIXTURES {
            // f32 as loaded, then q8_0 quantized on load (the int8 kernels): the bounds the
            // other browser tests assert (1e-3 for f32 sums, 0.06 for Q8_0 rounding).
            for (storage, tol) in [("f32", 1e-3), ("q8_0", 0.06)] {
                b.fill("#storage", storage);
                b.load_model(&format!("{}/fixtures/{name}", srv.url));
                assert!(b.text("#model-backend").starts_with(label), "{build} {name}: {}", b.text("#model-backend"));
                b.assert_golden_scores(name, tol, &format!("{build} {storage}"));
            }
        }
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn the_app_works_cross_origin_isolated_and_without_isolation() {
    let mounts = || vec![("/fixtures/".into(), fixtures_dir()), ("/".into(), dist_dir())];
    let isolated = StaticServer::start_isolated(mounts(), true);
    let plain = StaticServer::start(mounts(), true);
    for (srv, want) in [(&isolated, true), (&plain, false)] {
        let b = Browser::start();
        b.goto(&format!("{}/", srv.url));
        b.wait_for("#kernel-build", PAGE_TIMEOUT);
        assert_eq!(b.script("return self.crossOriginIsolated;", json!([])), json!(want), "{}", srv.url);
        b.fill("#run-on", "cpu");
        b.fill("#storage", "q8_0");
        b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
        b.assert_golden_scores("qwen3-seq", 0.06, if want { "isolated" } else { "plain" });
    }
}
