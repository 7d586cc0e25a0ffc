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
/// parts — text, and images as `image_url` parts.
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

/// One part of OpenAI-style content (`{"type": "text", "text": ...}`,
/// `{"type": "image_url", "image_url": {"url": ...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContentPart {
    pub fn text(text: String) -> Self {
        Self { kind: Some("text".into()), text: Some(text), extra: Map::new() }
    }

    /// An `image_url` part (a data URL or an http(s) URL).
    pub fn image_url(url: String) -> Self {
        let mut extra = Map::new();
        extra.insert("image_url".into(), serde_json::json!({ "url": url }));
        Self { kind: Some("image_url".into()), text: None, extra }
    }

    /// The URL of an `image_url` part (`{"url": ...}`, or the URL alone as some clients send it).
    fn image_url_of(&self) -> Option<&str> {
        match self.extra.get("image_url")? {
            Value::String(url) => Some(url),
            Value::Object(o) => o.get("url")?.as_str(),
            _ => None,
        }
    }
}

/// A content part that is neither text nor an image (audio, video, a file), named by its
/// place: a reward model's scores would silently leave it out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`content[{index}]`: {reason}")]
pub struct UnsupportedPart {
    pub index: usize,
    pub reason: String,
}

impl From<Message> for ChatMessage {
    /// Images come first, as `image_url` parts, then the text.
    fn from(m: Message) -> Self {
        let content = if m.images.is_empty() {
            MessageContent::Text(m.content)
        } else {
            let mut parts: Vec<ContentPart> = m.images.into_iter().map(ContentPart::image_url).collect();
            parts.push(ContentPart::text(m.content));
            MessageContent::Parts(parts)
        };
        Self { role: m.role, content, extra: m.extra }
    }
}

impl TryFrom<ChatMessage> for Message {
    type Error = UnsupportedPart;

    /// Text parts joined; `image_url` parts become the message's images.
    fn try_from(m: ChatMessage) -> Result<Self, UnsupportedPart> {
        let (content, images) = match m.content {
            MessageContent::Text(t) => (t, Vec::new()),
            MessageContent::Parts(parts) => {
                let (mut text, mut images) = (String::new(), Vec::new());
                for (index, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_deref(), &p.text) {
                        (Some("text") | None, Some(t)) => text.push_str(t),
                        (Some("image_url"), _) => images.push(
                            p.image_url_of()
                                .ok_or_else(|| UnsupportedPart {
                                    index,
                                    reason: "an `image_url` part needs `image_url.url`".into(),
                                })?
                                .to_owned(),
                        ),
                        (kind, _) => {
                            return Err(UnsupportedPart {
                                index,
                                reason: format!(
                                    "parts of type `{}` cannot be scored (text and image_url parts can)",
                                    kind.unwrap_or("?")
                                ),
                            })
                        }
                    }
                }
                (text, images)
            }
        };
        Ok(Self { role: m.role, content, images, extra: m.extra })
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
    fn content_parts_become_text_and_images_and_extra_keys_pass_through() {
        let m: ChatMessage = serde_json::from_value(json!({
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}, {"type": "text", "text": "b"}],
            "reasoning_content": "why"
        }))
        .unwrap();
        let m = Message::try_from(m).unwrap();
        assert_eq!((m.role, m.content.as_str()), (Role::User, "ab"));
        assert_eq!(m.images, ["data:image/png;base64,AA=="]);
        assert_eq!(m.extra["reasoning_content"], "why");
        let back = serde_json::to_value(ChatMessage::from(m)).unwrap();
        assert_eq!(
            back,
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                {"type": "text", "text": "ab"}], "reasoning_content": "why"})
        );
        let plain = serde_json::to_value(ChatMessage::from(Message::assistant("x"))).unwrap();
        assert_eq!(plain, json!({"role": "assistant", "content": "x"}));
        let audio: ChatMessage = serde_json::from_value(json!({"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "input_audio", "input_audio": {}}]}))
        .unwrap();
        let e = Message::try_from(audio).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().starts_with("`content[1]`: parts of type `input_audio`"), "{e}");
        let e =
            from_slice::<Vec<ChatMessage>>(br#"[{"role": "user", "content": "a"}, {"role": "user", "content": 5}]"#)
                .unwrap_err();
        assert!(e.path().starts_with("[1]") && e.to_string().contains("content parts"), "{e}");
    }
}
