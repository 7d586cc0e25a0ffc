//! `rewardlens eval`: a benchmark suite (RewardBench 1 and 2, RM-Bench, ProcessBench) read as
//! published — a file, a folder or a Hub dataset — scored row by row into a resumable JSONL,
//! then counted by `rewardlens-eval`'s reference formulas into the suite's table and results
//! JSON.

use crate::backend::{endpoint_unavailable, Backend, BackendArgs, PassArgs};
use crate::jsonl::{backend_identity, open_resumable, positions, report, step_convention, step_encoder};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_eval::table::FileFormat;
use rewardlens_eval::{evaluate, Row, RowScores, ScoredRow, Suite};
use rewardlens_models::prm::StepConvention;
use rewardlens_models::records::{parse_record, SCORED_WITH_FIELD};
use rewardlens_models::LengthPolicy;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// rewardbench, rewardbench2, rm-bench or processbench.
    #[arg(long)]
    suite: String,
    /// The suite's data: a Parquet/JSONL/JSON file, a folder of them (each file a split, named
    /// as `datasets` names them), or a Hub dataset id such as allenai/reward-bench-2.
    #[arg(long)]
    data: String,
    /// Revision of a Hub dataset.
    #[arg(long, default_value = "main")]
    data_revision: String,
    /// The results JSON: the benchmark's own result layout (written when every row is scored).
    #[arg(long)]
    out: PathBuf,
    /// The per-row JSONL with every score (default: OUT with `.rows.jsonl` for `.json`).
    #[arg(long)]
    rows: Option<PathBuf>,
    /// Continue an interrupted run: keep the rows file's scored rows and score the rest.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    pass: PassArgs,
    /// ProcessBench: the step convention (qwen, shepherd, value) when the architecture does not
    /// declare one.
    #[arg(long)]
    prm: Option<String>,
    /// ProcessBench with an outcome RM: its score at the end of each step.
    #[arg(long)]
    prefix_scores: bool,
    /// ProcessBench: the first step scored below this is the predicted first error.
    #[arg(long, default_value_t = 0.5)]
    step_threshold: f64,
}

/// A data file of the suite: its name relative to the dataset (gives the split) and where it is.
struct DataFile {
    name: String,
    path: PathBuf,
}

/// Names in a dataset folder that are metadata, not rows.
fn is_metadata(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    matches!(base, "dataset_info.json" | "dataset_infos.json" | "state.json" | "dataset_dict.json")
        || name.split('/').any(|part| part.starts_with('.'))
}

fn folder_files(root: &Path) -> Result<Vec<DataFile>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            if is_metadata(&name) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if FileFormat::of_name(&name).is_some() {
                out.push(DataFile { name, path });
            }
        }
    }
    Ok(out)
}

/// The data files `--data` names, sorted by name, and what to record of the source.
fn data_files(args: &EvalArgs) -> Result<(Vec<DataFile>, Value)> {
    let local = Path::new(&args.data);
    let files = if local.is_file() {
        let name = local.file_name().map_or_else(|| args.data.clone(), |n| n.to_string_lossy().into_owned());
        if FileFormat::of_name(&name).is_none() {
            bail!("--data {}: not a .parquet, .jsonl or .json file", local.display());
        }
        let source = json!({"file": std::fs::canonicalize(local)?.display().to_string()});
        return Ok((vec![DataFile { name, path: local.to_path_buf() }], source));
    } else if local.is_dir() {
        (folder_files(local)?, json!({"folder": std::fs::canonicalize(local)?.display().to_string()}))
    } else if local.exists() {
        bail!("--data {} is neither a file nor a folder", local.display());
    } else {
        hub_files(&args.data, &args.data_revision)?
    };
    let (mut files, source) = files;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if files.is_empty() {
        bail!("--data {}: no .parquet, .jsonl or .json files in it", args.data);
    }
    Ok((files, source))
}

