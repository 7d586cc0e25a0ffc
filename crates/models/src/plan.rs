//! One plan for a forward pass, read by every backend (the Candle decoder, its pipeline stages,
//! `rewardlens-gpu`'s model): where each weight lives and its shape, which inputs are valid, the
//! RoPE tables, whether a batch computes its shared prompt once, and where each row is pooled.
//! Backends take these answers and only do the math, so a rule changed here changes everywhere
//! (two copies of the pooling rule once gave the GPU different scores from the CPU).

use crate::config::{ModelConfig, ScoreHead};
use crate::{ModelError, Result};
use std::ops::Range;

/// The token embedding table, `[vocab_size, hidden_size]`.
pub const EMBEDDING: &str = "model.embed_tokens.weight";
/// A causal LM's output projection when it is not tied to the embedding.
pub const LM_HEAD: &str = "lm_head.weight";

/// A linear layer's tensors: `{name}.weight` `[out, inp]` and, with `bias`, `{name}.bias` `[out]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearWeights {
    pub name: String,
    pub out: usize,
    pub inp: usize,
    pub bias: bool,
}

impl LinearWeights {
    fn new(name: String, out: usize, inp: usize, bias: bool) -> Self {
        Self { name, out, inp, bias }
    }

    pub fn weight(&self) -> String {
        format!("{}.weight", self.name)
    }

    pub fn bias_name(&self) -> Option<String> {
        self.bias.then(|| format!("{}.bias", self.name))
    }

    fn tensors(&self, out: &mut Vec<(String, Vec<usize>)>) {
        out.push((self.weight(), vec![self.out, self.inp]));
        if let Some(b) = self.bias_name() {
            out.push((b, vec![self.out]));
        }
    }
}

/// An RMSNorm's weight: `{name}.weight`, `[size]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormWeights {
    pub name: String,
    pub size: usize,
}

impl NormWeights {
    pub fn weight(&self) -> String {
        format!("{}.weight", self.name)
    }
}

/// Decoder layer `index`'s tensors under transformers' names (`model.layers.{index}...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerWeights {
    pub input_norm: NormWeights,
    pub q: LinearWeights,
    pub k: LinearWeights,
    pub v: LinearWeights,
    pub o: LinearWeights,
    /// Per-head RMSNorm of queries and keys (Qwen3), `[head_dim]` each.
    pub q_norm: Option<NormWeights>,
    pub k_norm: Option<NormWeights>,
    pub post_norm: NormWeights,
    pub gate: LinearWeights,
    pub up: LinearWeights,
    pub down: LinearWeights,
}

impl LayerWeights {
    pub fn new(c: &ModelConfig, index: usize) -> Self {
        let p = format!("model.layers.{index}");
        let (h, hd, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let attn =
            |proj: &str, out, inp, bias| LinearWeights::new(format!("{p}.self_attn.{proj}_proj"), out, inp, bias);
        let mlp = |proj: &str, out, inp| LinearWeights::new(format!("{p}.mlp.{proj}_proj"), out, inp, c.mlp_bias);
        let norm = |n: &str, size| NormWeights { name: format!("{p}.{n}"), size };
        Self {
            input_norm: norm("input_layernorm", h),
            q: attn("q", q_out, h, c.qkv_bias),
            k: attn("k", kv_out, h, c.qkv_bias),
            v: attn("v", kv_out, h, c.qkv_bias),
            o: attn("o", h, q_out, c.o_bias),
            q_norm: c.qk_norm.then(|| norm("self_attn.q_norm", hd)),
            k_norm: c.qk_norm.then(|| norm("self_attn.k_norm", hd)),
            post_norm: norm("post_attention_layernorm", h),
            gate: mlp("gate", i, h),
            up: mlp("up", i, h),
            down: mlp("down", h, i),
        }
    }

    /// Every tensor of the layer with its shape, in load order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = vec![(self.input_norm.weight(), vec![self.input_norm.size])];
        for l in [&self.q, &self.k, &self.v, &self.o] {
            l.tensors(&mut out);
        }
        for n in [&self.q_norm, &self.k_norm].into_iter().flatten() {
            out.push((n.weight(), vec![n.size]));
        }
        out.push((self.post_norm.weight(), vec![self.post_norm.size]));
        for l in [&self.gate, &self.up, &self.down] {
            l.tensors(&mut out);
        }
        out
    }
}

