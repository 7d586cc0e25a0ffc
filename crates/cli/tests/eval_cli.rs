//! `rewardlens eval` on fixture files in each benchmark's published layout (written by
//! tests/fixtures/make_benchmarks.py), checked against the results that script computes with
//! its own re-implementation of each reference formula from transformers' scores.

mod common;

use common::{serve_hub, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("benchmarks/expected.json")).unwrap()).unwrap()
}

fn model_for(suite: &str) -> (PathBuf, &'static [&'static str]) {
    match suite {
        "processbench" => (fixtures().join("models/prm-qwen"), &["--prm", "qwen"]),
        _ => (fixtures().join("models/qwen3-seq"), &[]),
    }
}

fn eval(suite: &str, data: &str, out: &Path, extra: &[&str]) -> Output {
    let (model, opts) = model_for(suite);
    Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["eval", "--suite", suite, "--data", data, "--model", model.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--batch-size", "3"])
        .args(opts)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Every number of `expected` (nested objects) equals `got`'s. A flipped comparison moves a
/// figure by at least 1/rows (a few percent here); 1e-9 only absorbs summation order, and
/// 1e-6 RewardBench 2's Ties, whose tanh term reads score differences (ours and transformers'
/// differ in the last float digits).
fn assert_numbers(path: &str, expected: &Value, got: &Value, tolerance: f64) {
    match expected {
        Value::Object(o) => {
            for (k, v) in o {
                let tol = if k == "Ties" { 1e-6 } else { tolerance };
                assert_numbers(&format!("{path}.{k}"), v, &got[k], tol);
            }
        }
        Value::Number(n) => {
            let (e, g) = (n.as_f64().unwrap(), got.as_f64().unwrap_or_else(|| panic!("{path}: {got} is not a number")));
            assert!((e - g).abs() <= tolerance, "{path}: rewardlens {g}, the reference formula {e}");
        }
        other => panic!("{path}: unexpected {other}"),
    }
}

/// The headline each suite prints last, as the reference figure it stands for.
fn headline(suite: &str, e: &Value) -> f64 {
    match suite {
        "rewardbench" | "rewardbench2" => 100.0 * e["score"].as_f64().unwrap(),
        "rm-bench" => 100.0 * e["results"]["total_avg_acc"].as_f64().unwrap(),
        _ => e["results"]["avg_f1"].as_f64().unwrap(),
    }
}

#[test]
fn every_suite_gives_the_reference_formulas_results() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = expected();
    for (suite, data) in [
        ("rewardbench", "rewardbench"),
        ("rewardbench", "rewardbench.jsonl"),
        ("rewardbench2", "rewardbench2/data/test-00000-of-00001.parquet"),
        ("rm-bench", "rm-bench"),
        ("processbench", "processbench"),
    ] {
        let out = tmp.path().join(format!("{}.json", data.replace('/', "_")));
        let o = eval(suite, fixtures().join("benchmarks").join(data).to_str().unwrap(), &out, &[]);
        assert!(o.status.success(), "{suite} {data}: {}", stderr(&o));
        let results = read_json(&out);
        let e = &expected[suite];
        assert_numbers(suite, &e["results"], &results, 1e-9);
        // The table: one line per subset, the headline last.
        let table = String::from_utf8_lossy(&o.stdout).into_owned();
        let last = table.lines().last().unwrap();
        let shown: f64 = last.split_whitespace().last().unwrap().parse().unwrap();
        assert!((shown - headline(suite, e)).abs() < 0.006, "{suite}: headline {last} vs {}", headline(suite, e));
        if suite == "rewardbench" {
            for (section, v) in e["sections"].as_object().unwrap() {
                let line = table.lines().find(|l| l.trim_start().starts_with(&section.to_uppercase())).unwrap();
                let shown: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
                assert!((shown - 100.0 * v.as_f64().unwrap()).abs() < 0.006, "{line} vs {v}");
            }
        }
        // Every row's scores, once each, in the rows file beside the results.
        let rows_file = PathBuf::from(results["rewardlens"]["rows_file"].as_str().unwrap());
        let lines = std::fs::read_to_string(&rows_file).unwrap().lines().count();
        assert_eq!(lines as u64, results["rewardlens"]["rows"].as_u64().unwrap(), "{suite}");
    }
}

/// A run cut short (a partial last line included) resumes to the same results; an existing
/// rows file is never overwritten without --resume.
#[test]
fn an_interrupted_run_resumes_to_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixtures().join("benchmarks/rewardbench2");
    let full = tmp.path().join("full.json");
    let o = eval("rewardbench2", data.to_str().unwrap(), &full, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = std::fs::read_to_string(tmp.path().join("full.rows.jsonl")).unwrap();
    let lines: Vec<&str> = rows.lines().collect();
    let cut = tmp.path().join("cut.rows.jsonl");
    std::fs::write(&cut, format!("{}\n{}", lines[..5].join("\n"), &lines[5][..20])).unwrap();
    let again = tmp.path().join("cut.json");
    let o = eval("rewardbench2", data.to_str().unwrap(), &again, &[]);
    assert!(!o.status.success() && stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = eval("rewardbench2", data.to_str().unwrap(), &again, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("5 from"), "{}", stderr(&o));
    let (a, b) = (read_json(&full), read_json(&again));
    for k in ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    assert_eq!(std::fs::read_to_string(&cut).unwrap().lines().count(), lines.len());
    // Another model's rows are not mixed in.
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["eval", "--suite", "rewardbench2", "--data", data.to_str().unwrap(), "--resume"])
        .args(["--model", fixtures().join("models/qwen2-seq").to_str().unwrap(), "--out", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("was scored with"), "{}", stderr(&o));
}

/// A Hub dataset id: listed and downloaded from a stand-in Hub into the HF cache, then read
/// from the cache when the Hub cannot be reached.
#[test]
fn hub_dataset_ids_download_into_the_hf_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(fixtures().join("benchmarks/rewardbench")).unwrap();
    let (endpoint, _) = serve_hub(root, "datasets/tiny-org/reward-bench");
    let hf_home = tmp.path().join("hf");
    let run = |endpoint: &str, out: &str| {
        let (model, _) = model_for("rewardbench");
        Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["eval", "--suite", "rewardbench", "--data", "tiny-org/reward-bench"])
            .args(["--model", model.to_str().unwrap(), "--out", tmp.path().join(out).to_str().unwrap()])
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", &hf_home)
            .output()
            .unwrap()
    };
    let o = run(&endpoint, "a.json");
    assert!(o.status.success(), "{}", stderr(&o));
    let a = read_json(&tmp.path().join("a.json"));
    assert_numbers("rewardbench", &expected()["rewardbench"]["results"], &a, 1e-9);
    assert_eq!(a["rewardlens"]["data"]["commit"], common::COMMIT);
    let cached = hf_home.join(format!(
        "hub/datasets--tiny-org--reward-bench/snapshots/{}/data/filtered-00000-of-00001.parquet",
        common::COMMIT
    ));
    assert!(cached.is_file(), "the Parquet lands in the HF cache");

    let o = run("http://127.0.0.1:9", "b.json");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cached snapshot"), "{}", stderr(&o));
    let b = read_json(&tmp.path().join("b.json"));
    assert_eq!(a["alpacaeval-easy"], b["alpacaeval-easy"]);
}