/// A Hub dataset's data files, downloaded into the Hugging Face cache (`HF_HOME`,
/// `HF_ENDPOINT` and `HF_TOKEN` respected, as for models).
fn hub_files(id: &str, revision: &str) -> Result<(Vec<DataFile>, Value)> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    if !crate::source::looks_like_repo_id(id) {
        bail!("--data {id}: no such file or folder, and not a Hub dataset id of the form owner/name");
    }
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_env().with_progress(true);
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder.build().context("setting up the Hugging Face Hub client")?;
    let spec = Repo::with_revision(id.to_owned(), RepoType::Dataset, revision.to_owned());
    let repo = api.repo(spec.clone());
    let info = match repo.info() {
        Ok(info) => info,
        // Offline (or the Hub down): the snapshot an earlier run left in the cache, if any.
        Err(e) => match cached_snapshot(&spec) {
            Some((commit, dir)) => {
                eprintln!("cannot reach the Hub ({e}): using the cached snapshot {commit} of dataset {id}@{revision}");
                let files = folder_files(&dir)?;
                return Ok((files, json!({"hub_dataset": id, "revision": revision, "commit": commit})));
            }
            None => return Err(e).with_context(|| format!("listing the files of dataset {id}@{revision}")),
        },
    };
    let mut files = Vec::new();
    for s in &info.siblings {
        let name = s.rfilename.clone();
        if is_metadata(&name) || FileFormat::of_name(&name).is_none() {
            continue;
        }
        let path = repo.get(&name).with_context(|| format!("downloading {name} from dataset {id}@{revision}"))?;
        files.push(DataFile { name, path });
    }
    Ok((files, json!({"hub_dataset": id, "revision": revision, "commit": info.sha})))
}

/// The commit and folder of `repo`'s revision in the Hugging Face cache, when a run downloaded it.
fn cached_snapshot(repo: &hf_hub::Repo) -> Option<(String, PathBuf)> {
    let cache = hf_hub::Cache::from_env();
    let folder = cache.path().join(repo.folder_name());
    let rev = repo.revision();
    let commit = if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        rev.to_owned()
    } else {
        std::fs::read_to_string(folder.join("refs").join(rev)).ok()?.trim().to_owned()
    };
    let dir = folder.join("snapshots").join(&commit);
    dir.is_dir().then_some((commit, dir))
}

/// Every row of the suite, in file then row order.
fn read_suite(suite: Suite, files: &[DataFile]) -> Result<Vec<Row>> {
    let mut named = Vec::with_capacity(files.len());
    for f in files {
        named.push((f.name.clone(), std::fs::read(&f.path).with_context(|| format!("reading {}", f.path.display()))?));
    }
    Ok(rewardlens_eval::read_suite(suite, named)?.into_iter().map(|r| r.row).collect())
}

/// A score as the rows file keeps it: the f32's shortest digits, so the formulas compare the
/// same numbers whether a row was scored in this run or read back by `--resume`.
fn kept(v: f32, row: &Row) -> Result<f64> {
    rewardlens_eval::stored_score(v)
        .with_context(|| format!("the model gave a non-finite score ({v}) for row {}", row.id()))
}

/// Scores rows, the suite's way: every answer of a preference row as one sequence after its
/// prompt (rows sharing a prompt reuse it in the engine's batches); each ProcessBench row's
/// steps under the model's step convention. Returns the scores and the tokens scored.
struct Scorer<'a> {
    backend: &'a Backend,
    policy: LengthPolicy,
    batch_size: usize,
    steps: Option<StepConvention>,
}

