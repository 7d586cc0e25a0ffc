//! Reward models in GGUF: tensor naming (llama.cpp's), the self-contained file rewardlens writes
//! (config, labels, tokenizer and chat template inside), loading such files and llama.cpp's own
//! classifier GGUFs, and the streaming quantizer from safetensors.
//!
//! Our files follow llama.cpp's conventions so llama.cpp can read them too: tensor names
//! (`token_embd`, `blk.N.attn_q`, ...), the score head as `cls.output` (PyTorch shape
//! `[num_labels, hidden]`), `{arch}.pooling_type` (3 = last token, 0 = none for per-token
//! heads), `{arch}.classifier.output_labels`, and Llama's q/k rows permuted for ggml's rotary
//! layout (undone on load). On top they carry `rewardlens.config_json`,
//! `rewardlens.tokenizer_config_json`, `tokenizer.huggingface.json` (the GGUF spec's key for a
//! whole `tokenizer.json`) and `tokenizer.chat_template`.

use crate::config::{Family, HeadKind, ModelConfig, RopeScaling};
use crate::gguf::{tensor_bytes, GgufFile, GgufWriter, MetaValue};
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

pub const KEY_CONFIG: &str = "rewardlens.config_json";
pub const KEY_TOKENIZER_CONFIG: &str = "rewardlens.tokenizer_config_json";
pub const KEY_TOKENIZER: &str = "tokenizer.huggingface.json";
pub const KEY_TEMPLATE: &str = "tokenizer.chat_template";
pub const KEY_QUANT: &str = "rewardlens.quantization";

/// The quantization types `rewardlens quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    Q8_0,
    Q4_0,
    Q4K,
    Q5K,
    Q6K,
    F16,
}

impl QuantType {
    pub const ALL: [QuantType; 6] = [Self::Q8_0, Self::Q4_0, Self::Q4K, Self::Q5K, Self::Q6K, Self::F16];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "q8_0" => Self::Q8_0,
            "q4_0" => Self::Q4_0,
            "q4_k" => Self::Q4K,
            "q5_k" => Self::Q5K,
            "q6_k" => Self::Q6K,
            "f16" => Self::F16,
            _ => {
                return Err(ModelError::Config(format!(
                    "unknown quantization type `{s}` (q8_0, q4_0, q4_k, q5_k, q6_k, f16)"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
            Self::F16 => "f16",
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K => GgmlDType::Q4K,
            Self::Q5K => GgmlDType::Q5K,
            Self::Q6K => GgmlDType::Q6K,
            Self::F16 => GgmlDType::F16,
        }
    }

    /// The type for a matrix with rows of `cols` elements: k-quants need rows that are multiples
    /// of 256, so narrower rows fall back to a 32-block type of similar precision, as llama.cpp
    /// does (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0).
    pub fn for_row_len(self, cols: usize) -> GgmlDType {
        let t = self.ggml();
        if cols.is_multiple_of(t.block_size()) {
            return t;
        }
        let fallback = match self {
            Self::Q4K => GgmlDType::Q5_0,
            Self::Q5K => GgmlDType::Q5_1,
            _ => GgmlDType::Q8_0,
        };
        if cols.is_multiple_of(fallback.block_size()) {
            fallback
        } else {
            GgmlDType::F16
        }
    }
}

fn arch_name(f: Family) -> &'static str {
    match f {
        Family::Llama => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
    }
}

/// transformers tensor name -> llama.cpp GGUF name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let base = match stem {
        "model.embed_tokens" => "token_embd".to_owned(),
        "model.norm" => "output_norm".to_owned(),
        "score" => "cls.output".to_owned(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (n, part) = rest.split_once('.')?;
            n.parse::<usize>().ok()?;
            let p = match part {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            format!("blk.{n}.{p}")
        }
    };
    Some(format!("{base}.{suffix}"))
}

/// Which heads' rows ggml's rotary layout reorders for Llama: (q or k, head count).
fn llama_permuted(hf: &str, c: &ModelConfig) -> Option<usize> {
    if c.architecture.family != Family::Llama {
        return None;
    }
    if hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias") {
        Some(c.num_attention_heads)
    } else if hf.ends_with("self_attn.k_proj.weight") || hf.ends_with("self_attn.k_proj.bias") {
        Some(c.num_key_value_heads)
    } else {
        None
    }
}

