//! The suites and their rows: each suite's columns as published, understood once for every
//! front end, and the scores a front end attaches to a row.

use crate::table::JsonRow;
use crate::EvalError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A benchmark suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    /// allenai/reward-bench: one chosen and one rejected answer per row.
    #[serde(rename = "rewardbench")]
    RewardBench,
    /// allenai/reward-bench-2: best-of-4 (one chosen, three rejected), Ties with several of each.
    #[serde(rename = "rewardbench2")]
    RewardBench2,
    /// THU-KEG/RM-Bench: three chosen and three rejected answers in three styles.
    RmBench,
    /// Qwen/ProcessBench: a solution's steps and the index of its first wrong step.
    #[serde(rename = "processbench")]
    ProcessBench,
}

impl Suite {
    pub const ALL: [Suite; 4] = [Suite::RewardBench, Suite::RewardBench2, Suite::RmBench, Suite::ProcessBench];

    /// The name on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Suite::RewardBench => "rewardbench",
            Suite::RewardBench2 => "rewardbench2",
            Suite::RmBench => "rm-bench",
            Suite::ProcessBench => "processbench",
        }
    }

    /// The suite named `name` (as `name` gives it; `-`/`_` and case are not significant).
    pub fn parse(name: &str) -> Result<Self, EvalError> {
        let norm = name.to_ascii_lowercase().replace('_', "-");
        let alias = match norm.as_str() {
            "reward-bench" | "rewardbench1" | "reward-bench-1" => "rewardbench",
            "reward-bench-2" | "rewardbench-2" => "rewardbench2",
            "rmbench" => "rm-bench",
            "process-bench" => "processbench",
            other => other,
        };
        Self::ALL.into_iter().find(|s| s.name() == alias).ok_or_else(|| {
            EvalError::Input(format!("unknown suite `{name}`: one of {}", Self::ALL.map(Suite::name).join(", ")))
        })
    }

    /// The Hub dataset the suite is published as.
    pub fn hub_dataset(self) -> &'static str {
        match self {
            Suite::RewardBench => "allenai/reward-bench",
            Suite::RewardBench2 => "allenai/reward-bench-2",
            Suite::RmBench => "THU-KEG/RM-Bench",
            Suite::ProcessBench => "Qwen/ProcessBench",
        }
    }

    /// The columns a row must have, as published.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Suite::RewardBench => &["prompt", "chosen", "rejected", "subset", "id"],
            Suite::RewardBench2 => &["id", "prompt", "chosen", "rejected", "num_correct", "subset"],
            Suite::RmBench => &["id", "prompt", "chosen", "rejected", "domain"],
            Suite::ProcessBench => &["id", "problem", "steps", "label"],
        }
    }

    /// Of a dataset's files, the splits this suite evaluates: RewardBench ships `raw` and
    /// `filtered` and is scored on `filtered`; every split of the others counts (ProcessBench's
    /// are its four subsets).
    pub fn wants_split(self, split: &str) -> bool {
        match self {
            Suite::RewardBench => split != "raw",
            _ => true,
        }
    }

    /// Reads one row; `split` is the split (file) it came from, ProcessBench's subset.
    pub fn row(self, obj: &JsonRow, split: &str) -> Result<Row, EvalError> {
        let row_name = || obj.get("id").map_or_else(|| "?".to_owned(), id_text);
        let err = |message: String| EvalError::Row { suite: self.name(), row: row_name(), message };
        for c in self.columns() {
            if !obj.contains_key(*c) {
                return Err(err(format!(
                    "no `{c}` column (a {} row has {}): is this the right --suite?",
                    self.name(),
                    self.columns().join(", ")
                )));
            }
        }
        let id = id_text(&obj["id"]);
        let text = |key: &str| -> Result<String, EvalError> {
            obj[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| err(format!("`{key}` must be a string, not {}", obj[key])))
        };
        let texts = |key: &str| -> Result<Vec<String>, EvalError> {
            match &obj[key] {
                Value::String(s) => Ok(vec![s.clone()]),
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| err(format!("`{key}[{i}]` must be a string, not {v}")))
                    })
                    .collect(),
                v => Err(err(format!("`{key}` must be a string or a non-empty list of strings, not {v}"))),
            }
        };
        let int = |key: &str| -> Result<i64, EvalError> {
            obj[key].as_i64().ok_or_else(|| err(format!("`{key}` must be an integer, not {}", obj[key])))
        };
        Ok(match self {
            Suite::RewardBench | Suite::RewardBench2 | Suite::RmBench => {
                let (chosen, rejected) = (texts("chosen")?, texts("rejected")?);
                let subset = text(if self == Suite::RmBench { "domain" } else { "subset" })?;
                let num_correct = match self {
                    Suite::RewardBench2 => {
                        let n = int("num_correct")?;
                        if n < 1 || n as usize != chosen.len() {
                            return Err(err(format!(
                                "`num_correct` is {n} but `chosen` holds {} answers",
                                chosen.len()
                            )));
                        }
                        Some(n as usize)
                    }
                    _ => None,
                };
                if self == Suite::RewardBench && (chosen.len() != 1 || rejected.len() != 1) {
                    return Err(err("RewardBench rows have one chosen and one rejected answer".into()));
                }
                if self == Suite::RmBench && (chosen.len() != 3 || rejected.len() != 3) {
                    return Err(err(format!(
                        "RM-Bench rows have three chosen and three rejected answers (one per style), not {} and {}",
                        chosen.len(),
                        rejected.len()
                    )));
                }
                let prompt = obj["prompt"].clone();
                if !(prompt.is_string() || prompt.is_array()) {
                    return Err(err(format!("`prompt` must be a string or a list of messages, not {prompt}")));
                }
                Row::Preference(PreferenceRow { id, subset, prompt, chosen, rejected, num_correct })
            }
            Suite::ProcessBench => {
                let steps = texts("steps")?;
                let label = int("label")?;
                if label < -1 || label >= steps.len() as i64 {
                    return Err(err(format!("`label` {label} is not -1 or a step index below {}", steps.len())));
                }
                Row::Steps(StepRow { id, subset: split.to_owned(), problem: text("problem")?, steps, label })
            }
        })
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A row id as text: RewardBench's are integers, the others' strings.
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A row of a preference suite.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRow {
    pub id: String,
    /// RewardBench's and RewardBench 2's `subset`, RM-Bench's `domain`.
    pub subset: String,
    /// A string (one user turn) or a list of chat messages.
    pub prompt: Value,
    pub chosen: Vec<String>,
    pub rejected: Vec<String>,
    /// RewardBench 2's `num_correct`.
    pub num_correct: Option<usize>,
}

