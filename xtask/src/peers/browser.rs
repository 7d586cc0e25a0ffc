//! The browser rows: rewardlens' app (wasm CPU, f32 and q8_0; WebGPU) and transformers.js
//! (onnxruntime-web WASM, q8; WebGPU, fp32) in headless Chromium on the same ids, one sequence
//! per pass, one thread (the page is not cross-origin isolated, so neither gets wasm threads),
//! two rounds alternating. Each round opens a fresh browser profile: its first page visit
//! fetches the weights over HTTP from a local server (cold), a second visit loads them from
//! the browser's Cache Storage (cached). WebGPU here is SwiftShader, a software adapter: those
//! rows check that both run, not GPU speed.

use super::{Notes, Results, Sample};
use crate::root;
use anyhow::{bail, Result};
use rewardlens_browser_tests::{Browser, StaticServer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub const LENGTHS: [usize; 2] = [64, 512];
/// SwiftShader runs the 0.6B shape at a few tokens/s: the WebGPU rows use 64 tokens only.
pub const WEBGPU_LENGTHS: [usize; 1] = [64];

pub const OURS_F32: &str = "rewardlens f32 (wasm)";
pub const OURS_Q8: &str = "rewardlens q8_0 (wasm)";
pub const OURS_WEBGPU: &str = "rewardlens WebGPU (f16 weights)";
pub const TJS_WASM: &str = "transformers.js q8 (WASM)";
pub const TJS_WEBGPU: &str = "transformers.js fp32 (WebGPU)";

pub struct BrowserResults {
    pub results: Results,
    /// Label -> (cold, sample) of the 64-token first score.
    pub first: super::report::FirstScores,
    /// Label -> peak RSS of the page's renderer plus the GPU process, MiB.
    pub peaks: BTreeMap<String, f64>,
}

struct Run {
    /// (tokens, median seconds)
    rows: Vec<(usize, f64)>,
    cold_first_s: Option<f64>,
    cached_first_s: Option<f64>,
    peak_mib: Option<f64>,
}

/// Peak RSS of Chromium's largest renderer (the page and its worker) plus its GPU process
/// (WebGPU buffers, SwiftShader), MiB: Chromium lets a page read neither.
fn chromium_peak_mib() -> Option<f64> {
    let mut renderer: f64 = 0.0;
    let mut gpu: f64 = 0.0;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd);
        if !cmd.contains("chrom") {
            continue;
        }
        let m = super::vm_hwm_mib(&pid).unwrap_or(0.0);
        if cmd.contains("--type=renderer") {
            renderer = renderer.max(m);
        } else if cmd.contains("--type=gpu-process") {
            gpu = gpu.max(m);
        }
    }
    (renderer > 0.0).then_some(renderer + gpu)
}

fn start_browser(webgpu: bool) -> Browser {
    if webgpu {
        Browser::start_with_webgpu()
    } else {
        Browser::start()
    }
}

/// The app's `?bench=`: per length, the median of `iters` passes after a warm-up, and when the
/// first pass returned (epoch ms), against the page's time origin.
fn ours(model_url: &str, backend: &str, storage: &str, lengths: &[usize]) -> Result<Run> {
    let srv = StaticServer::start(
        vec![
            ("/models/".into(), root().join("target/bench-models")),
            ("/".into(), rewardlens_browser_tests::dist_dir()),
        ],
        true,
    );
    let b = start_browser(backend == "webgpu");
    // (tokens, median seconds) per length, and seconds from page open to the first scores.
    type Visit = (Vec<(usize, f64)>, Option<f64>);
    let visit = |lengths: &[usize], iters: usize| -> Result<Visit> {
        let list: Vec<String> = lengths.iter().map(usize::to_string).collect();
        b.goto(&format!(
            "{}/?model={model_url}&backend={backend}&storage={storage}&bench={}&iters={iters}",
            srv.url,
            list.join(",")
        ));
        if let Err(e) = b.wait_for_either("#bench", "#error", Duration::from_secs(3600)) {
            bail!("rewardlens in Chromium: {e}");
        }
        let origin = b.script("return performance.timeOrigin", serde_json::json!([])).as_f64();
        let toks = b.attrs("#bench .bench-row", "data-tokens");
        let ms = b.attrs("#bench .bench-row", "data-ms");
        let first = b.attrs("#bench .bench-row", "data-first-scores-at");
        let rows =
            toks.iter().zip(&ms).map(|(t, m)| Ok((t.parse()?, m.parse::<f64>()? / 1000.0))).collect::<Result<_>>()?;
        let first_s = match (first.first().and_then(|f| f.parse::<f64>().ok()), origin) {
            (Some(at), Some(o)) if at > 0.0 => Some((at - o) / 1000.0),
            _ => None,
        };
        Ok((rows, first_s))
    };
    let (rows, cold_first_s) = visit(lengths, 2)?;
    let peak_mib = chromium_peak_mib();
    let (_, cached_first_s) = visit(&lengths[..1], 1)?;
    Ok(Run { rows, cold_first_s, cached_first_s, peak_mib })
}

