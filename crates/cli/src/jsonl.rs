//! `rewardlens score`: JSONL in, the same objects with scores added out.
//!
//! Output safety: lines are written and flushed one by one in input order, so an interrupted
//! run leaves only whole lines (plus at most one partial line that `--resume` cuts off).
//! An existing output file is never overwritten without `--resume`.

use crate::backend::{Backend, BackendArgs, Prepared};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_core::StepSplit;
use rewardlens_models::prm::{problem_and_answer, token_rewards, StepConvention, StepScores};
use rewardlens_models::records::{annotate, annotate_steps, annotate_tokens, input_key, parse_record, Record};
use rewardlens_models::LengthPolicy;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit status when some input lines could not be scored and were skipped.
const EXIT_SKIPPED: u8 = 3;

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// JSONL input: one conversation, instruction/response, prompt/responses or preference pair per line.
    #[arg(long)]
    input: PathBuf,
    /// JSONL output: each input object with its scores added.
    #[arg(long)]
    output: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Token limit per sequence (default and ceiling: the model's max_position_embeddings).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Cut over-long sequences to the limit (reported as `truncated_tokens`) instead of failing them.
    #[arg(long)]
    truncate: bool,
    /// Abort at the first line that cannot be scored instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    /// Continue an interrupted run: keep OUTPUT's complete lines and skip the inputs they hold.
    #[arg(long)]
    resume: bool,
    /// Step rewards with this process-reward convention: qwen (Qwen2.5-Math-PRM), shepherd
    /// (math-shepherd), value (Skywork-o1 value head). Qwen2ForProcessRewardModel, causal LMs and
    /// Qwen2ForPrmModel are recognized without it; token classifiers need it.
    #[arg(long)]
    prm: Option<String>,
    /// Per-step scores from an outcome RM: its score at the last token of each step (an
    /// approximation: the template's closing tokens are missing after a cut).
    #[arg(long)]
    prefix_scores: bool,
    /// How answers are split into steps: blank (blank lines), lines, markers (`Step N:`),
    /// sep:<text> or regex:<pattern>.
    #[arg(long, default_value = "blank")]
    step_split: String,
    /// `first_bad_step` is the first step scored below this.
    #[arg(long, default_value_t = 0.5)]
    step_threshold: f32,
    /// Add `tokens` and `token_scores` (the head read at every token).
    #[arg(long)]
    token_scores: bool,
}

/// What step and token scoring were asked for.
struct StepOptions {
    convention: Option<StepConvention>,
    split: StepSplit,
    threshold: f32,
    tokens: bool,
}

impl StepOptions {
    fn new(args: &ScoreArgs, backend: &Backend) -> Result<Option<Self>> {
        let config = match backend {
            Backend::Local(m) => Some(m.config()),
            Backend::Remote { checkpoint, .. } => checkpoint.as_ref().map(|(c, _)| c),
        };
        let declared = config.and_then(StepConvention::of_architecture);
        let convention = match (&args.prm, args.prefix_scores) {
            (Some(_), true) => bail!("--prm and --prefix-scores exclude each other"),
            (Some(name), false) => Some(StepConvention::parse(name)?),
            (None, true) => Some(StepConvention::Prefix),
            (None, false) => declared,
        };
        if convention.is_none() && !args.token_scores {
            return Ok(None);
        }
        let Some(config) = config else {
            bail!(
                "step and token scores over --endpoint need --template <the served model's folder or Hub repo>, \
                 whose tokenizer lays out the steps"
            );
        };
        if let Some(c) = &convention {
            c.check(config)?;
            if matches!(backend, Backend::Remote { .. }) && *c == StepConvention::Prefix {
                bail!("prefix scores need the model here: vLLM's per-token task is for token classifiers");
            }
        }
        Ok(Some(Self {
            convention,
            split: StepSplit::parse(&args.step_split)?,
            threshold: args.step_threshold,
            tokens: args.token_scores,
        }))
    }

    /// The encoder and the head at every position of `ids`: the model here, or vLLM's
    /// `token_classify` on the endpoint.
    fn positions(backend: &Backend, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        match backend {
            Backend::Local(m) => Ok(m.forward_positions(ids)?),
            Backend::Remote { client, runtime, .. } => {
                Ok(runtime.block_on(client.token_rows(&[ids.to_vec()]))?.remove(0))
            }
        }
    }

