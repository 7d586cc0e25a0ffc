//! The decoder-only transformer shared by Llama, Qwen2 and Qwen3 reward models, with the
//! sequence- and token-classification heads.
//!
//! Why our own model file instead of `candle-transformers`' `llama`/`qwen2`/`qwen3`: those are
//! built for generation. They keep a mutable KV cache, build only a causal mask (no key-padding
//! mask, so a padded batch scores wrongly), and end in an LM head applied to the last position.
//! Scoring needs a padded batch with per-row masks, pooling at each row's last non-padding
//! token (transformers' rule), per-token outputs for token classification, and optionally
//! quantized linear layers; one file with the families' differences as config flags does that.

use crate::config::{HeadKind, ModelConfig, ScoreHead};
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

/// Compute dtype on the CPU: transformers' reference runs in f32 and so do we.
const DTYPE: DType = DType::F32;

/// Query rows per attention block: 128 measured fastest on the 0.6B shape at 2048 tokens
/// (164 tokens/s against 145 for 64 and 125 for 256; `rewardlens bench`).
const QUERY_BLOCK: usize = 128;

/// A linear layer whose weight may be quantized.
#[derive(Debug, Clone)]
struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(w: &dyn WeightSource, name: &str, out: usize, inp: usize, bias: bool, dev: &Device) -> Result<Self> {
        let weight = w.linear_weight(&format!("{name}.weight"), out, inp, DTYPE, dev)?;
        let bias = if bias { Some(w.tensor(&format!("{name}.bias"), &[out], DTYPE, dev)?) } else { None };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims so one GEMM covers the whole batch.
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = self.weight.forward(&x.reshape((rows, inp))?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(w: &dyn WeightSource, name: &str, size: usize, eps: f64, dev: &Device) -> Result<Self> {
        Ok(Self { weight: w.tensor(&format!("{name}.weight"), &[size], DTYPE, dev)?, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &dyn WeightSource, p: &str, c: &ModelConfig, dev: &Device) -> Result<Self> {
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nq, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let norm = |n: &str| RmsNorm::load(w, &format!("{p}.{n}"), hd, c.rms_norm_eps, dev);
        Ok(Self {
            q: Linear::load(w, &format!("{p}.q_proj"), nq * hd, h, c.qkv_bias, dev)?,
            k: Linear::load(w, &format!("{p}.k_proj"), nkv * hd, h, c.qkv_bias, dev)?,
            v: Linear::load(w, &format!("{p}.v_proj"), nkv * hd, h, c.qkv_bias, dev)?,
            o: Linear::load(w, &format!("{p}.o_proj"), h, nq * hd, c.o_bias, dev)?,
            q_norm: if c.qk_norm { Some(norm("q_norm")?) } else { None },
            k_norm: if c.qk_norm { Some(norm("k_norm")?) } else { None },
            heads: nq,
            kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// `x`: (b, t, hidden); `mask`: per query block, the additive (b, 1, 1, block, keys) mask.
    fn forward(&self, x: &Tensor, rope: &Rope, mask: &[Tensor]) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (hd, nq, nkv) = (self.head_dim, self.heads, self.kv_heads);
        let split = |y: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let y = y.reshape((b, t, n, hd))?;
            let y = match norm {
                Some(nm) => nm.forward(&y)?,
                None => y,
            };
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = rope.apply(&split(self.q.forward(x)?, nq, &self.q_norm)?)?;
        let k = rope.apply(&split(self.k.forward(x)?, nkv, &self.k_norm)?)?;
        let v = split(self.v.forward(x)?, nkv, &None)?;
        // Grouped-query attention without copying K/V: head h uses kv head h / rep, so the
        // `rep` query heads of one group are stacked along the row axis of one matmul.
        // Queries go in blocks, each against only the keys it can see (causal): this skips the
        // upper triangle and keeps the score buffer small for long inputs.
        let rep = nq / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let q = q.reshape((b, nkv, rep, t, hd))?;
        let mut blocks = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
        for start in (0..t).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(t - start);
            let end = start + len;
            let qb = q.narrow(3, start, len)?.contiguous()?.reshape((b, nkv, rep * len, hd))?;
            let kb = k.narrow(2, 0, end)?;
            let vb = v.narrow(2, 0, end)?;
            let scores = (qb.matmul(&kb.t()?)? * scale)?.reshape((b, nkv, rep, len, end))?;
            let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask[start / QUERY_BLOCK])?)?;
            let ob = probs.reshape((b, nkv, rep * len, end))?.matmul(&vb.contiguous()?)?;
            blocks.push(ob.reshape((b, nkv, rep, len, hd))?);
        }
        let out = Tensor::cat(&blocks, 3)?;
        let out = out.reshape((b, nq, t, hd))?.transpose(1, 2)?.reshape((b, t, nq * hd))?;
        self.o.forward(&out)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(w: &dyn WeightSource, p: &str, c: &ModelConfig, dev: &Device) -> Result<Self> {
        let (h, i, bias) = (c.hidden_size, c.intermediate_size, c.mlp_bias);
        Ok(Self {
            gate: Linear::load(w, &format!("{p}.gate_proj"), i, h, bias, dev)?,
            up: Linear::load(w, &format!("{p}.up_proj"), i, h, bias, dev)?,
            down: Linear::load(w, &format!("{p}.down_proj"), h, i, bias, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}

struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// cos/sin tables for positions `0..t` (transformers' default position ids).
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(inv_freq: &[f32], t: usize, dev: &Device) -> Result<Self> {
        // f32 throughout, like transformers, so long inputs see the same rounding.
        let mut cos = Vec::with_capacity(t * inv_freq.len());
        let mut sin = Vec::with_capacity(t * inv_freq.len());
        for pos in 0..t {
            for f in inv_freq {
                let a = pos as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let shape = (t, inv_freq.len());
        Ok(Self { cos: Tensor::from_vec(cos, shape, dev)?, sin: Tensor::from_vec(sin, shape, dev)? })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope(x, &self.cos, &self.sin)?)
    }
}

/// Where a row's tokens sit in the padded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Right,
    Left,
}

/// Head outputs for one row of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadOutput {
    /// `num_labels` logits at the pooled token, and that token's index in the row.
    Sequence { logits: Vec<f32>, pooled_index: usize },
    /// `num_labels` logits per token.
    Token(Vec<Vec<f32>>),
}

/// A decoder reward model: embeddings, layers, final norm and score head.
pub struct DecoderRewardModel {
    config: ModelConfig,
    embed: QMatMul,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// One linear layer, or two with a ReLU between (Qwen2ForProcessRewardModel).
    score: Vec<Linear>,
    inv_freq: Vec<f32>,
    device: Device,
}

impl DecoderRewardModel {
    /// Builds the model from transformers' tensor names (`model.layers.N...`, `score`).
    pub fn load(config: ModelConfig, w: &dyn WeightSource, device: &Device) -> Result<Self> {
        let c = &config;
        let embed = w.embedding_weight("model.embed_tokens.weight", c.vocab_size, c.hidden_size, DTYPE, device)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Layer {
                    input_norm: RmsNorm::load(
                        w,
                        &format!("{p}.input_layernorm"),
                        c.hidden_size,
                        c.rms_norm_eps,
                        device,
                    )?,
                    attn: Attention::load(w, &format!("{p}.self_attn"), c, device)?,
                    post_norm: RmsNorm::load(
                        w,
                        &format!("{p}.post_attention_layernorm"),
                        c.hidden_size,
                        c.rms_norm_eps,
                        device,
                    )?,
                    mlp: Mlp::load(w, &format!("{p}.mlp"), c, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, "model.norm", c.hidden_size, c.rms_norm_eps, device)?;
        let score = score_head_layers(w, c, device)?
            .into_iter()
            .map(|(weight, bias)| Linear { weight: QMatMul::Tensor(weight), bias })
            .collect();
        let inv_freq = c.rope_inv_freq();
        Ok(Self { config, embed, layers, norm, score, inv_freq, device: device.clone() })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn head(&self, h: &Tensor) -> Result<Tensor> {
        let mut y = h.clone();
        for (i, l) in self.score.iter().enumerate() {
            if i > 0 {
                y = y.relu()?;
            }
            y = l.forward(&y)?;
        }
        Ok(y)
    }

    /// The head applied at every position of one unpadded sequence, whatever the head kind: for
    /// a sequence classifier, position i gives the score of the sequence cut after token i
    /// (attention is causal). Step rewards and prefix scores read it.
    pub fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfVocab { id, vocab });
        }
        let t = ids.len();
        let dev = &self.device;
        let x_ids = Tensor::from_vec(ids.to_vec(), (1, t), dev)?;
        let mask = attention_masks(&[ids], &[0], t, dev)?;
        let rope = Rope::new(&self.inv_freq, t, dev)?;
        let mut x = self.embed.embedding(&x_ids)?;
        for layer in &self.layers {
            let h = layer.attn.forward(&layer.input_norm.forward(&x)?, &rope, &mask)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.post_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        Ok(self.head(&self.norm.forward(&x)?)?.get(0)?.to_vec2()?)
    }

    /// Runs a padded batch. Every row is padded to the longest with the pad token on `padding`'s
    /// side; padding is masked out of attention, so each row's outputs equal scoring it alone.
    pub fn forward(&self, rows: &[&[u32]], padding: Padding) -> Result<Vec<HeadOutput>> {
        let b = rows.len();
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if b == 0 {
            return Ok(vec![]);
        }
        if rows.iter().any(|r| r.is_empty()) {
            return Err(ModelError::EmptyInput);
        }
        let vocab = self.config.vocab_size;
        let pad = self.config.pad_token_id.unwrap_or(0);
        let mut ids = Vec::with_capacity(b * t);
        let mut starts = Vec::with_capacity(b);
        for r in rows {
            if let Some(&id) = r.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::TokenOutOfVocab { id, vocab });
            }
            let fill = t - r.len();
            match padding {
                Padding::Right => {
                    starts.push(0);
                    ids.extend_from_slice(r);
                    ids.extend(std::iter::repeat_n(pad, fill));
                }
                Padding::Left => {
                    starts.push(fill);
                    ids.extend(std::iter::repeat_n(pad, fill));
                    ids.extend_from_slice(r);
                }
            }
        }
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, (b, t), dev)?;
        let mask = attention_masks(rows, &starts, t, dev)?;
        let rope = Rope::new(&self.inv_freq, t, dev)?;

        let mut x = self.embed.embedding(&ids)?;
        for layer in &self.layers {
            let h = layer.attn.forward(&layer.input_norm.forward(&x)?, &rope, &mask)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.post_norm.forward(&x)?)?;
            x = (x + h)?;
        }

        match self.config.architecture.head {
            HeadKind::Sequence => {
                // transformers pools at the rightmost token that is not the pad token.
                let pooled: Vec<usize> = rows
                    .iter()
                    .map(|r| match self.config.pad_token_id {
                        Some(p) => r.iter().rposition(|&id| id != p).unwrap_or(0),
                        None => r.len() - 1,
                    })
                    .collect();
                let picked = pooled
                    .iter()
                    .zip(&starts)
                    .enumerate()
                    .map(|(i, (&p, &s))| x.get(i)?.get(s + p))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let h = self.norm.forward(&Tensor::stack(&picked, 0)?)?;
                let logits: Vec<Vec<f32>> = self.head(&h)?.to_vec2()?;
                Ok(logits
                    .into_iter()
                    .zip(pooled)
                    .map(|(logits, pooled_index)| HeadOutput::Sequence { logits, pooled_index })
                    .collect())
            }
            HeadKind::Token => {
                let logits = self.head(&self.norm.forward(&x)?)?;
                rows.iter()
                    .zip(&starts)
                    .enumerate()
                    .map(|(i, (r, &s))| Ok(HeadOutput::Token(logits.get(i)?.narrow(0, s, r.len())?.to_vec2()?)))
                    .collect()
            }
        }
    }
}

/// The score head's layers (weight `[out, in]`, optional bias) in f32, from wherever the
/// architecture keeps them (see `ScoreHead`). The head stays in full precision even in quantized
/// checkpoints: it is tiny and the score is read straight off it. Shared by every backend.
pub fn score_head_layers(w: &dyn WeightSource, c: &ModelConfig, dev: &Device) -> Result<Vec<(Tensor, Option<Tensor>)>> {
    let h = c.hidden_size;
    let labels = c.num_labels();
    let linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<(Tensor, Option<Tensor>)> {
        let weight = w.tensor(&format!("{name}.weight"), &[out, inp], DTYPE, dev)?;
        let bias = if bias { Some(w.tensor(&format!("{name}.bias"), &[out], DTYPE, dev)?) } else { None };
        Ok((weight, bias))
    };
    Ok(match c.architecture.score {
        ScoreHead::Linear(name) => vec![linear(name, labels, h, c.score_bias)?],
        ScoreHead::Mlp => vec![linear("score.0", h, h, true)?, linear("score.2", labels, h, true)?],
        ScoreHead::LmHeadRows => {
            if c.lm_head_rows.is_empty() {
                return Err(ModelError::Config(format!(
                    "{} is a language model: it scores only as a math-shepherd PRM, whose candidate tokens come from the tokenizer",
                    c.architecture.name()
                )));
            }
            let name = if c.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
            let table = w.tensor(name, &[c.vocab_size, h], DTYPE, dev)?;
            let rows = Tensor::new(c.lm_head_rows.as_slice(), dev)?;
            vec![(table.index_select(&rows, 0)?, None)]
        }
    })
}

/// Additive attention masks, one per query block of `QUERY_BLOCK` rows: block `i` is
/// (b, 1, 1, rows, keys) for the keys `0..end` of the block, 0 where the query may attend the key
/// (causal, both real tokens), a large negative number elsewhere. Finite rather than -inf so
/// that fully masked padding rows give a harmless uniform softmax instead of NaNs that would
/// leak through `0 * NaN`. Built once per batch and shared by every layer.
fn attention_masks(rows: &[&[u32]], starts: &[usize], t: usize, dev: &Device) -> Result<Vec<Tensor>> {
    let b = rows.len();
    let mut blocks = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
    for start in (0..t).step_by(QUERY_BLOCK) {
        let len = QUERY_BLOCK.min(t - start);
        let end = start + len;
        let mut m = vec![f32::MIN; b * len * end];
        for (bi, (r, &s)) in rows.iter().zip(starts).enumerate() {
            for i in start.max(s)..end.min(s + r.len()) {
                let row = (bi * len + (i - start)) * end;
                m[row + s..=row + i].fill(0.0);
            }
        }
        blocks.push(Tensor::from_vec(m, (b, 1, 1, len, end), dev)?);
    }
    Ok(blocks)
}
