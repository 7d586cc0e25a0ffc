use serde::{Deserialize, Serialize};

/// A chat role as reward-model templates know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One chat message. Extra keys (e.g. `reasoning_content`) are passed through to the template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Images that go with the message, before its text: file paths or URLs as an input line
    /// gives them, data URLs once a front end has read them. Only a multimodal reward server
    /// can score them; a local (text-only) model refuses a conversation that has any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), images: Vec::new(), extra: Default::default() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// How many images a conversation carries.
pub fn image_count(conversation: &[Message]) -> usize {
    conversation.iter().map(|m| m.images.len()).sum()
}

/// `[user(prompt), assistant(response)]`: the conversation a prompt/response pair stands for.
pub fn prompt_response(prompt: &str, response: &str) -> Vec<Message> {
    vec![Message::user(prompt), Message::assistant(response)]
}
