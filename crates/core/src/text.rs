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

/// Most tokens `tokenizer_config.json` may add to a tokenizer (real configs add a handful).
pub const MAX_DECLARED_TOKENS: usize = 1 << 16;

/// `start..end` in bytes.
pub type ByteRange = (usize, usize);

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

    /// Token ids of `text` with the tokenizer's own special tokens (its post-processor, e.g. a
    /// BOS), as `tokenizer.encode(text)` does in transformers.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, CoreError> {
        let enc = self.inner.encode(text, true).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` and each token's byte range in it.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteRange>), CoreError> {
        let enc = self.inner.encode(text, false).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Each token as text (byte-level pieces decoded; a piece that is not valid UTF-8 on its own,
    /// such as half an emoji, shows as U+FFFD).
    pub fn token_texts(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&id| self.inner.decode(&[id], false).unwrap_or_default()).collect()
    }

    /// Adds the special tokens that `tokenizer_config.json` declares in `added_tokens_decoder`
    /// but `tokenizer.json` lacks, as transformers does on load (Qwen2.5-Math-PRM's `<extra_0>`).
    /// Each must land on the id the config gives it.
    pub fn add_declared_tokens(&mut self, tokenizer_config_json: &str) -> Result<(), CoreError> {
        let cfg: serde_json::Value = serde_json::from_str(tokenizer_config_json)
            .map_err(|e| CoreError::TokenizerConfig(format!("not JSON: {e}")))?;
        let Some(decl) = cfg.get("added_tokens_decoder").and_then(|d| d.as_object()) else { return Ok(()) };
        let mut missing: Vec<(u32, String, bool)> = decl
            .iter()
            .filter_map(|(id, t)| {
                Some((
                    id.parse().ok()?,
                    t.get("content")?.as_str()?.to_owned(),
                    t.get("special")?.as_bool().unwrap_or(false),
                ))
            })
            .filter(|(_, content, _)| self.inner.token_to_id(content).is_none())
            .collect();
        if missing.len() > MAX_DECLARED_TOKENS {
            return Err(CoreError::TokenizerConfig(format!(
                "added_tokens_decoder declares {} tokens that tokenizer.json lacks; at most {MAX_DECLARED_TOKENS} are accepted",
                missing.len()
            )));
        }
        missing.sort();
        // One call: the tokenizer rebuilds its matcher over all added tokens on every call, so
        // adding them one at a time is quadratic. Ids are handed out in order, as one by one.
        let tokens =
            missing.iter().map(|(_, content, special)| tokenizers::AddedToken::from(content.clone(), *special));
        self.inner.add_tokens(tokens).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        for (id, content, _) in &missing {
            let got = self.inner.token_to_id(content);
            if got != Some(*id) {
                return Err(CoreError::TokenizerConfig(format!(
                    "added token {content:?} is declared as id {id} but the tokenizer gives it {got:?}"
                )));
            }
        }
        Ok(())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"b":1,"[UNK]":2},"unk_token":"[UNK]"}}"#;

    fn declaring(n: usize) -> String {
        let decl: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| ((3 + i).to_string(), serde_json::json!({"content": format!("<t{i}>"), "special": i % 2 == 0})))
            .collect();
        serde_json::json!({ "added_tokens_decoder": decl }).to_string()
    }

    #[test]
    fn many_declared_tokens_land_on_their_ids() {
        let mut enc = TextEncoder::from_bytes(WORDS.as_bytes()).unwrap();
        enc.add_declared_tokens(&declaring(5000)).unwrap();
        assert_eq!(enc.vocab_size(), 5003);
        assert_eq!(enc.encode("<t7> a<t4999>b").unwrap(), vec![10, 0, 5002, 1]);
    }

    #[test]
    fn declared_tokens_are_bounded() {
        let mut enc = TextEncoder::from_bytes(WORDS.as_bytes()).unwrap();
        let err = enc.add_declared_tokens(&declaring(MAX_DECLARED_TOKENS + 1)).unwrap_err().to_string();
        assert!(err.contains(&MAX_DECLARED_TOKENS.to_string()), "{err}");
        // A gap in the declared ids cannot be honoured.
        let cfg = r#"{"added_tokens_decoder": {"5": {"content": "<x>", "special": true}}}"#;
        assert!(enc.add_declared_tokens(cfg).unwrap_err().to_string().contains("declared as id 5"));
    }
}
