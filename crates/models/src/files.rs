//! The files a checkpoint consists of, gathered before loading so that the same loader serves
//! a local folder (memory-mapped), the Hugging Face cache, and bytes fetched by a browser.

use crate::weights::SafetensorsWeights;
use crate::{ModelError, Result};

pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE: &str = "chat_template.jinja";
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Where the weights are.
pub enum WeightFiles {
    #[cfg(feature = "mmap")]
    Paths(Vec<std::path::PathBuf>),
    Buffers(Vec<Vec<u8>>),
}

/// Everything needed to build a `RewardModel`.
pub struct CheckpointFiles {
    pub config_json: String,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: String,
    pub chat_template_jinja: Option<String>,
    pub weights: WeightFiles,
}

/// Shard file names listed in a `model.safetensors.index.json`, in first-seen order.
pub fn shard_names(index_json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(index_json)
        .map_err(|e| ModelError::Weights(format!("{WEIGHTS_INDEX}: not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Weights(format!("{WEIGHTS_INDEX}: no `weight_map` object")))?;
    let mut names: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .ok_or_else(|| ModelError::Weights(format!("{WEIGHTS_INDEX}: weight_map value {f} is not a file name")))?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(ModelError::Weights(format!("{WEIGHTS_INDEX}: shard name `{f}` is not a plain file name")));
        }
        if !names.iter().any(|n| n == f) {
            names.push(f.to_owned());
        }
    }
    Ok(names)
}

impl WeightFiles {
    /// The weight store over these files (memory-mapped paths or buffers).
    pub fn open(self) -> Result<SafetensorsWeights> {
        match self {
            #[cfg(feature = "mmap")]
            Self::Paths(p) => SafetensorsWeights::mmap(&p),
            Self::Buffers(b) => SafetensorsWeights::from_buffers(b),
        }
    }
}

#[cfg(feature = "mmap")]
impl CheckpointFiles {
    /// Reads a checkpoint folder laid out as on the Hugging Face Hub.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| ModelError::Io(format!("{}: {e}", dir.join(name).display())))
        };
        if !dir.is_dir() {
            return Err(ModelError::Io(format!("{}: not a folder", dir.display())));
        }
        let weights = if dir.join(WEIGHTS_INDEX).is_file() {
            shard_names(&read(WEIGHTS_INDEX)?)?.into_iter().map(|n| dir.join(n)).collect()
        } else if dir.join(SINGLE_WEIGHTS).is_file() {
            vec![dir.join(SINGLE_WEIGHTS)]
        } else {
            return Err(ModelError::Io(format!(
                "{}: no {SINGLE_WEIGHTS} or {WEIGHTS_INDEX} (only safetensors checkpoints are supported)",
                dir.display()
            )));
        };
        Ok(Self {
            config_json: read(CONFIG)?,
            tokenizer_json: std::fs::read(dir.join(TOKENIZER))
                .map_err(|e| ModelError::Io(format!("{}: {e}", dir.join(TOKENIZER).display())))?,
            tokenizer_config_json: read(TOKENIZER_CONFIG)?,
            chat_template_jinja: dir.join(CHAT_TEMPLATE).is_file().then(|| read(CHAT_TEMPLATE)).transpose()?,
            weights: WeightFiles::Paths(weights),
        })
    }
}