/// The final norm before the head, `model.norm.weight`.
pub fn final_norm(c: &ModelConfig) -> NormWeights {
    NormWeights { name: "model.norm".into(), size: c.hidden_size }
}

/// The score head's linear layers, from wherever the architecture keeps them (see
/// [`ScoreHead`]): one layer, or two with a ReLU between. An LM head's rows are not a layer of
/// their own (see [`lm_head_table`]), so it gives none.
pub fn score_layers(c: &ModelConfig) -> Vec<LinearWeights> {
    let (h, labels) = (c.hidden_size, c.num_labels());
    match c.architecture.score {
        ScoreHead::Linear(name) => vec![LinearWeights::new(name.into(), labels, h, c.score_bias)],
        ScoreHead::Mlp => {
            vec![
                LinearWeights::new("score.0".into(), h, h, true),
                LinearWeights::new("score.2".into(), labels, h, true),
            ]
        }
        ScoreHead::LmHeadRows => vec![],
    }
}

/// The table whose rows a causal LM's head keeps (`lm_head_rows`): the embedding when tied.
pub fn lm_head_table(c: &ModelConfig) -> &'static str {
    if c.tie_word_embeddings {
        EMBEDDING
    } else {
        LM_HEAD
    }
}

/// Every tensor (name, shape) a stage holding `layers` reads: the embedding where the range
/// starts the model, the final norm and head where it ends it; each once (a tied head reads the
/// embedding table the first stage also reads).
pub fn tensors(c: &ModelConfig, layers: Range<usize>) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let table = vec![c.vocab_size, c.hidden_size];
    if layers.start == 0 {
        out.push((EMBEDDING.to_owned(), table.clone()));
    }
    for i in layers.clone() {
        out.extend(LayerWeights::new(c, i).tensors());
    }
    if layers.end == c.num_hidden_layers {
        let norm = final_norm(c);
        out.push((norm.weight(), vec![norm.size]));
        for l in score_layers(c) {
            l.tensors(&mut out);
        }
        if c.architecture.score == ScoreHead::LmHeadRows {
            out.push((lm_head_table(c).to_owned(), table));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(n, _)| seen.insert(n.clone()));
    out
}

/// Checks a batch before any backend runs it: no empty row, every id inside the vocabulary.
pub fn check_rows(c: &ModelConfig, rows: &[&[u32]]) -> Result<()> {
    let vocab = c.vocab_size;
    for r in rows {
        if r.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if let Some(&id) = r.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfVocab { id, vocab });
        }
    }
    Ok(())
}

/// Where transformers pools a sequence-classification row: its rightmost token that is not
/// `pad_token_id` (the first token if every one is), or the last token without a pad token.
/// Every backend pools with this, so a model whose pad token ends each turn (Llama-3 reward
/// models with `pad = eos = <|eot_id|>`) is scored at the same position everywhere.
pub fn pooled_index(row: &[u32], pad_token_id: Option<u32>) -> usize {
    match pad_token_id {
        Some(p) => row.iter().rposition(|&id| id != p).unwrap_or(0),
        None => row.len().saturating_sub(1),
    }
}

/// Tokens every row starts with.
pub fn shared_prefix_len(rows: &[&[u32]]) -> usize {
    let Some((first, rest)) = rows.split_first() else { return 0 };
    rest.iter().fold(first.len(), |n, r| first[..n].iter().zip(*r).take_while(|(a, b)| a == b).count())
}

/// Shared prompt tokens worth computing once for a batch: below this the extra pass costs about
/// what it saves.
pub const MIN_SHARED_PREFIX: usize = 32;

/// How many leading tokens a batch computes once for all its rows (0: none). Reuse needs two
/// rows or more and `min_tokens` shared tokens (`None`: off); the prefix is
/// [`shared_prompt_tokens`].
pub fn shared_prompt(c: &ModelConfig, rows: &[&[u32]], min_tokens: Option<usize>) -> usize {
    let Some(min) = min_tokens.filter(|_| rows.len() > 1) else { return 0 };
    let shared = shared_prompt_tokens(rows, c.pad_token_id);
    if shared >= min.max(1) {
        shared
    } else {
        0
    }
}

/// The prompt rows share, as far as it can run once: it stops before every row's pooled token,
/// so each row keeps that token (and so at least one) among its own.
pub fn shared_prompt_tokens(rows: &[&[u32]], pad_token_id: Option<u32>) -> usize {
    let keep = rows.iter().map(|r| pooled_index(r, pad_token_id)).min().unwrap_or(0);
    shared_prefix_len(rows).min(keep)
}