impl Scorer<'_> {
    fn score(&self, suite: Suite, rows: &[&Row]) -> Result<(Vec<ScoredRow>, usize, usize)> {
        let (mut out, mut tokens, mut truncated) = (Vec::with_capacity(rows.len()), 0, 0);
        let mut prepared = Vec::new();
        let mut counts = Vec::new();
        for row in rows {
            match row {
                Row::Preference(p) => {
                    let record = parse_record(&p.score_line()).with_context(|| format!("row {}", p.id))?;
                    let convs = record.conversations();
                    counts.push(convs.len());
                    for c in convs {
                        prepared.push(self.backend.prepare(c, &self.policy).with_context(|| format!("row {}", p.id))?);
                    }
                }
                Row::Steps(s) => {
                    let convention = self.steps.as_ref().expect("checked before scoring");
                    let encoder = step_encoder(self.backend).expect("checked before scoring");
                    let (conv, steps) = s.conversation();
                    let input = encoder
                        .encode_steps(convention, &conv, &steps, &self.policy)
                        .with_context(|| format!("row {} of {}", s.id, s.subset))?;
                    let rewards = convention.rewards(&positions(self.backend, &input.ids)?, &input.positions);
                    let step_scores = rewards.iter().map(|&r| kept(r, row)).collect::<Result<_>>()?;
                    tokens += input.ids.len();
                    out.push(row.scored(suite, RowScores::Steps { step_scores })?);
                }
            }
        }
        if !prepared.is_empty() {
            let (scores, _) = self.backend.score(prepared, self.batch_size)?;
            let mut at = 0;
            for (row, n) in rows.iter().zip(counts) {
                let Row::Preference(p) = row else { unreachable!("only preference rows are prepared") };
                let s = &scores[at..at + n];
                at += n;
                tokens += s.iter().map(|x| x.tokens).sum::<usize>();
                truncated += usize::from(s.iter().any(|x| x.truncated_tokens > 0));
                let all = s.iter().map(|x| kept(x.score(), row)).collect::<Result<Vec<_>>>()?;
                let (chosen, rejected) = all.split_at(p.chosen.len());
                let scores =
                    RowScores::Preference { chosen_scores: chosen.to_vec(), rejected_scores: rejected.to_vec() };
                out.push(row.scored(suite, scores)?);
            }
        }
        Ok((out, tokens, truncated))
    }
}

fn rows_path(args: &EvalArgs) -> PathBuf {
    args.rows.clone().unwrap_or_else(|| {
        let name = args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.strip_suffix(".json").unwrap_or(&name);
        args.out.with_file_name(format!("{stem}.rows.jsonl"))
    })
}

