//! `rewardlens score` over several endpoints: real `rewardlens serve` processes on loopback,
//! some behind a fault-injecting proxy (503s for a while, slow answers, malformed JSON), one
//! killed mid-run; sharding with `merge`; the canary against a different model.

mod common;

use common::Server;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `n` lines: prompts with two or three responses and preference pairs, each line distinct.
fn input(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("in.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let prompt = format!("What is {i} plus {}?", i % 7);
        let line = if i % 3 == 0 {
            json!({"prompt": prompt, "chosen": format!("It is {}.", i + i % 7), "rejected": format!("It is {}.", i)})
        } else {
            let mut responses = vec![format!("{}", i + i % 7), format!("The sum is {}.", i + 1)];
            if i % 2 == 0 {
                responses.push("I do not know.".into());
            }
            json!({"prompt": prompt, "responses": responses})
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn rewardlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(args).output().unwrap()
}

fn read_jsonl(p: &Path) -> Vec<Map<String, Value>> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The output's lines by input (the line without what scoring added), checked to be there
/// exactly once each.
fn by_input(lines: &[Map<String, Value>], input: &Path) -> Vec<Map<String, Value>> {
    let strip = |o: &Map<String, Value>| {
        let mut o = o.clone();
        for k in rewardlens_models::records::ADDED_FIELDS {
            o.remove(k);
        }
        Value::Object(o).to_string()
    };
    let mut seen: HashMap<String, Map<String, Value>> = HashMap::new();
    for l in lines {
        assert!(seen.insert(strip(l), l.clone()).is_none(), "a line twice: {}", strip(l));
    }
    let inputs: Vec<Map<String, Value>> = read_jsonl(input);
    assert_eq!(lines.len(), inputs.len(), "every input line once");
    inputs
        .iter()
        .map(|i| seen.remove(&Value::Object(i.clone()).to_string()).expect("every input line scored"))
        .collect()
}

/// The scores of a line, flattened.
fn scores(l: &Map<String, Value>) -> Vec<f64> {
    ["scores", "chosen_score", "rejected_score"]
        .iter()
        .filter_map(|k| l.get(*k))
        .flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]))
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn assert_same_scores(local: &[Map<String, Value>], remote: &[Map<String, Value>]) {
    for (l, r) in local.iter().zip(remote) {
        let (a, b) = (scores(l), scores(r));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "local {x}, remote {y}: {r:?}");
        }
    }
}

fn local_scores(input: &Path, dir: &Path) -> Vec<Map<String, Value>> {
    let out = dir.join("local.jsonl");
    let o = rewardlens(&[
        "score",
        "--model",
        fixture("qwen3-seq").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&out)
}

fn servers(n: usize) -> Vec<Server> {
    (0..n).map(|_| Server::start(&["--model", fixture("qwen3-seq").to_str().unwrap()])).collect()
}

fn score_args<'a>(input: &'a Path, output: &'a Path, urls: &'a [String]) -> Vec<String> {
    let mut a: Vec<String> = vec!["score".into(), "--input".into(), input.display().to_string()];
    a.extend(["--output".into(), output.display().to_string(), "--tries".into(), "2".into()]);
    for u in urls {
        a.extend(["--endpoint".into(), u.clone()]);
    }
    a
}

#[test]
fn three_servers_score_like_local_and_a_killed_one_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 2000);
    let local = local_scores(&input, tmp.path());
    let mut srv = servers(3);
    let urls: Vec<String> = srv.iter().map(|s| s.url.clone()).collect();

    // All three up: the same scores, in input order, spread over every server.
    let out = tmp.path().join("three.jsonl");
    let args = score_args(&input, &out, &urls);
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = read_jsonl(&out);
    let ordered = by_input(&lines, &input);
    assert_eq!(lines, ordered, "output in input order");
    assert_same_scores(&local, &lines);
    let used: std::collections::HashSet<&str> = lines.iter().map(|l| l["scored_by"].as_str().unwrap()).collect();
    assert_eq!(used.len(), 3, "every server took work: {used:?}");
    // No --in-flight: a probe of each server set it, and says with what rates.
    let err = stderr(&o);
    for u in &urls {
        let probe = err.lines().find(|l| l.starts_with(&format!("{u}: "))).unwrap_or_else(|| panic!("no probe: {err}"));
        let n: usize = probe.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((2..=16).contains(&n) && probe.contains("requests in flight (probe: 1: "), "{probe}");
    }

    // One server killed (SIGKILL) mid-run: every line still once, the run says which failed.
    let out = tmp.path().join("killed.jsonl");
    let args = score_args(&input, &out, &urls);
    let child = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 200 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    srv[1].child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = read_jsonl(&out);
    assert_same_scores(&local, &by_input(&lines, &input));
    let err = stderr(&o);
    let report = err
        .lines()
        .find(|l| l.starts_with(&format!("  {}", urls[1])))
        .unwrap_or_else(|| panic!("no report line: {err}"));
    assert!(report.contains("fail") || report.contains("out of the run"), "{report}");
    drop(srv.remove(1));

    // The client killed mid-run, then --resume: every line once.
    let out = tmp.path().join("resumed.jsonl");
    let urls: Vec<String> = srv.iter().map(|s| s.url.clone()).collect();
    let args = score_args(&input, &out, &urls);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(&args).stderr(Stdio::null()).spawn().unwrap();
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut args = args.clone();
    args.push("--resume".into());
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_scores(&local, &by_input(&read_jsonl(&out), &input));
}

