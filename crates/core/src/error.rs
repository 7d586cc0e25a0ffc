use thiserror::Error;

/// Errors from template rendering and tokenization.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("tokenizer_config.json: {0}")]
    TokenizerConfig(String),
    #[error(
        "the model has no chat template (neither `chat_template` in tokenizer_config.json nor chat_template.jinja)"
    )]
    NoChatTemplate,
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid conversation: {0}")]
    Conversation(String),
    #[error("{0}")]
    Input(String),
}
