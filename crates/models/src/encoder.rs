//! Conversations to token ids: [`InputEncoder`] (chat template, tokenizer, length policy) and
//! what it produces. Kept apart from any forward pass so that every backend (CPU, GPU, browser)
//! and every step convention (`prm`) encodes alike.

use crate::config::{ModelConfig, ScoreHead};
use crate::gguf::GgufFile;
use crate::quantized;
use crate::{ModelError, Result};
use rewardlens_core::{ChatTemplate, Message, TextEncoder};

/// How over-long inputs are handled: an error by default, cut on request (and reported).
#[derive(Debug, Clone, Copy, Default)]
pub struct LengthPolicy {
    /// A limit below the model's `max_position_embeddings`.
    pub max_tokens: Option<usize>,
    /// Keep the first `limit` tokens instead of failing.
    pub truncate: bool,
}

/// A conversation rendered and tokenized, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedInput {
    pub ids: Vec<u32>,
    pub truncated_tokens: usize,
}

/// The text files of a checkpoint (everything but the weights).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointText<'a> {
    pub config_json: &'a str,
    pub tokenizer_json: &'a [u8],
    pub tokenizer_config_json: &'a str,
    pub chat_template_jinja: Option<&'a str>,
}

/// Conversations to token ids: the chat template, the tokenizer and the length policy. Kept
/// apart from any forward pass so that every backend (CPU, GPU, browser) encodes alike.
pub struct InputEncoder {
    template: ChatTemplate,
    encoder: TextEncoder,
    max_positions: usize,
    bos_token: Option<String>,
}

impl InputEncoder {
    pub fn new(template: ChatTemplate, encoder: TextEncoder, config: &ModelConfig) -> Result<Self> {
        if encoder.vocab_size() > config.vocab_size {
            // Ids past the embedding table would only fail at scoring time; say it now.
            return Err(ModelError::Config(format!(
                "the tokenizer has {} tokens but the model's vocab_size is {}",
                encoder.vocab_size(),
                config.vocab_size
            )));
        }
        Ok(Self { template, encoder, max_positions: config.max_position_embeddings, bos_token: None })
    }

    /// The tokenizer.
    pub fn text_encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// The tokenizer's BOS token text (`bos_token` in tokenizer_config.json), if it has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// What the tokenizer config adds to the tokenizer and config: tokens it declares that
    /// tokenizer.json lacks, the BOS text, and for causal LMs the `lm_head` rows to keep.
    fn finish(
        mut encoder: TextEncoder,
        template: ChatTemplate,
        tokenizer_config: &str,
        mut config: ModelConfig,
    ) -> Result<(ModelConfig, Self)> {
        encoder.add_declared_tokens(tokenizer_config)?;
        let bos_token = serde_json::from_str::<serde_json::Value>(tokenizer_config).ok().and_then(|v| {
            let b = v.get("bos_token")?;
            b.as_str().or_else(|| b.get("content")?.as_str()).map(str::to_owned)
        });
        let mut inputs = Self::new(template, encoder, &config)?;
        inputs.bos_token = bos_token;
        if config.architecture.score == ScoreHead::LmHeadRows {
            let (rows, labels) = inputs.shepherd_rows()?;
            config.keep_lm_head_rows(rows, labels);
        }
        Ok((config, inputs))
    }

    /// From a checkpoint's text files (config.json, tokenizer files, template).
    pub fn from_checkpoint(text: &CheckpointText<'_>) -> Result<(ModelConfig, Self)> {
        let config = ModelConfig::from_json(text.config_json)?;
        let template = ChatTemplate::from_tokenizer_config(text.tokenizer_config_json, text.chat_template_jinja)?;
        let encoder = TextEncoder::from_bytes(text.tokenizer_json)?;
        Self::finish(encoder, template, text.tokenizer_config_json, config)
    }

    /// From a GGUF file's metadata; `tokenizer` as in [`RewardModel::from_gguf`].
    pub fn from_gguf(file: &GgufFile, tokenizer: Option<(Vec<u8>, String)>) -> Result<(ModelConfig, Self)> {
        let config = quantized::gguf_config(file)?;
        let (tokenizer_json, tokenizer_config) = match tokenizer {
            Some(t) => t,
            None => {
                let (t, c) = quantized::gguf_tokenizer(file)?;
                (t.into_bytes(), c)
            }
        };
        let template = ChatTemplate::from_tokenizer_config(&tokenizer_config, None)?;
        let encoder = TextEncoder::from_bytes(&tokenizer_json)?;
        Self::finish(encoder, template, &tokenizer_config, config)
    }

    /// The conversation as the chat template writes it. Conversations with images are refused
    /// here, the one door to every local engine: scoring only their text would be a silently
    /// wrong score.
    pub fn render(&self, conversation: &[Message]) -> Result<String> {
        if let Some(message) = conversation.iter().position(|m| !m.images.is_empty()) {
            let count = rewardlens_core::types::image_count(conversation);
            return Err(ModelError::Images { count, message: message + 1 });
        }
        Ok(self.template.render(conversation, false)?)
    }

    /// The longest input this model accepts under `policy`.
    pub fn token_limit(&self, policy: &LengthPolicy) -> usize {
        policy.max_tokens.map_or(self.max_positions, |m| m.min(self.max_positions))
    }

    /// Renders and tokenizes a conversation, applying the length policy.
    pub fn encode(&self, conversation: &[Message], policy: &LengthPolicy) -> Result<EncodedInput> {
        self.encode_text(&self.render(conversation)?, policy)
    }

    /// Tokenizes text already rendered with the chat template (what OpenRLHF-style servers and
    /// vLLM's `input` form receive), applying the length policy.
    pub fn encode_text(&self, text: &str, policy: &LengthPolicy) -> Result<EncodedInput> {
        let mut ids = self.encoder.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let limit = self.token_limit(policy);
        let mut truncated_tokens = 0;
        if ids.len() > limit {
            if !policy.truncate {
                return Err(ModelError::InputTooLong { tokens: ids.len(), limit });
            }
            truncated_tokens = ids.len() - limit;
            ids.truncate(limit);
        }
        Ok(EncodedInput { ids, truncated_tokens })
    }

    /// The `lm_head` rows a math-shepherd model keeps: the tokens of `"+ -"` (as the published
    /// code takes them), named `+` and `-`.
    pub fn shepherd_rows(&self) -> Result<(Vec<u32>, Vec<String>)> {
        let ids = self.encoder.encode("+ -")?;
        if ids.len() != 2 {
            return Err(ModelError::Config(format!(
                "math-shepherd reads the logits of the `+` and `-` tokens, but this tokenizer splits \"+ -\" into {} tokens",
                ids.len()
            )));
        }
        Ok((ids, vec!["+".into(), "-".into()]))
    }
}
