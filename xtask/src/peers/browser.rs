//! The browser rows: rewardlens' app (wasm CPU: f32, q8_0 through each int8 kernel build, one
//! engine worker and a pipeline of N; WebGPU) and transformers.js (onnxruntime-web WASM, q8;
//! WebGPU, fp32) in headless Chromium on the same ids, in two page conditions: a plain page (not
//! cross-origin isolated: transformers.js gets 1 thread, we get our worker pipeline) and a
//! cross-origin isolated one (COOP/COEP: transformers.js gets as many wasm threads as we have
//! workers). Every configuration runs in a fresh browser, in turn (A B C … A B C …), two rounds for
//! the short inputs and one for 2048 tokens (tens of seconds a pass on 2 cores). Each
//! configuration's first visit fetches the weights over HTTP from a local server (cold), a second
//! visit loads them from the browser's Cache Storage (cached). WebGPU here is SwiftShader, a
//! software adapter: those rows check that both run, not GPU speed.

use super::{Notes, Results, Sample};
use crate::root;
use anyhow::{bail, Result};
use rewardlens_browser_tests::{Browser, StaticServer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// (tokens per sequence, sequences per pass) of the browser rows; 4 sequences share a 3/4 prompt.
pub const WORKLOADS: [(usize, usize); 5] = [(64, 1), (512, 1), (2048, 1), (64, 4), (512, 4)];
/// 2048 x 4 (8,192 tokens a pass: minutes per pass for the slower rows on 2 cores) only with
/// `cargo xtask bench-browser --long`.
pub const LONG_WORKLOADS: [(usize, usize); 1] = [(2048, 4)];

/// Timed passes after the warm-up: one for passes of 2,048 tokens and more.
fn iters_for(workloads: &[(usize, usize)]) -> usize {
    if workloads.iter().any(|(n, b)| n * b >= 2048) {
        1
    } else {
        2
    }
}
/// SwiftShader runs the 0.6B shape at a few tokens/s: the WebGPU rows use 64 tokens only.
pub const WEBGPU_WORKLOADS: [(usize, usize); 1] = [(64, 1)];

pub const OURS_F32: &str = "rewardlens f32 (wasm, 1 worker)";
pub const OURS_Q8_SIMD: &str = "rewardlens q8_0 int8 simd128 (1 worker)";
pub const OURS_Q8: &str = "rewardlens q8_0 int8 relaxed-simd (1 worker)";
pub const OURS_Q8_PIPE: &str = "rewardlens q8_0 int8 relaxed-simd (N workers)";
pub const OURS_Q8_ISOLATED: &str = "rewardlens q8_0 int8 relaxed-simd (N workers, isolated page)";
pub const OURS_WEBGPU: &str = "rewardlens WebGPU (f16 weights)";
pub const TJS_WASM: &str = "transformers.js q8 (WASM, 1 thread)";
pub const TJS_ISOLATED: &str = "transformers.js q8 (WASM, N threads, isolated page)";
pub const TJS_WEBGPU: &str = "transformers.js fp32 (WebGPU)";

/// Worker count of the N-worker rows and thread count of transformers.js in the isolated page.
pub fn pipeline_width() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4)
}

pub struct BrowserResults {
    pub results: Results,
    /// Label -> (cold, sample) of the 64-token first score.
    pub first: super::report::FirstScores,
    /// Label -> peak RSS of the page's renderer plus the GPU process, MiB.
    pub peaks: BTreeMap<String, f64>,
    /// (label, tokens) -> ms per kind of op in one pass (the page's profile, one sequence).
    pub profiles: BTreeMap<(String, usize), Vec<(String, f64)>>,
    /// Rounds of the short workloads (1 or 2).
    pub short_rounds: usize,
}

struct Run {
    /// ((tokens, sequences), median seconds a pass)
    rows: Vec<((usize, usize), f64)>,
    /// (tokens, ms per op) of one-sequence passes, where the page profiled them.
    profiles: Vec<(usize, Vec<(String, f64)>)>,
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
    // The split goes to the log: the GPU process is where SwiftShader keeps WebGPU's buffers.
    eprintln!("peak RSS: renderer {renderer:.0} MiB + GPU process {gpu:.0} MiB");
    (renderer > 0.0).then_some(renderer + gpu)
}