/// cos and sin tables `[positions, head_dim / 2]` for any positions (a packed batch restarts at
/// 0 per row; a continuation starts after its prefix), in f32 like transformers, so long inputs
/// see the same rounding on every backend.
pub fn rope_tables(inv_freq: &[f32], positions: impl ExactSizeIterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(positions.len() * inv_freq.len());
    let mut sin = Vec::with_capacity(positions.len() * inv_freq.len());
    for pos in positions {
        for f in inv_freq {
            let a = pos as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::from_json(json).unwrap()
    }

    const QWEN3: &str = r#"{"architectures":["Qwen3ForSequenceClassification"],"hidden_size":8,"intermediate_size":12,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"vocab_size":50,
        "rms_norm_eps":1e-6,"max_position_embeddings":64,"num_labels":1,"pad_token_id":7}"#;

    #[test]
    fn layer_tensors_follow_transformers_names_and_shapes() {
        let c = config(QWEN3);
        let t = LayerWeights::new(&c, 1).tensors();
        let get = |n: &str| t.iter().find(|(name, _)| name == n).map(|(_, s)| s.clone());
        assert_eq!(get("model.layers.1.self_attn.q_proj.weight"), Some(vec![8, 8]));
        assert_eq!(get("model.layers.1.self_attn.k_proj.weight"), Some(vec![4, 8]));
        assert_eq!(get("model.layers.1.self_attn.o_proj.weight"), Some(vec![8, 8]));
        assert_eq!(get("model.layers.1.self_attn.q_norm.weight"), Some(vec![4]));
        assert_eq!(get("model.layers.1.mlp.down_proj.weight"), Some(vec![8, 12]));
        assert_eq!(get("model.layers.1.self_attn.q_proj.bias"), None);
        let all = tensors(&c, 0..2);
        assert_eq!(all.first().map(|t| t.0.as_str()), Some(EMBEDDING));
        assert_eq!(all.last().map(|t| t.0.as_str()), Some("score.weight"));
        assert!(tensors(&c, 1..2).iter().all(|(n, _)| n != EMBEDDING));
    }

    #[test]
    fn pooling_skips_trailing_pad_tokens() {
        assert_eq!(pooled_index(&[1, 2, 7, 7], Some(7)), 1);
        assert_eq!(pooled_index(&[7, 7], Some(7)), 0);
        assert_eq!(pooled_index(&[1, 2, 3], None), 2);
    }

    #[test]
    fn a_shared_prompt_stops_before_every_pooled_token() {
        let c = config(QWEN3);
        let p: Vec<u32> = (10..50).collect();
        let row = |tail: &[u32]| p.iter().chain(tail).copied().collect::<Vec<u32>>();
        let (a, b) = (row(&[1, 2]), row(&[3]));
        assert_eq!(shared_prompt(&c, &[&a, &b], Some(32)), 40);
        assert_eq!(shared_prompt(&c, &[&a, &b], None), 0);
        assert_eq!(shared_prompt(&c, &[&a], Some(32)), 0);
        assert_eq!(shared_prompt(&c, &[&a, &b], Some(41)), 0);
        // A row that is only the prompt plus pad tokens pools inside the prompt.
        let padded = row(&[7, 7]);
        assert_eq!(shared_prompt(&c, &[&a, &padded], Some(32)), 39);
        assert_eq!(shared_prompt(&c, &[&p, &a], Some(32)), 39);
    }

    #[test]
    fn invalid_rows_are_named() {
        let c = config(QWEN3);
        assert!(matches!(check_rows(&c, &[&[1], &[]]), Err(ModelError::EmptyInput)));
        assert!(matches!(check_rows(&c, &[&[1, 50]]), Err(ModelError::TokenOutOfVocab { id: 50, vocab: 50 })));
        assert!(check_rows(&c, &[&[0, 49]]).is_ok());
    }

    #[test]
    fn rope_tables_continue_a_prefix() {
        let f = [1.0, 0.5];
        let (cos, sin) = rope_tables(&f, 3..5);
        assert_eq!(cos.len(), 4);
        assert_eq!(cos[0], 3.0f32.cos());
        assert_eq!(sin[3], (4.0f32 * 0.5).sin());
    }
}
