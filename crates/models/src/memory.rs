//! How much memory a model needs before any weight is downloaded, so the browser can refuse a
//! model that cannot fit in wasm32's 4 GiB address space instead of crashing half-way.

use crate::config::ModelConfig;
use crate::quantized::QuantType;

/// wasm32 addresses at most 4 GiB of linear memory.
pub const WASM32_MEMORY_LIMIT: u64 = 4 << 30;

/// How the weights are held once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// Dequantized to f32 (safetensors checkpoints loaded as they are).
    F32,
    /// Kept in (or quantized to) a GGML block type.
    Quantized(QuantType),
}

impl WeightStorage {
    /// Bytes per weight, block scales included.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Self::F32 => 4.0,
            Self::Quantized(q) => {
                let t = q.for_row_len(256);
                t.type_size() as f64 / t.block_size() as f64
            }
        }
    }
}

/// Parameters per part of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    pub embedding: u64,
    /// Projections and MLPs of all layers (the matrices a quantized model keeps quantized).
    pub matrices: u64,
    /// Norms, biases and the score head (always f32).
    pub small: u64,
}

impl ParameterCount {
    pub fn of(c: &ModelConfig) -> Self {
        let (h, i, l) = (c.hidden_size as u64, c.intermediate_size as u64, c.num_hidden_layers as u64);
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i;
        let mut small_per_layer = 2 * h;
        if c.qkv_bias {
            small_per_layer += q + 2 * kv;
        }
        if c.o_bias {
            small_per_layer += h;
        }
        if c.mlp_bias {
            small_per_layer += 2 * i + h;
        }
        if c.qk_norm {
            small_per_layer += 2 * c.head_dim as u64;
        }
        let labels = c.labels.len() as u64;
        Self {
            embedding: c.vocab_size as u64 * h,
            matrices: l * per_layer,
            small: l * small_per_layer + h + labels * h + if c.score_bias { labels } else { 0 },
        }
    }

    pub fn total(&self) -> u64 {
        self.embedding + self.matrices + self.small
    }
}

/// Memory a loaded model needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    pub parameters: u64,
    pub weights: u64,
    /// While the embedding table (loaded first) is converted: its f32 copy and, when
    /// quantizing, the quantized one.
    pub embedding_load: u64,
    /// Converting one layer matrix: its raw bytes and its f32 copy.
    pub matrix_load: u64,
    /// Activations of one forward pass of `tokens` tokens.
    pub activations: u64,
}

impl MemoryEstimate {
    /// For scoring sequences of up to `tokens` tokens, one at a time.
    pub fn new(c: &ModelConfig, storage: WeightStorage, tokens: usize) -> Self {
        let p = ParameterCount::of(c);
        let bpw = storage.bytes_per_weight();
        let weights = ((p.embedding + p.matrices) as f64 * bpw) as u64 + p.small * 4;
        let embedding_load = p.embedding * 4 + (p.embedding as f64 * bpw) as u64;
        let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
        let matrix_load = h * i * (4 + 4);
        let t = tokens as u64;
        let qkv = ((c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim) as u64;
        // Residual stream, normed copy, q/k/v, MLP gate/up/product, and one 128-row block of
        // attention scores per head; f32 throughout, with 2x for temporaries.
        let per_token = h * 3 + qkv + 3 * i;
        // `tokens` comes from the caller's request: saturate rather than wrap.
        let attention = (c.num_attention_heads as u64 * 128).saturating_mul(t);
        let activations = t.saturating_mul(per_token).saturating_add(attention).saturating_mul(8);
        Self { parameters: p.total(), weights, embedding_load, matrix_load, activations }
    }

    /// Peak bytes: loading the embedding first, or all weights plus the larger of loading
    /// a layer matrix and scoring.
    pub fn total(&self) -> u64 {
        self.embedding_load.max(self.weights.saturating_add(self.matrix_load.max(self.activations)))
    }

    /// Whether the model fits in wasm32 memory, keeping `reserve` bytes for the tokenizer,
    /// the allocator's slack and the rest of the program.
    pub fn fits_wasm32(&self, reserve: u64) -> bool {
        self.total().saturating_add(reserve) <= WASM32_MEMORY_LIMIT
    }
}

/// What the browser's CPU engine tries, in order, under *auto* storage: q8_0 first, because on
/// its int8 kernels it scores faster than f32 in Chromium (`cargo xtask bench-browser`,
/// docs/PERFORMANCE.md) while keeping the response order f32 gives on 96-99.5% of the
/// fixtures' pairs (docs/user/quantization.md, *Accuracy against f32*); q4_k (smaller, less
/// exact) only when q8_0 does not fit. f32 is there when asked for.
pub const AUTO_CPU_STORAGE: [WeightStorage; 2] =
    [WeightStorage::Quantized(QuantType::Q8_0), WeightStorage::Quantized(QuantType::Q4K)];

/// The first of `candidates` whose estimate fits wasm32 with `reserve` bytes to spare, or the
/// last candidate's estimate when none fits.
pub fn pick_storage(
    c: &ModelConfig,
    candidates: &[WeightStorage],
    tokens: usize,
    reserve: u64,
) -> Result<(WeightStorage, MemoryEstimate), MemoryEstimate> {
    let mut last = None;
    for &s in candidates {
        let e = MemoryEstimate::new(c, s, tokens);
        if e.fits_wasm32(reserve) {
            return Ok((s, e));
        }
        last = Some(e);
    }
    Err(last.expect("at least one candidate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skywork_06b() -> ModelConfig {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/shapes/skywork-reward-v2-qwen3-0.6b.json"
        ))
        .unwrap();
        ModelConfig::from_json(&text).unwrap()
    }

