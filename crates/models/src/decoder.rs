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
use crate::cpu_attention::CpuAttention;
use crate::fused::{MaskedSoftmax, RmsNormOp, SwiGlu};
use crate::linear::Linear;
use crate::plan::{self, LayerWeights, LinearWeights, NormWeights};
use crate::profile::{self, Op};
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

/// Compute dtype on the CPU: transformers' reference runs in f32 and so do we.
pub(crate) const DTYPE: DType = DType::F32;

/// Query rows per attention block: 128 measured fastest on the 0.6B shape at 2048 tokens
/// (164 tokens/s against 145 for 64 and 125 for 256; `rewardlens bench`).
pub(crate) const QUERY_BLOCK: usize = 128;

/// Attention on the CPU through [`CpuAttention`]'s tiled kernel: wherever its f32 GEMM has a SIMD
/// tile (wasm32; x86-64 with AVX2 and FMA), which beats Candle's matmul around blocks there.
pub(crate) fn tiled_attention() -> bool {
    rewardlens_kernels::f32_gemm::is_simd()
}

/// Keys and values of one layer, (b, kv_heads, tokens, head_dim), after RoPE.
pub(crate) type LayerKv = (Tensor, Tensor);

/// Where [`layers_forward`] gets each layer's keys and values of the earlier tokens, and where it
/// puts the ones it attended over: one layer at a time, so that a store holds them in its own
/// form and no call holds every layer's twice.
pub(crate) trait KvStore {
    /// Layer `layer`'s keys and values before this call's tokens, batch 1; `None` for none.
    fn past(&self, layer: usize) -> Result<Option<LayerKv>>;
    /// Layer `layer`'s keys and values after the call: the past's, then the call's tokens.
    fn keep(&mut self, layer: usize, seen: LayerKv) -> Result<()>;
}

/// No earlier tokens, nothing kept.
pub(crate) struct NoKv;

impl KvStore for NoKv {
    fn past(&self, _: usize) -> Result<Option<LayerKv>> {
        Ok(None)
    }
    fn keep(&mut self, _: usize, _: LayerKv) -> Result<()> {
        Ok(())
    }
}

/// Keeps every layer's keys and values whole (a shared prompt's, read back by [`PastKv`]).
impl KvStore for Vec<LayerKv> {
    fn past(&self, _: usize) -> Result<Option<LayerKv>> {
        Ok(None)
    }
    fn keep(&mut self, layer: usize, seen: LayerKv) -> Result<()> {
        debug_assert_eq!(layer, self.len());
        self.push(seen);
        Ok(())
    }
}

/// Reads a kept prefix's keys and values and keeps nothing.
pub(crate) struct PastKv<'a>(pub(crate) &'a [LayerKv]);

impl KvStore for PastKv<'_> {
    fn past(&self, layer: usize) -> Result<Option<LayerKv>> {
        Ok(self.0.get(layer).cloned())
    }
    fn keep(&mut self, _: usize, _: LayerKv) -> Result<()> {
        Ok(())
    }
}

/// A linear layer's forward pass, timed as [`Op::Matmul`].
fn matmul(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let _p = profile::span(Op::Matmul);
    l.forward(x)
}

