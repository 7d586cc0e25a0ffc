#![no_main]
//! The input encoder (chat template, tokenizer_config's added tokens, tokenizer, length policy)
//! on hostile text: every render ends (fuel) within the output cap and gives text or an error.
//!
//! Input: NUL-separated parts; the first is a tokenizer_config.json (or, when it is not JSON, a
//! bare chat template), the rest are the conversation's messages, user and assistant in turn.
use libfuzzer_sys::fuzz_target;
use rewardlens_core::Message;
use rewardlens_models::{CheckpointText, InputEncoder, LengthPolicy};

const CONFIG: &str = r#"{"architectures":["Qwen3ForSequenceClassification"],"hidden_size":8,"intermediate_size":8,
    "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"vocab_size":64,
    "rms_norm_eps":1e-6,"max_position_embeddings":64,"num_labels":1}"#;
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
    "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
    "model":{"type":"WordLevel","vocab":{"a":0,"b":1,"<unk>":2,"<s>":3},"unk_token":"<unk>"}}"#;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let first = parts.next().unwrap_or_default();
    let tokenizer_config = if serde_json::from_str::<serde_json::Value>(first).is_ok() {
        first.to_owned()
    } else {
        serde_json::json!({ "chat_template": first, "bos_token": "<s>" }).to_string()
    };
    let messages: Vec<Message> =
        parts.enumerate().map(|(i, m)| if i % 2 == 0 { Message::user(m) } else { Message::assistant(m) }).collect();
    let checkpoint = CheckpointText {
        config_json: CONFIG,
        tokenizer_json: TOKENIZER.as_bytes(),
        tokenizer_config_json: &tokenizer_config,
        chat_template_jinja: None,
    };
    let Ok((_, inputs)) = InputEncoder::from_checkpoint(&checkpoint) else { return };
    for truncate in [false, true] {
        let _ = inputs.encode(&messages, &LengthPolicy { max_tokens: Some(16), truncate });
    }
});
