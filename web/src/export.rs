//! Results as the user downloads them: JSON in the CLI's `prompt`/`responses` output shape
//! (plus timing and the preference matrix), and CSV with one row per response.

use crate::protocol::SequenceResult;
use rewardlens_core::{preference_probability, ranking};
use rewardlens_models::records::{num, nums};
use serde_json::{json, Map, Value};

/// A scored comparison, as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub model: String,
    pub backend: String,
    /// The prompt, or for a conversation the rendered conversation's last user turn.
    pub prompt: String,
    pub responses: Vec<String>,
    pub results: Vec<SequenceResult>,
    pub labels: Vec<String>,
}

impl Comparison {
    pub fn scores(&self) -> Vec<f32> {
        self.results.iter().map(|r| r.score).collect()
    }

    /// Response indices, best first.
    pub fn ranking(&self) -> Vec<usize> {
        ranking(&self.scores())
    }

    /// 1-based rank of each response, in input order.
    pub fn ranks(&self) -> Vec<usize> {
        let mut ranks = vec![0; self.results.len()];
        for (pos, &i) in self.ranking().iter().enumerate() {
            ranks[i] = pos + 1;
        }
        ranks
    }

    /// P(i preferred over j) = sigmoid(r_i - r_j), the Bradley-Terry reading of reward scores.
    pub fn preference_matrix(&self) -> Vec<Vec<f32>> {
        let s = self.scores();
        s.iter().map(|&a| s.iter().map(|&b| preference_probability(a, b)).collect()).collect()
    }

    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("model".into(), self.model.clone().into());
        o.insert("backend".into(), self.backend.clone().into());
        o.insert("prompt".into(), self.prompt.clone().into());
        o.insert("responses".into(), json!(self.responses));
        o.insert("scores".into(), nums(&self.scores()));
        o.insert("ranking".into(), json!(self.ranking()));
        if self.labels.len() > 1 {
            let attrs: Vec<Value> = self
                .results
                .iter()
                .map(|r| Value::Object(self.labels.iter().cloned().zip(r.logits.iter().map(|&v| num(v))).collect()))
                .collect();
            o.insert("attributes".into(), Value::Array(attrs));
        }
        o.insert(
            "preference_probability".into(),
            Value::Array(self.preference_matrix().iter().map(|r| nums(r)).collect()),
        );
        o.insert("tokens".into(), json!(self.results.iter().map(|r| r.tokens).collect::<Vec<_>>()));
        o.insert("ms".into(), json!(self.results.iter().map(|r| (r.ms * 10.0).round() / 10.0).collect::<Vec<_>>()));
        if self.results.iter().any(|r| r.truncated_tokens > 0) {
            o.insert(
                "truncated_tokens".into(),
                json!(self.results.iter().map(|r| r.truncated_tokens).collect::<Vec<_>>()),
            );
        }
        Value::Object(o)
    }

    pub fn to_csv(&self) -> String {
        let multi = self.labels.len() > 1;
        let mut head = vec!["index".to_owned(), "rank".into(), "score".into()];
        if multi {
            head.extend(self.labels.iter().map(|l| csv_field(l)));
        }
        head.extend(["tokens".into(), "ms".into(), "response".into()]);
        let mut out = head.join(",");
        out.push('\n');
        let ranks = self.ranks();
        for (i, r) in self.results.iter().enumerate() {
            let mut row = vec![i.to_string(), ranks[i].to_string(), r.score.to_string()];
            if multi {
                row.extend(r.logits.iter().map(|v| v.to_string()));
            }
            row.push(r.tokens.to_string());
            row.push(format!("{:.1}", r.ms));
            row.push(csv_field(self.responses.get(i).map(String::as_str).unwrap_or("")));
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }
}

/// RFC 4180 quoting; a leading `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do
/// not run a response as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(score: f32, logits: Vec<f32>) -> SequenceResult {
        SequenceResult {
            score,
            logits,
            tokens: 7,
            truncated_tokens: 0,
            ms: 12.34,
            steps: None,
            token_scores: None,
            step_error: None,
        }
    }

    #[test]
    fn json_and_csv_carry_scores_ranks_and_text() {
        let c = Comparison {
            model: "m".into(),
            backend: "WASM CPU".into(),
            prompt: "p".into(),
            responses: vec!["a, \"quoted\"\nline".into(), "=1+1".into()],
            results: vec![seq(0.5, vec![0.5, 1.0]), seq(2.0, vec![2.0, -1.0])],
            labels: vec!["helpful".into(), "safe".into()],
        };
        assert_eq!(c.ranking(), vec![1, 0]);
        assert_eq!(c.ranks(), vec![2, 1]);
        let m = c.preference_matrix();
        assert!((m[1][0] - 1.0 / (1.0 + (-1.5f32).exp())).abs() < 1e-6 && (m[0][0] - 0.5).abs() < 1e-6);
        let j = c.to_json();
        assert_eq!(j["scores"], json!([0.5, 2.0]));
        assert_eq!(j["attributes"][1]["safe"], json!(-1.0));
        let csv = c.to_csv();
        assert_eq!(
            csv,
            "index,rank,score,helpful,safe,tokens,ms,response\n\
             0,2,0.5,0.5,1,7,12.3,\"a, \"\"quoted\"\"\nline\"\n\
             1,1,2,2,-1,7,12.3,'=1+1\n"
        );
    }
}
