//! `rewardlens score`: JSONL in, the same objects with scores added out.
//!
//! Output safety: lines are written and flushed one by one in input order, so an interrupted
//! run leaves only whole lines (plus at most one partial line that `--resume` cuts off).
//! An existing output file is never overwritten without `--resume`.

use crate::backend::{endpoint_unavailable, Backend, BackendArgs, Launched, PassArgs, Prepared, Scored};
use crate::images::ImageReader;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_core::StepSplit;
use rewardlens_models::prm::{problem_and_answer, token_rewards, StepConvention, StepScores};
use rewardlens_models::records::{
    annotate, annotate_steps, annotate_tokens, input_key, num, parse_record, PreferenceSummary, Record, ERROR_FIELD,
    SCORED_BY_FIELD, SCORED_WITH_FIELD, STEP_ERROR_FIELD,
};
use rewardlens_models::LengthPolicy;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
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
    /// JSONL input (a regular file, or `-` for standard input): one conversation,
    /// instruction/response, prompt/responses or preference pair per line.
    #[arg(long)]
    input: PathBuf,
    /// JSONL output: each input object with its scores added.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    pass: PassArgs,
    /// Abort at the first line that cannot be read or scored instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    /// Continue an interrupted run: keep OUTPUT's complete lines and skip the inputs they hold
    /// (refused unless OUTPUT was scored with the same model, revision and options).
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
    /// Score only shard I of N (`I/N`, 0-based): the lines whose content hash falls in it, so
    /// N machines split one file with no coordination; `rewardlens merge` joins the outputs.
    #[arg(long)]
    shard: Option<String>,
}

/// `--shard I/N`: which lines this run takes.
pub(crate) struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    pub(crate) fn parse(spec: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("--shard {spec}: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether the input line (as read) is in this shard: by a fixed hash of its content
    /// (key order ignored), the same on every machine and run.
    fn takes(&self, line: &str) -> bool {
        line_hash(line) % self.count == self.index
    }
}

/// FNV-1a of the line's canonical content (`input_key`), or of its text when it is not a JSON
/// object: stable across machines, runs and Rust versions (std's hasher is not).
pub(crate) fn line_hash(line: &str) -> u64 {
    let key = match serde_json::from_str::<Map<String, Value>>(line) {
        Ok(obj) => input_key(obj),
        Err(_) => line.trim().to_owned(),
    };
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
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
        let convention = step_convention(args.prm.as_deref(), args.prefix_scores, backend)?;
        if convention.is_none() && !args.token_scores {
            return Ok(None);
        }
        if step_encoder(backend).is_none() {
            bail!(
                "step and token scores over --endpoint need --template <the served model's folder or Hub repo>, \
                 whose tokenizer lays out the steps"
            );
        }
        Ok(Some(Self {
            convention,
            split: StepSplit::parse(&args.step_split)?,
            threshold: args.step_threshold,
            tokens: args.token_scores,
        }))
    }

    /// Adds step and token fields for each sequence of `job`.
    fn annotate(
        &self,
        backend: &Backend,
        obj: &mut Map<String, Value>,
        job: &Record,
        policy: &LengthPolicy,
    ) -> Result<()> {
        let inputs = step_encoder(backend).expect("checked in new");
        let convs = job.conversations();
        if let Some(c) = &self.convention {
            let mut all = Vec::with_capacity(convs.len());
            for conv in &convs {
                let (_, answer) = problem_and_answer(conv)?;
                let steps = self.split.split(&answer)?;
                let input = inputs.encode_steps(c, conv, &steps, policy)?;
                let rows = positions(backend, &input.ids)?;
                let scores = c.rewards(&rows, &input.positions);
                all.push(StepScores { convention: c.name(), steps, scores });
            }
            annotate_steps(obj, job, &all, self.threshold);
        }
        if self.tokens {
            let mut all = Vec::with_capacity(convs.len());
            for conv in &convs {
                let ids = inputs.encode(conv, policy)?.ids;
                let rows = positions(backend, &ids)?;
                all.push((inputs.text_encoder().token_texts(&ids), token_rewards(self.convention.as_ref(), &rows)));
            }
            annotate_tokens(obj, job, &all);
        }
        Ok(())
    }
}

