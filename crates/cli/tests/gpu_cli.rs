//! `--device gpu|auto` in `rewardlens score`: the GPU backend (lavapipe here) gives
//! transformers' scores from checkpoint folders and from our GGUF files.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

fn rewardlens(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Scores every golden conversation with `extra` flags: (case, score) pairs and stderr.
fn score(model: &Path, extra: &[&str], tmp: &Path) -> (Vec<(String, f64)>, String) {
    let g = golden(model.file_name().unwrap().to_str().unwrap().trim_end_matches(".gguf"));
    let convs = g["conversations"].as_object().unwrap();
    let (input, output) = (tmp.join("in.jsonl"), tmp.join("out.jsonl"));
    let lines: String = convs.values().map(|c| json!({"conversation": c["messages"]}).to_string() + "\n").collect();
    std::fs::write(&input, lines).unwrap();
    let _ = std::fs::remove_file(&output);
    let mut args = vec!["score", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    args.extend(["--output", output.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let o = rewardlens(&args);
    let out: Vec<Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let scores = convs.keys().zip(out).map(|(k, o)| (k.clone(), o["score"].as_f64().unwrap())).collect();
    (scores, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn expected(g: &Value, case: &str) -> f64 {
    let logits = &g["conversations"][case]["logits"];
    let v = if g["architecture"].as_str().unwrap().contains("Token") {
        &logits.as_array().unwrap().last().unwrap()[0]
    } else {
        &logits[0]
    };
    v.as_f64().unwrap()
}

fn assert_scores(name: &str, got: &[(String, f64)], tol: f64, what: &str) {
    let g = golden(name);
    for (case, s) in got {
        let e = expected(&g, case);
        assert!((s - e).abs() <= tol * e.abs().max(1.0), "{what} {name}/{case}: {s} vs transformers {e}");
    }
}

#[test]
fn score_on_the_gpu_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["qwen3-seq", "llama-token"] {
        let (got, _) = score(&fixture(name), &["--device", "gpu", "--gpu-weights", "f32"], tmp.path());
        assert_scores(name, &got, 1e-3, "gpu f32");
        // f16 weights: these fixtures move by at most 2.3e-6 (crates/gpu/tests/model.rs).
        let (got, _) = score(&fixture(name), &["--device", "gpu"], tmp.path());
        assert_scores(name, &got, 1e-3, "gpu f16");
    }
}

#[test]
fn score_a_gguf_on_the_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("qwen3-seq.gguf");
    let model = fixture("qwen3-seq");
    rewardlens(&["quantize", "--model", model.to_str().unwrap(), "--out", gguf.to_str().unwrap(), "--type", "q8_0"]);
    let (got, _) = score(&gguf, &["--device", "gpu", "--gpu-weights", "q8_0"], tmp.path());
    // Q8_0 on these 64-wide random models: within 0.036 of f32 (crates/gpu/tests/model.rs).
    assert_scores("qwen3-seq", &got, 0.06, "gpu q8_0 from GGUF");
}

#[test]
fn auto_picks_a_hardware_gpu_or_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (got, stderr) = score(&fixture("qwen3-seq"), &["--device", "auto"], tmp.path());
    assert_scores("qwen3-seq", &got, 1e-3, "auto");
    let gpu = rewardlens_gpu::Gpu::new_blocking();
    match gpu {
        Ok(g) if !g.software => assert!(!stderr.contains("using the CPU"), "{stderr}"),
        Ok(_) => assert!(stderr.contains("software adapter") && stderr.contains("using the CPU"), "{stderr}"),
        Err(_) => assert!(stderr.contains("using the CPU"), "{stderr}"),
    }
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["score", "--model", fixture("qwen3-seq").to_str().unwrap(), "--device", "gpu", "--gpu-weights", "q3"])
        .args(["--input", tmp.path().join("in.jsonl").to_str().unwrap()])
        .args(["--output", tmp.path().join("never.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown --gpu-weights `q3`"));
}

/// `bench --device gpu` reports the GPU's buffers: the weights the model holds there (the same
/// bytes as the load line's count) and a peak above them from the passes.
#[test]
fn bench_on_the_gpu_reports_its_buffers() {
    let model = fixture("llama-seq");
    let o = rewardlens(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "gpu",
        "--lengths",
        "16",
        "--iters",
        "1",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.starts_with("GPU memory: weights ")).unwrap_or_else(|| panic!("{out}"));
    let mib = |after: &str| -> f64 {
        let rest = &line[line.find(after).unwrap_or_else(|| panic!("{line}")) + after.len()..];
        rest.split([' ', ';']).next().unwrap().parse().unwrap()
    };
    let (weights, peak) = (mib("weights "), mib("peak "));
    assert!(weights > 1.0, "{line}");
    assert!(peak > weights, "a pass adds activations above the weights: {line}");
}
