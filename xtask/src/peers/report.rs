//! docs/PERFORMANCE.md from one `cargo xtask bench` run.

use super::browser::{self, BrowserResults};
use super::load::{self, LoadResult};
use super::*;

/// Label -> (cold page cache?, sample) of the first-score runs.
pub type FirstScores = BTreeMap<String, Vec<(bool, Sample)>>;

const NATIVE: [&str; 7] = [F32, F32_NO_REUSE, Q8, Q4, CANDLE, TORCH, TJS_NODE];

fn secs(results: &Results, label: &str, n: usize, b: usize) -> Option<f64> {
    median(&results.get(&(label.to_owned(), n, b))?.iter().map(|s| s.secs).collect::<Vec<_>>())
}

fn tps(results: &Results, label: &str, n: usize, b: usize) -> String {
    secs(results, label, n, b).map_or("—".into(), |s| format!("{:.0}", (n * b) as f64 / s))
}

/// theirs / ours in time = ours / theirs in speed: above 1, rewardlens is faster.
fn ratio(results: &Results, ours: &str, theirs: &str, n: usize, b: usize) -> String {
    match (secs(results, ours, n, b), secs(results, theirs, n, b)) {
        (Some(a), Some(p)) => format!("{:.2}", p / a),
        _ => "—".into(),
    }
}

fn peak(results: &Results, label: &str, n: usize, b: usize) -> String {
    let v: Vec<f64> =
        results.get(&(label.to_owned(), n, b)).map_or(vec![], |s| s.iter().filter_map(|s| s.peak_mib).collect());
    v.into_iter().reduce(f64::max).map_or("—".into(), |m| format!("{m:.0}"))
}

fn first(first: &FirstScores, label: &str, cold: bool) -> String {
    let v: Vec<f64> = first
        .get(label)
        .map_or(vec![], |s| s.iter().filter(|(c, _)| *c == cold).filter_map(|(_, s)| s.first_s).collect());
    median(&v).map_or("—".into(), |s| format!("{s:.1}"))
}

