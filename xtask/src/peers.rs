//! `cargo xtask bench-peers [THREADS]`: rewardlens against what users would run instead, on the
//! same model (the random Skywork-Reward-V2-Qwen3-0.6B shape), the same token ids and the same
//! thread count, alternating ours and theirs (two rounds), medians and ratios; writes
//! docs/PERFORMANCE.md. A peer that cannot be installed or run here is listed with the reason.

use crate::{bin, python, root, run, skywork_shape};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::process::Command;

/// (tokens per response, responses): short, medium and long inputs; single and batches of 4
/// and 16 responses. 512 x 16 and 2048 x 4/16 (8k-32k tokens a pass) are left out: minutes per
/// run per backend on 2 cores.
const WORKLOADS: [(usize, usize); 6] = [(64, 1), (64, 4), (64, 16), (512, 1), (512, 4), (2048, 1)];

/// Median seconds per (backend, workload) over the rounds.
type Times = BTreeMap<(String, usize, usize), Vec<f64>>;

/// Rows `| n | b | median s | tokens/s |` of `rewardlens bench` and `torch_bench.py`.
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

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.current_dir(root()).output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        anyhow::bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// transformers.js from npm (onnxruntime-node's CPU binaries ship in the package; its install
/// script only fetches GPU ones from GitHub, unreachable here, hence --ignore-scripts).
fn ensure_tjs() -> Result<std::path::PathBuf> {
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

pub fn bench_peers(args: &[String]) -> Result<()> {
    let threads = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "2".into());
    run(crate::cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let model = skywork_shape()?;
    let q8 = root().join("target/bench-models/skywork-q8_0.gguf");
    if !q8.is_file() {
        run(Command::new(bin()).args(["quantize", "--type", "q8_0", "--model"]).arg(&model).arg("--out").arg(&q8))?;
    }
    let onnx = root().join("target/bench-models/skywork-rand-onnx");
    let mut missing: Vec<String> = Vec::new();
    let onnx_ok = match output(
        Command::new(python())
            .arg("tests/bench/peers/export_onnx.py")
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&onnx),
    ) {
        Ok(_) => true,
        Err(e) => {
            missing.push(format!("transformers.js: no ONNX export ({e:#})"));
            false
        }
    };
    let tjs = if onnx_ok {
        match ensure_tjs() {
            Ok(m) => Some(m),
            Err(e) => {
                missing.push(format!("transformers.js: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let versions = output(
        Command::new(python())
            .args(["-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"]),
    )
    .unwrap_or_else(|e| {
        missing.push(format!("PyTorch: {e:#}"));
        String::new()
    });

    let mut times = Times::new();
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    for round in 1..=2 {
        for &(n, b) in &WORKLOADS {
            let lens = n.to_string();
            let batch = b.to_string();
            let iters = if n * b >= 4096 { "1" } else { "3" };
            for (label, path) in [("rewardlens f32", &model), ("rewardlens q8_0", &q8)] {
                eprintln!("--- round {round} {n}x{b}: {label}");
                let text = output(
                    Command::new(bin())
                        .args(["--threads", &threads, "bench", "--lengths", &lens])
                        .args(["--batch", &batch, "--iters", iters, "--model"])
                        .arg(path),
                )?;
                for (tn, tb, s) in parse_table(&text) {
                    times.entry((label.into(), tn, tb)).or_default().push(s);
                }
            }
            if !versions.is_empty() {
                eprintln!("--- round {round} {n}x{b}: PyTorch");
                match output(
                    Command::new(python())
                        .args(["tests/bench/torch_bench.py", "--threads", &threads, "--lengths", &lens])
                        .args(["--batch", &batch, "--iters", iters, "--model"])
                        .arg(&model),
                ) {
                    Ok(text) => {
                        for (tn, tb, s) in parse_table(&text) {
                            times.entry(("PyTorch f32".into(), tn, tb)).or_default().push(s);
                        }
                    }
                    Err(e) => eprintln!("PyTorch failed: {e:#}"),
                }
            }
            if let Some(module) = &tjs {
                eprintln!("--- round {round} {n}x{b}: transformers.js q8 (Node)");
                let r = output(
                    Command::new("node")
                        .env("TJS_MODULE", module)
                        .arg("tests/bench/peers/tjs_bench.mjs")
                        .arg(&onnx)
                        .args(["q8", &threads, &format!("{n}x{b}"), iters]),
                );
                match r {
                    Ok(text) => {
                        for line in text.lines().filter(|l| l.starts_with('{')) {
                            let v: serde_json::Value = serde_json::from_str(line)?;
                            meta.insert("transformers.js".into(), v["peer"].as_str().unwrap_or("").into());
                            times
                                .entry(("transformers.js q8 (Node)".into(), n, b))
                                .or_default()
                                .push(v["median_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0);
                        }
                    }
                    Err(e) => {
                        eprintln!("transformers.js failed: {e:#}");
                        if round == 1 && n == WORKLOADS[0].0 && b == WORKLOADS[0].1 {
                            missing.push(format!("transformers.js (Node): {e:#}"));
                        }
                    }
                }
            }
        }
    }
    // In the browser: one thread each (no cross-origin isolation, so no wasm threads), batch 1.
    crate::web::dist()?;
    let browser_workloads = BROWSER_LENGTHS.iter().map(|n| format!("{n}x1")).collect::<Vec<_>>().join(",");
    for round in 1..=2 {
        for (label, url, storage) in [
            ("rewardlens f32 (Chromium)", "/models/skywork-rand", "f32"),
            ("rewardlens q8_0 (Chromium)", "/models/skywork-q8_0.gguf", "auto"),
        ] {
            eprintln!("--- round {round}: {label}");
            match ours_in_chromium(url, storage) {
                Ok(rows) => {
                    for (n, s) in rows {
                        times.entry((label.into(), n, 1)).or_default().push(s);
                    }
                }
                Err(e) => eprintln!("{label} failed: {e:#}"),
            }
        }
        if tjs.is_some() {
            eprintln!("--- round {round}: transformers.js q8 (Chromium)");
            match tjs_in_chromium(&onnx, &browser_workloads, "2") {
                Ok(rows) => {
                    for v in rows {
                        meta.insert("transformers.js (Chromium)".into(), v["peer"].as_str().unwrap_or("").into());
                        let (n, b) =
                            (v["tokens"].as_u64().unwrap_or(0) as usize, v["batch"].as_u64().unwrap_or(1) as usize);
                        times
                            .entry(("transformers.js q8 (Chromium)".into(), n, b))
                            .or_default()
                            .push(v["median_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0);
                    }
                }
                Err(e) => {
                    eprintln!("transformers.js in Chromium failed: {e:#}");
                    if round == 1 {
                        missing.push(format!("transformers.js (Chromium): {e:#}"));
                    }
                }
            }
        }
    }
    write_report(&threads, &times, &versions, &meta, &missing)
}

/// transformers.js in headless Chromium (WASM backend, onnxruntime-web, one thread: the page is
/// not cross-origin isolated) on `workloads`; its JSON lines.
pub fn tjs_in_chromium(onnx: &std::path::Path, workloads: &str, iters: &str) -> Result<Vec<serde_json::Value>> {
    use rewardlens_browser_tests::{Browser, StaticServer};
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
    let b = Browser::start();
    let name = onnx.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    b.goto(&format!("{}/tjs.html?model={name}&dtype=q8&threads=1&workloads={workloads}&iters={iters}", srv.url));
    b.wait_for("#out[data-done]", std::time::Duration::from_secs(3600));
    let text = b.text("#out");
    if text.starts_with("error") {
        anyhow::bail!("transformers.js in Chromium: {text}\n{}", b.console());
    }
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// Browser workloads: batch 1 (the app's benchmark scores one sequence at a time).
const BROWSER_LENGTHS: [usize; 2] = [64, 512];

/// rewardlens' wasm CPU engine in headless Chromium (the app's `?bench=`), one thread:
/// (tokens, seconds) per length.
fn ours_in_chromium(model_url: &str, storage: &str) -> Result<Vec<(usize, f64)>> {
    use rewardlens_browser_tests::{Browser, StaticServer};
    let srv = StaticServer::start(
        vec![
            ("/models/".into(), root().join("target/bench-models")),
            ("/".into(), rewardlens_browser_tests::dist_dir()),
        ],
        true,
    );
    let b = Browser::start();
    let lengths: Vec<String> = BROWSER_LENGTHS.iter().map(usize::to_string).collect();
    b.goto(&format!(
        "{}/?model={model_url}&backend=cpu&storage={storage}&bench={}&iters=2",
        srv.url,
        lengths.join(",")
    ));
    if let Err(e) = b.wait_for_either("#bench", "#error", std::time::Duration::from_secs(3600)) {
        anyhow::bail!("rewardlens in Chromium: {e}");
    }
    let toks = b.attrs("#bench .bench-row", "data-tokens");
    let ms = b.attrs("#bench .bench-row", "data-ms");
    toks.iter().zip(&ms).map(|(t, m)| Ok((t.parse()?, m.parse::<f64>()? / 1000.0))).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn write_report(
    threads: &str,
    times: &Times,
    versions: &str,
    meta: &BTreeMap<String, String>,
    missing: &[String],
) -> Result<()> {
    let get = |label: &str, n: usize, b: usize| times.get(&(label.to_owned(), n, b)).map(|v| median(v));
    let tps = |s: Option<f64>, n: usize, b: usize| s.map_or("—".to_owned(), |s| format!("{:.0}", (n * b) as f64 / s));
    let ratio = |a: Option<f64>, p: Option<f64>| match (a, p) {
        (Some(a), Some(p)) => format!("{:.2}", p / a),
        _ => "—".into(),
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mut md = format!(
        "# Performance against the alternatives\n\n\
         Written by `cargo xtask bench-peers {threads}`; every number below comes from that one run.\n\n\
         - Model: random weights in the real Skywork-Reward-V2-Qwen3-0.6B shape (`rewardlens random-model` with \
         `tests/fixtures/shapes/skywork-reward-v2-qwen3-0.6b.json`, never committed); its ONNX export for \
         transformers.js by `tests/bench/peers/export_onnx.py` (optimum, then onnxruntime dynamic int8 = transformers.js' q8).\n\
         - Workloads: short (64 tokens), medium (512) and long (2048) responses, single and in passes of 4 and 16; \
         512 x 16 and 2048 x 4/16 are not run (8k-32k tokens a pass take minutes per run per backend on 2 cores).\n\
         - Inputs: the same token ids everywhere (`bench_ids`: row r of n tokens), b rows per pass; \
         median of 3 runs after a warm-up (1 run for passes of 4096+ tokens), two rounds alternating \
         ours and theirs (A B A B), the median over both rounds.\n\
         - Threads: {threads} for every backend (rewardlens `--threads`, `torch.set_num_threads`, onnxruntime `intraOpNumThreads`).\n\
         - Machine: {cpu}, {} logical CPUs.\n\
         - Peers: PyTorch/transformers {} (f32, the reference users run); {}.\n\n\
         Tokens/s (higher is better) and ratios ours/peer (above 1: rewardlens is faster):\n\n\
         | tokens x responses | rewardlens f32 | PyTorch f32 | f32 / PyTorch | rewardlens q8_0 | transformers.js q8 (Node) | q8_0 / transformers.js |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        versions.trim(),
        meta.get("transformers.js").cloned().unwrap_or_else(|| "transformers.js not run".into()),
    );
    for &(n, b) in &WORKLOADS {
        let (f, t) = (get("rewardlens f32", n, b), get("PyTorch f32", n, b));
        let (q, j) = (get("rewardlens q8_0", n, b), get("transformers.js q8 (Node)", n, b));
        md.push_str(&format!(
            "| {n} x {b} | {} | {} | {} | {} | {} | {} |\n",
            tps(f, n, b),
            tps(t, n, b),
            ratio(f, t),
            tps(q, n, b),
            tps(j, n, b),
            ratio(q, j)
        ));
    }
    md.push_str(&format!(
        "\nIn headless Chromium, one thread each (the page is not cross-origin isolated, so neither engine \
         gets wasm threads), batch 1, tokens/s; peer: {}:\n\n\
         | tokens | rewardlens f32 (wasm) | rewardlens q8_0 (wasm) | transformers.js q8 (WASM) | f32 / transformers.js | q8_0 / transformers.js |\n\
         |---|---:|---:|---:|---:|---:|\n",
        meta.get("transformers.js (Chromium)").cloned().unwrap_or_else(|| "transformers.js not run".into())
    ));
    for n in BROWSER_LENGTHS {
        let (f, q) = (get("rewardlens f32 (Chromium)", n, 1), get("rewardlens q8_0 (Chromium)", n, 1));
        let j = get("transformers.js q8 (Chromium)", n, 1);
        md.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} |\n",
            tps(f, n, 1),
            tps(q, n, 1),
            tps(j, n, 1),
            ratio(f, j),
            ratio(q, j)
        ));
    }
    md.push_str("\nReproduce:\n\n```sh\npython -m venv ~/rl-venv && ~/rl-venv/bin/pip install torch transformers \"optimum[onnx]\" onnxruntime\nPYTHON=~/rl-venv/bin/python cargo xtask bench-peers 2\n```\n");
    md.push_str(
        "\nNot in these tables yet (the harness grows with them): WebGPU (ours and transformers.js; only a \
         software adapter here), `rewardlens serve` under concurrent load (README, remote section), Candle's own qwen3 model code, \
         Q4 natively, time to first score (cold and cached) and peak memory per backend, and prompt KV reuse \
         across responses.\n",
    );
    if !missing.is_empty() {
        md.push_str("\nPeers not run here:\n\n");
        for m in missing {
            md.push_str(&format!("- {m}\n"));
        }
    }
    std::fs::write(root().join("docs/PERFORMANCE.md"), &md)?;
    println!("{md}");
    Ok(())
}
