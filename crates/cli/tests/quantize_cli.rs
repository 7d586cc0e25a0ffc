//! `rewardlens quantize` and GGUF scoring: accuracy bounds against the f32 model, the
//! self-contained file, llama.cpp-style files, and corrupted input.

use rewardlens_models::gguf::{GgufFile, GgufWriter, MetaValue};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type TensorDecl = (String, Vec<usize>, candle_core::quantized::GgmlDType);
type HeaderEdit = dyn Fn(&mut Vec<(String, MetaValue)>, &mut Vec<TensorDecl>);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

fn eval_set() -> PathBuf {
    root().join("tests/fixtures/eval/responses.jsonl")
}

fn rl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(args).output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn quantize(model: &Path, out: &Path, ty: &str) {
    ok(rl(&["quantize", "--model", s(model), "--out", s(out), "--type", ty]));
}

fn score(model: &Path, out: &Path, extra: &[&str]) {
    let input = eval_set();
    let mut a = vec!["score", "--model", s(model), "--input", s(&input), "--output", s(out)];
    a.extend_from_slice(extra);
    ok(rl(&a));
}

fn compare(reference: &Path, candidate: &Path) -> Value {
    let o = ok(rl(&["compare", "--json", "--reference", s(reference), "--candidate", s(candidate)]));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Quantizes `model` to each type and checks pair agreement and mean error against f32.
fn check_bounds(model: &Path, tmp: &Path, bounds: &[(&str, f64, f64)]) {
    let reference = tmp.join("ref.jsonl");
    score(model, &reference, &[]);
    for &(ty, min_agreement, max_mean_err) in bounds {
        let gguf = tmp.join(format!("m-{ty}.gguf"));
        quantize(model, &gguf, ty);
        let out = tmp.join(format!("m-{ty}.jsonl"));
        score(&gguf, &out, &[]);
        let m = compare(&reference, &out);
        let (agree, err) = (m["pair_agreement"].as_f64().unwrap(), m["mean_abs_error"].as_f64().unwrap());
        assert!(agree >= min_agreement, "{}: {ty} pair agreement {agree} < {min_agreement}: {m}", model.display());
        assert!(err <= max_mean_err, "{}: {ty} mean error {err} > {max_mean_err}: {m}", model.display());
    }
}

#[test]
fn fixture_models_q8_0_and_q4_k_stay_within_measured_bounds() {
    // Measured minimum over the six fixtures (docs/user/quantization.md): q8_0 96.5%, q4_k 81.6% (their 64-wide
    // rows take q4_k's q5_0 fallback).
    for name in ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token"] {
        let tmp = tempfile::tempdir().unwrap();
        check_bounds(&fixture(name), tmp.path(), &[("q8_0", 0.95, 0.03), ("q4_k", 0.78, 0.12)]);
    }
}

#[test]
fn k_quants_on_256_wide_models() {
    for (shape, tok) in [("qwen3-256", "qwen3"), ("llama-256", "llama3")] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        ok(rl(&[
            "random-model",
            "--config",
            s(&root().join(format!("tests/fixtures/shapes/{shape}.json"))),
            "--tokenizer",
            s(&root().join(format!("tests/fixtures/tokenizers/{tok}"))),
            "--out",
            s(&model),
        ]));
        check_bounds(
            &model,
            tmp.path(),
            &[
                ("f16", 1.0, 1e-4),
                ("q8_0", 0.95, 0.03),
                ("q6_k", 0.93, 0.06),
                ("q5_k", 0.87, 0.08),
                ("q4_k", 0.82, 0.14),
                ("q4_0", 0.72, 0.25),
            ],
        );
        // Real k-quant blocks were written, not fallbacks.
        let f = GgufFile::open(&tmp.path().join("m-q4_k.gguf")).unwrap();
        assert_eq!(format!("{:?}", f.tensors["blk.0.ffn_up.weight"].dtype), "Q4K");
    }
}