#[test]
fn wrong_suite_and_bad_rows_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let rm_bench = fixtures().join("benchmarks/rm-bench");
    let o = eval("processbench", rm_bench.to_str().unwrap(), &tmp.path().join("a.json"), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no `problem` column") && stderr(&o).contains("right --suite"), "{}", stderr(&o));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 1, \"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": 3, \"subset\": \"x\"}\n")
        .unwrap();
    let o = eval("rewardbench", bad.to_str().unwrap(), &tmp.path().join("b.json"), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("row 1") && stderr(&o).contains("`rejected`"), "{}", stderr(&o));
    assert!(!tmp.path().join("b.json").exists(), "no results for a run that failed");
}

/// Through a remote endpoint (a `rewardlens serve` process), in a protocol that takes chat
/// messages and one that takes rendered text: the same results as the reference formulas.
#[test]
fn endpoints_give_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("models/qwen3-seq");
    let srv = Server::start(&["--model", model.to_str().unwrap()]);
    let data = fixtures().join("benchmarks/rm-bench");
    for (protocol, extra) in [("vllm", vec![]), ("tei", vec!["--template", model.to_str().unwrap()])] {
        let out = tmp.path().join(format!("{protocol}.json"));
        let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["eval", "--suite", "rm-bench", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--endpoint", srv.url.as_str(), "--protocol", protocol])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{protocol}: {}", stderr(&o));
        let results = read_json(&out);
        assert_numbers(protocol, &expected()["rm-bench"]["results"], &results, 1e-9);
        assert_eq!(results["rewardlens"]["scored_with"]["protocol"], protocol);
    }
}
