use thiserror::Error;

/// Errors from loading and running a reward model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("config.json: {0}")]
    Config(String),
    #[error("unsupported architecture `{0}`; supported: {supported}", supported = crate::Architecture::SUPPORTED.join(", "))]
    UnsupportedArchitecture(String),
    #[error("missing tensor `{name}` in the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("weights: {0}")]
    Weights(String),
    #[error("input of {tokens} tokens exceeds the limit of {limit} tokens (pass truncation to cut it)")]
    InputTooLong { tokens: usize, limit: usize },
    #[error("input is empty: the rendered conversation has no tokens")]
    EmptyInput,
    #[error(
        "this model reads text only: the conversation carries {count} image(s) (message {message}); \
         images can be scored only by a multimodal reward server (an endpoint)"
    )]
    Images { count: usize, message: usize },
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfVocab { id: u32, vocab: usize },
    #[error("{0}")]
    Core(#[from] rewardlens_core::CoreError),
    /// A pipeline stage was handed input it cannot take (see `pipeline`).
    #[error("pipeline stage: {0}")]
    Stage(String),
    #[error("io: {0}")]
    Io(String),
    #[error("GPU backend: {0}")]
    Backend(String),
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
