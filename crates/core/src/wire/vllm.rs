//! vLLM's pooling API: `POST /pooling` and `POST /classify`
//! (`vllm/entrypoints/pooling/{pooling,classify}/protocol.py`), with the OpenAI-style
//! `UsageInfo`, `ModelList` and `ErrorResponse` of `vllm/entrypoints/openai/protocol.py`.

use super::{ChatMessage, LabelValues};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `/pooling` and of `/classify` (which has no `task`): texts or token ids
/// (`input`), or one conversation (`messages`) for the server to render with the model's
/// chat template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolingRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<PoolingInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<PoolingTask>,
    /// Sigmoid (one label) or softmax (several) over the logits; on unless set to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_activation: Option<bool>,
    /// Older names of `use_activation` that vLLM still reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub softmax: Option<bool>,
    /// Whether the tokenizer adds its special tokens to `input` texts (not to text already
    /// rendered with the chat template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_special_tokens: Option<bool>,
}

impl PoolingRequest {
    /// Whether to apply the activation: `use_activation`, else its older names, else yes.
    pub fn activation_on(&self) -> bool {
        self.use_activation.or(self.activation).or(self.softmax).unwrap_or(true)
    }
}

/// `input`: a text, a list of texts, one list of token ids, or a list of those (a list may
/// mix texts and token lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a text, a list of texts, a list of token ids or a list of token-id lists")]
pub enum PoolingInput {
    Text(String),
    Tokens(Vec<u32>),
    Batch(Vec<PoolingInputItem>),
}

/// One sequence of a batched `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a text or a list of token ids")]
pub enum PoolingInputItem {
    Text(String),
    Tokens(Vec<u32>),
}

/// What `/pooling` computes. Unknown names are kept, so the server can refuse them in
/// vLLM's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum PoolingTask {
    /// One value per label, at the pooled token.
    Classify,
    /// One value per label at every token (process reward models).
    TokenClassify,
    Other(String),
}

impl PoolingTask {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Classify => "classify",
            Self::TokenClassify => "token_classify",
            Self::Other(name) => name,
        }
    }
}

impl From<String> for PoolingTask {
    fn from(name: String) -> Self {
        match name.as_str() {
            "classify" => Self::Classify,
            "token_classify" => Self::TokenClassify,
            _ => Self::Other(name),
        }
    }
}

impl From<PoolingTask> for String {
    fn from(task: PoolingTask) -> Self {
        match task {
            PoolingTask::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

/// The answer of `/pooling` and `/classify` (vLLM's `PoolingResponse` and
/// `ClassificationResponse`, alike but for their items). vLLM always sends `id`, `object`,
/// `created`, `model` and `usage`; a client needs only `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse<Item> {
    #[serde(default)]
    pub id: Option<String>,
    /// `"list"`.
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default)]
    pub model: Option<String>,
    pub data: Vec<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The answer of `/pooling`.
pub type PoolingResponse = ListResponse<PoolingItem>;

/// One input's result (`PoolingResponseData`). Items may come in any order; `index` says
/// whose they are (a missing one: its position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolingItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `"pooling"`.
    #[serde(default)]
    pub object: Option<String>,
    pub data: PoolingData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a list of numbers, a list of numbers per token, or a number")]
pub enum PoolingData {
    /// One value per label (task `classify`).
    Values(Vec<f32>),
    /// One list of values per token (task `token_classify`).
    TokenRows(Vec<Vec<f32>>),
    /// A one-label value, as some servers send it.
    Bare(f32),
}

/// The answer of `/classify`.
pub type ClassifyResponse = ListResponse<ClassifyItem>;

/// One input's result (`ClassificationData`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The most probable label's name.
    #[serde(default)]
    pub label: Option<String>,
    /// One value per label, in label order (probabilities unless `use_activation: false`).
    pub probs: LabelValues,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
}

/// `UsageInfo`. Pooling generates nothing: `completion_tokens` is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
    /// `{cached_tokens}` or null.
    pub prompt_tokens_details: Option<Value>,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `"list"`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name requests select the model by (`model`).
    pub id: String,
    /// `"model"`.
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub root: Option<String>,
    pub parent: Option<String>,
    /// Tokens per sequence at most.
    pub max_model_len: Option<usize>,
    #[serde(default)]
    pub permission: Vec<Value>,
}