#[test]
fn gguf_is_self_contained_and_llama_cpp_style_files_load_with_a_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the checkpoint that is deleted after quantizing.
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(fixture("llama-seq")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, src.join(p.file_name().unwrap())).unwrap();
    }
    let gguf = tmp.path().join("m.gguf");
    quantize(&src, &gguf, "q8_0");
    std::fs::remove_dir_all(&src).unwrap();
    let own = tmp.path().join("own.jsonl");
    score(&gguf, &own, &[]);

    // Strip everything llama.cpp's converter would not write: our config, tokenizer, template.
    let f = GgufFile::open(&gguf).unwrap();
    assert!(f.tensors.contains_key("rope_freqs.weight"), "llama3 rope scaling is written the llama.cpp way");
    let meta: Vec<(String, MetaValue)> = f
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("rewardlens.") && !k.starts_with("tokenizer.huggingface"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let decl: Vec<_> =
        f.tensor_order.iter().map(|n| (n.clone(), f.tensors[n].dims.clone(), f.tensors[n].dtype)).collect();
    let stripped = tmp.path().join("llamacpp.gguf");
    let mut w = GgufWriter::begin(std::fs::File::create(&stripped).unwrap(), &meta, &decl).unwrap();
    for n in &f.tensor_order {
        w.write_tensor(n, &f.tensor_data(n).unwrap().1).unwrap();
    }
    w.finish().unwrap();

    let o =
        rl(&["score", "--model", s(&stripped), "--input", s(&eval_set()), "--output", s(&tmp.path().join("x.jsonl"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tokenizer.huggingface.json"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let via_llamacpp = tmp.path().join("llamacpp.jsonl");
    score(&stripped, &via_llamacpp, &["--tokenizer", s(&root().join("tests/fixtures/tokenizers/llama3"))]);
    let m = compare(&own, &via_llamacpp);
    assert!(m["max_abs_error"].as_f64().unwrap() < 1e-4, "config rebuilt from llama.cpp keys scores the same: {m}");
}

#[test]
fn corrupted_and_foreign_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("m.gguf");
    quantize(&fixture("qwen3-seq"), &gguf, "q8_0");
    let bytes = std::fs::read(&gguf).unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"instruction\": \"Hi\", \"response\": \"Hello\"}\n").unwrap();
    let try_load = |name: &str, data: &[u8]| -> String {
        let p = tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        let o = rl(&[
            "score",
            "--model",
            s(&p),
            "--input",
            s(&input),
            "--output",
            s(&tmp.path().join(format!("{name}.out"))),
        ]);
        assert_eq!(o.status.code(), Some(1), "{name} must fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Cut inside the metadata (the tokenizer) and inside the tensor data.
    assert!(try_load("half.gguf", &bytes[..bytes.len() / 2]).contains("truncated?"));
    assert!(try_load("cut.gguf", &bytes[..bytes.len() - 1000]).contains("past the end of the file"));
    let mut b = bytes.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(try_load("kv.gguf", &b).contains("cannot fit"));
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(try_load("version.gguf", &b).contains("version 9"));
    assert!(try_load("text.gguf", b"this is not a model").contains("not a GGUF file"));

    // Unsupported architecture and a wrongly shaped tensor.
    let f = GgufFile::open(&gguf).unwrap();
    let rewrite = |name: &str, edit: &HeaderEdit| {
        let mut meta: Vec<(String, MetaValue)> = f.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut decl: Vec<_> =
            f.tensor_order.iter().map(|n| (n.clone(), f.tensors[n].dims.clone(), f.tensors[n].dtype)).collect();
        edit(&mut meta, &mut decl);
        let mut w = GgufWriter::begin(Vec::new(), &meta, &decl).unwrap();
        for n in &f.tensor_order {
            w.write_tensor(n, &f.tensor_data(n).unwrap().1).unwrap();
        }
        try_load(name, &w.finish().unwrap())
    };
    let err = rewrite("gemma.gguf", &|meta, _| {
        meta.retain(|(k, _)| k != "rewardlens.config_json");
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = MetaValue::String("gemma".into());
            }
        }
    });
    assert!(err.contains("unsupported architecture") && err.contains("gemma"), "{err}");
    let err = rewrite("shape.gguf", &|_, decl| {
        let t = decl.iter_mut().find(|t| t.0 == "blk.0.attn_q.weight").unwrap();
        t.1.reverse();
    });
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("shape"), "{err}");
}

#[test]
fn quantize_never_leaves_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    quantize(&fixture("qwen2-seq"), &out, "q4_0");
    let before = std::fs::read(&out).unwrap();
    let o = rl(&["quantize", "--model", s(&fixture("qwen2-seq")), "--out", s(&out), "--type", "q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), before, "existing output untouched");

    // A checkpoint whose weights are cut short fails mid-way: no output, no temporary file.
    let src = tmp.path().join("broken");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(fixture("qwen2-seq")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, src.join(p.file_name().unwrap())).unwrap();
    }
    let w = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(src.join("model.safetensors"), &w[..w.len() - 100]).unwrap();
    let out2 = tmp.path().join("broken.gguf");
    let o = rl(&["quantize", "--model", s(&src), "--out", s(&out2), "--type", "q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out2.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn ctrl_c_removes_the_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Large enough (a 151k-token embedding) that quantizing is still writing when interrupted.
    let model = tmp.path().join("model");
    ok(rl(&[
        "random-model",
        "--config",
        s(&root().join("tests/fixtures/shapes/qwen3-256.json")),
        "--tokenizer",
        s(&root().join("tests/fixtures/tokenizers/qwen3")),
        "--out",
        s(&model),
    ]));
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join("m.gguf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["quantize", "--model", s(&model), "--out", s(&out), "--type", "q4_k"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let temps = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    };
    // Wait for the temporary file to appear (the process is then writing it), then interrupt.
    while temps().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "quantize ended before writing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let name = temps().remove(0);
    assert!(name.starts_with(".m.gguf.") && !name.contains(&format!("-{}-", child.id())), "unpredictable: {name}");
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(temps().is_empty(), "temporary file left behind: {:?}", temps());
    assert!(!out.exists());
}