fn start_browser(webgpu: bool) -> Browser {
    if webgpu {
        Browser::start_with_webgpu()
    } else {
        Browser::start()
    }
}

/// How one of our rows opens the page.
#[derive(Clone)]
pub struct OursConfig {
    pub model_url: &'static str,
    pub backend: &'static str,
    pub storage: &'static str,
    /// `?kernel=`: the engine worker build (None: the page's own choice).
    pub kernel: Option<&'static str>,
    /// `?workers=`: engine workers (None: the page's own choice).
    pub workers: Option<usize>,
    pub isolated: bool,
}

fn server(mounts: Vec<(String, PathBuf)>, isolated: bool) -> StaticServer {
    if isolated {
        StaticServer::start_isolated(mounts, true)
    } else {
        StaticServer::start(mounts, true)
    }
}

/// The app's `?bench=`: per workload, the median of `iters` passes after a warm-up, and when the
/// first pass returned (epoch ms), against the page's time origin. The page must say it ran the
/// requested build, worker count and batch, else the row is refused (never a silent fallback).
fn ours(c: &OursConfig, workloads: &[(usize, usize)]) -> Result<Run> {
    let srv = server(
        vec![
            ("/models/".into(), root().join("target/bench-models")),
            ("/".into(), rewardlens_browser_tests::dist_dir()),
        ],
        c.isolated,
    );
    let b = start_browser(c.backend == "webgpu");
    type Visit = (Vec<((usize, usize), f64)>, Vec<(usize, Vec<(String, f64)>)>, Option<f64>);
    let visit = |workloads: &[(usize, usize)], iters: usize| -> Result<Visit> {
        let mut rows = Vec::new();
        let mut profiles = Vec::new();
        let mut first_s = None;
        // One page visit per batch size: `?bench=` takes lengths, `?batch=` one sequence count.
        let mut batches: Vec<usize> = workloads.iter().map(|w| w.1).collect();
        batches.dedup();
        for batch in batches {
            let list: Vec<String> = workloads.iter().filter(|w| w.1 == batch).map(|w| w.0.to_string()).collect();
            let mut url = format!(
                "{}/?model={}&backend={}&storage={}&bench={}&iters={iters}&batch={batch}",
                srv.url,
                c.model_url,
                c.backend,
                c.storage,
                list.join(",")
            );
            if let Some(k) = c.kernel {
                url.push_str(&format!("&kernel={k}"));
            }
            if let Some(w) = c.workers {
                url.push_str(&format!("&workers={w}"));
            }
            b.goto(&url);
            if let Err(e) = b.wait_for_either("#bench", "#error", Duration::from_secs(3600)) {
                bail!("rewardlens in Chromium: {e}");
            }
            if let Some(k) = c.kernel {
                let build = b.attrs("#kernel-build", "data-build");
                if build.first().map(String::as_str) != Some(k) {
                    bail!("asked for the {k} engine build, the page ran {build:?}");
                }
            }
            if c.isolated && b.script("return self.crossOriginIsolated", serde_json::json!([])).as_bool() != Some(true)
            {
                bail!("the page is not cross-origin isolated");
            }
            let origin = b.script("return performance.timeOrigin", serde_json::json!([])).as_f64();
            let toks = b.attrs("#bench .bench-row", "data-tokens");
            let ms = b.attrs("#bench .bench-row", "data-ms");
            let seqs = b.attrs("#bench .bench-row", "data-batch");
            let workers = b.attrs("#bench .bench-row", "data-workers");
            let first = b.attrs("#bench .bench-row", "data-first-scores-at");
            let profile = b.attrs("#bench .bench-row", "data-profile");
            for (t, p) in toks.iter().zip(&profile) {
                if let (1, Ok(n), Ok(ops)) = (batch, t.parse::<usize>(), serde_json::from_str::<Vec<(String, f64)>>(p))
                {
                    if !ops.is_empty() {
                        profiles.push((n, ops));
                    }
                }
            }
            for (i, (t, m)) in toks.iter().zip(&ms).enumerate() {
                let ran: usize = seqs.get(i).and_then(|s| s.parse().ok()).unwrap_or(1);
                if ran != batch {
                    bail!("asked for {batch} sequences a pass, the page ran {ran}");
                }
                if let (Some(want), Some(ran)) = (c.workers, workers.get(i).and_then(|w| w.parse::<usize>().ok())) {
                    if want != ran {
                        bail!("asked for {want} engine workers, the page ran {ran}");
                    }
                }
                rows.push(((t.parse()?, batch), m.parse::<f64>()? / 1000.0));
            }
            if first_s.is_none() {
                first_s = match (first.first().and_then(|f| f.parse::<f64>().ok()), origin) {
                    (Some(at), Some(o)) if at > 0.0 => Some((at - o) / 1000.0),
                    _ => None,
                };
            }
        }
        Ok((rows, profiles, first_s))
    };
    let (rows, profiles, cold_first_s) = visit(workloads, iters_for(workloads))?;
    let peak_mib = chromium_peak_mib();
    let (_, _, cached_first_s) = visit(&workloads[..1], 1)?;
    Ok(Run { rows, profiles, cold_first_s, cached_first_s, peak_mib })
}