/// An error answer: `{"error": {message, type, param, code}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
    /// `BadRequestError`, `NotFoundError`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// The HTTP status.
    pub code: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{from_slice, MessageContent};
    use serde_json::json;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: Value) -> T {
        let typed: T = from_slice(v.to_string().as_bytes()).unwrap();
        let back: Value = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
        assert_eq!(back, v, "serializes back to the same JSON");
        typed
    }

    #[test]
    fn requests_as_vllm_documents_them() {
        // docs/serving/openai_compatible_server.md: a chat-style pooling request.
        let r: PoolingRequest = round_trip(json!({
            "model": "Skywork/Skywork-Reward-V2-Qwen3-0.6B",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "task": "classify",
            "use_activation": false
        }));
        assert_eq!(r.task, Some(PoolingTask::Classify));
        assert!(!r.activation_on());
        assert!(matches!(&r.messages.as_ref().unwrap()[1].content, MessageContent::Text(t) if t == "a"));
        let r: PoolingRequest = round_trip(json!({"input": ["a", "b"], "add_special_tokens": false}));
        assert!(matches!(r.input, Some(PoolingInput::Batch(ref b)) if b.len() == 2));
        assert!(r.activation_on(), "on by default");
        let r: PoolingRequest = round_trip(json!({"input": [[1, 2], [3]], "task": "token_classify", "softmax": false}));
        assert_eq!(r.task, Some(PoolingTask::TokenClassify));
        assert!(!r.activation_on(), "older name");
        let r: PoolingRequest = round_trip(json!({"input": [1, 2, 3]}));
        assert_eq!(r.input, Some(PoolingInput::Tokens(vec![1, 2, 3])));
        let r: PoolingRequest = round_trip(json!({"input": "one text", "task": "embed"}));
        assert_eq!(r.task.unwrap().as_str(), "embed");
        let r: PoolingRequest = round_trip(json!({"input": ["mixed", [7, 8]]}));
        assert_eq!(
            r.input,
            Some(PoolingInput::Batch(vec![
                PoolingInputItem::Text("mixed".into()),
                PoolingInputItem::Tokens(vec![7, 8])
            ]))
        );
        let e = from_slice::<PoolingRequest>(br#"{"input": [1, -2]}"#).unwrap_err();
        assert_eq!(e.path(), "input");
        assert!(e.to_string().contains("list of token ids"), "{e}");
    }

    #[test]
    fn responses_keep_every_shape() {
        let r: PoolingResponse = round_trip(json!({
            "id": "pool-1", "object": "list", "created": 1, "model": "m",
            "data": [{"index": 0, "object": "pooling", "data": [[0.5, 0.25], [1.0, 2.0]]},
                     {"index": 1, "object": "pooling", "data": [3.5]},
                     {"index": 2, "object": "pooling", "data": -1.25}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4, "completion_tokens": 0, "prompt_tokens_details": null}
        }));
        assert_eq!(r.data[0].data, PoolingData::TokenRows(vec![vec![0.5, 0.25], vec![1.0, 2.0]]));
        assert_eq!(r.data[1].data, PoolingData::Values(vec![3.5]));
        assert_eq!(r.data[2].data, PoolingData::Bare(-1.25));
        // Only `data` is needed.
        let r: PoolingResponse = from_slice(br#"{"data": [{"data": [1]}]}"#).unwrap();
        assert_eq!((r.data[0].index, r.usage), (None, None));
        let r: ClassifyResponse = round_trip(json!({
            "id": "classify-1", "object": "list", "created": 1, "model": "m",
            "data": [{"index": 0, "label": "LABEL_0", "probs": [0.75, 0.25], "num_classes": 2}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3, "completion_tokens": 0, "prompt_tokens_details": null}
        }));
        assert_eq!(r.data[0].probs, LabelValues::List(vec![0.75, 0.25]));
        round_trip::<ModelList>(json!({"object": "list", "data": [{"id": "m", "object": "model", "created": 1,
            "owned_by": "rewardlens", "root": "m", "parent": null, "max_model_len": 8192, "permission": []}]}));
        round_trip::<ErrorResponse>(json!({"error": {"message": "The model `x` does not exist.",
            "type": "NotFoundError", "param": null, "code": 404}}));
    }
}