/// The step convention asked for (`--prm`, `--prefix-scores`) or declared by the model's
/// architecture, checked against the model; None when neither.
pub(crate) fn step_convention(
    prm: Option<&str>,
    prefix_scores: bool,
    backend: &Backend,
) -> Result<Option<StepConvention>> {
    let config = step_encoder(backend).map(|_| match backend {
        Backend::Local(m) => m.config(),
        Backend::Remote { checkpoint, .. } => &checkpoint.as_ref().expect("an encoder comes with its config").0,
    });
    let declared = config.and_then(StepConvention::of_architecture);
    let convention = match (prm, prefix_scores) {
        (Some(_), true) => bail!("--prm and --prefix-scores exclude each other"),
        (Some(name), false) => Some(StepConvention::parse(name)?),
        (None, true) => Some(StepConvention::Prefix),
        (None, false) => declared,
    };
    if let Some(c) = &convention {
        let Some(config) = config else {
            bail!(
                "step scores over --endpoint need --template <the served model's folder or Hub repo>, \
                 whose tokenizer lays out the steps"
            );
        };
        c.check(config)?;
        if matches!(backend, Backend::Remote { .. }) && *c == StepConvention::Prefix {
            bail!("prefix scores need the model here: vLLM's per-token task is for token classifiers");
        }
    }
    Ok(convention)
}

/// The tokenizer and template that lay out steps: the model's, or `--template`'s for an endpoint.
pub(crate) fn step_encoder(backend: &Backend) -> Option<&rewardlens_models::InputEncoder> {
    match backend {
        Backend::Local(m) => Some(m.inputs()),
        Backend::Remote { checkpoint, .. } => checkpoint.as_ref().map(|(_, e)| e),
    }
}

/// The encoder and the head at every position of `ids`: the model here, or vLLM's
/// `token_classify` on the endpoint.
pub(crate) fn positions(backend: &Backend, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    match backend {
        Backend::Local(m) => Ok(m.forward_positions(ids)?),
        // Per-token rows come from the first endpoint (step rewards are not spread over a fleet).
        Backend::Remote { fleet, runtime, .. } => {
            let (_, client) = fleet.members().next().expect("a fleet has an endpoint");
            Ok(runtime.block_on(client.token_rows(&[ids.to_vec()]))?.remove(0))
        }
    }
}

/// What scored a run, written into every output line as `scored_with`: the model (a local path
/// made absolute, or the Hub repo / served model name as given), its revision and, for a Hub
/// download, the commit it resolved to, the endpoint and every option that changes scores.
/// `--resume` refuses an output scored otherwise.
fn scored_with(args: &ScoreArgs, commit: Option<String>) -> Value {
    let mut o = backend_identity(&args.backend, commit);
    args.pass.record(&mut o);
    if args.prm.is_some() || args.prefix_scores || args.token_scores {
        o.insert("prm".into(), args.prm.clone().into());
        o.insert("prefix_scores".into(), args.prefix_scores.into());
        o.insert("token_scores".into(), args.token_scores.into());
    }
    // Steps of a declared PRM are split and thresholded even without --prm: always recorded.
    o.insert("step_split".into(), args.step_split.clone().into());
    o.insert("step_threshold".into(), num(args.step_threshold));
    Value::Object(o)
}