/// Writes `text` to `path` whole or not at all (a temporary file beside it, then a rename).
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let suite = Suite::parse(&args.suite)?;
    if suite != Suite::ProcessBench && (args.prm.is_some() || args.prefix_scores) {
        bail!("--prm and --prefix-scores are for processbench; {suite} scores whole answers");
    }
    let (files, source) = data_files(&args)?;
    let rows = read_suite(suite, &files)?;
    let (backend, commit) = Backend::open(&args.backend)?;
    let steps = match suite {
        Suite::ProcessBench => {
            let c = step_convention(args.prm.as_deref(), args.prefix_scores, &backend)?;
            Some(c.context(
                "processbench needs step rewards: the model's architecture declares no step convention; give \
                 --prm qwen|shepherd|value, or --prefix-scores for an outcome RM",
            )?)
        }
        _ => None,
    };

    let mut with = backend_identity(&args.backend, commit);
    with.insert("suite".into(), suite.name().into());
    with.insert("data".into(), source.clone());
    args.pass.record(&mut with);
    if let Some(c) = &steps {
        with.insert("prm".into(), c.name().into());
    }
    let with = Value::Object(with);

    let rows_file = rows_path(&args);
    let mut scored: HashMap<(String, String), ScoredRow> = HashMap::new();
    let mut out = open_resumable(&rows_file, "--rows", args.resume, &with, |mut obj| {
        obj.remove(SCORED_WITH_FIELD);
        let row: ScoredRow = serde_json::from_value(Value::Object(obj)).context("not a scored row")?;
        scored.insert(row.key(), row);
        Ok(())
    })?;
    let resumed = rows.iter().filter(|r| scored.contains_key(&(r.subset().to_owned(), r.id().to_owned()))).count();

    let todo: Vec<&Row> =
        rows.iter().filter(|r| !scored.contains_key(&(r.subset().to_owned(), r.id().to_owned()))).collect();
    let bar = ProgressBar::new(rows.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows {msg} (eta {eta})")
            .expect("valid template"),
    );
    bar.set_position(resumed as u64);
    let scorer =
        Scorer { backend: &backend, policy: args.pass.policy(), batch_size: args.pass.batch_size.max(1), steps };
    let started = Instant::now();
    let (mut tokens, mut truncated) = (0usize, 0usize);
    // Rows in chunks of a few batches: rows sharing a prompt are adjacent in these datasets,
    // so a chunk's batches reuse their prompts; each chunk is written before the next starts.
    let per_chunk = (args.pass.batch_size.max(1) * 4 / suite_sequences(suite)).max(1);
    for chunk in todo.chunks(per_chunk) {
        let (done, t, cut) = scorer.score(suite, chunk).map_err(|e| {
            let e = if endpoint_unavailable(&e) { e.context("the endpoint stopped answering") } else { e };
            e.context(format!(
                "scoring stopped; the {} rows scored so far are in {} (run again with --resume to continue)",
                scored.len(),
                rows_file.display()
            ))
        })?;
        for row in done {
            let mut obj = match serde_json::to_value(&row).expect("rows serialize") {
                Value::Object(o) => o,
                _ => unreachable!("a struct"),
            };
            obj.insert(SCORED_WITH_FIELD.into(), with.clone());
            let mut line = serde_json::to_string(&obj).expect("JSON values serialize");
            line.push('\n');
            out.write_all(line.as_bytes()).and_then(|_| out.flush()).context("writing the rows file")?;
            scored.insert(row.key(), row);
        }
        tokens += t;
        truncated += cut;
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("{:.0} tokens/s", tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)));
    }
    out.sync_all().context("writing the rows file")?;
    bar.finish_and_clear();
    if truncated > 0 {
        report(&bar, format!("{truncated} row(s) had an answer cut to --max-tokens"));
    }

    let in_order: Vec<ScoredRow> = rows
        .iter()
        .map(|r| scored.remove(&(r.subset().to_owned(), r.id().to_owned())).expect("every row is scored"))
        .collect();
    let options = rewardlens_eval::Options { step_threshold: args.step_threshold };
    let evaluation = evaluate(suite, &in_order, &options)?;
    let mut results = evaluation.results.clone();
    if let Value::Object(o) = &mut results {
        if matches!(suite, Suite::RewardBench | Suite::RewardBench2) {
            // The keys reward-bench's run_rm.py / run_v2.py write beside the subsets.
            let b = &args.backend;
            o.insert("model".into(), b.model.clone().or_else(|| b.endpoint.first().cloned()).into());
            o.insert("model_type".into(), "Seq. Classifier".into());
            o.insert("chat_template".into(), "tokenizer".into());
        }
        o.insert(
            "rewardlens".into(),
            json!({
                "suite": suite.name(),
                "data": source,
                "scored_with": with,
                "rows": in_order.len(),
                "rows_file": rows_file.display().to_string(),
                "table": evaluation.lines,
                "step_threshold": (suite == Suite::ProcessBench).then_some(args.step_threshold),
            }),
        );
    }
    write_atomically(&args.out, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    print!("{}", evaluation.table_text());
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} rows ({} scored now, {resumed} from {}), {tokens} tokens in {secs:.1}s: {:.0} tokens/s; results in {}",
        rows.len(),
        rows.len() - resumed,
        rows_file.display(),
        tokens as f64 / secs.max(1e-9),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Sequences per row, to size chunks in sequences.
fn suite_sequences(suite: Suite) -> usize {
    match suite {
        Suite::RewardBench => 2,
        Suite::RewardBench2 => 4,
        Suite::RmBench => 6,
        Suite::ProcessBench => 1,
    }
}