/// Row `r` of the ggml layout holds row `perm(r)` of the transformers layout: within each head,
/// rows `[0..d/2)` and `[d/2..d)` are interleaved (llama.cpp's `LlamaModel.permute`).
fn ggml_row_source(r: usize, head_rows: usize) -> usize {
    let (head, i) = (r / head_rows, r % head_rows);
    let half = head_rows / 2;
    head * head_rows + (i % 2) * half + i / 2
}

/// Reorders the rows (outermost dim) of raw tensor bytes.
fn permute_rows(data: &[u8], rows: usize, heads: usize, to_ggml: bool) -> Vec<u8> {
    let row_bytes = data.len() / rows;
    let head_rows = rows / heads;
    let mut out = vec![0u8; data.len()];
    for r in 0..rows {
        let s = ggml_row_source(r, head_rows);
        let (dst, src) = if to_ggml { (r, s) } else { (s, r) };
        out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

/// A GGUF reward model's tensors, looked up by transformers names.
pub struct GgufWeights {
    file: GgufFile,
    config: ModelConfig,
}

impl GgufWeights {
    pub fn new(file: GgufFile, config: ModelConfig) -> Self {
        Self { file, config }
    }

    fn qtensor(&self, hf: &str, shape: &[usize], device: &Device) -> Result<QTensor> {
        let name = gguf_name(hf).ok_or_else(|| ModelError::MissingTensor { name: hf.to_owned() })?;
        let (info, mut data) = self.file.tensor_data(&name).map_err(|e| match e {
            ModelError::MissingTensor { .. } => ModelError::MissingTensor { name: format!("{name} ({hf})") },
            other => other,
        })?;
        if info.dims != shape {
            return Err(ModelError::TensorShape { name, expected: shape.to_vec(), actual: info.dims });
        }
        if let Some(heads) = llama_permuted(hf, &self.config) {
            data = permute_rows(&data, shape[0], heads, false);
        }
        Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(info.dtype, &data, info.dims, device)?)
    }
}

impl WeightSource for GgufWeights {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(self.qtensor(name, shape, device)?.dequantize(device)?.to_dtype(dtype)?)
    }

    fn linear_weight(&self, name: &str, out: usize, inp: usize, _dtype: DType, device: &Device) -> Result<QMatMul> {
        Ok(QMatMul::from_qtensor(self.qtensor(name, &[out, inp], device)?)?)
    }

    fn embedding_weight(
        &self,
        name: &str,
        vocab: usize,
        hidden: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<QMatMul> {
        let q = self.qtensor(name, &[vocab, hidden], device)?;
        // Keep the table quantized (rows are dequantized on lookup) unless it is plain floats.
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Ok(QMatMul::Tensor(q.dequantize(device)?.to_dtype(dtype)?))
            }
            _ => Ok(QMatMul::QTensor(std::sync::Arc::new(q))),
        }
    }
}

fn meta_u64(f: &GgufFile, key: &str) -> Result<usize> {
    let v = f
        .metadata
        .get(key)
        .and_then(MetaValue::as_u64)
        .ok_or_else(|| ModelError::Config(format!("GGUF has no integer `{key}`")))?;
    // Not `as`: on wasm32 that would wrap a huge count into a plausible one.
    usize::try_from(v).map_err(|_| ModelError::Config(format!("GGUF `{key}` is {v}, too large")))
}

