//! The whole decoder forward pass on the GPU, chaining the kernels, from the same checkpoint
//! the CPU engine loads (any `WeightSource`: safetensors or GGUF), with the same outputs
//! (pooled logits for sequence heads, per-token logits for token heads).

use crate::context::{Gpu, GpuBuffer, GpuError, Result};
use crate::kernels::*;
use rewardlens_models::weights::WeightSource;
use rewardlens_models::{HeadKind, ModelConfig};

/// A linear layer's weight on the GPU.
enum Weight {
    F32(GpuBuffer),
    Q8_0(Q8_0Weights),
}

struct Linear {
    w: Weight,
    bias: Option<GpuBuffer>,
    out: usize,
    inp: usize,
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
    matmul_q8: MatmulQ8_0,
    bias: BiasAdd,
    norm: RmsNorm,
    rope: Rope,
    attention: Attention,
    swiglu: SwiGlu,
    add: Add,
    embedding: Embedding,
}

/// How weights are held on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuWeights {
    F32,
    /// Matrices quantized to Q8_0 at upload (rows must be multiples of 32).
    Q8_0,
}

/// A reward model whose forward pass runs on the GPU.
pub struct GpuRewardModel {
    gpu: Gpu,
    config: ModelConfig,
    k: Kernels,
    /// On the GPU when it fits one binding; else rows are gathered on the CPU.
    embed_gpu: Option<GpuBuffer>,
    embed_cpu: Option<Vec<f32>>,
    layers: Vec<Layer>,
    final_norm: GpuBuffer,
    score: Linear,
    inv_freq: Vec<f32>,
}

fn weights_err(e: rewardlens_models::ModelError) -> GpuError {
    GpuError::Shape(e.to_string())
}