#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn load(w: &dyn WeightSource, n: &NormWeights, eps: f64, dev: &Device) -> Result<Self> {
        Ok(Self { weight: w.tensor(&n.weight(), &[n.size], DTYPE, dev)?, eps: eps as f32 })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _p = profile::span(Op::Norm);
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return Ok(x.contiguous()?.apply_op2_no_bwd(&self.weight, &RmsNormOp { eps: self.eps })?);
        }
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
    fn load(w: &dyn WeightSource, l: &LayerWeights, c: &ModelConfig, dev: &Device) -> Result<Self> {
        let norm = |n: &Option<NormWeights>| n.as_ref().map(|n| RmsNorm::load(w, n, c.rms_norm_eps, dev)).transpose();
        Ok(Self {
            q: Linear::load(w, &l.q, dev)?,
            k: Linear::load(w, &l.k, dev)?,
            v: Linear::load(w, &l.v, dev)?,
            o: Linear::load(w, &l.o, dev)?,
            q_norm: norm(&l.q_norm)?,
            k_norm: norm(&l.k_norm)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    /// `x`: (b, t, hidden); `mask`: which keys each row's queries see, the keys being `past`'s
    /// tokens then `x`'s. `past`: keys and values of a prefix that every row continues (batch 1).
    /// Returns the output and the keys and values attended over: `past`'s then this call's
    /// (broadcast over the batch), so a batch-1 caller keeps them as the next chunk's `past`
    /// without a second concatenation.
    fn forward(&self, x: &Tensor, rope: &Rope, mask: &Masks, past: Option<&LayerKv>) -> Result<(Tensor, LayerKv)> {
        let (b, t, _) = x.dims3()?;
        let (hd, nq, nkv) = (self.head_dim, self.heads, self.kv_heads);
        let split = |y: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let y = {
                let _p = profile::span(Op::Copy);
                y.reshape((b, t, n, hd))?
            };
            let y = match norm {
                Some(nm) => nm.forward(&y)?,
                None => y,
            };
            let _p = profile::span(Op::Copy);
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = rope.apply(&split(matmul(&self.q, x)?, nq, &self.q_norm)?)?;
        let k = rope.apply(&split(matmul(&self.k, x)?, nkv, &self.k_norm)?)?;
        let v = split(matmul(&self.v, x)?, nkv, &None)?;
        // Every row sees the shared prefix first: its keys are broadcast over the batch.
        let (k, v, p) = match past {
            Some((pk, pv)) => {
                let _p = profile::span(Op::Copy);
                let p = pk.dim(2)?;
                let wide = |t: &Tensor| t.broadcast_as((b, nkv, p, hd));
                (Tensor::cat(&[&wide(pk)?, &k], 2)?.contiguous()?, Tensor::cat(&[&wide(pv)?, &v], 2)?.contiguous()?, p)
            }
            None => (k, v, 0),
        };
        let seen = (k.clone(), v.clone());
        let attention = profile::span(Op::Attention);
        // Grouped-query attention without copying K/V: head h uses kv head h / rep, so the
        // `rep` query heads of one group are stacked along the row axis of one matmul.
        // Queries go in blocks, each against only the keys it can see (causal): this skips the
        // upper triangle and keeps the score buffer small for long inputs.
        let rep = nq / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let q = q.reshape((b, nkv, rep, t, hd))?;
        if mask.tiled && x.device().is_cpu() {
            let op = CpuAttention { spans: &mask.spans, past: mask.past, block: mask.block, scale: scale as f32 };
            let out = q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?;
            drop(attention);
            let _p = profile::span(Op::Copy);
            let out = out.reshape((b, nq, t, hd))?.transpose(1, 2)?.reshape((b, t, nq * hd))?;
            drop(_p);
            return Ok((matmul(&self.o, &out)?, seen));
        }
        let mut blocks = Vec::with_capacity(t.div_ceil(mask.block));
        for start in (0..t).step_by(mask.block) {
            let len = mask.block.min(t - start);
            let end = start + len;
            let qb = q.narrow(3, start, len)?.contiguous()?.reshape((b, nkv, rep * len, hd))?;
            let kb = k.narrow(2, 0, p + end)?;
            let vb = v.narrow(2, 0, p + end)?;
            let probs = mask.softmax(&qb.matmul(&kb.t()?)?, start, len, scale)?;
            let ob = probs.matmul(&vb.contiguous()?)?;
            blocks.push(ob.reshape((b, nkv, rep, len, hd))?);
        }
        drop(attention);
        let out = {
            let _p = profile::span(Op::Copy);
            let out = Tensor::cat(&blocks, 3)?;
            out.reshape((b, nq, t, hd))?.transpose(1, 2)?.reshape((b, t, nq * hd))?
        };
        Ok((matmul(&self.o, &out)?, seen))
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(w: &dyn WeightSource, l: &LayerWeights, dev: &Device) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(w, &l.gate, dev)?,
            up: Linear::load(w, &l.up, dev)?,
            down: Linear::load(w, &l.down, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (matmul(&self.gate, x)?, matmul(&self.up, x)?);
        let h = {
            let _p = profile::span(Op::Activation);
            if gate.device().is_cpu() {
                gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &SwiGlu)?
            } else {
                (candle_nn::ops::silu(&gate)? * up)?
            }
        };
        matmul(&self.down, &h)
    }
}

pub(crate) struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    /// Which kernel multiplies this layer's linear weights (all of a layer's share one).
    pub(crate) fn kernel_name(&self) -> String {
        self.attn.q.kernel_name()
    }

    /// Decoder layer `i`, its tensors as [`LayerWeights`] names them.
    pub(crate) fn load(w: &dyn WeightSource, c: &ModelConfig, i: usize, dev: &Device) -> Result<Self> {
        let l = LayerWeights::new(c, i);
        let norm = |n: &NormWeights| RmsNorm::load(w, n, c.rms_norm_eps, dev);
        Ok(Layer {
            input_norm: norm(&l.input_norm)?,
            attn: Attention::load(w, &l, c, dev)?,
            post_norm: norm(&l.post_norm)?,
            mlp: Mlp::load(w, &l, dev)?,
        })
    }
}

/// `layers` over the hidden states `x` (b, t, hidden) at the positions of `rope`, after the
/// earlier tokens `kv` holds; each layer's keys and values of both go to `kv.keep`. Returns the
/// hidden states after the last layer. The one copy of the layer math: the whole model and every
/// pipeline stage run their layers through here.
pub(crate) fn layers_forward(
    layers: &[Layer],
    mut x: Tensor,
    rope: &Rope,
    mask: &Masks,
    kv: &mut dyn KvStore,
) -> Result<Tensor> {
    for (i, layer) in layers.iter().enumerate() {
        let past = kv.past(i)?;
        let (h, seen) = layer.attn.forward(&layer.input_norm.forward(&x)?, rope, mask, past.as_ref())?;
        drop(past);
        kv.keep(i, seen)?;
        x = (x + h)?;
        let h = layer.mlp.forward(&layer.post_norm.forward(&x)?)?;
        x = (x + h)?;
    }
    Ok(x)
}

/// The score head (one linear layer, or two with a ReLU between) over final-normed states.
pub(crate) fn score_head(score: &[Linear], h: &Tensor) -> Result<Tensor> {
    let _p = profile::span(Op::Head);
    let mut y = h.clone();
    for (i, l) in score.iter().enumerate() {
        if i > 0 {
            y = y.relu()?;
        }
        y = l.forward(&y)?;
    }
    Ok(y)
}

/// The score head's layers as linear layers (see [`score_head_layers`]).
pub(crate) fn load_score(w: &dyn WeightSource, c: &ModelConfig, dev: &Device) -> Result<Vec<Linear>> {
    Ok(score_head_layers(w, c, dev)?.into_iter().map(|(weight, bias)| Linear::from_tensor(weight, bias)).collect())
}

/// Token embeddings of `ids` (b, t).
pub(crate) fn embed(table: &QMatMul, ids: &Tensor) -> Result<Tensor> {
    let _p = profile::span(Op::Embedding);
    Ok(table.embedding(ids)?)
}

/// cos/sin tables for positions `offset..offset + t` (transformers' default position ids, or
/// the continuation of a shared prefix of `offset` tokens).
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(inv_freq: &[f32], offset: usize, t: usize, dev: &Device) -> Result<Self> {
        let _p = profile::span(Op::Rope);
        let (cos, sin) = plan::rope_tables(inv_freq, offset..offset + t);
        let shape = (t, inv_freq.len());
        Ok(Self { cos: Tensor::from_vec(cos, shape, dev)?, sin: Tensor::from_vec(sin, shape, dev)? })
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let _p = profile::span(Op::Rope);
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
    prefix_reuse: Option<usize>,
    /// Query rows per attention block ([`QUERY_BLOCK`]; tests use tiny blocks).
    query_block: usize,
    /// Attention through [`CpuAttention`] ([`tiled_attention`]; tests compare both paths).
    tiled_attention: bool,
}

impl DecoderRewardModel {
    /// Builds the model from transformers' tensor names (as [`plan`] gives them).
    pub fn load(config: ModelConfig, w: &dyn WeightSource, device: &Device) -> Result<Self> {
        let c = &config;
        let embed = w.embedding_weight(plan::EMBEDDING, c.vocab_size, c.hidden_size, DTYPE, device)?;
        let layers = (0..c.num_hidden_layers).map(|i| Layer::load(w, c, i, device)).collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(w, &plan::final_norm(c), c.rms_norm_eps, device)?;
        let score = load_score(w, c, device)?;
        let inv_freq = c.rope_inv_freq();
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            score,
            inv_freq,
            device: device.clone(),
            prefix_reuse: Some(plan::MIN_SHARED_PREFIX),
            query_block: QUERY_BLOCK,
            tiled_attention: tiled_attention(),
        })
    }

    fn masks(&self, rows: &[&[u32]], starts: &[usize], past: usize) -> Masks {
        Masks { tiled: self.tiled_attention, ..Masks::new(rows, starts, past, self.query_block, &self.device) }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Prompt reuse across a batch: when every row starts with the same `min_tokens` or more
    /// (responses to one prompt), that prefix runs once and the rows continue from its keys and
    /// values, so N responses cost about one prompt plus N responses. `None` always runs whole
    /// rows. On by default with [`plan::MIN_SHARED_PREFIX`]; outputs are the same either way (up to
    /// float rounding).
    pub fn set_prefix_reuse(&mut self, min_tokens: Option<usize>) {
        self.prefix_reuse = min_tokens.map(|m| m.max(1));
    }

    pub fn prefix_reuse(&self) -> Option<usize> {
        self.prefix_reuse
    }

    /// The kernel of the decoder's linear layers (see [`crate::linear::LinearKernel`]).
    pub fn linear_kernel(&self) -> String {
        self.layers.first().map_or_else(|| "none".into(), Layer::kernel_name)
    }

    fn head(&self, h: &Tensor) -> Result<Tensor> {
        score_head(&self.score, h)
    }

    /// The layers over `ids` (b, t) placed after `offset` earlier tokens held by `kv`, which
    /// is handed each layer's keys and values; returns the last hidden states (before the final
    /// norm).
    fn layers_forward(&self, ids: &Tensor, mask: &Masks, offset: usize, kv: &mut dyn KvStore) -> Result<Tensor> {
        let rope = Rope::new(&self.inv_freq, offset, ids.dim(1)?, &self.device)?;
        layers_forward(&self.layers, embed(&self.embed, ids)?, &rope, mask, kv)
    }

    /// The head applied at every position of one unpadded sequence, whatever the head kind: for
    /// a sequence classifier, position i gives the score of the sequence cut after token i
    /// (attention is causal). Step rewards and prefix scores read it.
    pub fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        plan::check_rows(&self.config, &[ids])?;
        let t = ids.len();
        let dev = &self.device;
        let x_ids = Tensor::from_vec(ids.to_vec(), (1, t), dev)?;
        let mask = self.masks(&[ids], &[0], 0);
        let x = self.layers_forward(&x_ids, &mask, 0, &mut NoKv)?;
        Ok(self.head(&self.norm.forward(&x)?)?.get(0)?.to_vec2()?)
    }

    fn pooled_index(&self, row: &[u32]) -> usize {
        plan::pooled_index(row, self.config.pad_token_id)
    }

    /// Runs a padded batch. Every row is padded to the longest with the pad token on `padding`'s
    /// side; padding is masked out of attention, so each row's outputs equal scoring it alone.
    /// Rows that share a long enough prefix go through [`Self::forward_shared_prefix`].
    pub fn forward(&self, rows: &[&[u32]], padding: Padding) -> Result<Vec<HeadOutput>> {
        let b = rows.len();
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if b == 0 {
            return Ok(vec![]);
        }
        plan::check_rows(&self.config, rows)?;
        let shared = plan::shared_prompt(&self.config, rows, self.prefix_reuse);
        if shared > 0 {
            return self.forward_shared_prefix(rows, shared);
        }
        let pad = self.config.pad_token_id.unwrap_or(0);
        let mut ids = Vec::with_capacity(b * t);
        let mut starts = Vec::with_capacity(b);
        for r in rows {
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
        let mask = self.masks(rows, &starts, 0);
        let x = self.layers_forward(&ids, &mask, 0, &mut NoKv)?;
        self.heads(rows, &x, &starts, 0, None)
    }

    /// Rows that all start with the same `shared` tokens: the prefix runs once (batch 1, its
    /// keys and values kept per layer), then the rest of every row runs right-padded, attending
    /// to the prefix's keys and its own, at positions continuing the prefix's.
    fn forward_shared_prefix(&self, rows: &[&[u32]], shared: usize) -> Result<Vec<HeadOutput>> {
        let dev = &self.device;
        let prefix = &rows[0][..shared];
        let ids = Tensor::from_vec(prefix.to_vec(), (1, shared), dev)?;
        let mask = self.masks(&[prefix], &[0], 0);
        let mut kv = Vec::with_capacity(self.layers.len());
        let prefix_x = self.layers_forward(&ids, &mask, 0, &mut kv)?;

        let rests: Vec<&[u32]> = rows.iter().map(|r| &r[shared..]).collect();
        let t = rests.iter().map(|r| r.len()).max().unwrap_or(0);
        let pad = self.config.pad_token_id.unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * t);
        for r in &rests {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad, t - r.len()));
        }
        let ids = Tensor::from_vec(ids, (rows.len(), t), dev)?;
        let mask = self.masks(&rests, &vec![0; rows.len()], shared);
        let x = self.layers_forward(&ids, &mask, shared, &mut PastKv(&kv))?;
        drop(kv);
        let offsets = vec![0; rows.len()];
        self.heads(rows, &x, &offsets, shared, Some(&prefix_x))
    }

    /// Head outputs from the last hidden states `x` (b, t, hidden), where row i's token j sits
    /// at `x[i][offsets[i] + j - shared]`; the first `shared` tokens of every row, if any, are
    /// `prefix_x` (1, shared, hidden).
    fn heads(
        &self,
        rows: &[&[u32]],
        x: &Tensor,
        offsets: &[usize],
        shared: usize,
        prefix_x: Option<&Tensor>,
    ) -> Result<Vec<HeadOutput>> {
        match self.config.architecture.head {
            HeadKind::Sequence => {
                let pooled: Vec<usize> = rows.iter().map(|r| self.pooled_index(r)).collect();
                let picked = pooled
                    .iter()
                    .zip(offsets)
                    .enumerate()
                    .map(|(i, (&p, &s))| x.get(i)?.get(s + p - shared))
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
                let prefix_logits: Vec<Vec<f32>> = match prefix_x {
                    Some(px) => self.head(&self.norm.forward(px)?)?.get(0)?.to_vec2()?,
                    None => Vec::new(),
                };
                let logits = self.head(&self.norm.forward(x)?)?;
                rows.iter()
                    .zip(offsets)
                    .enumerate()
                    .map(|(i, (r, &s))| {
                        let mut all = prefix_logits.clone();
                        all.extend(logits.get(i)?.narrow(0, s, r.len() - shared)?.to_vec2::<f32>()?);
                        Ok(HeadOutput::Token(all))
                    })
                    .collect()
            }
        }
    }
}