impl PreferenceRow {
    /// The row as a `rewardlens score` preference line (`prompt`, lists of `chosen` and
    /// `rejected`): the form the records reader turns into sequences.
    pub fn score_line(&self) -> JsonRow {
        let mut o = JsonRow::new();
        o.insert("prompt".into(), self.prompt.clone());
        o.insert("chosen".into(), self.chosen.clone().into());
        o.insert("rejected".into(), self.rejected.clone().into());
        o
    }
}

/// A ProcessBench row.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub id: String,
    /// The split: gsm8k, math, olympiadbench or omnimath.
    pub subset: String,
    pub problem: String,
    pub steps: Vec<String>,
    /// The index of the first wrong step, -1 when every step is right.
    pub label: i64,
}

/// A row of any suite.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Preference(PreferenceRow),
    Steps(StepRow),
}

impl Row {
    pub fn id(&self) -> &str {
        match self {
            Row::Preference(r) => &r.id,
            Row::Steps(r) => &r.id,
        }
    }

    pub fn subset(&self) -> &str {
        match self {
            Row::Preference(r) => &r.subset,
            Row::Steps(r) => &r.subset,
        }
    }

    /// The row with `scores`, checked to fit it.
    pub fn scored(&self, suite: Suite, scores: RowScores) -> Result<ScoredRow, EvalError> {
        let bad = |message: String| EvalError::Scores { suite: suite.name(), row: self.id().to_owned(), message };
        match (self, &scores) {
            (Row::Preference(r), RowScores::Preference { chosen_scores, rejected_scores }) => {
                if chosen_scores.len() != r.chosen.len() || rejected_scores.len() != r.rejected.len() {
                    return Err(bad(format!(
                        "{} chosen and {} rejected scores for {} and {} answers",
                        chosen_scores.len(),
                        rejected_scores.len(),
                        r.chosen.len(),
                        r.rejected.len()
                    )));
                }
            }
            (Row::Steps(r), RowScores::Steps { step_scores }) => {
                if step_scores.len() != r.steps.len() {
                    return Err(bad(format!("{} step scores for {} steps", step_scores.len(), r.steps.len())));
                }
            }
            _ => return Err(bad("scores of the wrong kind for the row".into())),
        }
        let (num_correct, label) = match self {
            Row::Preference(r) => (r.num_correct, None),
            Row::Steps(r) => (None, Some(r.label)),
        };
        Ok(ScoredRow { id: self.id().to_owned(), subset: self.subset().to_owned(), num_correct, label, scores })
    }
}

