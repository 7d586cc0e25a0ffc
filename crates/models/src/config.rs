//! `config.json` of the supported decoder reward models, in both the transformers-4 layout
//! (`rope_theta` + `rope_scaling`) and the transformers-5 layout (`rope_parameters`).

use crate::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The decoder family: what differs between them is which optional parts the layers have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
}

/// What the head computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// One logit vector per sequence, taken at the last non-padding token.
    Sequence,
    /// One logit vector per token.
    Token,
}

/// Where the head's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreHead {
    /// One linear layer under this tensor-name prefix (`score`; Skywork-o1 PRMs' `v_head.summary`).
    Linear(&'static str),
    /// A causal LM's `lm_head`, kept only at the rows of `ModelConfig::lm_head_rows` (math-shepherd
    /// PRMs read the logits of two tokens).
    LmHeadRows,
    /// Qwen2ForProcessRewardModel: `score.0` (hidden -> hidden), ReLU, `score.2` (hidden -> labels).
    Mlp,
}

/// A supported `architectures` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    pub family: Family,
    pub head: HeadKind,
    pub score: ScoreHead,
}

impl Architecture {
    pub const SUPPORTED: [&'static str; 11] = [
        "Qwen3ForSequenceClassification",
        "Qwen2ForSequenceClassification",
        "LlamaForSequenceClassification",
        "Qwen3ForTokenClassification",
        "Qwen2ForTokenClassification",
        "LlamaForTokenClassification",
        "Qwen2ForProcessRewardModel",
        "Qwen2ForPrmModel",
        "LlamaForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    ];

    pub fn from_name(name: &str) -> Result<Self> {
        let (family, rest) = if let Some(r) = name.strip_prefix("Qwen3For") {
            (Family::Qwen3, r)
        } else if let Some(r) = name.strip_prefix("Qwen2For") {
            (Family::Qwen2, r)
        } else if let Some(r) = name.strip_prefix("LlamaFor") {
            (Family::Llama, r)
        } else {
            return Err(ModelError::UnsupportedArchitecture(name.to_owned()));
        };
        let (head, score) = match (rest, family) {
            ("SequenceClassification", _) => (HeadKind::Sequence, ScoreHead::Linear("score")),
            ("TokenClassification", _) => (HeadKind::Token, ScoreHead::Linear("score")),
            ("CausalLM", _) => (HeadKind::Token, ScoreHead::LmHeadRows),
            ("ProcessRewardModel", Family::Qwen2) => (HeadKind::Token, ScoreHead::Mlp),
            ("PrmModel", Family::Qwen2) => (HeadKind::Token, ScoreHead::Linear("v_head.summary")),
            _ => return Err(ModelError::UnsupportedArchitecture(name.to_owned())),
        };
        Ok(Self { family, head, score })
    }

    pub fn name(&self) -> String {
        let f = match self.family {
            Family::Llama => "Llama",
            Family::Qwen2 => "Qwen2",
            Family::Qwen3 => "Qwen3",
        };
        let h = match (self.head, self.score) {
            (_, ScoreHead::LmHeadRows) => "CausalLM",
            (_, ScoreHead::Mlp) => "ProcessRewardModel",
            (_, ScoreHead::Linear("v_head.summary")) => "PrmModel",
            (HeadKind::Sequence, _) => "SequenceClassification",
            (HeadKind::Token, _) => "TokenClassification",
        };
        format!("{f}For{h}")
    }
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// One divisor per frequency, as llama.cpp stores llama3 scaling (`rope_freqs.weight`).
    Factors(Vec<f64>),
    Linear {
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    num_labels: Option<usize>,
    id2label: Option<BTreeMap<String, String>>,
    pad_token_id: Option<Value>,
    token_classification_bias: Option<bool>,
    #[serde(default)]
    use_sliding_window: bool,
    tie_word_embeddings: Option<bool>,
}

/// Everything the forward pass needs, resolved from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Bias on the q, k and v projections (always on in Qwen2).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` covers it too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3 normalizes each head's q and k before the rotary embedding.
    pub qk_norm: bool,
    /// Label names in label-id order; their count is `num_labels`.
    pub labels: Vec<String>,
    pub pad_token_id: Option<u32>,
    /// Whether the score head has a bias (token classification only, by default yes).
    pub score_bias: bool,
    /// Causal LMs: the `lm_head` rows kept as the head's outputs (see `ScoreHead::LmHeadRows`);
    /// set from the tokenizer before the weights are loaded.
    pub lm_head_rows: Vec<u32>,
    /// The LM head shares the embedding table.
    pub tie_word_embeddings: bool,
}

/// Bounds on config.json's counts, checked before anything is sized from them: each is well
/// beyond the largest released model (e.g. Llama 3.1 405B: hidden 16384, 126 layers, 128 heads,
/// intermediate 53248; vocabularies up to 256k; contexts up to 10M) and small enough that no
/// product of them overflows.
pub mod limits {
    pub const MAX_LABELS: usize = 1 << 16;
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_HEADS: usize = 1024;
    pub const MAX_HEAD_DIM: usize = 1024;
    pub const MAX_HIDDEN: usize = 1 << 16;
    pub const MAX_INTERMEDIATE: usize = 1 << 18;
    pub const MAX_VOCAB: usize = 1 << 22;
    pub const MAX_POSITIONS: usize = 1 << 26;
}

fn cfg_err(msg: impl Into<String>) -> ModelError {
    ModelError::Config(msg.into())
}

fn get_f64(v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| cfg_err(format!("rope scaling needs a positive number `{key}`")))
}