    /// Adds step and token fields for each sequence of `job`.
    fn annotate(
        &self,
        backend: &Backend,
        obj: &mut Map<String, Value>,
        job: &Record,
        policy: &LengthPolicy,
    ) -> Result<()> {
        let inputs = match backend {
            Backend::Local(m) => m.inputs(),
            Backend::Remote { checkpoint, .. } => &checkpoint.as_ref().expect("checked in new").1,
        };
        let convs = job.conversations();
        if let Some(c) = &self.convention {
            let mut all = Vec::with_capacity(convs.len());
            for conv in &convs {
                let (_, answer) = problem_and_answer(conv)?;
                let steps = self.split.split(&answer)?;
                let input = inputs.encode_steps(c, conv, &steps, policy)?;
                let rows = Self::positions(backend, &input.ids)?;
                let scores = c.rewards(&rows, &input.positions);
                all.push(StepScores { convention: c.name(), steps, scores });
            }
            annotate_steps(obj, job, &all, self.threshold);
        }
        if self.tokens {
            let mut all = Vec::with_capacity(convs.len());
            for conv in &convs {
                let ids = inputs.encode(conv, policy)?.ids;
                let rows = Self::positions(backend, &ids)?;
                all.push((inputs.text_encoder().token_texts(&ids), token_rewards(self.convention.as_ref(), &rows)));
            }
            annotate_tokens(obj, job, &all);
        }
        Ok(())
    }
}

/// Opens the output for appending. With `resume`, drops a trailing partial line and returns how
/// many times each input is already present; without it, refuses to touch an existing file.
fn open_output(path: &Path, resume: bool) -> Result<(File, HashMap<String, usize>)> {
    let mut done = HashMap::new();
    if !resume {
        let f = OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists: pass --resume to continue it, or choose another --output",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
        return Ok((f, done));
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text)?;
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for (i, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let obj: Map<String, Value> = serde_json::from_slice(line).with_context(|| {
            format!("{} line {} is not a JSON object; refusing to resume into it", path.display(), i + 1)
        })?;
        *done.entry(input_key(obj)).or_insert(0) += 1;
    }
    // An interrupted write leaves at most one partial line: cut it so the next line is whole.
    f.set_len(complete as u64)?;
    f.seek(SeekFrom::End(0))?;
    Ok((f, done))
}

