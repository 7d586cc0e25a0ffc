//! Test helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The commit every stand-in Hub repo is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `{"rfilename": ...}` of every file under `dir`, relative to `root`.
fn files_under(root: &Path, dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(root, &p));
        } else {
            out.push(json!({"rfilename": p.strip_prefix(root).unwrap().to_string_lossy()}));
        }
    }
    out
}

/// A stand-in for the Hub as hf-hub reads it: the file endpoint (`/{repo}/resolve/main/{file}`
/// with ranges, etag and commit headers) and the repo listing (`/api/models|datasets/{id}/
/// revision/main`: the commit and every file under `root`). `repo` is the repo's URL path:
/// `owner/name` for a model, `datasets/owner/name` for a dataset. Records the Authorization
/// headers it receives.
pub fn serve_hub(root: PathBuf, repo: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let auth = Arc::new(Mutex::new(Vec::new()));
    let seen = auth.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                let mut range = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        let (a, b) = v.trim().split_once('-').unwrap();
                        range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                    }
                    if lower.starts_with("authorization:") {
                        seen.lock().unwrap().push(h.trim().to_owned());
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let api = match repo.strip_prefix("datasets/") {
                    Some(id) => format!("/api/datasets/{id}/revision/main"),
                    None => format!("/api/models/{repo}/revision/main"),
                };
                if path == api {
                    let body = json!({"sha": COMMIT, "siblings": files_under(&root, &root)}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes());
                    return;
                }
                let prefix = format!("/{repo}/resolve/main/");
                let file = path.strip_prefix(&prefix).map(|f| root.join(f));
                let body = file.and_then(|f| std::fs::read(f).ok());
                let resp = match body {
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    Some(data) => {
                        let (a, b) = range.unwrap_or((0, None));
                        let b = b.unwrap_or(data.len() - 1).min(data.len() - 1);
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\nETag: \"e{}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
                            b + 1 - a, data.len(), data.len()
                        ).into_bytes();
                        r.extend_from_slice(&data[a..=b]);
                        r
                    }
                };
                let _ = stream.write_all(&resp);
                let _ = stream.read(&mut [0u8; 1]);
            });
        }
    });
    (addr, auth)
}

/// A `rewardlens serve` process on a free port, stopped (SIGTERM-like kill) on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        Self { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as a stand-in server reads it.
pub struct HttpRequest {
    pub method: String,
    /// The path with its query.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A stand-in HTTP server on a free loopback port: each connection's one request goes to
/// `answer`, which returns (status, content type, body); the connection is then closed.
pub fn stand_in_server<F>(answer: F) -> String
where
    F: Fn(HttpRequest) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((n, v)) = h.split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                let (status, kind, data) = answer(HttpRequest { method, target, headers, body });
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&data));
            });
        }
    });
    url
}