/// The score head's layers (weight `[out, in]`, optional bias) in f32, from wherever the
/// architecture keeps them (see `ScoreHead`). The head stays in full precision even in quantized
/// checkpoints: it is tiny and the score is read straight off it. Shared by every backend.
pub fn score_head_layers(w: &dyn WeightSource, c: &ModelConfig, dev: &Device) -> Result<Vec<(Tensor, Option<Tensor>)>> {
    let linear = |l: &LinearWeights| -> Result<(Tensor, Option<Tensor>)> {
        let weight = w.tensor(&l.weight(), &[l.out, l.inp], DTYPE, dev)?;
        let bias = l.bias_name().map(|b| w.tensor(&b, &[l.out], DTYPE, dev)).transpose()?;
        Ok((weight, bias))
    };
    Ok(match c.architecture.score {
        ScoreHead::Linear(_) | ScoreHead::Mlp => plan::score_layers(c).iter().map(linear).collect::<Result<_>>()?,
        ScoreHead::LmHeadRows => {
            if c.lm_head_rows.is_empty() {
                return Err(ModelError::Config(format!(
                    "{} is a language model: it scores only as a math-shepherd PRM, whose candidate tokens come from the tokenizer",
                    c.architecture.name()
                )));
            }
            let table = w.tensor(plan::lm_head_table(c), &[c.vocab_size, c.hidden_size], DTYPE, dev)?;
            let rows = Tensor::new(c.lm_head_rows.as_slice(), dev)?;
            vec![(table.index_select(&rows, 0)?, None)]
        }
    })
}