impl ModelConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| cfg_err(format!("cannot parse: {e}")))?;
        let arch_name =
            raw.architectures.as_ref().and_then(|a| a.first()).ok_or_else(|| cfg_err("no `architectures` entry"))?;
        let architecture = Architecture::from_name(arch_name)?;
        if raw.use_sliding_window {
            return Err(cfg_err("`use_sliding_window: true` is not supported"));
        }
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(cfg_err(format!("hidden_act `{act}` is not supported (only silu)")));
            }
        }
        use limits::*;
        for (name, value, min, max) in [
            ("hidden_size", raw.hidden_size, 1, MAX_HIDDEN),
            ("intermediate_size", raw.intermediate_size, 1, MAX_INTERMEDIATE),
            ("num_hidden_layers", raw.num_hidden_layers, 0, MAX_LAYERS),
            ("num_attention_heads", raw.num_attention_heads, 1, MAX_HEADS),
            ("num_key_value_heads", raw.num_key_value_heads.unwrap_or(1), 1, MAX_HEADS),
            ("head_dim", raw.head_dim.unwrap_or(2), 1, MAX_HEAD_DIM),
            ("vocab_size", raw.vocab_size, 1, MAX_VOCAB),
            ("max_position_embeddings", raw.max_position_embeddings, 1, MAX_POSITIONS),
            ("num_labels", raw.num_labels.unwrap_or(1), 1, MAX_LABELS),
        ] {
            if value < min || value > max {
                return Err(cfg_err(format!("{name} is {value}; rewardlens accepts {min} to {max}")));
            }
        }
        if raw.id2label.as_ref().is_some_and(|m| m.len() > MAX_LABELS) {
            return Err(cfg_err(format!("id2label has more than {MAX_LABELS} labels")));
        }
        if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps >= 0.0) {
            return Err(cfg_err(format!("rms_norm_eps {} is not a non-negative number", raw.rms_norm_eps)));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(cfg_err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({num_key_value_heads})",
                raw.num_attention_heads
            )));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if head_dim == 0 || head_dim > MAX_HEAD_DIM || !head_dim.is_multiple_of(2) {
            return Err(cfg_err(format!("head_dim {head_dim} must be even and positive")));
        }

        // transformers 5 folds rope_theta and the scaling into `rope_parameters`.
        let rope = raw.rope_parameters.clone().or_else(|| raw.rope_scaling.clone());
        let rope_theta =
            raw.rope_theta.or_else(|| raw.rope_parameters.as_ref()?.get("rope_theta")?.as_f64()).unwrap_or(10_000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(cfg_err(format!("rope_theta {rope_theta} is not a positive number")));
        }
        let rope_scaling = match rope.as_ref().filter(|v| !v.is_null()) {
            None => RopeScaling::None,
            Some(v) => {
                let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).unwrap_or("default");
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear { factor: get_f64(v, "factor")? },
                    "llama3" => RopeScaling::Llama3 {
                        factor: get_f64(v, "factor")?,
                        low_freq_factor: get_f64(v, "low_freq_factor")?,
                        high_freq_factor: get_f64(v, "high_freq_factor")?,
                        original_max_position_embeddings: get_f64(v, "original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(cfg_err(format!("rope type `{other}` is not supported (default, linear, llama3)")))
                    }
                }
            }
        };

        // transformers derives num_labels from id2label, defaulting to 2 labels.
        let labels: Vec<String> = match (&raw.id2label, raw.num_labels) {
            (Some(map), n) if !map.is_empty() => {
                let n = n.unwrap_or(map.len());
                (0..n).map(|i| map.get(&i.to_string()).cloned().unwrap_or_else(|| format!("LABEL_{i}"))).collect()
            }
            (_, n) => (0..n.unwrap_or(2)).map(|i| format!("LABEL_{i}")).collect(),
        };
        if labels.is_empty() {
            return Err(cfg_err("num_labels is 0"));
        }
        let pad_token_id = match &raw.pad_token_id {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .or_else(|| v.as_array()?.first()?.as_u64())
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| cfg_err(format!("pad_token_id {v} is not a token id")))?,
            ),
        };
        let family = architecture.family;
        let attention_bias = raw.attention_bias.unwrap_or(false);
        Ok(Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            rope_theta,
            rope_scaling,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            mlp_bias: family == Family::Llama && raw.mlp_bias,
            qk_norm: family == Family::Qwen3,
            labels,
            pad_token_id,
            score_bias: match architecture.score {
                ScoreHead::Linear("score") => {
                    architecture.head == HeadKind::Token && raw.token_classification_bias.unwrap_or(true)
                }
                ScoreHead::LmHeadRows => false,
                ScoreHead::Linear(_) | ScoreHead::Mlp => true,
            },
            lm_head_rows: Vec::new(),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        })
    }

    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// For a causal LM: the tokens whose logits the head keeps, and their names as labels.
    pub fn keep_lm_head_rows(&mut self, rows: Vec<u32>, labels: Vec<String>) {
        self.lm_head_rows = rows;
        self.labels = labels;
    }

    /// Inverse frequencies of the rotary embedding, `head_dim / 2` of them, scaled as configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base = rope_base_inv_freq(self.head_dim, self.rope_theta);
        let scaled: Vec<f64> = match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Factors(ref divisors) => base.iter().zip(divisors).map(|(f, d)| f / d).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