/// The model config: ours verbatim, or rebuilt from llama.cpp's keys for files it converted.
/// Every count is checked (here, or by `ModelConfig::from_json`'s limits) before it sizes anything.
pub fn gguf_config(f: &GgufFile) -> Result<ModelConfig> {
    use crate::config::limits::MAX_LABELS;
    if let Some(json) = f.get_str(KEY_CONFIG) {
        return ModelConfig::from_json(json);
    }
    let arch = f
        .get_str("general.architecture")
        .ok_or_else(|| ModelError::Config("GGUF has no general.architecture".into()))?;
    let hf_arch = match arch {
        "qwen3" => "Qwen3ForSequenceClassification",
        "qwen2" => "Qwen2ForSequenceClassification",
        "llama" => "LlamaForSequenceClassification",
        other => return Err(ModelError::UnsupportedArchitecture(format!("GGUF architecture `{other}`"))),
    };
    let Some(cls) = f.tensors.get("cls.output.weight") else {
        return Err(ModelError::Config(format!(
            "this {arch} GGUF has no classifier head (`cls.output.weight`): it is a language model, not a reward model"
        )));
    };
    let k = |s: &str| format!("{arch}.{s}");
    match f.metadata.get(&k("pooling_type")).and_then(MetaValue::as_u64) {
        None | Some(3) | Some(4) => {}
        Some(p) => {
            return Err(ModelError::Config(format!(
                "pooling type {p} is not supported (reward models pool the last token: 3 or 4)"
            )))
        }
    }
    let hidden = meta_u64(f, &k("embedding_length"))?;
    let heads = meta_u64(f, &k("attention.head_count"))?;
    if heads == 0 {
        return Err(ModelError::Config(format!("GGUF `{}` is 0", k("attention.head_count"))));
    }
    let head_dim = match f.metadata.get(&k("attention.key_length")) {
        Some(_) => meta_u64(f, &k("attention.key_length"))?,
        None => hidden / heads,
    };
    // The head is [labels, hidden]: its row count sizes the label list, so check it first.
    let num_labels = match cls.dims[..] {
        [n, h] if h == hidden && (1..=MAX_LABELS).contains(&n) => n,
        _ => {
            return Err(ModelError::Config(format!(
                "cls.output.weight has shape {:?}; a score head is [labels (1 to {MAX_LABELS}), embedding_length ({hidden})]",
                cls.dims
            )))
        }
    };
    let labels: Vec<String> = match f.metadata.get(&k("classifier.output_labels")).and_then(MetaValue::as_array) {
        Some(a) if a.len() == num_labels => a.iter().map(|v| v.as_str().unwrap_or("").to_owned()).collect(),
        Some(a) => {
            return Err(ModelError::Config(format!(
                "{} names {} labels but cls.output.weight has {num_labels} rows",
                k("classifier.output_labels"),
                a.len()
            )))
        }
        None => (0..num_labels).map(|i| format!("LABEL_{i}")).collect(),
    };
    let vocab = f
        .tensors
        .get("token_embd.weight")
        .map(|t| t.dims[0])
        .ok_or(ModelError::MissingTensor { name: "token_embd.weight".into() })?;
    let mut json = serde_json::json!({
        "architectures": [hf_arch],
        "hidden_size": hidden,
        "intermediate_size": meta_u64(f, &k("feed_forward_length"))?,
        "num_hidden_layers": meta_u64(f, &k("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": meta_u64(f, &k("attention.head_count_kv")).unwrap_or(heads),
        "head_dim": head_dim,
        "vocab_size": vocab,
        "rms_norm_eps": f.metadata.get(&k("attention.layer_norm_rms_epsilon")).and_then(MetaValue::as_f64).unwrap_or(1e-6),
        "max_position_embeddings": meta_u64(f, &k("context_length"))?,
        "rope_theta": f.metadata.get(&k("rope.freq_base")).and_then(MetaValue::as_f64).unwrap_or(10_000.0),
        "attention_bias": f.tensors.contains_key("blk.0.attn_q.bias"),
        "id2label": labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::Value::from(l.clone()))).collect::<serde_json::Map<_, _>>(),
        "pad_token_id": f.metadata.get("tokenizer.ggml.padding_token_id").and_then(MetaValue::as_u64),
    });
    if f.get_str(&k("rope.scaling.type")) == Some("linear") {
        let factor = f.metadata.get(&k("rope.scaling.factor")).and_then(MetaValue::as_f64).unwrap_or(1.0);
        json["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
    }
    let mut config = ModelConfig::from_json(&json.to_string())?;
    // llama3-style scaling arrives as per-frequency divisors in `rope_freqs.weight`.
    if f.tensors.contains_key("rope_freqs.weight") {
        let (info, data) = f.tensor_data("rope_freqs.weight")?;
        if info.dtype != GgmlDType::F32 || info.dims != [config.head_dim / 2] {
            return Err(ModelError::Config(format!("rope_freqs.weight must be f32 [{}]", config.head_dim / 2)));
        }
        let factors = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
        config.rope_scaling = RopeScaling::Factors(factors);
    }
    Ok(config)
}

/// The tokenizer.json text and tokenizer_config-like JSON (chat template, special tokens) a GGUF
/// carries. llama.cpp's converter writes neither a `tokenizer.json` nor special-token texts in
/// the HF form, so such files need the tokenizer supplied separately.
pub fn gguf_tokenizer(f: &GgufFile) -> Result<(String, String)> {
    let tokenizer = f.get_str(KEY_TOKENIZER).ok_or_else(|| {
        ModelError::Config(format!(
            "this GGUF carries no `{KEY_TOKENIZER}` (llama.cpp's converter does not write one); give the model's tokenizer.json and tokenizer_config.json separately"
        ))
    })?;
    let tokenizer_config = match f.get_str(KEY_TOKENIZER_CONFIG) {
        Some(t) => t.to_owned(),
        None => {
            let template = f
                .get_str(KEY_TEMPLATE)
                .ok_or_else(|| ModelError::Config("GGUF has no tokenizer.chat_template".into()))?;
            serde_json::json!({ "chat_template": template }).to_string()
        }
    };
    Ok((tokenizer.to_owned(), tokenizer_config))
}

/// One tensor of the checkpoint as it will be written.
pub struct PlannedTensor {
    pub hf_name: String,
    pub gguf_name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlDType,
    /// Written from these values instead of a checkpoint tensor (llama.cpp's `rope_freqs`).
    pub computed: Option<Vec<f32>>,
}

/// Which type each tensor gets: the layers' matrices and the embedding table take `qt`; norms,
/// biases and the score head stay f32 (they are small and the score is read straight off the head).
pub fn plan(config: &ModelConfig, tensors: &[(String, Vec<usize>)], qt: QuantType) -> Result<Vec<PlannedTensor>> {
    let mut out = Vec::with_capacity(tensors.len());
    for (hf, dims) in tensors {
        if hf.ends_with("rotary_emb.inv_freq") {
            continue; // a buffer some old checkpoints saved; recomputed from the config
        }
        let g = gguf_name(hf).ok_or_else(|| {
            ModelError::Weights(format!("tensor `{hf}` is not part of a {} model", config.architecture.name()))
        })?;
        let is_matrix = dims.len() == 2 && g != "cls.output.weight";
        let dtype = if is_matrix { qt.for_row_len(dims[1]) } else { GgmlDType::F32 };
        tensor_bytes(dims, dtype)?;
        out.push(PlannedTensor { hf_name: hf.clone(), gguf_name: g, dims: dims.clone(), dtype, computed: None });
    }
    // llama.cpp reads llama3 rope scaling as per-frequency divisors; write them so it can.
    if let RopeScaling::Llama3 { .. } = config.rope_scaling {
        let mut plain = config.clone();
        plain.rope_scaling = RopeScaling::None;
        let divisors: Vec<f32> =
            plain.rope_inv_freq().iter().zip(config.rope_inv_freq()).map(|(base, scaled)| base / scaled).collect();
        out.push(PlannedTensor {
            hf_name: String::new(),
            gguf_name: "rope_freqs.weight".into(),
            dims: vec![divisors.len()],
            dtype: GgmlDType::F32,
            computed: Some(divisors),
        });
    }
    Ok(out)
}

/// Metadata of a rewardlens GGUF.
pub fn metadata(
    config: &ModelConfig,
    config_json: &str,
    tokenizer_json: &str,
    tokenizer_config_json: &str,
    chat_template: &str,
    name: &str,
    qt: QuantType,
) -> Vec<(String, MetaValue)> {
    let a = arch_name(config.architecture.family);
    let s = |v: &str| MetaValue::String(v.to_owned());
    let u = |v: usize| MetaValue::U32(v as u32);
    let mut m = vec![
        ("general.architecture".to_owned(), s(a)),
        ("general.name".to_owned(), s(name)),
        ("general.alignment".to_owned(), MetaValue::U32(crate::gguf::DEFAULT_ALIGNMENT as u32)),
        (format!("{a}.block_count"), u(config.num_hidden_layers)),
        (format!("{a}.context_length"), u(config.max_position_embeddings)),
        (format!("{a}.embedding_length"), u(config.hidden_size)),
        (format!("{a}.feed_forward_length"), u(config.intermediate_size)),
        (format!("{a}.attention.head_count"), u(config.num_attention_heads)),
        (format!("{a}.attention.head_count_kv"), u(config.num_key_value_heads)),
        (format!("{a}.attention.key_length"), u(config.head_dim)),
        (format!("{a}.attention.value_length"), u(config.head_dim)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), MetaValue::F32(config.rms_norm_eps as f32)),
        (format!("{a}.rope.freq_base"), MetaValue::F32(config.rope_theta as f32)),
        (
            format!("{a}.pooling_type"),
            MetaValue::U32(if config.architecture.head == HeadKind::Sequence { 3 } else { 0 }),
        ),
        (format!("{a}.classifier.output_labels"), MetaValue::Array(config.labels.iter().map(|l| s(l)).collect())),
        (KEY_CONFIG.to_owned(), s(config_json)),
        (KEY_TOKENIZER_CONFIG.to_owned(), s(tokenizer_config_json)),
        (KEY_TOKENIZER.to_owned(), s(tokenizer_json)),
        (KEY_TEMPLATE.to_owned(), s(chat_template)),
        (KEY_QUANT.to_owned(), s(qt.name())),
    ];
    if let Some(p) = config.pad_token_id {
        m.push(("tokenizer.ggml.padding_token_id".to_owned(), MetaValue::U32(p)));
    }
    m
}