/// Which keys each query may see, built into one query block's additive mask at a time: a
/// batch's masks together hold about b·t²/2 floats (27 GB for 8 rows of 40,960 tokens), one
/// block only b·block·keys, so only the block being computed exists.
pub(crate) struct Masks {
    /// Per row: where its tokens start in the padded batch and how many there are.
    spans: Vec<(usize, usize)>,
    /// Tokens of a shared prefix before the batch's own keys, visible to every real token.
    past: usize,
    block: usize,
    /// CPU attention through [`CpuAttention`] (else Candle's matmuls around [`MaskedSoftmax`]).
    tiled: bool,
    dev: Device,
}

impl Masks {
    fn new(rows: &[&[u32]], starts: &[usize], past: usize, block: usize, dev: &Device) -> Self {
        let spans = rows.iter().zip(starts).map(|(r, &s)| (s, r.len())).collect();
        Self { spans, past, block: block.max(1), tiled: tiled_attention(), dev: dev.clone() }
    }

    /// One unpadded sequence of `t` new tokens after `past` earlier ones (a pipeline chunk).
    pub(crate) fn single(t: usize, past: usize, block: usize, dev: &Device) -> Self {
        Self { spans: vec![(0, t)], past, block: block.max(1), tiled: tiled_attention(), dev: dev.clone() }
    }