/// transformers.js in the page tests/bench/peers/tjs.html, its model files through the
/// browser cache so that a second visit is the cached start.
fn theirs(onnx: &Path, dtype: &str, device: &str, lengths: &[usize]) -> Result<Run> {
    let tjs = root().join("target/tools/tjs/node_modules");
    let srv = StaticServer::start(
        vec![
            ("/tjs/".into(), tjs.join("@huggingface/transformers/dist")),
            ("/ort/".into(), tjs.join("onnxruntime-web/dist")),
            ("/models/".into(), onnx.parent().expect("a folder").to_path_buf()),
            ("/".into(), root().join("tests/bench/peers")),
        ],
        false,
    );
    let b = start_browser(device == "webgpu");
    let name = onnx.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let visit = |lengths: &[usize], iters: usize| -> Result<Vec<serde_json::Value>> {
        let workloads: Vec<String> = lengths.iter().map(|n| format!("{n}x1")).collect();
        b.goto(&format!(
            "{}/tjs.html?model={name}&dtype={dtype}&device={device}&threads=1&cache=1&workloads={}&iters={iters}",
            srv.url,
            workloads.join(",")
        ));
        b.wait_for("#out[data-done]", Duration::from_secs(3600));
        let text = b.text("#out");
        if text.starts_with("error") {
            bail!("transformers.js in Chromium: {text}\n{}", b.console());
        }
        text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
    };
    let lines = visit(lengths, 2)?;
    let peak_mib = chromium_peak_mib();
    let cached = visit(&lengths[..1], 1)?;
    let first = |v: &[serde_json::Value]| v.first().and_then(|l| l["first_ms"].as_f64()).map(|ms| ms / 1000.0);
    Ok(Run {
        rows: lines
            .iter()
            .map(|l| (l["tokens"].as_u64().unwrap_or(0) as usize, l["median_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0))
            .collect(),
        cold_first_s: first(&lines),
        cached_first_s: first(&cached),
        peak_mib,
    })
}

/// Copies transformers.js' version line for the report.
fn tjs_version() -> String {
    let pkg = root().join("target/tools/tjs/node_modules/@huggingface/transformers/package.json");
    std::fs::read_to_string(pkg)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .map_or_else(|| "transformers.js".into(), |v| format!("transformers.js {v} (onnxruntime-web, PreTrainedModel)"))
}

pub fn run_all(onnx: Option<&Path>, smoke: bool, notes: &mut Notes) -> Result<BrowserResults> {
    crate::web::dist()?;
    let mut out = BrowserResults { results: Results::new(), first: Default::default(), peaks: BTreeMap::new() };
    type Job<'a> = (&'static str, Box<dyn Fn() -> Result<Run> + 'a>);
    let mut jobs: Vec<Job> = vec![
        (OURS_F32, Box::new(|| ours("/models/skywork-rand", "cpu", "f32", &LENGTHS))),
        (OURS_Q8, Box::new(|| ours("/models/skywork-q8_0.gguf", "cpu", "auto", &LENGTHS))),
        (OURS_WEBGPU, Box::new(|| ours("/models/skywork-rand", "webgpu", "auto", &WEBGPU_LENGTHS))),
    ];
    match onnx {
        Some(onnx) => {
            notes.versions.insert("transformers.js (Chromium)".into(), tjs_version());
            jobs.push((TJS_WASM, Box::new(move || theirs(onnx, "q8", "wasm", &LENGTHS))));
            jobs.push((TJS_WEBGPU, Box::new(move || theirs(onnx, "fp32", "webgpu", &WEBGPU_LENGTHS))));
        }
        None => notes.missing.push("transformers.js in Chromium: no ONNX export (see above)".into()),
    }
    for round in 1..=if smoke { 1 } else { 2 } {
        for (label, job) in &jobs {
            eprintln!("--- browser round {round}: {label}");
            match job() {
                Ok(run) => {
                    for (n, secs) in run.rows {
                        out.results.entry((label.to_string(), n, 1)).or_default().push(Sample {
                            secs,
                            first_s: None,
                            peak_mib: None,
                        });
                    }
                    let first = out.first.entry(label.to_string()).or_default();
                    for (cold, s) in [(true, run.cold_first_s), (false, run.cached_first_s)] {
                        if let Some(s) = s {
                            first.push((cold, Sample { secs: 0.0, first_s: Some(s), peak_mib: None }));
                        }
                    }
                    if let Some(p) = run.peak_mib {
                        let e = out.peaks.entry(label.to_string()).or_insert(0.0);
                        *e = e.max(p);
                    }
                }
                Err(e) => {
                    eprintln!("{label} failed: {e:#}");
                    if round == 1 {
                        notes.missing.push(format!("{label}: {}", super::first_line(&format!("{e:#}"))));
                    }
                }
            }
        }
    }
    Ok(out)
}
