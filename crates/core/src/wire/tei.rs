//! Hugging Face text-embeddings-inference `POST /predict` (`router/src/http/types.rs`):
//! sequence classification of texts already rendered with the chat template.

use serde::{Deserialize, Serialize};

/// The request; `raw_scores: true` returns logits instead of probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictRequest {
    /// Which of `rewardlens serve`'s models (TEI serves one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub inputs: PredictInputs,
    #[serde(default)]
    pub raw_scores: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// A text, or a batch of sequences. In TEI a sequence is a text or a pair of texts, so a
/// batch of single texts is `[[text], ...]` (two bare strings would be one pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a text or a batch [[text], ...]")]
pub enum PredictInputs {
    Single(String),
    Batch(Vec<Vec<String>>),
}

/// The answer: each input's labels, best score first; for a single text, its list alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a list of predictions, or one list per input")]
pub enum PredictResponse {
    Single(Vec<Prediction>),
    Batch(Vec<Vec<Prediction>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub score: f32,
    /// `LABEL_<i>` or the model's `id2label` name.
    #[serde(default)]
    pub label: String,
}

/// An error answer: `{"error": message, "error_type": "Validation" | "Overloaded" | ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    pub error_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_slice;
    use serde_json::json;

    #[test]
    fn single_and_batched_predictions() {
        let body = json!({"inputs": [["a"], ["b"]], "raw_scores": true, "truncate": false});
        let r: PredictRequest = from_slice(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.inputs, PredictInputs::Batch(vec![vec!["a".into()], vec!["b".into()]]));
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
        let r: PredictRequest = from_slice(br#"{"inputs": "one"}"#).unwrap();
        assert_eq!((r.inputs, r.raw_scores), (PredictInputs::Single("one".into()), false));
        let e = from_slice::<PredictRequest>(br#"{"inputs": 5}"#).unwrap_err();
        assert!(e.path() == "inputs" && e.to_string().contains("[[text], ...]"), "{e}");

        let one: PredictResponse = from_slice(br#"[{"score": 0.9, "label": "LABEL_0"}]"#).unwrap();
        assert_eq!(one, PredictResponse::Single(vec![Prediction { score: 0.9, label: "LABEL_0".into() }]));
        let batch: PredictResponse = from_slice(br#"[[{"score": 0.9, "label": "a"}], [{"score": 0.1}]]"#).unwrap();
        assert!(matches!(batch, PredictResponse::Batch(ref rows) if rows.len() == 2 && rows[1][0].label.is_empty()));
        let back: serde_json::Value = serde_json::from_str(&serde_json::to_string(&one).unwrap()).unwrap();
        assert_eq!(back, json!([{"score": 0.9, "label": "LABEL_0"}]));
    }
}