    /// Attention probabilities of queries `start..start + len` from their scores (b, kv_heads,
    /// rep · len, keys): `scale` applied, each query over only the keys it may see. On the CPU
    /// one pass ([`MaskedSoftmax`]); elsewhere the additive mask and Candle's softmax.
    fn softmax(&self, scores: &Tensor, start: usize, len: usize, scale: f64) -> Result<Tensor> {
        if scores.device().is_cpu() {
            let op = MaskedSoftmax { spans: &self.spans, past: self.past, start, len, scale: scale as f32 };
            return Ok(scores.contiguous()?.apply_op1_no_bwd(&op)?);
        }
        let (b, nkv, rows, keys) = scores.dims4()?;
        let s = (scores * scale)?.reshape((b, nkv, rows / len, len, keys))?;
        let probs = candle_nn::ops::softmax_last_dim(&s.broadcast_add(&self.block(start, len)?)?)?;
        Ok(probs.reshape((b, nkv, rows, keys))?)
    }

    /// The (b, 1, 1, len, past + start + len) mask of queries `start..start + len` over the
    /// prefix and this batch's keys `0..start + len`: 0 where the query may attend the key
    /// (causal, both real tokens), a large negative number elsewhere. Finite rather than -inf so
    /// that fully masked padding rows give a harmless uniform softmax instead of NaNs that would
    /// leak through `0 * NaN`.
    fn block(&self, start: usize, len: usize) -> Result<Tensor> {
        let (b, past, end) = (self.spans.len(), self.past, start + len);
        let keys = past + end;
        let mut m = vec![f32::MIN; b * len * keys];
        for (bi, &(s, n)) in self.spans.iter().enumerate() {
            for i in start.max(s)..end.min(s + n) {
                let row = (bi * len + (i - start)) * keys;
                m[row..row + past].fill(0.0);
                m[row + past + s..=row + past + i].fill(0.0);
            }
        }
        Ok(Tensor::from_vec(m, (b, 1, 1, len, keys), &self.dev)?)
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;
    use crate::weights::SafetensorsWeights;

    fn fixture(name: &str) -> DecoderRewardModel {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name);
        let config = ModelConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let w = SafetensorsWeights::from_buffers(vec![std::fs::read(dir.join("model.safetensors")).unwrap()]).unwrap();
        DecoderRewardModel::load(config, &w, &Device::Cpu).unwrap()
    }

