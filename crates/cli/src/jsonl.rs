//! `rewardlens score`: JSONL in, the same objects with scores added out.
//!
//! Output safety: lines are written and flushed one by one in input order, so an interrupted
//! run leaves only whole lines (plus at most one partial line that `--resume` cuts off).
//! An existing output file is never overwritten without `--resume`.

use crate::{source, ModelArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_core::types::prompt_response;
use rewardlens_core::{preference_probability, ranking, Message};
use rewardlens_models::reward_model::EncodedInput;
use rewardlens_models::{ConversationScore, LengthPolicy, RewardModel};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit status when some input lines could not be scored and were skipped.
const EXIT_SKIPPED: u8 = 3;

/// Fields this command adds; stripped again to recognise already-scored lines on `--resume`.
const ADDED_FIELDS: [&str; 12] = [
    "score",
    "attributes",
    "token_logits",
    "scores",
    "ranking",
    "chosen_score",
    "rejected_score",
    "chosen_attributes",
    "rejected_attributes",
    "correct",
    "preference_probability",
    "truncated_tokens",
];

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
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
}

/// One input line, understood.
enum Job {
    /// `conversation` or `instruction`/`response`: one sequence.
    Single(Vec<Message>),
    /// `prompt`/`responses`: one sequence per response.
    Responses(Vec<Vec<Message>>),
    /// `chosen`/`rejected`: two sequences.
    Pair(Vec<Message>, Vec<Message>),
}

impl Job {
    fn conversations(&self) -> Vec<&[Message]> {
        match self {
            Job::Single(c) => vec![c],
            Job::Responses(cs) => cs.iter().map(|c| c.as_slice()).collect(),
            Job::Pair(a, b) => vec![a, b],
        }
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    obj.get(key).and_then(Value::as_str).with_context(|| format!("`{key}` must be a string"))
}

fn conversation(v: &Value, key: &str) -> Result<Vec<Message>> {
    let msgs: Vec<Message> = serde_json::from_value(v.clone())
        .with_context(|| format!("`{key}` must be a list of {{\"role\", \"content\"}} messages"))?;
    if msgs.is_empty() {
        bail!("`{key}` has no messages");
    }
    Ok(msgs)
}

/// A chosen/rejected side: a response string (needs `prompt`) or a whole conversation.
fn pair_side(obj: &Map<String, Value>, key: &str) -> Result<Vec<Message>> {
    match &obj[key] {
        Value::String(s) => Ok(prompt_response(str_field(obj, "prompt")?, s)),
        v @ Value::Array(_) => conversation(v, key),
        _ => bail!("`{key}` must be a string or a list of messages"),
    }
}

fn parse_job(obj: &Map<String, Value>) -> Result<Job> {
    if let Some(c) = obj.get("conversation") {
        return Ok(Job::Single(conversation(c, "conversation")?));
    }
    if obj.contains_key("instruction") || obj.contains_key("response") {
        return Ok(Job::Single(prompt_response(str_field(obj, "instruction")?, str_field(obj, "response")?)));
    }
    if let Some(r) = obj.get("responses") {
        let prompt = str_field(obj, "prompt")?;
        let list = r.as_array().context("`responses` must be a list of strings")?;
        if list.is_empty() {
            bail!("`responses` is empty");
        }
        let convs = list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(|s| prompt_response(prompt, s))
                    .with_context(|| format!("`responses[{i}]` must be a string"))
            })
            .collect::<Result<_>>()?;
        return Ok(Job::Responses(convs));
    }
    if obj.contains_key("chosen") || obj.contains_key("rejected") {
        if !(obj.contains_key("chosen") && obj.contains_key("rejected")) {
            bail!("a preference pair needs both `chosen` and `rejected`");
        }
        return Ok(Job::Pair(pair_side(obj, "chosen")?, pair_side(obj, "rejected")?));
    }
    bail!(
        "expected one of: `conversation`; `instruction`+`response`; `prompt`+`responses`; `prompt`+`chosen`+`rejected`"
    )
}

/// Key-order-independent text of a value, to match input lines with output lines.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&o[*k]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn input_key(mut obj: Map<String, Value>) -> String {
    for f in ADDED_FIELDS {
        obj.remove(f);
    }
    canonical(&Value::Object(obj))
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

