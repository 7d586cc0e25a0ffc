//! `cargo xtask bench [THREADS]`: rewardlens against what users would run instead, on the same
//! model (random weights in the real Skywork-Reward-V2-Qwen3-0.6B shape), the same token ids
//! and the same thread count, ours and theirs in alternation, medians and ratios; writes
//! docs/PERFORMANCE.md. A peer that cannot be installed or run here is listed with the reason.
//!
//! Phases: native tokens/s and peak memory per workload; time to first score with a cold and
//! a warm page cache; `rewardlens serve` under concurrent requests; the browser (wasm CPU and
//! WebGPU, ours and transformers.js'), each in its module.

mod browser;
mod kernels;
pub use kernels::bench_kernels;
mod load;
mod report;

use crate::{bin, python, root, run};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (tokens per sequence, sequences per pass): short, medium and long inputs, one response and
/// 4 or 16 responses to one prompt.
pub const WORKLOADS: [(usize, usize); 9] =
    [(64, 1), (64, 4), (64, 16), (512, 1), (512, 4), (512, 16), (2048, 1), (2048, 4), (2048, 16)];

/// Tokens of each sequence that are the shared prompt when several responses answer it: three
/// quarters (the rest is the response).
pub fn shared_prompt(tokens: usize, batch: usize) -> usize {
    if batch > 1 {
        tokens * 3 / 4
    } else {
        0
    }
}

/// Passes this big (8k+ tokens: tens of seconds to minutes each on 2 cores) run once per
/// backend, one timed pass without a warm-up; smaller ones two rounds of warm-up + 3 (1 from
/// 4k tokens) timed passes.
fn is_big(n: usize, b: usize) -> bool {
    n * b >= 8192
}

fn iters(n: usize, b: usize) -> usize {
    if n * b >= 4096 {
        1
    } else {
        3
    }
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub secs: f64,
    /// Process start (or page open) to the first scores.
    pub first_s: Option<f64>,
    pub peak_mib: Option<f64>,
}

/// Samples per (backend, tokens, batch).
pub type Results = BTreeMap<(String, usize, usize), Vec<Sample>>;

/// Everything the report needs besides the samples.
#[derive(Default)]
pub struct Notes {
    pub threads: String,
    /// Peer name -> version and settings, as the peer printed them.
    pub versions: BTreeMap<String, String>,
    /// Peers or phases that could not run, with the reason.
    pub missing: Vec<String>,
}

/// How a native backend is run.
#[derive(Clone)]
enum Native {
    Ours { model: PathBuf, reuse: bool },
    Candle { exe: PathBuf, model: PathBuf },
    Torch { model: PathBuf },
    TjsNode { module: PathBuf, onnx: PathBuf },
}

pub const F32: &str = "rewardlens f32";
pub const F32_NO_REUSE: &str = "rewardlens f32, prompt reuse off";
pub const Q8: &str = "rewardlens q8_0";
pub const Q4: &str = "rewardlens q4_k";
pub const CANDLE: &str = "Candle qwen3 f32";
pub const TORCH: &str = "PyTorch f32";
pub const TJS_NODE: &str = "transformers.js q8 (Node)";

impl Native {
    fn command(&self, threads: &str, n: usize, b: usize, iters: usize, warmup: usize) -> Command {
        let shared = shared_prompt(n, b).to_string();
        let (lens, batch, iters, warmup) = (n.to_string(), b.to_string(), iters.to_string(), warmup.to_string());
        let table_args =
            ["--lengths", &lens, "--batch", &batch, "--iters", &iters, "--warmup", &warmup, "--shared", &shared];
        match self {
            Native::Ours { model, reuse } => {
                let mut c = Command::new(bin());
                c.args(["--threads", threads, "bench"]).args(table_args).arg("--model").arg(model);
                if !reuse {
                    c.arg("--no-prefix-reuse");
                }
                c
            }
            Native::Candle { exe, model } => {
                let mut c = Command::new(exe);
                c.env("RAYON_NUM_THREADS", threads).env("CANDLE_NUM_THREADS", threads);
                c.args(table_args).arg("--model").arg(model);
                c
            }
            Native::Torch { model } => {
                let mut c = Command::new(python());
                c.args(["tests/bench/torch_bench.py", "--threads", threads]).args(table_args).arg("--model").arg(model);
                c
            }
            Native::TjsNode { module, onnx } => {
                let mut c = Command::new("node");
                c.env("TJS_MODULE", module).arg("tests/bench/peers/tjs_bench.mjs").arg(onnx);
                c.args(["q8", threads, &format!("{n}x{b}:{shared}"), &iters, &warmup]);
                c
            }
        }
    }

