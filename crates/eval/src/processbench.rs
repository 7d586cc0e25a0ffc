//! ProcessBench (Qwen/ProcessBench), as its reference code counts (`code/run_eval.py` in
//! <https://github.com/QwenLM/ProcessBench/blob/main/code/run_eval.py>):
//!
//! - the prediction is the first step whose reward is below the threshold, -1 when none is
//!   (the reference repo has no scalar-PRM script; this is the rule its critic and PRM
//!   examples amount to, with the threshold an option, 0.5 by default);
//! - per split: accuracy on the erroneous solutions (label ≠ -1: the prediction must be the
//!   exact first wrong step) and on the correct ones (label = -1: the prediction must be -1),
//!   both in percent, and F1 = 2ab/(a + b) of those percents;
//! - the headline is the mean F1 of the splits (the paper's Avg. F1).

use crate::{by_subset, mean, EvalError, Evaluation, RowScores, ScoredRow, Suite, TableLine};
use serde_json::{json, Map, Value};

/// The first step below `threshold`, or -1.
pub fn predicted_first_error(step_scores: &[f64], threshold: f64) -> i64 {
    step_scores.iter().position(|&s| s < threshold).map_or(-1, |i| i as i64)
}

fn prediction(row: &ScoredRow, threshold: f64) -> Result<(i64, i64), EvalError> {
    let bad = |message: &str| EvalError::Scores { suite: "processbench", row: row.id.clone(), message: message.into() };
    let RowScores::Steps { step_scores } = &row.scores else {
        return Err(bad("answer scores where step scores belong"));
    };
    let label = row.label.ok_or_else(|| bad("no `label`"))?;
    Ok((predicted_first_error(step_scores, threshold), label))
}

pub fn evaluate(rows: &[ScoredRow], threshold: f64) -> Result<Evaluation, EvalError> {
    let mut lines = Vec::new();
    let mut results = Map::new();
    let mut wrong = Vec::new();
    let mut f1s = Vec::new();
    for (split, rs) in by_subset(rows) {
        let (mut error, mut correct) = (Vec::new(), Vec::new());
        for r in &rs {
            let (p, label) = prediction(r, threshold)?;
            if p != label {
                wrong.push(r.key());
            }
            let matched = f64::from(u8::from(p == label));
            if label == -1 {
                correct.push(matched);
            } else {
                error.push(matched);
            }
        }
        let acc1 = mean(error.iter().copied()) * 100.0;
        let acc2 = mean(correct.iter().copied()) * 100.0;
        let f1 = 2.0 * acc1 * acc2 / (acc1 + acc2);
        results.insert(split.to_owned(), json!({"error_acc": acc1, "correct_acc": acc2, "f1": f1}));
        lines.push(TableLine { name: split.to_owned(), section: false, rows: rs.len(), score: f1 });
        f1s.push(f1);
    }
    let avg = mean(f1s);
    results.insert("avg_f1".into(), avg.into());
    Ok(Evaluation {
        suite: Suite::ProcessBench,
        lines,
        headline: ("Avg. F1".into(), avg),
        results: Value::Object(results),
        wrong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(split: &str, label: i64, scores: &[f64]) -> ScoredRow {
        ScoredRow {
            id: format!("{split}-{label}-{scores:?}"),
            subset: split.into(),
            num_correct: None,
            label: Some(label),
            scores: RowScores::Steps { step_scores: scores.to_vec() },
        }
    }

    #[test]
    fn first_error_and_f1_per_split() {
        assert_eq!(predicted_first_error(&[0.9, 0.5, 0.2], 0.5), 2, "0.5 is not below 0.5");
        assert_eq!(predicted_first_error(&[0.9, 0.8], 0.5), -1);
        let rows = [
            row("gsm8k", 1, &[0.9, 0.1, 0.9]), // right
            row("gsm8k", 2, &[0.9, 0.1, 0.1]), // predicted 1: wrong
            row("gsm8k", -1, &[0.9, 0.9]),     // right
            row("gsm8k", -1, &[0.4, 0.9]),     // wrong
            row("gsm8k", -1, &[0.6, 0.7]),     // right
            row("math", 0, &[0.1]),            // right
            row("math", -1, &[0.7]),           // right
        ];
        let e = evaluate(&rows, 0.5).unwrap();
        // As the reference: the mean first, then × 100.
        let (a, b) = (50.0, 2.0 / 3.0 * 100.0);
        assert_eq!(e.results["gsm8k"]["error_acc"], a);
        assert_eq!(e.results["gsm8k"]["correct_acc"], b);
        let f1 = 2.0 * a * b / (a + b);
        assert_eq!(e.results["gsm8k"]["f1"], f1);
        assert_eq!(e.results["math"]["f1"], 100.0);
        assert_eq!(e.headline.1, (f1 + 100.0) / 2.0);
        assert_eq!(e.wrong.len(), 2);
    }
}