    #[test]
    fn parameter_count_matches_qwen3_0_6b() {
        // Qwen3-0.6B has 596,049,920 parameters (its LM head is tied to the embedding); the
        // reward model adds a 1 x 1,024 score head.
        let p = ParameterCount::of(&skywork_06b());
        assert_eq!(p.total(), 596_049_920 + 1_024);
    }

    #[test]
    fn estimates_order_storage_types() {
        let c = skywork_06b();
        let f32 = MemoryEstimate::new(&c, WeightStorage::F32, 2048);
        let q8 = MemoryEstimate::new(&c, WeightStorage::Quantized(QuantType::Q8_0), 2048);
        let q4 = MemoryEstimate::new(&c, WeightStorage::Quantized(QuantType::Q4K), 2048);
        assert!(f32.weights > 3 * q8.weights && q8.weights > q4.weights);
        assert!(f32.fits_wasm32(256 << 20));
        // Qwen3-1.7B's shape: not in f32, but in q8_0.
        let mut mid = c.clone();
        mid.hidden_size = 2048;
        mid.intermediate_size = 6144;
        assert!(!MemoryEstimate::new(&mid, WeightStorage::F32, 2048).fits_wasm32(0));
        assert!(MemoryEstimate::new(&mid, WeightStorage::Quantized(QuantType::Q8_0), 2048).fits_wasm32(512 << 20));
        // A 4B model in f32 cannot fit; in q4_k it can.
        let mut big = c.clone();
        big.num_hidden_layers = 36;
        big.hidden_size = 2560;
        big.intermediate_size = 9728;
        assert!(!MemoryEstimate::new(&big, WeightStorage::F32, 2048).fits_wasm32(0));
        assert!(MemoryEstimate::new(&big, WeightStorage::Quantized(QuantType::Q4K), 2048).fits_wasm32(256 << 20));
    }

    /// What the web app's "auto" storage picks for its presets (docs/user/web-app.md: q8_0 for all three,
    /// q4_k only past what q8_0 fits), with the browser's reserve and planned length.
    #[test]
    fn auto_storage_for_the_presets() {
        let pick = |c: &ModelConfig| pick_storage(c, &AUTO_CPU_STORAGE, 4096, 512 << 20).map(|(s, _)| s);
        let q06 = skywork_06b();
        assert_eq!(pick(&q06), Ok(WeightStorage::Quantized(QuantType::Q8_0)));
        let mut q17 = q06.clone();
        (q17.hidden_size, q17.intermediate_size) = (2048, 6144);
        assert_eq!(pick(&q17), Ok(WeightStorage::Quantized(QuantType::Q8_0)));
        let mut llama1b = q06.clone();
        (llama1b.hidden_size, llama1b.intermediate_size, llama1b.num_hidden_layers) = (2048, 8192, 16);
        (llama1b.num_attention_heads, llama1b.num_key_value_heads, llama1b.head_dim) = (32, 8, 64);
        (llama1b.vocab_size, llama1b.qk_norm) = (128_256, false);
        assert_eq!(pick(&llama1b), Ok(WeightStorage::Quantized(QuantType::Q8_0)));
        let p = ParameterCount::of(&llama1b).total();
        assert!((1_235_000_000..1_237_000_000).contains(&p), "Llama-3.2-1B has 1.236B parameters, got {p}");
    }
}