    /// Runs one workload: (median seconds, first score, peak RSS) and the version line.
    fn measure(&self, threads: &str, n: usize, b: usize, iters: usize, warmup: usize) -> Result<(Sample, String)> {
        let text = output(&mut self.command(threads, n, b, iters, warmup))?;
        if let Native::TjsNode { .. } = self {
            let line = text.lines().find(|l| l.starts_with('{')).context("transformers.js printed no result")?;
            let v: serde_json::Value = serde_json::from_str(line)?;
            let s = Sample {
                secs: v["median_ms"].as_f64().context("median_ms")? / 1000.0,
                first_s: v["first_ms"].as_f64().map(|ms| ms / 1000.0),
                peak_mib: v["rss_mib"].as_f64(),
            };
            return Ok((s, v["peer"].as_str().unwrap_or_default().to_owned()));
        }
        let secs = parse_table(&text)
            .into_iter()
            .find(|&(tn, tb, _)| tn == n && tb == b)
            .map(|(_, _, s)| s)
            .with_context(|| format!("no {n} x {b} row in:\n{text}"))?;
        let number_after = |prefix: &str| -> Option<f64> {
            let rest = text.lines().find_map(|l| l.strip_prefix(prefix))?;
            rest.trim().trim_end_matches("MiB").trim().trim_end_matches('s').parse().ok()
        };
        let version = text.lines().next().unwrap_or_default().to_owned();
        Ok((Sample { secs, first_s: number_after("first score after:"), peak_mib: number_after("peak RSS:") }, version))
    }
}

/// Rows `| n | b | median s | tokens/s |` of `rewardlens bench`, `torch_bench.py` and the Candle peer.
fn parse_table(text: &str) -> Vec<(usize, usize, f64)> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() != 4 {
                return None;
            }
            Some((cells[0].parse().ok()?, cells[1].parse().ok()?, cells[2].parse().ok()?))
        })
        .collect()
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.current_dir(root()).output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        anyhow::bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// transformers.js from npm (onnxruntime-node's CPU binaries ship in the package; its install
/// script only fetches GPU ones from GitHub, unreachable here, hence --ignore-scripts).
pub fn ensure_tjs() -> Result<PathBuf> {
    let dir = root().join("target/tools/tjs");
    let module = dir.join("node_modules/@huggingface/transformers/dist/transformers.node.mjs");
    if !module.is_file() {
        std::fs::create_dir_all(&dir)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix"])
            .arg(&dir)
            .arg("@huggingface/transformers@4.3.1"))
        .context("installing transformers.js from npm")?;
    }
    Ok(module)
}

/// The model's ONNX export (`target/bench-models/skywork-rand-onnx`) and transformers.js from
/// npm: the export's folder, and the Node module or why the peer cannot run.
fn tjs_peer(model: &Path) -> (PathBuf, Result<PathBuf>) {
    let onnx = root().join("target/bench-models/skywork-rand-onnx");
    let tjs = output(
        Command::new(python())
            .arg("tests/bench/peers/export_onnx.py")
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(&onnx),
    )
    .context("exporting the model to ONNX (optimum, onnxruntime)")
    .and_then(|_| ensure_tjs());
    (onnx, tjs)
}

/// Candle's qwen3 model code, built apart from the workspace (tests/bench/peers/candle).
fn build_candle_peer() -> Result<PathBuf> {
    let target = root().join("target/peers");
    run(crate::cargo().env("CARGO_TARGET_DIR", &target).args([
        "build",
        "--release",
        "--locked",
        "--manifest-path",
        "tests/bench/peers/candle/Cargo.toml",
    ]))?;
    Ok(target.join("release/candle-qwen3-peer"))
}

fn quantized(model: &Path, t: &str) -> Result<PathBuf> {
    let gguf = root().join(format!("target/bench-models/skywork-{t}.gguf"));
    if !gguf.is_file() {
        run(Command::new(bin()).args(["quantize", "--type", t, "--model"]).arg(model).arg("--out").arg(&gguf))?;
    }
    Ok(gguf)
}

