//! Everything about a reward-model request that is not tensor math: the conversation and
//! result types, chat-template rendering that matches `transformers`' `apply_chat_template`,
//! tokenization, the score math (ranking, preference probabilities, sigmoid and softmax) and
//! the wire formats of the serving protocols (`wire`), shared by `rewardlens serve` and the
//! remote client.
//!
//! This crate builds for `wasm32-unknown-unknown`; keep it free of native-only dependencies.

pub mod activation;
pub mod error;
pub mod image;
pub mod score;
pub mod steps;
pub mod template;
pub mod text;
pub mod types;
pub mod wire;

pub use activation::{sigmoid, softmax};
pub use error::CoreError;
pub use score::{best_with_confidence, kendall_tau_b, pair_order_agreement, preference_probability, ranking, spearman};
pub use steps::{Step, StepSplit};
pub use template::ChatTemplate;
pub use text::TextEncoder;
pub use types::{Message, Role};
