//! Remote scoring: our clients against a real `rewardlens serve` process for every protocol
//! (remote scores equal transformers' goldens, as local ones do), `score --endpoint`, fault
//! injection against a scripted server, and a bounded load test.

mod common;

use common::Server;
use rewardlens_core::types::prompt_response;
use rewardlens_core::ChatTemplate;
use rewardlens_remote::{Protocol, RemoteConfig, RemoteError, RemoteInput, RemoteScorer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

fn logits(g: &Value, case: &str) -> Vec<f64> {
    g["conversations"][case]["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-4 * b.abs().max(1.0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn template(model: &str) -> ChatTemplate {
    let dir = fixture(model);
    let cfg = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    ChatTemplate::from_tokenizer_config(&cfg, None).unwrap()
}

const PROMPT: &str = "What is the capital of France?";
const PARIS: &str = "The capital of France is Paris.";
const BERLIN: &str = "The capital of France is Berlin.";

#[test]
fn every_protocol_round_trips_with_transformers_scores() {
    let qwen3 = fixture("qwen3-seq");
    let qwen2 = fixture("qwen2-seq");
    let srv = Server::start(&[
        "--model",
        qwen3.to_str().unwrap(),
        "--served-model-name",
        "qwen3",
        "--model",
        qwen2.to_str().unwrap(),
        "--served-model-name",
        "qwen2",
    ]);
    let rt = rt();
    let g3 = golden("qwen3-seq");
    let g2 = golden("qwen2-seq");
    let chats =
        vec![RemoteInput::Chat(prompt_response(PROMPT, PARIS)), RemoteInput::Chat(prompt_response(PROMPT, BERLIN))];
    let t = template("qwen3-seq");
    let texts: Vec<RemoteInput> = [PARIS, BERLIN]
        .iter()
        .map(|r| RemoteInput::Text {
            text: t.render(&prompt_response(PROMPT, r), false).unwrap(),
            prompt: t.render(&prompt_response(PROMPT, r)[..1], true).unwrap(),
            images: vec![],
        })
        .collect();
    let expect = [logits(&g3, "simple")[0], logits(&g3, "wrong")[0]];

    for protocol in [Protocol::VllmPooling, Protocol::VllmClassify, Protocol::Nim, Protocol::OpenRlhf, Protocol::Tei] {
        let mut cfg = RemoteConfig::new(srv.url.clone(), protocol);
        cfg.model = Some("qwen3".into());
        let client = RemoteScorer::new(cfg).unwrap();
        let inputs = if protocol.takes_chat() { &chats } else { &texts };
        let got = rt.block_on(client.score(inputs)).unwrap_or_else(|e| panic!("{}: {e}", protocol.name()));
        for (s, e) in got.iter().zip(expect) {
            assert!(close(s.score(), e), "{}: {} vs transformers {e}", protocol.name(), s.score());
        }
        if protocol.takes_chat() && protocol != Protocol::Nim {
            // The text form of vLLM's API takes rendered text in one batched request.
            let got = rt.block_on(client.score(&texts)).unwrap();
            assert!(close(got[1].score(), expect[1]), "{} text form", protocol.name());
        }
    }

    // Three labels: NIM names each attribute; vLLM returns them in label order.
    let e2 = logits(&g2, "simple");
    let mut cfg = RemoteConfig::new(srv.url.clone(), Protocol::Nim);
    cfg.model = Some("qwen2".into());
    let nim = rt.block_on(RemoteScorer::new(cfg).unwrap().score(&chats[..1])).unwrap();
    assert_eq!(nim[0].labels.len(), 3);
    for (v, e) in nim[0].values.iter().zip(&e2) {
        assert!(close(*v, *e), "qwen2 attribute {v} vs {e}");
    }

    // Unknown model: 404 named, not retried.
    let mut cfg = RemoteConfig::new(srv.url.clone(), Protocol::VllmPooling);
    cfg.model = Some("nope".into());
    let err = rt.block_on(RemoteScorer::new(cfg).unwrap().score(&chats[..1])).unwrap_err();
    assert!(matches!(err, RemoteError::Status { status: 404, tries: 1, .. }), "{err}");
    assert!(err.to_string().contains("/pooling") && err.to_string().contains("nope"), "{err}");

    // /v1/models and /health, as vLLM answers them.
    let models: Value = get_json(&format!("{}/v1/models", srv.url));
    assert_eq!(models["data"][0]["id"], "qwen3");
    assert_eq!(models["data"][1]["id"], "qwen2");
}

/// A GET's JSON body, through the same raw client as the header checks below.
fn get_json(url: &str) -> Value {
    let (base, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let text = raw_request(
        &format!("http://{base}"),
        &format!("GET /{path} HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n\r\n"),
    );
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap_or(Value::Null)
}

#[test]
fn score_endpoint_writes_what_local_scoring_writes() {
    let model = fixture("qwen3-seq");
    let srv = Server::start(&["--model", model.to_str().unwrap(), "--api-key", "sekret"]);
    let dir = std::env::temp_dir().join(format!("rl-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n",
            json!({"prompt": PROMPT, "responses": [PARIS, BERLIN]}),
            json!({"prompt": PROMPT, "chosen": PARIS, "rejected": BERLIN})
        ),
    )
    .unwrap();
    let run = |out: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["score", "--input", input.to_str().unwrap(), "--output", dir.join(out).to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run("local.jsonl", &["--model", model.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    for (name, protocol, extra) in [
        ("vllm.jsonl", "vllm", vec![]),
        ("nim.jsonl", "nim", vec![]),
        ("openrlhf.jsonl", "openrlhf", vec!["--template", model.to_str().unwrap()]),
        ("tei.jsonl", "tei", vec!["--template", model.to_str().unwrap()]),
    ] {
        let mut args = vec!["--endpoint", srv.url.as_str(), "--protocol", protocol, "--api-key", "sekret"];
        args.extend(extra);
        let (code, err) = run(name, &args);
        assert_eq!(code, Some(0), "{protocol}: {err}");
        let local: Vec<Value> = read_jsonl(&dir.join("local.jsonl"));
        let remote: Vec<Value> = read_jsonl(&dir.join(name));
        for (l, r) in local.iter().zip(&remote) {
            for key in ["scores", "chosen_score", "rejected_score"] {
                if let Some(lv) = l.get(key) {
                    let flat = |v: &Value| -> Vec<f64> {
                        v.as_array()
                            .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect())
                            .unwrap_or_else(|| vec![v.as_f64().unwrap()])
                    };
                    for (a, b) in flat(lv).iter().zip(flat(&r[key])) {
                        assert!((a - b).abs() < 1e-5, "{protocol} {key}: local {a} remote {b}");
                    }
                }
            }
            assert_eq!(l.get("ranking"), r.get("ranking"), "{protocol}");
            assert_eq!(l.get("correct"), r.get("correct"), "{protocol}");
        }
    }
    // A wrong key is a clear 401, not retried.
    let (code, err) = run("denied.jsonl", &["--endpoint", srv.url.as_str(), "--api-key", "wrong"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 401") && err.contains("/pooling"), "{err}");
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What the scripted server does with each successive request.
#[derive(Clone, Debug)]
enum Act {
    Drop,
    Status(u16),
    Delay(Duration),
    Malformed,
    Ok,
}

/// A server that follows a script, answering OpenRLHF-style requests with one reward per
/// query (the query's length) when the script says Ok; it records every request body.
fn scripted(script: Vec<Act>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/get_reward", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let body = read_request(&mut stream);
            s2.lock().unwrap().push(body.clone());
            let act = script.get(i).cloned().unwrap_or(Act::Ok);
            let ok_body = || {
                let q = body["query"].as_array().cloned().unwrap_or_default();
                json!({"rewards": q.iter().map(|x| x.as_str().unwrap_or("").len() as f64).collect::<Vec<_>>()})
                    .to_string()
            };
            let reply = |stream: &mut TcpStream, status: u16, body: &str| {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            };
            match act {
                Act::Drop => drop(stream),
                Act::Status(s) => reply(&mut stream, s, r#"{"error": "scripted"}"#),
                Act::Delay(d) => {
                    std::thread::spawn(move || {
                        std::thread::sleep(d);
                        let b = "{\"rewards\": []}";
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        );
                    });
                }
                Act::Malformed => reply(&mut stream, 200, "{\"rewards\": [1.0,"),
                Act::Ok => reply(&mut stream, 200, &ok_body()),
            }
        }
    });
    (url, seen)
}

fn read_request(s: &mut TcpStream) -> Value {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

fn client(url: &str, tries: u32, timeout: Duration) -> RemoteScorer {
    let mut cfg = RemoteConfig::new(url, Protocol::OpenRlhf);
    cfg.max_tries = tries;
    cfg.timeout = timeout;
    cfg.backoff = Duration::from_millis(20);
    RemoteScorer::new(cfg).unwrap()
}

fn texts(n: usize) -> Vec<RemoteInput> {
    (0..n).map(|i| RemoteInput::Text { text: "x".repeat(i + 1), prompt: String::new(), images: vec![] }).collect()
}

#[test]
fn faults_are_retried_or_reported_and_batches_stay_whole() {
    let rt = rt();
    let t = Duration::from_secs(5);

    // 503, then a dropped connection, then success: the same batch of three, in order, once.
    let (url, seen) = scripted(vec![Act::Status(503), Act::Drop, Act::Ok]);
    let got = rt.block_on(client(&url, 5, t).score(&texts(3))).unwrap();
    assert_eq!(got.iter().map(|s| s.score()).collect::<Vec<_>>(), [1.0, 2.0, 3.0]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "two retries");
    assert!(seen.iter().all(|b| b["query"].as_array().map(Vec::len) == Some(3)), "every try carried the whole batch");

    // 429 is retried too.
    let (url, seen) = scripted(vec![Act::Status(429), Act::Ok]);
    assert!(rt.block_on(client(&url, 5, t).score(&texts(1))).is_ok());
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A delay past the timeout is retried; with one try it is a timeout error naming the URL.
    let (url, seen) = scripted(vec![Act::Delay(Duration::from_secs(3)), Act::Ok]);
    assert!(rt.block_on(client(&url, 3, Duration::from_millis(500)).score(&texts(2))).is_ok());
    assert_eq!(seen.lock().unwrap().len(), 2);
    let (url, _) = scripted(vec![Act::Delay(Duration::from_secs(3))]);
    let err = rt.block_on(client(&url, 1, Duration::from_millis(500)).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Timeout { .. }) && err.to_string().contains(&url), "{err}");

    // 401 and malformed JSON are not retried.
    let (url, seen) = scripted(vec![Act::Status(401)]);
    let err = rt.block_on(client(&url, 5, t).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Status { status: 401, .. }) && err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let (url, seen) = scripted(vec![Act::Malformed]);
    let err = rt.block_on(client(&url, 5, t).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Malformed { .. }) && err.to_string().contains("not JSON"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Always 503: five tries, then an error saying so.
    let (url, seen) = scripted(vec![Act::Status(503); 10]);
    let err = rt.block_on(client(&url, 5, t).score(&texts(1))).unwrap_err();
    assert!(err.to_string().contains("HTTP 503") && err.to_string().contains("after 5 tries"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 5);

    // Nothing listening: a network error naming the URL.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/get_reward", l.local_addr().unwrap())
    };
    let err = rt.block_on(client(&dead, 2, t).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Network { tries: 2, .. }) && err.to_string().contains(&dead), "{err}");
}

#[test]
fn load_test_many_concurrent_clients_nothing_dropped() {
    let model = fixture("qwen3-seq");
    let srv = Server::start(&["--model", model.to_str().unwrap(), "--queue", "1024"]);
    let rt = rt();
    let clients = 32;
    let per_client = 8;
    let expect = logits(&golden("qwen3-seq"), "simple")[0];
    let started = Instant::now();
    let latencies: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let url = srv.url.clone();
            tasks.push(tokio::spawn(async move {
                let c = RemoteScorer::new(RemoteConfig::new(url, Protocol::VllmPooling)).unwrap();
                let mut lat = Vec::new();
                for _ in 0..per_client {
                    let t = Instant::now();
                    let s = c.score(&[RemoteInput::Chat(prompt_response(PROMPT, PARIS))]).await.unwrap();
                    assert!(close(s[0].score(), expect));
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    assert_eq!(latencies.len(), clients * per_client, "every request answered");
    eprintln!(
        "load: {} requests from {clients} clients in {secs:.2}s = {:.0} req/s; p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}

#[test]
fn a_full_queue_answers_503_and_retries_get_through() {
    let model = fixture("qwen3-seq");
    // One waiting request at most and one sequence per batch: a burst must overflow.
    let srv = Server::start(&["--model", model.to_str().unwrap(), "--queue", "1", "--max-batch", "1"]);
    let rt = rt();
    let long = "word ".repeat(300);
    let (rejected, ok) = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let mut cfg = RemoteConfig::new(srv.url.clone(), Protocol::VllmPooling);
            cfg.max_tries = 1;
            let c = RemoteScorer::new(cfg).unwrap();
            let input = RemoteInput::Chat(prompt_response(PROMPT, &long));
            tasks.push(tokio::spawn(async move { c.score(&[input]).await }));
        }
        let (mut rejected, mut ok) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(RemoteError::Status { status: 503, .. }) => rejected += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        (rejected, ok)
    });
    assert!(rejected > 0 && ok > 0, "{rejected} rejected, {ok} answered");
    // With retries (backoff with jitter), every request gets through.
    let done = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let mut cfg = RemoteConfig::new(srv.url.clone(), Protocol::VllmPooling);
            cfg.max_tries = 20;
            cfg.backoff = Duration::from_millis(50);
            let c = RemoteScorer::new(cfg).unwrap();
            let input = RemoteInput::Chat(prompt_response(PROMPT, &long));
            tasks.push(tokio::spawn(async move { c.score(&[input]).await }));
        }
        let mut n = 0;
        for t in tasks {
            t.await.unwrap().unwrap();
            n += 1;
        }
        n
    });
    assert_eq!(done, 16);
}

fn raw_request(url: &str, request: &str) -> String {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    s.write_all(request.replace("{host}", host).as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

#[test]
fn health_limits_cors_and_graceful_shutdown() {
    let model = fixture("qwen3-seq");
    let mut srv = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--api-key",
        "k",
        "--max-body-mib",
        "1",
        "--cors-origin",
        "http://app.example",
    ]);
    // /health needs no key; other routes do.
    let r = raw_request(&srv.url, "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = raw_request(&srv.url, "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401") && r.contains("AuthenticationError"), "{r}");
    // A body over the limit is refused with 413 before it is read whole.
    let big = "x".repeat(2 << 20);
    let r = raw_request(
        &srv.url,
        &format!(
            "POST /get_reward HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"query\": [\"{big}\"]}}",
            big.len() + 14
        ),
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{}", &r[..r.len().min(200)]);
    // CORS preflight from the allowed origin.
    let r = raw_request(
        &srv.url,
        "OPTIONS /pooling HTTP/1.1\r\nHost: {host}\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n",
    );
    assert!(r.to_ascii_lowercase().contains("access-control-allow-origin: http://app.example"), "{r}");
    // SIGTERM: the server stops accepting and exits cleanly.
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not shut down");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_on_the_gpu_answers_with_transformers_scores() {
    let qwen3 = fixture("qwen3-seq");
    let srv = Server::start(&["--model", qwen3.to_str().unwrap(), "--device", "gpu", "--gpu-weights", "f32"]);
    let g3 = golden("qwen3-seq");
    let chats =
        vec![RemoteInput::Chat(prompt_response(PROMPT, PARIS)), RemoteInput::Chat(prompt_response(PROMPT, BERLIN))];
    let client = RemoteScorer::new(RemoteConfig::new(srv.url.clone(), Protocol::VllmPooling)).unwrap();
    let got = rt().block_on(client.score(&chats)).unwrap();
    for (s, case) in got.iter().zip(["simple", "wrong"]) {
        let e = logits(&g3, case)[0];
        assert!(close(s.score(), e), "GPU serve {case}: {} vs transformers {e}", s.score());
    }
}

#[test]
fn step_rewards_through_vllm_token_classify() {
    // A PRM served by `rewardlens serve` (vLLM's /pooling, task token_classify); the client lays
    // out the steps with the model's tokenizer from --template and sends token ids.
    let model = fixture("prm-qwen-mlp");
    let srv = Server::start(&["--model", model.to_str().unwrap(), "--served-model-name", "prm"]);
    let g: Value = serde_json::from_str(&std::fs::read_to_string(model.join("golden_steps.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in.jsonl"), tmp.path().join("out.jsonl"));
    let cases: Vec<(&String, &Value)> = g["cases"].as_object().unwrap().iter().collect();
    let lines: String = cases
        .iter()
        .map(|(_, c)| {
            let answer: Vec<&str> = c["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            format!("{}\n", serde_json::json!({"prompt": c["problem"], "response": answer.join("\n\n")}))
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["score", "--endpoint", &srv.url, "--protocol", "vllm", "--model", "prm"])
        .args(["--template", model.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = read_jsonl(&output);
    for ((key, c), o) in cases.iter().zip(&out) {
        let (got, want) = (o["step_scores"].as_array().unwrap(), c["step_scores"].as_array().unwrap());
        assert_eq!(got.len(), want.len(), "{key}");
        for (a, b) in got.iter().zip(want) {
            assert!(close(a.as_f64().unwrap() as f32, b.as_f64().unwrap()), "{key}: {a} vs transformers {b}");
        }
    }
    // Without the tokenizer the steps cannot be laid out: said so.
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["score", "--endpoint", &srv.url, "--protocol", "vllm", "--model", "prm", "--prm", "qwen"])
        .args(["--input", input.to_str().unwrap(), "--output", tmp.path().join("x.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--template"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What a misbehaving server saw: each request's arrival and body, and the bytes it managed to
/// write back before the client hung up.
#[derive(Default)]
struct Seen {
    requests: Vec<(Instant, Value)>,
    written: Vec<usize>,
}

/// A loopback server whose `answer` writes each reply itself (returning the bytes it wrote).
fn misbehaving(
    answer: impl Fn(usize, &Value, &mut TcpStream) -> usize + Send + Sync + 'static,
) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/get_reward", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (s2, answer) = (seen.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let (seen, answer) = (s2.clone(), answer.clone());
            std::thread::spawn(move || {
                let body = read_request(&mut stream);
                seen.lock().unwrap().requests.push((Instant::now(), body.clone()));
                let n = answer(i, &body, &mut stream);
                seen.lock().unwrap().written.push(n);
            });
        }
    });
    (url, seen)
}

fn reply(stream: &mut TcpStream, status: u16, headers: &str, body: &str) -> usize {
    let text = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).map_or(0, |_| text.len())
}

/// Rewards as the scripted server gives them: each query's length.
fn rewards(body: &Value) -> String {
    let q = body["query"].as_array().cloned().unwrap_or_default();
    json!({"rewards": q.iter().map(|x| x.as_str().unwrap_or("").len() as f64).collect::<Vec<_>>()}).to_string()
}

/// `total` bytes of a JSON-looking body in chunked encoding, stopping when the client hangs up.
fn endless(stream: &mut TcpStream, status: u16, total: usize) -> usize {
    let mut n = 0;
    if write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .is_err()
    {
        return 0;
    }
    let chunk = "1.0,".repeat(16 << 10);
    while n < total {
        if write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
            return n;
        }
        n += chunk.len();
    }
    let _ = write!(stream, "0\r\n\r\n");
    n
}

#[test]
fn response_bodies_are_capped_while_they_stream() {
    let rt = rt();
    const HUGE: usize = 256 << 20;
    let capped = |url: &str, tries: u32| {
        let mut cfg = RemoteConfig::new(url, Protocol::OpenRlhf);
        cfg.max_tries = tries;
        cfg.backoff = Duration::from_millis(20);
        cfg.max_body_bytes = 1 << 20;
        RemoteScorer::new(cfg).unwrap()
    };

    // A 200 whose body never ends: abandoned past the cap, an error naming it, not retried.
    let (url, seen) = misbehaving(|_, _, s| endless(s, 200, HUGE));
    let err = rt.block_on(capped(&url, 3).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::TooLarge { limit: 1048576, .. }), "{err}");
    assert!(err.to_string().contains("larger than the limit of 1048576 bytes") && err.to_string().contains(&url));
    let wait_written = |seen: &Arc<Mutex<Seen>>, n: usize| {
        while seen.lock().unwrap().written.len() < n {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_written(&seen, 1);
    let s = seen.lock().unwrap();
    assert_eq!(s.requests.len(), 1, "not retried");
    assert!(s.written[0] < HUGE / 4, "the client stopped reading: {} bytes sent", s.written[0]);
    drop(s);

    // A declared length over the cap is refused before reading.
    let (url, _) = misbehaving(|_, _, s| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n[");
        std::thread::sleep(Duration::from_secs(2));
        1
    });
    let err = rt.block_on(capped(&url, 3).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::TooLarge { .. }), "{err}");

    // An endless 503 body: its start is quoted, the rest never read, the request retried.
    let (url, seen) = misbehaving(|_, _, s| endless(s, 503, HUGE));
    let err = rt.block_on(capped(&url, 2).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Status { status: 503, tries: 2, .. }), "{err}");
    assert!(err.to_string().contains("1.0,1.0,"), "{err}");
    wait_written(&seen, 2);
    assert!(seen.lock().unwrap().written.iter().all(|&n| n < HUGE / 4), "error bodies are read only in part");
}

/// An IMF-fixdate (RFC 9110) `secs` from now, as a server writes `Retry-After`.
fn http_date(secs: i64) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + secs;
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m as usize - 1];
    format!("{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[test]
fn retry_after_is_honoured_within_a_bound_and_timeouts_are_not_resent_blindly() {
    let rt = rt();
    let t = Duration::from_secs(5);
    let gap = |seen: &Arc<Mutex<Seen>>| {
        let s = seen.lock().unwrap();
        assert_eq!(s.requests.len(), 2);
        s.requests[1].0 - s.requests[0].0
    };

    // 429 with Retry-After in seconds: the retry waits that long, not the 20 ms backoff.
    let (url, seen) =
        misbehaving(
            |i, b, s| {
                if i == 0 {
                    reply(s, 429, "Retry-After: 1\r\n", "{}")
                } else {
                    reply(s, 200, "", &rewards(b))
                }
            },
        );
    assert!(rt.block_on(client(&url, 5, t).score(&texts(2))).is_ok());
    assert!(gap(&seen) >= Duration::from_millis(950), "waited {:?}", gap(&seen));

    // 503 with an HTTP date two seconds ahead (at least one second, as dates have whole seconds).
    let date = http_date(2);
    let (url, seen) = misbehaving(move |i, b, s| {
        if i == 0 {
            reply(s, 503, &format!("Retry-After: {date}\r\n"), "{}")
        } else {
            reply(s, 200, "", &rewards(b))
        }
    });
    assert!(rt.block_on(client(&url, 5, t).score(&texts(1))).is_ok());
    assert!(gap(&seen) >= Duration::from_millis(950), "waited {:?}", gap(&seen));

    // Longer than the client waits (60 s by default), in either form: an error at once.
    for header in ["Retry-After: 3600\r\n".to_owned(), format!("Retry-After: {}\r\n", http_date(86400))] {
        let h = header.clone();
        let (url, seen) = misbehaving(move |_, _, s| reply(s, 429, &h, "{}"));
        let err = rt.block_on(client(&url, 5, t).score(&texts(1))).unwrap_err();
        assert!(matches!(err, RemoteError::RetryAfter { status: 429, limit_secs: 60, .. }), "{header}: {err}");
        assert!(err.to_string().contains("retry after") && err.to_string().contains(&url), "{err}");
        assert_eq!(seen.lock().unwrap().requests.len(), 1, "{header}");
    }

    // A server that never answers in time: one resend (timeouts count apart from other
    // failures), sent only after waiting the timeout again, not the short backoff.
    let (url, seen) = misbehaving(|_, _, s| {
        std::thread::sleep(Duration::from_secs(3));
        reply(s, 200, "", "{\"rewards\": [1.0]}")
    });
    let err = rt.block_on(client(&url, 5, Duration::from_millis(300)).score(&texts(1))).unwrap_err();
    assert!(matches!(err, RemoteError::Timeout { tries: 2, .. }), "{err}");
    assert!(gap(&seen) >= Duration::from_millis(550), "resent after {:?}", gap(&seen));
}

#[test]
fn score_endpoint_skips_only_the_line_a_failing_batch_was_failing_on() {
    let model = fixture("qwen3-seq");
    // A server that refuses any request holding the poisoned answer.
    let (url, seen) = misbehaving(|_, b, s| {
        if b.to_string().contains("POISON") {
            reply(s, 400, "", "{\"error\": \"cannot score this\"}")
        } else {
            reply(s, 200, "", &rewards(b))
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in.jsonl"), tmp.path().join("out.jsonl"));
    let answers = ["Paris.", "Lyon.", "POISON", "Nice.", "Lille."];
    let lines: String = answers.iter().map(|a| format!("{}\n", json!({"prompt": PROMPT, "response": a}))).collect();
    std::fs::write(&input, lines).unwrap();
    let run = |url: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["score", "--endpoint", url, "--protocol", "openrlhf", "--template", model.to_str().unwrap()])
            .args(["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap(), "--tries", "2"])
            .args(extra)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(&url, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("scoring them one by one") && err.contains("line 3"), "{err}");
    let out = read_jsonl(&output);
    assert_eq!(out.len(), 5, "every line written, in order");
    for (o, a) in out.iter().zip(answers) {
        assert_eq!(o["response"], a);
        if a == "POISON" {
            assert!(o["error"].as_str().unwrap().contains("HTTP 400"), "{o}");
            assert!(o.get("score").is_none());
        } else {
            assert!(o["score"].as_f64().unwrap() > 0.0 && o.get("error").is_none(), "{o}");
        }
    }
    assert_eq!(seen.lock().unwrap().requests.len(), 1 + 5, "the batch, then each line alone");

    // Resuming does not hit the bad line again, and still says the output has one.
    let (code, err) = run(&url, &["--resume"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("5 already in output") && err.contains("1 line(s) kept"), "{err}");
    assert_eq!(seen.lock().unwrap().requests.len(), 6);
    assert_eq!(read_jsonl(&output).len(), 5);

    // An endpoint that is down fails every line alike: the run stops, resumable, instead of
    // writing every line as failed.
    let (down, seen) = misbehaving(|_, _, s| reply(s, 503, "", "{}"));
    std::fs::remove_file(&output).unwrap();
    let (code, err) = run(&down, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 503") && err.contains("--resume"), "{err}");
    assert_eq!(seen.lock().unwrap().requests.len(), 2, "the batch's two tries, no line by line");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "");
}