/// Empties the OS page cache, so the next process reads the model from disk (needs root).
fn drop_page_cache() -> Result<()> {
    run(&mut Command::new("sync"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches (needs root)")
}

pub fn bench_peers(args: &[String]) -> Result<()> {
    let threads = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "2".into());
    let skip_browser = args.iter().any(|a| a == "--no-browser");
    // --smoke: every phase on the smallest workloads, one round, report under target/ (checks
    // the harness in minutes; its numbers are not the published ones).
    let smoke = args.iter().any(|a| a == "--smoke");
    let workloads: Vec<(usize, usize)> =
        WORKLOADS.iter().copied().filter(|&(n, b)| !smoke || (n == 64 && b <= 4)).collect();
    run(crate::cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let model = crate::skywork_shape()?;
    let (q8, q4) = (quantized(&model, "q8_0")?, quantized(&model, "q4_k")?);
    let mut notes = Notes { threads: threads.clone(), ..Notes::default() };

    let mut backends: Vec<(&str, Native)> = vec![
        (F32, Native::Ours { model: model.clone(), reuse: true }),
        (F32_NO_REUSE, Native::Ours { model: model.clone(), reuse: false }),
        (Q8, Native::Ours { model: q8.clone(), reuse: true }),
        (Q4, Native::Ours { model: q4.clone(), reuse: true }),
    ];
    match build_candle_peer() {
        Ok(exe) => backends.push((CANDLE, Native::Candle { exe, model: model.clone() })),
        Err(e) => notes.missing.push(format!("{CANDLE}: {e:#}")),
    }
    match output(Command::new(python()).args(["-c", "import torch, transformers"])) {
        Ok(_) => backends.push((TORCH, Native::Torch { model: model.clone() })),
        Err(e) => notes.missing.push(format!("{TORCH}: no Python with torch and transformers ({e:#}); set PYTHON")),
    }
    let (onnx, tjs) = tjs_peer(&model);
    match &tjs {
        Ok(module) => backends.push((TJS_NODE, Native::TjsNode { module: module.clone(), onnx: onnx.clone() })),
        Err(e) => notes.missing.push(format!("transformers.js: {e:#}")),
    }

    let mut results = Results::new();
    let record = |results: &mut Results, label: &str, n: usize, b: usize, s: Sample| {
        results.entry((label.to_owned(), n, b)).or_default().push(s);
    };
    for round in 1..=if smoke { 1 } else { 2 } {
        for &(n, b) in &workloads {
            if round == 2 && is_big(n, b) {
                continue;
            }
            let (it, warm) = if is_big(n, b) { (1, 0) } else { (iters(n, b), 1) };
            for (label, backend) in &backends {
                // Without a shared prompt reuse has nothing to do: the row would repeat f32's.
                if *label == F32_NO_REUSE && b == 1 {
                    continue;
                }
                // Candle's qwen3 takes minutes on the big passes (about 125 tokens/s here).
                if *label == CANDLE && is_big(n, b) {
                    continue;
                }
                eprintln!("--- round {round} {n}x{b}: {label}");
                match backend.measure(&threads, n, b, it, warm) {
                    Ok((s, version)) => {
                        notes.versions.entry(label.to_string()).or_insert(version);
                        record(&mut results, label, n, b, s);
                    }
                    Err(e) => {
                        eprintln!("{label} failed: {e:#}");
                        notes.missing.push(format!("{label} at {n} x {b}: {}", first_line(&format!("{e:#}"))));
                    }
                }
            }
        }
    }

    // Time to first score, 64 tokens x 1, from process start: a cold page cache, then a warm one.
    let mut first = report::FirstScores::new();
    for (label, backend) in backends.iter().filter(|(l, _)| *l != F32_NO_REUSE) {
        for cold in [true, false] {
            if cold {
                if let Err(e) = drop_page_cache() {
                    notes.missing.push(format!("cold starts: {e:#}"));
                    continue;
                }
            }
            eprintln!("--- first score ({}): {label}", if cold { "cold" } else { "cached" });
            match backend.measure(&threads, 64, 1, 1, 0) {
                Ok((s, _)) => first.entry(label.to_string()).or_default().push((cold, s)),
                Err(e) => eprintln!("{label} failed: {e:#}"),
            }
        }
    }

    let serve = load::serve_under_load(&threads, &model).unwrap_or_else(|e| {
        notes.missing.push(format!("rewardlens serve under load: {e:#}"));
        None
    });

    let browser = if skip_browser {
        notes.missing.push("browser rows: skipped (--no-browser)".into());
        None
    } else {
        let scope = browser::Scope { quick: false, ..browser::Scope::from_args(args) };
        Some(browser::run_all(tjs.as_ref().ok().map(|_| onnx.as_path()), scope, &mut notes)?)
    };
    let md = report::write(&notes, &results, &first, serve.as_ref(), browser.as_ref())?;
    let out = if smoke { root().join("target/PERFORMANCE-smoke.md") } else { root().join("docs/PERFORMANCE.md") };
    std::fs::write(&out, &md)?;
    println!("{md}");
    Ok(())
}

/// `cargo xtask bench-browser [--smoke] [--quick] [--one-round] [--long]`: only the browser rows (every browser row in one
/// run), written into docs/PERFORMANCE.md's browser section; the native sections stay as the
/// last full `cargo xtask bench` wrote them (the section says so).
pub fn bench_browser(args: &[String]) -> Result<()> {
    let scope = browser::Scope::from_args(args);
    run(crate::cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let model = crate::skywork_shape()?;
    quantized(&model, "q8_0")?;
    let mut notes = Notes { threads: "1".into(), ..Notes::default() };
    let (onnx, tjs) = tjs_peer(&model);
    if let Err(e) = &tjs {
        notes.missing.push(format!("transformers.js: {e:#}"));
    }
    let web = browser::run_all(tjs.as_ref().ok().map(|_| onnx.as_path()), scope, &mut notes)?;
    let section = report::browser_section(&notes, &web, true);
    let path = if scope.smoke || scope.only.is_some() {
        root().join("target/PERFORMANCE-browser-partial.md")
    } else {
        root().join("docs/PERFORMANCE.md")
    };
    let old = std::fs::read_to_string(root().join("docs/PERFORMANCE.md")).unwrap_or_default();
    let md = report::splice_browser_section(&old, &section);
    std::fs::write(&path, &md)?;
    println!("{section}");
    Ok(())
}

/// Peak resident memory (Linux `VmHWM`) of process `pid`, MiB.
pub fn vm_hwm_mib(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(200).collect()
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}