    fn ids(n: usize, seed: u32, vocab: usize) -> Vec<u32> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % vocab as u32).collect()
    }

    fn assert_close(a: &[HeadOutput], b: &[HeadOutput]) {
        let flat = |o: &HeadOutput| match o {
            HeadOutput::Sequence { logits, .. } => logits.clone(),
            HeadOutput::Token(t) => t.concat(),
        };
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (flat(x), flat(y));
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-5 * q.abs().max(1.0), "{p} vs {q}");
            }
        }
    }

    /// Masks are built one query block at a time, so a block size that splits a sequence into
    /// many blocks (and ends on a partial one) must give the same outputs as the default: on
    /// padded batches either side, with a shared prefix, and per position.
    #[test]
    fn tiny_query_blocks_give_the_same_outputs() {
        for name in ["qwen3-seq", "llama-token"] {
            let mut m = fixture(name);
            let vocab = m.config().vocab_size;
            let long = ids(301, 1, vocab);
            let short = ids(77, 2, vocab);
            let prefix = ids(40, 3, vocab);
            let a: Vec<u32> = prefix.iter().copied().chain(ids(90, 4, vocab)).collect();
            let b: Vec<u32> = prefix.iter().copied().chain(ids(23, 5, vocab)).collect();
            let run = |m: &DecoderRewardModel| {
                (
                    m.forward(&[&long, &short], Padding::Right).unwrap(),
                    m.forward(&[&short, &long], Padding::Left).unwrap(),
                    m.forward(&[&a, &b], Padding::Right).unwrap(),
                    m.forward_positions(&long).unwrap(),
                )
            };
            let reference = run(&m);
            for block in [1, 7, 300] {
                m.query_block = block;
                let got = run(&m);
                assert_close(&got.0, &reference.0);
                assert_close(&got.1, &reference.1);
                assert_close(&got.2, &reference.2);
                let pos = |v: &[Vec<f32>]| [HeadOutput::Token(v.to_vec())];
                assert_close(&pos(&got.3), &pos(&reference.3));
            }
        }
    }

    /// The tiled CPU attention (the wasm default) against Candle's matmuls around the masked
    /// softmax: padded batches either side, a shared prefix, per position, several block sizes.
    #[test]
    fn tiled_attention_matches_candles_matmuls() {
        for name in ["qwen3-seq", "llama-token"] {
            let mut m = fixture(name);
            let vocab = m.config().vocab_size;
            let long = ids(301, 1, vocab);
            let short = ids(77, 2, vocab);
            let prefix = ids(40, 3, vocab);
            let a: Vec<u32> = prefix.iter().copied().chain(ids(90, 4, vocab)).collect();
            let b: Vec<u32> = prefix.iter().copied().chain(ids(23, 5, vocab)).collect();
            let run = |m: &DecoderRewardModel| {
                (
                    m.forward(&[&long, &short], Padding::Right).unwrap(),
                    m.forward(&[&short, &long], Padding::Left).unwrap(),
                    m.forward(&[&a, &b], Padding::Right).unwrap(),
                    m.forward_positions(&long).unwrap(),
                )
            };
            m.tiled_attention = false;
            let reference = run(&m);
            m.tiled_attention = true;
            for block in [7, 128, 300] {
                m.query_block = block;
                let got = run(&m);
                assert_close(&got.0, &reference.0);
                assert_close(&got.1, &reference.1);
                assert_close(&got.2, &reference.2);
                let pos = |v: &[Vec<f32>]| [HeadOutput::Token(v.to_vec())];
                assert_close(&pos(&got.3), &pos(&reference.3));
            }
        }
    }

    /// One block's mask covers only its queries (b · len · keys floats), never the batch's
    /// t² triangle.
    #[test]
    fn a_block_mask_covers_only_its_queries() {
        let rows: [&[u32]; 2] = [&[1; 1000], &[1; 600]];
        let m = Masks::new(&rows, &[0, 400], 5, 128, &Device::Cpu);
        let block = m.block(896, 104).unwrap();
        assert_eq!(block.dims(), &[2, 1, 1, 104, 5 + 1000]);
        // Row 1 starts at 400: its query 896 sees the prefix and its keys 400..=896 only.
        let row: Vec<f32> = block.get(1).unwrap().flatten_all().unwrap().narrow(0, 0, 1005).unwrap().to_vec1().unwrap();
        assert!(row[..5].iter().all(|&v| v == 0.0));
        assert!(row[5..405].iter().all(|&v| v == f32::MIN));
        assert!(row[405..=901].iter().all(|&v| v == 0.0));
        assert!(row[902..].iter().all(|&v| v == f32::MIN));
    }
}
