//! Reward-model forward passes in Candle: `config.json` parsing, checkpoint loading, the
//! decoder with its sequence/token classification heads, and [`RewardModel`], which turns
//! conversations into scores (template, tokenization, length policy, batching, pooling).
//!
//! Builds for `wasm32-unknown-unknown`; memory-mapped loading is behind the `mmap` feature.

pub mod batching;
pub mod config;
mod cpu_attention;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod files;
pub mod forward_pass;
mod fused;
pub mod gguf;
pub mod linear;
pub mod memory;
pub mod pipeline;
pub mod plan;
pub mod prm;
pub mod profile;
pub mod quantized;
pub mod records;
pub mod reward_model;
pub mod st_header;
pub mod synthetic;
pub mod weights;

pub use config::{Architecture, Family, HeadKind, ModelConfig, ScoreHead};
pub use decoder::{DecoderRewardModel, HeadOutput, Padding};
pub use encoder::{CheckpointText, EncodedInput, InputEncoder, LengthPolicy};
pub use error::{ModelError, Result};
pub use files::{CheckpointFiles, WeightFiles};
pub use forward_pass::ForwardPass;
pub use reward_model::{ConversationScore, PairScore, ResponseScores, RewardModel};
