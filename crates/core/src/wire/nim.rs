//! NVIDIA NIM reward models: an OpenAI chat completion (`POST /v1/chat/completions`) whose
//! answer content is `name:score,...` (nemotron-4-340b-reward's five attributes,
//! `reward:<score>` for llama-3.1-nemotron-70b-reward), with the same pairs in
//! `logprobs.content[].{token, logprob}` (where NeMo Curator reads them). Shapes from NVIDIA's
//! "Using Reward Models" docs and the OpenAI chat completion object.

use super::ChatMessage;
use crate::types::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request: the conversation, ending with the assistant turn to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Reward models answer at once; `true` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// The answer (OpenAI's `ChatCompletion`). NIM sends `id`, `object`, `created` and `model`,
/// some of them null; a client needs only `choices[0]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    #[serde(default)]
    pub id: Option<String>,
    /// `"chat.completion"`.
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: usize,
    /// `"length"`: the answer is one token long.
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub message: Option<ChoiceMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceMessage {
    #[serde(default)]
    pub role: Option<Role>,
    /// `name:score,...`: see [`reward_content`].
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
}

/// One attribute: its name as the token, its score as the log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    #[serde(default)]
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Vec<Value>,
}

/// OpenAI's `CompletionUsage`: the prompt, and one completion token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// Content that is not `name:score,...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardContentError {
    #[error("content `{content}` is not `name:score,...`")]
    NotPairs { content: String },
    #[error("content `{content}`: `{value}` is not a number")]
    NotANumber { content: String, value: String },
}

/// The answer content for scores by name: `helpfulness:1.5,correctness:0.25`. Scores are
/// written in their shortest exact form, so [`parse_reward_content`] gets the same f32s back.
pub fn reward_content<'a>(scores: impl IntoIterator<Item = (&'a str, f32)>) -> String {
    scores.into_iter().map(|(name, score)| format!("{name}:{score}")).collect::<Vec<_>>().join(",")
}

/// The `(name, score)` pairs of answer content; none for empty content.
pub fn parse_reward_content(content: &str) -> Result<Vec<(String, f32)>, RewardContentError> {
    content
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) =
                pair.split_once(':').ok_or_else(|| RewardContentError::NotPairs { content: content.to_owned() })?;
            let value = value.trim();
            let score = value
                .parse()
                .map_err(|_| RewardContentError::NotANumber { content: content.to_owned(), value: value.to_owned() })?;
            Ok((name.trim().to_owned(), score))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_slice;
    use serde_json::json;

    #[test]
    fn request_as_the_openai_sdk_sends_it() {
        // Unknown keys (temperature, …) are ignored; content parts are accepted.
        let r: ChatCompletionRequest = from_slice(
            json!({"model": "nvidia/llama-3.1-nemotron-70b-reward", "temperature": 0, "stream": false,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                                {"role": "assistant", "content": "a"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!((r.messages.len(), r.stream), (2, Some(false)));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["messages"][0]["content"][0]["text"], "q");
        assert!(back.get("temperature").is_none());
        let e = from_slice::<ChatCompletionRequest>(br#"{"model": "m"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `messages`"), "{e}");
    }

    #[test]
    fn content_round_trips_exactly() {
        let scores = [("helpfulness", 1.617_187_5f32), ("verbosity", -0.1), ("tiny", 1e-7), ("big", 3.0e12)];
        let content = reward_content(scores.iter().copied());
        let back = parse_reward_content(&content).unwrap();
        assert_eq!(back, scores.iter().map(|&(n, s)| (n.to_owned(), s)).collect::<Vec<_>>());
        assert_eq!(reward_content([("reward", -2.609_375f32)]), "reward:-2.609375");
        assert_eq!(parse_reward_content(" a : 1 , b:2,").unwrap(), [("a".to_owned(), 1.0), ("b".to_owned(), 2.0)]);
        assert!(parse_reward_content("").unwrap().is_empty());
        assert!(parse_reward_content("helpfulness=2").unwrap_err().to_string().contains("name:score"));
        assert_eq!(
            parse_reward_content("a:x").unwrap_err(),
            RewardContentError::NotANumber { content: "a:x".into(), value: "x".into() }
        );
    }
}
