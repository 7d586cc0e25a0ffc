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
        md.push_str(&browser_section(notes, w, false));
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

/// Median tokens/s of a browser row.
fn web_tps(results: &Results, label: &str, n: usize, b: usize) -> Option<f64> {
    secs(results, label, n, b).map(|s| (n * b) as f64 / s)
}

/// The browser section of docs/PERFORMANCE.md, from one run of the browser rows.
pub fn browser_section(notes: &Notes, w: &BrowserResults, alone: bool) -> String {
    let n = browser::pipeline_width();
    let mut md = format!(
        "\n## In the browser (headless Chromium)\n\n\
         {}Peer: {}. Every configuration in a fresh browser, in turn, {} for the short workloads and \
         one timed pass after a warm-up from 2,048 tokens a pass; medians. Plain page: not cross-origin \
         isolated, so transformers.js (onnxruntime-web) gets 1 wasm thread and we get our pipeline of engine \
         workers (N = {n} here, one per core). Isolated page (COOP/COEP, `cargo xtask serve --isolated`): \
         transformers.js gets N wasm threads. q8_0 rows load the GGUF and run our int8 kernels \
         (`rewardlens-kernels`); `simd128` and `relaxed-simd` are the two engine worker builds (`?kernel=`). \
         Workload `T x B`: B sequences of T tokens a pass; with B = 4 the first three quarters are one shared \
         prompt. WebGPU is SwiftShader (a CPU software adapter) here: those rows show that both run, not GPU \
         speed.\n\n",
        if alone {
            "Written by `cargo xtask bench-browser`, one run for every row of this section (the native \
             sections above come from the last full `cargo xtask bench`, possibly on another machine). "
        } else {
            ""
        },
        notes.versions.get("transformers.js (Chromium)").cloned().unwrap_or_else(|| "not run".into()),
        if w.short_rounds == 1 { "one round" } else { "two rounds" }
    );
    let mut workloads: Vec<(usize, usize)> = w.results.keys().map(|(_, n, b)| (*n, *b)).collect();
    workloads.sort_by_key(|&(n, b)| (b, n));
    workloads.dedup();
    let names: Vec<String> = workloads.iter().map(|&(n, b)| format!("{n} x {b}")).collect();
    md.push_str("Tokens/s (higher is better):\n\n");
    let mut head = vec!["backend"];
    head.extend(names.iter().map(String::as_str));
    md.push_str(&header(&head, 1));
    for l in browser::CPU_LABELS.iter().chain(&browser::WEBGPU_LABELS) {
        let mut cells = vec![l.to_string()];
        cells.extend(workloads.iter().map(|&(n, b)| tps(&w.results, l, n, b)));
        md.push_str(&row(&cells));
    }
    md.push_str("\nRatios, measured in the same run (above 1: rewardlens is faster):\n\n");
    md.push_str(&header(&head, 1));
    let pairs = [
        (browser::OURS_Q8_PIPE, browser::TJS_WASM, "plain page: N workers / transformers.js 1 thread"),
        (browser::OURS_Q8, browser::TJS_WASM, "one worker (relaxed) / transformers.js 1 thread"),
        (browser::OURS_Q8_SIMD, browser::TJS_WASM, "one worker (simd128) / transformers.js 1 thread"),
        (browser::OURS_Q8_ISOLATED, browser::TJS_ISOLATED, "isolated page: N workers / transformers.js N threads"),
        (browser::OURS_Q8, browser::OURS_F32, "our q8_0 (relaxed, 1 worker) / our f32"),
    ];
    for (ours, theirs, what) in pairs {
        let mut cells = vec![what.to_string()];
        cells.extend(workloads.iter().map(|&(n, b)| ratio(&w.results, ours, theirs, n, b)));
        md.push_str(&row(&cells));
    }

    // Issue 17's targets, computed from the figures above (never tuned).
    let r = |ours: &str, theirs: &str, n: usize, b: usize| -> Option<f64> {
        Some(web_tps(&w.results, ours, n, b)? / web_tps(&w.results, theirs, n, b)?)
    };
    let all = |ours: &str, theirs: &str, lens: &[usize], goal: f64| -> String {
        let got: Vec<Option<f64>> = lens.iter().map(|&n| r(ours, theirs, n, 1)).collect();
        let shown: Vec<String> = lens
            .iter()
            .zip(&got)
            .map(|(n, g)| format!("{n}: {}", g.map_or("—".into(), |g| format!("{g:.2}×"))))
            .collect();
        let verdict = if got.iter().any(Option::is_none) {
            "not measured"
        } else if got.iter().all(|g| g.unwrap() >= goal) {
            "met"
        } else {
            "not met"
        };
        format!("{} ({verdict})", shown.join(", "))
    };
    let mem = match (w.peaks.get(browser::OURS_Q8_PIPE), w.peaks.get(browser::OURS_Q8)) {
        (Some(p), Some(o)) => {
            let x = p / o;
            format!("{p:.0} / {o:.0} MiB = {x:.2}× ({})", if x <= 1.15 { "met" } else { "not met" })
        }
        _ => "not measured".into(),
    };
    md.push_str("\nIssue 17's targets against these figures (one sequence a pass):\n\n");
    md.push_str(&format!(
        "- Plain page, {n} cores: ≥ 2.0× transformers.js at 512 and 2048 tokens: {}\n",
        all(browser::OURS_Q8_PIPE, browser::TJS_WASM, &[512, 2048], 2.0)
    ));
    md.push_str(&format!(
        "- One worker, one thread each: ≥ 1.3× transformers.js: {}\n",
        all(browser::OURS_Q8, browser::TJS_WASM, &[64, 512, 2048], 1.3)
    ));
    md.push_str(&format!(
        "- Cross-origin isolated, equal threads: ≥ 1.2× transformers.js: {}\n",
        all(browser::OURS_Q8_ISOLATED, browser::TJS_ISOLATED, &[64, 512, 2048], 1.2)
    ));
    md.push_str(&format!(
        "- q8_0 ≥ 1.8× our f32: {}\n",
        all(browser::OURS_Q8, browser::OURS_F32, &[64, 512, 2048], 1.8)
    ));
    md.push_str(&format!("- Memory, N workers within 1.15× one worker's peak (q8_0): {mem}\n"));

    md.push_str(
        "\nTime to first score (seconds from opening the page to the first scores of the first workload; \
         cold: a fresh profile, weights fetched over HTTP from a server on the same machine; cached: the page \
         opened again, weights from the browser's Cache Storage) and peak memory (RSS of Chromium's largest \
         renderer, which holds the page and its workers, plus its GPU process, MiB, read from /proc):\n\n",
    );
    md.push_str(&header(&["backend", "cold", "cached", "peak RSS MiB"], 1));
    for l in browser::CPU_LABELS.iter().chain(&browser::WEBGPU_LABELS) {
        md.push_str(&row(&[
            l.to_string(),
            first(&w.first, l, true),
            first(&w.first, l, false),
            w.peaks.get(*l).map_or("—".into(), |m| format!("{m:.0}")),
        ]));
    }
    if !w.profiles.is_empty() {
        md.push_str(
            "\nWhere one engine worker's time goes (the page's `rewardlens_models::profile` over one timed \
             pass of one sequence: ms per kind of op, exclusive, and its share of the pass):\n\n",
        );
        md.push_str(&header(&["backend", "tokens", "op", "ms", "share"], 3));
        for ((label, n), ops) in &w.profiles {
            let total: f64 = ops.iter().map(|(_, ms)| ms).sum();
            for (op, ms) in ops {
                md.push_str(&row(&[
                    label.clone(),
                    n.to_string(),
                    op.clone(),
                    format!("{ms:.1}"),
                    format!("{:.0}%", 100.0 * ms / total.max(1e-9)),
                ]));
            }
        }
    }
    if alone && !notes.missing.is_empty() {
        md.push_str("\nBrowser rows not measured, and why:\n\n");
        for m in &notes.missing {
            md.push_str(&format!("- {m}\n"));
        }
    }
    md
}

/// `old` with its browser section (from `## In the browser` to the line before `Reproduce:`)
/// replaced by `section`; appended when there is none.
pub fn splice_browser_section(old: &str, section: &str) -> String {
    let Some(start) = old.find("\n## In the browser") else {
        return format!("{}{section}", old.trim_end());
    };
    let end = old[start + 1..].find("\nReproduce:").map_or(old.len(), |e| start + 1 + e);
    format!("{}{section}{}", &old[..start], &old[end..])
}