/// Streams `tensors` into a GGUF: each is loaded (as f32), permuted if Llama q/k, quantized and
/// written before the next is touched, so memory holds about one tensor at a time.
pub fn write_gguf<W: std::io::Write>(
    out: W,
    meta: &[(String, MetaValue)],
    config: &ModelConfig,
    planned: &[PlannedTensor],
    mut load: impl FnMut(&str) -> Result<Tensor>,
    mut progress: impl FnMut(&PlannedTensor),
) -> Result<W> {
    let decl: Vec<(String, Vec<usize>, GgmlDType)> =
        planned.iter().map(|p| (p.gguf_name.clone(), p.dims.clone(), p.dtype)).collect();
    let mut w = GgufWriter::begin(out, meta, &decl)?;
    for p in planned {
        if let Some(values) = &p.computed {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_tensor(&p.gguf_name, &bytes)?;
            progress(p);
            continue;
        }
        let t = load(&p.hf_name)?.to_dtype(DType::F32)?;
        if t.dims() != p.dims {
            return Err(ModelError::TensorShape {
                name: p.hf_name.clone(),
                expected: p.dims.clone(),
                actual: t.dims().to_vec(),
            });
        }
        let q = QTensor::quantize(&t, p.dtype)?;
        let mut data = q.data()?.into_owned();
        if let Some(heads) = llama_permuted(&p.hf_name, config) {
            data = permute_rows(&data, p.dims[0], heads, true);
        }
        w.write_tensor(&p.gguf_name, &data)?;
        progress(p);
    }
    w.finish()
}