/// The model or endpoint of a run as `scored_with` records it (the options are the caller's).
pub(crate) fn backend_identity(b: &BackendArgs, commit: Option<String>) -> Map<String, Value> {
    let local = |s: &str| std::fs::canonicalize(s).map_or_else(|_| s.to_owned(), |p| p.display().to_string());
    let mut o = Map::new();
    if !b.remote() {
        o.insert("model".into(), b.model.as_deref().map(local).into());
        o.insert("device".into(), b.device.device.clone().into());
        if b.device.device == "gpu" || b.device.device == "auto" {
            o.insert("gpu_weights".into(), b.device.gpu_weights.clone().into());
        }
        if let Some(t) = &b.tokenizer {
            o.insert("tokenizer".into(), local(&t.to_string_lossy()).into());
        }
    } else {
        let specs = b.endpoint_specs().unwrap_or_default();
        // One endpoint is part of what scored; over several, each line says which one
        // (`scored_by`) and the canary checked they agree, so a resumed run may use others.
        if let [one] = specs.as_slice() {
            o.insert("endpoint".into(), without_userinfo(&one.url).into());
        }
        o.insert("protocol".into(), b.protocol.name().into());
        o.insert("model".into(), b.model.clone().into());
        o.insert("template".into(), b.template.as_deref().map(local).into());
        if b.protocol == rewardlens_remote::Protocol::OpenRlhf {
            o.insert("score_key".into(), b.score_key.clone().into());
        }
    }
    o.insert("revision".into(), b.revision.clone().into());
    if let Some(c) = commit {
        o.insert("commit".into(), c.into());
    }
    o
}

/// An endpoint URL without `user:password@`, which must not land in output files.
pub(crate) fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// An output opened for appending.
struct Output {
    file: File,
    /// How many times each input (by `input_key`) is already there.
    done: HashMap<String, usize>,
    /// Lines already there that have `error` or `step_error`.
    flagged: usize,
}

/// Opens the output for appending. With `resume`, drops a trailing partial line and counts the
/// inputs already present, after checking that every line was scored `with` the same model and
/// options; without it, refuses to touch an existing file.
fn open_output(path: &Path, resume: bool, with: &Value) -> Result<Output> {
    let (mut done, mut flagged) = (HashMap::new(), 0);
    let file = open_resumable(path, "--output", resume, with, |obj| {
        flagged += usize::from(obj.contains_key(ERROR_FIELD) || obj.contains_key(STEP_ERROR_FIELD));
        *done.entry(input_key(obj)).or_insert(0) += 1;
        Ok(())
    })?;
    Ok(Output { file, done, flagged })
}

/// Opens a line-by-line output (`flag` names it in messages) for appending. Without `resume`
/// it must not exist yet; with it, every complete line must have been scored `with` the same
/// model and options, and is handed to `each`; a trailing partial line (an interrupted write)
/// is cut off.
pub(crate) fn open_resumable(
    path: &Path,
    flag: &str,
    resume: bool,
    with: &Value,
    mut each: impl FnMut(Map<String, Value>) -> Result<()>,
) -> Result<File> {
    if !resume {
        return OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists: pass --resume to continue it, or choose another {flag}",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", path.display())
            }
        });
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            bail!("{flag} {} is not a regular file: cannot resume into it", path.display());
        }
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
        match obj.get(SCORED_WITH_FIELD) {
            Some(w) if w == with => {}
            Some(w) => bail!(
                "{} line {} was scored with {w}, this run with {with}: resume with the same --model, \
                 --revision and options, or choose another {flag}",
                path.display(),
                i + 1
            ),
            None => bail!(
                "{} line {} does not say what scored it (no `{SCORED_WITH_FIELD}`): refusing to mix it with \
                 this run's scores; choose another {flag}",
                path.display(),
                i + 1
            ),
        }
        each(obj).with_context(|| format!("{} line {}", path.display(), i + 1))?;
    }
    // An interrupted write leaves at most one partial line: cut it so the next line is whole.
    f.set_len(complete as u64)?;
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

/// The input, read once: `-` is standard input; anything else must be a regular file (a
/// directory or a device would fail or never end). Its size, when known, for the progress bar.
fn open_input(path: &Path) -> Result<(Box<dyn BufRead>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(BufReader::new(std::io::stdin())), None));
    }
    // Checked before opening: opening a named pipe blocks until someone writes to it.
    let meta = std::fs::metadata(path).with_context(|| format!("cannot open --input {}", path.display()))?;
    let not_regular = |meta: &std::fs::Metadata| {
        anyhow::anyhow!(
            "--input {} is {}, not a regular file: give a JSONL file, or `--input -` to read standard input",
            path.display(),
            file_kind(meta)
        )
    };
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let f = File::open(path).with_context(|| format!("cannot open --input {}", path.display()))?;
    let meta = f.metadata().with_context(|| format!("cannot open --input {}", path.display()))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((Box::new(BufReader::new(f)), Some(meta.len())))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a pipe";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a file"
}

