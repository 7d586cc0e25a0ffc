//! Reward-model benchmarks as their authors run them: RewardBench 1 and 2, RM-Bench and
//! ProcessBench.
//!
//! - [`table`] reads a suite's files as published on the Hub (Parquet, JSON, JSONL) into JSON
//!   rows; [`rows`] understands those rows per suite ([`Suite`], [`Row`]).
//! - A front end (the CLI's `eval`, the page's Evaluate view) scores each row's answers or
//!   steps with its engine and keeps them as [`RowScores`] in a [`ScoredRow`] (also the line
//!   format of the per-row JSONL).
//! - [`evaluate`] turns the scored rows into the suite's numbers with the reference formulas
//!   ([`rewardbench`], [`rewardbench2`], [`rm_bench`], [`processbench`]): an [`Evaluation`]
//!   with the per-subset table and the JSON in the benchmark's own result layout.
//!
//! No model code here: this crate compiles to wasm32 unchanged, so the page and the CLI count
//! the same comparisons.

pub mod error;
pub mod processbench;
pub mod rewardbench;
pub mod rewardbench2;
pub mod rm_bench;
pub mod rows;
pub mod table;

pub use error::EvalError;
pub use rows::{PreferenceRow, Row, RowScores, ScoredRow, StepRow, Suite};

use serde::Serialize;
use serde_json::Value;

/// One line of the per-subset table: a subset (or section) with its rows and score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableLine {
    /// The subset, section or domain name.
    pub name: String,
    /// A section (a weighted group of subsets) rather than one subset.
    pub section: bool,
    /// Rows counted (for a section, the rows of its subsets).
    pub rows: usize,
    /// The figure in percent (accuracy, or F1 for ProcessBench).
    pub score: f64,
}

/// A suite's results: the table to print or show, the headline figure and the JSON in the
/// reference code's own result layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub suite: Suite,
    pub lines: Vec<TableLine>,
    /// The leaderboard figure (percent), named as the benchmark names it.
    pub headline: (String, f64),
    /// The result layout of the reference code, for comparison with published numbers.
    pub results: Value,
    /// Rows the model got wrong, by `(subset, id)`, for inspection.
    pub wrong: Vec<(String, String)>,
}

impl Evaluation {
    /// The table as text: one line per subset and section, the headline last.
    pub fn table_text(&self) -> String {
        let width = self.lines.iter().map(|l| l.name.chars().count()).max().unwrap_or(0).max(self.headline.0.len());
        let mut s = String::new();
        for l in &self.lines {
            let name = if l.section { l.name.to_uppercase() } else { format!("  {}", l.name) };
            s.push_str(&format!("{name:<w$}  {:>6}  {:>6.2}\n", l.rows, l.score, w = width + 2));
        }
        s.push_str(&format!("{:<w$}  {:>6}  {:>6.2}\n", self.headline.0, "", self.headline.1, w = width + 2));
        s
    }
}

/// A row read from a suite's files: its split, the row as published and as understood.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRow {
    pub split: String,
    pub json: table::JsonRow,
    pub row: Row,
}

/// Every row of `suite` in `files` (name, bytes), in file then row order: the splits the suite
/// evaluates (not RewardBench's `raw`), each row checked, no `(subset, id)` twice.
pub fn read_suite(suite: Suite, files: Vec<(String, Vec<u8>)>) -> Result<Vec<SuiteRow>, EvalError> {
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (name, bytes) in files {
        let split = table::split_of_file(&name);
        if !suite.wants_split(&split) {
            continue;
        }
        for json in table::read_rows(&name, bytes)? {
            let row = suite.row(&json, &split).map_err(|e| EvalError::Input(format!("{name}: {e}")))?;
            let key = (row.subset().to_owned(), row.id().to_owned());
            if let Some(first) = seen.insert(key, name.clone()) {
                return Err(EvalError::Input(format!(
                    "{name}: row id {} of subset {} appears twice (also in {first}): each row is counted once",
                    row.id(),
                    row.subset()
                )));
            }
            out.push(SuiteRow { split: split.clone(), json, row });
        }
    }
    if out.is_empty() {
        return Err(EvalError::Input(format!("no {suite} rows in {}", names.join(", "))));
    }
    Ok(out)
}

/// A model's f32 score as rows keep it: its shortest decimal digits read as f64 (the JSON
/// the rows file holds), so a row scored now and one read back compare the same; None for
/// a non-finite score, which no benchmark can count.
pub fn stored_score(v: f32) -> Option<f64> {
    v.is_finite().then(|| v.to_string().parse().expect("a finite f32 prints as a number"))
}

/// What a suite's evaluation can be told beyond the scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// ProcessBench: the first step scored below this is the predicted first error.
    pub step_threshold: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self { step_threshold: 0.5 }
    }
}

/// The suite's numbers from its scored rows, by the reference formulas.
pub fn evaluate(suite: Suite, rows: &[ScoredRow], options: &Options) -> Result<Evaluation, EvalError> {
    if rows.is_empty() {
        return Err(EvalError::Input(format!("no {suite} rows to evaluate")));
    }
    match suite {
        Suite::RewardBench => rewardbench::evaluate(rows),
        Suite::RewardBench2 => rewardbench2::evaluate(rows),
        Suite::RmBench => rm_bench::evaluate(rows),
        Suite::ProcessBench => processbench::evaluate(rows, options.step_threshold),
    }
}

/// The headline's name: `name` when all `of` parts (sections, subsets, domains) are in the
/// data, else saying how many are, since its figure then is not the leaderboard's.
pub(crate) fn headline_name(name: &str, present: usize, of: usize, parts: &str) -> String {
    if present == of {
        name.to_owned()
    } else {
        format!("{name} ({present} of {of} {parts})")
    }
}

/// The mean of `xs` (NaN for none, as numpy's).
pub(crate) fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n as f64
}

/// Subsets in order of first appearance, with their rows.
pub(crate) fn by_subset(rows: &[ScoredRow]) -> Vec<(&str, Vec<&ScoredRow>)> {
    let mut out: Vec<(&str, Vec<&ScoredRow>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(s, _)| *s == r.subset) {
            Some((_, v)) => v.push(r),
            None => out.push((&r.subset, vec![r])),
        }
    }
    out
}
