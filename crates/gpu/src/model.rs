//! The whole decoder forward pass on the GPU, chaining the kernels, from the same checkpoint
//! the CPU engine loads (any `WeightSource`: safetensors or GGUF), with the same outputs
//! (pooled logits for sequence heads, per-token logits for token heads).
//!
//! A batch is packed: sequences are laid end to end without padding, attention keeps each token
//! inside its own sequence, and rotary positions restart at each sequence. A pass records every
//! dispatch into one command encoder and submits once, when the logits are read back.

use crate::context::{Gpu, GpuBuffer, GpuError, Result};
use crate::kernels::*;
use rewardlens_models::plan::{self, LayerWeights, LinearWeights, NormWeights};
use rewardlens_models::weights::WeightSource;
use rewardlens_models::{HeadKind, HeadOutput, ModelConfig};

struct Linear {
    /// Row blocks of the `[out, inp]` weight, each within one storage binding.
    chunks: Vec<GpuMatrix>,
    bias: Option<GpuBuffer>,
    out: usize,
}

struct Layer {
    input_norm: GpuBuffer,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<GpuBuffer>,
    k_norm: Option<GpuBuffer>,
    post_norm: GpuBuffer,
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Kernels {
    matmul: Matmul,
    bias: BiasAdd,
    norm: RmsNorm,
    rope: Rope,
    attention: Attention,
    swiglu: SwiGlu,
    add: Add,
    embedding: Embedding,
}

/// A reward model whose forward pass runs on the GPU.
pub struct GpuRewardModel {
    gpu: Gpu,
    config: ModelConfig,
    format: WeightFormat,
    k: Kernels,
    /// f32 rows, split to fit the device's bindings.
    embed: Vec<GpuMatrix>,
    layers: Vec<Layer>,
    final_norm: GpuBuffer,
    score: Linear,
    inv_freq: Vec<f32>,
    /// Tokens one pass may hold: the widest activation (`[tokens, intermediate]`) fits a binding.
    max_pass_tokens: usize,
    weight_bytes: u64,
    /// Shared-prompt reuse: the shortest common prefix packed once per pass (`None`: off).
    prefix_reuse: Option<usize>,
}

fn weights_err(e: rewardlens_models::ModelError) -> GpuError {
    GpuError::Shape(e.to_string())
}

/// Widest activation row in f32 values.
fn widest_row(c: &ModelConfig) -> usize {
    [c.hidden_size, c.intermediate_size, c.num_attention_heads * c.head_dim, c.num_labels()]
        .into_iter()
        .max()
        .unwrap_or(1)
}

/// Rows of the embedding table read and uploaded at a time (8 MiB of f16 at 1,024 wide).
const EMBEDDING_PIECE_ROWS: usize = 4096;

impl GpuRewardModel {
    /// Uploads the checkpoint's matrices in `format` (rows that the format cannot hold stay
    /// f32; the score head always does, as on the CPU). Each tensor is read, converted and
    /// uploaded on its own, so at most one tensor is held in host memory at a time.
    pub fn load(gpu: Gpu, config: ModelConfig, w: &dyn WeightSource, format: WeightFormat) -> Result<Self> {
        let cpu = candle_core::Device::Cpu;
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            w.tensor(name, shape, candle_core::DType::F32, &cpu)
                .map_err(weights_err)?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| GpuError::Shape(format!("{name}: {e}")))
        };
        let c = &config;
        let mut weight_bytes = 0u64;
        let mut linear = |l: &LinearWeights| -> Result<Linear> {
            let data = f32s(&l.weight(), &[l.out, l.inp])?;
            let format = if format.fits_rows(l.inp) { format } else { WeightFormat::F32 };
            let chunks = GpuMatrix::upload_split(&gpu, format, &data, l.out, l.inp)?;
            let bias = match l.bias_name() {
                Some(b) => Some(gpu.upload_weights_f32(&f32s(&b, &[l.out])?)),
                None => None,
            };
            weight_bytes += chunks.iter().map(GpuMatrix::bytes).sum::<u64>();
            Ok(Linear { chunks, bias, out: l.out })
        };
        let norm =
            |n: &NormWeights| -> Result<GpuBuffer> { Ok(gpu.upload_weights_f32(&f32s(&n.weight(), &[n.size])?)) };
        let h = c.hidden_size;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for index in 0..c.num_hidden_layers {
            let l = LayerWeights::new(c, index);
            layers.push(Layer {
                input_norm: norm(&l.input_norm)?,
                q: linear(&l.q)?,
                k: linear(&l.k)?,
                v: linear(&l.v)?,
                o: linear(&l.o)?,
                q_norm: l.q_norm.as_ref().map(norm).transpose()?,
                k_norm: l.k_norm.as_ref().map(norm).transpose()?,
                post_norm: norm(&l.post_norm)?,
                gate: linear(&l.gate)?,
                up: linear(&l.up)?,
                down: linear(&l.down)?,
            });
        }
        // The score head stays f32, as on the CPU, from the loader every backend shares.
        let mut head = rewardlens_models::decoder::score_head_layers(w, c, &cpu).map_err(weights_err)?;
        if head.len() != 1 {
            return Err(GpuError::Shape(format!(
                "{}'s two-layer score head is not on the GPU backend yet: use the CPU",
                c.architecture.name()
            )));
        }
        let (hw, hb) = head.remove(0);
        let tensor_f32 = |t: candle_core::Tensor| -> Result<Vec<f32>> {
            t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| GpuError::Shape(format!("score head: {e}")))
        };
        let labels = c.num_labels();
        let score = Linear {
            chunks: GpuMatrix::upload_split(&gpu, WeightFormat::F32, &tensor_f32(hw)?, labels, h)?,
            bias: match hb {
                Some(b) => Some(gpu.upload_weights_f32(&tensor_f32(b)?)),
                None => None,
            },
            out: labels,
        };
        // The table in f16 unless the matrices are f32: half the bytes (a 150k-token
        // vocabulary is the largest tensor of a small model), read as f16 on the host too.
        let embed = if format == WeightFormat::F32 || !WeightFormat::F16.fits_rows(h) {
            let table = f32s(plan::EMBEDDING, &[c.vocab_size, h])?;
            GpuMatrix::upload_split(&gpu, WeightFormat::F32, &table, c.vocab_size, h)?
        } else {
            use half::vec::HalfFloatVecExt;
            // A piece at a time where the source reads rows (the page's streamed checkpoint).
            let piece = if w.reads_rows() { EMBEDDING_PIECE_ROWS } else { c.vocab_size };
            GpuMatrix::upload_f16_rows(&gpu, c.vocab_size, h, piece, |rows| {
                let t = w
                    .tensor_rows(plan::EMBEDDING, &[c.vocab_size, h], rows, candle_core::DType::F16, &cpu)
                    .map_err(weights_err)?;
                let bits = t.flatten_all().and_then(|t| t.to_vec1::<half::f16>());
                Ok(bits.map_err(|e| GpuError::Shape(format!("{}: {e}", plan::EMBEDDING)))?.reinterpret_into())
            })?
        };
        weight_bytes += embed.iter().map(GpuMatrix::bytes).sum::<u64>();
        let final_norm = norm(&plan::final_norm(c))?;
        let max_pass_tokens = split_rows(&gpu, widest_row(c) as u64 * 4, usize::MAX, "an activation row")?;
        let inv_freq = c.rope_inv_freq();
        let k = Kernels {
            matmul: Matmul::new(&gpu),
            bias: BiasAdd::new(&gpu),
            norm: RmsNorm::new(&gpu),
            rope: Rope::new(&gpu),
            attention: Attention::new(&gpu),
            swiglu: SwiGlu::new(&gpu),
            add: Add::new(&gpu),
            embedding: Embedding::new(&gpu),
        };
        gpu.flush();
        // Natively, an upload the device could not hold fails the load here; in the browser the
        // caller awaits `gpu().check()`.
        #[cfg(not(target_arch = "wasm32"))]
        pollster::block_on(gpu.check())?;
        Ok(Self {
            gpu,
            config,
            format,
            k,
            embed,
            layers,
            final_norm,
            score,
            inv_freq,
            max_pass_tokens,
            weight_bytes,
            prefix_reuse: Some(plan::MIN_SHARED_PREFIX),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn adapter(&self) -> &str {
        &self.gpu.adapter
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The matrices' storage format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Tokens one pass can hold on this device (longer batches are split; one longer sequence
    /// is an error).
    pub fn max_pass_tokens(&self) -> usize {
        self.max_pass_tokens
    }

    /// Prompt reuse across a batch, as on the CPU engine: rows that all start with the same
    /// `min_tokens` or more carry that prefix once per pass, and every row's own tokens attend
    /// to it. `None` packs whole rows.
    pub fn set_prefix_reuse(&mut self, min_tokens: Option<usize>) {
        self.prefix_reuse = min_tokens.map(|m| m.max(1));
    }

    pub fn prefix_reuse(&self) -> Option<usize> {
        self.prefix_reuse
    }

    fn linear(&self, l: &Linear, x: &GpuBuffer, y: &GpuBuffer, rows: usize) -> Result<()> {
        let mut col0 = 0;
        for c in &l.chunks {
            self.k.matmul.run(&self.gpu, x, c, y, rows, l.out, col0)?;
            col0 += c.n;
        }
        if let Some(b) = &l.bias {
            self.k.bias.run(&self.gpu, y, b, rows, l.out)?;
        }
        Ok(())
    }

    fn norm(&self, x: &GpuBuffer, w: &GpuBuffer, y: &GpuBuffer, rows: usize, dim: usize) -> Result<()> {
        self.k.norm.run(&self.gpu, x, w, y, rows, dim, self.config.rms_norm_eps as f32)
    }

    /// Head outputs for each row, like the CPU engine's (pooled where [`plan::pooled_index`]
    /// says: rows are never padded here, but a row may end with the pad token). The shared
    /// prompt is [`plan::shared_prompt`]'s. Rows are packed into passes of at most
    /// [`max_pass_tokens`](Self::max_pass_tokens) tokens.
    pub async fn forward(&self, rows: &[&[u32]]) -> Result<Vec<HeadOutput>> {
        plan::check_rows(&self.config, rows).map_err(weights_err)?;
        for r in rows {
            if r.len() > self.max_pass_tokens {
                return Err(GpuError::Shape(format!(
                    "an input of {} tokens does not fit this GPU's largest storage binding ({} bytes hold {} tokens of this model)",
                    r.len(),
                    self.gpu.max_binding,
                    self.max_pass_tokens
                )));
            }
        }
        let shared = plan::shared_prompt(&self.config, rows, self.prefix_reuse);
        let mut out = Vec::with_capacity(rows.len());
        let mut start = 0;
        while start < rows.len() {
            // The prefix once, then each row's own tokens (a row fits: checked above).
            let mut end = start;
            let mut tokens = shared;
            while end < rows.len() && tokens + rows[end].len() - shared <= self.max_pass_tokens {
                tokens += rows[end].len() - shared;
                end += 1;
            }
            let pass_shared = if end - start > 1 { shared } else { 0 };
            out.extend(self.pass(&rows[start..end], pass_shared).await?);
            start = end;
        }
        Ok(out)
    }

    /// The head at every position of one sequence (step rewards, prefix scores).
    pub async fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        plan::check_rows(&self.config, &[ids]).map_err(weights_err)?;
        if ids.len() > self.max_pass_tokens {
            return Err(GpuError::Shape(format!("an input of {} tokens does not fit one pass", ids.len())));
        }
        Ok(self.pass_positions(&[ids], 0).await?.remove(0))
    }

    /// One packed pass: head outputs per row.
    async fn pass(&self, rows: &[&[u32]], shared: usize) -> Result<Vec<HeadOutput>> {
        let all = self.pass_positions(rows, shared).await?;
        Ok(rows
            .iter()
            .zip(all)
            .map(|(r, mut positions)| match self.config.architecture.head {
                HeadKind::Sequence => {
                    let pooled_index = plan::pooled_index(r, self.config.pad_token_id);
                    HeadOutput::Sequence { logits: positions.swap_remove(pooled_index), pooled_index }
                }
                HeadKind::Token => HeadOutput::Token(positions),
            })
            .collect())
    }

    /// One packed pass: the head at every position of each row. With `shared` > 0 every row
    /// starts with the same `shared` tokens, packed once, first; the rest of each row follows
    /// at positions continuing them.
    async fn pass_positions(&self, rows: &[&[u32]], shared: usize) -> Result<Vec<Vec<Vec<f32>>>> {
        let c = &self.config;
        let g = &self.gpu;
        let (h, hd, nq, nkv, inter) =
            (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size);
        let mut ids: Vec<u32> = rows.first().map_or(vec![], |r| r[..shared].to_vec());
        ids.extend(rows.iter().flat_map(|r| r[shared..].iter().copied()));
        let t = ids.len();
        let mut starts = vec![0u32; shared];
        let mut positions: Vec<usize> = (0..shared).collect();
        let mut s0 = shared;
        for r in rows {
            let own = r.len() - shared;
            starts.extend(std::iter::repeat_n(s0 as u32, own));
            positions.extend(shared..r.len());
            s0 += own;
        }
        let (cos, sin) = plan::rope_tables(&self.inv_freq, positions.into_iter());
        let (cos, sin, starts) = (g.upload_f32(&cos), g.upload_f32(&sin), g.upload_u32(&starts));

        // Activations, reused by every layer.
        let (x, x1) = (g.zeros(t * h), g.zeros(t * h));
        let hn = g.zeros(t * h);
        let (q, k, v) = (g.zeros(t * nq * hd), g.zeros(t * nkv * hd), g.zeros(t * nkv * hd));
        let (qn, kn) = if c.qk_norm { (Some(g.zeros(t * nq * hd)), Some(g.zeros(t * nkv * hd))) } else { (None, None) };
        let (a, o) = (g.zeros(t * nq * hd), g.zeros(t * h));
        let (gate, up, act) = (g.zeros(t * inter), g.zeros(t * inter), g.zeros(t * inter));
        let down = g.zeros(t * h);

        self.k.embedding.run(g, &self.embed, &g.upload_u32(&ids), &x)?;
        for layer in &self.layers {
            self.norm(&x, &layer.input_norm, &hn, t, h)?;
            self.linear(&layer.q, &hn, &q, t)?;
            self.linear(&layer.k, &hn, &k, t)?;
            self.linear(&layer.v, &hn, &v, t)?;
            let (qr, kr) = match (&layer.q_norm, &layer.k_norm, &qn, &kn) {
                (Some(qw), Some(kw), Some(qn), Some(kn)) => {
                    self.norm(&q, qw, qn, t * nq, hd)?;
                    self.norm(&k, kw, kn, t * nkv, hd)?;
                    (qn, kn)
                }
                _ => (&q, &k),
            };
            self.k.rope.run(g, qr, &cos, &sin, t, nq, hd)?;
            self.k.rope.run(g, kr, &cos, &sin, t, nkv, hd)?;
            self.k.attention.run(g, qr, kr, &v, &a, &starts, shared, t, nq, nkv, hd)?;
            self.linear(&layer.o, &a, &o, t)?;
            self.k.add.run(g, &x, &o, &x1, t * h)?;
            self.norm(&x1, &layer.post_norm, &hn, t, h)?;
            self.linear(&layer.gate, &hn, &gate, t)?;
            self.linear(&layer.up, &hn, &up, t)?;
            self.k.swiglu.run(g, &gate, &up, &act, t * inter)?;
            self.linear(&layer.down, &act, &down, t)?;
            self.k.add.run(g, &x1, &down, &x, t * h)?;
        }
        self.norm(&x, &self.final_norm, &hn, t, h)?;
        let labels = c.num_labels();
        let logits = g.zeros(t * labels);
        self.linear(&self.score, &hn, &logits, t)?;
        let all = g.download_f32(&logits).await?;
        let at = |i: usize| all[i * labels..(i + 1) * labels].to_vec();
        let mut out = Vec::with_capacity(rows.len());
        let mut s0 = shared;
        for r in rows {
            let own = r.len() - shared;
            out.push((0..shared).map(at).chain((s0..s0 + own).map(at)).collect());
            s0 += own;
        }
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&self, rows: &[&[u32]]) -> Result<Vec<HeadOutput>> {
        pollster::block_on(self.forward(rows))
    }
}

/// The CPU engine's interface, so the CLI and server can run the same `RewardModel` on the GPU.
#[cfg(not(target_arch = "wasm32"))]
impl rewardlens_models::ForwardPass for GpuRewardModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn forward(
        &self,
        rows: &[&[u32]],
        _padding: rewardlens_models::Padding,
    ) -> rewardlens_models::Result<Vec<HeadOutput>> {
        self.forward_blocking(rows).map_err(|e| rewardlens_models::ModelError::Backend(e.to_string()))
    }
    fn forward_positions(&self, ids: &[u32]) -> rewardlens_models::Result<Vec<Vec<f32>>> {
        pollster::block_on(GpuRewardModel::forward_positions(self, ids))
            .map_err(|e| rewardlens_models::ModelError::Backend(e.to_string()))
    }
    fn backend(&self) -> String {
        format!("GPU ({}, {})", self.gpu.adapter, self.format.name())
    }
    fn set_prefix_reuse(&mut self, min_tokens: Option<usize>) {
        GpuRewardModel::set_prefix_reuse(self, min_tokens)
    }
    fn max_sequence_tokens(&self) -> Option<usize> {
        Some(self.max_pass_tokens)
    }
    fn prefix_reuse(&self) -> Option<usize> {
        GpuRewardModel::prefix_reuse(self)
    }
    fn device_memory(&self) -> Option<String> {
        Some(self.gpu.memory().summary())
    }
}
