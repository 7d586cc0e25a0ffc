//! What the browser tests need: a static file server for the built app and fixture models
//! (correct MIME types, optional CORS, a request log), and a minimal WebDriver client that
//! drives Debian's headless Chromium through chromedriver.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The tiny random-weight models (and their transformers goldens) in tests/fixtures/models.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures/models")
}

/// How long a fixture model may take to load, or a page to score it, on a busy 2-core machine.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The app as `cargo xtask dist` builds it.
pub fn dist_dir() -> PathBuf {
    let d = std::env::var_os("REWARDLENS_DIST").map(PathBuf::from).unwrap_or_else(|| repo_root().join("web/dist"));
    assert!(d.join("index.html").exists(), "{} has no index.html: run `cargo xtask dist` first", d.display());
    d
}

pub fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "png" => "image/png",
        "jinja" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The engine worker builds the page can start (`?kernel=`) and the backend name each reports.
pub const KERNEL_BUILDS: [(&str, &str); 2] =
    [("simd128", "WASM CPU (simd128)"), ("relaxed", "WASM CPU (simd128 + relaxed-simd)")];

/// A fixture's transformers goldens (tests/fixtures/models/NAME/golden.json).
pub fn golden(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(model).join("golden.json")).unwrap()).unwrap()
}

/// The score the page shows for a golden case: the first label, at the last token for token
/// classification.
pub fn golden_score(g: &Value, case: &str) -> f64 {
    let l = &g["conversations"][case]["logits"];
    match l[0].as_array() {
        Some(_) => l.as_array().unwrap().last().unwrap()[0].as_f64().unwrap(),
        None => l[0].as_f64().unwrap(),
    }
}

/// A request the server saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// Serves directories under URL prefixes on 127.0.0.1, one thread per connection.
pub struct StaticServer {
    pub url: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl StaticServer {
    /// `mounts`: (URL prefix such as `/fixtures/`, directory). With `cors`, every answer allows
    /// any origin, as the Hugging Face Hub does; without it, cross-origin fetches are refused.
    pub fn start(mounts: Vec<(String, PathBuf)>, cors: bool) -> Self {
        Self::start_with_statuses(mounts, Vec::new(), cors)
    }

    /// As `start`, answering paths under each `(prefix, status)` with that status instead.
    pub fn start_with_statuses(mounts: Vec<(String, PathBuf)>, statuses: Vec<(String, u16)>, cors: bool) -> Self {
        Self::start_full(mounts, statuses, Vec::new(), cors)
    }

    /// As `start_with_statuses`; files under the `no_length` prefixes are sent without a
    /// Content-Length (the body ends when the connection closes), as some servers do.
    pub fn start_full(
        mounts: Vec<(String, PathBuf)>,
        statuses: Vec<(String, u16)>,
        no_length: Vec<String>,
        cors: bool,
    ) -> Self {
        Self::start_inner(mounts, statuses, no_length, cors, "")
    }

    /// The app (`dist_dir()`) at `/` and the fixture models at `/fixtures/`, with CORS: what most
    /// browser tests serve.
    pub fn app_with_fixtures() -> Self {
        Self::start(vec![("/fixtures/".into(), fixtures_dir()), ("/".into(), dist_dir())], true)
    }

    /// As `start`, with the headers that make a page cross-origin isolated (COOP same-origin,
    /// COEP require-corp) on every answer, as `cargo xtask serve --isolated` sends them.
    pub fn start_isolated(mounts: Vec<(String, PathBuf)>, cors: bool) -> Self {
        Self::start_inner(
            mounts,
            Vec::new(),
            Vec::new(),
            cors,
            "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n",
        )
    }

    fn start_inner(
        mounts: Vec<(String, PathBuf)>,
        statuses: Vec<(String, u16)>,
        no_length: Vec<String>,
        cors: bool,
        extra_headers: &'static str,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let mounts = Arc::new(mounts);
        let statuses = Arc::new(statuses);
        let no_length = Arc::new(no_length);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (mounts, statuses, log) = (mounts.clone(), statuses.clone(), l.clone());
                let no_length = no_length.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &mounts, &statuses, &no_length, cors, extra_headers, &log);
                });
            }
        });
        Self { url, log }
    }

    /// Requests seen so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// How many GETs asked for `path`.
    pub fn gets(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.method == "GET" && r.path == path).count()
    }
}