impl GpuRewardModel {
    pub fn load(gpu: Gpu, config: ModelConfig, w: &dyn WeightSource, storage: GpuWeights) -> Result<Self> {
        let cpu = candle_core::Device::Cpu;
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            w.tensor(name, shape, candle_core::DType::F32, &cpu)
                .map_err(weights_err)?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| GpuError::Shape(format!("{name}: {e}")))
        };
        let c = &config;
        let linear = |name: &str, out: usize, inp: usize, bias: bool, quantize: bool| -> Result<Linear> {
            let data = f32s(&format!("{name}.weight"), &[out, inp])?;
            let weight = if quantize && storage == GpuWeights::Q8_0 && inp.is_multiple_of(32) {
                let (q, s) = quantize_q8_0(&data, out, inp)?;
                Weight::Q8_0(Q8_0Weights::upload(&gpu, &q, &s, out, inp)?)
            } else {
                Weight::F32(gpu.upload_f32(&data))
            };
            let bias = if bias { Some(gpu.upload_f32(&f32s(&format!("{name}.bias"), &[out])?)) } else { None };
            Ok(Linear { w: weight, bias, out, inp })
        };
        let (h, hd, nq, nkv, i) =
            (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let norm = |n: &str, size: usize| -> Result<GpuBuffer> {
                Ok(gpu.upload_f32(&f32s(&format!("{p}.{n}.weight"), &[size])?))
            };
            layers.push(Layer {
                input_norm: norm("input_layernorm", h)?,
                q: linear(&format!("{p}.self_attn.q_proj"), nq * hd, h, c.qkv_bias, true)?,
                k: linear(&format!("{p}.self_attn.k_proj"), nkv * hd, h, c.qkv_bias, true)?,
                v: linear(&format!("{p}.self_attn.v_proj"), nkv * hd, h, c.qkv_bias, true)?,
                o: linear(&format!("{p}.self_attn.o_proj"), h, nq * hd, c.o_bias, true)?,
                q_norm: if c.qk_norm { Some(norm("self_attn.q_norm", hd)?) } else { None },
                k_norm: if c.qk_norm { Some(norm("self_attn.k_norm", hd)?) } else { None },
                post_norm: norm("post_attention_layernorm", h)?,
                gate: linear(&format!("{p}.mlp.gate_proj"), i, h, c.mlp_bias, true)?,
                up: linear(&format!("{p}.mlp.up_proj"), i, h, c.mlp_bias, true)?,
                down: linear(&format!("{p}.mlp.down_proj"), h, i, c.mlp_bias, true)?,
            });
        }
        let table = f32s("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let fits = (table.len() as u64 * 4) <= gpu.limits.max_storage_buffer_binding_size;
        let (embed_gpu, embed_cpu) = if fits { (Some(gpu.upload_f32(&table)), None) } else { (None, Some(table)) };
        let final_norm = gpu.upload_f32(&f32s("model.norm.weight", &[h])?);
        // The score head stays f32, as on the CPU.
        let score = linear("score", c.num_labels(), h, c.score_bias, false)?;
        let inv_freq = c.rope_inv_freq();
        let k = Kernels {
            matmul: Matmul::new(&gpu),
            matmul_q8: MatmulQ8_0::new(&gpu),
            bias: BiasAdd::new(&gpu),
            norm: RmsNorm::new(&gpu),
            rope: Rope::new(&gpu),
            attention: Attention::new(&gpu),
            swiglu: SwiGlu::new(&gpu),
            add: Add::new(&gpu),
            embedding: Embedding::new(&gpu),
        };
        Ok(Self { gpu, config, k, embed_gpu, embed_cpu, layers, final_norm, score, inv_freq })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn adapter(&self) -> &str {
        &self.gpu.adapter
    }

    fn linear(&self, l: &Linear, x: &GpuBuffer, rows: usize) -> Result<GpuBuffer> {
        let y = self.gpu.zeros(rows * l.out);
        match &l.w {
            Weight::F32(w) => self.k.matmul.run(&self.gpu, x, w, &y, rows, l.out, l.inp)?,
            Weight::Q8_0(w) => self.k.matmul_q8.run(&self.gpu, x, w, &y, rows)?,
        }
        if let Some(b) = &l.bias {
            self.k.bias.run(&self.gpu, &y, b, rows, l.out)?;
        }
        Ok(y)
    }

    fn norm(&self, x: &GpuBuffer, w: &GpuBuffer, rows: usize, dim: usize) -> Result<GpuBuffer> {
        let y = self.gpu.zeros(rows * dim);
        self.k.norm.run(&self.gpu, x, w, &y, rows, dim, self.config.rms_norm_eps as f32)?;
        Ok(y)
    }

    /// One sequence's logits: `[labels]` at the last token for sequence heads, `[tokens][labels]`
    /// for token heads.
    pub async fn forward(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let t = ids.len();
        if t == 0 {
            return Err(GpuError::Shape("empty input".into()));
        }
        let (h, hd, nq, nkv, inter) =
            (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size);
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(GpuError::Shape(format!("token id {bad} is outside the vocabulary of {}", c.vocab_size)));
        }
        let g = &self.gpu;
        let mut x = match (&self.embed_gpu, &self.embed_cpu) {
            (Some(table), _) => {
                let y = g.zeros(t * h);
                self.k.embedding.run(g, table, &g.upload_u32(ids), &y, c.vocab_size, h)?;
                y
            }
            (None, Some(table)) => {
                let rows: Vec<f32> =
                    ids.iter().flat_map(|&i| table[i as usize * h..(i as usize + 1) * h].iter().copied()).collect();
                g.upload_f32(&rows)
            }
            (None, None) => unreachable!("one embedding table is loaded"),
        };
        let (cos, sin) = rope_tables(&self.inv_freq, 0, t);
        let (cos, sin) = (g.upload_f32(&cos), g.upload_f32(&sin));
        for layer in &self.layers {
            let hn = self.norm(&x, &layer.input_norm, t, h)?;
            let mut q = self.linear(&layer.q, &hn, t)?;
            let mut k = self.linear(&layer.k, &hn, t)?;
            let v = self.linear(&layer.v, &hn, t)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = self.norm(&q, qn, t * nq, hd)?;
                k = self.norm(&k, kn, t * nkv, hd)?;
            }
            self.k.rope.run(g, &q, &cos, &sin, t, nq, hd)?;
            self.k.rope.run(g, &k, &cos, &sin, t, nkv, hd)?;
            let a = g.zeros(t * nq * hd);
            self.k.attention.run(g, &q, &k, &v, &a, t, nq, nkv, hd)?;
            let o = self.linear(&layer.o, &a, t)?;
            let x1 = g.zeros(t * h);
            self.k.add.run(g, &x, &o, &x1, t * h)?;
            let hn2 = self.norm(&x1, &layer.post_norm, t, h)?;
            let gate = self.linear(&layer.gate, &hn2, t)?;
            let up = self.linear(&layer.up, &hn2, t)?;
            let act = g.zeros(t * inter);
            self.k.swiglu.run(g, &gate, &up, &act, t * inter)?;
            let down = self.linear(&layer.down, &act, t)?;
            let x2 = g.zeros(t * h);
            self.k.add.run(g, &x1, &down, &x2, t * h)?;
            x = x2;
        }
        let xn = self.norm(&x, &self.final_norm, t, h)?;
        let logits = self.linear(&self.score, &xn, t)?;
        let all = g.download_f32(&logits).await?;
        let labels = c.num_labels();
        let rows: Vec<Vec<f32>> = all.chunks(labels).map(<[f32]>::to_vec).collect();
        Ok(match c.architecture.head {
            // Batch of one, no padding: transformers pools the last token.
            HeadKind::Sequence => vec![rows[t - 1].clone()],
            HeadKind::Token => rows,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.forward(ids))
    }
}