/// A message above the progress bar, or plainly on stderr when the bar is hidden (not a TTY).
pub(crate) fn report(bar: &ProgressBar, msg: String) {
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
    failed: usize,
    sequences: usize,
    tokens: usize,
    preferences: PreferenceSummary,
    step_errors: usize,
}

/// The run cannot go on (the endpoint is down); what was written stays for `--resume`.
fn stopped(e: anyhow::Error) -> anyhow::Error {
    e.context("scoring stopped (the lines written so far are kept: run again with --resume to continue)")
}

/// A line waiting for its batch to be scored.
struct PendingLine {
    lineno: usize,
    obj: Map<String, Value>,
    job: Record,
    inputs: Vec<Prepared>,
}

/// What every write of a line needs.
struct Writer<'a> {
    backend: &'a Backend,
    steps: Option<&'a StepOptions>,
    policy: &'a LengthPolicy,
    batch_size: usize,
    strict: bool,
    input_name: String,
    with: Value,
    out: File,
    bar: &'a ProgressBar,
    /// Chunks being scored, oldest first: written in this order as they finish (the reorder
    /// buffer), at most `window` of them out.
    running: VecDeque<(Vec<PendingLine>, Launched)>,
    window: usize,
}

impl Writer<'_> {
    fn write(&mut self, mut obj: Map<String, Value>) -> Result<()> {
        obj.insert(SCORED_WITH_FIELD.into(), self.with.clone());
        let mut line = serde_json::to_string(&obj).expect("JSON values serialize");
        line.push('\n');
        self.out.write_all(line.as_bytes()).context("writing output")?;
        self.out.flush().context("writing output")
    }

    /// Starts scoring the pending lines as one chunk; when more than `window` chunks are out,
    /// writes the oldest once it is done.
    fn flush(&mut self, pending: &mut Vec<PendingLine>, totals: &mut Totals) -> Result<()> {
        if !pending.is_empty() {
            let lines = std::mem::take(pending);
            let all: Vec<Prepared> = lines.iter().flat_map(|l| l.inputs.iter().cloned()).collect();
            let launched = self.backend.launch(all, self.batch_size);
            self.running.push_back((lines, launched));
        }
        while self.running.len() > self.window {
            self.settle_oldest(totals)?;
        }
        Ok(())
    }

    /// Writes every chunk still out, in order.
    fn finish(&mut self, totals: &mut Totals) -> Result<()> {
        while !self.running.is_empty() {
            self.settle_oldest(totals)?;
        }
        Ok(())
    }

    /// Waits for the oldest chunk and writes its lines; when the chunk failed (without
    /// `--strict`), each line alone, so that only a line that fails by itself is lost: it is
    /// written with `error` and no scores (so `--resume` does not try it again).
    fn settle_oldest(&mut self, totals: &mut Totals) -> Result<()> {
        let Some((lines, launched)) = self.running.pop_front() else { return Ok(()) };
        let result = match launched {
            Launched::Ready(r) => r,
            Launched::Running(handle) => self.backend.wait(handle),
        };
        match result {
            Ok(scored) => {
                let mut at = 0;
                for l in lines {
                    let n = l.inputs.len();
                    self.scored(l, &scored.scores[at..at + n], &scored.labels, scored.scored_by.as_deref(), totals)?;
                    at += n;
                }
                Ok(())
            }
            Err(e) if self.strict => Err(e.context("scoring (--strict)")),
            Err(e) if endpoint_unavailable(&e) => Err(stopped(e)),
            Err(e) if lines.len() == 1 => self.failed(lines.into_iter().next().expect("one line"), e, totals),
            Err(e) => {
                report(self.bar, format!("a batch of {} lines failed ({e:#}): scoring them one by one", lines.len()));
                for l in lines {
                    match self.backend.launch(l.inputs.clone(), self.batch_size) {
                        Launched::Ready(r) => self.settle_line(l, r, totals)?,
                        Launched::Running(h) => {
                            let r = self.backend.wait(h);
                            self.settle_line(l, r, totals)?
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn settle_line(&mut self, l: PendingLine, result: Result<Scored>, totals: &mut Totals) -> Result<()> {
        match result {
            Ok(s) => self.scored(l, &s.scores, &s.labels, s.scored_by.as_deref(), totals),
            Err(e) if endpoint_unavailable(&e) => Err(stopped(e)),
            Err(e) => self.failed(l, e, totals),
        }
    }

    fn failed(&mut self, l: PendingLine, e: anyhow::Error, totals: &mut Totals) -> Result<()> {
        report(
            self.bar,
            format!("failed {}: line {}: {e:#} (written with `{ERROR_FIELD}`)", self.input_name, l.lineno),
        );
        totals.failed += 1;
        let mut obj = l.obj;
        obj.insert(ERROR_FIELD.into(), format!("{e:#}").into());
        self.write(obj)
    }

    fn scored(
        &mut self,
        l: PendingLine,
        s: &[rewardlens_models::ConversationScore],
        labels: &[String],
        scored_by: Option<&str>,
        totals: &mut Totals,
    ) -> Result<()> {
        let PendingLine { mut obj, job, .. } = l;
        annotate(&mut obj, &job, s, labels);
        if let Some(by) = scored_by {
            obj.insert(SCORED_BY_FIELD.into(), by.into());
        }
        if let Some(opts) = self.steps {
            // A line whose steps cannot be scored keeps its scores and says why.
            if let Err(e) = opts.annotate(self.backend, &mut obj, &job, self.policy) {
                obj.insert(STEP_ERROR_FIELD.into(), format!("{e:#}").into());
                report(self.bar, format!("step scores: {e:#} (written with `{STEP_ERROR_FIELD}`)"));
                totals.step_errors += 1;
            }
        }
        totals.preferences.add(&job, s);
        totals.sequences += s.len();
        totals.tokens += s.iter().map(|x| x.tokens).sum::<usize>();
        self.write(obj)
    }
}

pub fn run(args: ScoreArgs) -> Result<ExitCode> {
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    let (mut input, size) = open_input(&args.input)?;
    let input_name = if args.input.as_os_str() == "-" { "stdin".to_owned() } else { args.input.display().to_string() };
    let (backend, commit) = Backend::open(&args.backend)?;
    let steps = StepOptions::new(&args, &backend)?;
    let with = scored_with(&args, commit);
    let Output { file: out, mut done, flagged } = open_output(&args.output, args.resume, &with)?;
    let policy = args.pass.policy();

    // Progress in bytes of a file (known size, one pass); lines of a stream.
    let bar = match size {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg} (eta {eta})",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::no_length().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} lines {msg}").expect("valid template"),
        ),
    };
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut w = Writer {
        backend: &backend,
        steps: steps.as_ref(),
        policy: &policy,
        batch_size: args.pass.batch_size,
        strict: args.strict,
        input_name: input_name.clone(),
        with,
        out,
        bar: &bar,
        running: VecDeque::new(),
        // Over several endpoints, twice what they take at once keeps them busy while the oldest
        // chunk is written; a model here or one endpoint scores each chunk before the next.
        window: if backend.capacity() > 1 && args.backend.endpoint_specs()?.len() > 1 {
            2 * backend.capacity()
        } else {
            0
        },
    };
    let images = ImageReader::new(&args.input);
    let mut pending: Vec<PendingLine> = Vec::new();
    let mut canary_done = false;
    let (mut read, mut lineno) = (0u64, 0usize);
    let mut line = String::new();
    loop {
        line.clear();
        let n = input.read_line(&mut line).with_context(|| format!("reading {input_name} line {}", lineno + 1))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        read += n as u64;
        bar.set_position(if size.is_some() { read } else { lineno as u64 });
        if line.trim().is_empty() {
            continue;
        }
        if let Some(shard) = &shard {
            if !shard.takes(&line) {
                continue;
            }
        }
        totals.lines += 1;
        let parsed = (|| -> Result<(Map<String, Value>, Record, Vec<Prepared>)> {
            let obj: Map<String, Value> = serde_json::from_str(&line).context("not a JSON object")?;
            let job = parse_record(&obj)?;
            let inputs = job
                .conversations()
                .iter()
                .map(|c| match &backend {
                    // A local model refuses images itself, by name (nothing to read).
                    Backend::Local(_) => backend.prepare(c, &policy),
                    Backend::Remote { .. } => backend.prepare(&images.resolve(c)?, &policy),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((obj, job, inputs))
        })();
        match parsed {
            Ok((obj, job, inputs)) => {
                // Only a resumed run has lines to match; skip the canonical copy otherwise.
                let already = (!done.is_empty()).then(|| input_key(obj.clone()));
                if let Some(n) = already.and_then(|key| done.get_mut(&key)).filter(|n| **n > 0) {
                    *n -= 1;
                    totals.resumed += 1;
                    continue;
                }
                if !canary_done {
                    canary_done = true;
                    if let Some(first) = inputs.first() {
                        backend.canary(first, args.backend.allow_mismatch)?;
                        if args.backend.in_flight.is_none() {
                            backend.probe_in_flight(first);
                            if w.window > 0 {
                                w.window = 2 * backend.capacity();
                            }
                        }
                    }
                }
                pending.push(PendingLine { lineno, obj, job, inputs });
            }
            Err(e) => {
                let msg = format!("{input_name}: line {lineno}: {e:#}");
                if args.strict {
                    bar.abandon();
                    bail!("{msg} (--strict)");
                }
                report(&bar, format!("skipped {msg}"));
                totals.skipped += 1;
            }
        }
        if pending.iter().map(|l| l.inputs.len()).sum::<usize>() >= args.pass.batch_size.max(1) * 4 {
            w.flush(&mut pending, &mut totals)?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tokens/s", totals.tokens as f64 / secs));
        }
    }
    w.flush(&mut pending, &mut totals)?;
    w.finish(&mut totals)?;
    w.out.sync_all().context("writing output")?;
    bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let mut summary = format!(
        "{} lines ({} scored, {} already in output, {} skipped, {} failed), {} sequences, {} tokens in {:.1}s: {:.0} tokens/s",
        totals.lines,
        totals.lines - totals.resumed - totals.skipped - totals.failed,
        totals.resumed,
        totals.skipped,
        totals.failed,
        totals.sequences,
        totals.tokens,
        secs,
        totals.tokens as f64 / secs.max(1e-9),
    );
    if totals.preferences.records() > 0 {
        summary.push_str(&format!("; {}", totals.preferences));
    }
    eprintln!("{summary}");
    if let Some(members) = backend.endpoint_report().filter(|m| m.len() > 1) {
        for m in members {
            let share = 100.0 * m.busy.as_secs_f64() / secs.max(1e-9);
            let state = match (&m.last_error, m.dead) {
                (Some(e), true) => format!(", out of the run: {e}"),
                (Some(e), false) => format!(", failed at times (last: {e})"),
                _ => String::new(),
            };
            eprintln!("  {}: {} sequences, busy {share:.0}% of the run{state}", m.name, m.sequences);
        }
    }
    if totals.step_errors > 0 {
        eprintln!("{} line(s) without step scores: see `{STEP_ERROR_FIELD}` in the output", totals.step_errors);
    }
    if totals.failed > 0 {
        eprintln!("{} line(s) could not be scored: written with `{ERROR_FIELD}` and no scores", totals.failed);
    }
    if totals.skipped > 0 {
        eprintln!("{} line(s) skipped: see the messages above", totals.skipped);
    }
    if flagged > 0 {
        eprintln!(
            "{flagged} line(s) kept from the earlier run have `{ERROR_FIELD}` or `{STEP_ERROR_FIELD}` (not scored again)"
        );
    }
    if totals.skipped > 0 || totals.failed > 0 || totals.step_errors > 0 || flagged > 0 {
        return Ok(ExitCode::from(EXIT_SKIPPED));
    }
    Ok(ExitCode::SUCCESS)
}