/// An f32 as JSON with its shortest round-trip digits (0.23079002, not 0.23079001903533936).
fn num(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    v.to_string().parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

fn nums(vs: &[f32]) -> Value {
    Value::Array(vs.iter().map(|&v| num(v)).collect())
}

/// Adds the scores of `job` to `obj`.
fn annotate(obj: &mut Map<String, Value>, job: &Job, scores: &[ConversationScore], labels: &[String]) {
    let attributes = |s: &ConversationScore| -> Value {
        Value::Object(labels.iter().cloned().zip(s.logits.iter().map(|&v| num(v))).collect())
    };
    let multi = labels.len() > 1;
    let truncated: Vec<usize> = scores.iter().map(|s| s.truncated_tokens).collect();
    match job {
        Job::Single(_) => {
            let s = &scores[0];
            obj.insert("score".into(), num(s.score()));
            if multi {
                obj.insert("attributes".into(), attributes(s));
            }
            if let Some(t) = &s.token_logits {
                obj.insert("token_logits".into(), Value::Array(t.iter().map(|r| nums(r)).collect()));
            }
        }
        Job::Responses(_) => {
            let values: Vec<f32> = scores.iter().map(ConversationScore::score).collect();
            obj.insert("scores".into(), nums(&values));
            obj.insert("ranking".into(), serde_json::to_value(ranking(&values)).expect("ints serialize"));
            if multi {
                obj.insert("attributes".into(), Value::Array(scores.iter().map(attributes).collect()));
            }
        }
        Job::Pair(..) => {
            let (c, r) = (&scores[0], &scores[1]);
            obj.insert("chosen_score".into(), num(c.score()));
            obj.insert("rejected_score".into(), num(r.score()));
            obj.insert("correct".into(), (c.score() > r.score()).into());
            obj.insert("preference_probability".into(), num(preference_probability(c.score(), r.score())));
            if multi {
                obj.insert("chosen_attributes".into(), attributes(c));
                obj.insert("rejected_attributes".into(), attributes(r));
            }
        }
    }
    if truncated.iter().any(|&t| t > 0) {
        let v = if truncated.len() == 1 {
            Value::from(truncated[0])
        } else {
            serde_json::to_value(&truncated).expect("ints")
        };
        obj.insert("truncated_tokens".into(), v);
    }
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
}

/// Lines waiting for their batch to be scored.
struct Pending {
    lines: Vec<(Map<String, Value>, Job)>,
    inputs: Vec<EncodedInput>,
}

fn flush_pending(
    pending: &mut Pending,
    model: &RewardModel,
    batch_size: usize,
    out: &mut File,
    totals: &mut Totals,
    bar: &ProgressBar,
) -> Result<()> {
    if pending.lines.is_empty() {
        return Ok(());
    }
    let scores = model.score_encoded(&pending.inputs, batch_size).context("scoring")?;
    let mut at = 0;
    for (mut obj, job) in pending.lines.drain(..) {
        let n = job.conversations().len();
        let s = &scores[at..at + n];
        at += n;
        annotate(&mut obj, &job, s, model.labels());
        if let Job::Pair(..) = job {
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
    let model = source::load_model(&args.model)?;
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
        let parsed = (|| -> Result<(Map<String, Value>, Job, Vec<EncodedInput>)> {
            let obj: Map<String, Value> = serde_json::from_str(&line).context("not a JSON object")?;
            let job = parse_job(&obj)?;
            let inputs = job
                .conversations()
                .iter()
                .map(|c| model.encode(c, &policy))
                .collect::<rewardlens_models::Result<Vec<_>>>()?;
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
            flush_pending(&mut pending, &model, args.batch_size, &mut out, &mut totals, &bar)?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tokens/s", totals.tokens as f64 / secs));
        }
    }
    flush_pending(&mut pending, &model, args.batch_size, &mut out, &mut totals, &bar)?;
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
    if totals.skipped > 0 {
        eprintln!("{} line(s) skipped: see the messages above", totals.skipped);
        return Ok(ExitCode::from(EXIT_SKIPPED));
    }
    Ok(ExitCode::SUCCESS)
}
