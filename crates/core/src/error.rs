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
    #[error("chat template: the render used up its budget of {fuel} fuel (instructions and data; see TEMPLATE_FUEL): the template loops or builds text without bound ({detail})")]
    TemplateBudget { fuel: u64, detail: String },
    #[error("chat template: the rendered conversation is longer than the limit of {limit} bytes (MAX_RENDERED_BYTES)")]
    RenderTooLong { limit: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid conversation: {0}")]
    Conversation(String),
    #[error("{0}")]
    Input(String),
}
