//! Models offered in the picker. A preset may name a Hub repo (the original safetensors
//! checkpoint) or the URL of a GGUF written by `rewardlens quantize`.

use crate::protocol::StorageChoice;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub label: &'static str,
    pub model: &'static str,
    pub storage: StorageChoice,
}

pub const PRESETS: [Preset; 3] = [
    Preset {
        label: "Skywork-Reward-V2-Qwen3-0.6B",
        model: "Skywork/Skywork-Reward-V2-Qwen3-0.6B",
        storage: StorageChoice::Auto,
    },
    Preset {
        label: "Skywork-Reward-V2-Qwen3-1.7B",
        model: "Skywork/Skywork-Reward-V2-Qwen3-1.7B",
        storage: StorageChoice::Auto,
    },
    Preset {
        label: "Skywork-Reward-V2-Llama-3.2-1B",
        model: "Skywork/Skywork-Reward-V2-Llama-3.2-1B",
        storage: StorageChoice::Auto,
    },
];

pub const DEFAULT_MODEL: &str = PRESETS[0].model;

/// The preset a model text matches, if any.
pub fn preset_for(model: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.model == model.trim())
}
