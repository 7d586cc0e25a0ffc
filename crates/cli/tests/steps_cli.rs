//! `rewardlens score` with step and token scores: each PRM convention's `step_scores` equal
//! transformers' on the fixture PRMs; prefix and token scores of an outcome RM.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden_steps.json")).unwrap()).unwrap()
}

/// Writes `lines`, scores them with `extra` flags: the output objects and the process.
fn score(model: &str, lines: &[Value], extra: &[&str], tmp: &Path) -> (Vec<Value>, Output) {
    let (input, output) = (tmp.join(format!("{model}.in.jsonl")), tmp.join(format!("{model}.out.jsonl")));
    std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let _ = std::fs::remove_file(&output);
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["score", "--model", fixture(model).to_str().unwrap()])
        .args(["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let out = std::fs::read_to_string(&output)
        .map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap_or_default();
    (out, o)
}

fn close(a: &Value, b: &Value) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4
}

#[test]
fn step_scores_of_every_convention_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, flags) in [
        ("prm-qwen", vec!["--prm", "qwen"]),
        ("prm-qwen-mlp", vec![]),
        ("prm-shepherd", vec![]),
        ("prm-value", vec!["--prm", "value"]),
    ] {
        let g = golden(model);
        let cases: Vec<(&String, &Value)> = g["cases"].as_object().unwrap().iter().collect();
        // Steps as paragraphs of the answer: the default split recovers them.
        let answer = |c: &Value| {
            c["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n\n")
        };
        let mut lines: Vec<Value> =
            cases.iter().map(|(_, c)| json!({"prompt": c["problem"], "response": answer(c)})).collect();
        // Several responses to one problem: one list per response.
        let (_, first) = cases[0];
        lines.push(json!({"prompt": first["problem"], "responses": [answer(first), answer(first)]}));
        let (out, o) = score(model, &lines, &flags, tmp.path());
        assert!(o.status.success(), "{model}: {}", String::from_utf8_lossy(&o.stderr));
        for ((key, c), o) in cases.iter().zip(&out) {
            assert_eq!(o["steps"], c["steps"], "{model}/{key}: steps");
            assert_eq!(o["step_convention"], g["convention"]);
            let (got, want) = (o["step_scores"].as_array().unwrap(), c["step_scores"].as_array().unwrap());
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(want).all(|(a, b)| close(a, b)), "{model}/{key}: {got:?} vs transformers {want:?}");
            let first_bad = want.iter().position(|v| v.as_f64().unwrap() < 0.5);
            assert_eq!(o["first_bad_step"], first_bad.map_or(Value::Null, Value::from), "{model}/{key}");
        }
        let multi = out.last().unwrap();
        assert_eq!(multi["step_scores"].as_array().unwrap().len(), 2);
        assert_eq!(multi["step_scores"][0], out[0]["step_scores"]);
    }
}

#[test]
fn prefix_and_token_scores_of_an_outcome_rm() {
    let tmp = tempfile::tempdir().unwrap();
    let line = json!({"prompt": "What is 12 * 13?", "response": "12 * 13 = 156.\n\nCheck: 156 / 13 = 12.\n\nSo 156."});
    let (out, o) = score("qwen3-seq", std::slice::from_ref(&line), &["--prefix-scores", "--token-scores"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = &out[0];
    assert_eq!(o["step_convention"], "prefix");
    assert_eq!(o["steps"].as_array().unwrap().len(), 3);
    assert_eq!(o["step_scores"].as_array().unwrap().len(), 3);
    // Token scores: the head at every token; at the last token it is the sequence's score.
    let (tokens, scores) = (o["tokens"].as_array().unwrap(), o["token_scores"].as_array().unwrap());
    assert_eq!(tokens.len(), scores.len());
    assert!(close(scores.last().unwrap(), &o["score"]), "{} vs {}", scores.last().unwrap(), o["score"]);
    let text: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert!(text.contains("Check: 156 / 13 = 12."), "{text}");
    // A prefix step score is the token score at the step's last token.
    assert!(scores.iter().any(|s| close(s, &o["step_scores"][0])));

    // Mistakes are named: a convention the model cannot follow, an unknown split.
    let (_, o) = score("qwen3-seq", std::slice::from_ref(&line), &["--prm", "qwen"], tmp.path());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("2-label token head"));
    let (_, o) = score("qwen3-seq", &[line], &["--prefix-scores", "--step-split", "chapters"], tmp.path());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown step split `chapters`"));
    // A separator inside a step: that line says why, the others are scored.
    let bad = json!({"prompt": "q", "response": "a <extra_0> b"});
    let good = json!({"prompt": "q", "response": "a\n\nb"});
    let (out, o) = score("prm-qwen", &[bad, good], &["--prm", "qwen"], tmp.path());
    assert_eq!(o.status.code(), Some(3));
    assert!(out[0]["step_error"].as_str().unwrap().contains("<extra_0>"), "{}", out[0]);
    assert_eq!(out[1]["step_scores"].as_array().unwrap().len(), 2);
}

#[test]
fn resume_recognises_lines_with_steps_and_step_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden("prm-qwen");
    let answer =
        |c: &Value| c["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect::<Vec<_>>().join("\n\n");
    let mut lines = vec![json!({"prompt": "q", "response": "a <extra_0> b"})];
    lines.extend(
        g["cases"].as_object().unwrap().values().map(|c| json!({"prompt": c["problem"], "response": answer(c)})),
    );
    let (full, o) = score("prm-qwen", &lines, &["--prm", "qwen"], tmp.path());
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(full[0]["step_error"].is_string() && full[1]["step_scores"].is_array());

    // Interrupted after two lines (one with `step_error`, one with steps), then resumed.
    let (input, output) = (tmp.path().join("prm-qwen.in.jsonl"), tmp.path().join("prm-qwen.out.jsonl"));
    let text = std::fs::read_to_string(&output).unwrap();
    let kept: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&output, kept).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["score", "--model", fixture("prm-qwen").to_str().unwrap(), "--prm", "qwen", "--resume"])
        .args(["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 already in output"), "{err}");
    // The kept line without step scores still makes the run's status say so.
    assert_eq!(o.status.code(), Some(3), "{err}");
    let resumed: Vec<Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(resumed.len(), lines.len(), "no line twice");
    for (r, f) in resumed.iter().zip(&full) {
        assert_eq!(r["response"], f["response"]);
        assert_eq!(r["steps"], f["steps"]);
    }
}
