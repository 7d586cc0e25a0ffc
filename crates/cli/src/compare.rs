//! `rewardlens compare`: how far one scored JSONL (a quantized model, another RM) is from a
//! reference scoring of the same input: score error, rank agreement within each prompt's
//! responses, and pair-order agreement.

use anyhow::{bail, Context, Result};
use rewardlens_core::{kendall_tau_b, pair_order_agreement, spearman};
use rewardlens_models::records::ERROR_FIELD;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Output of `rewardlens score` with the reference model.
    #[arg(long)]
    reference: PathBuf,
    /// Output of `rewardlens score` on the same input with the model under test.
    #[arg(long)]
    candidate: PathBuf,
    /// Print the metrics as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The scores of one output line, in a fixed order (a preference list: chosen, then rejected).
fn line_scores(v: &Value) -> Option<Vec<f32>> {
    let f = |x: &Value| x.as_f64().map(|x| x as f32);
    if let Some(s) = v.get("scores") {
        return s.as_array()?.iter().map(f).collect();
    }
    if let (Some(c), Some(r)) = (v.get("chosen_scores"), v.get("rejected_scores")) {
        return c.as_array()?.iter().chain(r.as_array()?).map(f).collect();
    }
    if let (Some(c), Some(r)) = (v.get("chosen_score"), v.get("rejected_score")) {
        return Some(vec![f(c)?, f(r)?]);
    }
    v.get("score").and_then(f).map(|s| vec![s])
}

/// Each line's scores, or None for a line `rewardlens score` could not score (`error`).
fn read(path: &PathBuf) -> Result<Vec<Option<Vec<f32>>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(&l?).with_context(|| format!("{} line {}", path.display(), i + 1))?;
            if v.get(ERROR_FIELD).is_some() {
                return Ok(None);
            }
            line_scores(&v).map(Some).with_context(|| format!("{} line {}: no scores", path.display(), i + 1))
        })
        .collect()
}

pub fn run(args: CompareArgs) -> Result<ExitCode> {
    let (r, c) = (read(&args.reference)?, read(&args.candidate)?);
    if r.len() != c.len() {
        bail!("{} has {} lines but {} has {}", args.reference.display(), r.len(), args.candidate.display(), c.len());
    }
    let (mut n, mut max_err, mut sum_err) = (0usize, 0f64, 0f64);
    let (mut rho, mut tau, mut lists) = (0f64, 0f64, 0usize);
    let (mut same, mut pairs, mut failed) = (0usize, 0usize, 0usize);
    for (i, (a, b)) in r.iter().zip(&c).enumerate() {
        let (Some(a), Some(b)) = (a, b) else {
            // Unscored on either side: nothing to compare.
            failed += 1;
            continue;
        };
        if a.len() != b.len() {
            bail!("line {}: {} reference scores, {} candidate scores", i + 1, a.len(), b.len());
        }
        for (x, y) in a.iter().zip(b) {
            let e = (*x as f64 - *y as f64).abs();
            max_err = max_err.max(e);
            sum_err += e;
            n += 1;
        }
        if let (Some(s), Some(t)) = (spearman(a, b), kendall_tau_b(a, b)) {
            rho += s;
            tau += t;
            lists += 1;
        }
        let (s, p) = pair_order_agreement(a, b);
        same += s;
        pairs += p;
    }
    let mean_err = sum_err / n.max(1) as f64;
    let agree = same as f64 / pairs.max(1) as f64;
    let (rho, tau) = (rho / lists.max(1) as f64, tau / lists.max(1) as f64);
    if args.json {
        let v = serde_json::json!({
            "sequences": n, "max_abs_error": max_err, "mean_abs_error": mean_err,
            "spearman": rho, "kendall": tau, "ranked_lists": lists,
            "pair_agreement": agree, "pairs": pairs, "lines_with_error": failed,
        });
        println!("{v}");
    } else {
        println!(
            "{n} sequences: max |error| {max_err:.4}, mean |error| {mean_err:.4}; over {lists} response lists: \
             Spearman {rho:.4}, Kendall {tau:.4}; pair order agreement {same}/{pairs} = {:.2}%",
            100.0 * agree
        );
        if failed > 0 {
            println!("{failed} line(s) left out: `{ERROR_FIELD}` on either side");
        }
    }
    Ok(ExitCode::SUCCESS)
}
