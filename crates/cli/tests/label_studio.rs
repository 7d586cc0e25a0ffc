//! `rewardlens serve --label-studio` as the ML backend of a real Label Studio (installed from
//! PyPI by `.ci/run`; SQLite, loopback): a project with the shipped labeling config, tasks
//! imported, the backend connected with basic auth, predictions requested through Label Studio
//! itself and read back from its API — each the fixture model's transformers goldens. Ignored in
//! a plain `cargo test`; `cargo xtask test` runs it with `LABEL_STUDIO_BIN` set.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "rewardlens-test-token";
const PROMPT: &str = "What is the capital of France?";
const PARIS: &str = "The capital of France is Paris.";
const BERLIN: &str = "The capital of France is Berlin.";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A process group killed on drop (Django's development server runs a child).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on loopback: (status, body as JSON or a string).
fn try_http(port: u16, method: &str, path: &str, auth: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Django answers with Content-Length; a chunked answer is not expected here.
    Ok((status, serde_json::from_str(rest).unwrap_or_else(|_| Value::String(rest.to_owned()))))
}

fn http(port: u16, method: &str, path: &str, auth: &str, body: Option<&Value>) -> (u16, Value) {
    try_http(port, method, path, auth, body).unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

fn ls(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, v) = http(port, method, path, &format!("Authorization: Token {TOKEN}\r\n"), body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
    v
}

/// Label Studio on a free port with a fresh SQLite database, a user and a legacy API token.
fn start_label_studio(dir: &Path) -> (Group, u16) {
    use std::os::unix::process::CommandExt;
    let bin =
        std::env::var("LABEL_STUDIO_BIN").expect("LABEL_STUDIO_BIN: the label-studio executable (.ci/run installs it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(bin)
        .args(["start", "--no-browser", "--port", &port.to_string(), "--data-dir"])
        .arg(dir)
        .env("LABEL_STUDIO_BASE_DATA_DIR", dir)
        .env("LABEL_STUDIO_USERNAME", "test@example.com")
        .env("LABEL_STUDIO_PASSWORD", "rewardlens-pass")
        .env("LABEL_STUDIO_USER_TOKEN", TOKEN)
        .env("LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN", "true")
        // The backend is on loopback, which Label Studio 1.23 blocks by default (SSRF).
        .env("ML_BLOCK_LOCAL_IP", "false")
        .env("SSRF_PROTECTION_ENABLED", "false")
        // Label Studio's own check of prediction results against the labeling config.
        .env("fflag_feat_utc_210_prediction_validation_15082025", "true")
        .env("PYTHONUNBUFFERED", "1")
        .env("SENTRY_DSN", "")
        .env("FRONTEND_SENTRY_DSN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // Its output is drained (kept for a failure's message); where it listens is found by asking:
    // it moves to the next port when the chosen one is taken.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    for stream in [out, err] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let mut group = Group(child);
    let deadline = Instant::now() + Duration::from_secs(600);
    let port = loop {
        if let Some(p) = (port..port + 4).find(|&p| http_ok(p).is_some()) {
            break p;
        }
        if let Ok(Some(status)) = group.0.try_wait() {
            panic!("Label Studio exited ({status}):\n{}", log.lock().unwrap().join("\n"));
        }
        assert!(Instant::now() < deadline, "Label Studio did not start:\n{}", log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(500));
    };
    (group, port)
}

/// Label Studio's `/health` answers `{"status": "UP"}` on `port`.
fn http_ok(port: u16) -> Option<()> {
    let (status, body) = try_http(port, "GET", "/health", "", None).ok()?;
    (status == 200 && body["status"] == "UP").then_some(())
}

/// `rewardlens serve --label-studio` on the fixture, with basic auth and an API key.
fn start_backend() -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["serve", "--port", "0", "--served-model-name", "tiny", "--model"])
        .arg(repo("tests/fixtures/models/qwen3-seq"))
        .args(["--label-studio", "--label-studio-auth", "studio:s3cret", "--api-key", "rl-key"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    (child, port)
}

fn golden() -> (f64, f64) {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("tests/fixtures/models/qwen3-seq/golden.json")).unwrap())
            .unwrap();
    let logit = |case: &str| g["conversations"][case]["logits"][0].as_f64().unwrap();
    assert_eq!(g["conversations"]["simple"]["messages"][1]["content"], PARIS);
    assert_eq!(g["conversations"]["wrong"]["messages"][1]["content"], BERLIN);
    (logit("simple"), logit("wrong"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1.0)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
#[ignore = "needs Label Studio from PyPI (LABEL_STUDIO_BIN); run by `cargo xtask test`"]
fn label_studio_stores_the_backends_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let (_studio, port) = start_label_studio(dir.path());
    let (mut backend, backend_port) = start_backend();
    let (paris, berlin) = golden();

    // The backend refuses requests without Label Studio's basic auth (nor the API key).
    let (status, _) = http(backend_port, "POST", "/label-studio/setup", "", Some(&json!({"schema": ""})));
    assert_eq!(status, 401);

    let config = std::fs::read_to_string(repo("web/examples/label-studio-pairwise.xml")).unwrap();
    let project =
        ls(port, "POST", "/api/projects/", Some(&json!({"title": "rewardlens pairs", "label_config": config})));
    let project = project["id"].as_u64().unwrap();
    let tasks = json!([
        {"prompt": PROMPT, "answer_a": PARIS, "answer_b": BERLIN},
        {"prompt": PROMPT, "answer_a": BERLIN, "answer_b": PARIS},
    ]);
    let imported = ls(port, "POST", &format!("/api/projects/{project}/import"), Some(&tasks));
    assert_eq!(imported["task_count"], 2, "{imported}");

    let ml = ls(
        port,
        "POST",
        "/api/ml/",
        Some(&json!({"url": format!("http://127.0.0.1:{backend_port}/label-studio"), "project": project,
                     "title": "rewardlens", "auth_method": "BASIC_AUTH", "basic_auth_user": "studio",
                     "basic_auth_pass": "s3cret"})),
    );
    assert_eq!(
        (ml["readable_state"].as_str(), ml["model_version"].as_str()),
        (Some("Connected"), Some("tiny")),
        "{ml}"
    );

    // Predictions requested through Label Studio (its Data Manager action), then read back.
    let done = ls(
        port,
        "POST",
        &format!("/api/dm/actions/?id=retrieve_tasks_predictions&project={project}"),
        Some(&json!({"selectedItems": {"all": true, "excluded": []}})),
    );
    assert_eq!(done["processed_items"], 2, "{done}");
    let stored = ls(port, "GET", &format!("/api/predictions/?project={project}"), None);
    let mut stored = stored.as_array().unwrap().clone();
    assert_eq!(stored.len(), 2, "{stored:?}");
    stored.sort_by_key(|p| p["task"].as_u64());
    for (p, (a, b)) in stored.iter().zip([(paris, berlin), (berlin, paris)]) {
        assert_eq!(p["model_version"], "tiny");
        let item =
            |name: &str| p["result"].as_array().unwrap().iter().find(|r| r["from_name"] == name).cloned().unwrap();
        assert!(close(item("reward_a")["meta"]["reward"].as_f64().unwrap(), a), "{p}");
        assert!(close(item("reward_b")["meta"]["reward"].as_f64().unwrap(), b), "{p}");
        let better = if a > b { "Response A" } else { "Response B" };
        assert_eq!(item("preference")["value"]["choices"], json!([better]), "{p}");
        let rating = |r: f64| 1 + (sigmoid(r) * 9.0).round() as u64;
        assert_eq!(item("reward_a")["value"]["rating"], rating(a), "{p}");
        assert_eq!(item("reward_b")["value"]["rating"], rating(b), "{p}");
        assert!(close(p["score"].as_f64().unwrap(), sigmoid((a - b).abs())), "the preference probability: {p}");
    }

    // A bad task gets an error naming it, and the server goes on serving.
    use base64::Engine;
    let basic =
        format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode("studio:s3cret"));
    let config = std::fs::read_to_string(repo("web/examples/label-studio-pairwise.xml")).unwrap();
    let bad = json!({"tasks": [{"id": 7, "data": {"prompt": PROMPT, "answer_a": PARIS}}], "label_config": config});
    let (status, answer) = http(backend_port, "POST", "/label-studio/predict", &basic, Some(&bad));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("task 7: the task has no `data.answer_b`"), "{answer}");
    let good = json!({"tasks": [{"id": 8, "data": {"prompt": PROMPT, "answer_a": PARIS, "answer_b": BERLIN}}], "label_config": config});
    let (status, answer) = http(backend_port, "POST", "/label-studio/predict", &basic, Some(&good));
    assert_eq!(status, 200, "{answer}");
    assert!(close(answer["results"][0]["result"][0]["meta"]["reward"].as_f64().unwrap(), paris), "{answer}");

    // A labeling config the backend cannot fill is refused when it is connected.
    let other = ls(
        port,
        "POST",
        "/api/projects/",
        Some(&json!({"title": "sentiment", "label_config":
            "<View><Text name=\"text\" value=\"$text\"/><Choices name=\"s\" toName=\"text\"><Choice value=\"pos\"/></Choices></View>"})),
    );
    let (status, answer) = http(
        port,
        "POST",
        "/api/ml/",
        &format!("Authorization: Token {TOKEN}\r\n"),
        Some(&json!({"url": format!("http://127.0.0.1:{backend_port}/label-studio"), "project": other["id"],
                     "title": "rewardlens", "auth_method": "BASIC_AUTH", "basic_auth_user": "studio", "basic_auth_pass": "s3cret"})),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("/label-studio/setup"), "{answer}");
    let _ = backend.kill();
    let _ = backend.wait();
}