/// Unscaled rotary inverse frequencies `1 / theta^(2i / head_dim)`, `head_dim / 2` of them, in
/// f64 (scaling divides these before the one rounding to f32).
pub fn rope_base_inv_freq(head_dim: usize, theta: f64) -> Vec<f64> {
    (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = r#"{"architectures":["LlamaForSequenceClassification"],"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,"rms_norm_eps":1e-5,
        "max_position_embeddings":4096,"rope_theta":500000.0,"pad_token_id":3,
        "rope_scaling":{"type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":256}}"#;
    const V5: &str = r#"{"architectures":["LlamaForSequenceClassification"],"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,"rms_norm_eps":1e-5,
        "max_position_embeddings":4096,"pad_token_id":3,
        "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":256}}"#;

    #[test]
    fn both_config_layouts_agree() {
        let a = ModelConfig::from_json(V4).unwrap();
        let b = ModelConfig::from_json(V5).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.head_dim, 16);
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.labels, vec!["LABEL_0", "LABEL_1"], "transformers' default is 2 labels");
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { .. }));
    }

    #[test]
    fn llama3_scaling_changes_only_low_frequencies() {
        let a = ModelConfig::from_json(V4).unwrap();
        let mut plain = a.clone();
        plain.rope_scaling = RopeScaling::None;
        let (s, p) = (a.rope_inv_freq(), plain.rope_inv_freq());
        assert_eq!(s[0], p[0], "highest frequency untouched");
        assert!((s[7] - p[7] / 8.0).abs() < 1e-12, "lowest frequency divided by factor");
    }

    #[test]
    fn unknown_architecture_is_named() {
        let bad = V4.replace("LlamaForSequenceClassification", "BertForSequenceClassification");
        let err = ModelConfig::from_json(&bad).unwrap_err().to_string();
        assert!(
            err.contains("BertForSequenceClassification") && err.contains("Qwen3ForSequenceClassification"),
            "{err}"
        );
        let bad = V4.replace("LlamaForSequenceClassification", "LlamaForMaskedLM");
        assert!(ModelConfig::from_json(&bad).unwrap_err().to_string().contains("LlamaForMaskedLM"));
        for name in Architecture::SUPPORTED {
            assert_eq!(Architecture::from_name(name).unwrap().name(), name, "names round-trip");
        }
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        // Each would size a vector (labels) or a weight from an absurd count.
        for (field, value) in [
            ("num_labels", "1000000000000"),
            ("num_labels", "65537"),
            ("hidden_size", "0"),
            ("hidden_size", "1099511627776"),
            ("num_hidden_layers", "100000"),
            ("num_attention_heads", "0"),
            ("num_attention_heads", "4096"),
            ("num_key_value_heads", "0"),
            ("head_dim", "4096"),
            ("intermediate_size", "18446744073709551615"),
            ("vocab_size", "0"),
            ("vocab_size", "1099511627776"),
            ("max_position_embeddings", "0"),
            ("rms_norm_eps", "-1"),
            ("rope_theta", "0"),
            ("pad_token_id", "4294967296"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(V4).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            let err = ModelConfig::from_json(&v.to_string()).unwrap_err().to_string();
            assert!(err.contains(field), "{field} = {value}: {err}");
        }
        // A float count is not a count at all.
        let mut v: serde_json::Value = serde_json::from_str(V4).unwrap();
        v["num_labels"] = serde_json::json!(1e12);
        assert!(ModelConfig::from_json(&v.to_string()).is_err());
        // A large id2label is checked by its size, not walked.
        let mut v: serde_json::Value = serde_json::from_str(V4).unwrap();
        v["id2label"] = (0..limits::MAX_LABELS + 1).map(|i| (i.to_string(), serde_json::json!("x"))).collect();
        assert!(ModelConfig::from_json(&v.to_string()).unwrap_err().to_string().contains("id2label"));
        let mut v: serde_json::Value = serde_json::from_str(V4).unwrap();
        v["rope_scaling"]["factor"] = serde_json::json!(0.0);
        assert!(ModelConfig::from_json(&v.to_string()).unwrap_err().to_string().contains("factor"));
        // The bounds themselves are accepted.
        let mut v: serde_json::Value = serde_json::from_str(V4).unwrap();
        v["num_labels"] = serde_json::json!(limits::MAX_LABELS);
        assert_eq!(ModelConfig::from_json(&v.to_string()).unwrap().num_labels(), limits::MAX_LABELS);
    }
}
