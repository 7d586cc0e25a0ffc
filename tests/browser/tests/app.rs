//! The web app in headless Chromium, against the scores transformers computed for the fixture
//! models. Run by `cargo xtask test` after `cargo xtask dist` (ignored in a plain `cargo test`,
//! which has neither the built app nor necessarily a browser).

use rewardlens_browser_tests::{dist_dir, fixtures_dir, repo_root, Browser, StaticServer, PAGE_TIMEOUT};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const LOAD: Duration = PAGE_TIMEOUT;

fn golden(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(model).join("golden.json")).unwrap()).unwrap()
}

fn golden_logits(g: &Value, case: &str) -> Vec<f64> {
    g["conversations"][case]["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn server() -> StaticServer {
    StaticServer::app_with_fixtures()
}

fn artifacts() -> PathBuf {
    repo_root().join("target/browser-artifacts")
}

/// |shown - transformers| within 1e-3 (wasm's f32 sums differ from PyTorch's in the last bits).
fn assert_close(shown: &str, expected: f64, what: &str) {
    let v: f64 = shown.parse().unwrap_or_else(|_| panic!("{what}: `{shown}` is not a number"));
    assert!((v - expected).abs() <= 1e-3 * expected.abs().max(1.0), "{what}: shown {v}, transformers {expected}");
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn scores_in_the_page_match_transformers() {
    let srv = server();
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#simd", LOAD);
    assert_eq!(b.attr("#simd", "data-supported").as_deref(), Some("true"));

    // Auto storage on the CPU is q8_0 (the int8 kernels): within the quantization bound.
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    assert!(b.text("#model-info").contains("q8_0"), "auto storage: {}", b.text("#model-info"));
    b.score_responses("What is the capital of France?", &["The capital of France is Paris."]);
    let v: f64 = b.attrs("#scores td.score", "data-score")[0].parse().unwrap();
    assert!((v - golden_logits(&golden("qwen3-seq"), "simple")[0]).abs() < 0.06, "auto (q8_0) in the page: {v}");
    // f32 from here: exact to transformers within 1e-3.
    b.fill("#storage", "f32");

    // Qwen3, single safetensors file, through the UI.
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    let g = golden("qwen3-seq");
    let paris = "The capital of France is Paris.";
    let berlin = "The capital of France is Berlin.";
    b.score_responses("What is the capital of France?", &[paris, berlin]);
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
    // Auto mode without WebGPU says why the CPU runs.
    assert_eq!(b.attr("#model-info", "data-backend").as_deref(), Some("cpu"));
    assert!(b.text("#gpu-fallback").contains("WebGPU"), "fallback reason: {}", b.text("#gpu-fallback"));
    b.screenshot(&artifacts().join("results.png"));

    // A multi-turn conversation pasted as JSON.
    b.click("#tab-conversation");
    let conv = serde_json::to_string(&g["conversations"]["multi_turn"]["messages"]).unwrap();
    b.fill("#conversation", &conv);
    b.click("#score");
    b.wait_for("#results", LOAD);
    assert_close(&b.attrs("#scores td.score", "data-score")[0], golden_logits(&g, "multi_turn")[0], "qwen3 multi_turn");

    // Llama: a sharded checkpoint with llama3 rope scaling.
    b.load_model(&format!("{}/fixtures/llama-seq/", srv.url));
    let g = golden("llama-seq");
    b.score_responses("What is the capital of France?", &[paris, berlin]);
    let shown = b.attrs("#scores td.score", "data-score");
    assert_close(&shown[0], golden_logits(&g, "simple")[0], "llama Paris");
    assert_close(&shown[1], golden_logits(&g, "wrong")[0], "llama Berlin");

    // Response text is shown as text: markup in it is not interpreted.
    let markup = "<img src=x onerror=\"document.title='owned'\"><b>bold</b>";
    b.score_responses("Echo this markup.", &[markup]);
    assert_eq!(b.text("#scores td.text"), markup);
    assert!(!b.exists("#scores td.text img") && !b.exists("#scores td.text b"), "markup was rendered as HTML");
    assert_ne!(b.script("return document.title;", serde_json::json!([])), "owned");

    // Qwen2 with three named labels: each attribute is shown.
    b.load_model(&format!("{}/fixtures/qwen2-seq", srv.url));
    let g = golden("qwen2-seq");
    b.score_responses("What is the capital of France?", &[paris]);
    let values = b.attrs("#scores .attr-value", "data-value");
    let expected = golden_logits(&g, "simple");
    assert_eq!(values.len(), expected.len(), "one bar per label");
    for (v, e) in values.iter().zip(&expected) {
        assert_close(v, *e, "qwen2 attribute");
    }
}

/// A checkpoint folder in a temp dir, from a fixture, to break in one way.
fn broken_copy(name: &str, fixture: &str, edit: impl FnOnce(&std::path::Path)) -> PathBuf {
    let dir = repo_root().join("target/browser-artifacts/models").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixtures_dir().join(fixture)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    edit(&dir);
    dir
}

fn load_error(b: &Browser, model: &str) -> (String, String) {
    b.wait_for("#status[data-phase='idle']", LOAD);
    b.fill("#model-input", model);
    b.click("#load");
    match b.wait_for_either("#error", "#model-info", LOAD) {
        Ok(()) => (b.attr("#error", "data-code").unwrap_or_default(), b.text("#error")),
        Err(info) => panic!("{model} loaded ({info}) but should have failed"),
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn bad_models_get_clear_errors_and_the_page_keeps_working() {
    let corrupted = broken_copy("corrupted", "qwen3-seq", |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    broken_copy("unsupported", "qwen3-seq", |d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("Qwen3ForSequenceClassification", "BertForSequenceClassification")).unwrap();
    });
    broken_copy("too-big", "qwen3-seq", |d| {
        let mut c: Value = serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        // An 8B model's shape: f32 and q8_0 cannot fit in 4 GiB, and neither does q4_k with it.
        for (k, v) in [("hidden_size", 4096), ("intermediate_size", 14336), ("num_hidden_layers", 48)] {
            c[k] = v.into();
        }
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    let work = corrupted.parent().unwrap().to_path_buf();
    let srv = StaticServer::start_with_statuses(
        vec![("/fixtures/".into(), fixtures_dir()), ("/work/".into(), work), ("/".into(), dist_dir())],
        vec![("/hub/gated/".into(), 401)],
        true,
    );
    let no_cors = StaticServer::start(vec![("/fixtures/".into(), fixtures_dir())], false);
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.fill("#storage", "f32");

    let (code, msg) = load_error(&b, &format!("{}/work/corrupted", srv.url));
    assert_eq!(code, "corrupted", "{msg}");
    assert!(msg.contains("damaged or incomplete"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/fixtures/no-such-model", srv.url));
    assert_eq!(code, "not_found", "{msg}");
    assert!(msg.contains("config.json") && msg.contains("404"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/fixtures/qwen3-seq", no_cors.url));
    assert_eq!(code, "network", "{msg}");
    assert!(msg.contains("CORS"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/work/unsupported", srv.url));
    assert_eq!(code, "unsupported_architecture", "{msg}");
    assert!(msg.contains("BertForSequenceClassification") && msg.contains("Qwen3ForSequenceClassification"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/work/too-big", srv.url));
    assert_eq!(code, "too_large", "{msg}");
    assert!(msg.contains("GiB") && msg.contains("rewardlens serve"), "{msg}");

    // A mirror the user typed is trusted like huggingface.co: a 401 there asks for a token.
    b.fill("#hub-mirror", &format!("{}/hub", srv.url));
    let (code, msg) = load_error(&b, "gated/model");
    assert_eq!(code, "unauthorized", "{msg}");
    assert!(msg.contains("gated") && msg.contains("token"), "{msg}");
    b.fill("#hub-mirror", "");

    // Weights were never requested for models refused on their config.
    for dir in ["unsupported", "too-big"] {
        assert_eq!(srv.gets(&format!("/work/{dir}/model.safetensors")), 0, "{dir}: weights fetched before refusal");
    }

    // The page still works: a good model loads and scores.
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    assert!(!b.exists("#error"), "the error is cleared by a successful load");
    b.score_responses("What is the capital of France?", &["The capital of France is Paris."]);
    assert_close(
        &b.attrs("#scores td.score", "data-score")[0],
        golden_logits(&golden("qwen3-seq"), "simple")[0],
        "after errors",
    );
    b.screenshot(&artifacts().join("after-errors.png"));
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn hub_ids_deep_links_cache_and_saved_inputs() {
    use rewardlens_web::share::{encode_fragment, model_query, SharedInputs};
    let srv = StaticServer::start(
        vec![
            ("/hub/test-org/tiny-rm/resolve/v1/".into(), fixtures_dir().join("qwen3-seq")),
            ("/fixtures/".into(), fixtures_dir()),
            ("/".into(), dist_dir()),
        ],
        true,
    );
    let paris = "The capital of France is Paris.";
    let berlin = "The capital of France is Berlin.";
    let shared =
        SharedInputs { prompt: "What is the capital of France?".into(), responses: vec![paris.into(), berlin.into()] };
    let link = format!(
        "{}/{}&hub={}/hub&storage=f32#{}",
        srv.url,
        model_query("test-org/tiny-rm", "v1"),
        srv.url,
        encode_fragment(&shared)
    );
    let g = golden("qwen3-seq");
    let weights = "/hub/test-org/tiny-rm/resolve/v1/model.safetensors";

    let b = Browser::start();
    // A deep link names the Hub repo at its revision; once the user agrees it loads and scores
    // the linked inputs.
    b.goto(&link);
    b.wait_for("#load-linked", LOAD);
    assert_eq!(b.text("#linked-host"), srv.url, "the page says where the model comes from");
    assert_eq!(srv.gets("/hub/test-org/tiny-rm/resolve/v1/config.json"), 0, "nothing downloads before the user agrees");
    b.click("#load-linked");
    b.wait_for("#results", LOAD);
    let shown = b.attrs("#scores td.score", "data-score");
    assert_close(&shown[0], golden_logits(&g, "simple")[0], "deep link Paris");
    assert_close(&shown[1], golden_logits(&g, "wrong")[0], "deep link Berlin");
    assert_eq!(srv.gets(weights), 1);
    assert!(srv.requests().iter().all(|r| r.authorization.is_none()), "no token was given, none is sent");
    let cached: u64 = b.attr("#cache", "data-bytes").unwrap().parse().unwrap();
    assert!(cached > 19_000_000, "the cache holds the weights: {cached} bytes");

    // A reload scores again from the browser cache: no second download of anything.
    let before = srv.requests().len();
    b.goto("about:blank");
    b.goto(&link);
    b.wait_for("#load-linked", LOAD);
    b.click("#load-linked");
    b.wait_for("#results", LOAD);
    assert_eq!(srv.gets(weights), 1, "weights came from the cache");
    let fetched_again: Vec<String> =
        srv.requests()[before..].iter().filter(|r| r.path.starts_with("/hub/")).map(|r| r.path.clone()).collect();
    assert!(fetched_again.is_empty(), "model files fetched again after reload: {fetched_again:?}");
    assert!(b.text("#model-info").contains("0 B downloaded"), "{}", b.text("#model-info"));

    // Typed inputs survive a reload without any link.
    b.click("#tab-responses");
    b.fill("#prompt", "Kept across reloads?");
    b.goto("about:blank");
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#prompt", LOAD);
    assert_eq!(
        b.script("return document.querySelector('#prompt').value;", serde_json::json!([])),
        "Kept across reloads?"
    );

    // "Copy link" makes a link with the model in the query and the inputs in the fragment.
    b.click("#copy-link");
    b.wait_for("#share-link", LOAD);
    let made = b.script("return document.querySelector('#share-link').value;", serde_json::json!([]));
    let made = made.as_str().unwrap();
    assert!(made.contains("?model=test-org/tiny-rm&revision=v1#in="), "{made}");

    // Clearing the cache empties it.
    b.click("#clear-cache");
    b.wait_for("#cache[data-bytes='0']", LOAD);
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn gguf_local_files_jsonl_batches_and_cancel() {
    let built = std::env::var_os("REWARDLENS_BROWSER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/browser-fixtures"));
    let gguf = built.join("qwen3-seq.q8_0.gguf");
    assert!(gguf.exists(), "{} is missing: `cargo xtask test` makes it", gguf.display());
    let srv = StaticServer::start(
        vec![("/built/".into(), built.clone()), ("/fixtures/".into(), fixtures_dir()), ("/".into(), dist_dir())],
        true,
    );
    let g = golden("qwen3-seq");
    let paris = "The capital of France is Paris.";
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.fill("#storage", "f32");

    // Our quantizer's GGUF by URL: q8_0 scores stay within 0.06 of transformers' f32.
    b.load_model(&format!("{}/built/qwen3-seq.q8_0.gguf", srv.url));
    assert!(b.text("#model-info").contains("GGUF"), "{}", b.text("#model-info"));
    b.score_responses("What is the capital of France?", &[paris]);
    let v: f64 = b.attrs("#scores td.score", "data-score")[0].parse().unwrap();
    assert!((v - golden_logits(&g, "simple")[0]).abs() < 0.06, "q8_0 GGUF in the page: {v}");

    // Local files picked by the user: the checkpoint folder's files.
    let dir = fixtures_dir().join("qwen3-seq");
    let files: Vec<PathBuf> = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    b.upload("#files", &files);
    b.wait_for(".files", LOAD);
    b.click("#load");
    b.wait_for("#model-info", LOAD);
    b.score_responses("What is the capital of France?", &[paris]);
    assert_close(&b.attrs("#scores td.score", "data-score")[0], golden_logits(&g, "simple")[0], "local files");

    // A JSONL batch: a preference pair in the CLI's format, and a broken line that is skipped.
    let jsonl = artifacts().join("batch.jsonl");
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(
        &jsonl,
        format!(
            "{}\nnot json\n",
            serde_json::json!({"prompt": "What is the capital of France?", "chosen": paris, "rejected": "The capital of France is Berlin."})
        ),
    )
    .unwrap();
    b.click("#tab-jsonl");
    b.upload("#jsonl-file", std::slice::from_ref(&jsonl));
    std::thread::sleep(Duration::from_millis(300));
    b.click("#score");
    b.wait_for("#batch-summary", LOAD);
    assert_eq!(b.attr("#batch-summary", "data-scored").as_deref(), Some("1"));
    assert_eq!(b.attr("#batch-summary", "data-skipped").as_deref(), Some("1"));
    assert!(b.text("#batch").contains("line 2: not a JSON object"), "{}", b.text("#batch"));
    let line: Value = serde_json::from_str(b.text("#batch-output").lines().next().unwrap()).unwrap();
    assert_close(&line["chosen_score"].to_string(), golden_logits(&g, "simple")[0], "JSONL chosen");
    assert_close(&line["rejected_score"].to_string(), golden_logits(&g, "wrong")[0], "JSONL rejected");
    // TRL's figures over the batch's preference lines, as `rewardlens score` prints them.
    let right = usize::from(golden_logits(&g, "simple")[0] > golden_logits(&g, "wrong")[0]);
    let summary = b.text("#batch-preferences");
    assert!(summary.starts_with(&format!("pair accuracy {right}/1 = ")), "{summary}");
    assert!(summary.contains("reward min/mean/max"), "{summary}");
    assert_eq!(line["correct"], Value::Bool(false));

    // Cancel: a long batch stops at the next sequence and the page can score again.
    let long: String = (0..400)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"instruction": format!("Question {i}?"), "response": "An answer. ".repeat(200)})
            )
        })
        .collect();
    let long_path = artifacts().join("long.jsonl");
    std::fs::write(&long_path, long).unwrap();
    b.upload("#jsonl-file", &[long_path]);
    std::thread::sleep(Duration::from_millis(300));
    b.click("#score");
    b.wait_for("#cancel", LOAD);
    // The UI stays responsive while the worker computes: typing updates the page at once.
    b.click("#tab-responses");
    b.fill("#prompt", "typed while scoring");
    assert_eq!(
        b.script("return document.querySelector('#prompt').value;", serde_json::json!([])),
        "typed while scoring"
    );
    b.click("#cancel");
    b.wait_for("#status[data-phase='idle']", Duration::from_secs(30));
    assert!(b.text("#status").contains("Cancelled"), "{}", b.text("#status"));
    assert!(!b.exists("#batch-summary"), "a cancelled batch shows no results");
    b.score_responses("What is the capital of France?", &[paris]);
    assert_close(&b.attrs("#scores td.score", "data-score")[0], golden_logits(&g, "simple")[0], "after cancel");
}

/// `rewardlens serve` (built by `cargo xtask test`) on a free port; killed on drop.
struct RewardServer(std::process::Child, String);

impl RewardServer {
    fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        let bin = repo_root().join("target/release/rewardlens");
        assert!(bin.exists(), "{} is missing: `cargo xtask test` builds it", bin.display());
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").expect("the listening line").to_owned();
        Self(child, url)
    }

    /// The qwen3-seq fixture served as "tiny", open to pages from `origin`.
    fn tiny(origin: &str) -> Self {
        let model = fixtures_dir().join("qwen3-seq");
        Self::start(&["--model", model.to_str().unwrap(), "--served-model-name", "tiny", "--cors-origin", origin])
    }
}

impl Drop for RewardServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs `cargo xtask dist`, the release CLI and Chromium; run by `cargo xtask test`"]
fn too_large_models_fall_back_to_a_remote_endpoint() {
    let too_big = broken_copy("too-big-remote", "qwen3-seq", |d| {
        let mut c: Value = serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        for (k, v) in [("hidden_size", 4096), ("intermediate_size", 14336), ("num_hidden_layers", 48)] {
            c[k] = v.into();
        }
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    let srv = StaticServer::start(
        vec![("/work/".into(), too_big.parent().unwrap().to_path_buf()), ("/".into(), dist_dir())],
        true,
    );
    let rm = RewardServer::tiny(&srv.url);
    let g = golden("qwen3-seq");
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.fill("#remote-endpoint", &rm.1);
    b.fill("#remote-model", "tiny");
    for protocol in ["vllm", "nim"] {
        b.fill("#remote-protocol", protocol);
        b.load_model(&format!("{}/work/too-big-remote", srv.url));
        assert_eq!(b.attr("#model-info", "data-architecture").as_deref(), Some("remote"));
        let info = b.text("#model-info");
        assert!(info.contains("not in this browser") && info.contains("GiB"), "{info}");
        b.score_responses(
            "What is the capital of France?",
            &["The capital of France is Paris.", "The capital of France is Berlin."],
        );
        let backend = b.text("#backend");
        assert!(backend.contains(&format!("Remote ({protocol} at {}", rm.1)), "{backend}");
        let shown = b.attrs("#scores td.score", "data-score");
        assert_close(&shown[0], golden_logits(&g, "simple")[0], "remote Paris");
        assert_close(&shown[1], golden_logits(&g, "wrong")[0], "remote Berlin");
    }
    // The API key is not stored unless asked.
    b.fill("#remote-key", "sekret");
    let saved = b.script("return localStorage.getItem('rewardlens.inputs.v1');", serde_json::json!([]));
    assert!(!saved.as_str().unwrap_or("").contains("sekret"), "the key reached localStorage");
}

/// The score the page shows for a golden case: the first label, at the last token for token
/// classification.
fn golden_score(g: &Value, case: &str) -> f64 {
    let l = &g["conversations"][case]["logits"];
    match l[0].as_array() {
        Some(_) => l.as_array().unwrap().last().unwrap()[0].as_f64().unwrap(),
        None => l[0].as_f64().unwrap(),
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn webgpu_scores_every_fixture_like_transformers() {
    let srv = server();
    let b = Browser::start_with_webgpu();
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#simd", LOAD);
    let paris = "The capital of France is Paris.";
    let berlin = "The capital of France is Berlin.";
    // Auto picks WebGPU (f16 weights by default); then f32 and q8_0 weights on every model.
    for (i, name) in
        ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token"].iter().enumerate()
    {
        let storage = ["auto", "f32", "q8_0"][i % 3];
        b.fill("#storage", storage);
        b.load_model(&format!("{}/fixtures/{name}", srv.url));
        assert_eq!(
            b.attr("#model-info", "data-backend").as_deref(),
            Some("webgpu"),
            "{name}: {}\nconsole:\n{}",
            b.text("#model-info"),
            b.console()
        );
        assert!(b.text("#model-backend").starts_with("WebGPU"), "{}", b.text("#model-backend"));
        b.score_responses("What is the capital of France?", &[paris, berlin]);
        let g = golden(name);
        let shown = b.attrs("#scores td.score", "data-score");
        // Q8_0 rounding on these 64-wide random models: within 0.036 of f32 (crates/gpu/tests).
        let tol = if storage == "q8_0" { 0.06 } else { 1e-3 };
        for (s, case) in shown.iter().zip(["simple", "wrong"]) {
            let (v, e): (f64, f64) = (s.parse().unwrap(), golden_score(&g, case));
            assert!((v - e).abs() <= tol * e.abs().max(1.0), "{name} {storage} {case}: WebGPU {v}, transformers {e}");
        }
        assert!(b.text("#backend").contains("WebGPU"), "results name the backend: {}", b.text("#backend"));
        assert!(b.text("#backend").contains("GPU memory: weights"), "and what the GPU holds: {}", b.text("#backend"));
    }
    b.screenshot(&artifacts().join("webgpu.png"));

    // Step rewards through WebGPU: math-shepherd's causal LM (head = two lm_head rows).
    b.fill("#storage", "f32");
    b.load_model(&format!("{}/fixtures/prm-shepherd", srv.url));
    assert_eq!(b.attr("#model-info", "data-backend").as_deref(), Some("webgpu"));
    check_step_cells(&b, "prm-shepherd", &["ducks", "wrong"], 1e-3);

    // WASM CPU when asked, in the same browser.
    b.fill("#run-on", "cpu");
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    assert_eq!(b.attr("#model-info", "data-backend").as_deref(), Some("cpu"));
    assert_eq!(b.text("#gpu-fallback"), "", "no fallback reason when the CPU was chosen");

    // WebGPU demanded where there is none: a clear error, and the page still works.
    let plain = Browser::start();
    plain.goto(&format!("{}/", srv.url));
    plain.wait_for("#status[data-phase='idle']", LOAD);
    plain.fill("#run-on", "webgpu");
    plain.fill("#model-input", &format!("{}/fixtures/qwen3-seq", srv.url));
    plain.click("#load");
    plain.wait_for("#error", LOAD);
    assert!(plain.text("#error").contains("WebGPU"), "{}", plain.text("#error"));
    plain.fill("#run-on", "auto");
    plain.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    assert_eq!(plain.attr("#model-info", "data-backend").as_deref(), Some("cpu"));
}

fn golden_steps(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(model).join("golden_steps.json")).unwrap())
        .unwrap()
}

/// Scores the golden cases `keys` of a PRM fixture, each as a response to its problem (steps
/// as paragraphs), and checks the step cells against transformers' step rewards.
fn check_step_cells(b: &Browser, model: &str, keys: &[&str], tol: f64) {
    let g = golden_steps(model);
    for k in keys {
        let case = &g["cases"][k];
        let answer =
            case["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n\n");
        b.score_responses(case["problem"].as_str().unwrap(), &[&answer]);
        let row = "#scores tr.steps-row[data-index='0']";
        let shown = b.attrs(&format!("{row} .step-cell"), "data-score");
        let want = case["step_scores"].as_array().unwrap();
        assert_eq!(shown.len(), want.len(), "{model}/{k}: one cell per step\n{}", b.text("#results"));
        for (s, w) in shown.iter().zip(want) {
            let (v, w): (f64, f64) = (s.parse().unwrap(), w.as_f64().unwrap());
            assert!((v - w).abs() <= tol, "{model}/{k}: step reward {v}, transformers {w}");
        }
        let first_bad = want.iter().position(|v| v.as_f64().unwrap() < 0.5);
        let marked = b.attrs(&format!("{row} .step-cell.first-bad"), "data-step");
        assert_eq!(
            marked,
            first_bad.map(|i| i.to_string()).into_iter().collect::<Vec<_>>(),
            "{model}/{k}: first bad step"
        );
    }
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn step_rewards_first_bad_step_and_token_heatmap() {
    let srv = server();
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#simd", LOAD);
    b.fill("#storage", "f32");
    // Qwen2ForProcessRewardModel declares its convention: the step view turns itself on.
    b.load_model(&format!("{}/fixtures/prm-qwen-mlp", srv.url));
    assert_eq!(b.script("return document.querySelector('#steps-on').checked;", serde_json::json!([])), true);
    check_step_cells(&b, "prm-qwen-mlp", &["ducks", "wrong"], 1e-3);
    assert!(b.text("#scores .first-bad-summary").contains("step"), "{}", b.text("#scores"));
    // The threshold is the user's: lowering it moves the first bad step.
    b.fill("#step-threshold", "0.01");
    assert_eq!(b.attrs("#scores .step-cell.first-bad", "data-step").len(), 0);
    assert!(b.text("#scores .first-bad-summary").contains("no step below 0.01"));
    b.fill("#step-threshold", "0.5");

    // A token classifier with the value-head convention chosen by hand, and the token heatmap.
    b.load_model(&format!("{}/fixtures/prm-value", srv.url));
    b.click("#steps-on");
    b.click("#steps-on");
    b.fill("#step-convention", "value");
    b.click("#token-heatmap");
    check_step_cells(&b, "prm-value", &["ducks"], 1e-3);
    let tokens: String = b
        .script(
            "return [...document.querySelectorAll('#scores .token-heatmap .token')].map(e => e.textContent).join('');",
            serde_json::json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tokens.starts_with("Janet's ducks lay 16 eggs per day."), "heatmap covers the answer: {tokens:?}");
    b.screenshot(&artifacts().join("steps.png"));

    // Prefix scores of an outcome RM, split by a separator typed in.
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    b.fill("#step-convention", "prefix");
    b.fill("#step-split", "sep");
    b.fill("#step-split-value", ";");
    b.score_responses("Count.", &["one; two; three"]);
    assert_eq!(b.attrs("#scores .step-cell", "data-score").len(), 3);
    assert_eq!(b.attr("#scores .steps", "data-convention").as_deref(), Some("prefix"));
    // A convention the model cannot follow: the scores stay, the step row says why.
    b.fill("#step-convention", "qwen");
    b.score_responses("Count.", &["one; two"]);
    assert!(b.text("#scores .step-error").contains("2-label token head"), "{}", b.text("#scores"));
    assert_eq!(b.attrs("#scores td.score", "data-score").len(), 1);
}

/// Polls `js` (an expression) until it is truthy.
fn wait_js(b: &Browser, js: &str, what: &str) {
    let deadline = std::time::Instant::now() + LOAD;
    while b.script(&format!("return !!({js});"), serde_json::json!([])) != serde_json::json!(true) {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}\nconsole:\n{}", b.console());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scored_events(b: &Browser, id: &str) -> Vec<Value> {
    b.script(
        "return window.events.filter(e => e.type === 'reward-scored' && e.id === arguments[0]).map(e => e.detail);",
        serde_json::json!([id]),
    )
    .as_array()
    .unwrap()
    .clone()
}

fn shadow_scores(b: &Browser, id: &str) -> Vec<f64> {
    let v = b.script(
        "return [...document.getElementById(arguments[0]).shadowRoot.querySelectorAll('[part~=score]')].map(e => Number(e.dataset.score));",
        serde_json::json!([id]),
    );
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
#[ignore = "needs `cargo xtask dist`, the release CLI and Chromium; run by `cargo xtask test`"]
fn web_component_two_scorers_one_engine_events_and_js_api() {
    let pages = repo_root().join("tests/browser/pages");
    let srv = StaticServer::start(
        vec![("/fixtures/".into(), fixtures_dir()), ("/pages/".into(), pages), ("/".into(), dist_dir())],
        true,
    );
    let b = Browser::start();
    b.goto(&format!("{}/pages/components.html", srv.url));
    let g = golden("qwen3-seq");
    let (paris, berlin) = (golden_logits(&g, "simple")[0], golden_logits(&g, "wrong")[0]);
    wait_js(&b, "window.events.filter(e => e.type === 'reward-scored').length >= 2", "both components to score");

    // Both render transformers' scores; the events carry the CLI's shape.
    let a = shadow_scores(&b, "a");
    assert_eq!(a.len(), 2);
    assert_close(&a[0].to_string(), paris, "component a, Paris");
    assert_close(&a[1].to_string(), berlin, "component a, Berlin");
    assert_close(&shadow_scores(&b, "b")[0].to_string(), berlin, "component b (child element)");
    let d = &scored_events(&b, "a")[0];
    assert_eq!(d["responses"][0], "The capital of France is Paris.");
    assert_close(&d["scores"][1].to_string(), berlin, "event detail");
    assert_eq!(d["ranking"], serde_json::json!([1, 0]), "Berlin scores higher on this random model");
    assert!(d["backend"].as_str().unwrap().contains("WASM CPU"), "{d}");
    assert!(d["timing"]["ms"].as_f64().unwrap() > 0.0);
    assert!(b.script("return window.progress;", serde_json::json!([])).as_u64().unwrap() > 0, "progress events");
    // One engine for the page: the weights were fetched once for both.
    assert_eq!(srv.gets("/fixtures/qwen3-seq/model.safetensors"), 1, "{:?}", srv.requests());

    // Changing the responses attribute re-scores.
    b.script(
        "document.getElementById('a').setAttribute('responses', JSON.stringify(['The capital of France is Berlin.']));",
        serde_json::json!([]),
    );
    wait_js(&b, "window.events.filter(e => e.type === 'reward-scored' && e.id === 'a').length >= 2", "a to re-score");
    assert_close(&shadow_scores(&b, "a")[0].to_string(), berlin, "after the attribute change");

    // Steps and compact modes, with keyboard-focusable, labelled step cells.
    b.script("document.getElementById('a').mode = 'steps';", serde_json::json!([]));
    wait_js(&b, "window.events.filter(e => e.type === 'reward-scored' && e.id === 'a').length >= 3", "steps mode");
    let cell = b.script(
        "const c = document.getElementById('a').shadowRoot.querySelector('[part~=step]'); return c && [c.tabIndex, c.getAttribute('aria-label')];",
        serde_json::json!([]),
    );
    assert_eq!(cell[0], 0, "step cells take keyboard focus: {cell}");
    assert!(cell[1].as_str().unwrap().starts_with("Step 1:"), "{cell}");
    assert_eq!(scored_events(&b, "a")[2]["step_convention"], "prefix");

    // A bad model: reward-error with a code, and the host page keeps working.
    b.script(
        "const e = document.createElement('reward-scorer'); e.id = 'bad'; e.setAttribute('model', '/fixtures/no-such-model'); \
         e.setAttribute('responses', '[\"x\"]'); document.body.append(e);",
        serde_json::json!([]),
    );
    wait_js(&b, "window.events.some(e => e.type === 'reward-error' && e.id === 'bad')", "reward-error");
    let err = b.script("return window.events.find(e => e.type === 'reward-error').detail;", serde_json::json!([]));
    assert!(
        !err["code"].as_str().unwrap().is_empty() && err["message"].as_str().unwrap().contains("no-such-model"),
        "{err}"
    );
    b.click("#host-button");
    assert_eq!(b.attr("#host-button", "data-clicks").as_deref(), Some("1"));
    assert!(b
        .script(
            "return document.getElementById('bad').shadowRoot.querySelector('[part=error]').textContent;",
            serde_json::json!([])
        )
        .as_str()
        .unwrap()
        .contains("no-such-model"));

    // backend="webgpu" where the browser has none: a clear error, not a hang.
    b.script(
        "const e = document.createElement('reward-scorer'); e.id = 'gpu'; e.setAttribute('model', '/fixtures/qwen3-seq'); \
         e.setAttribute('backend', 'webgpu'); e.setAttribute('responses', '[\"x\"]'); document.body.append(e);",
        serde_json::json!([]),
    );
    wait_js(&b, "window.events.some(e => e.type === 'reward-error' && e.id === 'gpu')", "the WebGPU error");
    let err = b.script("return window.events.find(e => e.id === 'gpu').detail;", serde_json::json!([]));
    assert_eq!(err["code"], "webgpu", "{err}");

    // The JS API, after the failures: same engine, the model comes from the browser cache.
    let out = b.script_async(
        "const done = arguments[arguments.length - 1]; \
         RewardScorer.load({ model: '/fixtures/qwen3-seq', storage: 'f32' }) \
           .then(s => Promise.all([s.score({ prompt: 'What is the capital of France?', responses: ['The capital of France is Paris.'] }), \
                                   s.score({ conversation: arguments[0] })])) \
           .then(done, e => done({ error: e }));",
        serde_json::json!([g["conversations"]["multi_turn"]["messages"]]),
    );
    let out = if out.is_null() { panic!("no answer") } else { out };
    assert!(out.get("error").is_none(), "{out}");
    assert_close(&out[0]["scores"][0].to_string(), paris, "RewardScorer.score responses");
    assert_eq!(out[0]["ranking"], serde_json::json!([0]));
    assert_close(&out[1]["score"].to_string(), golden_logits(&g, "multi_turn")[0], "RewardScorer.score conversation");
    assert_eq!(srv.gets("/fixtures/qwen3-seq/model.safetensors"), 1, "reloaded from the cache, not the network");

    // endpoint + protocol: the element scores on a remote server (here `rewardlens serve`, NIM).
    let rm = RewardServer::tiny(&srv.url);
    b.script(
        "const e = document.createElement('reward-scorer'); e.id = 'remote'; e.setAttribute('endpoint', arguments[0]); \
         e.setAttribute('protocol', 'nim'); e.setAttribute('model', 'tiny'); \
         e.setAttribute('prompt', 'What is the capital of France?'); \
         e.setAttribute('responses', JSON.stringify(['The capital of France is Paris.'])); document.body.append(e);",
        serde_json::json!([rm.1]),
    );
    wait_js(&b, "window.events.some(e => e.id === 'remote')", "the remote element");
    let d = scored_events(&b, "remote");
    assert_eq!(
        d.len(),
        1,
        "{:?}",
        b.script("return window.events.filter(e => e.id === 'remote');", serde_json::json!([]))
    );
    assert!(d[0]["backend"].as_str().unwrap().starts_with("Remote (nim"), "{}", d[0]);
    assert_close(&d[0]["scores"][0].to_string(), paris, "remote element");

    // Ranking and first bad step as the CLI writes them: the engine shapes the component's
    // output with the CLI's own record code, checked here against `rewardlens score`.
    let steps = golden_steps("prm-qwen-mlp");
    let answer = |k: &str| {
        let c = &steps["cases"][k];
        c["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n\n")
    };
    let (prompt, responses) =
        (steps["cases"]["wrong"]["problem"].clone(), serde_json::json!([answer("wrong"), answer("ducks")]));
    let out = b.script_async(
        "const done = arguments[arguments.length - 1]; \
         RewardScorer.load({ model: '/fixtures/prm-qwen-mlp', storage: 'f32' }) \
           .then(s => s.score({ prompt: arguments[0], responses: arguments[1] }, { threshold: 0.05 })) \
           .then(done, e => done({ error: e }));",
        serde_json::json!([prompt, responses]),
    );
    assert!(out.get("error").is_none(), "{out}");
    let line = serde_json::json!({ "prompt": prompt, "responses": responses });
    let cli = &cli_score("prm-qwen-mlp", &[line], &["--step-threshold", "0.05"])[0];
    for key in ["responses", "ranking", "step_convention", "steps", "first_bad_step"] {
        assert_eq!(out[key], cli[key], "`{key}`: component {out}\nCLI {cli}");
    }
    // transformers' step rewards of this answer: 0.094, 0.038, 0.013.
    assert_eq!(out["first_bad_step"][0], 1, "{out}");
    for (i, s) in cli["scores"].as_array().unwrap().iter().enumerate() {
        assert_close(&out["scores"][i].to_string(), s.as_f64().unwrap(), "component score vs CLI");
        for (k, v) in cli["step_scores"][i].as_array().unwrap().iter().enumerate() {
            assert_close(&out["step_scores"][i][k].to_string(), v.as_f64().unwrap(), "component step vs CLI");
        }
    }
}

/// `rewardlens score` (the release CLI, built by `cargo xtask test`) on `lines` with a fixture
/// model and `extra` flags: its output objects.
fn cli_score(model: &str, lines: &[Value], extra: &[&str]) -> Vec<Value> {
    let bin = repo_root().join("target/release/rewardlens");
    assert!(bin.exists(), "{} is missing: `cargo xtask test` builds it", bin.display());
    let dir = artifacts().join("cli-score");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join(format!("{model}.in.jsonl")), dir.join(format!("{model}.out.jsonl")));
    std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let _ = std::fs::remove_file(&output);
    let o = std::process::Command::new(bin)
        .args(["score", "--model", fixtures_dir().join(model).to_str().unwrap()])
        .args(["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "rewardlens score: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn links_get_no_token_no_draft_no_remote_fallback_and_no_endless_bench() {
    use rewardlens_web::share::{encode_fragment, model_query, SharedInputs};
    let seq = fixtures_dir().join("qwen3-seq");
    let srv = StaticServer::start_with_statuses(
        vec![
            ("/hub/test-org/tiny-rm/resolve/v1/".into(), seq.clone()),
            ("/hub/test-org/tiny-rm/resolve/v2/".into(), seq.clone()),
            ("/x/y/resolve/main/".into(), seq),
            ("/fixtures/".into(), fixtures_dir()),
            ("/".into(), dist_dir()),
        ],
        vec![("/hub/gated/".into(), 401)],
        true,
    );
    let b = Browser::start();
    // The user's own draft, and a remote endpoint with a remembered key.
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#status[data-phase='idle']", LOAD);
    b.click("#tab-responses");
    b.fill("#prompt", "my own draft");
    b.fill("#remote-endpoint", &format!("{}/remote", srv.url));
    b.fill("#remote-key", "sk-remembered");
    b.click("#remote-remember");
    assert_eq!(b.attr("#hub-host", "data-host").as_deref(), Some("https://huggingface.co"));

    // A link naming a Hub mirror: the page shows its host, asks first, and never sends the token
    // to it, although the user typed one.
    let shared = SharedInputs {
        prompt: "What is the capital of France?".into(),
        responses: vec!["The capital of France is Paris.".into()],
    };
    let link = format!(
        "{}/{}&hub={}/hub&storage=f32#{}",
        srv.url,
        model_query("test-org/tiny-rm", "v1"),
        srv.url,
        encode_fragment(&shared)
    );
    b.goto(&link);
    b.wait_for("#load-linked", LOAD);
    assert_eq!(b.attr("#hub-host", "data-token").as_deref(), Some("never"));
    assert!(b.text("#hub-host").contains(&srv.url), "{}", b.text("#hub-host"));
    b.fill("#token", "hf_secret");
    b.click("#load-linked");
    b.wait_for("#results", LOAD);
    assert_close(
        &b.attrs("#scores td.score", "data-score")[0],
        golden_logits(&golden("qwen3-seq"), "simple")[0],
        "linked",
    );
    assert!(
        srv.requests().iter().all(|r| r.authorization.is_none()),
        "a link's mirror got the token: {:?}",
        srv.requests()
    );

    // The link's inputs did not replace the user's saved draft.
    b.goto("about:blank");
    b.goto(&format!("{}/", srv.url));
    b.wait_for("#prompt", LOAD);
    assert_eq!(b.script("return document.querySelector('#prompt').value;", serde_json::json!([])), "my own draft");

    // A 401 from the link's host is not worded as a request for the token, and a linked model
    // that fails does not fall back to the saved endpoint with its key.
    b.goto(&format!("{}/?model=gated/model&hub={}/hub", srv.url, srv.url));
    b.wait_for("#load-linked", LOAD);
    b.click("#load-linked");
    b.wait_for_either("#error", "#model-info", LOAD).expect("the gated link fails");
    let msg = b.text("#error");
    assert_eq!(b.attr("#error", "data-code").as_deref(), Some("unauthorized"), "{msg}");
    assert!(!msg.contains("enter an access token") && msg.contains("never sent"), "{msg}");
    assert!(!b.exists("#model-info"), "a linked model fell back to the remote endpoint");
    // The user's own Load does use the endpoint.
    b.click("#load");
    b.wait_for("#model-info[data-architecture='remote']", LOAD);

    // A revision that climbs out of the repo is refused before anything is fetched.
    b.goto(&format!("{}/?model=test-org/tiny-rm&revision=../../../../x/y/resolve/main&hub={}/hub", srv.url, srv.url));
    b.wait_for("#load-linked", LOAD);
    b.click("#load-linked");
    b.wait_for_either("#error", "#model-info", LOAD).expect("the revision is refused");
    assert_eq!(b.attr("#error", "data-code").as_deref(), Some("bad_source"), "{}", b.text("#error"));
    assert_eq!(srv.gets("/x/y/resolve/main/config.json"), 0, "another repo was loaded");

    // A mirror the user typed gets the token, and the page says so.
    b.fill("#hub-mirror", &format!("{}/hub", srv.url));
    b.fill("#token", "hf_secret");
    b.fill("#revision", "v2");
    b.fill("#remote-endpoint", "");
    b.fill("#model-input", "test-org/tiny-rm");
    assert_eq!(b.attr("#hub-host", "data-token").as_deref(), Some("sent"));
    b.click("#load");
    b.wait_for_either("#model-info", "#error", LOAD).expect("the user's mirror loads");
    let sent: Vec<_> =
        srv.requests().into_iter().filter(|r| r.path.starts_with("/hub/test-org/tiny-rm/resolve/v2/")).collect();
    assert!(
        !sent.is_empty() && sent.iter().all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")),
        "{sent:?}"
    );

    // `?bench=` within bounds only: a length of 10^8 tokens is refused, not run.
    b.goto(&format!("{}/?model=/fixtures/qwen3-seq&bench=100000000", srv.url));
    b.wait_for("#model-info", LOAD);
    assert!(b.text("#status").contains("benchmark was not run"), "{}", b.text("#status"));
    assert!(!b.exists("#bench"));
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn downloads_stop_at_caps_from_the_config_and_memory() {
    use std::io::Write;
    // 17 MiB of whitespace after a valid config.json, sent without a Content-Length.
    let huge_config = broken_copy("huge-config", "qwen3-seq", |d| {
        let mut f = std::fs::OpenOptions::new().append(true).open(d.join("config.json")).unwrap();
        f.write_all(&vec![b' '; 17 << 20]).unwrap();
    });
    // Weights far beyond what config.json's parameters can need.
    broken_copy("padded-weights", "qwen3-seq", |d| {
        let mut f = std::fs::OpenOptions::new().append(true).open(d.join("model.safetensors")).unwrap();
        f.write_all(&vec![0u8; 200 << 20]).unwrap();
    });
    // An index listing 100 shards for a 2-layer model.
    broken_copy("many-shards", "qwen3-seq", |d| {
        let map: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("t{i}"), Value::from(format!("model-{i:05}.safetensors")))).collect();
        std::fs::write(d.join("model.safetensors.index.json"), serde_json::json!({ "weight_map": map }).to_string())
            .unwrap();
    });
    // A 3.75 GiB GGUF (sparse): more than the CPU engine can hold with its reserve.
    let big = huge_config.parent().unwrap().join("big.gguf");
    std::fs::File::create(&big).unwrap().set_len((4u64 << 30) - (256 << 20)).unwrap();
    let work = huge_config.parent().unwrap().to_path_buf();
    let srv = StaticServer::start_full(
        vec![("/work/".into(), work.clone()), ("/nolen/".into(), work), ("/".into(), dist_dir())],
        vec![],
        vec!["/nolen/".into()],
        true,
    );
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));

    let (code, msg) = load_error(&b, &format!("{}/nolen/huge-config", srv.url));
    assert_eq!(code, "too_large", "{msg}");
    assert!(msg.contains("config.json"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/work/padded-weights", srv.url));
    assert_eq!(code, "too_large", "{msg}");
    assert!(msg.contains("model.safetensors"), "{msg}");

    let (code, msg) = load_error(&b, &format!("{}/work/many-shards", srv.url));
    assert_eq!(code, "corrupted", "{msg}");
    assert!(msg.contains("100 weight shards"), "{msg}");
    assert_eq!(srv.gets("/work/many-shards/model-00000.safetensors"), 0);

    // Refused on its Content-Length, before the body is read.
    let (code, msg) = load_error(&b, &format!("{}/work/big.gguf", srv.url));
    assert_eq!(code, "too_large", "{msg}");
    assert!(msg.contains("big.gguf"), "{msg}");
    let _ = std::fs::remove_file(&big);
}

/// A copy of qwen3-seq that takes inputs of up to 65536 tokens: one forward pass over such an
/// input is one synchronous step of minutes in wasm.
fn long_context_copy() -> PathBuf {
    broken_copy("long-context", "qwen3-seq", |d| {
        let mut c: Value = serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        c["max_position_embeddings"] = 65536.into();
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    })
}

/// About 40k tokens of answer.
fn long_answer() -> String {
    "An answer. ".repeat(14_000)
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn cancel_stops_a_job_stuck_in_one_long_step() {
    let long = long_context_copy();
    let work = long.parent().unwrap().to_path_buf();
    let srv = StaticServer::start(vec![("/work/".into(), work), ("/".into(), dist_dir())], true);
    let g = golden("qwen3-seq");
    let b = Browser::start();
    // One engine worker: its forward pass is one long synchronous step. (The pipeline's
    // coordinator sees a cancel between chunks and needs no restart.)
    b.goto(&format!("{}/?workers=1&storage=f32", srv.url));
    b.load_model(&format!("{}/work/long-context", srv.url));
    b.click("#tab-responses");
    while b.attrs("#responses textarea", "aria-label").len() > 1 {
        b.click("#responses .remove");
    }
    b.fill("#prompt", "Say it long.");
    b.fill("#responses li:nth-child(1) textarea", &long_answer());
    b.click("#score");
    b.wait_for("#cancel", LOAD);
    b.click("#cancel");
    // The worker cannot see the cancel inside the forward pass; the page replaces it.
    b.wait_for_either("#status[data-phase='idle'] .notice", "#error", Duration::from_secs(60))
        .expect("cancelled without an error");
    let status = b.text("#status");
    assert!(status.contains("Cancelled") && status.contains("restarted"), "{status}");
    assert!(!b.exists("#results"), "a cancelled job shows no results");
    // The model came back (from the cache) and scores as before.
    b.wait_for("#model-info", LOAD);
    assert_eq!(srv.gets("/work/long-context/model.safetensors"), 1, "reloaded from the cache");
    b.score_responses("What is the capital of France?", &["The capital of France is Paris."]);
    assert_close(&b.attrs("#scores td.score", "data-score")[0], golden_logits(&g, "simple")[0], "after the restart");
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn web_component_typos_fail_alone_markup_is_escaped_and_cancel_works() {
    let pages = repo_root().join("tests/browser/pages");
    let long = long_context_copy();
    let work = long.parent().unwrap().to_path_buf();
    let srv = StaticServer::start(
        vec![
            ("/fixtures/".into(), fixtures_dir()),
            ("/work/".into(), work),
            ("/pages/".into(), pages),
            ("/".into(), dist_dir()),
        ],
        true,
    );
    let b = Browser::start();
    b.goto(&format!("{}/pages/components.html", srv.url));
    let g = golden("qwen3-seq");
    let (paris, berlin) = (golden_logits(&g, "simple")[0], golden_logits(&g, "wrong")[0]);
    wait_js(&b, "window.events.filter(e => e.type === 'reward-scored').length >= 2", "both components to score");

    // A typo in one element's attribute fails that element only; one added with it scores.
    b.script(
        "for (const [id, storage] of [['typo', 'q9'], ['fine', 'f32']]) { \
           const e = document.createElement('reward-scorer'); e.id = id; e.setAttribute('model', '/fixtures/qwen3-seq'); \
           e.setAttribute('storage', storage); e.setAttribute('prompt', 'What is the capital of France?'); \
           e.setAttribute('responses', JSON.stringify(['The capital of France is Paris.'])); document.body.append(e); }",
        serde_json::json!([]),
    );
    wait_js(
        &b,
        "window.events.some(e => e.id === 'typo') && window.events.some(e => e.id === 'fine')",
        "both new elements",
    );
    let typo = b.script("return window.events.find(e => e.id === 'typo');", serde_json::json!([]));
    assert_eq!(
        (typo["type"].as_str(), typo["detail"]["code"].as_str()),
        (Some("reward-error"), Some("bad_attribute")),
        "{typo}"
    );
    assert!(typo["detail"]["message"].as_str().unwrap().contains("q9"), "{typo}");
    let fine = scored_events(&b, "fine");
    assert_eq!(fine.len(), 1, "the other element failed with the typo");
    assert_close(&fine[0]["scores"][0].to_string(), paris, "the element next to the typo");

    // Markup built by scorerMarkup keeps hostile responses as text (as a HyperText field would
    // insert it: innerHTML).
    let hostile = ["x' onmouseover='window.pwned=1' y='", "</reward-response><img src=x onerror=\"window.pwned=2\">"];
    b.script_async(
        "const done = arguments[arguments.length - 1]; \
         import('/reward-scorer.js').then(m => { \
           const div = document.createElement('div'); \
           div.innerHTML = m.scorerMarkup({ model: '/fixtures/qwen3-seq', prompt: \"What's the capital of France?\", \
                                            responses: ['The capital of France is Berlin.', ...arguments[0]] }); \
           div.firstChild.id = 'marked'; document.body.append(div); done(null); });",
        serde_json::json!([hostile]),
    );
    wait_js(&b, "window.events.some(e => e.id === 'marked')", "the element from markup");
    let got = b.script(
        "const e = document.getElementById('marked'); \
         return { imgs: document.querySelectorAll('img').length, pwned: window.pwned || null, \
                  attrs: e.getAttributeNames(), responses: e.responses, prompt: e.prompt };",
        serde_json::json!([]),
    );
    assert_eq!(got["imgs"], 0, "{got}");
    assert_eq!(got["pwned"], Value::Null, "{got}");
    assert_eq!(got["attrs"], serde_json::json!(["model", "prompt", "id"]), "{got}");
    assert_eq!(got["prompt"], "What's the capital of France?");
    assert_eq!(got["responses"], serde_json::json!(["The capital of France is Berlin.", hostile[0], hostile[1]]));
    let marked = scored_events(&b, "marked");
    assert_eq!(marked.len(), 1, "{got}");

    // Cancel through an AbortSignal while the engine is inside one long forward pass: the job
    // rejects as cancelled, and the next one runs on a fresh engine (model from the cache).
    let out = b.script_async(
        "const done = arguments[arguments.length - 1]; \
         (async () => { \
           const s = await RewardScorer.load({ model: '/work/long-context', storage: 'f32' }); \
           const stop = new AbortController(); \
           const job = s.score({ prompt: 'Say it long.', responses: [arguments[0]] }, { signal: stop.signal }); \
           setTimeout(() => stop.abort(), 500); \
           const first = await job.then(() => 'scored', e => e.code); \
           const again = await s.score({ prompt: 'What is the capital of France?', responses: ['The capital of France is Berlin.'] }); \
           return { first, score: again.scores[0] }; \
         })().then(done, e => done({ error: String(e && (e.message || e)) }));",
        serde_json::json!([long_answer()]),
    );
    assert_eq!(out["first"], "cancelled", "{out}");
    assert_close(&out["score"].to_string(), berlin, "after the cancel");
    assert_eq!(srv.gets("/work/long-context/model.safetensors"), 1, "reloaded from the cache");
}

/// The Evaluate view's table as (name, rows, score) from the rows' data attributes.
fn eval_table(b: &Browser) -> Vec<(String, f64)> {
    let names = b.attrs("#eval-table tbody tr", "data-name");
    let scores = b.attrs("#eval-table tbody tr", "data-score");
    names.into_iter().zip(scores.iter().map(|s| s.parse().unwrap())).collect()
}

/// Runs the Evaluate tab (files already picked, or a Hub id typed) and waits for the table.
fn run_eval(b: &Browser, suite: &str) {
    b.fill("#eval-suite", suite);
    b.click("#score");
    if let Err(e) = b.wait_for_either("#eval-table", "#error", LOAD) {
        panic!("evaluating {suite} failed: {e}");
    }
}

/// Benchmark suites in the page, on the WASM CPU engine in f32, give the numbers the
/// fixture script's re-implementation of each reference formula computes from transformers'
/// scores (tests/fixtures/make_benchmarks.py): RewardBench 2 from a Parquet file, RewardBench
/// from a (stand-in) Hub dataset id, ProcessBench from its four split files; a wrong row opens
/// in the response view.
#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn benchmark_suites_evaluate_in_the_page() {
    let bench = repo_root().join("tests/fixtures/benchmarks");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(bench.join("expected.json")).unwrap()).unwrap();
    // A stand-in Hub: the listing the Hub API answers, and the file under resolve/main.
    let hub = artifacts().join("eval-hub");
    let _ = std::fs::remove_dir_all(&hub);
    let listing = hub.join("api/datasets/tiny-org/reward-bench/revision");
    std::fs::create_dir_all(&listing).unwrap();
    std::fs::write(
        listing.join("main"),
        serde_json::json!({"sha": "0123", "siblings": [
            {"rfilename": "README.md"},
            {"rfilename": "data/filtered-00000-of-00001.parquet"},
            {"rfilename": "data/raw-00000-of-00001.parquet"}]})
        .to_string(),
    )
    .unwrap();
    let files = hub.join("datasets/tiny-org/reward-bench/resolve/main/data");
    std::fs::create_dir_all(&files).unwrap();
    for f in ["filtered-00000-of-00001.parquet", "raw-00000-of-00001.parquet"] {
        std::fs::copy(bench.join("rewardbench/data").join(f), files.join(f)).unwrap();
    }
    let srv = StaticServer::start(
        vec![("/hub/".into(), hub.clone()), ("/fixtures/".into(), fixtures_dir()), ("/".into(), dist_dir())],
        true,
    );
    let b = Browser::start();
    b.goto(&format!("{}/?hub={}/hub", srv.url, srv.url));
    b.fill("#storage", "f32");
    b.load_model(&format!("{}/fixtures/qwen3-seq/", srv.url));
    b.click("#tab-eval");

    // RewardBench 2 from its Parquet file: every subset, Ties included, and the mean of six.
    b.upload("#eval-files", &[bench.join("rewardbench2/data/test-00000-of-00001.parquet")]);
    b.wait_for("#eval-file-names:not(:empty)", LOAD);
    run_eval(&b, "rewardbench2");
    let table = eval_table(&b);
    let e = &expected["rewardbench2"];
    for (subset, v) in e["results"].as_object().unwrap() {
        let shown = table.iter().find(|(n, _)| n == subset).unwrap_or_else(|| panic!("{subset} in {table:?}")).1;
        let tol = if subset == "Ties" { 1e-4 } else { 1e-7 };
        assert!((shown - 100.0 * v.as_f64().unwrap()).abs() < tol, "{subset}: page {shown}, reference {v}");
    }
    let headline: f64 = b.attr("#eval-headline", "data-score").unwrap().parse().unwrap();
    assert!((headline - 100.0 * e["score"].as_f64().unwrap()).abs() < 1e-4, "headline {headline}");
    let wrong: usize = b.attr("#eval-wrong", "data-count").unwrap().parse().unwrap();
    assert!(wrong > 0, "the fixture has rows the tiny model gets wrong");

    // A wrong row opens in the normal response view: its answers scored, chosen first.
    b.click("#eval-wrong summary");
    b.click("#eval-wrong button.wrong-row");
    b.wait_for("#scores td.score", LOAD);
    assert!(b.attrs("#scores td.score", "data-score").len() >= 4, "{}", b.text("#scores"));

    // RewardBench from a Hub dataset id (the raw split is listed and left out).
    b.goto(&format!("{}/?hub={}/hub", srv.url, srv.url));
    b.fill("#storage", "f32");
    b.load_model(&format!("{}/fixtures/qwen3-seq/", srv.url));
    b.click("#tab-eval");
    b.fill("#eval-hub", "tiny-org/reward-bench");
    run_eval(&b, "rewardbench");
    let table = eval_table(&b);
    let e = &expected["rewardbench"];
    for (name, v) in e["results"].as_object().unwrap().iter().chain(e["sections"].as_object().unwrap()) {
        let shown = table.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} in {table:?}")).1;
        assert!((shown - 100.0 * v.as_f64().unwrap()).abs() < 1e-7, "{name}: page {shown}, reference {v}");
    }

    // ProcessBench: the PRM fixture, its Qwen convention, four split files (JSON and Parquet).
    b.goto(&format!("{}/", srv.url));
    b.fill("#storage", "f32");
    b.load_model(&format!("{}/fixtures/prm-qwen/", srv.url));
    b.click("#tab-eval");
    b.fill("#eval-suite", "processbench");
    b.fill("#eval-prm", "qwen");
    let pb = bench.join("processbench");
    b.upload(
        "#eval-files",
        &[
            pb.join("gsm8k.json"),
            pb.join("data/math-00000-of-00001.parquet"),
            pb.join("olympiadbench.json"),
            pb.join("omnimath.json"),
        ],
    );
    b.wait_for("#eval-file-names:not(:empty)", LOAD);
    run_eval(&b, "processbench");
    let table = eval_table(&b);
    let e = &expected["processbench"]["results"];
    for split in ["gsm8k", "math", "olympiadbench", "omnimath"] {
        let shown = table.iter().find(|(n, _)| n == split).unwrap().1;
        assert!(
            (shown - e[split]["f1"].as_f64().unwrap()).abs() < 1e-7,
            "{split}: page F1 {shown}, reference {}",
            e[split]
        );
    }
    let headline: f64 = b.attr("#eval-headline", "data-score").unwrap().parse().unwrap();
    assert!((headline - e["avg_f1"].as_f64().unwrap()).abs() < 1e-7);
}

/// A multimodal reward server's stand-in on loopback (CORS open): records every `/pooling`
/// body and answers a score that counts what arrived (images + messages/10).
fn capturing_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).unwrap_or(0) == 0 {
                    return;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let cors =
                    "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: content-type, authorization\r\n\
                            Access-Control-Allow-Methods: GET, POST\r\nConnection: close\r\n";
                let answer = if request.starts_with("OPTIONS") {
                    String::new()
                } else {
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
                    let images = msgs
                        .iter()
                        .filter_map(|m| m["content"].as_array())
                        .flatten()
                        .filter(|p| p["type"] == "image_url")
                        .count();
                    bodies.lock().unwrap().push(body);
                    let score = images as f64 + msgs.len() as f64 / 10.0;
                    serde_json::json!({"data": [{"index": 0, "object": "pooling", "data": [score]}]}).to_string()
                };
                let status = if request.starts_with("OPTIONS") { "204 No Content" } else { "200 OK" };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{cors}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(answer.as_bytes()));
            });
        }
    });
    (url, seen)
}

#[test]
#[ignore = "needs `cargo xtask dist` and Chromium; run by `cargo xtask test`"]
fn prompt_images_go_to_a_multimodal_endpoint_and_local_models_refuse_them() {
    use base64::Engine as _;
    let srv = StaticServer::app_with_fixtures();
    let (endpoint, seen) = capturing_endpoint();
    let png = std::fs::read(repo_root().join("tests/fixtures/images/red.png")).unwrap();
    let red = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let b = Browser::start();
    b.goto(&format!("{}/", srv.url));
    b.fill("#remote-endpoint", &endpoint);
    b.fill("#remote-model", "vl-rm");
    b.fill("#remote-protocol", "vllm");
    b.click("#remote-only");
    b.load_model(&format!("{}/fixtures/qwen3-seq", srv.url));
    assert_eq!(b.attr("#model-info", "data-architecture").as_deref(), Some("remote"));

    // The page: a picked image goes with the prompt, as an image_url part before its text.
    b.click("#tab-responses");
    b.upload("#prompt-image", &[repo_root().join("tests/fixtures/images/red.png")]);
    b.wait_for(".prompt-image img", LOAD);
    b.score_responses("What colour is this?", &["Red.", "Green."]);
    let shown = b.attrs("#scores td.score", "data-score");
    assert_close(&shown[0], 1.2, "one image and two messages");
    let mut bodies = std::mem::take(&mut *seen.lock().unwrap());
    bodies.sort_by_key(|b| b.to_string());
    let user = serde_json::json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": red}}, {"type": "text", "text": "What colour is this?"}]});
    let want: Vec<Value> = ["Green.", "Red."]
        .iter()
        .map(|a| {
            serde_json::json!({"model": "vl-rm", "task": "classify", "use_activation": false,
                               "messages": [user, {"role": "assistant", "content": a}]})
        })
        .collect();
    assert_eq!(bodies, want);

    // <reward-scorer>'s API: `images` with the prompt, to the endpoint; a model in the tab refuses them.
    let out = b.script_async(
        "const done = arguments[arguments.length - 1]; \
         import('/reward-scorer.js').then(async ({ RewardScorer }) => { \
           const remote = await RewardScorer.load({ endpoint: arguments[0], protocol: 'vllm', model: 'vl-rm' }); \
           const r = await remote.score({ prompt: 'Which?', images: [arguments[1]], responses: ['This.'] }); \
           const local = await RewardScorer.load({ model: '/fixtures/qwen3-seq', storage: 'f32' }); \
           const e = await local.score({ prompt: 'Which?', images: [arguments[1]], responses: ['This.'] }).then(() => null, e => e); \
           return { remote: r.scores, local: e }; \
         }).then(done, e => done({ error: String(e && e.message || e) }));",
        serde_json::json!([endpoint, red]),
    );
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["remote"], serde_json::json!([1.2]), "{out}");
    assert_eq!(out["local"]["code"], "images", "{out}");
    assert!(out["local"]["message"].as_str().unwrap().contains("reads text only"), "{out}");
    let last = seen.lock().unwrap().pop().unwrap();
    assert_eq!(last["messages"][0]["content"][0]["image_url"]["url"], red.as_str());
}