/// What a front end scored for a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowScores {
    /// The reward of each answer, in the row's order.
    Preference { chosen_scores: Vec<f64>, rejected_scores: Vec<f64> },
    /// The reward of each step.
    Steps { step_scores: Vec<f64> },
}

/// A scored row: what the formulas need of it, and one line of the per-row JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredRow {
    pub id: String,
    pub subset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_correct: Option<usize>,
    /// ProcessBench's first wrong step (-1: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    #[serde(flatten)]
    pub scores: RowScores,
}

impl ScoredRow {
    /// The row's key in a results file: subset and id (ids repeat across ProcessBench's splits).
    pub fn key(&self) -> (String, String) {
        (self.subset.clone(), self.id.clone())
    }

    pub(crate) fn preference(&self, suite: Suite) -> Result<(&[f64], &[f64]), EvalError> {
        match &self.scores {
            RowScores::Preference { chosen_scores, rejected_scores } => Ok((chosen_scores, rejected_scores)),
            RowScores::Steps { .. } => Err(EvalError::Scores {
                suite: suite.name(),
                row: self.id.clone(),
                message: "step scores where answer scores belong".into(),
            }),
        }
    }
}

impl StepRow {
    /// The conversation a PRM scores (the problem, then the solution as one answer) and the
    /// steps with their places in that answer.
    pub fn conversation(&self) -> (Vec<rewardlens_core::Message>, Vec<rewardlens_core::Step>) {
        use rewardlens_core::Message;
        let (answer, steps) = self.answer_and_steps();
        (vec![Message::user(self.problem.as_str()), Message::assistant(answer)], steps)
    }

    /// The solution as one answer — its steps joined by blank lines, ProcessBench's own
    /// layout — and the steps with their places in it, so no re-splitting can move a boundary.
    pub fn answer_and_steps(&self) -> (String, Vec<rewardlens_core::Step>) {
        let mut answer = String::new();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                answer.push_str("\n\n");
            }
            let start = answer.len();
            answer.push_str(s);
            steps.push(rewardlens_core::Step { text: s.clone(), start, end: answer.len() });
        }
        (answer, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonRow {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn suite_names() {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(s.name()).unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.name()));
        }
        assert_eq!(Suite::parse("RM_Bench").unwrap(), Suite::RmBench);
        assert!(Suite::parse("mt-bench").unwrap_err().to_string().contains("rewardbench, rewardbench2"));
    }

    #[test]
    fn rows_name_what_is_wrong() {
        let rb2 = json!({"id": "7", "prompt": "p", "chosen": ["a"], "rejected": ["b", "c", "d"], "num_correct": 1, "subset": "Math"});
        let Row::Preference(r) = Suite::RewardBench2.row(&obj(rb2.clone()), "test").unwrap() else { panic!() };
        assert_eq!((r.chosen.len(), r.rejected.len(), r.num_correct), (1, 3, Some(1)));
        let mut bad = rb2.clone();
        bad["num_correct"] = json!(2);
        let e = Suite::RewardBench2.row(&obj(bad), "test").unwrap_err().to_string();
        assert!(e.contains("row 7") && e.contains("`num_correct` is 2"), "{e}");
        let e = Suite::RewardBench.row(&obj(rb2), "filtered").unwrap_err().to_string();
        assert!(e.contains("one chosen and one rejected"), "{e}");
        let e = Suite::ProcessBench.row(&obj(json!({"id": "x", "problem": "p", "steps": ["a"]})), "gsm8k").unwrap_err();
        assert!(e.to_string().contains("no `label` column"), "{e}");
        let e = Suite::ProcessBench
            .row(&obj(json!({"id": "x", "problem": "p", "steps": ["a"], "label": 1})), "gsm8k")
            .unwrap_err();
        assert!(e.to_string().contains("`label` 1 is not -1 or a step index below 1"), "{e}");
    }

    #[test]
    fn scored_rows_round_trip_as_jsonl_lines() {
        let row = Suite::ProcessBench
            .row(&obj(json!({"id": "gsm8k-3", "problem": "p", "steps": ["a", "b"], "label": 1})), "gsm8k")
            .unwrap();
        let s = row.scored(Suite::ProcessBench, RowScores::Steps { step_scores: vec![0.9, 0.1] }).unwrap();
        let line = serde_json::to_value(&s).unwrap();
        assert_eq!(line, json!({"id": "gsm8k-3", "subset": "gsm8k", "label": 1, "step_scores": [0.9, 0.1]}));
        assert_eq!(serde_json::from_value::<ScoredRow>(line).unwrap(), s);
        assert!(row.scored(Suite::ProcessBench, RowScores::Steps { step_scores: vec![0.9] }).is_err());
    }
}
