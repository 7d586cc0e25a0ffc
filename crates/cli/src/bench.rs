//! `rewardlens bench`: tokens/s, time to first score and peak memory of the forward pass on
//! fixed token ids, the same ids `tests/bench/torch_bench.py` feeds PyTorch so the two numbers
//! compare.

use crate::{source, ModelArgs};
use anyhow::Result;
use rewardlens_models::profile::{self, Profile};
use rewardlens_models::synthetic::bench_ids_shared;
use rewardlens_models::Padding;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Sequence lengths to measure.
    #[arg(long, value_delimiter = ',', default_value = "128,512,2048")]
    lengths: Vec<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions per length; the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Untimed passes before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Leading tokens every sequence of a pass shares (a prompt answered `--batch` ways).
    #[arg(long, default_value_t = 0)]
    shared: usize,
    /// Run every sequence whole even when they share a prompt (to measure what reuse saves).
    #[arg(long)]
    no_prefix_reuse: bool,
    /// After each length's timed passes, one more pass timed per kind of operation (matmul,
    /// attention, rmsnorm, …), printed as a table after the speeds.
    #[arg(long)]
    profile: bool,
}

/// One column per length: milliseconds and share of the pass per kind of operation.
fn print_profiles(profiles: &[(usize, Profile)]) {
    let head: Vec<String> = profiles.iter().map(|(len, _)| format!("{len} tokens: ms (share)")).collect();
    println!("\n| operation | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(profiles.len()));
    let names: Vec<String> = profiles[0].1.rows().into_iter().map(|(name, _)| name).collect();
    for (i, name) in names.iter().enumerate() {
        let cells: Vec<String> = profiles
            .iter()
            .map(|(_, p)| {
                let ms = p.rows()[i].1;
                format!("{ms:.1} ({:.0}%)", 100.0 * ms / p.total_ms.max(f64::MIN_POSITIVE))
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let totals: Vec<String> = profiles.iter().map(|(_, p)| format!("{:.1}", p.total_ms)).collect();
    println!("| whole pass | {} |", totals.join(" | "));
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut model = source::load_model(&args.model)?;
    if args.no_prefix_reuse {
        model.set_prefix_reuse(None);
    }
    let vocab = model.config().vocab_size;
    println!(
        "model {} ({}, linear layers: {}), loaded in {:.2}s, threads {}",
        args.model.model,
        model.config().architecture.name(),
        model.linear_kernel(),
        t0.elapsed().as_secs_f64(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())
    );
    println!("| tokens | batch | median s | tokens/s |");
    println!("|---:|---:|---:|---:|");
    let mut first_score = None;
    let mut profiles: Vec<(usize, Profile)> = Vec::new();
    for &len in &args.lengths {
        let rows: Vec<Vec<u32>> = (0..args.batch).map(|r| bench_ids_shared(len, r, vocab, args.shared)).collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut times = Vec::new();
        for i in 0..args.warmup + args.iters.max(1) {
            let t = Instant::now();
            model.forward_padded(&refs, Padding::Right)?;
            if i >= args.warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            // From the start (model load included) to the first pass's scores.
            first_score.get_or_insert(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = times[times.len() / 2];
        println!("| {len} | {} | {median:.3} | {:.1} |", args.batch, (len * args.batch) as f64 / median);
        if args.profile {
            let (out, p) = profile::record(profile::native_clock, || model.forward_padded(&refs, Padding::Right));
            out?;
            profiles.push((len, p));
        }
    }
    if !profiles.is_empty() {
        print_profiles(&profiles);
    }
    if let Some(s) = first_score {
        println!("first score after: {s:.2}s");
    }
    if let Some(m) = peak_rss_mib() {
        println!("peak RSS: {m:.0} MiB");
    }
    if let Some(m) = model.device_memory() {
        println!("GPU memory: {m}");
    }
    Ok(ExitCode::SUCCESS)
}
