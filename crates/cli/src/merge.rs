//! `rewardlens merge`: the outputs of `score --shard I/N` runs joined back in input order,
//! checking that every input line is there exactly once.

use anyhow::{bail, Context, Result};
use rewardlens_models::records::{input_key, parse_record};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The JSONL the shards were scored from.
    #[arg(long)]
    input: PathBuf,
    /// The merged JSONL (written whole or not at all; never over an existing file).
    #[arg(long)]
    output: PathBuf,
    /// The shard outputs, any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

pub fn run(args: MergeArgs) -> Result<ExitCode> {
    // Every shard line by the input it answers (several for an input repeated in the file).
    let mut scored: HashMap<String, VecDeque<String>> = HashMap::new();
    let mut shard_lines = 0usize;
    for path in &args.shards {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            bail!("{} ends in a partial line: that run was interrupted; finish it with --resume first", path.display());
        }
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let obj: Map<String, Value> = serde_json::from_str(line)
                .with_context(|| format!("{} line {} is not a JSON object", path.display(), i + 1))?;
            scored.entry(input_key(obj)).or_default().push_back(line.to_owned());
            shard_lines += 1;
        }
    }
    let input = std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let (mut out, mut missing, mut unreadable) = (String::new(), Vec::new(), 0usize);
    for (i, line) in input.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        // Lines `score` cannot read are skipped there, so they are in no shard.
        let Ok(obj) = serde_json::from_str::<Map<String, Value>>(line) else {
            unreadable += 1;
            continue;
        };
        if parse_record(&obj).is_err() {
            unreadable += 1;
            continue;
        }
        match scored.get_mut(&input_key(obj)).and_then(VecDeque::pop_front) {
            Some(l) => {
                out.push_str(&l);
                out.push('\n');
            }
            None => missing.push(i + 1),
        }
    }
    let extra: usize = scored.values().map(VecDeque::len).sum();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(usize::to_string).collect();
        bail!(
            "{} input line(s) are in no shard output (lines {}{}): a shard is missing or unfinished (--resume it)",
            missing.len(),
            shown.join(", "),
            if missing.len() > 10 { ", ..." } else { "" }
        );
    }
    if extra > 0 {
        bail!("{extra} shard line(s) answer no input line, or an input line twice: shards overlap or come from another input");
    }
    let dir = args.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", args.output.display()))?;
    tmp.write_all(out.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(&args.output).map_err(|e| {
        anyhow::anyhow!("cannot write {}: {} (an existing file is never replaced)", args.output.display(), e.error)
    })?;
    eprintln!(
        "{shard_lines} lines from {} shard(s) merged in input order into {}{}",
        args.shards.len(),
        args.output.display(),
        if unreadable > 0 {
            format!(" ({unreadable} unreadable input line(s) left out, as score skips them)")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
