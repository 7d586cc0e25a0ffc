//! Tokenization of rendered conversations.

use crate::CoreError;

/// A `tokenizer.json` tokenizer used the way reward models are scored: the chat template
/// already writes every special token it wants, so encoding never adds any (this is what
/// avoids the Llama-3 double `<|begin_of_text|>`).
#[derive(Clone)]
pub struct TextEncoder {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("vocab_size", &self.vocab_size()).finish()
    }
}

impl TextEncoder {
    /// Parses the contents of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CoreError> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| CoreError::Tokenizer(format!("cannot parse tokenizer.json: {e}")))?;
        // Padding and truncation are ours to do (and to report), never the tokenizer's.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Token ids of `text`, adding no special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, CoreError> {
        let enc = self.inner.encode(text, false).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id of a token given by its text, e.g. a pad or separator token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
