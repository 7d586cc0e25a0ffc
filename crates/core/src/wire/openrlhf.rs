//! OpenRLHF's reward server (`openrlhf/cli/serve_rm.py`, `POST /get_reward`) as OpenRLHF's
//! `remote_rm_fn` and LightRFT's `request_api_wrapper` call it: texts already rendered with the
//! chat template in, one reward per text out.

use super::{from_value, LabelValues, WireError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"query": [...], "prompts": [...], "labels": [...]}` (OpenRLHF) or
/// `{"queries": [...], "prompts": [...], "references": [...], "images": [...]}` (LightRFT's
/// `remote_rm_fn`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewardRequest {
    /// Which of `rewardlens serve`'s models (OpenRLHF's server has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<Queries>,
    /// LightRFT's name for `query` (`query` wins when both are given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries: Option<Queries>,
    /// The prompt part of each query; informational (the reward model scores the query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    /// Reference answers for rule-based reward servers (null when there are none); a reward
    /// model ignores them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Value>>,
    /// LightRFT's reference answers (its name for `labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<Value>>,
    /// LightRFT's images for multimodal reward models: per query, a list of base64-encoded
    /// image files (no `data:` prefix), or null for a query without images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Option<Vec<String>>>>,
}

impl RewardRequest {
    /// The first query that carries an image.
    pub fn images_at(&self) -> Option<usize> {
        self.images.as_ref()?.iter().position(|i| i.as_ref().is_some_and(|l| !l.is_empty()))
    }

    /// The texts to score: `query`, else `queries`.
    pub fn into_texts(self) -> Option<Vec<String>> {
        self.query.or(self.queries).map(Queries::into_vec)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a text or a list of texts")]
pub enum Queries {
    List(Vec<String>),
    One(String),
}

impl Queries {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(v) => v,
            Self::One(t) => vec![t],
        }
    }
}

/// `{"rewards": [...], "scores": [...], "extra_logs": {...}}`; servers built on other
/// conventions put the rewards under a key of their own (the client's `score_key`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewardResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewards: Option<Rewards>,
    /// The same values as `rewards` in `serve_rm.py`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Rewards>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_logs: Option<Map<String, Value>>,
    /// Any other keys.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RewardResponse {
    /// The keys the answer has.
    pub fn keys(&self) -> Vec<&str> {
        let named = [
            ("rewards", self.rewards.is_some()),
            ("scores", self.scores.is_some()),
            ("extra_logs", self.extra_logs.is_some()),
        ];
        named
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(k, _)| k)
            .chain(self.other.keys().map(String::as_str))
            .collect()
    }

    /// The rewards under `key` (`rewards`, `scores` or a key of the server's own); `None`
    /// when the answer has no such key.
    pub fn into_rewards(mut self, key: &str) -> Result<Option<Rewards>, WireError> {
        match key {
            "rewards" => Ok(self.rewards),
            "scores" => Ok(self.scores),
            _ => self.other.remove(key).map(|v| from_value(v, key)).transpose(),
        }
    }
}

/// The rewards: one per query, each a number (or a list of numbers, one per label); a bare
/// number for a single query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a list with a number (or a list of numbers) per query, or a number")]
pub enum Rewards {
    PerQuery(Vec<LabelValues>),
    Bare(f32),
}

impl Rewards {
    /// Each query's values.
    pub fn into_per_query(self) -> Vec<Vec<f32>> {
        match self {
            Self::PerQuery(v) => v.into_iter().map(LabelValues::into_vec).collect(),
            Self::Bare(x) => vec![vec![x]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_slice;
    use serde_json::json;

    #[test]
    fn openrlhf_and_lightrft_requests() {
        let body = json!({"query": ["<|im_start|>user\nq", "t2"], "prompts": ["q", "p2"], "labels": [null, "42"]});
        let r: RewardRequest = from_slice(body.to_string().as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
        assert_eq!(r.into_texts().unwrap().len(), 2);
        let r: RewardRequest = from_slice(br#"{"queries": ["a"], "prompts": ["p"]}"#).unwrap();
        assert_eq!(r.images_at(), None);
        assert_eq!(r.into_texts().unwrap(), ["a"]);
        let body = json!({"queries": ["a", "b"], "prompts": ["p", "q"], "references": ["1", null], "images": [null, ["/9j/4AAQ"]]});
        let r: RewardRequest = from_slice(body.to_string().as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
        assert_eq!(r.images_at(), Some(1));
        let r: RewardRequest = from_slice(br#"{"query": "one", "queries": ["ignored"]}"#).unwrap();
        assert_eq!(r.into_texts().unwrap(), ["one"]);
        assert_eq!(from_slice::<RewardRequest>(b"{}").unwrap().into_texts(), None);
        let e = from_slice::<RewardRequest>(br#"{"query": [1]}"#).unwrap_err();
        assert_eq!(e.path(), "query");
    }

    #[test]
    fn rewards_under_any_key_in_any_shape() {
        let body = json!({"rewards": [0.5, -1.5], "scores": [0.5, -1.5], "extra_logs": {"dummy_scores": [0.5, -1.5]}});
        let r: RewardResponse = from_slice(body.to_string().as_bytes()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
        assert_eq!(r.keys(), ["rewards", "scores", "extra_logs"]);
        assert_eq!(r.into_rewards("rewards").unwrap().unwrap().into_per_query(), [[0.5], [-1.5]]);
        let r: RewardResponse = from_slice(br#"{"score": 2.0, "rewards": [[1, 2]]}"#).unwrap();
        assert_eq!(r.clone().into_rewards("score").unwrap().unwrap().into_per_query(), [[2.0]]);
        assert_eq!(r.clone().into_rewards("rewards").unwrap().unwrap().into_per_query(), [[1.0, 2.0]]);
        assert_eq!(r.into_rewards("scores").unwrap(), None);
        let r: RewardResponse = from_slice(br#"{"mine": [1, "x"]}"#).unwrap();
        assert_eq!(r.into_rewards("mine").unwrap_err().path(), "mine");
        let e = from_slice::<RewardResponse>(br#"{"rewards": [null]}"#).unwrap_err();
        assert_eq!(e.path(), "rewards");
    }
}