/// transformers.js in the page tests/bench/peers/tjs.html, its model files through the
/// browser cache so that a second visit is the cached start.
fn theirs(
    onnx: &Path,
    dtype: &str,
    device: &str,
    threads: usize,
    isolated: bool,
    workloads: &[(usize, usize)],
) -> Result<Run> {
    let tjs = root().join("target/tools/tjs/node_modules");
    let srv = server(
        vec![
            ("/tjs/".into(), tjs.join("@huggingface/transformers/dist")),
            ("/ort/".into(), tjs.join("onnxruntime-web/dist")),
            ("/models/".into(), onnx.parent().expect("a folder").to_path_buf()),
            ("/".into(), root().join("tests/bench/peers")),
        ],
        isolated,
    );
    let b = start_browser(device == "webgpu");
    // One pass of transformers.js on one thread blocks the page's main thread: at 2,048 tokens
    // on a slow 2-core machine, past ChromeDriver's 300 s default for any command (which ended
    // a whole run with a panic once).
    b.set_script_timeout(Duration::from_secs(600));
    b.set_page_load_timeout(Duration::from_secs(3600));
    let name = onnx.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let visit = |workloads: &[(usize, usize)], iters: usize| -> Result<Vec<serde_json::Value>> {
        let list: Vec<String> = workloads.iter().map(|(n, b)| format!("{n}x{b}")).collect();
        b.goto(&format!(
            "{}/tjs.html?model={name}&dtype={dtype}&device={device}&threads={threads}&cache=1&workloads={}&iters={iters}",
            srv.url,
            list.join(",")
        ));
        b.wait_for("#out[data-done]", Duration::from_secs(3600));
        let text = b.text("#out");
        if text.starts_with("error") {
            bail!("transformers.js in Chromium: {text}\n{}", b.console());
        }
        if isolated && b.script("return self.crossOriginIsolated", serde_json::json!([])).as_bool() != Some(true) {
            bail!("the transformers.js page is not cross-origin isolated");
        }
        text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
    };
    let lines = visit(workloads, iters_for(workloads))?;
    if let Some(ran) = lines.first().and_then(|l| l["threads"].as_u64()) {
        if ran as usize != threads {
            bail!("asked transformers.js for {threads} threads, it ran {ran}");
        }
    }
    let peak_mib = chromium_peak_mib();
    let cached = visit(&workloads[..1], 1)?;
    let first = |v: &[serde_json::Value]| v.first().and_then(|l| l["first_ms"].as_f64()).map(|ms| ms / 1000.0);
    let at = |l: &serde_json::Value, k: &str| l[k].as_u64().unwrap_or(0) as usize;
    Ok(Run {
        profiles: Vec::new(),
        rows: lines
            .iter()
            .map(|l| ((at(l, "tokens"), at(l, "batch").max(1)), l["median_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0))
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

/// Labels of the CPU rows, in report order, and the WebGPU ones.
pub const CPU_LABELS: [&str; 7] =
    [OURS_F32, OURS_Q8_SIMD, OURS_Q8, OURS_Q8_PIPE, TJS_WASM, OURS_Q8_ISOLATED, TJS_ISOLATED];
pub const WEBGPU_LABELS: [&str; 2] = [OURS_WEBGPU, TJS_WEBGPU];

/// Which workloads and rounds a browser run covers (every omission is noted in the report).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// The smallest workloads, one round, report under target/ (checks the harness).
    pub smoke: bool,
    /// Adds 2048 x 4.
    pub long: bool,
    /// Only the short workloads, one round (a first look in minutes).
    pub quick: bool,
    /// Every workload once, without the second round of the short ones (when the whole run
    /// must fit in less time).
    pub one_round: bool,
    /// `--only A|B`: only the rows whose label contains one of these (a look at a few rows while
    /// working on them; the report then goes to target/, never into docs/PERFORMANCE.md).
    pub only: Option<&'static str>,
}

impl Scope {
    pub fn from_args(args: &[String]) -> Self {
        let has = |f: &str| args.iter().any(|a| a == f);
        let only = args.iter().find_map(|a| a.strip_prefix("--only=")).map(|s| &*s.to_string().leak());
        Self { smoke: has("--smoke"), long: has("--long"), quick: has("--quick"), one_round: has("--one-round"), only }
    }
}

pub fn run_all(onnx: Option<&Path>, scope: Scope, notes: &mut Notes) -> Result<BrowserResults> {
    let Scope { smoke, long, quick, one_round, only } = scope;
    crate::web::dist()?;
    let mut out = BrowserResults {
        results: Results::new(),
        first: Default::default(),
        peaks: BTreeMap::new(),
        profiles: BTreeMap::new(),
        short_rounds: 1,
    };
    let n = pipeline_width();
    let ours_cfg = |model_url, storage, kernel, workers, isolated| OursConfig {
        model_url,
        backend: "cpu",
        storage,
        kernel,
        workers: Some(workers),
        isolated,
    };
    let gguf = "/models/skywork-q8_0.gguf";
    type Job<'a> = (&'static str, Box<dyn Fn(&[(usize, usize)]) -> Result<Run> + 'a>);
    let mut jobs: Vec<Job> = vec![
        (OURS_F32, Box::new(move |w| ours(&ours_cfg("/models/skywork-rand", "f32", Some("relaxed"), 1, false), w))),
        (OURS_Q8_SIMD, Box::new(move |w| ours(&ours_cfg(gguf, "auto", Some("simd128"), 1, false), w))),
        (OURS_Q8, Box::new(move |w| ours(&ours_cfg(gguf, "auto", Some("relaxed"), 1, false), w))),
        (OURS_Q8_PIPE, Box::new(move |w| ours(&ours_cfg(gguf, "auto", Some("relaxed"), n, false), w))),
        (OURS_Q8_ISOLATED, Box::new(move |w| ours(&ours_cfg(gguf, "auto", Some("relaxed"), n, true), w))),
    ];
    let webgpu = OursConfig {
        model_url: "/models/skywork-rand",
        backend: "webgpu",
        storage: "auto",
        kernel: None,
        workers: None,
        isolated: false,
    };
    let mut gpu_jobs: Vec<Job> = vec![(OURS_WEBGPU, Box::new(move |w| ours(&webgpu, w)))];
    match onnx {
        Some(onnx) => {
            notes.versions.insert("transformers.js (Chromium)".into(), tjs_version());
            jobs.push((TJS_WASM, Box::new(move |w| theirs(onnx, "q8", "wasm", 1, false, w))));
            jobs.push((TJS_ISOLATED, Box::new(move |w| theirs(onnx, "q8", "wasm", n, true, w))));
            gpu_jobs.push((TJS_WEBGPU, Box::new(move |w| theirs(onnx, "fp32", "webgpu", 1, false, w))));
        }
        None => notes.missing.push("transformers.js in Chromium: no ONNX export (see above)".into()),
    }
    if let Some(only) = only {
        let keep = |label: &str| only.split('|').any(|p| label.contains(p));
        jobs.retain(|(label, _)| keep(label));
        gpu_jobs.retain(|(label, _)| keep(label));
        notes.missing.push(format!("rows not matching `--only={only}`: not run"));
    }
    let short: Vec<(usize, usize)> =
        if smoke { vec![(64, 1), (64, 4)] } else { WORKLOADS.iter().copied().filter(|w| w.0 * w.1 < 2048).collect() };
    let mut big: Vec<(usize, usize)> =
        if smoke || quick { vec![] } else { WORKLOADS.iter().copied().filter(|w| w.0 * w.1 >= 2048).collect() };
    if long {
        big.extend(LONG_WORKLOADS);
    }
    if quick {
        notes
            .missing
            .push("browser 2048 x 1, 512 x 4 and a second round: not run (`cargo xtask bench-browser --quick`)".into());
    } else if one_round && !smoke {
        notes.missing.push(
            "browser second round: not run (`cargo xtask bench-browser --one-round`): every figure is one round's"
                .into(),
        );
    } else if !long && !smoke {
        notes.missing.push(
            "browser 2048 x 4: not run by default (8,192 tokens a pass, minutes each for the slower rows on 2 cores); \
             `cargo xtask bench-browser --long` adds it"
                .into(),
        );
    }
    // Round 1: short, then big workloads (one timed pass each after a warm-up: tens of seconds a
    // pass here); round 2: the short ones again.
    let mut rounds: Vec<(usize, Vec<(usize, usize)>)> = vec![(1, short.clone())];
    if !big.is_empty() {
        rounds.push((1, big));
    }
    if !smoke && !quick && !one_round {
        rounds.push((2, short));
        out.short_rounds = 2;
    }
    for (round, workloads) in &rounds {
        let all = jobs.iter().map(|j| (j, workloads.clone()));
        // WebGPU (SwiftShader: a few tokens/s) once per round, short workloads only.
        let gpu_workloads =
            if workloads.iter().any(|w| w.0 * w.1 >= 2048) { vec![] } else { WEBGPU_WORKLOADS.to_vec() };
        let gpu = gpu_jobs.iter().filter(|_| !gpu_workloads.is_empty()).map(|j| (j, gpu_workloads.clone()));
        for ((label, job), workloads) in all.chain(gpu) {
            eprintln!("--- browser round {round}: {label}");
            match job(&workloads) {
                Ok(run) => {
                    for (n, ops) in run.profiles {
                        out.profiles.insert((label.to_string(), n), ops);
                    }
                    for ((tokens, seqs), secs) in run.rows {
                        out.results.entry((label.to_string(), tokens, seqs)).or_default().push(Sample {
                            secs,
                            first_s: None,
                            peak_mib: run.peak_mib,
                        });
                    }
                    // Time to first score is the 64-token workload's: a round of long passes
                    // starts with one of 2,048 tokens, whose first score measures that pass.
                    if workloads.first() == Some(&(64, 1)) {
                        let first = out.first.entry(label.to_string()).or_default();
                        for (cold, s) in [(true, run.cold_first_s), (false, run.cached_first_s)] {
                            if let Some(s) = s {
                                first.push((cold, Sample { secs: 0.0, first_s: Some(s), peak_mib: None }));
                            }
                        }
                    }
                    if let Some(p) = run.peak_mib {
                        let e = out.peaks.entry(label.to_string()).or_insert(0.0);
                        *e = e.max(p);
                    }
                }
                Err(e) => {
                    eprintln!("{label} failed: {e:#}");
                    notes.missing.push(format!("{label} (round {round}): {}", super::first_line(&format!("{e:#}"))));
                }
            }
            // Every finished row on disk at once: a run that aborts later (a peer's timeout,
            // a crash) keeps what it measured, the long rows included.
            let progress = root().join("target/PERFORMANCE-browser-progress.md");
            if let Err(e) = std::fs::write(&progress, super::report::browser_section(notes, &out, true)) {
                eprintln!("cannot write {}: {e}", progress.display());
            }
        }
    }
    Ok(out)
}