fn first_peak(first: &FirstScores, label: &str) -> String {
    first
        .get(label)
        .and_then(|s| s.iter().filter_map(|(_, s)| s.peak_mib).reduce(f64::max))
        .map_or("—".into(), |m| format!("{m:.0}"))
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn header(cells: &[&str], right_from: usize) -> String {
    let mut s = row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    let rule: Vec<String> =
        (0..cells.len()).map(|i| if i < right_from { "---".into() } else { "---:".into() }).collect();
    s.push_str(&row(&rule));
    s
}

fn workload(n: usize, b: usize) -> String {
    match shared_prompt(n, b) {
        0 => format!("{n} x {b}"),
        s => format!("{n} x {b} ({s} shared)"),
    }
}

pub fn write(
    notes: &Notes,
    results: &Results,
    first_scores: &FirstScores,
    serve: Option<&LoadResult>,
    web: Option<&BrowserResults>,
) -> Result<String> {
    let threads = &notes.threads;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(String::new(), |kb| format!(", {:.0} GiB", kb / (1 << 20) as f64));
    let version = |label: &str| notes.versions.get(label).cloned().unwrap_or_else(|| "not run".into());
    let mut md = format!(
        "# Performance against the alternatives\n\n\
         Written by `cargo xtask bench {threads}`; every number below comes from that one run.\n\n\
         - Model: random weights in the real Skywork-Reward-V2-Qwen3-0.6B shape (`rewardlens random-model` with \
         `tests/fixtures/shapes/skywork-reward-v2-qwen3-0.6b.json` and the Qwen3 tokenizer, never committed); \
         its ONNX export for transformers.js by `tests/bench/peers/export_onnx.py` (optimum, then onnxruntime \
         dynamic int8 = transformers.js' q8); GGUF q8_0/q4_k by `rewardlens quantize`.\n\
         - Workloads: sequences of 64, 512 and 2048 tokens, one response or 4 or 16 responses to one prompt \
         (the first three quarters of every sequence are the shared prompt, the same ids in every row: \
         `bench_ids_shared`). Every backend gets the same token ids, all rows in one pass. tokens/s counts every \
         sequence's tokens, so reusing the prompt shows as more tokens/s.\n\
         - Timing: two rounds, every backend in turn per workload (A B C … A B C …); per round a warm-up and 3 timed \
         passes (1 from 4,096 tokens a pass); passes of 8,192+ tokens run once, in one round, without warm-up \
         (minutes each on 2 cores); the median over the rounds.\n\
         - Threads: {threads} for every native backend (rewardlens `--threads`, Candle `RAYON_NUM_THREADS`, \
         `torch.set_num_threads`, onnxruntime `intraOpNumThreads`); one in the browser.\n\
         - Machine: {cpu}, {} logical CPUs{mem_gib}; no GPU (WebGPU on SwiftShader).\n\
         - Peers: {} ({}); {} ({}); {} ({}).\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        TORCH,
        version(TORCH),
        CANDLE,
        version(CANDLE),
        TJS_NODE,
        version(TJS_NODE),
    );

    md.push_str("## Native, tokens/s (higher is better)\n\n");
    md.push_str(&header(&[&["tokens x responses"][..], &NATIVE[..]].concat(), 1));
    for &(n, b) in &WORKLOADS {
        let mut cells = vec![workload(n, b)];
        cells.extend(NATIVE.iter().map(|l| tps(results, l, n, b)));
        md.push_str(&row(&cells));
    }
    md.push_str(
        "\nCandle's qwen3 is left out of passes of 8,192+ tokens: at its speed here (54–200 tokens/s) \
         each would take minutes to tens of minutes.\n",
    );
    md.push_str(
        "\nRatios (above 1: rewardlens is faster). *Reuse* is the prompt computed once per batch \
         against every sequence run whole, the same engine otherwise (issue 10, item 5):\n\n",
    );
    md.push_str(&header(
        &[
            "tokens x responses",
            "f32 / PyTorch",
            "f32 / Candle",
            "q8_0 / transformers.js q8",
            "q4_k / transformers.js q8",
            "f32 reuse on / off",
        ],
        1,
    ));
    for &(n, b) in &WORKLOADS {
        md.push_str(&row(&[
            workload(n, b),
            ratio(results, F32, TORCH, n, b),
            ratio(results, F32, CANDLE, n, b),
            ratio(results, Q8, TJS_NODE, n, b),
            ratio(results, Q4, TJS_NODE, n, b),
            ratio(results, F32, F32_NO_REUSE, n, b),
        ]));
    }

    md.push_str("\n## Peak memory (RSS of the process, MiB)\n\n");
    md.push_str(&header(&[&["tokens x responses"][..], &NATIVE[..]].concat(), 1));
    for &(n, b) in &WORKLOADS {
        let mut cells = vec![workload(n, b)];
        cells.extend(NATIVE.iter().map(|l| peak(results, l, n, b)));
        md.push_str(&row(&cells));
    }

    md.push_str(
        "\n## Time to first score (seconds, 64 tokens, one response)\n\n\
         From process start (Python: before `import torch`; Node: process start) to the first scores, \
         model load included. Cold: the OS page cache emptied first (`/proc/sys/vm/drop_caches`), so the \
         weights come from disk; cached: the same run again.\n\n",
    );
    md.push_str(&header(&["backend", "cold", "cached", "peak RSS MiB"], 1));
    for l in NATIVE.iter().filter(|l| **l != F32_NO_REUSE) {
        md.push_str(&row(&[
            l.to_string(),
            first(first_scores, l, true),
            first(first_scores, l, false),
            first_peak(first_scores, l),
        ]));
    }

    md.push_str(&format!(
        "\n## `rewardlens serve` under load\n\n\
         {} clients at once, each posting one {}-token sequence (token ids, {} of them the prompt all share) \
         to vLLM's `/classify` on `rewardlens --threads {threads} serve` (f32); two rounds after a warm-up request. \
         The server batches concurrent requests and reuses their prompt. Peers for the same 16 sequences in one \
         in-process pass from the table above; vLLM and TEI servers are not installable here (vLLM's wheels \
         need CUDA, TEI ships as Docker images and GitHub binaries).\n\n",
        load::CLIENTS,
        load::TOKENS,
        shared_prompt(load::TOKENS, load::CLIENTS)
    ));
    match serve {
        Some(s) => {
            let wall = median(&s.rounds).unwrap_or(f64::NAN);
            let tokens = (load::CLIENTS * load::TOKENS) as f64;
            let mut lat = s.latencies.clone();
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
            let vs = |label: &str| {
                secs(results, label, load::TOKENS, load::CLIENTS).map_or("—".into(), |t| format!("{:.2}", t / wall))
            };
            md.push_str(&header(
                &[
                    "round wall s",
                    "tokens/s",
                    "latency p50 s",
                    "latency p95 s",
                    "peak RSS MiB",
                    "vs rewardlens f32 in-process",
                    "vs PyTorch f32",
                    "vs transformers.js q8",
                ],
                0,
            ));
            md.push_str(&row(&[
                format!("{wall:.2}"),
                format!("{:.0}", tokens / wall),
                format!("{:.2}", pct(0.5)),
                format!("{:.2}", pct(0.95)),
                s.peak_mib.map_or("—".into(), |m| format!("{m:.0}")),
                vs(F32),
                vs(TORCH),
                vs(TJS_NODE),
            ]));
        }
        None => md.push_str("Not run (see below).\n"),
    }

    if let Some(w) = web {
        md.push_str(&format!(
            "\n## In the browser (headless Chromium, one sequence per pass, one thread)\n\n\
             The page is not cross-origin isolated, so neither engine gets wasm threads. Peer: {}. WebGPU is \
             SwiftShader (a CPU software adapter, no `shader-f16`) here: those rows show that both run, not GPU speed, \
             and stop at 64 tokens (a few tokens/s).\n\n",
            notes.versions.get("transformers.js (Chromium)").cloned().unwrap_or_else(|| "not run".into())
        ));
        let labels =
            [browser::OURS_F32, browser::OURS_Q8, browser::TJS_WASM, browser::OURS_WEBGPU, browser::TJS_WEBGPU];
        md.push_str(&header(
            &[
                &["tokens"][..],
                &labels[..],
                &["f32 / transformers.js", "q8_0 / transformers.js", "WebGPU / transformers.js WebGPU"][..],
            ]
            .concat(),
            1,
        ));
        for n in browser::LENGTHS {
            let mut cells = vec![n.to_string()];
            cells.extend(labels.iter().map(|l| tps(&w.results, l, n, 1)));
            cells.push(ratio(&w.results, browser::OURS_F32, browser::TJS_WASM, n, 1));
            cells.push(ratio(&w.results, browser::OURS_Q8, browser::TJS_WASM, n, 1));
            cells.push(ratio(&w.results, browser::OURS_WEBGPU, browser::TJS_WEBGPU, n, 1));
            md.push_str(&row(&cells));
        }
        md.push_str(
            "\nTime to first score in the browser (seconds from opening the page to the first 64-token scores; \
             cold: a fresh profile, weights fetched over HTTP from a server on the same machine; cached: the \
             page opened again, weights from the browser's Cache Storage) and peak memory (RSS of Chromium's \
             largest renderer plus its GPU process, MiB, read from /proc: a page can read neither):\n\n",
        );
        md.push_str(&header(&["backend", "cold", "cached", "peak RSS MiB"], 1));
        for l in labels {
            md.push_str(&row(&[
                l.to_string(),
                first(&w.first, l, true),
                first(&w.first, l, false),
                w.peaks.get(l).map_or("—".into(), |m| format!("{m:.0}")),
            ]));
        }
    }

    md.push_str(&format!(
        "\nReproduce:\n\n```sh\npython -m venv ~/rl-venv && ~/rl-venv/bin/pip install torch transformers \"optimum[onnx]\" onnxruntime\n\
         PYTHON=~/rl-venv/bin/python cargo xtask bench {threads}\n```\n\n\
         One backend and workload by hand: `rewardlens --threads 2 bench --model target/bench-models/skywork-rand \
         --lengths 512 --batch 16 --shared 384` (add `--no-prefix-reuse` for the before), \
         `python tests/bench/torch_bench.py --model target/bench-models/skywork-rand --lengths 512 --batch 16 --shared 384`.\n"
    ));
    if !notes.missing.is_empty() {
        md.push_str("\nNot measured, and why:\n\n");
        for m in &notes.missing {
            md.push_str(&format!("- {m}\n"));
        }
    }
    Ok(md)
}