fn serve_one(
    mut stream: TcpStream,
    mounts: &[(String, PathBuf)],
    statuses: &[(String, u16)],
    no_length: &[String],
    cors: bool,
    extra_headers: &str,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_owned());
            }
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    log.lock().unwrap().push(Seen { method: method.to_owned(), path: path.clone(), authorization });
    let cors_header = if cors {
        "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: Authorization, Content-Type\r\n"
    } else {
        ""
    };
    // Extra headers (cross-origin isolation) ride along with the CORS ones on every answer.
    let cors_header = format!("{cors_header}{extra_headers}");
    let cors_header = cors_header.as_str();
    if method == "OPTIONS" {
        write!(stream, "HTTP/1.1 204 No Content\r\n{cors_header}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    if let Some((_, code)) = statuses.iter().find(|(p, _)| path.starts_with(p.as_str())) {
        write!(stream, "HTTP/1.1 {code} Refused\r\nContent-Length: 0\r\n{cors_header}Connection: close\r\n\r\n")?;
        return Ok(());
    }
    let file = mounts.iter().find_map(|(prefix, dir)| {
        let rest = path.strip_prefix(prefix.as_str())?;
        if rest.split('/').any(|seg| seg == "..") {
            return None;
        }
        let mut p = dir.join(percent_decode(rest));
        if p.is_dir() {
            p = p.join("index.html");
        }
        p.is_file().then_some(p)
    });
    match file {
        Some(p) => {
            // Streamed, so a large (or sparse) file costs no memory here.
            let mut file = std::fs::File::open(&p)?;
            let length = if no_length.iter().any(|n| path.starts_with(n.as_str())) {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", file.metadata()?.len())
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n{length}{cors_header}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                mime(&p),
            )?;
            if method != "HEAD" {
                std::io::copy(&mut file, &mut stream)?;
            }
        }
        None => {
            let body = b"not found";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{cors_header}Connection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
    }
    stream.flush()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    /// Chromium's user-data-dir (600 MB to 1.2 GB after a model run): removed on drop, or
    /// every session would leave it in the temp dir until the disk fills.
    profile: std::path::PathBuf,
}

impl Browser {
    /// Headless Chromium without a GPU: WebGPU offers no adapter, so the app runs on the CPU.
    pub fn start() -> Self {
        Self::launch("--disable-gpu")
    }

    /// Headless Chromium with WebGPU on its software adapter (SwiftShader): no `shader-f16`,
    /// so the kernels' f32 fallbacks are what runs.
    pub fn start_with_webgpu() -> Self {
        Self::launch("--enable-unsafe-webgpu")
    }

    fn launch(gpu_flag: &str) -> Self {
        let port = free_port();
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin} ({e}); install Debian's chromium-driver"));
        let base = format!("http://127.0.0.1:{port}");
        // Longer than any script timeout (`set_script_timeout` allows 600 s): a WebDriver call
        // waits while the page's main thread computes, and an HTTP timeout first would abort
        // the whole run instead of letting the script's own timeout answer.
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(900)).build();
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!("rewardlens-chrome-{port}"));
        let binary = std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", gpu_flag, "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--disable-quic", "--window-size=1280,1800",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let resp: Value = agent
            .post(&format!("{base}/session"))
            .send_json(caps)
            .unwrap_or_else(|e| panic!("chromedriver refused a session: {}", error_body(e)))
            .into_json()
            .unwrap();
        let session = resp["value"]["sessionId"].as_str().expect("session id").to_owned();
        Self { driver, base, session, agent, profile }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(body),
        };
        match r {
            Ok(r) => r.into_json::<Value>().map(|v| v["value"].clone()).unwrap_or(Value::Null),
            Err(e) => panic!("WebDriver {method} {path}: {}", error_body(e)),
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Runs `js` (a function body; `arguments` holds `args`) and returns its value.
    /// Runs `js` whose last argument is a callback to call with the result (WebDriver's
    /// execute/async), for promises.
    pub fn script_async(&self, js: &str, args: Value) -> Value {
        self.cmd("POST", "/timeouts", json!({ "script": 120_000 }));
        self.cmd("POST", "/execute/async", json!({ "script": js, "args": args }))
    }

    /// How long a script may wait for the page (WebDriver's default is 30 s): a page whose main
    /// thread computes for longer (transformers.js on one wasm thread runs there) would fail
    /// every poll meanwhile.
    pub fn set_script_timeout(&self, timeout: Duration) {
        self.cmd("POST", "/timeouts", json!({ "script": timeout.as_millis() as u64 }));
    }

    /// How long ChromeDriver waits for the renderer to answer any command (its page-load timeout,
    /// 300 s by default): a page whose main thread computes for longer than that (one pass of
    /// a single-threaded wasm peer) needs more.
    pub fn set_page_load_timeout(&self, timeout: Duration) {
        self.cmd("POST", "/timeouts", json!({ "pageLoad": timeout.as_millis() as u64 }));
    }

    pub fn script(&self, js: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": js, "args": args }))
    }

    pub fn exists(&self, css: &str) -> bool {
        self.script("return document.querySelector(arguments[0]) !== null;", json!([css])) == json!(true)
    }

    /// Waits until `css` matches an element, or panics with the page's state.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.exists(css) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for `{css}`; page text:\n{}\nconsole:\n{}",
                    self.text("body"),
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `css` matches or `error_css` appears (returning Err with its text).
    pub fn wait_for_either(&self, css: &str, error_css: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exists(css) {
                return Ok(());
            }
            if self.exists(error_css) {
                return Err(self.text(error_css));
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for `{css}`; page text:\n{}\nconsole:\n{}",
                    self.text("body"),
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, css: &str) -> String {
        self.script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css]))
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            json!([css, name]),
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Every match's attribute, in document order.
    pub fn attrs(&self, css: &str, name: &str) -> Vec<String> {
        let v = self.script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.getAttribute(arguments[1]));",
            json!([css, name]),
        );
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    }

    pub fn click(&self, css: &str) {
        self.wait_present(css);
        let ok = self.script(
            "const e = document.querySelector(arguments[0]); if (!e || e.disabled) return false; e.click(); return true;",
            json!([css]),
        );
        assert_eq!(ok, json!(true), "`{css}` is missing or disabled; page text:\n{}", self.text("body"));
    }

    /// Waits a little for `css` to appear: after `goto` the app mounts only once its wasm is
    /// instantiated, so an element can be missing for a moment. Callers still assert on it.
    fn wait_present(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.exists(css) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets an input's or textarea's value as typing would (an `input` event follows).
    pub fn fill(&self, css: &str, value: &str) {
        self.wait_present(css);
        let ok = self.script(
            "const e = document.querySelector(arguments[0]); if (!e) return false; e.value = arguments[1]; \
             e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true;",
            json!([css, value]),
        );
        assert_eq!(ok, json!(true), "`{css}` not found");
    }

    /// Puts local files into an `<input type=file>` (as a user picking them would).
    pub fn upload(&self, css: &str, paths: &[PathBuf]) {
        let found = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        let id =
            found.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).expect("element id").to_owned();
        let text = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n");
        self.cmd("POST", &format!("/element/{id}/value"), json!({ "text": text }));
    }

    /// The browser console so far (errors from the page and the worker).
    pub fn console(&self) -> String {
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        match self.agent.post(&url).send_json(json!({"type": "browser"})) {
            Ok(r) => r
                .into_json::<Value>()
                .ok()
                .and_then(|v| v["value"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|e| format!("{} {}", e["level"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Loads a model in the app by URL and waits until it is loaded; panics with the page's
    /// error and console otherwise.
    pub fn load_model(&self, model_url: &str) {
        self.wait_for("#status[data-phase='idle']", PAGE_TIMEOUT);
        self.fill("#model-input", model_url);
        self.click("#load");
        if let Err(e) = self.wait_for_either("#model-info", "#error", PAGE_TIMEOUT) {
            panic!("loading {model_url} failed: {e}\nconsole:\n{}", self.console());
        }
    }

    /// Scores `responses` to `prompt` through the responses tab and waits for the results.
    pub fn score_responses(&self, prompt: &str, responses: &[&str]) {
        self.click("#tab-responses");
        self.fill("#prompt", prompt);
        while self.attrs("#responses textarea", "aria-label").len() > responses.len() {
            self.click("#responses .remove");
        }
        while self.attrs("#responses textarea", "aria-label").len() < responses.len() {
            self.click("#add-response");
        }
        for (i, r) in responses.iter().enumerate() {
            self.fill(&format!("#responses li:nth-child({}) textarea", i + 1), r);
        }
        self.click("#score");
        self.wait_for_results();
    }

    /// Scores a fixture's golden cases (`simple` and `wrong` as two responses, `multi_turn` and
    /// the 900-token `long` pasted as conversations) with the loaded model and checks each
    /// shown score within `tol` (relative above 1) of transformers'. `what` names the run.
    pub fn assert_golden_scores(&self, fixture: &str, tol: f64, what: &str) {
        let g = golden(fixture);
        let conv = |case: &str| &g["conversations"][case]["messages"];
        let answer = |case: &str| conv(case)[1]["content"].as_str().unwrap().to_owned();
        let (simple, wrong) = (answer("simple"), answer("wrong"));
        self.score_responses(conv("simple")[0]["content"].as_str().unwrap(), &[&simple, &wrong]);
        let mut shown = self.attrs("#scores td.score", "data-score");
        assert_eq!(shown.len(), 2, "{what} {fixture}: one score per response");
        let pasted = ["multi_turn", "long"];
        for case in pasted {
            self.click("#tab-conversation");
            self.fill("#conversation", &serde_json::to_string(conv(case)).unwrap());
            self.click("#score");
            self.wait_for_results();
            shown.extend(self.attrs("#scores td.score", "data-score"));
        }
        for (s, case) in shown.iter().zip(["simple", "wrong"].iter().chain(&pasted)) {
            let v: f64 = s.parse().unwrap_or_else(|_| panic!("{what} {fixture} {case}: `{s}` is not a number"));
            let e = golden_score(&g, case);
            assert!((v - e).abs() <= tol * e.abs().max(1.0), "{what} {fixture} {case}: shown {v}, transformers {e}");
        }
    }

    /// Waits for the results of a Score click; panics with the page's error and console otherwise.
    pub fn wait_for_results(&self) {
        if let Err(e) = self.wait_for_either("#results", "#error", PAGE_TIMEOUT) {
            panic!("scoring failed: {e}\nconsole:\n{}", self.console());
        }
    }

    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).expect("base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

fn error_body(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => {
            let mut s = String::new();
            let _ = r.into_reader().take(4000).read_to_string(&mut s);
            format!("HTTP {code}: {s}")
        }
        other => other.to_string(),
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