/// How the proxy misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// 503 for the first N requests, then forwards.
    Unavailable(usize),
    /// Forwards after this long.
    Slow(Duration),
    /// Answers 200 with a body that is not the protocol's JSON.
    Malformed,
}

/// A proxy on loopback in front of `upstream` (a `rewardlens serve` URL) with a fault.
fn proxy(upstream: &str, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let count = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (upstream, count) = (upstream.clone(), count.clone());
            std::thread::spawn(move || serve_proxied(stream, &upstream, fault, &count));
        }
    });
    url
}

fn serve_proxied(mut client: TcpStream, upstream: &str, fault: Fault, count: &AtomicUsize) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        let n = count.fetch_add(1, Ordering::SeqCst);
        let answer = match fault {
            Fault::Unavailable(k) if n < k => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec()
            }
            Fault::Malformed => {
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"data\":[".to_vec()
            }
            _ => {
                if let Fault::Slow(d) = fault {
                    std::thread::sleep(d);
                }
                let path = request_line.split_whitespace().nth(1).unwrap().to_owned();
                let mut up = TcpStream::connect(upstream).unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                up.write_all(head.as_bytes()).unwrap();
                up.write_all(&body).unwrap();
                let mut resp = Vec::new();
                up.read_to_end(&mut resp).unwrap();
                resp
            }
        };
        if client.write_all(&answer).is_err() {
            return;
        }
        // The upstream's answer says `Connection: close`: so does this one.
        if !matches!(fault, Fault::Unavailable(k) if n < k) && !matches!(fault, Fault::Malformed) {
            return;
        }
    }
}

#[test]
fn unavailable_slow_and_malformed_servers_still_finish_every_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 300);
    let local = local_scores(&input, tmp.path());
    let srv = servers(3);
    let urls = vec![
        proxy(&srv[0].url, Fault::Unavailable(6)),
        proxy(&srv[1].url, Fault::Slow(Duration::from_millis(150))),
        proxy(&srv[2].url, Fault::Malformed),
        srv[2].url.clone(),
    ];
    let out = tmp.path().join("faults.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(score_args(&input, &out, &urls)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = read_jsonl(&out);
    assert_same_scores(&local, &by_input(&lines, &input));
    let by: Vec<&str> = lines.iter().map(|l| l["scored_by"].as_str().unwrap()).collect();
    assert!(!by.contains(&urls[2].as_str()), "nothing is taken from the malformed answers");
    let err = stderr(&o);
    let report = err.lines().find(|l| l.contains(&format!("{}:", urls[2]))).unwrap_or_else(|| panic!("{err}"));
    assert!(report.contains("unexpected response"), "the malformed answers are named: {report}");
}

#[test]
fn a_different_model_behind_one_url_is_caught_by_the_canary() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 20);
    let a = Server::start(&["--model", fixture("qwen3-seq").to_str().unwrap()]);
    let b = Server::start(&["--model", fixture("llama-seq").to_str().unwrap()]);
    let urls = vec![a.url.clone(), b.url.clone()];
    let out = tmp.path().join("mismatch.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(score_args(&input, &out, &urls)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("disagree") && stderr(&o).contains(&b.url), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), "", "nothing scored");
    let mut args = score_args(&input, &tmp.path().join("allowed.jsonl"), &urls);
    args.push("--allow-mismatch".into());
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn shards_merge_into_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input(tmp.path(), 200);
    let model = fixture("qwen3-seq");
    let whole = tmp.path().join("whole.jsonl");
    let run = |out: &Path, shard: Option<&str>| {
        let mut args = vec!["score", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
        args.extend(["--output", out.to_str().unwrap()]);
        if let Some(s) = shard {
            args.extend(["--shard", s]);
        }
        let o = rewardlens(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&whole, None);
    let shards: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("shard{i}.jsonl"))).collect();
    for (i, s) in shards.iter().enumerate() {
        run(s, Some(&format!("{i}/3")));
        let n = read_jsonl(s).len();
        assert!(n > 30 && n < 110, "shard {i} holds {n} of 200 lines");
    }
    let merged = tmp.path().join("merged.jsonl");
    let mut args = vec!["merge", "--input", input.to_str().unwrap(), "--output", merged.to_str().unwrap()];
    args.extend(shards.iter().map(|s| s.to_str().unwrap()));
    let o = rewardlens(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&merged).unwrap(), std::fs::read_to_string(&whole).unwrap());

    // A missing shard, or one given twice, is refused.
    let o = rewardlens(&[
        "merge",
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("m2.jsonl").to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("in no shard output"), "{}", stderr(&o));
    let o = rewardlens(&[
        "merge",
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("m3.jsonl").to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        shards[2].to_str().unwrap(),
        shards[2].to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("answer no input line"), "{}", stderr(&o));
    let o =
        rewardlens(&["score", "--model", model.to_str().unwrap(), "--input", "x", "--output", "y", "--shard", "3/3"]);
    assert!(stderr(&o).contains("--shard 3/3"), "{}", stderr(&o));
}
