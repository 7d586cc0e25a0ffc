//! What one hostile or careless client can do to a real `rewardlens serve` on loopback:
//! requests too large for memory, a large request starving small ones, abandoned requests,
//! slow or too many connections, and cross-site requests. Each test starts its own server with
//! the tiny fixture models and bounds every wait.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

/// A `rewardlens serve` process on a free port (killed on drop); its stderr lines are kept.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["serve", "--port", "0", "--model", model.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, err) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                l.lock().unwrap().push(line);
            }
        });
        Self { child, addr, log }
    }

    /// Waits (at most `limit`) for a stderr line containing `needle`.
    fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        // Bounds every read: a test that would hang fails instead.
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    /// One request on its own connection; the status and body of the answer.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut s = self.connect();
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        read_response(&mut s)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.request("POST", path, &[("Content-Type", "application/json")], &body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap_or_else(|e| panic!("reading the answer: {e} (so far: {text:.200})"));
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text:.200}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 1 + i % 1000).collect()
}

/// A model like the qwen3-seq fixture but with Skywork-Reward-V2-Qwen3-0.6B's 40,960 positions.
fn long_context_model(tmp: &Path) -> PathBuf {
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen3-seq").join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = json!(40960);
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    let out = tmp.join("long");
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["random-model", "--config", tmp.join("config.json").to_str().unwrap()])
        .args(["--tokenizer", fixture("qwen3-seq").to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The issue's request, 8 sequences of 40,960 tokens (~660 KB), asked for ~27 GB of attention
/// masks and aborted the process. Now the default per-sequence limit (8192) refuses it, and a
/// raised one still meets the per-request token budget; within the budget requests are scored.
#[test]
fn requests_beyond_the_token_budget_are_refused_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = long_context_model(tmp.path());
    let issue = json!({"input": vec![ids(40960); 8]});

    let srv = Server::start(&model, &[]);
    let (status, body) = srv.post("/pooling", &issue);
    assert_eq!(status, 413, "{body:.300}");
    assert!(body.contains("limit of 8192 tokens") && body.contains("--max-tokens"), "{body}");
    let (status, body) = srv.post("/pooling", &json!({"input": vec![ids(300); 3]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["data"].as_array().unwrap().len(), 3);
    drop(srv);

    let srv = Server::start(&model, &["--max-tokens", "40960", "--max-request-tokens", "50000"]);
    let (status, body) = srv.post("/pooling", &issue);
    assert_eq!(status, 413, "{body:.300}");
    assert!(
        body.contains("327680 tokens")
            && body.contains("limit of 50000 tokens per request")
            && body.contains("--max-request-tokens"),
        "{body}"
    );
    // Sequences per request are capped too, before anything is tokenized.
    let srv = Server::start(&fixture("qwen3-seq"), &["--max-request-sequences", "4"]);
    let (status, body) = srv.post("/pooling", &json!({"input": ["a", "b", "c", "d", "e"]}));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limit of 4 sequences per request") && body.contains("--max-request-sequences"), "{body}");
    let (status, body) = srv.post("/get_reward", &json!({"query": ["a", "b", "c", "d", "e"]}));
    assert_eq!(status, 413, "{body}");
    let (status, body) = srv.post("/pooling", &json!({"input": ["a", "b", "c", "d"]}));
    assert_eq!(status, 200, "{body}");
    // The server survived all of it.
    assert_eq!(srv.request("GET", "/health", &[], "").0, 200);
}

/// A large request is split into rounds that other requests join: a 3-token request sent
/// while it is being scored is answered before it. The first job used to be taken whole.
#[test]
fn a_small_request_is_answered_while_a_large_one_is_in_flight() {
    let srv = Arc::new(Server::start(
        &fixture("qwen3-seq"),
        &["--max-request-tokens", "1000000", "--max-request-sequences", "1000", "--max-batch", "8"],
    ));
    let large = json!({"input": vec![ids(1000); 256]});
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (srv.clone(), done.clone());
    let big = std::thread::spawn(move || {
        let (status, body) = s.post("/pooling", &large);
        d.store(true, Ordering::SeqCst);
        assert_eq!(status, 200, "{body:.300}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["data"].as_array().unwrap().len(), 256);
    });
    // Until the server has the large request (it tokenizes nothing: ids), give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = srv.post("/pooling", &json!({"input": [1, 2, 3]}));
    assert_eq!(status, 200, "{body}");
    assert!(!done.load(Ordering::SeqCst), "the small request waited for the whole large one");
    big.join().unwrap();
}

/// A request whose client disconnects is not scored to the end.
#[test]
fn a_request_whose_client_went_away_is_dropped() {
    let srv = Server::start(
        &fixture("qwen3-seq"),
        &["--max-request-tokens", "1000000", "--max-request-sequences", "1000", "--max-batch", "8"],
    );
    let body = json!({"input": vec![ids(1000); 512]}).to_string();
    let mut s = srv.connect();
    write!(
        s,
        "POST /pooling HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        srv.addr,
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    assert!(
        srv.wait_for_log("dropped a request whose client went away", Duration::from_secs(60)),
        "the abandoned request was scored on"
    );
    let (status, body) = srv.post("/pooling", &json!({"input": [1, 2, 3]}));
    assert_eq!(status, 200, "{body}");
}

/// Slow clients: headers that never finish close the connection, a body that never finishes is
/// a 408; both used to hold the connection forever.
#[test]
fn slow_headers_and_bodies_time_out() {
    let srv = Server::start(&fixture("qwen3-seq"), &["--header-timeout-secs", "1", "--body-timeout-secs", "1"]);
    let mut s = srv.connect();
    write!(s, "GET /health HTTP/1.1\r\nHost: {}\r\n", srv.addr).unwrap();
    let mut buf = Vec::new();
    // EOF (or a reset) instead of the 120 s read timeout.
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "the server kept a connection with unfinished headers: {e}"
        ),
    }
    // An idle connection is closed the same way.
    let mut s = srv.connect();
    assert!(!matches!(
        s.read_to_end(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    ));

    let mut s = srv.connect();
    write!(
        s,
        "POST /pooling HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"input\"",
        srv.addr
    )
    .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("did not arrive within 1 s"), "{body}");
}

/// Connections beyond --max-connections are answered 503 and closed; a freed slot is reused.
#[test]
fn connections_beyond_the_limit_are_refused() {
    let srv = Server::start(&fixture("qwen3-seq"), &["--max-connections", "2", "--header-timeout-secs", "600"]);
    let held: Vec<TcpStream> = (0..2).map(|_| srv.connect()).collect();
    let (status, body) = srv.request("GET", "/health", &[], "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many open connections"), "{body}");
    drop(held);
    // The slots come back once the server sees the closes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = srv.request("GET", "/health", &[], "");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "closed connections never freed their slots");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cross-site requests: a page can POST `text/plain` (or a form) without a preflight, and a
/// rebound DNS name reaches 127.0.0.1 with its own Host; both are refused. The API key is
/// still required, and checked.
#[test]
fn cross_site_requests_are_refused() {
    let srv = Server::start(&fixture("qwen3-seq"), &["--allowed-host", "scorer.internal"]);
    let body = json!({"input": "hello"}).to_string();
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let (status, answer) = srv.request("POST", "/pooling", &headers, &body);
        assert_eq!(status, 415, "{ct:?}: {answer}");
        assert!(answer.contains("application/json"), "{answer}");
    }
    let (status, answer) =
        srv.request("POST", "/pooling", &[("Content-Type", "application/json; charset=utf-8")], &body);
    assert_eq!(status, 200, "{answer}");

    let (status, answer) = srv.request("GET", "/v1/models", &[("Host", "attacker.example:8000")], "");
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.contains("qwen3-seq"), "the model path leaked: {answer}");
    for host in ["localhost:8000", "127.0.0.1", "[::1]:8000", "scorer.internal:8000", "LOCALHOST"] {
        let (status, answer) = srv.request("GET", "/v1/models", &[("Host", host)], "");
        assert_eq!(status, 200, "{host}: {answer}");
    }

    let srv = Server::start(&fixture("qwen3-seq"), &["--api-key", "secret-key"]);
    for (auth, want) in [("Bearer secret-kex", 401), ("Bearer secret-key2", 401), ("Bearer secret-key", 200)] {
        let (status, answer) =
            srv.request("POST", "/pooling", &[("Content-Type", "application/json"), ("Authorization", auth)], &body);
        assert_eq!(status, want, "{auth}: {answer}");
    }
}

/// On the GPU one pass holds a bounded number of tokens (the storage-binding limit over the
/// model's widest activation row). An input longer than that is the client's error, refused at
/// admission (413 naming the limit) instead of failing its whole batch with a 500; a request
/// sent alongside it is scored.
#[test]
fn inputs_longer_than_a_gpu_pass_are_refused_at_admission() {
    let tmp = tempfile::tempdir().unwrap();
    // A 65,536-wide MLP row: 512 tokens per pass under the default 128 MiB binding limit.
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen3-seq").join("config.json")).unwrap()).unwrap();
    cfg["intermediate_size"] = json!(65536);
    cfg["num_hidden_layers"] = json!(1);
    cfg["layer_types"] = json!(["full_attention"]);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let model = tmp.path().join("wide");
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["random-model", "--config", tmp.path().join("config.json").to_str().unwrap()])
        .args(["--tokenizer", fixture("qwen3-seq").to_str().unwrap(), "--out", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let srv = Arc::new(Server::start(&model, &["--device", "gpu", "--gpu-weights", "f32"]));
    let (_, models) = srv.request("GET", "/v1/models", &[], "");
    let limit = serde_json::from_str::<Value>(&models).unwrap()["data"][0]["max_model_len"].as_u64().unwrap() as usize;
    if limit >= 4096 {
        eprintln!("this GPU holds {limit} tokens per pass, the model's whole context: nothing to refuse");
        return;
    }
    let s = srv.clone();
    let bad = std::thread::spawn(move || s.post("/pooling", &json!({"input": [ids(100), ids(limit + 1)]})));
    let (status, body) = srv.post("/pooling", &json!({"input": [ids(100)]}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = bad.join().unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(&format!("{} tokens exceeds the limit of {limit} tokens", limit + 1)), "{body}");
}
