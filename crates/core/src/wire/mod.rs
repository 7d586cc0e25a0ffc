//! The JSON bodies of the reward-serving protocols, one submodule per protocol: what
//! `rewardlens-remote` sends and reads and what `rewardlens serve` reads and answers are the
//! same types, so the two cannot drift apart.
//!
//! Shapes follow each project's own source (named on each type). Fields a real server may
//! leave out or send as null are `Option`s; the variants real servers emit (a bare number for
//! a one-label score, a list per token, a text or a list of texts) are untagged enums whose
//! `expecting` message says what was wanted. [`from_slice`] names the path of a field that did
//! not fit (`data[0].data`).

pub mod nim;
pub mod openrlhf;
pub mod tei;
pub mod vllm;

use crate::types::{Message, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A body that did not decode as its protocol's type: not JSON at all, or JSON with a field
/// of the wrong shape, named by its path.
#[derive(Debug, thiserror::Error)]
#[error("{}{error}", if .path.is_empty() { String::new() } else { format!("`{}`: ", .path) })]
pub struct WireError {
    path: String,
    error: serde_json::Error,
}

impl WireError {
    /// Whether the body is not JSON (or was cut off), rather than JSON of the wrong shape.
    pub fn is_syntax(&self) -> bool {
        !self.error.is_data()
    }

    /// Where the field that did not fit is (`data[0].data`); empty for the body as a whole.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Decodes a body, naming the path of the first field that does not fit.
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner();
        // A syntax error's path only says how far the parser got; the message has the position.
        let path = if error.is_data() && path != "." { path } else { String::new() };
        WireError { path, error }
    })?;
    de.end().map_err(|error| WireError { path: String::new(), error })?;
    Ok(value)
}

/// A value decoded as `T`, with errors naming `path` (where the value came from).
pub fn from_value<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, WireError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match inner.as_str() {
            "." => path.to_owned(),
            p if p.starts_with('[') => format!("{path}{p}"),
            p => format!("{path}.{p}"),
        };
        WireError { path, error: e.into_inner() }
    })
}

/// One input's values, one per label; some servers send a bare number for a one-label model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a number or a list of numbers")]
pub enum LabelValues {
    List(Vec<f32>),
    Bare(f32),
}

impl LabelValues {
    pub fn into_vec(self) -> Vec<f32> {
        match self {
            Self::List(v) => v,
            Self::Bare(x) => vec![x],
        }
    }
}

/// A chat message as the OpenAI-style APIs (vLLM, NIM) take it: `content` may be a list of
/// parts, of which only the text is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: MessageContent,
    /// Other keys (e.g. `reasoning_content`), passed on to the chat template.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a text or a list of content parts")]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of OpenAI-style content (`{"type": "text", "text": ...}`, `{"type": "image_url", ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessageContent {
    /// The text, parts joined (parts without text, such as images, are dropped).
    pub fn into_text(self) -> String {
        match self {
            Self::Text(t) => t,
            Self::Parts(parts) => parts.into_iter().filter_map(|p| p.text).collect(),
        }
    }
}

impl From<Message> for ChatMessage {
    fn from(m: Message) -> Self {
        Self { role: m.role, content: MessageContent::Text(m.content), extra: m.extra }
    }
}

impl From<ChatMessage> for Message {
    fn from(m: ChatMessage) -> Self {
        Self { role: m.role, content: m.content.into_text(), extra: m.extra }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_path_or_say_not_json() {
        #[derive(Debug, Deserialize)]
        struct Body {
            #[allow(dead_code)]
            data: Vec<Item>,
        }
        #[derive(Debug, Deserialize)]
        struct Item {
            #[allow(dead_code)]
            values: LabelValues,
        }
        let e = from_slice::<Body>(br#"{"data": [{"values": [1]}, {"values": "x"}]}"#).unwrap_err();
        assert!(!e.is_syntax());
        assert_eq!(e.path(), "data[1].values");
        assert!(e.to_string().starts_with("`data[1].values`: expected a number or a list of numbers"), "{e}");
        let e = from_slice::<Body>(br#"{"data": [{"values": [1]}"#).unwrap_err();
        assert!(e.is_syntax() && e.path().is_empty(), "{e}");
        let e = from_slice::<Body>(br#"{"data": []} trailing"#).unwrap_err();
        assert!(e.is_syntax(), "{e}");
        let e = from_slice::<Body>(br#"{"data": [{}]}"#).unwrap_err();
        assert_eq!(e.to_string().split(" at line").next().unwrap(), "`data[0]`: missing field `values`");
        let e = from_value::<Vec<LabelValues>>(json!([1.0, null]), "rewards").unwrap_err();
        assert_eq!(e.path(), "rewards[1]");
    }

    #[test]
    fn content_parts_become_text_and_extra_keys_pass_through() {
        let m: ChatMessage = serde_json::from_value(json!({
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}],
            "reasoning_content": "why"
        }))
        .unwrap();
        let m = Message::from(m);
        assert_eq!((m.role, m.content.as_str()), (Role::Assistant, "ab"));
        assert_eq!(m.extra["reasoning_content"], "why");
        let back = serde_json::to_value(ChatMessage::from(m)).unwrap();
        assert_eq!(back, json!({"role": "assistant", "content": "ab", "reasoning_content": "why"}));
        let e =
            from_slice::<Vec<ChatMessage>>(br#"[{"role": "user", "content": "a"}, {"role": "user", "content": 5}]"#)
                .unwrap_err();
        assert!(e.path().starts_with("[1]") && e.to_string().contains("content parts"), "{e}");
    }
}