/// A message above the progress bar, or plainly on stderr when the bar is hidden (not a TTY).
fn report(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

#[derive(Default)]
struct Totals {
    lines: usize,
    resumed: usize,
    skipped: usize,
    sequences: usize,
    tokens: usize,
    pairs: usize,
    pairs_correct: usize,
    step_errors: usize,
}

/// Lines waiting for their batch to be scored.
struct Pending {
    lines: Vec<(Map<String, Value>, Record)>,
    inputs: Vec<Prepared>,
}

#[allow(clippy::too_many_arguments)]
fn flush_pending(
    pending: &mut Pending,
    backend: &Backend,
    steps: Option<&StepOptions>,
    policy: &LengthPolicy,
    batch_size: usize,
    out: &mut File,
    totals: &mut Totals,
    bar: &ProgressBar,
) -> Result<()> {
    if pending.lines.is_empty() {
        return Ok(());
    }
    let (scores, labels) = backend.score(std::mem::take(&mut pending.inputs), batch_size).context("scoring")?;
    let mut at = 0;
    for (mut obj, job) in pending.lines.drain(..) {
        let n = job.conversations().len();
        let s = &scores[at..at + n];
        at += n;
        annotate(&mut obj, &job, s, &labels);
        if let Some(opts) = steps {
            // A line whose steps cannot be scored keeps its scores and says why.
            if let Err(e) = opts.annotate(backend, &mut obj, &job, policy) {
                obj.insert("step_error".into(), format!("{e:#}").into());
                report(bar, format!("step scores: {e:#} (written with `step_error`)"));
                totals.step_errors += 1;
            }
        }
        if let Record::Pair(..) = job {
            totals.pairs += 1;
            totals.pairs_correct += usize::from(s[0].score() > s[1].score());
        }
        totals.sequences += n;
        totals.tokens += s.iter().map(|x| x.tokens).sum::<usize>();
        let mut line = serde_json::to_string(&obj).expect("JSON values serialize");
        line.push('\n');
        out.write_all(line.as_bytes()).context("writing output")?;
        out.flush().context("writing output")?;
        bar.inc(1);
    }
    pending.inputs.clear();
    Ok(())
}

pub fn run(args: ScoreArgs) -> Result<ExitCode> {
    let input = File::open(&args.input).with_context(|| format!("cannot open --input {}", args.input.display()))?;
    let total_lines = BufReader::new(File::open(&args.input)?).lines().count();
    let backend = Backend::open(&args.backend)?;
    let steps = StepOptions::new(&args, &backend)?;
    let (mut out, mut done) = open_output(&args.output, args.resume)?;
    let policy = LengthPolicy { max_tokens: args.max_tokens, truncate: args.truncate };

    let bar = ProgressBar::new(total_lines as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} lines {msg} (eta {eta})")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut pending = Pending { lines: Vec::new(), inputs: Vec::new() };
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let lineno = i + 1;
        let line = line.with_context(|| format!("reading {} line {lineno}", args.input.display()))?;
        if line.trim().is_empty() {
            bar.inc(1);
            continue;
        }
        totals.lines += 1;
        let parsed = (|| -> Result<(Map<String, Value>, Record, Vec<Prepared>)> {
            let obj: Map<String, Value> = serde_json::from_str(&line).context("not a JSON object")?;
            let job = parse_record(&obj)?;
            let inputs = job.conversations().iter().map(|c| backend.prepare(c, &policy)).collect::<Result<Vec<_>>>()?;
            Ok((obj, job, inputs))
        })();
        match parsed {
            Ok((obj, job, inputs)) => {
                // Only a resumed run has lines to match; skip the canonical copy otherwise.
                let already = (!done.is_empty()).then(|| input_key(obj.clone()));
                if let Some(n) = already.and_then(|key| done.get_mut(&key)).filter(|n| **n > 0) {
                    *n -= 1;
                    totals.resumed += 1;
                    bar.inc(1);
                    continue;
                }
                pending.inputs.extend(inputs);
                pending.lines.push((obj, job));
            }
            Err(e) => {
                let msg = format!("{}: line {lineno}: {e:#}", args.input.display());
                if args.strict {
                    bar.abandon();
                    bail!("{msg} (--strict)");
                }
                report(&bar, format!("skipped {msg}"));
                totals.skipped += 1;
                bar.inc(1);
            }
        }
        if pending.inputs.len() >= args.batch_size.max(1) * 4 {
            flush_pending(
                &mut pending,
                &backend,
                steps.as_ref(),
                &policy,
                args.batch_size,
                &mut out,
                &mut totals,
                &bar,
            )?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tokens/s", totals.tokens as f64 / secs));
        }
    }
    flush_pending(&mut pending, &backend, steps.as_ref(), &policy, args.batch_size, &mut out, &mut totals, &bar)?;
    out.sync_all().context("writing output")?;
    bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let mut summary = format!(
        "{} lines ({} scored, {} already in output, {} skipped), {} sequences, {} tokens in {:.1}s: {:.0} tokens/s",
        totals.lines,
        totals.lines - totals.resumed - totals.skipped,
        totals.resumed,
        totals.skipped,
        totals.sequences,
        totals.tokens,
        secs,
        totals.tokens as f64 / secs.max(1e-9),
    );
    if totals.pairs > 0 {
        summary.push_str(&format!(
            "; pair accuracy {}/{} = {:.1}%",
            totals.pairs_correct,
            totals.pairs,
            100.0 * totals.pairs_correct as f64 / totals.pairs as f64
        ));
    }
    eprintln!("{summary}");
    if totals.step_errors > 0 {
        eprintln!("{} line(s) without step scores: see `step_error` in the output", totals.step_errors);
    }
    if totals.skipped > 0 || totals.step_errors > 0 {
        if totals.skipped > 0 {
            eprintln!("{} line(s) skipped: see the messages above", totals.skipped);
        }
        return Ok(ExitCode::from(EXIT_SKIPPED));
    }
    Ok(ExitCode::SUCCESS)
}