/// Quantizes a float checkpoint's matrices while loading, so a model whose f32 weights would
/// not fit (the browser's 4 GiB) is held at about a quarter of that. Norms, biases and the
/// score head stay f32, as in the files `rewardlens quantize` writes.
pub struct QuantizeOnLoad<'a> {
    pub inner: &'a dyn WeightSource,
    pub qtype: QuantType,
}

impl QuantizeOnLoad<'_> {
    fn quantize(&self, t: Tensor, cols: usize) -> Result<QMatMul> {
        let q = QTensor::quantize(&t, self.qtype.for_row_len(cols))?;
        Ok(QMatMul::QTensor(std::sync::Arc::new(q)))
    }
}

impl WeightSource for QuantizeOnLoad<'_> {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.inner.tensor(name, shape, dtype, device)
    }

    fn linear_weight(&self, name: &str, out: usize, inp: usize, _dtype: DType, device: &Device) -> Result<QMatMul> {
        let t = self.inner.tensor(name, &[out, inp], DType::F32, device)?;
        self.quantize(t, inp)
    }

    fn embedding_weight(
        &self,
        name: &str,
        vocab: usize,
        hidden: usize,
        _dtype: DType,
        device: &Device,
    ) -> Result<QMatMul> {
        let t = self.inner.tensor(name, &[vocab, hidden], DType::F32, device)?;
        self.quantize(t, hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(gguf_name("model.layers.12.self_attn.q_proj.weight").unwrap(), "blk.12.attn_q.weight");
        assert_eq!(gguf_name("model.layers.0.self_attn.k_norm.weight").unwrap(), "blk.0.attn_k_norm.weight");
        assert_eq!(gguf_name("model.layers.3.post_attention_layernorm.weight").unwrap(), "blk.3.ffn_norm.weight");
        assert_eq!(gguf_name("score.weight").unwrap(), "cls.output.weight");
        assert_eq!(gguf_name("model.embed_tokens.weight").unwrap(), "token_embd.weight");
        assert!(gguf_name("lm_head.weight").is_none());
    }

    #[test]
    fn row_permutation_round_trips_and_interleaves_halves() {
        // 2 heads of 4 rows, one byte per row.
        let data: Vec<u8> = (0..8).collect();
        let g = permute_rows(&data, 8, 2, true);
        assert_eq!(g, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(permute_rows(&g, 8, 2, false), data);
    }

    #[test]
    fn k_quants_fall_back_on_narrow_rows() {
        assert_eq!(QuantType::Q4K.for_row_len(1024), GgmlDType::Q4K);
        assert_eq!(QuantType::Q4K.for_row_len(64), GgmlDType::Q5_0);
        assert_eq!(QuantType::Q6K.for_row_len(64), GgmlDType::Q8_0);
        assert_eq!(QuantType::Q8_0.for_row_len(64), GgmlDType::Q8_0);
    }

    /// A llama.cpp-style classifier GGUF (no rewardlens config): `edit` adjusts its keys, the
    /// head has `labels` rows of `cols`.
    fn llama_cpp_style(edit: impl Fn(&mut Vec<(String, MetaValue)>), labels: usize, cols: usize) -> GgufFile {
        let mut meta = vec![
            ("general.architecture".to_owned(), MetaValue::String("qwen3".into())),
            ("qwen3.embedding_length".to_owned(), MetaValue::U32(32)),
            ("qwen3.attention.head_count".to_owned(), MetaValue::U32(2)),
            ("qwen3.feed_forward_length".to_owned(), MetaValue::U32(64)),
            ("qwen3.block_count".to_owned(), MetaValue::U32(0)),
            ("qwen3.context_length".to_owned(), MetaValue::U32(128)),
        ];
        edit(&mut meta);
        let decl = vec![
            ("cls.output.weight".to_owned(), vec![labels, cols], GgmlDType::Q8_0),
            ("token_embd.weight".to_owned(), vec![4, 32], GgmlDType::Q8_0),
        ];
        let mut w = GgufWriter::begin(Vec::new(), &meta, &decl).unwrap();
        w.write_tensor("cls.output.weight", &vec![0u8; labels * cols / 32 * 34]).unwrap();
        w.write_tensor("token_embd.weight", &[0u8; 4 * 34]).unwrap();
        GgufFile::from_bytes(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn crafted_llama_cpp_keys_give_errors_not_panics() {
        let c = gguf_config(&llama_cpp_style(|_| {}, 2, 32)).unwrap();
        assert_eq!((c.head_dim, c.labels.clone()), (16, vec!["LABEL_0".to_owned(), "LABEL_1".to_owned()]));
        // A head count of 0 divided the embedding length by zero.
        let zero_heads = |m: &mut Vec<(String, MetaValue)>| m[2].1 = MetaValue::U32(0);
        let err = gguf_config(&llama_cpp_style(zero_heads, 1, 32)).unwrap_err().to_string();
        assert!(err.contains("head_count"), "{err}");
        // The head's row count sizes the label list: bounded, and it must match the hidden size.
        let err = gguf_config(&llama_cpp_style(|_| {}, crate::config::limits::MAX_LABELS + 1, 32)).unwrap_err();
        assert!(err.to_string().contains("cls.output.weight"), "{err}");
        let err = gguf_config(&llama_cpp_style(|_| {}, 2, 64)).unwrap_err().to_string();
        assert!(err.contains("cls.output.weight") && err.contains("embedding_length"), "{err}");
        let names = |m: &mut Vec<(String, MetaValue)>| {
            let three = (0..3).map(|i| MetaValue::String(format!("l{i}"))).collect();
            m.push(("qwen3.classifier.output_labels".into(), MetaValue::Array(three)));
        };
        let err = gguf_config(&llama_cpp_style(names, 2, 32)).unwrap_err().to_string();
        assert!(err.contains("3 labels"), "{err}");
        // Counts beyond the config limits (and beyond u32 on wasm32) are refused by name.
        let huge = |m: &mut Vec<(String, MetaValue)>| m[5].1 = MetaValue::U64(1 << 40);
        let err = gguf_config(&llama_cpp_style(huge, 1, 32)).unwrap_err().to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
        let layers = |m: &mut Vec<(String, MetaValue)>| m[4].1 = MetaValue::U32(1 << 20);
        let err = gguf_config(&llama_cpp_style(layers, 1, 32)).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers"), "{err}");
    }
}
